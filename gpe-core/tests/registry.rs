//! The in-process side of a scrape: a `prometheus::Registry` merged with the files (one family
//! per name, one series per label set), adoption of a registry into the store (across real
//! processes), and most-recent gauges updated from several threads.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use gpe_core::metrics::adopt::Adopter;
use gpe_core::{
    CounterVec, GaugeMode, GaugeVec, Histogram, HistogramVec, MultiProcessCollector, Store,
};
use prometheus::{HistogramOpts, Opts};

const BUCKETS: [f64; 3] = [0.1, 1.0, 10.0];

/// The `k="v"` series of a histogram family `name` with [`BUCKETS`], in `store`.
fn histogram(store: &Store, name: &str, help: &str) -> Histogram {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        &["k"],
        store,
    )
    .unwrap()
    .with_label_values(&["v"])
    .unwrap()
}

/// The body of every child process. Not a test of its own: it only runs when re-executed.
#[test]
#[ignore = "runs only as a child process of the other tests"]
fn child() {
    run_child(|parts, store| match parts[0] {
        // Code instrumented with the plain `prometheus` crate, made multiprocess by adoption.
        "adopt" => {
            let n: u64 = parts[1].parse().unwrap();
            let registry = prometheus::Registry::new();
            let c =
                prometheus::IntCounterVec::new(Opts::new("legacy_jobs_total", "Jobs."), &["queue"])
                    .unwrap();
            let h = prometheus::Histogram::with_opts(
                HistogramOpts::new("legacy_job_seconds", "Job time.").buckets(BUCKETS.to_vec()),
            )
            .unwrap();
            registry.register(Box::new(c.clone())).unwrap();
            registry.register(Box::new(h.clone())).unwrap();
            let guard = Adopter::new(registry, store)
                .spawn(Duration::from_secs(3600))
                .unwrap();
            c.with_label_values(&["mail"]).inc_by(n);
            for _ in 0..n {
                h.observe(0.5);
            }
            drop(guard); // the last snapshot happens here
        }
        other => panic!("unknown child action {other}"),
    });
}

/// Every `# TYPE` name once, every sample line (name and labels) once.
fn assert_nothing_twice(text: &str) {
    let mut types: HashMap<&str, usize> = HashMap::new();
    let mut samples: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            *types.entry(rest.split(' ').next().unwrap()).or_default() += 1;
        } else if !line.starts_with('#') && !line.is_empty() {
            let series = line.rsplit_once(' ').unwrap().0;
            *samples.entry(series).or_default() += 1;
        }
    }
    let twice: Vec<_> = types
        .iter()
        .chain(samples.iter())
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(twice.is_empty(), "emitted twice: {twice:?}\n---\n{text}");
}

#[test]
fn registry_and_files_merge_into_one_family_and_one_series_each() {
    require_python();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The files: what the workers recorded.
    let files_c = CounterVec::new(Opts::new("jobs_total", "Jobs."), &["k"], &store).unwrap();
    files_c.with_label_values(&["v"]).unwrap().inc_by(3.0);
    let files_h = histogram(&store, "job_seconds", "Job time.");
    files_h.observe(0.05);
    files_h.observe(5.0);
    let files_g = GaugeVec::new(
        Opts::new("queue_depth", "Depth."),
        &["k"],
        GaugeMode::Max,
        &store,
    )
    .unwrap();
    files_g.with_label_values(&["v"]).unwrap().set(7.0);

    // The registry: the serving process's own metrics, some with the same names and labels.
    let registry = prometheus::Registry::new();
    let reg_c = prometheus::CounterVec::new(Opts::new("jobs_total", "Jobs."), &["k"]).unwrap();
    let reg_h = prometheus::HistogramVec::new(
        HistogramOpts::new("job_seconds", "Job time.").buckets(BUCKETS.to_vec()),
        &["k"],
    )
    .unwrap();
    let reg_g = prometheus::GaugeVec::new(Opts::new("queue_depth", "Depth."), &["k"]).unwrap();
    registry.register(Box::new(reg_c.clone())).unwrap();
    registry.register(Box::new(reg_h.clone())).unwrap();
    registry.register(Box::new(reg_g.clone())).unwrap();
    reg_c.with_label_values(&["v"]).inc_by(2.0);
    reg_c.with_label_values(&["w"]).inc();
    reg_h.with_label_values(&["v"]).observe(0.5);
    reg_g.with_label_values(&["v"]).set(9.0);

    let families = MultiProcessCollector::new(dir.path())
        .with_registry(registry)
        .gather();
    let s = samples(&families);
    assert_eq!(value(&s, "jobs_total", &[("k", "v")]), Some(5.0));
    assert_eq!(value(&s, "jobs_total", &[("k", "w")]), Some(1.0));
    assert_eq!(value(&s, "job_seconds_count", &[("k", "v")]), Some(3.0));
    assert_eq!(value(&s, "job_seconds_sum", &[("k", "v")]), Some(5.55));
    let bucket = |le: f64| value(&s, "job_seconds_bucket", &[("k", "v"), ("le", &fmt_le(le))]);
    assert_eq!(bucket(0.1), Some(1.0));
    assert_eq!(bucket(1.0), Some(2.0));
    assert_eq!(bucket(10.0), Some(3.0));
    assert_eq!(value(&s, "queue_depth", &[("k", "v")]), Some(9.0));

    let text = gpe_core::expose::encode_text(&families).unwrap();
    assert_nothing_twice(&text);
    let parsed = python_parse("text", &text);
    assert!(
        parsed.contains("counter|jobs_total{k='v'} 5.0"),
        "{parsed}\n---\n{text}"
    );
    promtool_check(&text);
}

#[test]
fn adopted_registries_of_two_processes_add_up() {
    let dir = tempfile::tempdir().unwrap();
    for n in [3, 4] {
        let mut c = spawn_child("child", dir.path(), &format!("adopt:{n}"), false);
        wait_success(&mut c);
    }
    let s = samples(&MultiProcessCollector::new(dir.path()).gather());
    assert_eq!(
        value(&s, "legacy_jobs_total", &[("queue", "mail")]),
        Some(7.0)
    );
    assert_eq!(value(&s, "legacy_job_seconds_count", &[]), Some(7.0));
    assert_eq!(value(&s, "legacy_job_seconds_sum", &[]), Some(3.5));
    assert_eq!(
        value(&s, "legacy_job_seconds_bucket", &[("le", &fmt_le(1.0))]),
        Some(7.0)
    );
    assert_eq!(
        value(&s, "legacy_job_seconds_bucket", &[("le", &fmt_le(0.1))]),
        Some(0.0)
    );
}

#[test]
fn adoption_on_an_interval_follows_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let registry = prometheus::Registry::new();
    let g = prometheus::IntGauge::new("legacy_connections", "Connections.").unwrap();
    registry.register(Box::new(g.clone())).unwrap();
    g.set(5);
    let _guard = Adopter::with_gauge_mode(registry, &store, GaugeMode::LiveSum)
        .spawn(Duration::from_millis(20))
        .unwrap();
    let collector = MultiProcessCollector::new(dir.path());
    let read = || value(&samples(&collector.gather()), "legacy_connections", &[]);
    eventually("the first snapshot", Duration::from_secs(10), || {
        read() == Some(5.0)
    });
    g.set(11);
    eventually(
        "a later snapshot with the new value",
        Duration::from_secs(10),
        || read() == Some(11.0),
    );
}

#[test]
fn most_recent_gauge_adds_from_many_threads_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for mode in [GaugeMode::MostRecent, GaugeMode::LiveMostRecent] {
        let name = format!("inflight_{mode}");
        let g = GaugeVec::new(Opts::new(name.as_str(), "In flight."), &[], mode, &store)
            .unwrap()
            .with_label_values(&[])
            .unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let g = g.clone();
                s.spawn(move || {
                    for _ in 0..50_000 {
                        g.inc();
                    }
                    for _ in 0..10_000 {
                        g.dec();
                    }
                });
            }
        });
        assert_eq!(g.get(), 160_000.0, "{mode}");
        let s = samples(&MultiProcessCollector::new(dir.path()).gather());
        assert_eq!(value(&s, &name, &[]), Some(160_000.0), "{mode}");
    }
}

#[test]
fn histogram_observations_land_in_the_right_buckets_at_the_edges() {
    // The first bucket has a fast path of its own, and an observation of 0 skips the sum's add:
    // both must place and sum exactly as the plain scan does.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let h = histogram(&store, "edge_seconds", "Edges.");
    for v in [
        0.0,
        -0.0,
        -3.0,
        0.1,
        0.1000001,
        1.0,
        10.0,
        10.5,
        f64::INFINITY,
        f64::NAN,
    ] {
        h.observe(v);
    }
    let families = MultiProcessCollector::new(dir.path()).gather();
    let s = samples(&families);
    let bucket = |le: &str| value(&s, "edge_seconds_bucket", &[("k", "v"), ("le", le)]);
    // 0, -0, -3 and 0.1 (the bound itself) are in le=0.1; NaN is ignored.
    assert_eq!(bucket(&fmt_le(0.1)), Some(4.0));
    assert_eq!(bucket(&fmt_le(1.0)), Some(6.0));
    assert_eq!(bucket(&fmt_le(10.0)), Some(7.0));
    assert_eq!(bucket("+Inf"), Some(9.0));
    assert_eq!(value(&s, "edge_seconds_count", &[("k", "v")]), Some(9.0));
    assert_eq!(h.get_sample_count(), 9);
    // -3 + 0.1 + 0.1000001 + 1 + 10 + 10.5 + inf
    assert_eq!(h.get_sample_sum(), f64::INFINITY);

    let finite = histogram(&store, "edge_bytes", "Edges.");
    for v in [0.0, 0.0, 0.05, 2.0] {
        finite.observe(v);
    }
    assert_eq!(finite.get_sample_count(), 4);
    assert_eq!(finite.get_sample_sum(), 2.05);
}

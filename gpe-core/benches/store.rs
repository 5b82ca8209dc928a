//! Hot-path and scrape benchmarks, each against a baseline measured in the same run.
//!
//! Run with: `cargo bench -p gpe-core --bench store`
//! (set `SCRAPE_BENCH_DIR` to scrape an existing directory instead of a generated one;
//! `gpe-core/benches/scrape_vs_python.py` does that to compare with Python on the same files).

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use gpe_core::{
    Counter, CounterVec, GaugeMode, GaugeVec, HistogramVec, LivePids, Liveness,
    MultiProcessCollector, Store,
};
use prometheus::{HistogramOpts, Opts};

fn hot_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ours = Counter::new("bench_total", "Bench.", &store).unwrap();
    let theirs = prometheus::IntCounter::new("bench_total", "Bench.").unwrap();
    let theirs_f = prometheus::Counter::new("bench_f_total", "Bench.").unwrap();
    let mut g = c.benchmark_group("counter_inc");
    g.bench_function("gpe_counter", |b| b.iter(|| black_box(&ours).inc()));
    g.bench_function("prometheus_int_counter", |b| {
        b.iter(|| black_box(&theirs).inc())
    });
    g.bench_function("prometheus_counter", |b| {
        b.iter(|| black_box(&theirs_f).inc())
    });
    g.finish();

    let buckets = prometheus::DEFAULT_BUCKETS.to_vec();
    let theirs = prometheus::Histogram::with_opts(
        HistogramOpts::new("bench_seconds", "Bench.").buckets(buckets.clone()),
    )
    .unwrap();
    // gpe's histograms: classic; with native buckets beside the classic ones (schema 3);
    // native without classic buckets (only `+Inf`, for the text formats).
    let gpe = |name: &str, buckets: Vec<f64>, native: bool| {
        let opts = HistogramOpts::new(name, "Bench.").buckets(buckets);
        let vec = if native {
            HistogramVec::with_native(opts, gpe_core::native::NativeOpts::DEFAULT, &[], &store)
        } else {
            HistogramVec::new(opts, &[], &store)
        };
        vec.unwrap().with_label_values(&[]).unwrap()
    };
    let ours = gpe("bench_seconds", buckets.clone(), false);
    let native = gpe("bench_native_seconds", buckets, true);
    let native_only = gpe("bench_native_only_seconds", vec![], true);
    let trace = gpe_core::exemplar::TraceContext {
        trace_id: [7; 16],
        span_id: [9; 8],
    };
    // Every variant observes the same sequence of values, through a function of its own
    // (monomorphised: no dynamic call in the measured loop).
    let mut g = c.benchmark_group("histogram_observe");
    observe_bench(&mut g, "gpe_histogram", |x| ours.observe(x));
    observe_bench(&mut g, "gpe_histogram_native", |x| native.observe(x));
    observe_bench(&mut g, "gpe_native_only", |x| native_only.observe(x));
    // An observation that also leaves an exemplar.
    observe_bench(&mut g, "gpe_histogram_native_exemplar", |x| {
        native.observe_with_exemplar(x, &trace);
    });
    observe_bench(&mut g, "prometheus_histogram", |x| theirs.observe(x));
    g.finish();

    let ours = CounterVec::new(
        Opts::new("bench_vec_total", "Bench."),
        &["method", "endpoint"],
        &store,
    )
    .unwrap();
    let theirs = prometheus::IntCounterVec::new(
        Opts::new("bench_vec_total", "Bench."),
        &["method", "endpoint"],
    )
    .unwrap();
    let mut g = c.benchmark_group("labelled_inc");
    g.bench_function("gpe_with_label_values_inc", |b| {
        b.iter(|| {
            black_box(&ours)
                .with_label_values(&["GET", "/users/{id}"])
                .unwrap()
                .inc()
        })
    });
    g.bench_function("prometheus_with_label_values_inc", |b| {
        b.iter(|| {
            black_box(&theirs)
                .with_label_values(&["GET", "/users/{id}"])
                .inc()
        })
    });
    g.finish();
}

/// Observe values cycling through 0..12 with `observe`.
fn observe_bench(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    observe: impl Fn(f64),
) {
    let mut x = 0.0f64;
    g.bench_function(name, |b| {
        b.iter(|| {
            x = (x + 0.37) % 12.0;
            observe(black_box(x));
        })
    });
}

/// 16 processes x 1,000 series: 800 counters, 100 livesum gauges, 100 histograms (default
/// buckets; with `native`, native buckets too, 24 observations each from 1 ms to 10 s).
fn generate(dir: &Path, native: bool) -> Vec<u32> {
    let pids: Vec<u32> = (0..16).map(|i| 3_000_000 + i).collect();
    for &pid in &pids {
        let store = Store::open_as(dir, pid).unwrap();
        let c = CounterVec::new(
            Opts::new("bench_requests_total", "Requests."),
            &["endpoint", "method"],
            &store,
        )
        .unwrap();
        for i in 0..800 {
            c.with_label_values(&[
                &format!("/e{}", i / 4),
                ["GET", "POST", "PUT", "DELETE"][i % 4],
            ])
            .unwrap()
            .inc_by(i as f64);
        }
        let g = GaugeVec::new(
            Opts::new("bench_in_flight", "In flight."),
            &["endpoint"],
            GaugeMode::LiveSum,
            &store,
        )
        .unwrap();
        for i in 0..100 {
            g.with_label_values(&[&format!("/e{i}")])
                .unwrap()
                .set(i as f64);
        }
        let opts = HistogramOpts::new("bench_latency_seconds", "Latency.");
        let h = if native {
            HistogramVec::with_native(
                opts,
                gpe_core::native::NativeOpts::DEFAULT,
                &["endpoint"],
                &store,
            )
        } else {
            HistogramVec::new(opts, &["endpoint"], &store)
        }
        .unwrap();
        for i in 0..100 {
            let h = h.with_label_values(&[&format!("/e{i}")]).unwrap();
            if native {
                for k in 0..24 {
                    h.observe(0.001 * 1.5f64.powi(k + i % 3));
                }
            } else {
                h.observe(i as f64 / 100.0);
            }
        }
    }
    pids
}

fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".db")?.rsplit('_').next()?.parse().ok()
        })
        .collect()
}

fn scrape(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, pids): (PathBuf, Vec<u32>) = match std::env::var_os("SCRAPE_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            let p = pids_in(&d);
            (d, p)
        }
        None => {
            let p = generate(tmp.path(), false);
            (tmp.path().to_path_buf(), p)
        }
    };
    let live = LivePids::new();
    live.replace(pids);
    let collector = MultiProcessCollector::new(&dir)
        .with_liveness(Liveness::Pids(live))
        .with_auto_compact(false);
    let mut g = c.benchmark_group("scrape_16x1000");
    g.sample_size(30);
    g.bench_function("gpe_gather_only", |b| b.iter(|| collector.gather().len()));
    g.bench_function("gpe_gather_encode_text", |b| {
        b.iter(|| {
            gpe_core::expose::encode_text(&collector.gather())
                .unwrap()
                .len()
        })
    });
    // As gpe-master and a standalone server scrape: with gpe's own health families.
    let with_self = MultiProcessCollector::new(&dir)
        .with_liveness(collector.liveness().clone())
        .with_auto_compact(false)
        .with_self_metrics();
    g.bench_function("gpe_gather_encode_text_self_metrics", |b| {
        b.iter(|| {
            gpe_core::expose::encode_text(&with_self.gather())
                .unwrap()
                .len()
        })
    });
    g.finish();

    // The same directory shape with native histograms, scraped as a Prometheus with
    // `--enable-feature=native-histograms` does: the protobuf format.
    let tmp = tempfile::tempdir().unwrap();
    let live = LivePids::new();
    live.replace(generate(tmp.path(), true));
    let native = MultiProcessCollector::new(tmp.path())
        .with_liveness(Liveness::Pids(live))
        .with_auto_compact(false);
    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
    let mut g = c.benchmark_group("scrape_16x1000_native");
    g.sample_size(30);
    g.bench_function("gpe_scrape_encode_protobuf", |b| {
        b.iter(|| {
            native
                .scrape()
                .encode(Some(accept), None)
                .unwrap()
                .body
                .len()
        })
    });
    g.bench_function("gpe_scrape_encode_text", |b| {
        b.iter(|| native.scrape().encode(None, None).unwrap().body.len())
    });
    g.finish();
}

/// The per-job cost of `#[instrument_worker]` against the same handler called bare, in the same
/// run: `JobRecorder::call` (timing, counters, histogram, `catch_unwind`) alone, and the whole
/// per-job path of the sync and threaded loops (`JobLoop::step`: the stop check, the job from
/// the source, the call wrapped in `Outcome::of` as the generated closure does, the
/// max-requests count; the sync kind also marks the job busy for the heartbeat watchdog).
fn worker_wrapper(c: &mut Criterion) {
    use gpe_core::runtime::{JobLoop, JobRecorder, Kind, Options, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let recorder = JobRecorder::new(&Options::new("Bench"), &store, "1").unwrap();
    let sync_loop = JobLoop::new(&Options::new("BenchSync"), &store, "2", 0).unwrap();
    let threads_loop = JobLoop::new(
        &Options::new("BenchThreads").kind(Kind::Threads(4)),
        &store,
        "3",
        0,
    )
    .unwrap();
    fn handler(x: u64) -> Result<u64, std::io::Error> {
        Ok(black_box(x).wrapping_mul(31).rotate_left(7))
    }
    let mut g = c.benchmark_group("worker_handler_call");
    let mut x = 0u64;
    g.bench_function("bare", |b| {
        b.iter(|| {
            x += 1;
            black_box(handler(x)).is_ok()
        })
    });
    // What the two clock reads of a timed job cost on their own on this machine.
    g.bench_function("two_clock_reads", |b| {
        b.iter(|| black_box(std::time::Instant::now()).elapsed())
    });
    // The same with the clock the recorder uses (the time-stamp counter, through quanta).
    let clock = gpe_core::clock::Clock::new();
    g.bench_function("two_tsc_reads", |b| {
        b.iter(|| clock.elapsed(black_box(clock.now())))
    });
    let mut x = 0u64;
    g.bench_function("instrumented", |b| {
        b.iter(|| {
            x += 1;
            black_box(recorder.call(|| handler(x))).is_ok()
        })
    });
    for (name, jobs) in [
        ("loop_step_sync", &sync_loop),
        ("loop_step_threads", &threads_loop),
    ] {
        let mut x = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                x += 1;
                black_box(jobs.step(|| Some(black_box(x)), |j| Outcome::of(handler(j))))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hot_path, scrape, worker_wrapper);
criterion_main!(benches);

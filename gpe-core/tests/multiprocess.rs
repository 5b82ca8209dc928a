//! Real processes writing real files: exactness, SIGKILL, compaction, gauge modes, corrupt files,
//! and interop with Python `prometheus_client` both ways.

mod common;
#[path = "common/log_sink.rs"]
mod log_sink;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use gpe_core::{
    Counter, CounterVec, Gauge, GaugeMode, GaugeVec, HistogramVec, LivePids, Liveness,
    MultiProcessCollector, Store,
};
use prometheus::{HistogramOpts, Opts};

const BUCKETS: [f64; 4] = [0.1, 0.5, 1.0, 1_000_000.0];

/// The body of every child process. Not a test of its own: it only runs when re-executed.
#[test]
#[ignore = "runs only as a child process of the other tests"]
fn child() {
    run_child(|parts, store| match parts[0] {
        "hammer" => {
            let threads: usize = parts[1].parse().unwrap();
            let n: usize = parts[2].parse().unwrap();
            let c = Counter::new("hammer_total", "Hammered.", store).unwrap();
            let h = HistogramVec::new(
                HistogramOpts::new("hammer_seconds", "Hammered.").buckets(BUCKETS.to_vec()),
                &[],
                store,
            )
            .unwrap()
            .with_label_values(&[])
            .unwrap();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (c, h) = (c.clone(), h.clone());
                    s.spawn(move || {
                        for i in 0..n {
                            c.inc();
                            h.observe(((i + t) % 7) as f64 * 0.2);
                        }
                    });
                }
            });
        }
        "incr" => {
            let k: usize = parts[1].parse().unwrap();
            let c = CounterVec::new(Opts::new("killed_total", "Then killed."), &["x"], store)
                .unwrap()
                .with_label_values(&["y"])
                .unwrap();
            for _ in 0..k {
                c.inc();
            }
            child_ready();
            std::thread::sleep(Duration::from_secs(600));
        }
        "once" => {
            Counter::new("churn_total", "Short-lived processes.", store)
                .unwrap()
                .inc();
            Gauge::new("churn_sum", "Sum gauge.", GaugeMode::Sum, store)
                .unwrap()
                .set(1.0);
        }
        "gauges" => {
            set_a_gauge_of_every_mode(store, parts[1].parse().unwrap());
            if parts[2] == "wait" {
                child_ready();
                child_wait_stdin();
            }
        }
        "interop" => write_like_python(store),
        other => panic!("unknown child action {other}"),
    });
}

/// The same metrics `tests/py/interop.py write` makes, written by Rust.
fn write_like_python(store: &Store) {
    let c = CounterVec::new(
        Opts::new("py_requests_total", "Requests from Python."),
        &["method", "path"],
        store,
    )
    .unwrap();
    c.with_label_values(&["GET", "/ü"]).unwrap().inc_by(3.0);
    c.with_label_values(&["POST", "/q\"x"]).unwrap().inc_by(2.5);
    GaugeVec::new(
        Opts::new("py_temperature", "A max gauge."),
        &["room"],
        GaugeMode::Max,
        store,
    )
    .unwrap()
    .with_label_values(&["a"])
    .unwrap()
    .set(21.5);
    Gauge::new(
        "py_in_flight",
        "A livesum gauge.",
        GaugeMode::LiveSum,
        store,
    )
    .unwrap()
    .set(4.0);
    Gauge::new("py_memory", "An all gauge.", GaugeMode::All, store)
        .unwrap()
        .set(1024.0);
    let h = HistogramVec::new(
        HistogramOpts::new("py_latency_seconds", "Latency.").buckets(BUCKETS.to_vec()),
        &["route"],
        store,
    )
    .unwrap()
    .with_label_values(&["/a"])
    .unwrap();
    for v in [0.05, 0.3, 0.7, 2.0, 2.0] {
        h.observe(v);
    }
}

fn scrape(dir: &Path, liveness: Liveness) -> Samples {
    samples(
        &MultiProcessCollector::new(dir)
            .with_liveness(liveness)
            .gather(),
    )
}

fn db_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .count()
}

#[test]
fn exact_under_concurrency_8_processes_4_threads() {
    let dir = tempfile::tempdir().unwrap();
    run_children(8, dir.path(), "hammer:4:100000");
    let s = scrape(dir.path(), Liveness::PidCheck);
    assert_eq!(value(&s, "hammer_total", &[]), Some(3_200_000.0));
    let count = value(&s, "hammer_seconds_count", &[]).unwrap();
    let inf = value(&s, "hammer_seconds_bucket", &[("le", "+Inf")]).unwrap();
    assert_eq!(count, 3_200_000.0);
    assert_eq!(inf, count);
}

#[test]
fn sigkilled_child_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("child", dir.path(), "incr:12345", false);
    wait_ready(&mut child);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let s = scrape(dir.path(), Liveness::PidCheck);
    assert_eq!(value(&s, "killed_total", &[("x", "y")]), Some(12345.0));
}

#[test]
fn compaction_keeps_totals_exact_and_files_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // A scraper running concurrently with the churn: totals never go down, never exceed.
        let scraper = s.spawn(|| {
            let collector = MultiProcessCollector::new(dir.path());
            let mut last = 0.0;
            let mut scrapes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = value(&samples(&collector.gather()), "churn_total", &[]).unwrap_or(0.0);
                assert!(v >= last, "counter went down: {last} -> {v}");
                assert!(v <= 200.0, "counted twice: {v}");
                last = v;
                scrapes += 1;
            }
            scrapes
        });
        for batch in 0..25 {
            run_children(8, dir.path(), "once");
            // Files of dead processes do not pile up.
            if batch % 5 == 4 {
                MultiProcessCollector::new(dir.path()).compact().unwrap();
                assert!(
                    db_files(dir.path()) <= 4,
                    "{} files left",
                    db_files(dir.path())
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(scraper.join().unwrap() > 0);
    });
    let s = scrape(dir.path(), Liveness::PidCheck);
    assert_eq!(value(&s, "churn_total", &[]), Some(200.0));
    assert_eq!(value(&s, "churn_sum", &[]), Some(200.0));
    // Only archives remain: counter + sum gauge.
    assert_eq!(db_files(dir.path()), 2);
}

#[test]
fn every_gauge_mode_with_live_and_dead_processes() {
    let dir = tempfile::tempdir().unwrap();
    // Two live processes (values 10 and 30), two dead ones (20 and 40), written in that order so
    // the most recent value is a dead process's 40 and the most recent live one is 30.
    let mut live_a = spawn_child("child", dir.path(), "gauges:10:wait", true);
    wait_ready(&mut live_a);
    let mut dead_a = spawn_child("child", dir.path(), "gauges:20:exit", false);
    wait_success(&mut dead_a);
    std::thread::sleep(Duration::from_millis(20)); // distinct timestamps for mostrecent
    let mut live_b = spawn_child("child", dir.path(), "gauges:30:wait", true);
    wait_ready(&mut live_b);
    std::thread::sleep(Duration::from_millis(20));
    let mut dead_b = spawn_child("child", dir.path(), "gauges:40:exit", false);
    wait_success(&mut dead_b);

    let live = LivePids::new();
    live.replace([live_a.id(), live_b.id()]);
    let collector = MultiProcessCollector::new(dir.path())
        .with_liveness(Liveness::Pids(live.clone()))
        .with_auto_compact(false);
    let check = |s: &Samples, after_compaction: bool| {
        let g = |mode: &str| value(s, &format!("g_{mode}"), &[("k", "v")]);
        assert_eq!(g("min"), Some(10.0));
        assert_eq!(g("max"), Some(40.0));
        assert_eq!(g("sum"), Some(100.0));
        assert_eq!(g("mostrecent"), Some(40.0));
        assert_eq!(g("livemin"), Some(10.0));
        assert_eq!(g("livemax"), Some(30.0));
        assert_eq!(g("livesum"), Some(40.0));
        assert_eq!(g("livemostrecent"), Some(30.0));
        let pids = |name: &str| -> BTreeSet<String> {
            s.keys()
                .filter(|(n, _)| n == name)
                .map(|(_, l)| l["pid"].clone())
                .collect()
        };
        let live_pids: BTreeSet<String> = [live_a.id(), live_b.id()]
            .iter()
            .map(u32::to_string)
            .collect();
        assert_eq!(pids("g_liveall"), live_pids);
        if after_compaction {
            assert_eq!(pids("g_all"), live_pids);
        } else {
            let mut all = live_pids.clone();
            all.insert(dead_a.id().to_string());
            all.insert(dead_b.id().to_string());
            assert_eq!(pids("g_all"), all);
        }
    };
    check(&samples(&collector.gather()), false);
    let report = collector.compact().unwrap();
    assert!(report.folded > 0 && report.dropped > 0, "{report:?}");
    check(&samples(&collector.gather()), true);
    for mut c in [live_a, live_b] {
        drop(c.stdin.take());
        wait_success(&mut c);
    }
}

/// A `.db` file's bytes holding `entries` (key, value), as Python's `mmap_dict` writes them.
fn db_file(entries: &[(&[u8], f64)]) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    for (key, value) in entries {
        out.extend_from_slice(&(key.len() as i32).to_le_bytes());
        out.extend_from_slice(key);
        let padded = key.len() + (8 - (key.len() + 4) % 8);
        out.resize(out.len() + padded - key.len(), b' ');
        out.extend_from_slice(&value.to_le_bytes());
        out.extend_from_slice(&0f64.to_le_bytes());
    }
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_le_bytes());
    out
}

#[test]
fn a_file_with_a_key_that_is_not_utf8_is_skipped_whole_at_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let good = br#"["half", "half_total", {}, "Half."]"#;
    let bad = b"[\"bad\", \"bad_total\", {}, \"\xff\xfe\"]";
    std::fs::write(
        dir.path().join("counter_999994.db"),
        db_file(&[(good, 5.0), (bad, 1.0)]),
    )
    .unwrap();
    let live = LivePids::new();
    live.replace([999_994]);
    let collector = MultiProcessCollector::new(dir.path()).with_liveness(Liveness::Pids(live));
    // Twice: the second scrape finds the first key where it was (no UTF-8 check for it) and
    // must still reject the file as a whole.
    for _ in 0..2 {
        let (logs, subscriber) = log_sink::capture(tracing::Level::INFO);
        let families = tracing::subscriber::with_default(subscriber, || collector.gather());
        assert!(families.is_empty(), "{families:?}");
        let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("counter_999994.db") && logs.contains("not UTF-8"),
            "{logs}"
        );
    }
}

#[test]
fn corrupt_files_are_skipped_with_a_warning_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    Counter::new("good_total", "Good.", &store)
        .unwrap()
        .inc_by(7.0);
    let mut truncated = 500i32.to_le_bytes().to_vec();
    truncated.extend_from_slice(&[0; 60]);
    std::fs::write(dir.path().join("counter_999991.db"), truncated).unwrap();
    std::fs::write(dir.path().join("counter_999992.db"), b"").unwrap();
    let mut garbage = 64i32.to_le_bytes().to_vec();
    garbage.extend((0..120u32).map(|i| (i * 37 % 251) as u8));
    std::fs::write(dir.path().join("gauge_all_999993.db"), garbage).unwrap();

    let (logs, subscriber) = log_sink::capture(tracing::Level::INFO);
    // While their writers live, corrupt files are skipped at every scrape, with a warning.
    let live = LivePids::new();
    live.replace([999_991, 999_992, 999_993]);
    let s =
        tracing::subscriber::with_default(subscriber, || scrape(dir.path(), Liveness::Pids(live)));
    assert_eq!(value(&s, "good_total", &[]), Some(7.0));
    assert_eq!(s.len(), 1, "{s:?}");
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("counter_999991.db"), "{logs}");
    assert!(
        logs.contains("counter_999992.db"),
        "the zero-length file: {logs}"
    );
    assert!(logs.contains("gauge_all_999993.db"), "{logs}");
    // Once their writers are dead, compaction moves them aside and the scrape stays exact.
    let s = scrape(dir.path(), Liveness::Pids(LivePids::new()));
    assert_eq!(value(&s, "good_total", &[]), Some(7.0));
    assert!(dir.path().join("counter_999991.db.corrupt").exists());
    assert!(!dir.path().join("gauge_all_999993.db").exists());
}

fn python(dir: &Path, mode: &str) -> std::process::Output {
    require_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/interop.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(mode)
        .env("PROMETHEUS_MULTIPROC_DIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn python_samples(dir: &Path) -> Samples {
    let out = python(dir, "read");
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut s = Samples::new();
    for v in parsed {
        let name = v["name"].as_str().unwrap().to_owned();
        let mut labels: Labels = serde_json::from_value(v["labels"].clone()).unwrap();
        if let Some(le) = labels.get_mut("le") {
            *le = fmt_le(if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            });
        }
        s.insert((name, labels), v["value"].as_f64().unwrap());
    }
    s
}

#[test]
fn python_reads_rust_files_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = spawn_child("child", dir.path(), "interop", false);
    wait_success(&mut c);
    let ours = scrape(dir.path(), Liveness::Pids(LivePids::new()));
    let theirs = python_samples(dir.path());
    // Python keeps the dead process's livesum file until mark_process_dead; we drop it.
    let theirs: Samples = theirs
        .into_iter()
        .filter(|((n, _), _)| n != "py_in_flight")
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(
        value(
            &ours,
            "py_requests_total",
            &[("method", "GET"), ("path", "/ü")]
        ),
        Some(3.0)
    );
}

#[test]
fn rust_reads_python_files_identically() {
    let dir = tempfile::tempdir().unwrap();
    let out = python(dir.path(), "write");
    let py_pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let live = LivePids::new();
    live.insert(py_pid); // pretend the writer still lives, so its livesum gauge counts
    let ours = scrape(dir.path(), Liveness::Pids(live));
    let theirs = python_samples(dir.path());
    assert_eq!(ours, theirs);
    assert_eq!(
        value(&ours, "py_latency_seconds_count", &[("route", "/a")]),
        Some(5.0)
    );
    assert_eq!(
        value(
            &ours,
            "py_latency_seconds_bucket",
            &[("route", "/a"), ("le", &fmt_le(0.5))]
        ),
        Some(2.0)
    );
}

#[test]
fn python_and_rust_processes_share_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    python(dir.path(), "write");
    let mut c = spawn_child("child", dir.path(), "interop", false);
    wait_success(&mut c);
    let ours = scrape(dir.path(), Liveness::Pids(LivePids::new()));
    assert_eq!(
        value(
            &ours,
            "py_requests_total",
            &[("method", "GET"), ("path", "/ü")]
        ),
        Some(6.0)
    );
    assert_eq!(
        value(&ours, "py_latency_seconds_count", &[("route", "/a")]),
        Some(10.0)
    );
    assert_eq!(value(&ours, "py_temperature", &[("room", "a")]), Some(21.5));
}

#[test]
fn registration_errors_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(Counter::new("bad name", "x", &store).is_err());
    assert!(CounterVec::new(Opts::new("ok_total", "x"), &["bad-label"], &store).is_err());
    let v = CounterVec::new(Opts::new("two_total", "x"), &["a", "b"], &store).unwrap();
    let e = v.with_label_values(&["only one"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("takes 2 label value(s) (a, b), got 1"),
        "{e}"
    );
    assert!(GaugeVec::new(Opts::new("g", "x"), &["pid"], GaugeMode::All, &store).is_err());
    assert!(HistogramVec::new(HistogramOpts::new("h", "x"), &["le"], &store).is_err());
    assert!(HistogramVec::new(
        HistogramOpts::new("h2", "x").buckets(vec![1.0, 0.5]),
        &[],
        &store
    )
    .is_err());
    assert!(
        Gauge::new("two_total", "x", GaugeMode::All, &store).is_err(),
        "type conflict"
    );
    // The same shape twice is fine and shares the series.
    let a = Counter::new("same_total", "x", &store).unwrap();
    let b = Counter::new("same_total", "x", &store).unwrap();
    a.inc();
    assert_eq!(b.get(), 1.0);
}

/// A collector listing the directory while processes start never sees a file that is empty or
/// without its header: a store makes each file beside its name and renames it in place.
#[test]
fn new_files_appear_whole() {
    let dir = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.ends_with(".db") {
                        continue;
                    }
                    let Ok(bytes) = std::fs::read(entry.path()) else {
                        continue;
                    };
                    seen += 1;
                    assert!(bytes.len() >= 8, "{name}: {} bytes", bytes.len());
                    let used = u32::from_ne_bytes(bytes[..4].try_into().unwrap());
                    assert!(used >= 8, "{name}: used {used}");
                }
            }
            seen
        });
        // Stores of 200 processes (one pid each), each making its counter file.
        for pid in 1_000_000..1_000_200u32 {
            let store = Store::open_as(dir.path(), pid).unwrap();
            let c = Counter::new("appearing_total", "help", &store).unwrap();
            c.inc();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    assert!(seen > 0, "the watcher saw files");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 200, "{names:?}");
    assert!(
        names.iter().all(|n| n.ends_with(".db")),
        "no temporary file left: {names:?}"
    );
}

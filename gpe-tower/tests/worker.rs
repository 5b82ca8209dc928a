//! Worker resource metrics: sampled on a timer, one `liveall` series per worker.

use std::time::{Duration, Instant};

use gpe_tower::{RestartReason, WorkerMetrics, WorkerState};

fn text(dir: &std::path::Path) -> String {
    gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir).gather()).unwrap()
}

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn sampler_sets_memory_cpu_uptime_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = gpe_core::Store::open(dir.path()).unwrap();
    let worker = WorkerMetrics::new(&store, "2").unwrap();
    assert!(worker.spawn_sampler(Duration::ZERO).is_err());
    let sampler = worker.spawn_sampler(Duration::from_millis(50)).unwrap();

    // Burn some CPU, then wait (with a deadline) for a sample that shows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut x = 0u64;
    let t = loop {
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        let t = text(dir.path());
        let uptime = value(&t, "gunicorn_worker_uptime_seconds{").unwrap_or(0.0);
        let cpu = value(&t, "gunicorn_worker_cpu_percent{").unwrap_or(0.0);
        if (uptime > 0.1 && cpu > 0.0) || Instant::now() > deadline {
            break t;
        }
    };
    std::hint::black_box(x);
    sampler.stop();

    let pid = std::process::id();
    let mem = value(&t, "gunicorn_worker_memory_bytes{").unwrap();
    assert!(mem > 1_000_000.0, "{t}");
    assert!(
        t.contains(&format!(
            "gunicorn_worker_memory_bytes{{pid=\"{pid}\",worker_id=\"2\"}}"
        )),
        "{t}"
    );
    assert!(
        value(&t, "gunicorn_worker_cpu_percent{").unwrap() > 0.0,
        "{t}"
    );
    assert!(
        value(&t, "gunicorn_worker_uptime_seconds{").unwrap() > 0.1,
        "{t}"
    );
    assert_eq!(
        value(
            &t,
            &format!("gunicorn_worker_state{{pid=\"{pid}\",state=\"running\"")
        ),
        Some(1.0),
        "{t}"
    );
    assert!(!t.contains("timestamp"));

    worker.set_state(WorkerState::Quitting);
    worker.record_restart(RestartReason::Quit);
    let t = text(dir.path());
    assert_eq!(
        value(
            &t,
            &format!("gunicorn_worker_state{{pid=\"{pid}\",state=\"running\"")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &t,
            &format!("gunicorn_worker_state{{pid=\"{pid}\",state=\"quitting\"")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            "gunicorn_worker_restart_total{reason=\"quit\",worker_id=\"2\"}"
        ),
        Some(1.0),
        "{t}"
    );
}

//! The tests every example service passes as 4 workers of a real gpe-master, under load (each
//! example's `tests/under_master.rs` calls these with its own binary):
//! `sum(gunicorn_worker_requests_total)` on the master's /metrics is exactly the number of requests
//! sent, and a random-URL scan does not grow the endpoint label.
//!
//! Needs `gpe-master` built in the same target directory (`.ci/test` builds every binary first);
//! fails with a message saying so otherwise.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use super::common::{
    eventually, free_port, get, load, python_requests_total, sum, target_bin, Proc,
};

pub(crate) fn four_workers_add_up_exactly_under_load(bin: &str) {
    let Some(master) = target_bin("gpe-master") else {
        panic!("gpe-master is not built in this target directory: run `cargo build --workspace --bins` first (.ci/test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let _master = Proc::spawn(
        Command::new(master)
            .args(["--workers", "4", "--bind", &format!("127.0.0.1:{port}")])
            .arg(bin)
            .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_METRICS_PORT", metrics_port.to_string()),
    );
    eventually("the app", Duration::from_secs(30), || {
        get(port, "/health").ok()
    });
    eventually("the master's /metrics", Duration::from_secs(30), || {
        get(metrics_port, "/metrics")
            .ok()
            .filter(|(s, _)| *s == 200)
    });

    let n = 800;
    load(port, &["/", "/users/1", "/users/2", "/fail", "/nope"], n, 8);
    // A scan of random URLs: they all share `<unmatched>`.
    let scan: Vec<String> = (0..200).map(|i| format!("/scan/{i}/{}", i * 7)).collect();
    let scan: Vec<&str> = scan.iter().map(String::as_str).collect();
    load(port, &scan, scan.len(), 4);
    let total = n + scan.len();

    let text = eventually("every request in /metrics", Duration::from_secs(10), || {
        let (_, text) = get(metrics_port, "/metrics").ok()?;
        (sum(&text, "gunicorn_worker_requests_total", &[]) >= total as f64).then_some(text)
    });
    assert_eq!(
        sum(&text, "gunicorn_worker_requests_total", &[]),
        total as f64
    );
    if let Some(py) = python_requests_total(&text) {
        assert_eq!(py, total as f64);
    }
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_requests_total",
            &[("endpoint", "/users/{id}")]
        ),
        (2 * n / 5) as f64
    );
    let endpoints: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("gunicorn_worker_requests_total{"))
        .filter_map(|l| l.split("endpoint=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        endpoints,
        HashSet::from(["/", "/users/{id}", "/fail", "<unmatched>"]),
    );
    let workers: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("gunicorn_worker_requests_total{"))
        .filter_map(|l| l.split("worker_id=\"").nth(1)?.split('"').next())
        .collect();
    assert!(
        workers.len() > 1,
        "requests spread over the workers: {workers:?}"
    );
}

//! With `PROMETHEUS_MULTIPROC_DIR` unset, the master and its workers agree on gpe's default
//! store directory (`$XDG_RUNTIME_DIR/gpe`, else `$TMPDIR/gpe-metrics-<uid>`), create it, and the
//! master's `/metrics` adds up the workers' files there (the Python exporter's default does not
//! work: `reference/python-exporter.md`).

mod common;

use std::path::Path;

use common::{eventually, line_job, sum_samples, sync_worker, Master, Options, PATIENCE};

/// One line-protocol job; true when a worker answered it.
fn job(m: &Master) -> bool {
    line_job(m.addr).is_some_and(|r| r.starts_with("JOB"))
}

fn requests_total(m: &Master) -> Option<f64> {
    Some(sum_samples(
        &m.metrics().ok()?,
        "gunicorn_worker_requests_total",
        "",
    ))
}

fn db_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
                .count()
        })
        .unwrap_or(0)
}

fn run(env: &[(&str, &str)], expected_dir: &Path) {
    let mut opts = Options::workers(2)
        .worker_binary(&sync_worker())
        .env("PROMETHEUS_MULTIPROC_DIR", "");
    for (k, v) in env {
        opts = opts.env(k, v);
    }
    let m = Master::start(opts);
    eventually(
        PATIENCE,
        "a worker answering",
        || job(&m).then_some(()),
        String::new,
    );
    for i in 1..12 {
        assert!(job(&m), "job {i} failed");
    }
    eventually(
        PATIENCE,
        "12 jobs on the master's /metrics",
        || (requests_total(&m) == Some(12.0)).then_some(()),
        || format!("{:?}\n--- log ---\n{}", requests_total(&m), m.log()),
    );
    assert!(
        db_files(expected_dir) > 0,
        "no .db file in {}",
        expected_dir.display()
    );
}

#[test]
fn default_dir_under_xdg_runtime_dir_works() {
    let run_dir = tempfile::tempdir().unwrap();
    run(
        &[("XDG_RUNTIME_DIR", run_dir.path().to_str().unwrap())],
        &run_dir.path().join("gpe"),
    );
}

#[test]
fn default_dir_under_tmpdir_works() {
    let tmp = tempfile::tempdir().unwrap();
    let uid = nix::unistd::getuid();
    run(
        &[
            ("XDG_RUNTIME_DIR", ""),
            ("TMPDIR", tmp.path().to_str().unwrap()),
        ],
        &tmp.path().join(format!("gpe-metrics-{uid}")),
    );
}

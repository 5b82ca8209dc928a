//! The three worker examples under a real `gpe-master --workers 3`: jobs are driven from outside,
//! the aggregated counts (read from the store directory by gpe-core's collector) must be exact, and
//! a panicking handler is counted while its worker survives.
//!
//! Needs `target/*/gpe-master` next to this test's binary (`.ci/test` builds every binary first).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpe_core::{Liveness, MultiProcessCollector};

fn gpe_master() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let master = dir.join("gpe-master");
    assert!(
        master.exists(),
        "{} is missing: build it first (`cargo build -p gpe-master`, done by `.ci/test`)",
        master.display()
    );
    master
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A master under a watchdog: killed (with its workers) when the test ends, pass or fail.
struct Master {
    child: Child,
    metrics_dir: tempfile::TempDir,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(worker: &str, port: u16, extra_env: &[(&str, &Path)]) -> Master {
    let metrics_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(gpe_master());
    cmd.args([
        "--workers",
        "3",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--no-metrics",
    ])
    .arg(worker)
    .env("PROMETHEUS_MULTIPROC_DIR", metrics_dir.path())
    .env("RUST_LOG", "warn")
    .env("RUST_BACKTRACE", "0")
    .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Master {
        child: cmd.spawn().unwrap(),
        metrics_dir,
    }
}

fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send one line; the reply, or `None` when the connection was dropped (a panicking handler).
fn request(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).ok()?;
    (!reply.is_empty()).then_some(reply)
}

fn totals(dir: &Path) -> (f64, f64, f64) {
    let families = MultiProcessCollector::new(dir)
        .with_liveness(Liveness::PidCheck)
        .gather();
    let sum = |name: &str, filter: &dyn Fn(&gpe_core::prometheus::proto::Metric) -> bool| -> f64 {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| filter(m))
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    let error_is = |t: &'static str| {
        move |m: &gpe_core::prometheus::proto::Metric| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "error_type" && l.value() == t)
        }
    };
    (
        sum("gunicorn_worker_requests_total", &|_| true),
        sum("gunicorn_worker_failed_requests_total", &error_is("panic")),
        sum(
            "gunicorn_worker_failed_requests_total",
            &error_is("LineError"),
        ),
    )
}

fn line_protocol(worker: &str) {
    let port = free_port();
    let master = start(worker, port, &[]);
    let first = eventually("a worker answering", Duration::from_secs(30), || {
        request(port, "warm")
    });
    assert!(first.starts_with("WARM "), "{first}");
    let mut pids = std::collections::BTreeSet::new();
    let n = 60;
    for i in 0..n {
        let reply = request(port, &format!("job{i}")).expect("a reply");
        assert!(reply.starts_with(&format!("JOB{i} ")), "{reply}");
        pids.insert(reply.trim().rsplit(' ').next().unwrap().to_owned());
    }
    assert_eq!(request(port, "fail").as_deref(), Some("ERR\n"));
    assert_eq!(
        request(port, "panic"),
        None,
        "a panicking handler drops the connection"
    );
    // The worker survived: requests keep being answered, by workers that were there before.
    for i in 0..20 {
        let reply = request(port, &format!("after{i}")).expect("a reply after the panic");
        pids.insert(reply.trim().rsplit(' ').next().unwrap().to_owned());
    }
    assert!(pids.len() <= 3, "workers were replaced: {pids:?}");
    // warm + n + fail + panic + 20 after.
    let expected = (1 + n + 1 + 1 + 20) as f64;
    let mut last = (0.0, 0.0, 0.0);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("exact totals", Duration::from_secs(10), || {
            last = totals(master.metrics_dir.path());
            (last == (expected, 1.0, 1.0)).then_some(())
        })
    }));
    assert!(
        got.is_ok(),
        "totals (requests, panics, LineError failures) = {last:?}, expected ({expected}, 1, 1)"
    );
}

#[test]
fn sync_worker_under_master() {
    line_protocol(env!("CARGO_BIN_EXE_sync-worker"));
}

#[test]
fn threaded_worker_under_master() {
    line_protocol(env!("CARGO_BIN_EXE_threaded-worker"));
}

#[test]
fn queue_worker_under_master() {
    let spool = tempfile::tempdir().unwrap();
    let master = start(
        env!("CARGO_BIN_EXE_queue-worker"),
        free_port(),
        &[("QUEUE_DIR", spool.path())],
    );
    let n = 40;
    for i in 0..n {
        std::fs::write(
            spool.path().join(format!("{i}.job.tmp")),
            format!("job {i}"),
        )
        .unwrap();
        std::fs::rename(
            spool.path().join(format!("{i}.job.tmp")),
            spool.path().join(format!("{i}.job")),
        )
        .unwrap();
    }
    std::fs::write(spool.path().join("p.job.tmp"), "panic").unwrap();
    std::fs::rename(spool.path().join("p.job.tmp"), spool.path().join("p.job")).unwrap();
    eventually("every job done", Duration::from_secs(60), || {
        let done = std::fs::read_dir(spool.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "done"))
            .count();
        (done == n).then_some(())
    });
    for i in 0..n {
        let out = std::fs::read_to_string(spool.path().join(format!("{i}.done"))).unwrap();
        assert_eq!(out, format!("JOB {i}"));
    }
    let expected = (n + 1) as f64;
    eventually("exact totals", Duration::from_secs(10), || {
        let (requests, panics, _) = totals(master.metrics_dir.path());
        (requests == expected && panics == 1.0).then_some(())
    });
}

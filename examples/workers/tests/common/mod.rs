//! The harness the worker examples' tests share: a real `gpe-master` (killed with its workers
//! when the test ends, pass or fail), its workers' pids from `/proc`, the store read by gpe-core's
//! collector, and the examples' line protocol.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use gpe_core::prometheus::proto::{Metric, MetricFamily};
use gpe_core::{Liveness, MultiProcessCollector};

#[path = "../../../support/tests_common.rs"]
mod support;
pub(crate) use support::{eventually, free_port, target_bin};

pub(crate) fn gpe_master() -> PathBuf {
    target_bin("gpe-master").unwrap_or_else(|| {
        panic!("gpe-master is missing next to this test: build it first (`cargo build -p gpe-master`, done by `.ci/test`)")
    })
}

/// A master killed (with its workers) when the test ends, pass or fail.
pub(crate) struct Master {
    pub(crate) child: Child,
    pub(crate) metrics_dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) metrics_port: Option<u16>,
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.child.id(), "TERM");
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Master {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's exit status, if it exits within `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pids of the master's children (its workers).
    pub(crate) fn workers(&self) -> BTreeSet<u32> {
        children(self.pid())
    }

    /// Wait until the master has `n` workers, each of them accepting (answering `ping`
    /// requests is not enough to tell them apart, so the pid set comes from `/proc`, and each
    /// must have written its metrics files).
    pub(crate) fn wait_workers(&self, n: usize) -> BTreeSet<u32> {
        eventually("the workers booted", Duration::from_secs(30), || {
            let pids = self.workers();
            let booted = pids.len() == n
                && pids.iter().all(|p| {
                    self.metrics_dir
                        .path()
                        .join(format!("counter_{p}.db"))
                        .exists()
                });
            booted.then_some(pids)
        })
    }

    pub(crate) fn families(&self) -> Vec<MetricFamily> {
        MultiProcessCollector::new(self.metrics_dir.path())
            .with_liveness(Liveness::PidCheck)
            .gather()
    }

    /// Send `sig` to the master and expect it to exit 0 within `within`; how long that took.
    pub(crate) fn stop(&mut self, sig: &str, within: Duration) -> Duration {
        let started = Instant::now();
        signal(self.pid(), sig);
        let status = self
            .wait_exit(within)
            .unwrap_or_else(|| panic!("the master did not exit within {within:?} of {sig}"));
        assert!(status.success(), "{status:?}");
        started.elapsed()
    }
}

/// Poll `read` until it returns `expected`, for at most 10 s; then fail naming `what` and the last
/// value read.
pub(crate) fn settles_to<T: PartialEq + std::fmt::Debug>(
    what: &str,
    expected: T,
    mut read: impl FnMut() -> T,
) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let got = read();
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what} = {got:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sum of the counter family `name` over the series whose labels include `with`.
pub(crate) fn counter(families: &[MetricFamily], name: &str, with: &[(&str, &str)]) -> f64 {
    series(families, name, with)
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// The counter family `name` (`..._failed_requests_total`, `..._error_handling_total`) for one
/// `error_type`, summed over the workers.
pub(crate) fn by_error_type(families: &[MetricFamily], name: &str, error_type: &str) -> f64 {
    counter(families, name, &[("error_type", error_type)])
}

/// `gunicorn_worker_restart_total{reason="<reason>"}`, summed over the workers.
pub(crate) fn restarts(families: &[MetricFamily], reason: &str) -> f64 {
    counter(
        families,
        "gunicorn_worker_restart_total",
        &[("reason", reason)],
    )
}

/// The series of family `name` whose labels include `with`.
pub(crate) fn series<'a>(
    families: &'a [MetricFamily],
    name: &'a str,
    with: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Metric> + 'a {
    families
        .iter()
        .filter(move |f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(move |m| {
            with.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Children of `parent`, from `/proc/*/stat`.
pub(crate) fn children(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != Some("Z") {
            out.insert(pid);
        }
    }
    out
}

pub(crate) struct Start<'a> {
    pub(crate) worker: &'a str,
    pub(crate) workers: u32,
    pub(crate) args: &'a [&'a str],
    pub(crate) env: &'a [(&'a str, &'a Path)],
    pub(crate) metrics: bool,
}

impl<'a> Start<'a> {
    pub(crate) fn new(worker: &'a str) -> Self {
        Start {
            worker,
            workers: 3,
            args: &[],
            env: &[],
            metrics: false,
        }
    }

    pub(crate) fn spawn(self) -> Master {
        let metrics_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let metrics_port = self.metrics.then(free_port);
        let mut cmd = Command::new(gpe_master());
        cmd.args([
            "--workers",
            &self.workers.to_string(),
            "--bind",
            &format!("127.0.0.1:{port}"),
        ]);
        match metrics_port {
            Some(p) => cmd.args(["--metrics-bind", &format!("127.0.0.1:{p}")]),
            None => cmd.arg("--no-metrics"),
        };
        cmd.args(self.args)
            .arg(self.worker)
            .env("PROMETHEUS_MULTIPROC_DIR", metrics_dir.path())
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null());
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        Master {
            child: cmd.spawn().unwrap(),
            metrics_dir,
            port,
            metrics_port,
        }
    }
}

/// A master of the queue consumer `worker` with `args`, its spool (`QUEUE_DIR`) a fresh temp dir.
pub(crate) fn spool_master(worker: &str, args: &[&str]) -> (tempfile::TempDir, Master) {
    let spool = tempfile::tempdir().unwrap();
    let master = Start {
        args,
        env: &[("QUEUE_DIR", spool.path())],
        ..Start::new(worker)
    }
    .spawn();
    (spool, master)
}

/// Send one line; the reply, or `None` when the connection was dropped (a panicking handler).
pub(crate) fn request(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).ok()?;
    (!reply.is_empty()).then_some(reply)
}

/// The pid at the end of a reply (`TEXT <pid>`).
pub(crate) fn reply_pid(reply: &str) -> u32 {
    reply.trim().rsplit(' ').next().unwrap().parse().unwrap()
}

/// Drop a job `name` with `content` into the spool `dir` whole (written aside, then renamed).
pub(crate) fn put_job(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.job"))).unwrap();
}

/// One `#[test]` per `test_name => worker binary` pair, each running the same `check` on its
/// worker binary.
macro_rules! worker_tests {
    ($check:ident: $($test:ident => $worker:expr),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $check($worker);
            }
        )+
    };
}
pub(crate) use worker_tests;

//! gpe-master with `REDIS_ENABLED`, and `gpe-master exporter`, against a real `redis-server`
//! started by the test on a free loopback port. Workers are the real `sync-worker` example
//! (a gpe worker that counts `gunicorn_worker_requests_total`).

mod common;
// gpe-core's private `redis-server` per test (not importable from another crate's tests).
#[path = "../../gpe-core/tests/redis_support/mod.rs"]
mod redis_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    children, eventually, free_port, http_get, line_job, master_bin, sum_samples, sync_worker,
    PATIENCE,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use redis_support::RedisServer;

/// A process killed (with its children) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        for p in children(pid).into_iter().chain([pid]) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

struct Host {
    proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Host {
    /// `sum(gunicorn_worker_requests_total)` in this host's files. A worker answers a job before
    /// the generated wrapper counts it, so a test that kills a worker right after its last
    /// answer first waits for this (else the kill can land between the answer and the count).
    fn file_total(&self) -> f64 {
        gpe_core::MultiProcessCollector::new(self._dir.path())
            .with_auto_compact(false)
            .gather()
            .iter()
            .filter(|f| f.name() == "gunicorn_worker_requests_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum()
    }

    fn wait_file_total(&self, n: f64) {
        eventually(
            PATIENCE,
            "the jobs counted in the host's files",
            || (self.file_total() == n).then_some(()),
            || format!("files total {}", self.file_total()),
        );
    }
}

/// `gpe-master --workers 2` of `sync-worker`, syncing to `redis_url` as host `id`.
fn master(id: &str, redis_url: &str) -> Host {
    master_with(id, redis_url, &["--no-metrics"])
}

fn master_with(id: &str, redis_url: &str, extra: &[&str]) -> Host {
    master_env(id, redis_url, extra, &[])
}

/// As [`master_with`], with environment overrides (e.g. a longer `REDIS_SYNC_INTERVAL`).
fn master_env(id: &str, redis_url: &str, extra: &[&str], envs: &[(&str, &str)]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(master_bin())
        .args(["--workers", "2", "--bind", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg(sync_worker())
        .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
        .env("REDIS_ENABLED", "true")
        .env("REDIS_URL", redis_url)
        .env("REDIS_SYNC_INTERVAL", "0.2")
        .env(gpe_core::worker::env::HOST_ID, id)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Host {
        proc: Proc(child),
        port,
        _dir: dir,
    }
}

/// One job on the line protocol; the answering worker's pid.
fn job(port: u16) -> Option<i32> {
    line_job(([127, 0, 0, 1], port).into())?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

fn send_jobs(port: u16, n: usize) {
    eventually(PATIENCE, "a worker answering", || job(port), String::new);
    for i in 1..n {
        assert!(job(port).is_some(), "job {i} failed");
    }
}

fn exporter(redis_url: &str, host_label: bool) -> (Proc, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(master_bin());
    cmd.args(["exporter", "--metrics-bind", &addr.to_string()])
        .env("REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if host_label {
        cmd.arg("--host-label");
    }
    (Proc(cmd.spawn().unwrap()), addr)
}

fn requests_total(addr: SocketAddr, filter: &str) -> Option<f64> {
    let text = http_get(addr, "/metrics", Duration::from_secs(10)).ok()?;
    let status = text.split(' ').nth(1)?;
    (status == "200").then(|| sum_samples(&text, "gunicorn_worker_requests_total", filter))
}

/// Wait until the `/metrics` at `addr` shows `sum(gunicorn_worker_requests_total)` = `n`; `what`
/// names the wait in the timeout's message, with the last total seen.
fn wait_requests_total(addr: SocketAddr, what: &str, n: f64) {
    let last = std::cell::Cell::new(None);
    eventually(
        PATIENCE,
        what,
        || {
            last.set(requests_total(addr, ""));
            (last.get() == Some(n)).then_some(())
        },
        || format!("expected {n}, last total seen: {:?}", last.get()),
    );
}

#[test]
fn two_hosts_sync_to_redis_and_the_exporter_adds_them_up() {
    let redis = RedisServer::start();
    let a = master("host-a", &redis.url());
    let b = master("host-b", &redis.url());
    send_jobs(a.port, 30);
    send_jobs(b.port, 12);

    let (_exp, addr) = exporter(&redis.url(), false);
    wait_requests_total(addr, "42 requests in the exporter's total", 42.0);

    let (_exp_h, addr_h) = exporter(&redis.url(), true);
    eventually(
        PATIENCE,
        "per-host totals",
        || {
            (requests_total(addr_h, "host=\"host-a\"") == Some(30.0)
                && requests_total(addr_h, "host=\"host-b\"") == Some(12.0))
            .then_some(())
        },
        || http_get(addr_h, "/metrics", Duration::from_secs(5)).unwrap_or_default(),
    );

    // A worker SIGKILLed right after its last jobs: the master flushes its file to Redis before
    // compacting it, so nothing is lost.
    let mut served_by = std::collections::BTreeMap::new();
    for _ in 0..10 {
        *served_by.entry(job(a.port).unwrap()).or_insert(0) += 1;
    }
    let (&victim, _) = served_by.iter().next().unwrap();
    assert!(children(a.proc.0.id() as i32).contains(&victim));
    a.wait_file_total(40.0);
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    wait_requests_total(addr, "52 requests after the SIGKILL", 52.0);
    drop(b);
    // Host b's master stopped (killed): its values stay in the total (never go backwards).
    assert_eq!(requests_total(addr, ""), Some(52.0));
}

#[test]
fn redis_down_at_start_is_only_a_warning_and_converges_later() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let host = master("host-late", &url);
    // Requests are served while Redis does not exist.
    send_jobs(host.port, 25);
    assert!(
        common::running(host.proc.0.id() as i32),
        "the master must keep running without Redis"
    );
    let redis = RedisServer::start_on(port);
    let (_exp, addr) = exporter(&redis.url(), false);
    wait_requests_total(addr, "the 25 requests in Redis after it came up", 25.0);
}

#[test]
fn exporter_flags_are_checked() {
    let out = Command::new(master_bin())
        .args(["exporter", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = Command::new(master_bin())
        .args(["exporter"])
        .env("REDIS_PORT", "http")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REDIS_PORT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Redis killed for 10 s while jobs keep coming: no job fails, the master's own `/metrics`
/// answers 200 with the exact local total throughout, and once Redis is back (empty: it keeps
/// nothing on disk) the exporter's total converges to exactly the number of jobs.
#[test]
fn redis_down_for_ten_seconds_under_load_loses_nothing() {
    let mut redis = RedisServer::start();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let host = master_with(
        "host-outage",
        &redis.url(),
        &["--metrics-bind", &metrics.to_string()],
    );
    send_jobs(host.port, 10);
    let (_exp, exp_addr) = exporter(&redis.url(), false);
    wait_requests_total(exp_addr, "the first 10 jobs in Redis", 10.0);

    // Kill Redis; keep sending jobs and scraping the master for 10 s (bounded by count too).
    redis.kill();
    let mut sent = 10usize;
    let mut scrapes = 0;
    let outage = std::time::Instant::now();
    while outage.elapsed() < Duration::from_secs(10) && sent < 100_000 {
        for _ in 0..20 {
            assert!(
                job(host.port).is_some(),
                "job {} failed during the outage",
                sent + 1
            );
            sent += 1;
        }
        assert!(
            requests_total(metrics, "").is_some(),
            "the master's /metrics did not answer 200 during the outage"
        );
        // (A worker answers a job just before it records it: the count may trail by a moment.)
        wait_requests_total(
            metrics,
            "the master's /metrics to count every job during the outage",
            sent as f64,
        );
        scrapes += 1;
        // Pace the load (about 1,000 jobs/s), so the outage lasts its 10 s under steady load.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(scrapes >= 10, "only {scrapes} scrapes in 10 s");

    // Redis back on the same port, empty: the sync notices and resends the absolute values.
    redis.restart();
    wait_requests_total(
        exp_addr,
        "the exporter's total to equal every job sent",
        sent as f64,
    );
    drop(redis);
}

/// With a sync interval of an hour, only the master's own flushes can bring values to Redis: the
/// one after reaping a worker (a SIGKILLed worker's last jobs, and its siblings' values, reach
/// Redis at once) and the final one of a graceful stop.
#[test]
fn reaped_worker_and_graceful_stop_flush_without_waiting_for_the_timer() {
    let redis = RedisServer::start();
    let mut a = master_env(
        "host-flush",
        &redis.url(),
        &["--no-metrics"],
        &[("REDIS_SYNC_INTERVAL", "3600")],
    );
    let (_exp, addr) = exporter(&redis.url(), false);
    send_jobs(a.port, 10);
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..4 {
        served_by.insert(job(a.port).unwrap());
    }
    // 14 jobs done; the timer will not sync for an hour.
    let victim = *served_by.iter().next().unwrap();
    assert!(children(a.proc.0.id() as i32).contains(&victim));
    a.wait_file_total(14.0);
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    wait_requests_total(addr, "the 14 jobs in Redis after the reap", 14.0);
    send_jobs(a.port, 6);
    a.wait_file_total(20.0);
    assert_eq!(
        requests_total(addr, ""),
        Some(14.0),
        "nothing syncs between two flushes of the master"
    );
    kill(Pid::from_raw(a.proc.0.id() as i32), Signal::SIGTERM).unwrap();
    let child = &mut a.proc.0;
    let status = eventually(
        PATIENCE,
        "the master to stop on TERM",
        || child.try_wait().ok().flatten(),
        String::new,
    );
    assert!(status.success(), "{status}");
    assert_eq!(
        requests_total(addr, ""),
        Some(20.0),
        "the graceful stop's final flush"
    );
}

//! Shared harness of the gpe-master integration tests: start the real `gpe-master` binary with the
//! real `example-socket-activated` worker, talk HTTP/1.0 to it over std `TcpStream`s, read its
//! `/metrics`, and poll conditions against a deadline (never a bare sleep as synchronisation).
//!
//! Every master runs in its own temp dir (cwd, `PROMETHEUS_MULTIPROC_DIR`, `--pid`, log file) and
//! is owned by a [`Master`] guard whose `Drop` kills it and its workers, pass or fail.
//!
//! Tests in one binary run in parallel threads; they share nothing but the machine (each master
//! has its own ports and directory), so no lock is needed.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The default patience for anything a loaded 2-core machine may be slow at.
pub(crate) const PATIENCE: Duration = Duration::from_secs(15);

/// The `gpe-master` binary under test.
pub(crate) fn master_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpe-master"))
}

/// `target/<profile>/example-socket-activated`, next to `gpe-master`; built once (into a private
/// target dir, so the build never waits on the lock held by the running `cargo test`) if missing.
pub(crate) fn worker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let next_to_master = master_bin()
            .parent()
            .expect("gpe-master has a parent dir")
            .join("example-socket-activated");
        if next_to_master.is_file() {
            return next_to_master;
        }
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("worker-build");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(&cargo)
            .args(["build", "-p", "example-socket-activated"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        let built = target.join("debug").join("example-socket-activated");
        match status {
            Ok(s) if s.success() && built.is_file() => built,
            other => panic!(
                "{} is missing and `cargo build -p example-socket-activated` failed ({other:?}): \
                 build it first with `cargo build -p example-socket-activated`",
                next_to_master.display()
            ),
        }
    })
    .clone()
}

/// `target/<profile>/sync-worker` (examples/workers, an `#[instrument_worker]` worker that
/// counts `gunicorn_worker_requests_total`), next to `gpe-master`.
pub(crate) fn sync_worker() -> PathBuf {
    let bin = master_bin().parent().unwrap().join("sync-worker");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build --workspace --bins` first (.ci/test does)",
        bin.display()
    );
    bin
}

#[path = "../../../gpe-core/tests/shared/ports.rs"]
mod ports;
/// A port that was free a moment ago (the master cannot report the port of `--bind HOST:0`),
/// below the ephemeral range (see `gpe-core/tests/shared/ports.rs`).
pub(crate) use ports::free_port;

/// Poll `check` until it returns `Some`, or panic after `within` with `what` and the last value
/// seen described by `on_timeout`.
pub(crate) fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    on_timeout: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                on_timeout()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One HTTP/1.0 `GET /` over a unix socket; the whole response.
pub(crate) fn unix_get(path: &Path, timeout: Duration) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// One HTTP/1.0 GET; the whole response (status line, headers, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.") {
        return Err(std::io::Error::other(format!(
            "not an HTTP response: {out:?}"
        )));
    }
    Ok(out)
}

/// One `job` on the line protocol of the worker examples (`sync-worker` answers `JOB <pid>`):
/// the reply line, trimmed, or `None` when nothing answered.
pub(crate) fn line_job(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"job\n").ok()?;
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut reply).ok()?;
    Some(reply.trim().to_owned()).filter(|r| !r.is_empty())
}

/// Sum of the samples of `name` in an exposition whose label text contains `filter` (`""`: all).
pub(crate) fn sum_samples(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The pid in a worker's `hello from pid N` answer.
pub(crate) fn pid_in(response: &str) -> Option<i32> {
    response
        .split("hello from pid ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of the sample `series` (name plus exact label text, e.g.
/// `gunicorn_master_signals_total{signal="ttin"}`) in a text exposition.
pub(crate) fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// The user `nobody` and group `nogroup`, for a test of `--user`/`--group`, which needs root; `None`
/// (after printing why the test `what` is skipped) when not root or when either does not exist.
pub(crate) fn nobody_and_nogroup(what: &str) -> Option<(nix::unistd::User, nix::unistd::Group)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping {what}: the test does not run as root");
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").ok().flatten();
    let group = nix::unistd::Group::from_name("nogroup").ok().flatten();
    let both = user.zip(group);
    if both.is_none() {
        eprintln!("skipping {what}: no user `nobody` or group `nogroup` here");
    }
    both
}

/// Wait (at most `within`) until none of `pids` is running; on timeout, fail naming `what` and the
/// ones still running.
pub(crate) fn wait_gone(pids: &[i32], within: Duration, what: &str) {
    eventually(
        within,
        what,
        || pids.iter().all(|p| !running(*p)).then_some(()),
        || {
            let still: Vec<_> = pids.iter().filter(|p| running(**p)).collect();
            format!("{what}: still running: {still:?}")
        },
    );
}

/// The pid a pidfile holds, if it holds one.
pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `<pidfile>.2`, where a new master (USR2) keeps its pid until it is promoted.
pub(crate) fn dot2(pidfile: &Path) -> PathBuf {
    let mut s = pidfile.as_os_str().to_owned();
    s.push(".2");
    s.into()
}

/// SIGTERM `pid`, a master no [`Master`] owns (the new one of a USR2), and wait until it is gone;
/// on timeout, fail with `log()`.
pub(crate) fn stop_new_master(pid: i32, log: impl FnOnce() -> String) {
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("signalling the new master");
    eventually(
        PATIENCE,
        "the new master to stop",
        || (!running(pid)).then_some(()),
        log,
    );
}

/// Whether `pid` is a running (not zombie) process.
pub(crate) fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Running children of `parent`, sorted.
pub(crate) fn children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = stat.rfind(')') else { continue };
        let mut f = stat[i + 1..].split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) && state != Some("Z") && state != Some("X") {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// Number of threads of `pid` (the example worker runs one thread per in-flight request).
pub(crate) fn threads(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `GPE_WORKER_ID` of a running worker (its age), read from `/proc/PID/environ`.
pub(crate) fn worker_id(pid: i32) -> Option<u64> {
    environ(pid, gpe_core::worker::env::WORKER_ID)?.parse().ok()
}

/// The variable `key` in the environment `pid` started with (`/proc/PID/environ`).
pub(crate) fn environ(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// How to start a master.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `--workers N`, or `None` to pass no `--workers` flag.
    pub(crate) workers: Option<u32>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// The worker binary, or `None` for [`worker_bin`] (`example-socket-activated`).
    pub(crate) worker: Option<PathBuf>,
    /// Arguments after the worker binary (the worker's own).
    pub(crate) worker_args: Vec<String>,
}

impl Options {
    pub(crate) fn workers(n: u32) -> Options {
        Options {
            workers: Some(n),
            args: Vec::new(),
            env: Vec::new(),
            worker: None,
            worker_args: Vec::new(),
        }
    }

    /// No `--workers` flag (to test `GUNICORN_CMD_ARGS` or `WEB_CONCURRENCY`).
    pub(crate) fn default_workers() -> Options {
        Options {
            workers: None,
            args: Vec::new(),
            env: Vec::new(),
            worker: None,
            worker_args: Vec::new(),
        }
    }

    pub(crate) fn arg(mut self, a: &str) -> Options {
        self.args.push(a.to_owned());
        self
    }

    pub(crate) fn env(mut self, k: &str, v: &str) -> Options {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Run `path` as the worker instead of `example-socket-activated`.
    pub(crate) fn worker_binary(mut self, path: &Path) -> Options {
        self.worker = Some(path.to_owned());
        self
    }

    /// An argument for the worker binary (after it on the command line).
    pub(crate) fn worker_arg(mut self, a: &str) -> Options {
        self.worker_args.push(a.to_owned());
        self
    }
}

/// A `Command` for `gpe-master` with a clean environment (no inherited gunicorn or gpe settings),
/// plain-text logs, and `dir` as its working directory.
pub(crate) fn master_command(dir: &Path) -> Command {
    let mut cmd = Command::new(master_bin());
    for var in [
        "GUNICORN_CMD_ARGS",
        "WEB_CONCURRENCY",
        "PORT",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "RUST_LOG",
        "PROMETHEUS_METRICS_PORT",
        "PROMETHEUS_BIND_ADDRESS",
        "EXAMPLE_BOOT_EXIT",
        "EXAMPLE_IGNORE_SIGNALS",
        "EXAMPLE_NO_HEARTBEAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1")
        .env("PROMETHEUS_MULTIPROC_DIR", dir.join("metrics"))
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

/// Run `gpe-master ARGS` to completion (for flags that exit at once), with a watchdog.
pub(crate) fn run_master(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = master_command(dir.path());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning gpe-master");
    let pid = child.id() as i32;
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            kill_tree(pid);
            let _ = child.wait();
            panic!("gpe-master {args:?} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting output")
}

/// SIGKILL `pid` and then each of its children (they would die by PDEATHSIG anyway).
fn kill_tree(pid: i32) {
    let kids = children(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    for k in kids {
        let _ = kill(Pid::from_raw(k), Signal::SIGKILL);
    }
}

/// A running master, killed with its workers when dropped.
#[derive(Debug)]
pub(crate) struct Master {
    child: Child,
    exited: Option<ExitStatus>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) pidfile: PathBuf,
    pub(crate) log: PathBuf,
}

impl Master {
    /// Start `gpe-master --workers N --bind 127.0.0.1:P --metrics-bind 127.0.0.1:Q --pid FILE
    /// [ARGS] example-socket-activated` (or the [`Options::worker_binary`]) and wait until the
    /// pidfile is written.
    pub(crate) fn start(opts: Options) -> Master {
        let mut m = Master::spawn(opts);
        let pid = m.pid();
        m.wait_for("the pidfile", |m| {
            let text = std::fs::read_to_string(&m.pidfile).ok()?;
            (text.trim() == pid.to_string()).then_some(())
        });
        m
    }

    /// Like [`Master::start`], without waiting for anything.
    pub(crate) fn spawn(opts: Options) -> Master {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Master::spawn_with(opts, Launch::binds(&[&addr.to_string()], Some(addr)))
    }

    /// USR2, then wait until the new master wrote `<pidfile>.2` and has a worker: its pid.
    pub(crate) fn upgrade(&mut self) -> i32 {
        let new = self.usr2();
        self.wait_for("the new master's worker", |_| {
            (!children(new).is_empty()).then_some(())
        });
        new
    }

    /// USR2, then wait until the new master wrote `<pidfile>.2`: its pid.
    pub(crate) fn usr2(&mut self) -> i32 {
        self.signal(Signal::SIGUSR2);
        let two = dot2(&self.pidfile);
        self.wait_for("the new master's <pidfile>.2", |_| read_pid(&two))
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signalling the master");
    }

    /// Send `sig` and expect the master to exit 0 within `within` (else fail with its log); the
    /// time from the signal to the exit.
    pub(crate) fn stop(&mut self, sig: Signal, within: Duration) -> Duration {
        let sent = Instant::now();
        self.signal(sig);
        let status = self.wait_exit(within);
        assert!(
            status.success(),
            "{sig}: exit 0 expected, got {status}\n{}",
            self.log()
        );
        sent.elapsed()
    }

    /// Everything the master and its workers wrote so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll `check` for up to [`PATIENCE`]; on timeout panic with the master's log.
    pub(crate) fn wait_for<T>(
        &mut self,
        what: &str,
        check: impl FnMut(&mut Master) -> Option<T>,
    ) -> T {
        self.wait_for_within(PATIENCE, what, check)
    }

    pub(crate) fn wait_for_within<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&mut Master) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if let Some(status) = self.try_exit() {
                if let Some(v) = check(self) {
                    return v;
                }
                panic!(
                    "gpe-master exited ({status}) while waiting for {what}\n--- log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {within:?} waiting for {what}\n--- /metrics ---\n{}\n--- log ---\n{}",
                    self.metrics().unwrap_or_else(|e| format!("<{e}>")),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The exit status, if the master has exited.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Wait (polling) for the master to exit.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "gpe-master did not exit within {within:?}\n--- log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` on the service port.
    pub(crate) fn get(&self, path: &str) -> std::io::Result<String> {
        http_get(self.addr, path, Duration::from_secs(10))
    }

    /// The pid of the worker answering one `GET /`.
    pub(crate) fn answering_pid(&self) -> std::io::Result<i32> {
        let r = self.get("/")?;
        pid_in(&r).ok_or_else(|| std::io::Error::other(format!("no pid in {r:?}")))
    }

    /// Send `GET path` from a thread and wait until a worker is handling it (the example worker
    /// runs one extra thread per in-flight request); join the handle for the response.
    pub(crate) fn in_flight(
        &mut self,
        path: &str,
    ) -> std::thread::JoinHandle<std::io::Result<String>> {
        let (addr, path) = (self.addr, path.to_owned());
        let handle = std::thread::spawn(move || http_get(addr, &path, Duration::from_secs(60)));
        self.wait_for("a worker to pick up the in-flight request", |m| {
            m.workers()
                .into_iter()
                .any(|pid| threads(pid) > 1)
                .then_some(())
        });
        handle
    }

    /// The host's `/metrics` text.
    pub(crate) fn metrics(&self) -> std::io::Result<String> {
        let r = http_get(self.metrics_addr, "/metrics", Duration::from_secs(10))?;
        if !r.starts_with("HTTP/1.1 200") && !r.starts_with("HTTP/1.0 200") {
            return Err(std::io::Error::other(format!("scrape failed: {r}")));
        }
        Ok(r)
    }

    /// One sample of the current scrape (`None` if absent or the scrape failed).
    pub(crate) fn sample(&self, series: &str) -> Option<f64> {
        sample(&self.metrics().ok()?, series)
    }

    /// Wait until `series` equals `value`.
    pub(crate) fn wait_sample(&mut self, series: &str, value: f64) {
        self.wait_for(&format!("{series} == {value}"), |m| {
            (m.sample(series) == Some(value)).then_some(())
        });
    }

    /// The master's running workers: its children that have exec'd the worker (a child between
    /// fork and exec has no `GPE_WORKER_ID` yet).
    pub(crate) fn workers(&self) -> Vec<i32> {
        children(self.pid())
            .into_iter()
            .filter(|pid| worker_id(*pid).is_some())
            .collect()
    }

    /// Wait until exactly `n` workers run and the gauge says so; returns their pids.
    pub(crate) fn wait_workers(&mut self, n: usize) -> Vec<i32> {
        self.wait_for(&format!("{n} workers"), |m| {
            let pids = m.workers();
            (pids.len() == n && m.sample("gunicorn_master_workers") == Some(n as f64))
                .then_some(pids)
        })
    }

    /// Send `GET /` until `want` distinct pids answered; returns them, sorted.
    pub(crate) fn answering_pids(&mut self, want: usize) -> Vec<i32> {
        let mut seen = std::collections::BTreeSet::new();
        self.wait_for(&format!("{want} distinct workers answering GET /"), |m| {
            for _ in 0..20 {
                if let Ok(pid) = m.answering_pid() {
                    seen.insert(pid);
                }
            }
            (seen.len() >= want).then(|| seen.iter().copied().collect())
        })
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            kill_tree(self.pid());
            let _ = self.child.wait();
        }
    }
}

/// How [`Master::spawn_with`] starts a master, beyond its [`Options`].
#[derive(Debug)]
pub(crate) struct Launch {
    /// The master's temp dir (default: a new one); the pidfile, log and metrics dir go there.
    pub(crate) dir: Option<tempfile::TempDir>,
    /// The `--bind` values, instead of one free 127.0.0.1 port.
    pub(crate) binds: Vec<String>,
    /// The TCP address [`Master::get`] talks to (default: a free port nobody binds).
    pub(crate) addr: Option<SocketAddr>,
    /// A `/bin/sh -c` script that ends by exec'ing the master (`exec "$0" "$@"` for the
    /// gpe-master binary with its arguments), run instead of the binary itself; the pid stays.
    pub(crate) script: Option<String>,
    /// The working directory, also given as `$PWD` (default: the temp dir).
    pub(crate) cwd: Option<PathBuf>,
}

impl Launch {
    /// The given `--bind`s, talked to (for [`Master::get`]) at `addr`.
    pub(crate) fn binds(binds: &[&str], addr: Option<SocketAddr>) -> Launch {
        Launch {
            dir: None,
            binds: binds.iter().map(|b| (*b).to_owned()).collect(),
            addr,
            script: None,
            cwd: None,
        }
    }
}

impl Master {
    /// Like [`Master::spawn`], with the binds, directory and start of `launch`.
    pub(crate) fn spawn_with(opts: Options, launch: Launch) -> Master {
        let dir = launch
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("tempdir"));
        let addr = launch
            .addr
            .unwrap_or_else(|| ([127, 0, 0, 1], free_port()).into());
        let metrics_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let pidfile = dir.path().join("gpe-master.pid");
        let log = dir.path().join("master.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let template = master_command(dir.path());
        let mut cmd = match &launch.script {
            Some(script) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(script).arg(master_bin());
                c
            }
            None => Command::new(master_bin()),
        };
        for (k, v) in template.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let cwd = launch.cwd.unwrap_or_else(|| dir.path().to_owned());
        cmd.current_dir(&cwd).env("PWD", &cwd).stdin(Stdio::null());
        if let Some(n) = opts.workers {
            cmd.arg("--workers").arg(n.to_string());
        }
        for b in &launch.binds {
            cmd.arg("--bind").arg(b);
        }
        cmd.arg("--metrics-bind")
            .arg(metrics_addr.to_string())
            .arg("--pid")
            .arg(&pidfile)
            .args(&opts.args)
            .arg(opts.worker.clone().unwrap_or_else(worker_bin))
            .args(&opts.worker_args)
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning gpe-master");
        Master {
            child,
            exited: None,
            dir,
            addr,
            metrics_addr,
            pidfile,
            log,
        }
    }

    /// [`Master::spawn_with`], then wait until the pidfile is written.
    pub(crate) fn start_with(opts: Options, launch: Launch) -> Master {
        let mut m = Master::spawn_with(opts, launch);
        let pid = m.pid();
        m.wait_for("the pidfile", |m| {
            let text = std::fs::read_to_string(&m.pidfile).ok()?;
            (text.trim() == pid.to_string()).then_some(())
        });
        m
    }
}

/// Kills a process we did not start ourselves (a re-exec'd or daemonized master) and its
/// workers, when dropped.
pub(crate) struct Reaper(pub(crate) i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in children(self.0).into_iter().chain([self.0]) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

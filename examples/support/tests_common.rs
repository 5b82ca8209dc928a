//! Test helpers: spawn a server under a watchdog, plain HTTP/1.1 over std, scrape and sum.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of this workspace's target directory (next to the test's own `deps/`).
pub fn target_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.exists().then_some(p)
}

#[path = "../../gpe-core/tests/shared/ports.rs"]
mod ports;
/// A free port of 127.0.0.1, below the ephemeral range (see `gpe-core/tests/shared/ports.rs`).
pub use ports::free_port;

/// A child process killed (TERM, then KILL after 10 s) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            // TEST_MASTER_LOG=info shows what the master and its workers log, when debugging.
            .env(
                "RUST_LOG",
                std::env::var("TEST_MASTER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            // The examples' /panic route panics on purpose: one line each, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .spawn()
            .expect("spawn");
        Proc { child }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} failed");
    }

    /// Send `sig` and expect an exit 0 within `within`; the time from the signal to the exit.
    pub fn stop(&mut self, sig: &str, within: Duration) -> Duration {
        let sent = Instant::now();
        self.signal(sig);
        let status = self
            .wait_exit(within)
            .unwrap_or_else(|| panic!("no exit within {within:?} of {sig}"));
        assert!(status.success(), "{sig}: {status}");
        sent.elapsed()
    }

    /// Wait for the exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Poll `f` until it returns `Some`, at most `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET` with `Connection: close`: the status and the body.
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Reading a text exposition: `sum`, `label_values` (shared with the gpe-actix and gpe-tower tests).
#[path = "../../gpe-core/tests/shared/exposition.rs"]
pub mod exposition;

/// Run `python3 -c script` with `input` on its stdin, to its end.
pub fn python_with_input(script: &str, input: &str) -> std::io::Result<std::process::Output> {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?
        .write_all(input.as_bytes())?;
    child.wait_with_output()
}

/// `s` percent-encoded for a URL's query (every byte but the unreserved ones).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `sum(requests_total)` as Python's `prometheus_client` parser reads `text`, or `None` when
/// python3 with prometheus_client is not available.
pub fn python_requests_total(text: &str) -> Option<f64> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
total = 0.0
for fam in text_string_to_metric_families(sys.stdin.read()):
    if fam.name == "gunicorn_worker_requests":
        total += sum(s.value for s in fam.samples if s.name == "gunicorn_worker_requests_total")
print(total)
"#;
    let out = python_with_input(script, text).ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named"),
            "python could not parse the exposition: {err}"
        );
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Send `total` GETs of `paths` (round robin) from `threads` threads; every one must succeed.
pub fn load(port: u16, paths: &[&str], total: usize, threads: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut i = t;
                while i < total {
                    assert!(Instant::now() < deadline, "load took over 60 s");
                    let (status, _) = get(port, paths[i % paths.len()]).expect("request failed");
                    assert!(status < 600);
                    i += threads;
                }
            });
        }
    });
}

/// A gpe-master running workers of an example on a free port, its `/metrics` on another, its
/// store in a temp dir; stopped (with its workers) when dropped.
pub struct Served {
    pub master: Proc,
    pub port: u16,
    pub metrics_port: u16,
    /// The store directory, removed when dropped.
    pub dir: tempfile::TempDir,
}

/// Start `gpe-master --workers N --bind 127.0.0.1:PORT ARGS BIN` and wait until its `/metrics`
/// answers.
pub fn serve(bin: &str, workers: u32, args: &[&str]) -> Served {
    let Some(master) = target_bin("gpe-master") else {
        panic!("gpe-master is not built in this target directory: run `cargo build --workspace --bins` first (.ci/test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let master = Proc::spawn(
        Command::new(master)
            .args(["--workers", &workers.to_string()])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(args)
            .arg(bin)
            .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_METRICS_PORT", metrics_port.to_string()),
    );
    eventually("the master's /metrics", Duration::from_secs(30), || {
        get(metrics_port, "/metrics")
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    Served {
        master,
        port,
        metrics_port,
        dir,
    }
}

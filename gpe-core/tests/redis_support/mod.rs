//! A private `redis-server` per test, on a free loopback port, killed on drop.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gpe_core::redis::{RedisConfig, RedisSync, SyncHandle, SyncSource};
use gpe_core::{Counter, Gauge, GaugeMode, Liveness, Store};

// By path, not `super::common`: gpe-master's tests include this file too.
#[path = "../common/log_sink.rs"]
mod log_sink;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// `(cert, key)` PEM files: serve TLS only (then `try_cmd` cannot talk to it).
    tls: Option<(String, String)>,
}

const BIN: &str = "redis-server";

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(free_port(), None)
    }

    /// A server on this `port` (e.g. one a client was told about before the server existed).
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, None)
    }

    /// A TLS-only server with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> RedisServer {
        Self::start_with(
            free_port(),
            Some((cert.display().to_string(), key.display().to_string())),
        )
    }

    fn start_with(port: u16, tls: Option<(String, String)>) -> RedisServer {
        assert!(
            Path::new("/usr/bin/redis-server").exists()
                || Command::new(BIN).arg("--version").output().is_ok(),
            "redis-server is required for these tests: run `bash .ci/deps`"
        );
        let mut s = RedisServer {
            port,
            child: None,
            tls,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut args: Vec<&str> = vec!["--port", &port];
        if let Some((cert, key)) = &self.tls {
            args = vec![
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-auth-clients",
                "no",
            ];
        }
        let child = Command::new(BIN)
            .args(args)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (run `bash .ci/deps`)");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let up = if self.tls.is_some() {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.try_cmd(&["PING"]).is_some()
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// SIGKILL the server (its data is lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command over RESP, `None` when the server is unreachable.
    pub fn try_cmd(&self, args: &[&str]) -> Option<Resp> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).ok()?;
        let mut r = Reader {
            s,
            buf: Vec::new(),
            pos: 0,
        };
        r.value()
    }

    pub fn cmd(&self, args: &[&str]) -> Resp {
        self.try_cmd(args).expect("redis reachable")
    }

    /// Every key of the database.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.cmd(&["KEYS", pattern]) {
            Resp::Array(a) => a.into_iter().filter_map(|v| v.text()).collect(),
            other => panic!("KEYS: {other:?}"),
        }
    }

    /// Calls per command name since `CONFIG RESETSTAT` (`INFO commandstats`, which also counts
    /// the commands Lua scripts ran inside Redis), for the names `keep` accepts.
    pub fn command_calls(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, i64> {
        let Some(info) = self.cmd(&["INFO", "commandstats"]).text() else {
            panic!("INFO")
        };
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                keep(name).then(|| (name.to_owned(), calls))
            })
            .collect()
    }
}

// gpe-master's Redis test also loads this file through its own `common` module: the same small
// file twice in that binary, on purpose (each helper module stays usable on its own).
#[allow(clippy::duplicate_mod)]
#[path = "../shared/ports.rs"]
mod ports;
/// A free loopback port (free when asked: bound, then released), below the ephemeral range.
use ports::free_port;

/// The settings every test sync and collector of `server` uses: keys under `prefix`, host
/// `host`, a sync every `interval`, 500 ms connect and response timeouts.
pub fn test_config(
    server: &RedisServer,
    prefix: &str,
    host: &str,
    interval: Duration,
) -> RedisConfig {
    RedisConfig::new(&server.url())
        .unwrap()
        .with_prefix(prefix)
        .unwrap()
        .with_host_id(host)
        .unwrap()
        .with_interval(interval)
        .unwrap()
        .with_timeouts(Duration::from_millis(500), Duration::from_millis(500))
        .unwrap()
}

/// Files of a fake process `pid` in `dir`: `hits_total` = `hits`, and `gauge` in the gauges `mem`
/// (mode `all`) and `peak` (mode `max`); its store, to keep while the files are used.
pub fn fake_process(dir: &Path, pid: u32, hits: f64, gauge: f64) -> Store {
    let store = Store::open_as(dir, pid).unwrap();
    Counter::new("hits", "Hits.", &store).unwrap().inc_by(hits);
    Gauge::new("mem", "All.", GaugeMode::All, &store)
        .unwrap()
        .set(gauge);
    Gauge::new("peak", "Max.", GaugeMode::Max, &store)
        .unwrap()
        .set(gauge);
    store
}

/// A running sync of the files in `dir` (processes alive per `liveness`) with `config`.
pub fn spawn_sync(config: RedisConfig, dir: &Path, liveness: Liveness) -> SyncHandle {
    RedisSync::new(config, SyncSource::dir(dir, liveness))
        .unwrap()
        .spawn()
        .unwrap()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Redis Sentinel (`redis-server <conf> --sentinel`) monitoring a [`RedisServer`] as
/// `master`, on its own free loopback port, killed on drop. Its config file lives in a tempdir
/// (the sentinel rewrites it).
pub struct SentinelServer {
    pub port: u16,
    pub master: String,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl SentinelServer {
    /// Start a sentinel for the data node on `data_port` and wait (at most 15 s) until it names
    /// the master.
    pub fn start(data_port: u16, master: &str) -> SentinelServer {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile \"\"\n\
                 sentinel monitor {master} 127.0.0.1 {data_port} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .arg(&conf)
            .args(["--sentinel", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let s = SentinelServer {
            port,
            master: master.to_owned(),
            child: Some(child),
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Some(addr) = s.master_addr() {
                assert_eq!(addr, ("127.0.0.1".to_owned(), data_port));
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the sentinel on port {port} did not name {master} in time");
    }

    /// `host:port` for `REDIS_SENTINELS`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `SENTINEL get-master-addr-by-name`, `None` while it does not answer.
    pub fn master_addr(&self) -> Option<(String, u16)> {
        let probe = RedisServer {
            port: self.port,
            child: None,
            tls: None,
        };
        match probe.try_cmd(&["SENTINEL", "get-master-addr-by-name", &self.master])? {
            Resp::Array(a) if a.len() == 2 => Some((a[0].text()?, a[1].text()?.parse().ok()?)),
            _ => None,
        }
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

impl Resp {
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }
}

struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 65536];
        let n = self.s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Some(())
    }
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf[self.pos..].windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Some(l);
            }
            self.fill()?;
        }
    }
    fn value(&mut self) -> Option<Resp> {
        let l = self.line()?;
        let (t, rest) = l.split_at(1);
        Some(match t {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Int(rest.parse().ok()?),
            "$" => {
                let n: i64 = rest.parse().ok()?;
                if n < 0 {
                    return Some(Resp::Bulk(None));
                }
                let n = n as usize;
                while self.buf.len() < self.pos + n + 2 {
                    self.fill()?;
                }
                let b = self.buf[self.pos..self.pos + n].to_vec();
                self.pos += n + 2;
                Resp::Bulk(Some(b))
            }
            "*" => {
                let n: i64 = rest.parse().ok()?;
                let mut v = Vec::new();
                for _ in 0..n.max(0) {
                    v.push(self.value()?);
                }
                Resp::Array(v)
            }
            _ => return None,
        })
    }
}

/// Every log line of this test binary (a global subscriber; the sync logs from its own thread).
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let (buf, subscriber) = log_sink::capture(tracing::Level::DEBUG);
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

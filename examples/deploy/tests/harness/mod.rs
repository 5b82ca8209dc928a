//! What the tests that run the demo (gpe-master + example-axum workers) under a real Prometheus
//! share: the demo itself, Prometheus processes and their HTTP API, HTTP by curl, load with
//! optional headers, polling with deadlines. A module of each such test file (`mod harness;`: a
//! folder, so Cargo does not take it for a test target of its own); it includes
//! `examples/support/tests_common.rs` itself, as `harness::common`.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `examples/support/tests_common.rs`, for the test files too (`harness::common`).
#[path = "../../../support/tests_common.rs"]
pub(crate) mod common;

use common::exposition::sum;
use common::{free_port, get, percent_encode, target_bin, Proc};

/// The request duration histogram of gpe's request metrics.
pub const DURATION: &str = "gunicorn_worker_request_duration_seconds";
/// The request counter of gpe's request metrics.
pub const REQUESTS: &str = "gunicorn_worker_requests_total";
/// gpe's default classic buckets (the example's).
pub const CLASSIC_BOUNDS: [f64; 8] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The classic bucket `(lower, upper]` of gpe's defaults that `q` falls in.
pub fn classic_bucket(q: f64) -> (f64, f64) {
    let mut lower = 0.0;
    for upper in CLASSIC_BOUNDS {
        if q <= upper {
            return (lower, upper);
        }
        lower = upper;
    }
    (lower, f64::INFINITY)
}

/// gpe-master and example-axum of this target directory; panics (saying how to get them) when
/// they, or the `prometheus` binary, are missing.
pub fn demo_binaries() -> (PathBuf, PathBuf) {
    let (Some(master), Some(app)) = (target_bin("gpe-master"), target_bin("example-axum")) else {
        panic!("gpe-master and example-axum must be built in this target directory: `cargo build --workspace --bins` (.ci/test does)");
    };
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "no prometheus binary: `bash .ci/deps` installs Debian's prometheus package"
    );
    (master, app)
}

/// `N` distinct free ports.
pub fn distinct_ports<const N: usize>() -> [u16; N] {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < N {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports.try_into().unwrap()
}

/// The demo: gpe-master running `workers` example-axum workers on `port`, its `/metrics` on
/// `metrics_port`, its store in `dir/store`; stopped when dropped.
pub struct Demo {
    pub port: u16,
    pub metrics_port: u16,
    _master: Proc,
}

impl Demo {
    /// Start it and wait until the app and the master's `/metrics` answer (the app by
    /// `/health`, which the app does not record: no request is counted).
    pub fn start(dir: &Path, workers: usize, port: u16, metrics_port: u16) -> Demo {
        let (master, app) = demo_binaries();
        let store = dir.join("store");
        std::fs::create_dir(&store).unwrap();
        let master = Proc::spawn(
            Command::new(master)
                .args(["--workers", &workers.to_string()])
                .args(["--bind", &format!("127.0.0.1:{port}")])
                .arg(app)
                .env("PROMETHEUS_MULTIPROC_DIR", &store)
                .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
                .env("PROMETHEUS_METRICS_PORT", metrics_port.to_string()),
        );
        poll("the app", Duration::from_secs(30), || {
            match get(port, "/health") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        poll(
            "the master's /metrics",
            Duration::from_secs(30),
            || match http_get(metrics_port, "/metrics", None) {
                Ok(r) if r.status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        Demo {
            port,
            metrics_port,
            _master: master,
        }
    }
}

/// One HTTP response: status, headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` (with `Accept` if given) by curl (`.ci/deps` installs it), which also takes care
/// of chunked bodies (Prometheus's API answers large results chunked).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> std::io::Result<Response> {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-i", "--max-time", "10"]);
    if let Some(a) = accept {
        curl.args(["-H", &format!("Accept: {a}")]);
    }
    let out = curl
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()?;
    let raw = out.stdout;
    let bad = |what: &str| {
        std::io::Error::other(format!(
            "{what} (curl exit {}): {:?}",
            out.status,
            String::from_utf8_lossy(&raw)
        ))
    };
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no response"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Poll `f` until it returns `Ok`, at most `timeout`; on timeout, panic with what `f` last said.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > end => {
                panic!("timed out ({timeout:?}) waiting for {what}; last:\n{e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A Prometheus scraping the master's `/metrics` every second, killed when dropped.
pub struct Prometheus {
    pub name: &'static str,
    pub port: u16,
    log: PathBuf,
    _proc: Proc,
}

impl Prometheus {
    /// Start one with `--enable-feature=` each of `features` (none: the flag is left out), and
    /// wait until it is ready.
    pub fn start(
        name: &'static str,
        dir: &Path,
        port: u16,
        metrics_port: u16,
        features: &[&str],
    ) -> Self {
        let config = dir.join(format!("prometheus-{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: gpe\n    static_configs:\n      \
                 - targets: [\"127.0.0.1:{metrics_port}\"]\n"
            ),
        )
        .unwrap();
        let log = dir.join(format!("prometheus-{name}.log"));
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("data-{name}")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if !features.is_empty() {
            cmd.arg(format!("--enable-feature={}", features.join(",")));
        }
        let prom = Prometheus {
            name,
            port,
            log,
            _proc: Proc::spawn(&mut cmd),
        };
        poll(
            &format!("the {name} Prometheus to be ready"),
            Duration::from_secs(30),
            || match http_get(port, "/-/ready", None) {
                Ok(r) if r.status == 200 => Ok(()),
                other => Err(format!("{other:?}\n{}", prom.log_tail())),
            },
        );
        prom
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "{} Prometheus log (last lines):\n{}",
            self.name,
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    pub fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let r = http_get(self.port, path, None).map_err(|e| format!("GET {path}: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("GET {path}: {} {e}: {}", r.status, r.text()))?;
        if r.status == 200 && v["status"] == "success" {
            Ok(v)
        } else {
            Err(format!("GET {path}: {} {v}", r.status))
        }
    }

    /// The result vector of an instant query, or what came back instead.
    pub fn try_query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self
            .api(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .map_err(|e| format!("{} Prometheus, query `{expr}`: {e}", self.name))?;
        v["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("{} Prometheus, query `{expr}`: {v}", self.name))
    }

    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.try_query(expr).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The single float value of `expr`.
    pub fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr);
        let [one] = &result[..] else {
            panic!(
                "{} Prometheus, query `{expr}`: expected one float sample, got {}",
                self.name,
                serde_json::Value::from(result.clone())
            );
        };
        one["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} Prometheus, query `{expr}`: expected a float sample, got {one}",
                    self.name
                )
            })
    }

    /// `/api/v1/query_exemplars` of `expr` from `start` to `end` (seconds since the epoch): one
    /// `{"seriesLabels": {..}, "exemplars": [{"labels": {..}, "value": "..", "timestamp": ..}]}`
    /// per series, or what came back instead.
    pub fn query_exemplars(
        &self,
        expr: &str,
        start: f64,
        end: f64,
    ) -> Result<Vec<serde_json::Value>, String> {
        let v = self
            .api(&format!(
                "/api/v1/query_exemplars?query={}&start={start:.3}&end={end:.3}",
                percent_encode(expr)
            ))
            .map_err(|e| format!("{} Prometheus, exemplars of `{expr}`: {e}", self.name))?;
        v["data"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("{} Prometheus, exemplars of `{expr}`: {v}", self.name))
    }

    /// The one target is up and its last scrape had no error.
    pub fn target_healthy(&self) -> Result<(), String> {
        let v = self.api("/api/v1/targets")?;
        let targets = v["data"]["activeTargets"].as_array().cloned();
        match targets.as_deref() {
            Some([t]) if t["health"] == "up" && t["lastError"] == "" => Ok(()),
            _ => Err(format!(
                "{} Prometheus: expected its one target up with lastError \"\", got {}",
                self.name, v["data"]["activeTargets"]
            )),
        }
    }

    /// The time of its last scrape (seconds since the epoch), once the target is healthy.
    pub fn last_scrape(&self) -> Result<f64, String> {
        self.target_healthy()?;
        // Of a selector: `timestamp(up == 1)` would be the evaluation time.
        let expr = "timestamp(up{job=\"gpe\"})";
        let result = self.try_query(expr)?;
        result
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse().ok())
            .ok_or_else(|| format!("{} Prometheus, `{expr}`: {result:?}", self.name))
    }
}

/// Wait until each Prometheus has scraped the master, without errors, after `t`.
pub fn scraped_after(proms: &[&Prometheus], t: f64) {
    // Prometheus moves a scrape's timestamp by up to 2 ms to align it with the interval
    // (`--scrape.timestamp-tolerance`).
    let t = t + 0.005;
    for p in proms {
        poll(
            &format!("a scrape by the {} Prometheus", p.name),
            Duration::from_secs(20),
            || match p.last_scrape() {
                Ok(at) if at > t => Ok(()),
                Ok(at) => Err(format!("last scrape at {at}, waiting for one after {t}")),
                Err(e) => Err(format!("{e}\n{}", p.log_tail())),
            },
        );
    }
}

/// A request to send: a path and extra headers.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// When a request was sent (seconds since the epoch, just before connecting), and how long
/// until its whole response was read (`Connection: close`, so until the server closed).
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub at: f64,
    pub elapsed: Duration,
}

/// One `GET` with `Connection: close` and `headers`: the status.
pub fn get_with(port: u16, path: &str, headers: &[(String, String)]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))
}

/// Send every request from `threads` connections at a time (one connection per request, as
/// they come from the shared queue); every answer must be a 200 and all must be done within
/// 40 s. When each was sent and how long it took, in the order of `requests`.
pub fn send_requests(port: u16, requests: &[Request], threads: usize) -> Vec<Sent> {
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(40);
    let sent: Result<Vec<Vec<(usize, Sent)>>, String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut sent = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = requests.get(i) else {
                            return Ok(sent);
                        };
                        if Instant::now() > deadline {
                            return Err(format!("the load took over 40 s (at {i})"));
                        }
                        let at = now_unix();
                        let t0 = Instant::now();
                        match get_with(port, &r.path, &r.headers) {
                            Ok(200) => sent.push((
                                i,
                                Sent {
                                    at,
                                    elapsed: t0.elapsed(),
                                },
                            )),
                            other => {
                                return Err(format!(
                                    "GET {} (headers {:?}): expected 200, got {other:?}",
                                    r.path, r.headers
                                ))
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sent: Vec<(usize, Sent)> = sent
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .flatten()
        .collect();
    sent.sort_unstable_by_key(|(i, _)| *i);
    assert_eq!(sent.len(), requests.len(), "requests answered 200");
    sent.into_iter().map(|(_, s)| s).collect()
}

/// GET every path as [`send_requests`] does (no extra headers). How many were answered.
pub fn send_all(port: u16, paths: &[String], threads: usize) -> usize {
    let requests: Vec<Request> = paths
        .iter()
        .map(|p| Request {
            path: p.clone(),
            headers: Vec::new(),
        })
        .collect();
    send_requests(port, &requests, threads).len()
}

/// The master's text `/metrics`.
pub fn master_text(metrics_port: u16) -> String {
    let r = http_get(metrics_port, "/metrics", None).expect("the master's /metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Wait until the master's `/metrics` counts `n` requests, in both the request counter and the
/// duration histogram (a worker records a request after its response is sent).
pub fn master_counts(metrics_port: u16, n: usize) -> String {
    poll(
        &format!("the master's /metrics to count {n} requests"),
        Duration::from_secs(20),
        || {
            let text = master_text(metrics_port);
            let requests = sum(&text, REQUESTS, &[]);
            let observed = sum(&text, &format!("{DURATION}_count"), &[]);
            if requests == n as f64 && observed == n as f64 {
                Ok(text)
            } else {
                Err(format!(
                    "expected {n}, got {REQUESTS} {requests}, {DURATION}_count {observed}"
                ))
            }
        },
    )
}

/// A deterministic shuffle (xorshift from `seed`, not 0), so that slow requests are spread over
/// the run.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % (i as u64 + 1)).unwrap();
        v.swap(i, j);
    }
}

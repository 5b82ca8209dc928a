//! The tests every example service passes as 4 workers of a real gpe-master, under load (each
//! example's `tests/under_master.rs` calls these with its own binary):
//! `sum(gunicorn_worker_requests_total)` on the master's /metrics is exactly the number of requests
//! sent, and a random-URL scan does not grow the endpoint label.
//!
//! Needs `gpe-master` built in the same target directory (`.ci/test` builds every binary first);
//! fails with a message saying so otherwise.

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::Duration;

use super::common::exposition::{label_values, sum};
use super::common::{
    eventually, free_port, get, load, python_requests_total, serve, target_bin, Proc, Served,
};

pub(crate) fn four_workers_add_up_exactly_under_load(bin: &str) {
    let served = serve(bin, 4, &[]);
    let (port, metrics_port) = (served.port, served.metrics_port);
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
    let endpoints = label_values(&text, "gunicorn_worker_requests_total", "endpoint");
    assert_eq!(
        endpoints,
        HashSet::from(["/", "/users/{id}", "/fail", "<unmatched>"]),
    );
    let workers = label_values(&text, "gunicorn_worker_requests_total", "worker_id");
    assert!(
        workers.len() > 1,
        "requests spread over the workers: {workers:?}"
    );
}

/// One keep-alive HTTP/1.1 client: sends `GET /health` on its connection until `stop`, opening a
/// new connection when the server answered `connection: close`. Returns (answers, clean closes,
/// failures: a request sent that got no complete answer).
fn keep_alive_client(port: u16, stop: &std::sync::atomic::AtomicBool) -> (u64, u64, Vec<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        BufReader::new(s)
    };
    let (mut answers, mut closes, mut failures) = (0u64, 0u64, Vec::new());
    let mut conn = connect();
    // Bounded in count and time (the caller stops it after a few seconds).
    for _ in 0..1_000_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sent = conn
            .get_mut()
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut status = String::new();
        let read = sent.and_then(|()| conn.read_line(&mut status));
        if !matches!(read, Ok(n) if n > 0) {
            failures.push(format!("after {answers} answers: {read:?}"));
            conn = connect();
            continue;
        }
        let (mut length, mut close) = (0usize, false);
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).unwrap_or(0) == 0 {
                failures.push(format!("headers cut after {answers} answers"));
                break;
            }
            let lower = line.trim().to_ascii_lowercase();
            if lower.is_empty() {
                break;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            close |= lower == "connection: close";
        }
        let mut body = vec![0; length];
        if conn.read_exact(&mut body).is_err() {
            failures.push(format!("body cut after {answers} answers"));
        }
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        answers += 1;
        if close {
            closes += 1;
            conn = connect();
        }
    }
    (answers, closes, failures)
}

/// HUP under keep-alive load: 4 clients keep their connections busy while the master replaces
/// every worker; no request is lost (the retiring workers answer `connection: close` until they
/// shut their idle connections), and the clients were indeed moved by clean closes.
pub(crate) fn hup_under_keep_alive_load_loses_nothing(bin: &str) {
    let Some(master) = target_bin("gpe-master") else {
        panic!("gpe-master is not built in this target directory: run `cargo build --workspace --bins` first (.ci/test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let master = Proc::spawn(
        Command::new(master)
            .args(["--workers", "2", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--no-metrics", "--log-level", "warning"])
            .arg(bin)
            .env("PROMETHEUS_MULTIPROC_DIR", dir.path()),
    );
    eventually("the app", Duration::from_secs(30), || {
        get(port, "/health").ok()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_alive_client(port, &stop))
        })
        .collect();
    let old = eventually("2 workers", Duration::from_secs(30), || {
        let kids = children(master.child.id());
        (kids.len() == 2).then_some(kids)
    });
    std::thread::sleep(Duration::from_millis(300)); // some load before the HUP
    master.signal("HUP");
    // Until every old worker has exited (after its settle time, its idle connections closed).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while old
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "old workers {old:?} still there 30 s after HUP; children now {:?}; states {:?}",
            children(master.child.id()),
            old.iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answers, mut closes, mut failures) = (0, 0, Vec::new());
    for c in clients {
        let (a, c, f) = c.join().expect("client thread");
        answers += a;
        closes += c;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "lost requests across HUP: {failures:?}"
    );
    assert!(answers > 100, "only {answers} answers");
    assert!(
        closes >= 4,
        "the keep-alive clients were not moved off the old workers ({closes} clean closes)"
    );
}

/// The pids whose parent is `parent` (from `/proc`).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// `--max-requests 20` under load: every worker is replaced after its 20th request without a
/// failed request, the totals stay exact across the replacements, each retiring worker counts
/// its exit as `max_requests` (and so does the master); then QUIT stops the master and its
/// workers at once.
pub(crate) fn max_requests_replaces_workers_and_quit_stops_fast(bin: &str) {
    let Served {
        mut master,
        port,
        metrics_port,
        dir: _dir,
    } = serve(bin, 2, &["--max-requests", "20", "--log-level", "warning"]);
    // Every request must succeed (`load` asserts it), across the replacements.
    let n = 400;
    load(port, &["/", "/users/7"], n, 2);
    let text = eventually("every request in /metrics", Duration::from_secs(20), || {
        let (_, text) = get(metrics_port, "/metrics").ok()?;
        (sum(&text, "gunicorn_worker_requests_total", &[]) >= n as f64).then_some(text)
    });
    assert_eq!(sum(&text, "gunicorn_worker_requests_total", &[]), n as f64);
    // 400 requests, 20 per worker and more (a retiring worker serves on until its replacement
    // is up): at least 4 workers finished, whatever the timing, as each counts itself and as
    // the master counts them.
    let text = eventually(
        "the retired workers' exits in /metrics",
        Duration::from_secs(20),
        || {
            let (_, text) = get(metrics_port, "/metrics").ok()?;
            let by_workers = sum(
                &text,
                "gunicorn_worker_restart_total",
                &[("reason", "max_requests")],
            );
            let by_master = sum(
                &text,
                "gunicorn_master_worker_exits_total",
                &[("reason", "max_requests")],
            );
            (by_workers >= 4.0 && by_master >= 4.0).then_some(text)
        },
    );
    // Every worker that retired for max-requests served its 20 requests first: a worker that
    // quit early, or requests counted under the wrong worker, fail here. A replacement takes
    // the slot (`worker_id`) of the worker it replaces, so with 2 workers there are 2 slots, and
    // a slot whose workers retired k times served at least 20 k requests (how many more depends
    // on how long each replacement took to boot).
    let worker_ids = |family: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter_map(|l| {
                Some(
                    l.split("worker_id=\"")
                        .nth(1)?
                        .split('"')
                        .next()?
                        .to_owned(),
                )
            })
            .collect()
    };
    let slots = worker_ids("gunicorn_worker_requests_total");
    assert_eq!(
        slots,
        BTreeSet::from(["1".to_owned(), "2".to_owned()]),
        "2 workers, 2 slots however many were replaced:\n{text}"
    );
    for id in &slots {
        let served = sum(
            &text,
            "gunicorn_worker_requests_total",
            &[("worker_id", id)],
        );
        let retired = sum(
            &text,
            "gunicorn_worker_restart_total",
            &[("worker_id", id), ("reason", "max_requests")],
        );
        assert!(
            served >= 20.0 * retired,
            "slot {id}: {retired} retirements after {served} requests\n{text}"
        );
    }

    let took = master.stop("QUIT", Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(3),
        "QUIT is a fast stop: {took:?}"
    );
    assert!(get(port, "/").is_err(), "nothing serves after QUIT");
}

/// These tests as `#[test]` functions of the including test binary, for the example binary
/// `$bin`; the binary includes this file as its root module `shared`.
macro_rules! tests {
    ($bin:expr) => {
        #[test]
        fn four_workers_add_up_exactly_under_load() {
            $crate::shared::four_workers_add_up_exactly_under_load($bin);
        }

        #[test]
        fn hup_under_keep_alive_load_loses_nothing() {
            $crate::shared::hup_under_keep_alive_load_loses_nothing($bin);
        }

        #[test]
        fn max_requests_replaces_workers_and_quit_stops_fast() {
            $crate::shared::max_requests_replaces_workers_and_quit_stops_fast($bin);
        }
    };
}
pub(crate) use tests;

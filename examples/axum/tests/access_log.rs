//! example-axum as 3 workers of a real gpe-master, all appending to one access log
//! (`GPE_ACCESS_LOGFILE` in the master's environment, which its workers inherit): 600 requests
//! from 6 threads, each with its own `X-Request-Id`, then a graceful stop. The file must hold
//! exactly one well-formed line per request (no line torn or interleaved by the concurrent
//! appends), each with its path, status, size and client, from at least 2 worker pids.
//!
//! Needs `gpe-master` built in the same target directory (`.ci/test` builds every binary first).

#[path = "../../../gpe-core/tests/shared/access_log.rs"]
mod access_log;
#[path = "../../support/tests_common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{eventually, free_port, target_bin, Proc};

const REQUESTS: usize = 600;
const THREADS: usize = 6;

/// One `GET /users/{id % 7}` with `X-Request-Id: id` and `Connection: close`; its status.
fn request(port: u16, id: usize) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /users/{}?n={id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: load/{id}\r\n\
         X-Request-Id: {id}\r\nConnection: close\r\n\r\n",
        id % 7
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {reply:?}"))
}

#[test]
fn three_workers_append_one_whole_line_per_request() {
    let Some(master) = target_bin("gpe-master") else {
        panic!("gpe-master is not built in this target directory: run `cargo build --workspace --bins` first (.ci/test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (port, metrics_port) = (free_port(), free_port());
    let mut master = Proc::spawn(
        Command::new(master)
            .args(["--workers", "3"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg(env!("CARGO_BIN_EXE_example-axum"))
            .env("PROMETHEUS_MULTIPROC_DIR", dir.path().join("metrics"))
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_METRICS_PORT", metrics_port.to_string())
            .env(gpe_core::worker::env::ACCESS_LOGFILE, &log)
            .env(gpe_core::worker::env::ACCESS_LOGFORMAT, access_log::FORMAT),
    );
    // Every worker up: each has its process-level series in the master's exposition.
    eventually("3 workers serving", Duration::from_secs(30), || {
        let (status, text) = common::get(metrics_port, "/metrics").ok()?;
        let up = text
            .lines()
            .filter(|l| l.starts_with("gunicorn_worker_uptime_seconds{"))
            .count();
        (status == 200 && up >= 3).then_some(())
    });

    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for id in (t..REQUESTS).step_by(THREADS) {
                    assert_eq!(request(port, id), 200, "request {id}");
                }
            });
        }
    });
    // TERM: the workers finish what they have (each line is written when its request is
    // recorded, before the worker exits).
    master.stop("TERM", Duration::from_secs(30));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines = access_log::parse_all(&text);
    assert_eq!(lines.len(), REQUESTS, "one line per request");
    let mut ids = BTreeSet::new();
    let mut per_path: BTreeMap<String, usize> = BTreeMap::new();
    let mut pids: BTreeMap<u32, usize> = BTreeMap::new();
    for l in &lines {
        let id: usize = l.request_id.parse().unwrap_or_else(|_| panic!("{l:?}"));
        assert!(ids.insert(id), "request {id} logged twice");
        let body = format!("user {}\n", id % 7);
        assert_eq!(l.target, format!("/users/{}?n={id}", id % 7), "{l:?}");
        assert_eq!(l.agent, format!("load/{id}"), "{l:?}");
        assert_eq!(
            (
                l.host.as_str(),
                l.user.as_str(),
                l.method.as_str(),
                l.protocol.as_str(),
                l.status.as_str(),
                l.bytes.as_str(),
                l.referer.as_str(),
                l.content_type.as_str()
            ),
            (
                "127.0.0.1",
                "-",
                "GET",
                "HTTP/1.1",
                "200",
                body.len().to_string().as_str(),
                "-",
                "text/plain; charset=utf-8"
            ),
            "{l:?}"
        );
        *per_path.entry(format!("/users/{}", id % 7)).or_default() += 1;
        *pids.entry(l.pid).or_default() += 1;
    }
    assert_eq!(ids.len(), REQUESTS);
    for n in 0..7 {
        let want = (0..REQUESTS).filter(|id| id % 7 == n).count();
        assert_eq!(
            per_path[&format!("/users/{n}")],
            want,
            "lines of /users/{n}"
        );
    }
    eprintln!("lines per worker pid: {pids:?}");
    assert!(
        pids.len() >= 2,
        "3 workers should have shared 600 requests, saw pids {pids:?}"
    );
    assert!(
        !pids.contains_key(&master.child.id()),
        "lines come from workers"
    );
}

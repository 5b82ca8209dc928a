//! The `/metrics` server fed thousands of random and mutated requests over real sockets (bounded
//! in count and time): every answer is a well-formed HTTP response or a closed connection, a
//! real scrape keeps being answered in between, and nothing panics.
#![cfg(feature = "server")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpe_core::expose::config::BasicAuth;
use gpe_core::expose::server::{MetricsServer, ServerConfig};
use gpe_core::{CounterVec, MultiProcessCollector, Store};
use prometheus::Opts;

/// Valid requests the mutations start from.
const SEEDS: &[&[u8]] = &[
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cDpx\r\n\r\n",
    b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cDpx\r\nAccept-Encoding: gzip\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cDpx\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ready HTTP/1.0\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
];

/// A scrape as Prometheus sends it.
const SCRAPE: &[u8] =
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cDpx\r\nConnection: close\r\n\r\n";

const NASTY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\0",
    b":",
    b" ",
    b"\xff\xfe",
    b"%00",
    b"HTTP/9.9",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"\r\n\r\n",
    b"GET",
    b"/../../etc/passwd",
    b"?a=b&c",
    b"#frag",
    b"Host: \r\n",
];

fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(0..=out.len());
        match rng.u8(0..7) {
            0 if !out.is_empty() => {
                let i = rng.usize(0..out.len());
                out[i] ^= 1 << rng.u8(0..8);
            }
            1 => out.insert(at, rng.u8(..)),
            2 => out.truncate(at),
            3 => {
                let n = NASTY[rng.usize(0..NASTY.len())];
                out.splice(at..at, n.iter().copied());
            }
            4 => {
                // A long header line (past the 16 KiB head limit sometimes).
                let line = format!(
                    "X-{}: {}\r\n",
                    rng.u32(..),
                    "a".repeat(rng.usize(0..20_000))
                );
                let end = out
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(0, |p| p + 2);
                out.splice(end..end, line.into_bytes());
            }
            5 => out.extend((0..rng.usize(0..64)).map(|_| rng.u8(..))),
            _ => {
                let other = SEEDS[rng.usize(0..SEEDS.len())];
                out.extend_from_slice(other);
            }
        }
    }
    out
}

/// Send `request`, close our side (so that the server sees the end of a cut request at once),
/// read what comes back (at most 2 s).
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    exchange_with(addr, request, true)
}

fn exchange_with(addr: SocketAddr, request: &[u8], half_close: bool) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Every response in `bytes` (pipelined requests give several) starts as HTTP/1.x with a status.
fn well_formed(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true; // closed without an answer
    }
    let text = String::from_utf8_lossy(bytes);
    let Some(rest) = text.strip_prefix("HTTP/1.") else {
        return false;
    };
    rest.get(2..5)
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|s| (100..600).contains(&s))
}

#[test]
fn random_and_mutated_requests_never_break_the_server() {
    let panics = Arc::new(AtomicUsize::new(0));
    {
        let panics = Arc::clone(&panics);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            panics.fetch_add(1, Ordering::Relaxed);
            previous(info);
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    CounterVec::new(Opts::new("fuzz_hits_total", "Hits."), &["path"], &store)
        .unwrap()
        .with_label_values(&["/"])
        .unwrap()
        .inc();
    let collector = MultiProcessCollector::new(dir.path());
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap())
        .basic_auth(Some(BasicAuth {
            user: "p".into(),
            password: "q".into(),
        }))
        .header_timeout(Duration::from_millis(500));
    let server = MetricsServer::bind(config, Arc::new(move || collector.scrape()))
        .unwrap()
        .spawn_thread()
        .unwrap();
    let addr = server.local_addr();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (threads, per_thread) = (4, 750);
    let (sent, answered) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (sent, answered) = (&sent, &answered);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(0x5eed + t);
                for i in 0..per_thread {
                    if Instant::now() > deadline {
                        return;
                    }
                    let request = if rng.u8(0..10) == 0 {
                        // Pure noise now and then.
                        (0..rng.usize(0..512)).map(|_| rng.u8(..)).collect()
                    } else {
                        let seed = SEEDS[rng.usize(0..SEEDS.len())];
                        mutate(&mut rng, seed)
                    };
                    let answer = exchange(addr, &request);
                    assert!(
                        well_formed(&answer),
                        "request {:?} got {:?}",
                        String::from_utf8_lossy(&request),
                        String::from_utf8_lossy(&answer[..answer.len().min(200)])
                    );
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !answer.is_empty() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    if i % 100 == 0 {
                        // A real scrape is still answered, whole.
                        let ok = exchange_with(addr, SCRAPE, false);
                        let text = String::from_utf8_lossy(&ok);
                        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                        assert!(text.contains("fuzz_hits_total{path=\"/\"} 1"), "{text}");
                    }
                }
            });
        }
    });
    assert!(
        sent.load(Ordering::Relaxed) >= 1000,
        "only {} requests within the time bound",
        sent.load(Ordering::Relaxed)
    );
    // Most requests reach the parser and get an answer (400, 401, 404, 405, 431, 200…), not
    // just a closed connection.
    let (sent, answered) = (
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    assert!(answered * 2 > sent, "{answered} of {sent} answered");
    assert_eq!(panics.load(Ordering::Relaxed), 0, "the server panicked");
    server.shutdown();
}

//! The lifecycle of `#[instrument_worker]` workers under a real `gpe-master`: the worker resource
//! metrics on the master's `/metrics`, TERM (graceful: an in-flight job finishes), QUIT/INT (fast,
//! even mid-job or while a blocking source waits), max-requests, the heartbeat while a source
//! blocks or a job outlives the timeout, a panicking handler that leaves the very same worker
//! processes serving, and every kind serving every listener (two TCP binds and a Unix one).
//!
//! Real signals, real processes; every wait polls against a deadline. Needs `target/*/gpe-master`
//! next to this test's binary (`cargo build -p gpe-master -p example-workers`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::*;

/// A `sleep MS` job whose handler has started (its `STARTED` line was read).
struct InFlight {
    reader: BufReader<TcpStream>,
}

impl InFlight {
    fn start(port: u16, ms: u64) -> InFlight {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(format!("sleep {ms}\n").as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "STARTED\n");
        InFlight { reader }
    }

    /// The rest of what the worker sends before closing.
    fn rest(mut self) -> String {
        let mut out = String::new();
        let _ = self.reader.read_to_string(&mut out);
        out
    }
}

/// `GET /metrics` from the master's metrics server, as text.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status.contains(" 200 ").then(|| body.to_owned())
}

/// Samples of family `name` in an exposition text: labels (without `pid`) -> value, per line.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
        }
        out.push((map, value.trim().parse().unwrap()));
    }
    out
}

/// Item 1: each worker exports the resource families, and counts its TERM-driven exit.
#[test]
fn resource_metrics_and_term_restart_on_the_masters_metrics() {
    let master = Start {
        metrics: true,
        ..Start::new(env!("CARGO_BIN_EXE_sync-worker"))
    }
    .spawn();
    let pids = master.wait_workers(3);
    let mport = master.metrics_port.unwrap();
    // Every worker, by pid: memory > 0, state running = 1 (others 0), cpu and uptime present.
    let text = eventually(
        "the families of every worker",
        Duration::from_secs(20),
        || {
            let text = scrape(mport)?;
            let every = |name: &str, ok: &dyn Fn(&BTreeMap<String, String>, f64) -> bool| {
                let s = samples(&text, name);
                pids.iter().all(|p| {
                    s.iter()
                        .any(|(l, v)| l.get("pid") == Some(&p.to_string()) && ok(l, *v))
                })
            };
            let ready = every("gunicorn_worker_memory_bytes", &|_, v| v > 0.0)
                && every("gunicorn_worker_cpu_percent", &|_, v| v >= 0.0)
                && every("gunicorn_worker_uptime_seconds", &|_, v| v >= 0.0)
                && every("gunicorn_worker_state", &|l, v| {
                    l.get("state").map(String::as_str) == Some("running") && v == 1.0
                });
            ready.then_some(text)
        },
    );
    for state in ["stopping", "quitting", "aborting"] {
        for (l, v) in samples(&text, "gunicorn_worker_state") {
            if l.get("state").map(String::as_str) == Some(state) {
                assert_eq!(v, 0.0, "{state} of {l:?}");
            }
        }
    }
    assert!(
        samples(&text, "gunicorn_worker_restart_total").is_empty(),
        "{text}"
    );
    let worker_ids: BTreeSet<String> = samples(&text, "gunicorn_worker_memory_bytes")
        .into_iter()
        .filter_map(|(l, _)| l.get("worker_id").cloned())
        .collect();
    assert_eq!(worker_ids.len(), 3, "{text}");

    // TERM one worker: it exits, the master replaces it, and its exit is counted.
    let victim = *pids.iter().next().unwrap();
    let victim_id = samples(&text, "gunicorn_worker_memory_bytes")
        .into_iter()
        .find(|(l, _)| l.get("pid") == Some(&victim.to_string()))
        .and_then(|(l, _)| l.get("worker_id").cloned())
        .unwrap();
    signal(victim, "TERM");
    let text = eventually(
        "restart_total{reason=term}",
        Duration::from_secs(20),
        || {
            let text = scrape(mport)?;
            let counted = samples(&text, "gunicorn_worker_restart_total")
                .into_iter()
                .any(|(l, v)| {
                    l.get("reason").map(String::as_str) == Some("term")
                        && l.get("worker_id") == Some(&victim_id)
                        && v == 1.0
                });
            (counted && !master.workers().contains(&victim)).then_some(text)
        },
    );
    let restarts = samples(&text, "gunicorn_worker_restart_total");
    assert_eq!(
        restarts.len(),
        1,
        "only the TERMed worker counts an exit: {text}"
    );
    let pids_after = master.wait_workers(3);
    assert!(!pids_after.contains(&victim));
    // The dead worker's live gauges are gone; its replacement is running.
    let text = eventually(
        "the replacement's families",
        Duration::from_secs(20),
        || {
            let text = scrape(mport)?;
            let mem = samples(&text, "gunicorn_worker_memory_bytes");
            let ok = !mem
                .iter()
                .any(|(l, _)| l.get("pid") == Some(&victim.to_string()))
                && pids_after.iter().all(|p| {
                    mem.iter()
                        .any(|(l, v)| l.get("pid") == Some(&p.to_string()) && *v > 0.0)
                });
            ok.then_some(text)
        },
    );
    assert!(text.contains("gunicorn_worker_state{"), "{text}");
}

/// TERM to the master: a job in flight finishes and is answered; the master exits 0; each
/// worker counts `restart_total{reason="term"}`.
#[test]
fn term_lets_the_in_flight_job_finish() {
    let mut master = Start::new(env!("CARGO_BIN_EXE_sync-worker")).spawn();
    let pids = master.wait_workers(3);
    let job = InFlight::start(master.port, 1500);
    let took = master.stop("TERM", Duration::from_secs(20));
    let rest = job.rest();
    assert!(
        rest.starts_with("SLEEP 1500 "),
        "the job was cut short: {rest:?}"
    );
    assert!(pids.contains(&reply_pid(&rest)));
    assert!(took >= Duration::from_millis(1400));
    let f = master.families();
    assert_eq!(restarts(&f, "term"), 3.0);
    assert_eq!(counter(&f, "gunicorn_worker_restart_total", &[]), 3.0);
    assert_eq!(counter(&f, "gunicorn_worker_requests_total", &[]), 1.0);
}

/// QUIT to the master while a job runs for 20 s: the workers exit at once (the master would wait
/// its 30 s graceful timeout for them otherwise), the job is cut, the master exits 0.
#[test]
fn quit_exits_fast_even_mid_job() {
    let mut master = Start::new(env!("CARGO_BIN_EXE_sync-worker")).spawn();
    master.wait_workers(3);
    let job = InFlight::start(master.port, 20_000);
    let took = master.stop("QUIT", Duration::from_secs(5));
    assert!(took < Duration::from_secs(5));
    assert_eq!(job.rest(), "", "the job was cut");
    let f = master.families();
    assert_eq!(restarts(&f, "quit"), 3.0);
    assert_eq!(counter(&f, "gunicorn_worker_restart_total", &[]), 3.0);
}

/// INT, idle workers: fast too.
#[test]
fn int_exits_fast() {
    let mut master = Start::new(env!("CARGO_BIN_EXE_threaded-worker")).spawn();
    master.wait_workers(3);
    let took = master.stop("INT", Duration::from_secs(5));
    assert!(took < Duration::from_secs(5));
    assert_eq!(restarts(&master.families(), "quit"), 3.0);
}

/// `--max-requests 5` with one worker: five jobs by one pid; the worker then asks the master
/// for its replacement and is stopped once the replacement is up (counting
/// `reason="max_requests"`, once), so the next job is served by the new one, and no job waits
/// for a worker to boot.
#[test]
fn max_requests_replaces_the_worker() {
    let master = Start {
        workers: 1,
        args: &["--max-requests", "5"],
        ..Start::new(env!("CARGO_BIN_EXE_sync-worker"))
    }
    .spawn();
    let first = master.wait_workers(1);
    let mut served = Vec::new();
    for i in 0..5 {
        let reply = request(master.port, &format!("job{i}")).expect("a reply");
        served.push(reply_pid(&reply));
    }
    assert!(
        served.iter().all(|p| first.contains(p)),
        "{served:?} {first:?}"
    );
    // The replacement comes first; the old worker leaves once it is up.
    let second = eventually("the old worker replaced", Duration::from_secs(10), || {
        let now = master.workers();
        (now.len() == 1 && now.is_disjoint(&first)).then_some(now)
    });
    let reply = request(master.port, "job5").expect("a reply from the replacement");
    assert!(second.contains(&reply_pid(&reply)), "{second:?} {reply:?}");
    let f = master.families();
    assert_eq!(restarts(&f, "max_requests"), 1.0);
    assert_eq!(counter(&f, "gunicorn_worker_restart_total", &[]), 1.0);
    // The sixth job is recorded just after its reply is written.
    settles_to("requests_total", 6.0, || {
        counter(&master.families(), "gunicorn_worker_requests_total", &[])
    });
}

/// A panicking handler: the same three worker processes serve before and after, and the counts
/// are exact (requests, duration `_count`, failures and error handling by type).
fn panic_keeps_the_same_workers(worker: &str) {
    let master = Start::new(worker).spawn();
    let before = master.wait_workers(3);
    let mut served = BTreeSet::new();
    for i in 0..30 {
        let reply = request(master.port, &format!("job{i}")).expect("a reply");
        served.insert(reply_pid(&reply));
    }
    assert_eq!(request(master.port, "fail").as_deref(), Some("ERR\n"));
    assert_eq!(
        request(master.port, "panic"),
        None,
        "the panicking handler's connection drops"
    );
    assert_eq!(request(master.port, "panic"), None);
    for i in 0..30 {
        let reply = request(master.port, &format!("after{i}")).expect("a reply after the panics");
        served.insert(reply_pid(&reply));
    }
    assert!(
        served.is_subset(&before),
        "{served:?} not all of {before:?}"
    );
    assert_eq!(master.workers(), before, "a worker was replaced");
    let total = 30.0 + 1.0 + 2.0 + 30.0;
    settles_to(
        "(requests, duration count, failed panic, errors panic, failed LineError, errors LineError, errors, restarts)",
        (total, total as u64, 2.0, 2.0, 1.0, 1.0, 3.0, 0.0),
        || {
            let f = master.families();
            (
                counter(&f, "gunicorn_worker_requests_total", &[]),
                series(&f, "gunicorn_worker_request_duration_seconds", &[])
                    .map(|m| m.get_histogram().get_sample_count())
                    .sum::<u64>(),
                by_error_type(&f, "gunicorn_worker_failed_requests_total", "panic"),
                by_error_type(&f, "gunicorn_worker_error_handling_total", "panic"),
                by_error_type(&f, "gunicorn_worker_failed_requests_total", "LineError"),
                by_error_type(&f, "gunicorn_worker_error_handling_total", "LineError"),
                counter(&f, "gunicorn_worker_error_handling_total", &[]),
                counter(&f, "gunicorn_worker_restart_total", &[]),
            )
        },
    );
    assert_eq!(master.workers(), before);
}

worker_tests!(panic_keeps_the_same_workers:
    panic_keeps_the_same_sync_workers => env!("CARGO_BIN_EXE_sync-worker"),
    panic_keeps_the_same_threaded_workers => env!("CARGO_BIN_EXE_threaded-worker"),
);

/// A sync worker whose source blocks (polling an empty spool) under `--timeout 2`: the watchdog
/// keeps the heartbeat going (no worker is killed over 5 s idle), and a QUIT to one worker ends
/// it at once although its source never returns.
#[test]
fn blocking_source_keeps_the_heartbeat_and_quits_fast() {
    let (spool, master) = spool_master(env!("CARGO_BIN_EXE_spool-worker"), &["--timeout", "2"]);
    let before = master.wait_workers(3);
    // An observation window, not a synchronisation: over 2.5 timeouts, nobody is replaced.
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        assert_eq!(
            master.workers(),
            before,
            "an idle worker missed its heartbeat"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = *before.iter().next().unwrap();
    let quit_at = Instant::now();
    signal(victim, "QUIT");
    eventually("the QUIT worker gone", Duration::from_secs(2), || {
        (!master.workers().contains(&victim)).then_some(())
    });
    assert!(quit_at.elapsed() < Duration::from_secs(2));
    let after = master.wait_workers(3);
    assert!(!after.contains(&victim));
    // Jobs still flow, and are counted exactly.
    for i in 0..10 {
        put_job(spool.path(), &i.to_string(), &format!("job {i}"));
    }
    eventually("every job done", Duration::from_secs(20), || {
        (0..10)
            .all(|i| spool.path().join(format!("{i}.done")).exists())
            .then_some(())
    });
    // A job is recorded just after its `.done` file is written.
    let f = eventually("ten jobs counted", Duration::from_secs(10), || {
        let f = master.families();
        (counter(&f, "gunicorn_worker_requests_total", &[]) == 10.0).then_some(f)
    });
    assert_eq!(restarts(&f, "quit"), 1.0);
}

/// One line over a Unix socket; the reply.
fn request_unix(path: &Path, line: &str) -> Option<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).ok()?;
    (!reply.is_empty()).then_some(reply)
}

/// Every connection kind serves every inherited listener: two TCP ports and a Unix socket, with
/// exact counts; a panic leaves the same workers.
fn every_listener_served(worker: &str) {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upper.sock");
    let second = free_port();
    let second_bind = format!("127.0.0.1:{second}");
    let unix_bind = format!("unix:{}", sock.display());
    let master = Start {
        args: &["--bind", &second_bind, "--bind", &unix_bind],
        ..Start::new(worker)
    }
    .spawn();
    let before = master.wait_workers(3);
    let mut served = BTreeSet::new();
    for i in 0..10 {
        for (how, tag, reply) in [
            ("first TCP", "A", request(master.port, &format!("a{i}"))),
            ("second TCP", "B", request(second, &format!("b{i}"))),
            ("Unix", "C", request_unix(&sock, &format!("c{i}"))),
        ] {
            let reply = reply.unwrap_or_else(|| panic!("no reply on the {how} listener"));
            assert!(reply.starts_with(&format!("{tag}{i} ")), "{how}: {reply}");
            served.insert(reply_pid(&reply));
        }
    }
    assert_eq!(request_unix(&sock, "fail").as_deref(), Some("ERR\n"));
    assert_eq!(request(second, "panic"), None);
    assert_eq!(
        request(master.port, "after").map(|r| r.starts_with("AFTER ")),
        Some(true)
    );
    assert!(served.is_subset(&before), "{served:?} {before:?}");
    assert_eq!(master.workers(), before);
    settles_to("(requests, panics, LineError)", (33.0, 1.0, 1.0), || {
        let f = master.families();
        let errors = "gunicorn_worker_error_handling_total";
        (
            counter(&f, "gunicorn_worker_requests_total", &[]),
            by_error_type(&f, errors, "panic"),
            by_error_type(&f, errors, "LineError"),
        )
    });
}

/// `--timeout 2` and a 6 s job: the sync kind stops heartbeating once the job outlives the
/// timeout (gunicorn's sync worker), so the master kills and replaces that worker mid-job; the
/// threaded kind heartbeats from its watchdog whatever its jobs do, so the job completes on the
/// same worker.
#[test]
fn a_job_outliving_the_timeout_kills_sync_workers_only() {
    for (worker, killed) in [
        (env!("CARGO_BIN_EXE_sync-worker"), true),
        (env!("CARGO_BIN_EXE_threaded-worker"), false),
    ] {
        let master = Start {
            workers: 1,
            args: &["--timeout", "2"],
            ..Start::new(worker)
        }
        .spawn();
        let before = master.wait_workers(1);
        let job = InFlight::start(master.port, 6000);
        let rest = job.rest();
        if killed {
            assert_eq!(rest, "", "{worker}: the stuck job should have been cut");
            let after = master.wait_workers(1);
            assert!(after.is_disjoint(&before), "{worker}: not replaced");
            // It got the master's ABRT: counted, as gunicorn's worker exits on it.
            let f = master.families();
            assert_eq!(restarts(&f, "abort"), 1.0);
            assert_eq!(counter(&f, "gunicorn_worker_restart_total", &[]), 1.0);
        } else {
            assert!(rest.starts_with("SLEEP 6000 "), "{worker}: {rest:?}");
            assert!(before.contains(&reply_pid(&rest)));
            assert_eq!(master.workers(), before, "{worker}: replaced");
        }
    }
}

/// The async queue consumer on TERM: the job it claimed finishes (its `.done` file appears), the
/// master exits 0, every worker counts `reason="term"`.
#[test]
fn term_lets_an_async_job_finish() {
    let (spool, mut master) = spool_master(env!("CARGO_BIN_EXE_queue-worker"), &[]);
    master.wait_workers(3);
    put_job(spool.path(), "slow", "sleep 1500");
    eventually("the job claimed", Duration::from_secs(10), || {
        std::fs::read_dir(spool.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("slow.claimed-"))
            .then_some(())
    });
    master.stop("TERM", Duration::from_secs(20));
    assert_eq!(
        std::fs::read_to_string(spool.path().join("slow.done")).unwrap(),
        "SLEEP 1500"
    );
    let f = master.families();
    assert_eq!(counter(&f, "gunicorn_worker_requests_total", &[]), 1.0);
    assert_eq!(restarts(&f, "term"), 3.0);
}

worker_tests!(every_listener_served:
    async_connections_serve_every_listener => env!("CARGO_BIN_EXE_async-worker"),
    sync_connections_serve_every_listener => env!("CARGO_BIN_EXE_sync-worker"),
    threaded_connections_serve_every_listener => env!("CARGO_BIN_EXE_threaded-worker"),
);

/// TERM while every sync worker waits in its blocking source: the source sees
/// `runtime::is_stopping()` and returns `None`, so the master exits 0 at once (not after its 30 s
/// graceful timeout), with 3 term exits counted.
#[test]
fn term_ends_a_blocking_source() {
    let (_spool, mut master) = spool_master(env!("CARGO_BIN_EXE_spool-worker"), &[]);
    master.wait_workers(3);
    let took = master.stop("TERM", Duration::from_secs(5));
    assert!(took < Duration::from_secs(5));
    assert_eq!(restarts(&master.families(), "term"), 3.0);
}

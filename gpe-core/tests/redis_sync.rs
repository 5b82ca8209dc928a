//! The Redis sync against a real `redis-server` (one per test, on a free loopback port) and real
//! writer processes: exactness, outages, SIGKILLed writers, churn.
#![cfg(feature = "redis")]

mod common;
mod redis_support;

use std::io::{BufRead, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use gpe_core::redis::{RedisCollector, RedisConfig};
use gpe_core::MultiProcessCollector;
use gpe_core::{Counter, CounterVec, GaugeMode, HistogramVec, LivePids, Liveness};
use prometheus::{HistogramOpts, Opts};
use redis_support::*;

const BUCKETS: [f64; 3] = [0.1, 1.0, 10.0];

/// The body of every child process. Not a test of its own: it only runs when re-executed.
#[test]
#[ignore = "runs only as a child process of the other tests"]
fn child() {
    run_child(|parts, store| match parts[0] {
        "hammer" => {
            let n: usize = parts[1].parse().unwrap();
            let me = std::process::id() as f64;
            let c = CounterVec::new(Opts::new("req_total", "Requests."), &["w"], store).unwrap();
            let h = HistogramVec::new(
                HistogramOpts::new("lat_seconds", "Latency.").buckets(BUCKETS.to_vec()),
                &["route"],
                store,
            )
            .unwrap()
            .with_label_values(&["/a"])
            .unwrap();
            for i in 0..n {
                c.with_label_values(&[if i % 2 == 0 { "even" } else { "odd" }])
                    .unwrap()
                    .inc();
                h.observe((i % 13) as f64 * 0.9);
            }
            set_a_gauge_of_every_mode(store, me);
            child_ready();
            child_wait_stdin();
        }
        "slow" => {
            let n: usize = parts[1].parse().unwrap();
            let c = Counter::new("slow_total", "Slow.", store).unwrap();
            child_ready();
            for _ in 0..n {
                c.inc();
                std::thread::sleep(Duration::from_micros(500));
            }
            child_ready();
            child_wait_stdin();
        }
        "cmd" => {
            let c = Counter::new("cmd_total", "On command.", store).unwrap();
            child_ready();
            for line in std::io::stdin().lock().lines() {
                let line = line.unwrap();
                let k: f64 = line.trim().parse().unwrap();
                c.inc_by(k);
                child_ready();
            }
        }
        "step" => {
            // On every line: the counter, the histogram and gauges of several modes change.
            let c = Counter::new("step_total", "Steps.", store).unwrap();
            let h = gpe_core::Histogram::with_opts(
                HistogramOpts::new("step_seconds", "Step.").buckets(BUCKETS.to_vec()),
                store,
            )
            .unwrap();
            let gauges: Vec<_> = [
                GaugeMode::Max,
                GaugeMode::Sum,
                GaugeMode::MostRecent,
                GaugeMode::LiveSum,
                GaugeMode::All,
            ]
            .into_iter()
            .map(|mode| gpe_core::Gauge::new(&format!("step_{mode}"), "G.", mode, store).unwrap())
            .collect();
            child_ready();
            for line in std::io::stdin().lock().lines() {
                let k: f64 = line.unwrap().trim().parse().unwrap();
                c.inc_by(k);
                h.observe(k);
                for g in &gauges {
                    g.set(k);
                }
                child_ready();
            }
        }
        "once" => {
            Counter::new("churn_total", "Short-lived.", store)
                .unwrap()
                .inc();
            gpe_core::Gauge::new("churn_sum", "Sum.", GaugeMode::Sum, store)
                .unwrap()
                .set(1.0);
            gpe_core::Gauge::new("churn_live", "Livesum.", GaugeMode::LiveSum, store)
                .unwrap()
                .set(1.0);
        }
        other => panic!("unknown child action {other}"),
    });
}

/// The test settings with a sync every 100 ms and reconnection attempts at most 400 ms apart.
fn config(server: &RedisServer, prefix: &str, host: &str) -> RedisConfig {
    test_config(server, prefix, host, Duration::from_millis(100))
        .with_max_backoff(Duration::from_millis(400))
}

/// Redis samples with the `host` label removed, to compare with the files' (which have `pid`).
fn redis_samples(c: &RedisCollector) -> Samples {
    let fams = c.try_gather().expect("redis readable");
    samples(&fams)
        .into_iter()
        .map(|((n, mut l), v)| {
            l.remove("host");
            ((n, l), v)
        })
        .collect()
}

fn file_samples(dir: &std::path::Path, live: &LivePids) -> Samples {
    samples(
        &MultiProcessCollector::new(dir)
            .with_liveness(Liveness::Pids(live.clone()))
            .with_auto_compact(false)
            .gather(),
    )
}

/// Commands clients sent since `CONFIG RESETSTAT`, by name. `INFO commandstats` also counts the
/// commands our Lua scripts run inside Redis; those (and `INFO`/`CONFIG` of the test) are left
/// out, so what remains is what crossed the network.
fn client_commands(server: &RedisServer) -> std::collections::BTreeMap<String, i64> {
    const IN_SCRIPTS: [&str; 15] = [
        "type",
        "hmget",
        "zscore",
        "zadd",
        "time",
        "hset",
        "hget",
        "hgetall",
        "del",
        "zrem",
        "rename",
        "zrange",
        "zrangebyscore",
        "zremrangebyscore",
        "info",
    ];
    server.command_calls(|name| !IN_SCRIPTS.contains(&name) && !name.starts_with("config"))
}

/// Every command Redis ran since `CONFIG RESETSTAT`, by name, including those our Lua scripts
/// ran inside Redis (as `INFO commandstats` counts them); the test's own `INFO`/`CONFIG` left out.
fn all_commands(server: &RedisServer) -> std::collections::BTreeMap<String, i64> {
    server.command_calls(|name| name != "info" && !name.starts_with("config"))
}

/// `n` children doing `action` in `dir`, each ready (with a piped stdin) and in `live`.
fn spawn_writers(n: usize, dir: &std::path::Path, action: &str, live: &LivePids) -> Vec<Child> {
    (0..n)
        .map(|_| {
            let mut c = spawn_child("child", dir, action, true);
            wait_ready(&mut c);
            live.insert(c.id());
            c
        })
        .collect()
}

fn close(mut c: Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

#[test]
fn four_writers_redis_aggregate_equals_file_aggregate() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = LivePids::new();
    let kids = spawn_writers(4, dir.path(), "hammer:5000", &live);
    let cfg = config(&server, "gpe:test", "host-a").with_live_window(Duration::from_millis(600));
    let sync = spawn_sync(cfg.clone(), dir.path(), Liveness::Pids(live.clone()));
    let report = sync.flush_now().unwrap();
    assert_eq!(report.folded, 0);
    let collector = RedisCollector::new(cfg).unwrap();
    let files = file_samples(dir.path(), &live);
    let redis = redis_samples(&collector);
    assert_eq!(redis, files);
    assert_eq!(value(&redis, "req_total", &[("w", "even")]), Some(10_000.0));
    assert_eq!(
        value(&redis, "lat_seconds_count", &[("route", "/a")]),
        Some(20_000.0)
    );
    // `all` gauges: one series per process, with pid and host.
    let all: Vec<_> = samples(&collector.gather())
        .into_iter()
        .filter(|((n, _), _)| n == "g_all")
        .collect();
    assert_eq!(all.len(), 4);
    assert!(all
        .iter()
        .all(|((_, l), _)| l["host"] == "host-a" && l.contains_key("pid")));
    // Nothing changed and the heartbeats are fresh: the next syncs write nothing at all (an idle
    // process costs no Redis command until its heartbeat is due).
    server.cmd(&["CONFIG", "RESETSTAT"]);
    let report = sync.flush_now().unwrap();
    assert_eq!((report.processes, report.values), (0, 0));
    let t = Instant::now();
    for _ in 0..10 {
        sync.flush_now().unwrap();
    }
    let ticks = (t.elapsed().as_millis() / 100) as i64 + 2;
    let calls = client_commands(&server);
    assert!(
        calls.get("evalsha").copied().unwrap_or(0) <= ticks && calls.len() <= 1,
        "{calls:?} for 11 idle syncs + {ticks} ticks"
    );
    // The heartbeats of idle processes are still refreshed (a third of the live window, here
    // 200 ms), so their `live*` gauges stay: every member's score passes the current time.
    let hb = "gpe:test:heartbeat";
    let min_score = |server: &RedisServer| -> f64 {
        match server.cmd(&["ZRANGE", hb, "0", "-1", "WITHSCORES"]) {
            Resp::Array(items) if items.len() == 8 => items
                .chunks(2)
                .filter_map(|p| p[1].text()?.parse::<f64>().ok())
                .fold(f64::INFINITY, f64::min),
            _ => f64::NAN,
        }
    };
    let redis_now = match server.cmd(&["TIME"]) {
        Resp::Array(t) => t[0].text().unwrap().parse::<f64>().unwrap(),
        _ => panic!("TIME"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // (NaN, when a member is missing, counts as not refreshed.)
    while min_score(&server).partial_cmp(&redis_now) != Some(std::cmp::Ordering::Greater) {
        assert!(
            Instant::now() < deadline,
            "idle heartbeats not refreshed: {}",
            min_score(&server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in kids {
        close(c);
    }
    sync.shutdown().unwrap();
}

#[test]
fn redis_killed_and_restarted_converges_with_one_warning_per_outage() {
    logs();
    let mut server = RedisServer::start();
    let port = server.port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let live = LivePids::new();
    let mut kids = spawn_writers(2, dir.path(), "slow:4000", &live);
    let cfg = config(&server, "gpe:outage", "h");
    let sync = spawn_sync(cfg.clone(), dir.path(), Liveness::Pids(live.clone()));
    let collector = RedisCollector::new(cfg).unwrap();
    eventually("first values in Redis", Duration::from_secs(10), || {
        collector
            .try_gather()
            .map(|f| value(&samples(&f), "slow_total", &[]).unwrap_or(0.0) > 0.0)
            .unwrap_or(false)
    });
    server.kill();
    let warned = |port: &str| {
        log_text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(port) && l.contains("what=\"sync\""))
            .count()
    };
    eventually(
        "the sync notices the outage",
        Duration::from_secs(10),
        || warned(&port) >= 1,
    );
    // Writers keep going; requests never touch Redis. Let several retries fail.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        assert!(sync.flush_now().is_err());
        std::thread::sleep(Duration::from_millis(100));
    }
    server.restart();
    for c in &mut kids {
        wait_ready(c); // all 4000 increments done
    }
    let files = file_samples(dir.path(), &live);
    assert_eq!(value(&files, "slow_total", &[]), Some(8000.0));
    eventually(
        "Redis converges to the local totals",
        Duration::from_secs(15),
        || {
            let _ = sync.flush_now();
            collector
                .try_gather()
                .map(|f| samples(&f) == files)
                .unwrap_or(false)
        },
    );
    assert_eq!(warned(&port), 1, "{}", log_text());
    let recovered = log_text()
        .lines()
        .filter(|l| {
            l.contains(&port) && l.contains("reachable again") && l.contains("what=\"sync\"")
        })
        .count();
    assert_eq!(recovered, 1);
    for c in kids {
        close(c);
    }
}

#[test]
fn sigkilled_writer_last_increments_reach_redis_then_fold() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = LivePids::new();
    let mut child = spawn_writers(1, dir.path(), "cmd", &live).remove(0);
    let cfg = config(&server, "gpe:kill", "h")
        .with_interval(Duration::from_secs(3600))
        .unwrap();
    let sync = spawn_sync(cfg.clone(), dir.path(), Liveness::Pids(live.clone()));
    let collector = RedisCollector::new(cfg).unwrap();
    let total = |c: &RedisCollector| value(&samples(&c.try_gather().unwrap()), "cmd_total", &[]);
    let send = |c: &mut Child, k: u32| {
        writeln!(c.stdin.as_mut().unwrap(), "{k}").unwrap();
        wait_ready(c);
    };
    send(&mut child, 100);
    sync.flush_now().unwrap();
    assert_eq!(total(&collector), Some(100.0));
    // Increments after the last sync, then SIGKILL: the master's final flush gets them.
    send(&mut child, 23);
    child.kill().unwrap();
    child.wait().unwrap();
    sync.flush_now().unwrap();
    assert_eq!(total(&collector), Some(123.0));
    assert_eq!(server.keys("gpe:kill:proc:*").len(), 1);
    // Marked dead: folded into the archive, totals unchanged, its keys gone.
    live.remove(child.id());
    let report = sync.flush_now().unwrap();
    assert_eq!(report.folded, 1);
    assert_eq!(total(&collector), Some(123.0));
    assert!(server.keys("gpe:kill:proc:*").is_empty());
    assert_eq!(server.cmd(&["ZCARD", "gpe:kill:heartbeat"]).int(), 0);
    // Local compaction of the same files: Redis is not counted twice.
    MultiProcessCollector::new(dir.path())
        .with_liveness(Liveness::Pids(live.clone()))
        .compact()
        .unwrap();
    sync.flush_now().unwrap();
    assert_eq!(total(&collector), Some(123.0));
    assert_eq!(
        samples(&collector.try_gather().unwrap()),
        file_samples(dir.path(), &live)
    );
}

#[test]
fn three_hundred_short_lived_processes_bounded_keys_exact_counters() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&server, "gpe:churn", "h");
    let sync = spawn_sync(cfg.clone(), dir.path(), Liveness::PidCheck);
    let collector = RedisCollector::new(cfg).unwrap();
    let files = MultiProcessCollector::new(dir.path());
    let mut last = 0.0;
    let mut max_keys = 0;
    for batch in 0..30 {
        run_children(10, dir.path(), "once");
        // As the master does after reaping: final flush, then local compaction.
        let _ = sync.flush_now();
        if batch % 3 == 2 {
            files.compact().unwrap();
        }
        let v = value(
            &samples(&collector.try_gather().unwrap()),
            "churn_total",
            &[],
        )
        .unwrap_or(0.0);
        assert!(v >= last, "counter went down: {last} -> {v}");
        assert!(v <= f64::from((batch + 1) * 10), "counted twice: {v}");
        last = v;
        let n = server.keys("gpe:churn:*").len();
        max_keys = max_keys.max(n);
    }
    sync.flush_now().unwrap();
    let s = samples(&collector.try_gather().unwrap());
    assert_eq!(value(&s, "churn_total", &[]), Some(300.0));
    assert_eq!(value(&s, "churn_sum", &[]), Some(300.0));
    assert_eq!(
        value(&s, "churn_live", &[]),
        None,
        "dead processes' livesum gauges are dropped"
    );
    // Only archives and the heartbeat set remain, whatever the number of processes that lived.
    let keys = server.keys("gpe:churn:*");
    assert!(keys.len() <= 4, "{keys:?}");
    assert!(max_keys <= 3 * 10 + 4, "{max_keys} keys at once");
    files.compact().unwrap();
    assert_eq!(s, samples(&files.gather()));
}

/// One sync of 4 processes whose counter, histogram and gauges (5 modes) all changed: one hash
/// per process, so at most 3 commands per process (heartbeat, one `HSET`, a spare lookup) plus a
/// constant per sync (the `EVALSHA` and its `TIME`), counting the commands run inside scripts.
/// One hash per kind would cost at least 7 `HSET`s per process here.
#[test]
fn one_sync_of_changed_processes_costs_at_most_three_commands_each() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = LivePids::new();
    let mut kids = spawn_writers(4, dir.path(), "step", &live);
    let cfg = config(&server, "gpe:cost", "h")
        .with_interval(Duration::from_secs(3600))
        .unwrap();
    let sync = spawn_sync(cfg.clone(), dir.path(), Liveness::Pids(live.clone()));
    let collector = RedisCollector::new(cfg).unwrap();
    let step = |kids: &mut Vec<Child>, k: u32| {
        for c in kids.iter_mut() {
            writeln!(c.stdin.as_mut().unwrap(), "{k}").unwrap();
            wait_ready(c);
        }
    };
    step(&mut kids, 1);
    sync.flush_now().unwrap(); // registration
                               // The interval's first tick fires at once; let it be taken now (it has nothing to write), not
                               // after the next step, so each measured flush below is the one sync of the new values.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sync.flush_now().unwrap().processes, 0);
    for k in [2, 3] {
        step(&mut kids, k);
        server.cmd(&["CONFIG", "RESETSTAT"]);
        let report = sync.flush_now().unwrap();
        let calls = all_commands(&server);
        assert_eq!(report.processes, 4, "{report:?}");
        // Per process: the counter, the histogram's sum and bucket, 5 gauges.
        assert!(report.values >= 4 * 7, "{report:?}");
        let total: i64 = calls.values().sum();
        assert!(
            total <= 3 * 4 + 4,
            "{total} commands for one sync: {calls:?}"
        );
        assert_eq!(calls.get("hset").copied(), Some(4), "{calls:?}");
        assert_eq!(redis_samples(&collector), file_samples(dir.path(), &live));
    }
    // Every process has exactly one hash.
    assert_eq!(server.keys("gpe:cost:proc:*").len(), 4);
    for c in kids {
        close(c);
    }
    sync.shutdown().unwrap();
}

#[test]
fn live_gauge_modes_drop_processes_whose_heartbeat_stopped_before_any_fold() {
    // Host a keeps syncing one writer; host b syncs two writers once and then goes silent (its
    // sync stopped, its processes neither folded nor swept): the `live*` modes must leave b's
    // values out as soon as its heartbeats are older than the live window, while the other modes
    // keep them until they are folded (as the file collector does for dead, uncompacted files).
    let server = RedisServer::start();
    let window = Duration::from_millis(600);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (live_a, live_b) = (LivePids::new(), LivePids::new());
    // Written in this order, so the most recent value of all is b's second writer's and the most
    // recent live one is a's.
    let mut a = spawn_child("child", dir_a.path(), "hammer:10", true);
    wait_ready(&mut a);
    live_a.insert(a.id());
    let mut bs = Vec::new();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(20)); // distinct timestamps for mostrecent
        let mut b = spawn_child("child", dir_b.path(), "hammer:10", true);
        wait_ready(&mut b);
        live_b.insert(b.id());
        bs.push(b);
    }
    let cfg = |host: &str| config(&server, "gpe:live", host).with_live_window(window);
    let sync_a = spawn_sync(cfg("a"), dir_a.path(), Liveness::Pids(live_a.clone()));
    let sync_b = spawn_sync(cfg("b"), dir_b.path(), Liveness::Pids(live_b.clone()));
    sync_a.flush_now().unwrap();
    sync_b.shutdown().unwrap();
    let collector = RedisCollector::new(cfg("a")).unwrap();
    let (pa, pb1, pb2) = (a.id() as f64, bs[0].id() as f64, bs[1].id() as f64);
    let g = |s: &Samples, mode: &str| value(s, &format!("g_{mode}"), &[("k", "v")]);
    let s = samples(&collector.try_gather().unwrap());
    assert_eq!(
        g(&s, "livesum"),
        Some(pa + pb1 + pb2),
        "all three are live at first"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = samples(&collector.try_gather().unwrap());
        if g(&s, "livesum") == Some(pa) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "b's heartbeats never went stale: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(g(&s, "livemin"), Some(pa));
    assert_eq!(g(&s, "livemax"), Some(pa));
    assert_eq!(g(&s, "livemostrecent"), Some(pa));
    assert_eq!(g(&s, "sum"), Some(pa + pb1 + pb2));
    assert_eq!(g(&s, "min"), Some(pa.min(pb1).min(pb2)));
    assert_eq!(g(&s, "max"), Some(pa.max(pb1).max(pb2)));
    assert_eq!(g(&s, "mostrecent"), Some(pb2));
    let series = |name: &str| s.keys().filter(|(n, _)| n == name).count();
    assert_eq!(series("g_liveall"), 1);
    assert_eq!(series("g_all"), 3);
    // Counters of the silent host still count.
    assert_eq!(value(&s, "req_total", &[("w", "even")]), Some(15.0));

    // The file collector, told the same liveness (b's writers dead, nothing compacted), agrees on
    // every gauge mode.
    let mut files = file_samples(dir_a.path(), &live_a);
    let dead = LivePids::new();
    for (k, v) in file_samples(dir_b.path(), &dead) {
        let e = files.entry(k.clone()).or_insert(0.0);
        let name = k.0.as_str();
        *e = if name.starts_with("g_live") {
            *e // b is dead: not in the live modes
        } else if name == "g_min" {
            e.min(v)
        } else if name == "g_max" {
            e.max(v)
        } else if name == "g_mostrecent" {
            v // b's second writer wrote last
        } else {
            *e + v
        };
    }
    for mode in [
        "livesum",
        "livemin",
        "livemax",
        "livemostrecent",
        "sum",
        "min",
        "max",
    ] {
        assert_eq!(g(&s, mode), g(&files, mode), "{mode}");
    }
    for c in bs.into_iter().chain([a]) {
        close(c);
    }
    sync_a.shutdown().unwrap();
}

#[test]
fn acl_user_from_the_environment_is_used_and_a_wrong_password_is_only_an_outage() {
    let server = RedisServer::start();
    // `gpe` may touch every key; the default (unauthenticated) user none, so a sync that works
    // proves the credentials were sent.
    server.cmd(&[
        "ACL", "SETUSER", "gpe", "on", ">s3cret", "~*", "&*", "+@all",
    ]);
    server.cmd(&["ACL", "SETUSER", "default", "resetkeys", "resetchannels"]);
    let port = server
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let env = |password: &'static str| {
        let port = port.clone();
        move |name: &str| -> Option<String> {
            match name {
                "REDIS_ENABLED" => Some("true".into()),
                "REDIS_HOST" => Some("127.0.0.1".into()),
                "REDIS_PORT" => Some(port.clone()),
                "REDIS_USERNAME" => Some("gpe".into()),
                "REDIS_PASSWORD" => Some(password.into()),
                "REDIS_KEY_PREFIX" => Some("gpe:acl".into()),
                _ => None,
            }
        }
    };
    let tune = |c: RedisConfig| {
        c.with_host_id("h")
            .unwrap()
            .with_interval(Duration::from_secs(3600))
            .unwrap()
            .with_timeouts(Duration::from_millis(500), Duration::from_millis(500))
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let live = LivePids::new();
    let mut child = spawn_writers(1, dir.path(), "cmd", &live).remove(0);
    writeln!(child.stdin.as_mut().unwrap(), "42").unwrap();
    wait_ready(&mut child);
    let liveness = || Liveness::Pids(live.clone());

    let good = tune(RedisConfig::from_lookup(env("s3cret")).unwrap());
    let sync = spawn_sync(good.clone(), dir.path(), liveness());
    sync.flush_now().expect("a sync as the ACL user");
    let collector = RedisCollector::new(good).unwrap();
    let s = samples(&collector.try_gather().unwrap());
    assert_eq!(value(&s, "cmd_total", &[]), Some(42.0));
    sync.shutdown().unwrap();

    // The same user in a URL (REDIS_URL wins over the separate variables).
    let url = format!("redis://gpe:s3cret@127.0.0.1:{port}/0");
    let from_url = tune(
        RedisConfig::from_lookup(|n: &str| match n {
            "REDIS_URL" => Some(url.clone()),
            "REDIS_KEY_PREFIX" => Some("gpe:acl".into()),
            _ => None,
        })
        .unwrap(),
    );
    let s = samples(&RedisCollector::new(from_url).unwrap().try_gather().unwrap());
    assert_eq!(value(&s, "cmd_total", &[]), Some(42.0));

    // A wrong password: the sync reports Redis unavailable (no panic, no lost file values) and
    // the collector errors; the unauthenticated default user was never given the keys.
    let bad = tune(RedisConfig::from_lookup(env("wrong")).unwrap());
    let sync = spawn_sync(bad.clone(), dir.path(), liveness());
    assert!(sync.flush_now().is_err());
    assert!(RedisCollector::new(bad).unwrap().try_gather().is_err());
    drop(sync);
    let files = file_samples(dir.path(), &live);
    assert_eq!(value(&files, "cmd_total", &[]), Some(42.0));
    close(child);
}

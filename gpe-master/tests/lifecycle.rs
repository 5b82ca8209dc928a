//! Lifecycle of the real `gpe-master` running `example-socket-activated` workers: start, graceful
//! stop, a worker killed from outside, a worker failing to boot (exit 3) or to load its app (exit
//! 4), the master itself SIGKILLed, a worker that stops heartbeating and one that never does, and
//! the master's memory gauges for itself and each live worker.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{running, Master, Options, PATIENCE};
use gpe_core::worker::env::WORKER_ID;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `--workers 3`: three distinct workers answer, the gauge says 3; TERM lets an in-flight request
/// finish, the master exits 0 within the graceful timeout, removes its pidfile and leaves no
/// worker behind.
#[test]
fn three_workers_then_graceful_term() {
    let mut m = Master::start(Options::workers(3).arg("--graceful-timeout").arg("10"));
    let pids = m.wait_workers(3);
    assert_eq!(
        m.answering_pids(3),
        pids,
        "the answering pids are the master's children"
    );
    assert_eq!(m.sample("gunicorn_master_workers"), Some(3.0));
    assert_eq!(m.sample("gunicorn_master_worker_spawns_total"), Some(3.0));
    for pid in &pids {
        let id = common::worker_id(*pid)
            .unwrap_or_else(|| panic!("{WORKER_ID} in the environment of worker {pid}"));
        assert!((1..=3).contains(&id), "worker ids are 1..=3, got {id}");
    }

    let slow = m.in_flight("/sleep?ms=1500");
    let took = m.stop(Signal::SIGTERM, Duration::from_secs(10) + PATIENCE);
    assert!(
        took < Duration::from_secs(10),
        "TERM took {took:?}, more than --graceful-timeout 10"
    );
    let answer = slow.join().expect("client thread");
    let answer = answer.expect("the in-flight request is answered during a graceful stop");
    assert!(answer.contains("slept 1500 ms"), "got {answer:?}");
    assert!(!m.pidfile.exists(), "the pidfile is removed at exit");
    common::wait_gone(&pids, Duration::from_secs(5), "every worker to be gone");
    assert!(m.log().contains("Shutting down: Master"), "{}", m.log());
}

/// A worker SIGKILLed from outside is replaced promptly: exit reason `killed`, one restart with
/// the Python exporter's reason `chld`, and no other restart reason (`hup` stays 0).
#[test]
fn killed_worker_is_replaced() {
    let mut m = Master::start(Options::workers(2));
    let before = m.wait_workers(2);
    let victim = before[0];
    let victim_slot = common::worker_id(victim);
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill the worker");
    let killed_at = Instant::now();
    let after = m.wait_for_within(Duration::from_secs(5), "a replacement worker", |m| {
        let now = m.workers();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    });
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    assert!(
        after.contains(&before[1]),
        "the other worker was left alone"
    );
    let new = after
        .iter()
        .copied()
        .find(|p| *p != before[1])
        .expect("new pid");
    assert_eq!(
        common::worker_id(new),
        victim_slot,
        "the replacement takes the dead worker's slot (GPE_WORKER_ID)"
    );
    m.wait_sample("gunicorn_master_worker_restart_total{reason=\"chld\"}", 1.0);
    let text = m.metrics().expect("scrape");
    let restarts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gunicorn_master_worker_restart_total{"))
        .collect();
    assert_eq!(
        restarts,
        [
            "gunicorn_master_worker_restart_total{reason=\"chld\"} 1",
            "gunicorn_master_worker_restart_total{reason=\"hup\"} 0"
        ],
        "only the exporter's reasons, counting real restarts"
    );
    m.wait_sample("gunicorn_master_worker_exits_total{reason=\"killed\"}", 1.0);
    m.wait_sample("gunicorn_master_worker_spawns_total", 3.0);
    m.wait_sample("gunicorn_master_workers", 2.0);
    assert!(m.answering_pids(2).contains(&new), "the new worker serves");
    assert!(m.log().contains("Perhaps out of memory?"), "{}", m.log());
}

/// A master of 2 workers that exit with `code` as they boot, once it has exited with `code` too,
/// without respawning (`error` names the failure in messages): the master, its log and how many
/// workers it spawned.
fn halted_by_workers_exiting(code: i32, error: &str) -> (Master, String, usize) {
    let mut m = Master::spawn(Options::workers(2).env("EXAMPLE_BOOT_EXIT", &code.to_string()));
    let status = m.wait_exit(PATIENCE);
    let log = m.log();
    assert_eq!(status.code(), Some(code), "exit code of the master\n{log}");
    let spawned = log.matches("Booting worker with pid").count();
    assert!(
        (1..=2).contains(&spawned),
        "no respawn after {error}: {spawned} workers spawned for --workers 2\n{log}"
    );
    (m, log, spawned)
}

/// A worker exiting with 3 (gunicorn's WORKER_BOOT_ERROR): the master stops with 3, says why, and
/// does not respawn.
#[test]
fn boot_error_halts_the_master() {
    let (m, log, spawned) = halted_by_workers_exiting(3, "a boot error");
    assert!(
        log.contains("Worker failed to boot"),
        "the log says a worker failed to boot\n{log}"
    );
    let failed = log.matches("boot error requested").count();
    // The first failure halts the master; a sibling may be stopped before it even reached main.
    assert!(
        (1..=spawned).contains(&failed),
        "{failed} boot failures for {spawned} workers\n{log}"
    );
    assert!(!m.pidfile.exists(), "the pidfile is removed at exit");
}

/// A worker exiting with 4 (gunicorn's APP_LOAD_ERROR) halts the master too: exit 4, the log
/// says the app failed to load, no respawn.
#[test]
fn app_load_error_halts_the_master() {
    let (m, log, _) = halted_by_workers_exiting(4, "an app load error");
    assert!(log.contains("App failed to load"), "{log}");
    assert!(!m.pidfile.exists(), "the pidfile is removed at exit");
}

/// The master SIGKILLed: its workers die with it within 2 s (PR_SET_PDEATHSIG). The workers are
/// `/bin/sleep 1000`, which never looks at its parent, so only the kernel's parent-death signal
/// can end them (`example-socket-activated` would also notice the changed parent by itself).
#[test]
fn workers_die_with_a_sigkilled_master() {
    let mut m = Master::start(
        Options::workers(3)
            .worker_binary(std::path::Path::new("/bin/sleep"))
            .worker_arg("1000"),
    );
    let pids = m.wait_workers(3);
    for pid in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            cmdline.starts_with(b"/bin/sleep\0"),
            "worker {pid} runs sleep: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    m.signal(Signal::SIGKILL);
    m.wait_exit(PATIENCE);
    common::wait_gone(
        &pids,
        Duration::from_secs(2),
        "the orphaned workers to die after the master's SIGKILL",
    );
}

/// The mode of a worker's heartbeat file (fd 4: after the one listener), seen through `/proc`.
fn heartbeat_mode(pid: i32) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/4")).ok()?;
    Some(meta.permissions().mode() & 0o777)
}

/// `--timeout 2`: a worker that stops heartbeating (`GET /stall`) is aborted after the timeout and
/// replaced, counted as exit reason `timeout` and restart reason `chld`; the worker that keeps heartbeating is left alone.
#[test]
fn silent_worker_is_killed_after_the_timeout() {
    let mut m = Master::start(Options::workers(2).arg("--timeout").arg("2"));
    let before = m.wait_workers(2);
    // Both workers must have heartbeated once, or the master does not supervise them.
    // The example toggles the file's mode 0600/0400; 0400 means it has heartbeated twice.
    m.wait_for("the first heartbeats", |_| {
        before
            .iter()
            .all(|pid| heartbeat_mode(*pid) == Some(0o400))
            .then_some(())
    });
    let answer = m.get("/stall").expect("GET /stall");
    let stalled = answer
        .split("heartbeat stopped in pid ")
        .nth(1)
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
    let since = Instant::now();
    let other = *before.iter().find(|p| **p != stalled).expect("two workers");
    let after = m.wait_for("the stalled worker to be replaced", |m| {
        let now = m.workers();
        (now.len() == 2 && !now.contains(&stalled)).then_some(now)
    });
    assert!(
        since.elapsed() >= Duration::from_secs(2),
        "killed after {:?}, before --timeout 2",
        since.elapsed()
    );
    assert!(after.contains(&other), "the heartbeating worker survives");
    m.wait_sample("gunicorn_master_worker_restart_total{reason=\"chld\"}", 1.0);
    m.wait_sample(
        "gunicorn_master_worker_exits_total{reason=\"timeout\"}",
        1.0,
    );
    assert!(
        m.log().contains(&format!("WORKER TIMEOUT (pid:{stalled})")),
        "{}",
        m.log()
    );
    assert!(running(other));
}

/// A stuck worker that does not die of SIGABRT (here: stopped, so the ABRT stays pending) gets
/// SIGKILL after it, and is replaced and counted as a timeout all the same.
#[test]
fn worker_surviving_abort_is_killed() {
    let mut m = Master::start(Options::workers(1).arg("--timeout").arg("1"));
    let before = m.wait_workers(1);
    m.wait_for("the first heartbeats", |_| {
        (heartbeat_mode(before[0]) == Some(0o400)).then_some(())
    });
    let answer = m.get("/stall").expect("GET /stall");
    assert!(answer.contains("heartbeat stopped"), "{answer}");
    kill(Pid::from_raw(before[0]), Signal::SIGSTOP).expect("SIGSTOP the stalled worker");
    m.wait_for("the stopped worker to be replaced", |m| {
        let now = m.workers();
        (now.len() == 1 && now[0] != before[0]).then_some(())
    });
    assert!(!running(before[0]));
    let log = m.log();
    let abort = log.find(&format!("WORKER TIMEOUT (pid:{})", before[0]));
    let kill_line = log.find(&format!(
        "Worker (pid:{}) survived SIGABRT; sending SIGKILL",
        before[0]
    ));
    assert!(
        matches!((abort, kill_line), (Some(a), Some(k)) if a < k),
        "ABRT then KILL expected in the log:\n{log}"
    );
    m.wait_sample(
        "gunicorn_master_worker_exits_total{reason=\"timeout\"}",
        1.0,
    );
}

/// The series of `family` in `text` whose labels contain `pid="<pid>"`.
fn series_of_pid(text: &str, family: &str, pid: i32) -> usize {
    let needle = format!("pid=\"{pid}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&needle))
        .count()
}

/// Sum of the samples of `family` (every label set).
fn family_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A worker's `liveall` gauges (example-axum's memory gauge, one series per pid) vanish from the
/// master's `/metrics` as soon as the master has reaped it, while its counters stay in the total.
#[test]
fn dead_workers_live_gauges_vanish_and_counters_stay() {
    let axum = common::master_bin()
        .parent()
        .expect("target dir")
        .join("example-axum");
    assert!(
        axum.is_file(),
        "{} is missing: `cargo build --workspace --bins` first (.ci/test does)",
        axum.display()
    );
    let mut m = Master::start(Options::workers(2).worker_binary(&axum));
    let before = m.wait_workers(2);
    for _ in 0..6 {
        let r = m.get("/").expect("GET /");
        assert!(
            r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"),
            "{r}"
        );
    }
    let family = "gunicorn_worker_memory_bytes";
    let counted = m.wait_for("both workers' memory gauges and their requests", |m| {
        let text = m.metrics().ok()?;
        let gauges = before.iter().all(|p| series_of_pid(&text, family, *p) == 1);
        let n = family_sum(&text, "gunicorn_worker_requests_total");
        (gauges && n >= 6.0).then_some(n)
    });

    let victim = before[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill the worker");
    let reaped = m.wait_for("the killed worker to be reaped", |m| {
        (!m.workers().contains(&victim) && !running(victim)).then(Instant::now)
    });
    let text = m.wait_for("a scrape without the dead worker's gauge", |m| {
        let text = m.metrics().ok()?;
        (series_of_pid(&text, family, victim) == 0).then_some(text)
    });
    assert!(
        reaped.elapsed() < Duration::from_secs(2),
        "the dead worker's gauge stayed {:?} after it was reaped",
        reaped.elapsed()
    );
    assert_eq!(
        series_of_pid(&text, family, before[1]),
        1,
        "the living worker's gauge stays:\n{text}"
    );
    assert!(
        family_sum(&text, "gunicorn_worker_requests_total") >= counted,
        "the dead worker's requests are still counted:\n{text}"
    );
}

/// `--timeout 1` and a worker that never heartbeats (`EXAMPLE_NO_HEARTBEAT=1`, like any plain
/// socket-activated binary): it is not supervised, so for 3 s (three timeouts; this bounded wait
/// is the assertion) the same worker keeps serving, and nothing was aborted or respawned.
#[test]
fn worker_that_never_heartbeats_is_not_killed() {
    let mut m = Master::start(
        Options::workers(1)
            .arg("--timeout")
            .arg("1")
            .env("EXAMPLE_NO_HEARTBEAT", "1"),
    );
    let pid = m.wait_workers(1)[0];
    let mode = heartbeat_mode(pid).expect("the worker holds its heartbeat file at fd 4");
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            m.answering_pid().ok(),
            Some(pid),
            "the same worker serves\n{}",
            m.log()
        );
        assert_eq!(m.workers(), vec![pid]);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        heartbeat_mode(pid),
        Some(mode),
        "it never touched its heartbeat file"
    );
    assert_eq!(m.sample("gunicorn_master_worker_spawns_total"), Some(1.0));
    assert_eq!(
        m.sample("gunicorn_master_worker_exits_total{reason=\"timeout\"}"),
        Some(0.0),
        "the exit reasons exist from the start, at 0"
    );
    assert!(!m.log().contains("WORKER TIMEOUT"), "{}", m.log());
}

/// The master's resource gauges: `gunicorn_master_memory_bytes` > 0, and one
/// `gunicorn_master_worker_memory_bytes{worker_id,pid}` > 0 per live worker, for exactly the
/// live workers (a TTIN'd worker appears, a killed one's series goes).
#[test]
fn memory_gauges_cover_the_master_and_each_live_worker() {
    fn worker_memory(text: &str) -> BTreeMap<i32, (u64, f64)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("gunicorn_master_worker_memory_bytes{"))
            .filter_map(|l| {
                let (labels, value) = l.split_once("} ")?;
                let label = |k: &str| {
                    labels
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                        .and_then(|v| v.strip_suffix('"'))
                };
                Some((
                    label("pid")?.parse().ok()?,
                    (
                        label("worker_id")?.parse().ok()?,
                        value.trim().parse().ok()?,
                    ),
                ))
            })
            .collect()
    }
    let mut m = Master::start(Options::workers(2));
    let check = |m: &mut Master, what: &str| {
        m.wait_for(what, |m| {
            let text = m.metrics().ok()?;
            let pids = m.workers();
            let mem = worker_memory(&text);
            let master = common::sample(&text, "gunicorn_master_memory_bytes")?;
            let each = pids.iter().all(|p| {
                mem.get(p)
                    .is_some_and(|(id, v)| Some(*id) == common::worker_id(*p) && *v > 0.0)
            });
            (master > 0.0 && each && mem.len() == pids.len()).then_some(pids)
        })
    };
    let two = check(&mut m, "memory gauges of the master and 2 workers");
    m.signal(Signal::SIGTTIN);
    m.wait_workers(3);
    let three = check(&mut m, "memory gauges of 3 workers");
    assert!(two.iter().all(|p| three.contains(p)));
    kill(Pid::from_raw(two[0]), Signal::SIGKILL).expect("kill a worker");
    m.wait_for("the killed worker to be replaced", |m| {
        let now = m.workers();
        (now.len() == 3 && !now.contains(&two[0])).then_some(())
    });
    let after = check(&mut m, "memory gauges of the 3 workers after a kill");
    let text = m.metrics().expect("scrape");
    assert!(
        !worker_memory(&text).contains_key(&two[0]),
        "the killed worker's series is gone:\n{text}"
    );
    assert_eq!(after.len(), 3);
}

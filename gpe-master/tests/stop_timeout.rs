//! Workers told to stop that do not (`example-socket-activated` with `EXAMPLE_IGNORE_SIGNALS`):
//! the real `gpe-master` SIGKILLs them once `--graceful-timeout` has passed, after a HUP as at
//! its own TERM/INT/QUIT (gunicorn's "wait up to graceful_timeout, then KILL the rest"). While it
//! waits, its `/metrics` still serves, which is where the stop signals are seen counted.

mod common;

use std::time::{Duration, Instant};

use common::{running, Master, Options, PATIENCE};
use nix::sys::signal::Signal;

const GRACE: Duration = Duration::from_secs(3);

/// HUP with a worker that ignores TERM: the replacement starts at once, the old worker is
/// SIGKILLed no sooner than `--graceful-timeout 3` after the HUP (and not much later), counted as
/// exit reason `graceful_timeout` and as one `hup` restart.
#[test]
fn hup_kills_an_old_worker_that_ignores_term_after_the_graceful_timeout() {
    let mut m = Master::start(
        Options::workers(1)
            .arg("--graceful-timeout")
            .arg("3")
            .env("EXAMPLE_IGNORE_SIGNALS", "term"),
    );
    let old = m.wait_workers(1)[0];
    m.signal(Signal::SIGHUP);
    let sent = Instant::now();
    let new = m.wait_for("the replacement worker", |m| {
        m.workers().into_iter().find(|p| *p != old)
    });
    let gone = m.wait_for_within(GRACE + PATIENCE, "the old worker to be killed", |_| {
        (!running(old)).then(|| sent.elapsed())
    });
    assert!(
        gone >= GRACE,
        "the old worker died {gone:?} after HUP, before --graceful-timeout 3\n{}",
        m.log()
    );
    assert!(
        gone < GRACE + Duration::from_secs(8),
        "the old worker was killed only {gone:?} after HUP\n{}",
        m.log()
    );
    m.wait_sample(
        "gunicorn_master_worker_exits_total{reason=\"graceful_timeout\"}",
        1.0,
    );
    m.wait_sample("gunicorn_master_worker_restart_total{reason=\"hup\"}", 1.0);
    assert_eq!(
        m.sample("gunicorn_master_worker_restart_total{reason=\"chld\"}"),
        Some(0.0),
        "killing a retired worker is not a respawn"
    );
    assert_eq!(m.wait_workers(1), vec![new], "the new worker stays");
    assert!(
        m.log().contains(&format!(
            "Worker (pid:{old}) did not exit within --graceful-timeout 3s"
        )),
        "{}",
        m.log()
    );
    assert!(m.answering_pids(1).contains(&new));
}

/// TERM to the master with workers that ignore TERM: while it waits out `--graceful-timeout 3`
/// its `/metrics` counts the TERM; then it SIGKILLs them, exits 0, removes its pidfile, and no
/// worker is left.
#[test]
fn term_kills_workers_that_ignore_it_and_exits_0() {
    stop_with_ignoring_workers(Signal::SIGTERM, "term", "term");
}

/// INT and QUIT (fast stop: the master sends QUIT) with workers that ignore QUIT: the same, and
/// `/metrics` counts the INT or QUIT while the master waits.
#[test]
fn int_and_quit_kill_workers_that_ignore_quit_and_exit_0() {
    stop_with_ignoring_workers(Signal::SIGINT, "int", "quit,int");
    stop_with_ignoring_workers(Signal::SIGQUIT, "quit", "quit,int");
}

fn stop_with_ignoring_workers(sig: Signal, name: &str, ignore: &str) {
    let mut m = Master::start(
        Options::workers(2)
            .arg("--graceful-timeout")
            .arg("3")
            .env("EXAMPLE_IGNORE_SIGNALS", ignore),
    );
    let pids = m.wait_workers(2);
    let series = format!("gunicorn_master_signals_total{{signal=\"{name}\"}}");
    assert_eq!(m.sample(&series), None, "{sig}: not sent yet");
    m.signal(sig);
    let sent = Instant::now();
    // The stop signal exits the master, so its count can only be seen during the wait.
    let counted = m.wait_for(&format!("{series} during the stop"), |m| {
        (m.sample(&series) == Some(1.0)).then(|| sent.elapsed())
    });
    assert!(
        counted < GRACE,
        "{sig}: counted only after {counted:?}: was the count seen before the kill?"
    );
    assert!(
        pids.iter().all(|p| running(*p)),
        "{sig}: the workers ignore it, so they are still running during the wait"
    );
    let status = m.wait_exit(GRACE + PATIENCE);
    let took = sent.elapsed();
    assert!(
        status.success(),
        "{sig}: exit 0 expected, got {status}\n{}",
        m.log()
    );
    assert!(
        took >= GRACE,
        "{sig}: the master exited after {took:?}, before --graceful-timeout 3"
    );
    common::wait_gone(
        &pids,
        Duration::from_secs(2),
        &format!("{sig}: the killed workers to be gone"),
    );
    assert!(!m.pidfile.exists(), "{sig}: the pidfile is removed");
    let log = m.log();
    for pid in &pids {
        assert!(
            log.contains(&format!(
                "Worker (pid:{pid}) did not exit within --graceful-timeout 3s"
            )),
            "{sig}: {log}"
        );
    }
    assert!(log.contains("Shutting down: Master"), "{sig}: {log}");
}

//! Signals to the real `gpe-master` (as gunicorn's arbiter): TTIN/TTOU resize the pool and stop
//! the oldest worker first, HUP replaces every worker without failing a request, INT/QUIT stop
//! fast.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{running, worker_id, Master, Options, PATIENCE};
use gpe_core::worker::env::WORKER_ID;
use nix::sys::signal::Signal;

fn ids(pids: &[i32]) -> BTreeMap<u64, i32> {
    pids.iter()
        .map(|p| {
            let id = worker_id(*p).unwrap_or_else(|| panic!("{WORKER_ID} of worker {p}"));
            (id, *p)
        })
        .collect()
}

/// TTIN adds a worker; TTOU removes the oldest; TTOU at one worker keeps one; each signal counted.
#[test]
fn ttin_ttou_resize_the_pool_oldest_first() {
    let mut m = Master::start(Options::workers(3));
    let three = m.wait_workers(3);

    m.signal(Signal::SIGTTIN);
    let four = m.wait_workers(4);
    let added: Vec<i32> = four
        .iter()
        .copied()
        .filter(|p| !three.contains(p))
        .collect();
    assert_eq!(
        added.len(),
        1,
        "TTIN adds exactly one worker: {three:?} -> {four:?}"
    );
    assert_eq!(worker_id(added[0]), Some(4));
    m.wait_sample("gunicorn_master_signals_total{signal=\"ttin\"}", 1.0);
    m.wait_for("the new worker to answer", |m| {
        (0..20)
            .any(|_| m.answering_pid().ok() == Some(added[0]))
            .then_some(())
    });

    let by_age = ids(&four);
    let oldest = *by_age.values().next().expect("four workers");
    m.signal(Signal::SIGTTOU);
    let after = m.wait_workers(3);
    let expected: Vec<i32> = four.iter().copied().filter(|p| *p != oldest).collect();
    assert_eq!(
        after, expected,
        "TTOU stops the oldest worker (ages {by_age:?})"
    );
    m.wait_sample("gunicorn_master_signals_total{signal=\"ttou\"}", 1.0);
    m.wait_sample(
        "gunicorn_master_worker_exits_total{reason=\"graceful\"}",
        1.0,
    );

    // Down to one, always dropping the oldest: the youngest (worker 4) is the survivor.
    for (n, left) in [(2.0, 2), (3.0, 1)] {
        m.signal(Signal::SIGTTOU);
        m.wait_sample("gunicorn_master_signals_total{signal=\"ttou\"}", n);
        m.wait_workers(left);
    }
    assert_eq!(
        m.workers(),
        vec![added[0]],
        "the youngest worker is the last one"
    );

    // TTOU at one worker does nothing: a following TTIN then makes two, not one.
    m.signal(Signal::SIGTTOU);
    m.wait_sample("gunicorn_master_signals_total{signal=\"ttou\"}", 4.0);
    m.signal(Signal::SIGTTIN);
    m.wait_sample("gunicorn_master_signals_total{signal=\"ttin\"}", 2.0);
    let two = m.wait_workers(2);
    assert!(two.contains(&added[0]), "the last worker was never stopped");
    assert_eq!(
        m.sample("gunicorn_master_worker_exits_total{reason=\"graceful\"}"),
        Some(3.0)
    );
    // No worker was replaced: a resize is not a restart.
    assert_eq!(
        m.sample("gunicorn_master_worker_spawns_total"),
        Some(5.0),
        "3 + TTIN + TTIN"
    );
    for reason in ["hup", "chld"] {
        assert_eq!(
            m.sample(&format!(
                "gunicorn_master_worker_restart_total{{reason=\"{reason}\"}}"
            )),
            Some(0.0),
            "a resize is not a restart ({reason})"
        );
    }
}

/// Whether `sig` is pending for the whole process `pid` (`ShdPnd` in `/proc/PID/status`).
fn pending(pid: i32, sig: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    mask & (1 << (sig as i32 - 1)) != 0
}

/// Send `n` TTINs to the master, each once the previous one was delivered (the kernel merges a
/// signal sent while the same one is still pending).
fn ttins_one_by_one(m: &mut Master, n: usize) {
    for _ in 0..n {
        m.signal(Signal::SIGTTIN);
        m.wait_for("the TTIN to be delivered", |m| {
            (!pending(m.pid(), Signal::SIGTTIN)).then_some(())
        });
    }
}

/// Two TTIN delivered before the master's loop gets to them are each acted on (gunicorn queues
/// them), not merged into one. (The kernel itself merges a signal sent while the same one is
/// still pending, so the test waits for the first to be delivered before sending the second.)
#[test]
fn ttin_twice_in_a_row_adds_two_workers() {
    let mut m = Master::start(Options::workers(1));
    m.wait_workers(1);
    ttins_one_by_one(&mut m, 2);
    m.wait_sample("gunicorn_master_signals_total{signal=\"ttin\"}", 2.0);
    m.wait_workers(3);
}

/// HUP: every worker is replaced by a new one, and requests sent all along never fail.
#[test]
fn hup_replaces_every_worker_without_failed_requests() {
    let mut m = Master::start(Options::workers(2));
    let old = m.wait_workers(2);

    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (ok, failures, seen, stop) = (ok.clone(), failures.clone(), seen.clone(), stop.clone());
        let addr = m.addr;
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 5000 && Instant::now() < deadline {
                sent += 1;
                match common::http_get(addr, "/", Duration::from_secs(10)) {
                    Ok(r) if r.starts_with("HTTP/1.1 200") => {
                        if let Some(pid) = common::pid_in(&r) {
                            seen.lock().unwrap().insert(pid);
                        }
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.lock().unwrap().push(r),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        })
    };
    m.wait_for("requests before the reload", |_| {
        (ok.load(Ordering::SeqCst) >= 20).then_some(())
    });

    m.signal(Signal::SIGHUP);
    let new = m.wait_for("every worker to be replaced", |m| {
        let now = m.workers();
        (now.len() == 2 && now.iter().all(|p| !old.contains(p))).then_some(now)
    });
    m.wait_sample("gunicorn_master_reloads_total", 1.0);
    m.wait_sample("gunicorn_master_worker_restart_total{reason=\"hup\"}", 2.0);
    m.wait_sample("gunicorn_master_workers", 2.0);
    assert_eq!(
        m.sample("gunicorn_master_worker_restart_total{reason=\"chld\"}"),
        Some(0.0),
        "the reload's retired workers are not respawns"
    );
    assert!(old.iter().all(|p| !running(*p)), "old workers are gone");
    let mut slots: Vec<u64> = new.iter().map(|p| worker_id(*p).expect("id")).collect();
    slots.sort_unstable();
    assert_eq!(
        slots,
        vec![1, 2],
        "the new workers take the slots (GPE_WORKER_ID) of the workers they replace"
    );

    let at_reload = ok.load(Ordering::SeqCst);
    m.wait_for("requests after the reload", |_| {
        let served_by_new = seen.lock().unwrap().iter().any(|p| new.contains(p));
        (ok.load(Ordering::SeqCst) >= at_reload + 20 && served_by_new).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    client.join().expect("client thread");
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during HUP: {:?}",
        failures.len(),
        failures.len() + ok.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|p| old.contains(p) || new.contains(p)),
        "answers came only from the old and new workers: {seen:?}"
    );
}

/// INT and QUIT stop fast: the master does not wait for a 30 s in-flight request even with a
/// 20 s graceful timeout, and exits 0 without leaving workers behind.
#[test]
fn int_and_quit_stop_fast() {
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        let mut m = Master::start(Options::workers(2).arg("--graceful-timeout").arg("20"));
        let pids = m.wait_workers(2);
        let slow = m.in_flight("/sleep?ms=30000");
        let took = m.stop(sig, PATIENCE);
        assert!(
            took < Duration::from_secs(8),
            "{sig}: a fast stop took {took:?}"
        );
        let answer = slow.join().expect("client thread");
        assert!(
            !answer.as_deref().unwrap_or("").contains("slept"),
            "{sig}: the in-flight request was not waited for: {answer:?}"
        );
        common::wait_gone(
            &pids,
            Duration::from_secs(5),
            &format!("{sig}: the workers to be gone"),
        );
        assert!(!m.pidfile.exists(), "{sig}: the pidfile is removed");
    }
}

/// An INT or QUIT during a graceful TERM stop turns it quick (gunicorn ≥ 25): the master no
/// longer waits for a 30 s request under a 20 s graceful timeout.
#[test]
fn int_or_quit_during_a_graceful_stop_turns_it_quick() {
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        let mut m = Master::start(Options::workers(1).arg("--graceful-timeout").arg("20"));
        m.wait_workers(1);
        let slow = m.in_flight("/sleep?ms=30000");
        m.signal(Signal::SIGTERM);
        m.wait_for("the graceful stop to begin", |m| {
            m.log().contains("Handling signal: term").then_some(())
        });
        let took = m.stop(sig, PATIENCE);
        assert!(
            took < Duration::from_secs(8),
            "{sig} after TERM took {took:?}\n{}",
            m.log()
        );
        assert!(m.log().contains("quick shutdown"), "{}", m.log());
        let answer = slow.join().expect("client thread");
        assert!(
            !answer.as_deref().unwrap_or("").contains("slept"),
            "{sig}: the in-flight request was not waited for: {answer:?}"
        );
    }
}

/// No signal is dropped (gunicorn ≥ 24's queue is unbounded; gpe's held 5 per wake-up): ten
/// TTINs in a row add ten workers, and all ten are counted. (The kernel merges a signal sent
/// while the same one is still pending, for gunicorn too, so each is sent once the previous one
/// was delivered; the master's loop may still be busy with the earlier ones.)
#[test]
fn ten_ttins_in_a_row_add_ten_workers() {
    let mut m = Master::start(Options::workers(1));
    m.wait_workers(1);
    ttins_one_by_one(&mut m, 10);
    m.wait_workers(11);
    m.wait_sample(r#"gunicorn_master_signals_total{signal="ttin"}"#, 10.0);
}

/// When the master dies (SIGKILL, OOM), its workers get a graceful stop, not SIGKILL: a request
/// in flight is answered, then the worker exits by itself.
#[test]
fn a_dead_masters_workers_finish_their_requests() {
    let mut m = Master::start(Options::workers(1));
    let worker = m.wait_workers(1)[0];
    let slow = m.in_flight("/sleep?ms=1500");
    m.signal(Signal::SIGKILL);
    let answer = slow
        .join()
        .expect("client thread")
        .expect("the in-flight request");
    assert!(answer.contains("slept"), "{answer:?}\n{}", m.log());
    common::eventually(
        PATIENCE,
        "the orphaned worker to exit",
        || (!running(worker)).then_some(()),
        || format!("worker {worker} still running\n{}", m.log()),
    );
}

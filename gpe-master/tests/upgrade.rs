//! USR2 (re-exec a new master that inherits the listeners) under load, and `--daemon` with
//! WINCH: the real binary, real signals.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    children, eventually, http_get, read_pid, running, stop_new_master, Master, Options, Reaper,
    PATIENCE,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Requests in a loop from another thread (bounded in count and time) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            for _ in 0..20_000 {
                if s.load(Ordering::SeqCst) || Instant::now() > end {
                    break;
                }
                match http_get(addr, "/", Duration::from_secs(10)) {
                    Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => f.lock().unwrap().push(r),
                    Err(e) => f.lock().unwrap().push(e.to_string()),
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Wait until more than 20 requests beyond those answered so far succeed (`what` names the
    /// wait).
    fn wait_for_20_more(&self, what: &str) {
        let before = self.ok.load(Ordering::SeqCst);
        eventually(
            PATIENCE,
            what,
            || (self.ok.load(Ordering::SeqCst) > before + 20).then_some(()),
            String::new,
        );
    }

    /// Stop; (successes, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (self.ok.load(Ordering::SeqCst), failed)
    }
}

#[test]
fn usr2_upgrade_under_load_loses_no_request() {
    let mut old = Master::start(Options::workers(2));
    let old_pid = old.pid();
    old.wait_workers(2);
    let load = Load::start(old.addr);
    load.wait_for_20_more("requests flowing");

    let pidfile = old.pidfile.clone();
    let new_pid = old.usr2();
    let _reaper = Reaper(new_pid);
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        read_pid(&pidfile),
        Some(old_pid),
        "the old master keeps <pidfile> while two masters run (gunicorn >= 19.6)"
    );
    old.wait_for("the new master's 2 workers", |_| {
        (children(new_pid).len() == 2).then_some(())
    });
    load.wait_for_20_more("requests while both masters serve");

    // A second USR2 while the first upgrade is in progress is ignored by both.
    let _ = kill(Pid::from_raw(new_pid), Signal::SIGUSR2);
    // The old master stops.
    old.stop(Signal::SIGTERM, PATIENCE);

    // The new master notices and takes the pidfile name.
    eventually(
        PATIENCE,
        "the new master promoted to the plain pidfile",
        || (read_pid(&pidfile) == Some(new_pid)).then_some(()),
        || old.log(),
    );
    load.wait_for_20_more("requests served by the new master alone");
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the upgrade: {:?}\n{}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)],
        old.log()
    );
    assert!(running(new_pid));
    assert_eq!(
        children(new_pid).len(),
        2,
        "the new master keeps its workers and started no third master"
    );

    // The /metrics socket was inherited too: it answers, from the new master.
    let text = http_get(old.metrics_addr, "/metrics", Duration::from_secs(10)).unwrap();
    assert!(text.contains("gunicorn_master_workers 2"), "{text}");

    stop_new_master(new_pid, || old.log());
    assert!(!pidfile.exists(), "the promoted master removes its pidfile");
}

#[test]
fn daemon_detaches_and_winch_stops_the_workers() {
    let mut launcher = Master::spawn(
        Options::workers(2)
            .arg("--daemon")
            .arg("--error-logfile")
            .arg("master.log"),
    );
    let status = launcher.wait_exit(PATIENCE);
    assert!(
        status.success(),
        "the launching process exits 0 once detached: {status}"
    );
    let pidfile = launcher.pidfile.clone();
    let daemon = eventually(
        PATIENCE,
        "the daemon's pidfile",
        || read_pid(&pidfile),
        || launcher.log(),
    );
    let _reaper = Reaper(daemon);
    assert_ne!(daemon, launcher.pid(), "the daemon is a new process");
    // A new session: the daemon leads it.
    let sid = nix::unistd::getsid(Some(Pid::from_raw(daemon))).unwrap();
    assert_eq!(
        sid.as_raw(),
        daemon,
        "the daemon runs in a session of its own"
    );
    let pids = eventually(
        PATIENCE,
        "2 workers under the daemon",
        || {
            let kids = children(daemon);
            (kids.len() == 2).then_some(kids)
        },
        || launcher.log(),
    );
    assert!(launcher.get("/").is_ok());
    // The workers' own output goes to --error-logfile, not to /dev/null.
    let log = launcher.dir.path().join("master.log");
    for pid in &pids {
        eventually(
            PATIENCE,
            "the worker's own line in --error-logfile",
            || {
                std::fs::read_to_string(&log)
                    .ok()?
                    .contains(&format!("[{pid}] serving on"))
                    .then_some(())
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    // WINCH, when daemonized: every worker stops, the master stays.
    kill(Pid::from_raw(daemon), Signal::SIGWINCH).unwrap();
    eventually(
        PATIENCE,
        "the workers to stop on WINCH",
        || {
            (children(daemon).is_empty() && launcher.sample("gunicorn_master_workers") == Some(0.0))
                .then_some(())
        },
        || launcher.log(),
    );
    assert!(pids.iter().all(|p| !running(*p)));
    assert!(running(daemon));
    // HUP brings the configured number back.
    kill(Pid::from_raw(daemon), Signal::SIGHUP).unwrap();
    eventually(
        PATIENCE,
        "2 workers after HUP",
        || (children(daemon).len() == 2).then_some(()),
        || launcher.log(),
    );

    kill(Pid::from_raw(daemon), Signal::SIGTERM).unwrap();
    eventually(
        PATIENCE,
        "the daemon to stop",
        || (!running(daemon)).then_some(()),
        || launcher.log(),
    );
    assert!(!pidfile.exists());
}

#[test]
fn winch_is_ignored_when_not_daemonized() {
    let mut m = Master::start(Options::workers(2));
    let pids = m.wait_workers(2);
    m.signal(Signal::SIGWINCH);
    m.wait_sample("gunicorn_master_signals_total{signal=\"winch\"}", 1.0);
    assert_eq!(
        m.workers(),
        pids,
        "WINCH must not touch the workers of a foreground master"
    );
}

//! The arbiter: spawns, supervises and replaces workers, acting on signals like gunicorn's.

mod reap;
mod reload;
mod retire;
mod spawn;
mod upgrade;
mod watch;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gpe_core::LivePids;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use gpe_core::worker::env::WorkerEnv;

use crate::bind::Bound;
use crate::exit::{classify, ExitReason, Known, Status};
use crate::heartbeat::{last_beat, monotonic_now, silence, Beat, Stamp};
use crate::metrics::MasterMetrics;
use crate::notices::{Notice, Notices};
use crate::reexec::PidFile;
use crate::signals::{dup_high, Signals};
use crate::systemd::Systemd;
use crate::MasterError;

/// A worker that exits unasked sooner than this after its spawn (whatever the reason: exit 0,
/// crash, killed) is a sign of a respawn loop: the next spawn is delayed, [`BACKOFF_MIN`]
/// doubling up to [`BACKOFF_MAX`]. A worker that lived longer resets the delay, so a service that
/// crashes now and then is still respawned at once. One second is well above the time a worker
/// needs to exec and fail (milliseconds), and well below any healthy worker's life.
const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// The first delay of a respawn loop.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest delay between two spawns of a respawn loop.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Dead workers' files are folded into the archive at most this often (see
/// [`Arbiter::compact_if_due`]).
const COMPACT_EVERY: Duration = Duration::from_secs(1);

/// How long workers get after an INT or QUIT turned a graceful stop quick, before KILL
/// (gunicorn ≥ 25's limit).
const QUICK_STOP_LIMIT: Duration = Duration::from_secs(2);

/// How long a killed retiring worker may take to be reaped before the master stops waiting for
/// it at exit (a process in uninterruptible sleep cannot be helped).
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// Settings the arbiter needs, resolved from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// Variables set in every worker's environment (`-e`, the access log settings), before
    /// the contract's own.
    pub(crate) env: Vec<(String, String)>,
    /// How to bind the addresses a HUP adds; `None` when the sockets are not ours to change
    /// (systemd's).
    pub(crate) rebind: Option<crate::bind::BindOptions>,
    pub(crate) workers: u32,
    pub(crate) timeout: Duration,
    pub(crate) graceful_timeout: Duration,
    pub(crate) max_requests: u64,
    pub(crate) max_requests_jitter: u64,
    pub(crate) worker_tmp_dir: PathBuf,
    pub(crate) metrics_dir: PathBuf,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    /// The workers' supplementary groups, when they change (`--initgroups`, or none for a
    /// worker that root starts as `--user`).
    pub(crate) groups: Option<Vec<u32>>,
    /// Whether the master is daemonized (WINCH only acts then, as in gunicorn).
    pub(crate) daemon: bool,
    /// Our `argv[0]` as typed and our arguments, to re-exec on USR2 (see [`crate::reexec`]).
    pub(crate) argv0: OsString,
    pub(crate) argv: Vec<OsString>,
    /// The directory we were started in (`$PWD` kept): the new master's, and where a relative
    /// `argv0` is looked up.
    pub(crate) start_dir: PathBuf,
    /// Our executable as resolved at start: re-exec'd when `argv0` no longer names one.
    pub(crate) exe: PathBuf,
}

/// The state of a USR2 upgrade (see [`crate::reexec`]).
#[derive(Debug)]
pub(crate) struct Upgrade {
    pub(crate) pidfile: Option<PidFile>,
    /// The `/metrics` listener, to hand to a new master.
    pub(crate) metrics_fd: Option<OwnedFd>,
    /// The old master, while this one is not promoted.
    pub(crate) old_master: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Graceful,
    Fast,
}

#[derive(Debug)]
struct Worker {
    /// Its rank in spawn order (gunicorn's `age`): the oldest are retired first.
    age: u64,
    /// Its `GPE_WORKER_ID` (see [`Arbiter::free_slot`]).
    slot: u64,
    spawned_at: Instant,
    heartbeat: File,
    /// The heartbeat file's times at the spawn (see [`crate::heartbeat`]).
    spawned_stamp: Stamp,
    aborted_at: Option<Instant>,
    /// When the SIGKILL that followed an ignored SIGABRT was first sent.
    killed_after_abort: Option<Instant>,
    stopping: Option<Stop>,
    /// When a worker told to stop is SIGKILLed if it has not exited (`--graceful-timeout` after
    /// the first TERM or QUIT), as gunicorn does at exit; set with `stopping`.
    stop_deadline: Option<Instant>,
    /// Whether it outlived `stop_deadline` and was sent SIGKILL.
    killed_at_deadline: bool,
    /// The reason the master replaces it for (hup), when it asked it to stop.
    replaced_for: Option<&'static str>,
    last_cpu: Option<(Instant, f64)>,
    /// It said `READY=1` (see [`Worker::is_up`]).
    ready: bool,
    /// It reached `--max-requests` and asked for a replacement: it serves on until the
    /// replacement is up, then is sent TERM (see [`Arbiter::hand_over`]).
    retiring: bool,
}

/// The master's state.
#[derive(Debug)]
pub(crate) struct Arbiter {
    settings: Settings,
    listeners: Vec<Bound>,
    workers: BTreeMap<i32, Worker>,
    num_workers: u32,
    age: u64,
    metrics: MasterMetrics,
    live: LivePids,
    signals: Signals,
    halt: Option<(i32, String)>,
    /// No spawn before this (a respawn loop is backed off).
    next_spawn: Instant,
    /// Workers that exited unasked and are not replaced yet: the next spawns are respawns
    /// (counted as `gunicorn_master_worker_restart_total{reason="chld"}`).
    respawn_due: usize,
    respawn_backoff: Duration,
    master_cpu: f64,
    on_usr1: OnUsr1,
    upgrade: Upgrade,
    /// The new master started by USR2, while it runs.
    reexec_pid: Option<i32>,
    /// The sync of this host's files to Redis, when `REDIS_ENABLED`.
    redis: Option<gpe_core::redis::SyncHandle>,
    /// The socket workers notify (`READY=1`, max-requests retirement); `None` if it could not
    /// be bound (workers are then replaced when they exit, as gunicorn does).
    notices: Option<Notices>,
    /// systemd's notification socket (see [`crate::systemd`]).
    systemd: Systemd,
    /// `READY=1` is to be sent to systemd once the configured workers are up (at start and
    /// after a HUP; not while this master waits for its promotion after a USR2).
    readiness_due: bool,
    /// When the files of reaped workers are to be compacted, if any wait.
    compaction_due: Option<Instant>,
    last_compaction: Instant,
    /// What HUP re-reads the settings with (see [`crate::reconfigure`]).
    reconfigure: Option<Reconfigure>,
    /// How many workers are up, for `/ready`.
    up: Arc<WorkersUp>,
}

/// How many workers are up against how many are configured, published by the loop for the
/// `/metrics` server's `/ready`.
#[derive(Debug, Default)]
pub(crate) struct WorkersUp {
    up: std::sync::atomic::AtomicUsize,
    want: std::sync::atomic::AtomicUsize,
}

impl WorkersUp {
    /// Ready when every configured worker is up (and at least one is configured).
    pub(crate) fn check(&self) -> Result<(), String> {
        use std::sync::atomic::Ordering::Relaxed;
        let (up, want) = (self.up.load(Relaxed), self.want.load(Relaxed));
        if want > 0 && up >= want {
            Ok(())
        } else {
            Err(format!("{up} of {want} workers up"))
        }
    }
}

/// Re-reads the settings on HUP: `None` keeps the running ones (the reason is logged).
pub(crate) struct Reconfigure(
    pub(crate) Box<dyn FnMut() -> Option<crate::reconfigure::Reconfigured>>,
);

impl std::fmt::Debug for Reconfigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reconfigure")
    }
}

/// What USR1 does besides forwarding the signal: reopen the log files.
pub(crate) struct OnUsr1(pub(crate) Box<dyn FnMut()>);

impl std::fmt::Debug for OnUsr1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<reopen logs>")
    }
}

fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() % (max + 1)
}

impl Arbiter {
    pub(crate) fn new(
        settings: Settings,
        listeners: Vec<Bound>,
        metrics: MasterMetrics,
        live: LivePids,
        signals: Signals,
        on_usr1: OnUsr1,
        upgrade: Upgrade,
    ) -> Arbiter {
        Arbiter {
            readiness_due: upgrade.old_master.is_none(),
            compaction_due: None,
            last_compaction: Instant::now(),
            reconfigure: None,
            up: Arc::default(),
            num_workers: settings.workers,
            settings,
            listeners,
            workers: BTreeMap::new(),
            age: 0,
            metrics,
            live,
            signals,
            halt: None,
            next_spawn: Instant::now(),
            respawn_backoff: Duration::ZERO,
            respawn_due: 0,
            master_cpu: 0.0,
            on_usr1,
            upgrade,
            reexec_pid: None,
            redis: None,
            systemd: Systemd::silent(),
            notices: match Notices::bind() {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "no notification socket for workers: a worker leaving for --max-requests is replaced only once it exits");
                    None
                }
            },
        }
    }

    /// Tell systemd about readiness, reloads, stops and upgrades.
    /// Publish how many workers are up in `up` (for `/ready`).
    pub(crate) fn with_workers_up(mut self, up: Arc<WorkersUp>) -> Arbiter {
        self.up = up;
        self
    }

    /// Count the workers that are up for `/ready`.
    fn publish_up(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let up = self
            .workers
            .values()
            .filter(|w| w.counts() && w.is_up())
            .count();
        self.up.up.store(up, Relaxed);
        self.up.want.store(self.num_workers as usize, Relaxed);
        self.metrics
            .workers_up
            .set(i64::try_from(up).unwrap_or(i64::MAX));
        self.metrics
            .workers_desired
            .set(i64::from(self.num_workers));
    }

    /// Re-read the settings on HUP with `reconfigure`.
    pub(crate) fn with_reconfigure(mut self, reconfigure: Reconfigure) -> Arbiter {
        self.reconfigure = Some(reconfigure);
        self
    }

    pub(crate) fn with_systemd(mut self, systemd: Systemd) -> Arbiter {
        self.systemd = systemd;
        self
    }

    /// Sync the store to Redis; flushed after each reap, before compaction.
    pub(crate) fn with_redis(mut self, sync: Option<gpe_core::redis::SyncHandle>) -> Arbiter {
        self.redis = sync;
        self
    }

    /// Run until stopped; returns the process exit code.
    pub(crate) fn run(&mut self) -> i32 {
        self.manage_workers();
        loop {
            self.reap();
            self.check_promotion();
            if let Some((code, why)) = self.halt.take() {
                tracing::error!("{why}");
                // As gunicorn's halt: the other workers stop gracefully.
                self.stop(Stop::Graceful);
                return code;
            }
            self.read_notices();
            for (sig, name) in self.signals.take() {
                self.metrics.signals.with_label_values(&[name]).inc();
                if sig != libc_sig::CHLD {
                    tracing::info!("Handling signal: {name}");
                }
                match sig {
                    libc_sig::TERM => {
                        self.stop(Stop::Graceful);
                        return 0;
                    }
                    libc_sig::INT | libc_sig::QUIT => {
                        self.stop(Stop::Fast);
                        return 0;
                    }
                    libc_sig::HUP => self.reload(),
                    libc_sig::TTIN => self.num_workers += 1,
                    libc_sig::TTOU if self.num_workers > 1 => self.num_workers -= 1,
                    libc_sig::USR1 => {
                        (self.on_usr1.0)();
                        self.signal_all(Signal::SIGUSR1);
                    }
                    libc_sig::USR2 => self.reexec(),
                    libc_sig::WINCH if self.settings.daemon => {
                        // gunicorn: stop the workers, keep the master (for a USR2 upgrade).
                        tracing::info!("graceful stop of workers");
                        self.num_workers = 0;
                        self.manage_workers();
                    }
                    libc_sig::WINCH => {
                        tracing::debug!("SIGWINCH ignored: not daemonized");
                    }
                    _ => {} // CHLD: reaped at the top of the loop.
                }
            }
            self.reap();
            self.compact_if_due();
            self.read_notices();
            self.murder_workers();
            self.kill_overdue();
            self.manage_workers();
            self.hand_over();
            self.announce_ready();
            self.publish_up();
            self.sample();
            let notices = self.notices.as_ref().map(AsFd::as_fd);
            self.signals.wait(self.sleep_time(), notices);
        }
    }

    /// How long the loop may sleep: 1 s, or until a backed-off spawn or the SIGKILL of an overdue
    /// retiring worker is due if that is sooner (no signal wakes the loop for them).
    fn sleep_time(&self) -> Duration {
        let tick = Duration::from_secs(1);
        let now = Instant::now();
        let spawn_due = (self.live_count() < self.num_workers as usize).then_some(self.next_spawn);
        let kill_due = self
            .workers
            .values()
            .filter(|w| !w.killed_at_deadline)
            .filter_map(|w| w.stop_deadline)
            .min();
        // A worker that never says it is up counts as up [`MIN_LIFETIME`] after its spawn; a
        // retiring worker waits for that moment.
        let handover_due = (self.readiness_due
            || self
                .workers
                .values()
                .any(|w| w.retiring && w.stopping.is_none()))
        .then(|| {
            self.workers
                .values()
                .filter(|w| !w.ready && w.stopping.is_none() && !w.retiring)
                .map(|w| w.spawned_at + MIN_LIFETIME)
                .min()
        })
        .flatten();
        match spawn_due
            .into_iter()
            .chain(kill_due)
            .chain(handover_due)
            .chain(self.compaction_due)
            .min()
        {
            Some(due) => due
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(10), tick),
            None => tick,
        }
    }

    fn signal_all(&self, sig: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }

    /// The slot for a new worker: the smallest one no worker that stays holds (a worker told to
    /// stop, retiring, or being replaced by a reload gives its slot up), so a replacement takes
    /// the slot of the worker it replaces and slots stay within the largest pool size.
    fn free_slot(&self) -> u64 {
        let held: std::collections::BTreeSet<u64> = self
            .workers
            .values()
            .filter(|w| w.counts() && w.replaced_for.is_none())
            .map(|w| w.slot)
            .collect();
        (1..).find(|n| !held.contains(n)).unwrap_or(1)
    }

    /// Workers that count towards `--workers`: neither told to stop nor retiring.
    fn live_count(&self) -> usize {
        self.workers.values().filter(|w| w.counts()).count()
    }

    /// Spawn missing workers; stop the oldest extra ones.
    fn manage_workers(&mut self) {
        if self.halt.is_some() {
            return; // a boot error was just reaped: the loop halts, nothing is respawned.
        }
        let want = self.num_workers as usize;
        while self.live_count() < want {
            if Instant::now() < self.next_spawn {
                break;
            }
            if !self.spawn_worker() {
                break;
            }
            if self.respawn_due > 0 {
                self.respawn_due -= 1;
                self.metrics.restarts.with_label_values(&["chld"]).inc();
            }
        }
        // An exited worker whose slot is gone (TTOU, WINCH, a reload) is not replaced.
        self.respawn_due = self.respawn_due.min(want.saturating_sub(self.live_count()));
        let running: Vec<(u64, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.counts())
            .map(|(pid, w)| (w.age, *pid))
            .collect();
        if running.len() > want {
            let mut by_age = running;
            by_age.sort_unstable();
            let graceful = self.settings.graceful_timeout;
            for (_, pid) in by_age.into_iter().take(self.live_count() - want) {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.retire(pid, Stop::Graceful, graceful);
                }
            }
        }
        self.metrics.workers.set(self.live_count() as i64);
    }

    fn spawn_worker(&mut self) -> bool {
        match self.try_spawn() {
            Ok(pid) => {
                tracing::info!("Booting worker with pid: {pid}");
                true
            }
            Err(e) => {
                self.halt = Some((1, format!("cannot start a worker: {e}")));
                false
            }
        }
    }

    /// Stop every worker (TERM or QUIT), wait up to the graceful timeout, then KILL. An INT or
    /// QUIT during a graceful stop turns it quick, as in gunicorn ≥ 25: QUIT to every worker,
    /// and KILL [`QUICK_STOP_LIMIT`] later at most.
    fn stop(&mut self, mut how: Stop) {
        match self.reexec_pid {
            // A USR2 upgrade: the new master carries the unit on.
            Some(new) => self.systemd.main_pid(new),
            None if self.upgrade.old_master.is_none() => self.systemd.stopping(),
            None => {} // an unpromoted new master (a rollback): the old one is the unit's
        }
        let graceful = self.settings.graceful_timeout;
        for (pid, w) in &mut self.workers {
            w.retire(*pid, how, graceful);
        }
        let mut give_up = Instant::now() + graceful + REAP_AFTER_KILL;
        while !self.workers.is_empty() && Instant::now() < give_up {
            self.reap();
            if self.workers.is_empty() {
                break;
            }
            self.kill_overdue();
            // Signals sent during the stop are counted; only a quick stop is acted on (the
            // master is exiting).
            for (sig, name) in self.signals.take() {
                self.metrics.signals.with_label_values(&[name]).inc();
                if how == Stop::Graceful && matches!(sig, libc_sig::INT | libc_sig::QUIT) {
                    tracing::info!("Handling signal: {name}: quick shutdown");
                    how = Stop::Fast;
                    let limit = Instant::now() + QUICK_STOP_LIMIT;
                    for (pid, w) in &mut self.workers {
                        w.retire(*pid, Stop::Fast, graceful);
                        w.stop_deadline = w.stop_deadline.map(|d| d.min(limit));
                    }
                    give_up = give_up.min(limit + REAP_AFTER_KILL);
                }
            }
            self.signals.wait(Duration::from_millis(50), None);
        }
        if !self.workers.is_empty() {
            tracing::warn!(
                left = self.workers.len(),
                "workers still not reaped {}s after SIGKILL; exiting without them",
                REAP_AFTER_KILL.as_secs()
            );
        }
        tracing::info!("Shutting down: Master");
    }
}

impl Worker {
    /// Whether it counts towards `--workers`: neither told to stop nor retiring.
    fn counts(&self) -> bool {
        self.stopping.is_none() && !self.retiring
    }

    /// Whether it serves: it said `READY=1`, or has lived [`MIN_LIFETIME`] (a worker that does
    /// not speak the notification protocol).
    fn is_up(&self) -> bool {
        self.ready || self.spawned_at.elapsed() >= MIN_LIFETIME
    }

    /// Tell the worker to stop (TERM for graceful, QUIT for fast); the first time, start its
    /// `--graceful-timeout` after which [`Arbiter::kill_overdue`] SIGKILLs it.
    fn retire(&mut self, pid: i32, how: Stop, graceful: Duration) {
        let sig = match how {
            Stop::Graceful => Signal::SIGTERM,
            Stop::Fast => Signal::SIGQUIT,
        };
        if self.stop_deadline.is_none() {
            self.stop_deadline = Some(Instant::now() + graceful);
        }
        self.stopping = Some(how);
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

impl Drop for Arbiter {
    fn drop(&mut self) {
        if let Some(sync) = self.redis.take() {
            if let Err(e) = sync.shutdown() {
                tracing::warn!(error = %e, "final Redis flush failed; Redis misses the last values");
            }
        }
        if self.reexec_pid.is_some() || self.upgrade.old_master.is_some() {
            // Another master still serves our unix sockets (the new one we started, or the old
            // one while we are not promoted: TERM to us is the rollback): leave the files, as
            // gunicorn's stop() does unless master_pid == reexec_pid == 0.
            for l in &mut self.listeners {
                l.keep_path();
            }
        }
        if let Some(p) = &self.upgrade.pidfile {
            p.remove();
        }
    }
}

/// Signal numbers as constants usable in patterns.
mod libc_sig {
    pub(super) const HUP: i32 = signal_hook::consts::SIGHUP;
    pub(super) const TERM: i32 = signal_hook::consts::SIGTERM;
    pub(super) const INT: i32 = signal_hook::consts::SIGINT;
    pub(super) const QUIT: i32 = signal_hook::consts::SIGQUIT;
    pub(super) const TTIN: i32 = signal_hook::consts::SIGTTIN;
    pub(super) const TTOU: i32 = signal_hook::consts::SIGTTOU;
    pub(super) const USR1: i32 = signal_hook::consts::SIGUSR1;
    pub(super) const USR2: i32 = signal_hook::consts::SIGUSR2;
    pub(super) const WINCH: i32 = signal_hook::consts::SIGWINCH;
    pub(super) const CHLD: i32 = signal_hook::consts::SIGCHLD;
}

//! The process side of a running worker: the signal flags, the watchdog thread (heartbeat, stop
//! flags, the sync kind's stuck-job check), max-requests and the stop record.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::jobs::JobMetrics;
use super::outcome::IntoOutcome;
use super::{Kind, Options};
use crate::error::Error;
use crate::store::Store;
use crate::worker::lifecycle::{StopReason, StopRecord};
use crate::worker::metrics::{SamplerHandle, WorkerMetrics};
use crate::worker::{Listener, WorkerContext};

/// Shared state of a running worker: the context, the stop flags, the job count and the worker
/// resource metrics.
#[derive(Debug)]
pub(super) struct Supervisor {
    /// `None` for a [`JobLoop`] outside a worker process.
    ctx: Option<WorkerContext>,
    kind: Kind,
    max_requests: u64,
    timeout: Duration,
    pub(super) metrics: JobMetrics,
    _sampler: Option<SamplerHandle>,
    /// TERM (graceful).
    term: Arc<AtomicBool>,
    /// QUIT or INT (fast).
    quit: Arc<AtomicBool>,
    /// ABRT: the master's heartbeat timeout.
    abort: Arc<AtomicBool>,
    /// The max-requests limit was reached (the first job to see it decides what follows).
    limit_hit: AtomicBool,
    /// When the master was asked for a replacement at the limit: the worker serves on until
    /// its TERM, or stops by itself the graceful timeout later.
    retire_asked: OnceLock<Instant>,
    /// Stop for max-requests now (graceful).
    max_reached: AtomicBool,
    /// The parent changed (graceful).
    orphaned: AtomicBool,
    /// Records the stop in the worker metrics, once per stage.
    pub(super) stops: StopRecord,
    /// Sync kind: a job is running (the watchdog times it by the `handled()` count it sees).
    busy: AtomicBool,
}

/// The flags the signal handlers set.
#[derive(Debug, Default)]
pub(super) struct Signals {
    term: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

/// How often the watchdog thread looks at the stop flags and the heartbeat.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// How often the worker resource sampler samples memory, CPU and uptime.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

impl Supervisor {
    pub(super) fn start(options: &Options) -> Result<Arc<Supervisor>, ExitCode> {
        let ctx = match WorkerContext::from_env() {
            Ok(ctx) => ctx,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the worker environment");
                return Err(ExitCode::from(3));
            }
        };
        // Handlers first: once the metrics files exist (what a test or the master can see), a
        // signal is no longer the default action.
        let signals = Signals::default();
        for (sig, flag) in [
            (signal_hook::consts::SIGTERM, &signals.term),
            (signal_hook::consts::SIGQUIT, &signals.quit),
            (signal_hook::consts::SIGINT, &signals.quit),
            (signal_hook::consts::SIGABRT, &signals.abort),
        ] {
            if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
                tracing::error!(error = %e, signal = sig, "cannot install a signal handler");
                return Err(ExitCode::from(3));
            }
        }
        // USR1 is forwarded by the master to reopen log files; these workers log to stderr
        // only, but the signal must not kill them (its default action).
        if let Err(e) = signal_hook::flag::register(
            signal_hook::consts::SIGUSR1,
            Arc::new(AtomicBool::new(false)),
        ) {
            tracing::warn!(error = %e, "cannot install the USR1 handler");
        }
        let store = match Store::from_env() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the metrics store");
                return Err(ExitCode::from(3));
            }
        };
        let worker_id = ctx.worker_id().to_string();
        let (max_requests, timeout) = (ctx.max_requests(), ctx.timeout());
        let mut sup = match Supervisor::build(
            options,
            &store,
            &worker_id,
            Some(ctx),
            max_requests,
            timeout,
            signals,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot register the worker metrics");
                return Err(ExitCode::from(3));
            }
        };
        sup._sampler = match sup.stops.worker().spawn_sampler(SAMPLE_INTERVAL) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no worker resource sampler");
                None
            }
        };
        tracing::info!(worker = %options.name, worker_id = %worker_id, pid = std::process::id(), kind = ?options.kind, "Booting worker");
        let sup = Arc::new(sup);
        sup.notify();
        if let Some(master) = sup.ctx.as_ref().and_then(WorkerContext::master_link) {
            master.ready();
        }
        let watched = Arc::clone(&sup);
        let spawned = std::thread::Builder::new()
            .name("gpe-watchdog".to_owned())
            .spawn(move || watched.watch());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the watchdog thread");
            return Err(ExitCode::from(3));
        }
        Ok(sup)
    }

    /// The per-process state, without the process-level parts (signals, watchdog, sampler).
    pub(super) fn build(
        options: &Options,
        store: &Store,
        worker_id: &str,
        ctx: Option<WorkerContext>,
        max_requests: u64,
        timeout: Duration,
        signals: Signals,
    ) -> Result<Supervisor, Error> {
        let metrics = JobMetrics::new(options, store, worker_id)?;
        let worker = WorkerMetrics::with_labels(
            store,
            &format!("{}worker_", options.prefix),
            &options.const_labels,
            worker_id,
        )?;
        Ok(Supervisor {
            ctx,
            kind: options.kind,
            max_requests,
            timeout,
            metrics,
            _sampler: None,
            term: signals.term,
            quit: signals.quit,
            abort: signals.abort,
            limit_hit: AtomicBool::new(false),
            retire_asked: OnceLock::new(),
            max_reached: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            stops: StopRecord::new(worker),
            busy: AtomicBool::new(false),
        })
    }

    pub(super) fn notify(&self) {
        if let Some(ctx) = &self.ctx {
            ctx.notify();
        }
    }

    /// The listeners to accept on (a boot error, logged, when there are none).
    pub(super) fn listeners(&self) -> Result<Vec<Listener>, ExitCode> {
        let Some(ctx) = &self.ctx else {
            return Err(ExitCode::from(3));
        };
        ctx.listeners_or_bind().map_err(|e| {
            tracing::error!(error = %e, "no listener to accept on");
            ExitCode::from(3)
        })
    }

    /// The watchdog thread: heartbeats and acts on the stop flags every [`WATCH_TICK`], whatever
    /// the job loops are doing (a long handler or a blocking source delays neither a fast stop
    /// nor the heartbeat). For the sync kind, as gunicorn's sync worker, the heartbeat stops while
    /// one job runs longer than the master's timeout, so that the master replaces a stuck worker.
    fn watch(&self) -> ! {
        let mut busy_seen = None;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                // As gunicorn's worker: the master timed us out; count it and exit 1.
                self.stops.record(StopReason::Abort);
                tracing::error!(
                    handled = self.handled(),
                    "Worker timed out (ABRT from the master), exiting"
                );
                std::process::exit(1);
            }
            if !self.stuck(&mut busy_seen) {
                self.notify();
            }
            if !self.orphaned.load(Ordering::Relaxed)
                && self.ctx.as_ref().is_some_and(WorkerContext::parent_changed)
            {
                tracing::info!("Parent changed, shutting down");
                self.stops.record(StopReason::ParentChanged);
                self.orphaned.store(true, Ordering::Relaxed);
            }
            self.check_retirement();
            if self.stop_requested() {
                super::STOPPING.store(true, Ordering::Relaxed);
                if self.quit.load(Ordering::Relaxed) {
                    self.exit_fast();
                }
            }
            std::thread::sleep(WATCH_TICK);
        }
    }

    /// A replacement asked for at max-requests but no TERM from the master within the graceful
    /// timeout (its replacement keeps failing): stop by ourselves.
    fn check_retirement(&self) {
        let (Some(at), Some(ctx)) = (self.retire_asked.get(), &self.ctx) else {
            return;
        };
        if at.elapsed() > ctx.graceful_timeout() && !self.max_reached.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "No TERM from the master {}s after asking for a replacement; stopping",
                ctx.graceful_timeout().as_secs()
            );
        }
    }

    /// Whether a sync job has been running longer than the master's timeout. `seen` is the
    /// watchdog's note of the running job: the `handled` count while it runs, and when the
    /// watchdog first saw it (so the job path itself reads no clock for this).
    fn stuck(&self, seen: &mut Option<(u64, Instant)>) -> bool {
        let timeout = self.timeout;
        if self.kind != Kind::Sync || timeout.is_zero() || !self.busy.load(Ordering::Relaxed) {
            *seen = None;
            return false;
        }
        let handled = self.handled();
        match *seen {
            Some((job, since)) if job == handled => since.elapsed() > timeout,
            _ => {
                *seen = Some((handled, Instant::now()));
                false
            }
        }
    }

    /// Whether a stop (graceful or fast) was asked for; records the first graceful and the first
    /// fast stop in the worker metrics (`state`, `restart_total{reason}`).
    fn stop_requested(&self) -> bool {
        if self.quit.load(Ordering::Relaxed) {
            self.stops.record(StopReason::Quit);
            return true;
        }
        let term = self.term.load(Ordering::Relaxed);
        // The master's TERM to a worker that asked for a replacement ends its max-requests
        // retirement.
        let retiring = self.retire_asked.get().is_some();
        let reason = if self.max_reached.load(Ordering::Relaxed) || (term && retiring) {
            Some(StopReason::MaxRequests)
        } else if term {
            Some(StopReason::Term)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.stops.record(reason);
            return true;
        }
        // The watchdog checks the parent (a syscall) every tick, not every job.
        self.orphaned.load(Ordering::Relaxed)
    }

    fn exit_fast(&self) -> ! {
        tracing::info!(handled = self.handled(), "Worker exiting (fast)");
        std::process::exit(0);
    }

    /// Whether to stop taking jobs; exits the process at once on a fast stop.
    pub(super) fn should_stop(&self) -> bool {
        if !self.stop_requested() {
            return false;
        }
        if self.quit.load(Ordering::Relaxed) {
            self.exit_fast();
        }
        true
    }

    /// Count a finished job; asks for a graceful stop at max-requests.
    pub(super) fn finished(&self) {
        let n = self.handled();
        let max = self.max_requests;
        if max == 0 || n < max || self.limit_hit.swap(true, Ordering::Relaxed) {
            return;
        }
        let link = self.ctx.as_ref().and_then(WorkerContext::master_link);
        if link.is_some_and(|m| m.ask_to_be_replaced()) {
            let _ = self.retire_asked.set(Instant::now());
            tracing::info!(
                max_requests = max,
                "Max requests reached: serving until the master's replacement is up"
            );
        } else {
            self.max_reached.store(true, Ordering::Relaxed);
            tracing::info!(
                max_requests = max,
                "Autorestarting worker after current request"
            );
        }
    }

    /// Jobs handled so far: this process's requests counter, which the recorder bumps once per
    /// job (one atomic add per job fewer than a separate count).
    pub(super) fn handled(&self) -> u64 {
        self.metrics.requests.get() as u64
    }

    pub(super) fn run_job<R: IntoOutcome>(&self, job: impl FnOnce() -> R) {
        let sync = self.kind == Kind::Sync;
        if sync {
            self.busy.store(true, Ordering::Relaxed);
        }
        let _outcome = self.metrics.call(job);
        if sync {
            self.busy.store(false, Ordering::Relaxed);
        }
        self.finished();
    }

    /// One turn of the sync and threaded loops: stop, or take a job from `source` and run it.
    /// `false` when the loop ends.
    #[inline]
    pub(super) fn step<J, R: IntoOutcome>(
        &self,
        source: impl FnOnce() -> Option<J>,
        handler: impl FnOnce(J) -> R,
    ) -> bool {
        if self.should_stop() {
            return false;
        }
        let Some(job) = source() else {
            return false;
        };
        self.run_job(|| handler(job));
        true
    }

    pub(super) fn threads(options: &Options) -> usize {
        match options.kind {
            Kind::Threads(n) => n.max(1) as usize,
            _ => 1,
        }
    }

    pub(super) fn exit(&self) -> ExitCode {
        // Record a max-requests stop noticed only by the last job.
        let _ = self.stop_requested();
        tracing::info!(handled = self.handled(), "Worker exiting");
        ExitCode::SUCCESS
    }
}

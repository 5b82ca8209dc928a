//! The runtime behind `#[instrument_worker]`: job loops for the sync, threaded and async worker
//! kinds, with request metrics, panics caught per job, graceful/fast shutdown, max-requests and
//! the heartbeat of the gpe-master contract.
//!
//! The macro only chooses among [`run_blocking`], [`run_blocking_connections`], [`run_async`] and
//! [`run_async_connections`] and builds the [`Options`]; every behaviour lives here, where it is
//! tested like any other code.
//!
//! The connection kinds accept on every listener the worker inherits (TCP and Unix); the async
//! one hands the handler the stream type it takes ([`AsyncStream`]: [`AsyncConnection`] for
//! every listener, `tokio::net::TcpStream` or `tokio::net::UnixStream` for one family).
//!
//! The async kinds run the job source and the handlers as tokio tasks; the source future is
//! dropped only when the worker stops, so a source must make claiming a job cancel-safe only
//! with respect to shutdown.
//!
//! Metrics (labels `worker_id` plus the constant labels of the options):
//! `{prefix}worker_requests_total`, `{prefix}worker_request_duration_seconds`,
//! `{prefix}worker_failed_requests_total{error_type}` and
//! `{prefix}worker_error_handling_total{error_type}` (a failed job counts in both, as in the
//! Python exporter; a panic has `error_type="panic"`), and the worker resource families of
//! [`crate::worker_metrics`] under `{prefix}worker_` with the same constant labels
//! (`{prefix}worker_memory_bytes`, `..._cpu_percent`, `..._uptime_seconds`, `..._state`, sampled
//! every 5 s, and `{prefix}worker_restart_total{reason}`).
//!
//! A watchdog thread heartbeats and watches the signals every 50 ms, whatever the job loops are
//! doing: TERM (and max-requests) sets `state="stopping"` and counts `restart_total` with
//! `reason="term"` (`"max_requests"`), then the loops stop taking jobs and let the running ones
//! finish; QUIT/INT sets `state="quitting"`, counts `reason="quit"` and exits at once, even in
//! the middle of a job or while a source blocks. For the sync kind the heartbeat pauses while a
//! job runs longer than the master's `--timeout` (as gunicorn's sync worker: the master replaces a
//! stuck worker); the threaded and async kinds heartbeat regardless of their jobs. The ABRT the
//! master sends a timed-out worker sets `state="aborting"`, counts `reason="abort"` and exits 1
//! (gunicorn's `handle_abort`).
//!
//! A blocking `source` (sync and threaded kinds) is only asked to stop between jobs: on TERM the
//! worker exits once the source returns, so a source that waits for jobs should poll
//! [`is_stopping`] and return `None` once it is set; one that keeps blocking is killed by the
//! master after `--graceful-timeout`.

use std::future::Future;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, Opts};

use crate::clock::{Clock, Stamp};
use crate::error::Error;
use crate::metrics::{CounterVec, Histogram, HistogramVec};
use crate::store::Store;
use crate::worker::metrics::{RestartReason, SamplerHandle, WorkerMetrics, WorkerState};
use crate::worker::{Listener, WorkerContext};

/// The worker kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// One job at a time on the main thread (gunicorn's `sync`).
    Sync,
    /// A pool of this many threads taking jobs concurrently (gunicorn's `gthread`).
    Threads(u32),
    /// A tokio runtime; the handler is an `async fn`.
    Async,
}

/// What the generated code passes to the runtime.
#[derive(Debug, Clone)]
pub struct Options {
    name: String,
    kind: Kind,
    prefix: String,
    const_labels: Vec<(String, String)>,
    buckets: Vec<f64>,
    error_label: Option<String>,
}

/// The Python exporter's request duration buckets.
pub const DEFAULT_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Options {
    /// Options for the worker type `name`.
    pub fn new(name: &str) -> Self {
        Options {
            name: name.to_owned(),
            kind: Kind::Sync,
            prefix: "gunicorn_".to_owned(),
            const_labels: Vec::new(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            error_label: None,
        }
    }

    /// The worker kind.
    #[must_use]
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The metric name prefix (default `gunicorn_`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// A constant label on every metric.
    #[must_use]
    pub fn const_label(mut self, name: &str, value: &str) -> Self {
        self.const_labels.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Request duration buckets.
    #[must_use]
    pub fn buckets(mut self, buckets: Vec<f64>) -> Self {
        self.buckets = buckets;
        self
    }

    /// A fixed `error_type` label for failures (default: the error's type name).
    #[must_use]
    pub fn error_label(mut self, label: &str) -> Self {
        self.error_label = Some(label.to_owned());
        self
    }
}

/// How a handler's return value becomes a success or a failure with an error type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler return type #[instrument_worker] supports",
    label = "the handler returns `{Self}`",
    note = "return `()` (every job succeeds) or `Result<T, E>` with `E: std::fmt::Debug` (an `Err` counts as a failed job, labelled with the type name of `E` or the `error_label`)"
)]
pub trait IntoOutcome {
    /// `Err(error_type)` on failure.
    fn into_outcome(self) -> Result<(), String>;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<T, E: std::fmt::Debug> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Result<(), String> {
        match self {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = ?e, "job failed");
                Err(short_type_name(std::any::type_name::<E>()))
            }
        }
    }
}

/// A handler's outcome, converted where the handler returns. Not public API: the code
/// `#[instrument_worker]` generates wraps each handler call in [`Outcome::of`], so that an
/// unsupported return type is reported at the handler's signature.
#[doc(hidden)]
#[derive(Debug)]
pub struct Outcome(Result<(), String>);

impl Outcome {
    /// Convert a handler's return value.
    #[inline]
    pub fn of<R: IntoOutcome>(r: R) -> Outcome {
        Outcome(r.into_outcome())
    }
}

impl IntoOutcome for Outcome {
    #[inline]
    fn into_outcome(self) -> Result<(), String> {
        self.0
    }
}

/// `std::io::error::Error` -> `Error`; `my::Wrapper<other::Thing>` -> `Wrapper`.
fn short_type_name(full: &str) -> String {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_owned()
}

/// The metrics of one worker process.
#[derive(Debug, Clone)]
struct JobMetrics {
    /// Times jobs (see [`crate::clock`]).
    clock: Clock,
    worker_id: String,
    requests: crate::metrics::Counter,
    duration: Histogram,
    failed: CounterVec,
    errors: CounterVec,
    error_label: Option<String>,
}

impl JobMetrics {
    fn new(options: &Options, store: &Store, worker_id: &str) -> Result<JobMetrics, Error> {
        let opts = |name: &str, help: &str| {
            let mut o = Opts::new(format!("{}{name}", options.prefix), help);
            for (k, v) in &options.const_labels {
                o = o.const_label(k, v);
            }
            o
        };
        let requests = CounterVec::new(
            opts(
                "worker_requests_total",
                "Total jobs (requests) handled by this worker.",
            ),
            &["worker_id"],
            store,
        )?
        .with_label_values(&[worker_id])?;
        let duration = HistogramVec::new(
            HistogramOpts {
                common_opts: opts(
                    "worker_request_duration_seconds",
                    "Job (request) duration in seconds.",
                ),
                buckets: options.buckets.clone(),
            },
            &["worker_id"],
            store,
        )?
        .with_label_values(&[worker_id])?;
        let failed = CounterVec::new(
            opts(
                "worker_failed_requests_total",
                "Jobs (requests) that failed.",
            ),
            &["worker_id", "error_type"],
            store,
        )?;
        let errors = CounterVec::new(
            opts(
                "worker_error_handling_total",
                "Errors handled by this worker.",
            ),
            &["worker_id", "error_type"],
            store,
        )?;
        Ok(JobMetrics {
            clock: Clock::new(),
            worker_id: worker_id.to_owned(),
            requests,
            duration,
            failed,
            errors,
            error_label: options.error_label.clone(),
        })
    }

    /// A start time for [`record`](Self::record).
    #[inline]
    fn start(&self) -> Stamp {
        self.clock.now()
    }

    /// Record one job started at `started` (from [`start`](Self::start)).
    fn record(&self, started: Stamp, outcome: Result<(), String>) {
        self.requests.inc();
        self.duration
            .observe(self.clock.elapsed(started).as_secs_f64());
        if let Err(error_type) = outcome {
            let label = self.error_label.as_deref().unwrap_or(&error_type);
            for v in [&self.failed, &self.errors] {
                if let Ok(c) = v.with_label_values(&[&self.worker_id, label]) {
                    c.inc();
                }
            }
        }
    }
}

impl JobMetrics {
    /// Run one job: timed, panics caught, outcome recorded.
    fn call<R: IntoOutcome>(&self, job: impl FnOnce() -> R) -> Result<(), String> {
        self.call_from(self.start(), job)
    }

    /// As `call`, timed from `started`.
    fn call_from<R: IntoOutcome>(
        &self,
        started: Stamp,
        job: impl FnOnce() -> R,
    ) -> Result<(), String> {
        let outcome = match catch_unwind(AssertUnwindSafe(job)) {
            Ok(r) => r.into_outcome(),
            Err(p) => {
                tracing::error!(
                    panic = panic_message(&*p),
                    "job panicked; the worker goes on"
                );
                Err("panic".to_owned())
            }
        };
        self.record(started, outcome.clone());
        outcome
    }
}

/// The instrumentation `#[instrument_worker]` wraps around every handler call — timing, the
/// request/failure/error counters, panics caught — usable on its own (and benchmarked against a
/// bare call in `gpe-core/benches/store.rs`).
///
/// ```
/// use gpe_core::runtime::{JobRecorder, Options};
/// # fn main() -> Result<(), gpe_core::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let recorder = JobRecorder::new(&Options::new("Demo"), &store, "1")?;
/// assert_eq!(recorder.call(|| Ok::<_, std::io::Error>(())), Ok(()));
/// assert_eq!(recorder.call(|| -> Result<(), std::fmt::Error> { Err(std::fmt::Error) }), Err("Error".to_owned()));
/// assert_eq!(recorder.call(|| -> Result<(), std::io::Error> { panic!("boom") }), Err("panic".to_owned()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JobRecorder {
    metrics: JobMetrics,
}

impl JobRecorder {
    /// Register the job metrics of `options` for worker `worker_id` in `store`.
    ///
    /// # Errors
    /// When a metric cannot be registered (an invalid prefix or constant label, say).
    pub fn new(options: &Options, store: &Store, worker_id: &str) -> Result<JobRecorder, Error> {
        Ok(JobRecorder {
            metrics: JobMetrics::new(options, store, worker_id)?,
        })
    }

    /// Run `job`, record it, and return its outcome (`Err(error_type)` on failure or panic).
    pub fn call<R: IntoOutcome>(&self, job: impl FnOnce() -> R) -> Result<(), String> {
        self.metrics.call(job)
    }
}

/// The per-job path of the sync and threaded job loops, exactly as [`run_blocking`] runs it —
/// the stop check, the job from the source, the instrumented handler call (timing, counters,
/// histogram, `catch_unwind`) and the max-requests count — without the process-level parts
/// (signal handlers, watchdog, heartbeat, sampler). For benchmarks (`gpe-core/benches/store.rs`
/// times it against a bare handler call) and for driving jobs by hand.
///
/// ```
/// use gpe_core::runtime::{JobLoop, Options};
/// # fn main() -> Result<(), gpe_core::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// // Stops after 2 jobs, as a worker with GPE_MAX_REQUESTS=2 does.
/// let jobs = JobLoop::new(&Options::new("Demo"), &store, "1", 2)?;
/// let handler = |n: u32| -> Result<u32, std::num::TryFromIntError> { u8::try_from(n).map(u32::from) };
/// assert!(jobs.step(|| Some(7), handler));
/// assert!(jobs.step(|| Some(700), handler)); // a failed job, counted
/// assert!(!jobs.step(|| Some(1), handler)); // max-requests reached: the loop ends
/// assert_eq!(jobs.handled(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct JobLoop {
    sup: Supervisor,
}

impl JobLoop {
    /// Register the job and worker resource metrics of `options` for worker `worker_id` in
    /// `store`; the loop ends after `max_requests` jobs (0: never).
    ///
    /// # Errors
    /// When a metric cannot be registered (an invalid prefix or constant label, say).
    pub fn new(
        options: &Options,
        store: &Store,
        worker_id: &str,
        max_requests: u64,
    ) -> Result<JobLoop, Error> {
        Ok(JobLoop {
            sup: Supervisor::build(
                options,
                store,
                worker_id,
                None,
                max_requests,
                Duration::ZERO,
                Signals::default(),
            )?,
        })
    }

    /// One turn of the loop: `false` when the loop ends (a stop was asked for, or `source`
    /// returned `None`), else the job from `source` was handled and recorded.
    #[inline]
    pub fn step<J, R: IntoOutcome>(
        &self,
        source: impl FnOnce() -> Option<J>,
        handler: impl FnOnce(J) -> R,
    ) -> bool {
        self.sup.step(source, handler)
    }

    /// Jobs handled so far.
    pub fn handled(&self) -> u64 {
        self.sup.handled()
    }
}

/// A panic payload as text, for the log.
fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Shared state of a running worker: the context, the stop flags, the job count and the worker
/// resource metrics.
#[derive(Debug)]
struct Supervisor {
    /// `None` for a [`JobLoop`] outside a worker process.
    ctx: Option<WorkerContext>,
    kind: Kind,
    max_requests: u64,
    timeout: Duration,
    metrics: JobMetrics,
    worker: WorkerMetrics,
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
    /// Records the graceful / fast stop in the worker metrics, once each (a second caller waits
    /// for the first to finish, so nobody exits before the count is written).
    recorded_graceful: Once,
    recorded_fast: Once,
    /// Sync kind: a job is running (the watchdog times it by the `handled()` count it sees).
    busy: AtomicBool,
}

/// Set by the watchdog of this process's worker once a stop was asked for.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether this worker process was asked to stop (TERM, QUIT/INT, max-requests, a changed
/// parent), as seen by the runtime's watchdog (within 50 ms). A `source` of the sync or threaded
/// kinds that blocks waiting for a job should check it while it waits and return `None` once it
/// is `true`: the loop only looks at the stop between jobs, so a source that keeps waiting holds
/// a TERM up until the master's `--graceful-timeout` kills the worker. Always `false` outside a
/// running `#[instrument_worker]` worker.
///
/// ```
/// use std::time::Duration;
///
/// /// Wait for a job in `queue`, or give up once the worker is stopping.
/// fn next_job(queue: &std::sync::Mutex<Vec<u32>>) -> Option<u32> {
///     loop {
///         if let Some(job) = queue.lock().unwrap().pop() {
///             return Some(job);
///         }
///         if gpe_core::runtime::is_stopping() {
///             return None;
///         }
///         std::thread::sleep(Duration::from_millis(10));
///     }
/// }
///
/// assert_eq!(next_job(&std::sync::Mutex::new(vec![7])), Some(7));
/// assert!(!gpe_core::runtime::is_stopping());
/// ```
pub fn is_stopping() -> bool {
    STOPPING.load(Ordering::Relaxed)
}

/// The flags the signal handlers set.
#[derive(Debug, Default)]
struct Signals {
    term: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

/// How often the watchdog thread looks at the stop flags and the heartbeat.
const WATCH_TICK: Duration = Duration::from_millis(50);

/// How often the worker resource sampler samples memory, CPU and uptime.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

impl Supervisor {
    fn start(options: &Options) -> Result<Arc<Supervisor>, ExitCode> {
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
        sup._sampler = match sup.worker.spawn_sampler(SAMPLE_INTERVAL) {
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
    fn build(
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
            worker,
            _sampler: None,
            term: signals.term,
            quit: signals.quit,
            abort: signals.abort,
            limit_hit: AtomicBool::new(false),
            retire_asked: OnceLock::new(),
            max_reached: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            recorded_graceful: Once::new(),
            recorded_fast: Once::new(),
            busy: AtomicBool::new(false),
        })
    }

    fn notify(&self) {
        if let Some(ctx) = &self.ctx {
            ctx.notify();
        }
    }

    /// The listeners to accept on (a boot error, logged, when there are none).
    fn listeners(&self) -> Result<Vec<Listener>, ExitCode> {
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
                self.worker.record_restart(RestartReason::Abort);
                self.worker.set_state(WorkerState::Aborting);
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
                self.worker.set_state(WorkerState::Stopping);
                self.orphaned.store(true, Ordering::Relaxed);
            }
            self.check_retirement();
            if self.stop_requested() {
                STOPPING.store(true, Ordering::Relaxed);
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
            self.recorded_fast.call_once(|| {
                self.worker.record_restart(RestartReason::Quit);
                self.worker.set_state(WorkerState::Quitting);
            });
            return true;
        }
        let term = self.term.load(Ordering::Relaxed);
        // The master's TERM to a worker that asked for a replacement ends its max-requests
        // retirement.
        let retiring = self.retire_asked.get().is_some();
        let reason = if self.max_reached.load(Ordering::Relaxed) || (term && retiring) {
            Some(RestartReason::MaxRequests)
        } else if term {
            Some(RestartReason::Term)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.recorded_graceful.call_once(|| {
                self.worker.record_restart(reason);
                self.worker.set_state(WorkerState::Stopping);
            });
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
    fn should_stop(&self) -> bool {
        if !self.stop_requested() {
            return false;
        }
        if self.quit.load(Ordering::Relaxed) {
            self.exit_fast();
        }
        true
    }

    /// Count a finished job; asks for a graceful stop at max-requests.
    fn finished(&self) {
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
    fn handled(&self) -> u64 {
        self.metrics.requests.get() as u64
    }

    fn run_job<R: IntoOutcome>(&self, job: impl FnOnce() -> R) {
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
    fn step<J, R: IntoOutcome>(
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

    fn threads(options: &Options) -> usize {
        match options.kind {
            Kind::Threads(n) => n.max(1) as usize,
            _ => 1,
        }
    }

    fn exit(&self) -> ExitCode {
        // Record a max-requests stop noticed only by the last job.
        let _ = self.stop_requested();
        tracing::info!(handled = self.handled(), "Worker exiting");
        ExitCode::SUCCESS
    }
}

/// Run a sync or threaded worker whose jobs come from `source` (`None`: no more jobs).
pub fn run_blocking<W, J, R>(
    worker: W,
    options: Options,
    source: impl Fn(&W) -> Option<J> + Send + Sync,
    handler: impl Fn(&W, J) -> R + Send + Sync,
) -> ExitCode
where
    W: Send + Sync,
    R: IntoOutcome,
{
    let sup = match Supervisor::start(&options) {
        Ok(s) => s,
        Err(code) => return code,
    };
    std::thread::scope(|scope| {
        for _ in 0..Supervisor::threads(&options) {
            scope.spawn(|| while sup.step(|| source(&worker), |job| handler(&worker, job)) {});
        }
    });
    sup.exit()
}

/// A connection accepted on one of the worker's listeners.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connection {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A Unix-domain stream.
    Unix(std::os::unix::net::UnixStream),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.read(buf),
            Connection::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.write(buf),
            Connection::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => s.flush(),
            Connection::Unix(s) => s.flush(),
        }
    }
}

/// Wait up to `timeout` for a connection on any of `listeners`.
fn accept(listeners: &[Listener], timeout: Duration) -> Option<Connection> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = listeners
        .iter()
        .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms =
        PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    for (l, fd) in listeners.iter().zip(&fds) {
        if !fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            continue;
        }
        // Listeners are non-blocking: another worker may have taken the connection.
        let accepted = match l {
            Listener::Tcp(t) => t.accept().map(|(s, _)| Connection::Tcp(s)),
            Listener::Unix(u) => u.accept().map(|(s, _)| Connection::Unix(s)),
        };
        if let Ok(conn) = accepted {
            let _ = match &conn {
                Connection::Tcp(s) => s.set_nonblocking(false),
                Connection::Unix(s) => s.set_nonblocking(false),
            };
            return Some(conn);
        }
    }
    None
}

/// Run a sync or threaded worker that handles connections accepted on its listeners.
pub fn run_blocking_connections<W, R>(
    worker: W,
    options: Options,
    handler: impl Fn(&W, Connection) -> R + Send + Sync,
) -> ExitCode
where
    W: Send + Sync,
    R: IntoOutcome,
{
    let sup = match Supervisor::start(&options) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listeners = match sup.listeners() {
        Ok(l) => l,
        Err(code) => return code,
    };
    for l in &listeners {
        let _ = l.set_nonblocking(true);
    }
    std::thread::scope(|scope| {
        for _ in 0..Supervisor::threads(&options) {
            scope.spawn(|| {
                while !sup.should_stop() {
                    if let Some(conn) = accept(&listeners, Duration::from_millis(250)) {
                        sup.run_job(|| handler(&worker, conn));
                    }
                }
            });
        }
    });
    sup.exit()
}

fn tokio_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the tokio runtime");
            None
        }
    }
}

/// Run an async worker whose jobs come from `source`; jobs run concurrently as tokio tasks.
pub fn run_async<W, J, R, SF, HF>(
    worker: W,
    options: Options,
    source: impl Fn(Arc<W>) -> SF,
    handler: impl Fn(Arc<W>, J) -> HF + Send + Sync + 'static,
) -> ExitCode
where
    W: Send + Sync + 'static,
    J: Send + 'static,
    SF: Future<Output = Option<J>>,
    HF: Future<Output = R> + Send + 'static,
    R: IntoOutcome + Send + 'static,
{
    let sup = match Supervisor::start(&options) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(rt) = tokio_runtime() else {
        return ExitCode::from(3);
    };
    let worker = Arc::new(worker);
    let handler = Arc::new(handler);
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        // The source future is only dropped when the worker stops, never to poll the stop flag.
        let mut next = Box::pin(source(Arc::clone(&worker)));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                job = &mut next => {
                    let Some(job) = job else { break };
                    spawn_job(&mut tasks, &sup, handler(Arc::clone(&worker), job));
                    while tasks.try_join_next().is_some() {}
                    if sup.should_stop() {
                        break;
                    }
                    next = Box::pin(source(Arc::clone(&worker)));
                }
                _ = tick.tick() => {
                    if sup.should_stop() {
                        break;
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    });
    sup.exit()
}

fn spawn_job<R: IntoOutcome + Send + 'static>(
    tasks: &mut tokio::task::JoinSet<()>,
    sup: &Arc<Supervisor>,
    fut: impl Future<Output = R> + Send + 'static,
) {
    let sup = Arc::clone(sup);
    tasks.spawn(async move {
        let started = sup.metrics.start();
        // A panicking job is caught by its task; count it as a failure of that job.
        let outcome = match tokio::spawn(fut).await {
            Ok(r) => r.into_outcome(),
            Err(e) if e.is_panic() => {
                tracing::error!("job panicked; the worker goes on");
                Err("panic".to_owned())
            }
            Err(_) => Err("cancelled".to_owned()),
        };
        sup.metrics.record(started, outcome);
        sup.finished();
    });
}

/// A connection accepted by the async connection kind, on a TCP or a Unix listener. A handler
/// taking this type is served on every listener the worker inherits.
///
/// ```
/// use gpe_core::runtime::AsyncConnection;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (a, b) = tokio::net::UnixStream::pair()?;
/// let mut conn = AsyncConnection::Unix(a);
/// conn.write_all(b"hi").await?;
/// let mut buf = [0; 2];
/// let mut peer = AsyncConnection::Unix(b);
/// peer.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"hi");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AsyncConnection {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// A Unix-domain stream.
    Unix(tokio::net::UnixStream),
}

impl tokio::io::AsyncRead for AsyncConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for AsyncConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What an async connection handler may take: [`tokio::net::TcpStream`] (served on the TCP
/// listeners only), [`tokio::net::UnixStream`] (Unix listeners only) or [`AsyncConnection`]
/// (every listener).
pub trait AsyncStream: Sized + Send + 'static {
    /// Whether TCP listeners are served.
    const TCP: bool;
    /// Whether Unix listeners are served.
    const UNIX: bool;
    /// A TCP connection as this type (`None` when not served).
    fn from_tcp(stream: tokio::net::TcpStream) -> Option<Self>;
    /// A Unix connection as this type (`None` when not served).
    fn from_unix(stream: tokio::net::UnixStream) -> Option<Self>;
}

impl AsyncStream for tokio::net::TcpStream {
    const TCP: bool = true;
    const UNIX: bool = false;
    fn from_tcp(stream: tokio::net::TcpStream) -> Option<Self> {
        Some(stream)
    }
    fn from_unix(_: tokio::net::UnixStream) -> Option<Self> {
        None
    }
}

impl AsyncStream for tokio::net::UnixStream {
    const TCP: bool = false;
    const UNIX: bool = true;
    fn from_tcp(_: tokio::net::TcpStream) -> Option<Self> {
        None
    }
    fn from_unix(stream: tokio::net::UnixStream) -> Option<Self> {
        Some(stream)
    }
}

impl AsyncStream for AsyncConnection {
    const TCP: bool = true;
    const UNIX: bool = true;
    fn from_tcp(stream: tokio::net::TcpStream) -> Option<Self> {
        Some(AsyncConnection::Tcp(stream))
    }
    fn from_unix(stream: tokio::net::UnixStream) -> Option<Self> {
        Some(AsyncConnection::Unix(stream))
    }
}

/// Accept on `listener` forever, sending each connection to `tx` (one task per listener).
async fn accept_loop<C: AsyncStream>(listener: Listener, tx: tokio::sync::mpsc::Sender<C>) {
    enum Async {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let _ = listener.set_nonblocking(true);
    let converted = match listener {
        Listener::Tcp(t) => tokio::net::TcpListener::from_std(t).map(Async::Tcp),
        Listener::Unix(u) => tokio::net::UnixListener::from_std(u).map(Async::Unix),
    };
    let listener = match converted {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot use an inherited listener");
            return;
        }
    };
    loop {
        let accepted = match &listener {
            Async::Tcp(t) => t.accept().await.map(|(s, _)| C::from_tcp(s)),
            Async::Unix(u) => u.accept().await.map(|(s, _)| C::from_unix(s)),
        };
        match accepted {
            Ok(Some(conn)) => {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // EMFILE and the like: do not spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Run an async worker that handles the connections accepted on its listeners: every TCP and
/// Unix listener for a handler taking [`AsyncConnection`], the TCP ones for
/// [`tokio::net::TcpStream`], the Unix ones for [`tokio::net::UnixStream`] (a listener of the
/// other family is skipped with a warning; none left is a boot error, exit code 3).
pub fn run_async_connections<W, C, R, HF>(
    worker: W,
    options: Options,
    handler: impl Fn(Arc<W>, C) -> HF + Send + Sync + 'static,
) -> ExitCode
where
    W: Send + Sync + 'static,
    C: AsyncStream,
    HF: Future<Output = R> + Send + 'static,
    R: IntoOutcome + Send + 'static,
{
    let sup = match Supervisor::start(&options) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(rt) = tokio_runtime() else {
        return ExitCode::from(3);
    };
    let listeners = match sup.listeners() {
        Ok(l) => l,
        Err(code) => return code,
    };
    let served: Vec<Listener> = listeners
        .into_iter()
        .filter(|l| {
            let ok = match l {
                Listener::Tcp(_) => C::TCP,
                Listener::Unix(_) => C::UNIX,
            };
            if !ok {
                tracing::warn!(
                    handler_takes = std::any::type_name::<C>(),
                    "skipping a listener of the other socket family: take \
                     gpe_core::runtime::AsyncConnection to serve TCP and Unix listeners"
                );
            }
            ok
        })
        .collect();
    if served.is_empty() {
        tracing::error!(
            handler_takes = std::any::type_name::<C>(),
            "no listener this handler can serve"
        );
        return ExitCode::from(3);
    }
    let worker = Arc::new(worker);
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<C>(64);
        let mut accepting = tokio::task::JoinSet::new();
        for l in served {
            accepting.spawn(accept_loop(l, tx.clone()));
        }
        drop(tx);
        let mut tasks = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !sup.should_stop() {
            tokio::select! {
                conn = rx.recv() => match conn {
                    Some(conn) => spawn_job(&mut tasks, &sup, handler(Arc::clone(&worker), conn)),
                    None => break,
                },
                _ = tick.tick() => {}
            }
            while tasks.try_join_next().is_some() {}
        }
        // Stop accepting (the listeners close), then serve what was already accepted.
        accepting.shutdown().await;
        while let Ok(conn) = rx.try_recv() {
            spawn_job(&mut tasks, &sup, handler(Arc::clone(&worker), conn));
        }
        while tasks.join_next().await.is_some() {}
    });
    sup.exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker resource families honour the prefix and constant labels, and a loop ended by
    /// max-requests counts `restart_total{reason="max_requests"}` and sets `state="stopping"`.
    #[test]
    fn job_loop_records_worker_families_with_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = Options::new("T")
            .kind(Kind::Threads(2))
            .prefix("app_")
            .const_label("svc", "a");
        let jobs = JobLoop::new(&options, &store, "4", 3).unwrap();
        jobs.sup.worker.sample();
        let text = || {
            crate::expose::encode_text(
                &crate::collect::MultiProcessCollector::new(dir.path()).gather(),
            )
            .unwrap()
        };
        let pid = std::process::id();
        let t = text();
        assert!(
            t.contains(&format!(
                "app_worker_state{{pid=\"{pid}\",state=\"running\",svc=\"a\",worker_id=\"4\"}} 1"
            )),
            "{t}"
        );
        assert!(t.contains(&format!(
            "app_worker_memory_bytes{{pid=\"{pid}\",svc=\"a\",worker_id=\"4\"}}"
        )));
        assert!(!t.contains("restart_total"), "{t}");
        let mut n = 0;
        while jobs.step(|| Some(1u8), |_| ()) {
            n += 1;
        }
        assert_eq!(n, 3);
        let t = text();
        assert!(
            t.contains(
                r#"app_worker_restart_total{reason="max_requests",svc="a",worker_id="4"} 1"#
            ),
            "{t}"
        );
        assert!(t.contains(&format!(
            "app_worker_state{{pid=\"{pid}\",state=\"stopping\",svc=\"a\",worker_id=\"4\"}} 1"
        )));
        assert!(
            t.contains(r#"app_worker_requests_total{svc="a",worker_id="4"} 3"#),
            "{t}"
        );
        // The loop stays stopped, and the exit is counted once.
        assert!(!jobs.step(|| Some(1u8), |_| ()));
        assert!(text().contains(
            r#"app_worker_restart_total{reason="max_requests",svc="a",worker_id="4"} 1"#
        ));
    }

    #[test]
    fn error_type_names_are_short() {
        assert_eq!(short_type_name("std::io::error::Error"), "Error");
        assert_eq!(short_type_name("my::Wrapper<other::Thing>"), "Wrapper");
        assert_eq!(short_type_name("Plain"), "Plain");
        let r: Result<(), std::num::ParseIntError> = "x".parse::<i32>().map(|_| ());
        assert_eq!(r.into_outcome(), Err("ParseIntError".to_owned()));
        assert_eq!(().into_outcome(), Ok(()));
    }
}

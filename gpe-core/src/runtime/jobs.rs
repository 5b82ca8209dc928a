//! The instrumentation of one job: timing, the request, failure and error counters, panics
//! caught ([`JobRecorder`]), and the per-job path of the blocking loops ([`JobLoop`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use prometheus::{HistogramOpts, Opts};

use super::outcome::{IntoOutcome, JobFailure};
use super::supervisor::{Signals, Supervisor};
use super::Options;
use crate::clock::{Clock, Stamp};
use crate::error::Error;
use crate::http::panic_message;
use crate::metrics::{CounterVec, Histogram, HistogramVec};
use crate::store::Store;

/// The metrics of one worker process.
#[derive(Debug, Clone)]
pub(super) struct JobMetrics {
    /// Times jobs (see [`crate::clock`]).
    clock: Clock,
    worker_id: String,
    pub(super) requests: crate::metrics::Counter,
    duration: Histogram,
    failed: CounterVec,
    errors: CounterVec,
    error_label: Option<String>,
}

impl JobMetrics {
    pub(super) fn new(
        options: &Options,
        store: &Store,
        worker_id: &str,
    ) -> Result<JobMetrics, Error> {
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
    pub(super) fn start(&self) -> Stamp {
        self.clock.now()
    }

    /// Record one job started at `started` (from [`start`](Self::start)).
    pub(super) fn record(&self, started: Stamp, outcome: Result<(), JobFailure>) {
        self.requests.inc();
        self.duration
            .observe(self.clock.elapsed(started).as_secs_f64());
        if let Err(failure) = outcome {
            let label = self.error_label.as_deref().unwrap_or(failure.error_type());
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
    pub(super) fn call<R: IntoOutcome>(&self, job: impl FnOnce() -> R) -> Result<(), JobFailure> {
        self.call_from(self.start(), job)
    }

    /// As `call`, timed from `started`.
    pub(super) fn call_from<R: IntoOutcome>(
        &self,
        started: Stamp,
        job: impl FnOnce() -> R,
    ) -> Result<(), JobFailure> {
        let outcome = match catch_unwind(AssertUnwindSafe(job)) {
            Ok(r) => r.into_outcome(),
            Err(p) => {
                tracing::error!(
                    panic = panic_message(&*p),
                    "job panicked; the worker goes on"
                );
                Err(JobFailure::PANIC)
            }
        };
        self.record(started, outcome);
        outcome
    }
}

/// The instrumentation `#[instrument_worker]` wraps around every handler call — timing, the
/// request/failure/error counters, panics caught — usable on its own (and benchmarked against a
/// bare call in `gpe-core/benches/store.rs`).
///
/// ```
/// use gpe_core::runtime::{JobFailure, JobRecorder, Options};
/// # fn main() -> Result<(), gpe_core::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let recorder = JobRecorder::new(&Options::new("Demo"), &store, "1")?;
/// assert_eq!(recorder.call(|| Ok::<_, std::io::Error>(())), Ok(()));
/// assert_eq!(recorder.call(|| -> Result<(), std::fmt::Error> { Err(std::fmt::Error) }), Err(JobFailure::new("Error")));
/// assert_eq!(recorder.call(|| -> Result<(), std::io::Error> { panic!("boom") }), Err(JobFailure::PANIC));
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

    /// Run `job`, record it, and return its outcome (the failure, with its `error_type`, on an
    /// error or a panic).
    pub fn call<R: IntoOutcome>(&self, job: impl FnOnce() -> R) -> Result<(), JobFailure> {
        self.metrics.call(job)
    }
}

/// The per-job path of the sync and threaded job loops, exactly as [`run_blocking`](super::run_blocking) runs it —
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
    pub(super) sup: Supervisor,
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

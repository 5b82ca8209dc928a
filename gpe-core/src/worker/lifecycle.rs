//! One worker lifecycle for every kind of worker: why a worker stops ([`StopReason`]) and the
//! record of it in the worker's metrics, written once per stage ([`StopRecord`]).
//!
//! The three ways a gpe worker runs (gpe-tower's `serve`, the `#[instrument_worker]` runtime and
//! the servers of other frameworks, such as the actix-web and hyper examples) notice a stop in
//! different places (a tokio signal stream, a watchdog thread), but they all describe it with
//! the same [`StopReason`] and record it through a [`StopRecord`], so that
//! `gunicorn_worker_state` and `gunicorn_worker_restart_total{reason}` mean the same thing
//! whatever serves the worker.
//!
//! ```
//! use gpe_core::worker::lifecycle::{StopReason, StopRecord};
//! use gpe_core::worker::metrics::WorkerMetrics;
//!
//! # fn main() -> Result<(), gpe_core::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = gpe_core::Store::open(dir.path())?;
//! let stops = StopRecord::new(WorkerMetrics::new(&store, "3")?);
//! assert!(stops.record(StopReason::Term)); // state="stopping", restart_total{reason="term"}
//! assert!(!stops.record(StopReason::Term)); // seen again by another thread: recorded once
//! assert!(stops.record(StopReason::Quit)); // the stop turned fast: state="quitting", reason="quit"
//!
//! let text = gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir.path()).gather())?;
//! assert!(text.contains(r#"gunicorn_worker_restart_total{reason="term",worker_id="3"} 1"#));
//! assert!(text.contains(r#"gunicorn_worker_restart_total{reason="quit",worker_id="3"} 1"#));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Mutex, PoisonError};

use super::metrics::{WorkerMetrics, WorkerState};

/// Why a worker stops (the `reason` label of `gunicorn_worker_restart_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// `SIGTERM`: graceful.
    Term,
    /// `SIGQUIT` or `SIGINT`: fast.
    Quit,
    /// The max-requests limit was reached: graceful.
    MaxRequests,
    /// The parent is no longer the master that started this worker: graceful.
    ParentChanged,
    /// `SIGABRT`, the master's heartbeat timeout: exit at once with status 1.
    Abort,
}

impl StopReason {
    /// Whether the worker exits at once (no draining).
    pub fn is_fast(self) -> bool {
        matches!(self, StopReason::Quit | StopReason::Abort)
    }

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Term => "term",
            StopReason::Quit => "quit",
            StopReason::MaxRequests => "max_requests",
            StopReason::ParentChanged => "parent_changed",
            StopReason::Abort => "abort",
        }
    }

    /// The worker state while it stops for this reason.
    pub fn state(self) -> WorkerState {
        match self {
            StopReason::Quit => WorkerState::Quitting,
            StopReason::Abort => WorkerState::Aborting,
            _ => WorkerState::Stopping,
        }
    }

    fn stage(self) -> Stage {
        match self {
            StopReason::Abort => Stage::Aborted,
            StopReason::Quit => Stage::Fast,
            _ => Stage::Graceful,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a stop has gone; it only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Running,
    Graceful,
    Fast,
    Aborted,
}

/// Records a worker's stop in its [`WorkerMetrics`] (`state`, `restart_total{reason}`), once per
/// stage: a graceful stop once, a fast one (after a graceful one, or from the start) once more,
/// an abort once. Whoever notices a stop first (a signal task, a watchdog, the end of the serve
/// loop) records it; the others find it recorded. A second caller waits for the first to finish,
/// so nobody exits before the count is written.
#[derive(Debug)]
pub struct StopRecord {
    worker: WorkerMetrics,
    stage: Mutex<Stage>,
}

impl StopRecord {
    /// A record of a running worker.
    pub fn new(worker: WorkerMetrics) -> StopRecord {
        StopRecord {
            worker,
            stage: Mutex::new(Stage::Running),
        }
    }

    /// Record a stop for `reason` unless its stage was recorded already; whether this call
    /// recorded it.
    pub fn record(&self, reason: StopReason) -> bool {
        let mut stage = self.stage.lock().unwrap_or_else(PoisonError::into_inner);
        if *stage >= reason.stage() {
            return false;
        }
        self.worker.record_restart(reason);
        self.worker.set_state(reason.state());
        *stage = reason.stage();
        true
    }

    /// The worker metrics it records in.
    pub fn worker(&self) -> &WorkerMetrics {
        &self.worker
    }
}

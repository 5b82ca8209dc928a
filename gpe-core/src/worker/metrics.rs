//! Worker resource metrics, sampled on a timer (never on the request path).
//!
//! | family (default prefix) | type | labels | mode |
//! |---|---|---|---|
//! | `gunicorn_worker_memory_bytes` | gauge | `worker_id` (+ `pid`) | `liveall` |
//! | `gunicorn_worker_cpu_percent` | gauge | `worker_id` (+ `pid`) | `liveall` |
//! | `gunicorn_worker_uptime_seconds` | gauge | `worker_id` (+ `pid`) | `liveall` |
//! | `gunicorn_worker_state` | gauge | `worker_id`, `state` (+ `pid`) | `liveall` |
//! | `gunicorn_worker_restart_total` | counter | `worker_id`, `reason` | |
//!
//! The gauges use [`GaugeMode::LiveAll`]: one series per living worker, with the `pid` label the
//! collector adds (as the Python exporter's `all` mode, without the series of dead workers).
//! `gunicorn_worker_state` is 1 for the current state and 0 for the others, with no timestamp
//! label. Memory is the resident set size and CPU the process's user + system time (both from
//! [`procfs`](super::procfs)), CPU over the last sampling interval, in percent of one core.
//!
//! The `#[instrument_worker]` runtime starts one for every worker it runs (with the worker's
//! prefix and constant labels); servers built on other frameworks start their own (gpe-tower
//! re-exports these types).
//!
//! ```
//! use gpe_core::worker::metrics::{RestartReason, WorkerMetrics, WorkerState};
//!
//! # fn main() -> Result<(), gpe_core::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = gpe_core::Store::open(dir.path())?;
//! let worker = WorkerMetrics::new(&store, "3")?;
//! let sampler = worker.spawn_sampler(std::time::Duration::from_secs(5))?;
//! // ... serve ...
//! worker.set_state(WorkerState::Quitting);
//! worker.record_restart(RestartReason::Quit);
//! drop(sampler); // stops the thread
//!
//! let text = gpe_core::expose::encode_text(
//!     &gpe_core::MultiProcessCollector::new(dir.path()).gather(),
//! )?;
//! assert!(text.contains(r#"gunicorn_worker_restart_total{reason="quit",worker_id="3"} 1"#));
//! assert!(text.contains("gunicorn_worker_memory_bytes{"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::Opts;

use super::lifecycle::StopReason;
use crate::error::Error;
use crate::metrics::{Counter, CounterVec, Gauge, GaugeVec};
use crate::store::{GaugeMode, Store};

/// The default metric name prefix of the worker families (`gunicorn_worker_memory_bytes`, ...).
pub const DEFAULT_PREFIX: &str = "gunicorn_worker_";

/// A worker's lifecycle state (the `state` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerState {
    /// Serving requests.
    Running,
    /// Shutting down gracefully (TERM, max-requests).
    Stopping,
    /// Quitting fast (QUIT, INT).
    Quitting,
    /// Aborting (ABRT, sent on heartbeat timeout).
    Aborting,
}

impl WorkerState {
    /// Every state.
    pub const ALL: [WorkerState; 4] = [
        WorkerState::Running,
        WorkerState::Stopping,
        WorkerState::Quitting,
        WorkerState::Aborting,
    ];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
            WorkerState::Quitting => "quitting",
            WorkerState::Aborting => "aborting",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of [`StopReason`] in the first release, when it only named the `reason` label.
pub type RestartReason = StopReason;

/// The resource and lifecycle metrics of this worker process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    inner: Arc<WorkerInner>,
}

#[derive(Debug)]
struct WorkerInner {
    worker_id: String,
    memory: Gauge,
    cpu: Gauge,
    uptime: Gauge,
    states: Vec<(WorkerState, Gauge)>,
    restarts: CounterVec,
    started: Instant,
    last_cpu: Mutex<Option<(Instant, f64)>>,
}

impl WorkerMetrics {
    /// The families with the default prefix and the given `worker_id` label value.
    ///
    /// # Errors
    /// When the store rejects a family or cannot write its files.
    pub fn new(store: &Store, worker_id: impl Into<String>) -> Result<WorkerMetrics, Error> {
        WorkerMetrics::with_prefix(store, DEFAULT_PREFIX, worker_id)
    }

    /// As [`new`](Self::new), with `worker_id` from `GPE_WORKER_ID` (else `0`), in
    /// [`Store::from_env`].
    ///
    /// # Errors
    /// As [`new`](Self::new), or when the store directory cannot be opened.
    pub fn from_env() -> Result<WorkerMetrics, Error> {
        WorkerMetrics::new(&Store::from_env()?, crate::worker::env::worker_id_label())
    }

    /// The families with a custom metric name prefix.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_prefix(
        store: &Store,
        prefix: &str,
        worker_id: impl Into<String>,
    ) -> Result<WorkerMetrics, Error> {
        WorkerMetrics::with_labels(store, prefix, &[], worker_id)
    }

    /// The families with a custom metric name prefix and constant labels on every series (as
    /// the `#[instrument_worker]` runtime passes its `labels(...)`).
    ///
    /// ```
    /// # fn main() -> Result<(), gpe_core::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = gpe_core::Store::open(dir.path())?;
    /// let labels = [("service".to_owned(), "upper".to_owned())];
    /// let worker = gpe_core::worker::metrics::WorkerMetrics::with_labels(&store, "app_worker_", &labels, "1")?;
    /// worker.sample();
    /// let text = gpe_core::expose::encode_text(
    ///     &gpe_core::MultiProcessCollector::new(dir.path()).gather(),
    /// )?;
    /// assert!(text.contains(r#"app_worker_state{pid=""#));
    /// assert!(text.contains(r#"service="upper",state="running",worker_id="1"} 1"#));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`new`](Self::new); also for an invalid constant label.
    pub fn with_labels(
        store: &Store,
        prefix: &str,
        const_labels: &[(String, String)],
        worker_id: impl Into<String>,
    ) -> Result<WorkerMetrics, Error> {
        let worker_id = worker_id.into();
        let opts = |name: &str, help: &str| {
            let mut o = Opts::new(format!("{prefix}{name}"), help);
            for (k, v) in const_labels {
                o = o.const_label(k, v);
            }
            o
        };
        let gauge = |name: &str, help: &str| -> Result<Gauge, Error> {
            GaugeVec::new(opts(name, help), &["worker_id"], GaugeMode::LiveAll, store)?
                .with_label_values(&[&worker_id])
        };
        let memory = gauge("memory_bytes", "Worker resident memory in bytes.")?;
        let cpu = gauge(
            "cpu_percent",
            "Worker CPU use over the last sampling interval, in percent of one core.",
        )?;
        let uptime = gauge("uptime_seconds", "Seconds since the worker started.")?;
        let state_vec = GaugeVec::new(
            opts(
                "state",
                "Worker state: 1 for the current state, 0 for the others.",
            ),
            &["worker_id", "state"],
            GaugeMode::LiveAll,
            store,
        )?;
        let states = WorkerState::ALL
            .iter()
            .map(|s| Ok((*s, state_vec.with_label_values(&[&worker_id, s.as_str()])?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let restarts = CounterVec::new(
            opts(
                "restart_total",
                "Worker exits by reason, counted by the worker.",
            ),
            &["worker_id", "reason"],
            store,
        )?;
        let w = WorkerMetrics {
            inner: Arc::new(WorkerInner {
                worker_id,
                memory,
                cpu,
                uptime,
                states,
                restarts,
                started: Instant::now(),
                last_cpu: Mutex::new(None),
            }),
        };
        w.set_state(WorkerState::Running);
        Ok(w)
    }

    /// The `worker_id` label value.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Set the current state (1 for it, 0 for the others).
    pub fn set_state(&self, state: WorkerState) {
        for (s, g) in &self.inner.states {
            g.set(if *s == state { 1.0 } else { 0.0 });
        }
    }

    /// Count one exit of this worker for `reason`. Prefer a
    /// [`StopRecord`](super::lifecycle::StopRecord), which also sets the state and counts each
    /// stage of a stop once.
    pub fn record_restart(&self, reason: StopReason) {
        let c: Result<Counter, _> = self
            .inner
            .restarts
            .with_label_values(&[&self.inner.worker_id, reason.as_str()]);
        match c {
            Ok(c) => c.inc(),
            Err(e) => tracing::warn!(error = %e, "cannot record a worker restart"),
        }
    }

    /// Sample memory, CPU and uptime now. The first CPU sample (no earlier one to compare with)
    /// sets 0.
    pub fn sample(&self) {
        let i = &self.inner;
        i.uptime.set(i.started.elapsed().as_secs_f64());
        let Some(stat) = super::procfs::stat(std::process::id()) else {
            return;
        };
        i.memory.set(stat.rss_bytes as f64);
        let (cpu, now) = (stat.cpu_seconds, Instant::now());
        let mut last = i.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let percent = match *last {
            Some((t, c)) => {
                let wall = now.duration_since(t).as_secs_f64();
                if wall > 0.0 {
                    ((cpu - c) / wall * 100.0).max(0.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        *last = Some((now, cpu));
        i.cpu.set(percent);
    }

    /// Sample now and then every `interval` on a background thread, until the returned handle
    /// is dropped or [`SamplerHandle::stop`]ped.
    ///
    /// # Errors
    /// [`Error::ZeroInterval`] for a zero interval.
    pub fn spawn_sampler(&self, interval: Duration) -> Result<SamplerHandle, Error> {
        if interval.is_zero() {
            return Err(Error::ZeroInterval);
        }
        let (tx, rx) = mpsc::channel::<()>();
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("gpe-worker-sampler".to_owned())
            .spawn(move || loop {
                me.sample();
                match rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            })
            .map_err(|source| Error::Spawn {
                what: "the worker sampler thread",
                source,
            })?;
        Ok(SamplerHandle {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

/// Stops the sampler thread of [`WorkerMetrics::spawn_sampler`] when dropped.
#[derive(Debug)]
pub struct SamplerHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SamplerHandle {
    /// Stop the thread and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SamplerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

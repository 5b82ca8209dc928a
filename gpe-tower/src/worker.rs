//! Worker resource metrics, sampled on a timer (never on the request path).
//!
//! These types live in [`gpe_core::worker::metrics`] and [`gpe_core::worker::lifecycle`] (so that the `#[instrument_worker]` runtime
//! starts the same sampler) and are re-exported here unchanged; see there for the families
//! (`gunicorn_worker_memory_bytes`, `..._cpu_percent`, `..._uptime_seconds`, `..._state`,
//! `..._restart_total`). Their errors are [`gpe_core::Error`], which converts into
//! [`BuildError::Store`](crate::BuildError::Store) with `?`.
//!
//! ```
//! # fn main() -> Result<(), gpe_tower::BuildError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = gpe_core::Store::open(dir.path())?;
//! let worker = gpe_tower::WorkerMetrics::new(&store, "3")?;
//! let sampler = worker.spawn_sampler(std::time::Duration::from_secs(5))?;
//! // ... serve ...
//! worker.set_state(gpe_tower::WorkerState::Quitting);
//! worker.record_restart(gpe_tower::RestartReason::Quit);
//! drop(sampler); // stops the thread
//! # Ok(())
//! # }
//! ```

pub use gpe_core::worker::lifecycle::{StopReason, StopRecord};
pub use gpe_core::worker::metrics::{RestartReason, SamplerHandle, WorkerMetrics, WorkerState};

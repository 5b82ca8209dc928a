//! The crate's error type.

/// Errors building the metrics of this crate, and starting or running a worker
/// ([`serve`](crate::serve), feature `axum`): gpe-core's [`HostError`](gpe_core::worker::host::HostError),
/// shared with gpe-actix.
pub use gpe_core::worker::host::HostError as BuildError;

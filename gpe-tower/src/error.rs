//! The crate's error type.

/// Errors building the metrics of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The metric name prefix has characters a metric name cannot have.
    #[error("invalid metric name prefix {0:?}: use letters, digits, `_` and `:` (not starting with a digit)")]
    InvalidPrefix(String),

    /// Histogram buckets that are empty, not finite or not strictly increasing.
    #[error("invalid {what} buckets {buckets:?}: give a non-empty, strictly increasing list of finite numbers (+Inf is added)")]
    InvalidBuckets {
        /// Which histogram (`duration`, `size`).
        what: &'static str,
        /// The buckets given.
        buckets: Vec<f64>,
    },

    /// A series cap of 0.
    #[error("the per-family series cap must be at least 1")]
    ZeroSeriesCap,

    /// A sampling interval of 0. No longer returned: [`WorkerMetrics::spawn_sampler`](crate::WorkerMetrics::spawn_sampler)
    /// (now in gpe-core) returns [`gpe_core::Error::ZeroInterval`], which converts into
    /// [`BuildError::Store`]; kept so that existing matches still compile.
    #[error("the sampling interval must be longer than 0")]
    ZeroInterval,

    /// The store rejected a family or could not be opened.
    #[error(transparent)]
    Store(#[from] gpe_core::Error),
}

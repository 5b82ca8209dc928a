//! The errors of setting up request metrics.

/// Why [`RequestMetrics`](super::RequestMetrics) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestMetricsError {
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

    /// A label name that cannot be added ([`RequestMetricsBuilder::label`](super::RequestMetricsBuilder::label)).
    #[error("invalid label name {0:?}: use letters, digits and `_` (not starting with a digit or `__`), not one the request families already have (worker_id, method, endpoint, status, error_type), and each name once")]
    InvalidLabel(String),

    /// A series cap of 0.
    #[error("the per-family series cap must be at least 1")]
    ZeroSeriesCap,

    /// The store rejected a family or could not be opened.
    #[error(transparent)]
    Store(#[from] crate::error::Error),
}

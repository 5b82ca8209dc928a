//! The crate's error type.

use std::path::PathBuf;

/// Errors returned by gpe-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric name, label name or help text was rejected at registration.
    #[error("invalid metric definition `{metric}`: {reason}")]
    InvalidMetric {
        /// The metric's name.
        metric: String,
        /// What is wrong with it.
        #[source]
        reason: Rejection,
    },

    /// A metric was used with the wrong number of label values.
    #[error("metric `{metric}` takes {expected} label value(s) ({names}), got {got}")]
    LabelCount {
        /// The metric's name.
        metric: String,
        /// How many label values the metric was declared with.
        expected: usize,
        /// The declared label names, comma separated.
        names: String,
        /// How many were given.
        got: usize,
    },

    /// A histogram's buckets are not strictly increasing finite numbers.
    #[error("histogram `{metric}` has invalid buckets {buckets:?}: expected strictly increasing finite numbers")]
    InvalidBuckets {
        /// The histogram's name.
        metric: String,
        /// The buckets given.
        buckets: Vec<f64>,
    },

    /// A native histogram's options are out of range ([`NativeOpts`](crate::native::NativeOpts)).
    #[error("invalid native histogram options: {0}")]
    InvalidNative(String),

    /// A gauge multiprocess mode name was not recognised.
    #[error("unknown gauge multiprocess mode {0:?}: expected one of all, liveall, min, max, sum, mostrecent, livemin, livemax, livesum, livemostrecent")]
    UnknownGaugeMode(String),

    /// The same metric name was registered twice with a different shape.
    #[error("metric `{0}` is already registered in this store with a different type, help text or label names")]
    Conflict(String),

    /// A file or directory of the store could not be used.
    #[error("{action} {path}: {source}")]
    Io {
        /// What gpe-core was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A metrics file grew past what the Python-compatible format can address (2 GiB).
    #[error("metrics file {0} is full (2 GiB): too many series in one process")]
    FileFull(PathBuf),

    /// A sampling interval of zero ([`WorkerMetrics::spawn_sampler`](crate::worker::metrics::WorkerMetrics::spawn_sampler)).
    #[error("the sampling interval must be longer than 0")]
    ZeroInterval,

    /// A background thread could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Encoding an exposition failed.
    #[error(transparent)]
    Exposition(#[from] crate::expose::ExpositionError),

    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::expose::config::ConfigError),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Why a metric definition was rejected ([`Error::InvalidMetric`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The `prometheus` crate refused the name, a label name or the help text.
    #[error(transparent)]
    Prometheus(#[from] prometheus::Error),
    /// A label name starting with `__`.
    #[error("label name `{0}` starts with `__`, which Prometheus reserves for internal use")]
    ReservedPrefix(String),
    /// A label name the metric type uses itself (`le` for histograms, `quantile`, `pid` for
    /// gauges).
    #[error("label name `{0}` is reserved for this metric type")]
    ReservedLabel(String),
}

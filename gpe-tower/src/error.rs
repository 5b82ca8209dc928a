//! The crate's error type.

/// Errors building the metrics of this crate, and starting or running a worker
/// ([`serve`](crate::serve), feature `axum`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The request metrics could not be set up: a bad prefix, buckets or series cap.
    #[error(transparent)]
    RequestMetrics(#[from] gpe_core::http::RequestMetricsError),

    /// A sampling interval of 0, given to `WorkerBuilder::sample_interval` (feature `axum`).
    /// [`WorkerMetrics::spawn_sampler`](crate::WorkerMetrics::spawn_sampler) (now in gpe-core)
    /// returns [`gpe_core::Error::ZeroInterval`] instead, which converts into
    /// [`BuildError::Store`].
    #[error("the sampling interval must be longer than 0")]
    ZeroInterval,

    /// The store rejected a family or could not be opened.
    #[error(transparent)]
    Store(#[from] gpe_core::Error),

    /// The gpe-master worker environment (`LISTEN_FDS`, `GPE_*`) cannot be used.
    #[error("reading the worker environment: {0}")]
    Worker(#[from] gpe_core::worker::WorkerError),

    /// Started by gpe-master (`GPE_WORKER_ID` set), but no listener was inherited.
    #[error("gpe-master passed no listener (LISTEN_FDS is 0 or unset): check the master's --bind")]
    NoListener,

    /// An inherited listener of a kind that cannot be served.
    #[error("an inherited listener is neither TCP nor a Unix-domain stream socket")]
    UnsupportedListener,

    /// A bind address that is neither `HOST:PORT` nor `unix:PATH`.
    #[error("invalid bind address {0:?}: use HOST:PORT (127.0.0.1:8000, [::1]:8000) or unix:PATH")]
    InvalidBind(String),

    /// The standalone address could not be bound.
    #[error("cannot bind {addr}: {source} (is another process using it? pick another address)")]
    Bind {
        /// The address, as given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Called outside a tokio runtime.
    #[error("no tokio runtime: build and serve the worker inside one (with its I/O and time drivers enabled, e.g. `#[tokio::main]`)")]
    NoRuntime,

    /// A signal handler (TERM, QUIT, INT, USR1) could not be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] std::io::Error),

    /// A `PROMETHEUS_*` variable of the standalone `/metrics` server has an invalid value.
    #[error(transparent)]
    Config(#[from] gpe_core::expose::config::ConfigError),

    /// The standalone `/metrics` server could not start.
    #[cfg(feature = "axum")]
    #[error(transparent)]
    MetricsServer(#[from] gpe_core::expose::server::ServerError),

    /// A listener could not be registered with the runtime, or serving failed.
    #[error("serving: {0}")]
    Io(#[source] std::io::Error),
}

impl From<gpe_core::worker::InvalidBindAddr> for BuildError {
    fn from(e: gpe_core::worker::InvalidBindAddr) -> Self {
        BuildError::InvalidBind(e.0)
    }
}

//! Everything a pre-fork worker needs around its application, whatever serves it: the
//! framework-neutral host that `gpe_tower::serve` (axum) and `gpe_actix::serve` (actix-web) are
//! thin layers over (feature `server`).
//!
//! [`Host::builder`] → [`HostBuilder::build`] reads the worker environment, opens the store,
//! takes gpe-master's listeners (or binds one standalone), builds the request metrics, starts the
//! worker resource sampler, installs the signal handlers and the [`StopRecord`], and, standalone,
//! binds this process's own `/metrics`. A framework adapter then takes the listeners
//! ([`Host::take_listeners`]), starts the background tasks ([`Host::start`]: heartbeat and the
//! standalone `/metrics`), serves its app until the [`Shutdown`] says so, tells the master it
//! serves ([`Host::ready`]), and ends with [`Host::finish`].
//!
//! ```
//! use gpe_core::worker::host::Host;
//! use gpe_core::worker::shutdown::StopReason;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut host = Host::builder()
//!     .bind("127.0.0.1:0")?
//!     .store(gpe_core::Store::open(dir.path())?)
//!     .no_metrics_server()
//!     .build()?;
//! let listeners = host.take_listeners(); // non-blocking std listeners, for any server
//! assert_eq!(listeners.len(), 1);
//! let running = host.start();
//! host.ready();
//! // ... serve `listeners` until `host.shutdown()` says stop ...
//! host.shutdown().stop(StopReason::Term);
//! host.finish(running); // state "stopping", restart_total{reason="term"} recorded
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::StopRecord;
use super::metrics::{SamplerHandle, WorkerMetrics};
use super::shutdown::Shutdown;
use super::{env, BindAddr, InvalidBindAddr, Listener, WorkerContext, WorkerError, DEFAULT_BIND};
use crate::collect::MultiProcessCollector;
use crate::error::Error;
use crate::expose::config::ConfigError;
use crate::expose::server::{MetricsServer, ServerConfig, ServerError};
use crate::http::access::{AccessLog, AccessLogError};
use crate::http::{RequestMetrics, RequestMetricsBuilder, RequestMetricsError};
use crate::store::Store;

/// How often the worker resource metrics are sampled unless
/// [`HostBuilder::sample_interval`] says.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Why a worker could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The request metrics could not be set up: a bad prefix, buckets or series cap.
    #[error(transparent)]
    RequestMetrics(#[from] RequestMetricsError),

    /// A sampling interval of 0 ([`HostBuilder::sample_interval`]).
    #[error("the sampling interval must be longer than 0")]
    ZeroInterval,

    /// The store rejected a family or could not be opened.
    #[error(transparent)]
    Store(#[from] Error),

    /// The gpe-master worker environment (`LISTEN_FDS`, `GPE_*`) cannot be used.
    #[error("reading the worker environment: {0}")]
    Worker(#[from] WorkerError),

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
    Config(#[from] ConfigError),

    /// The standalone `/metrics` server could not start.
    #[error(transparent)]
    MetricsServer(#[from] ServerError),

    /// The access log asked for (`GPE_ACCESS_LOGFILE`, `GPE_ACCESS_LOGFORMAT`) cannot be
    /// opened, or its format does not parse.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),

    /// A listener could not be registered with the runtime, or serving failed.
    #[error("serving: {0}")]
    Io(#[source] std::io::Error),
}

impl HostError {
    /// The exit status a worker ends with for this error: 3, gunicorn's worker boot error, on
    /// which gpe-master stops instead of respawning a worker that cannot start, for every error
    /// at start; 1 for a failure while serving ([`HostError::Io`]).
    ///
    /// ```
    /// use gpe_core::worker::host::HostError;
    /// assert_eq!(HostError::NoListener.exit_code(), 3);
    /// assert_eq!(HostError::Io(std::io::Error::other("reset")).exit_code(), 1);
    /// ```
    pub fn exit_code(&self) -> u8 {
        match self {
            HostError::Io(_) => 1,
            _ => 3,
        }
    }
}

/// What a worker's `main` returns to end with the exit status gpe-master expects: 0 after a
/// stop, [`HostError::exit_code`] after an error (written to stderr).
///
/// ```no_run
/// use gpe_core::worker::host::{Exit, HostError};
///
/// async fn serve() -> Result<(), HostError> {
///     // ... build a worker (gpe_tower::serve, gpe_actix::serve) and serve ...
/// #   Ok(())
/// }
///
/// #[tokio::main]
/// async fn main() -> Exit {
///     serve().await.into()
/// }
/// ```
#[derive(Debug)]
pub struct Exit(Result<(), HostError>);

impl From<Result<(), HostError>> for Exit {
    fn from(result: Result<(), HostError>) -> Exit {
        Exit(result)
    }
}

impl std::process::Termination for Exit {
    fn report(self) -> std::process::ExitCode {
        match self.0 {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                // As std's `Termination` for `Result`: on stderr, whether or not a tracing
                // subscriber is set up.
                eprintln!("Error: {e}");
                std::process::ExitCode::from(e.exit_code())
            }
        }
    }
}

impl From<InvalidBindAddr> for HostError {
    fn from(e: InvalidBindAddr) -> Self {
        HostError::InvalidBind(e.0)
    }
}

#[derive(Debug)]
enum RequestMetricsChoice {
    Build(RequestMetricsBuilder),
    Built(RequestMetrics),
    Off,
}

#[derive(Debug)]
enum AccessLogChoice {
    FromEnv,
    Given(AccessLog),
    Off,
}

#[derive(Debug)]
enum MetricsServerChoice {
    FromEnv,
    Config(ServerConfig),
    Off,
}

/// How to start a [`Host`]; see the [module docs](self).
#[derive(Debug)]
#[must_use = "a HostBuilder does nothing until .build()"]
pub struct HostBuilder {
    bind: Option<BindAddr>,
    store: Option<Store>,
    request_metrics: RequestMetricsChoice,
    sample_interval: Duration,
    metrics_server: MetricsServerChoice,
    access_log: AccessLogChoice,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            bind: None,
            store: None,
            request_metrics: RequestMetricsChoice::Build(RequestMetrics::builder()),
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            metrics_server: MetricsServerChoice::FromEnv,
            access_log: AccessLogChoice::FromEnv,
        }
    }
}

impl HostBuilder {
    /// The address to bind standalone: `HOST:PORT` or `unix:PATH` (default `GPE_BIND`, else
    /// [`DEFAULT_BIND`]). Ignored under gpe-master, whose listeners are served instead.
    ///
    /// # Errors
    /// [`HostError::InvalidBind`] when `addr` is neither spelling.
    pub fn bind(mut self, addr: &str) -> Result<Self, HostError> {
        self.bind = Some(addr.parse()?);
        Ok(self)
    }

    /// As [`bind`](Self::bind), with an address already parsed (from a command line, say).
    pub fn bind_addr(mut self, addr: BindAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Write metrics into this store instead of [`Store::from_env`]'s
    /// (`PROMETHEUS_MULTIPROC_DIR`). The standalone `/metrics` server reads its directory.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Record requests with metrics built from `builder` (the default is
    /// [`RequestMetrics::builder()`]); its `worker_id` defaults to the worker's.
    pub fn request_metrics(mut self, builder: RequestMetricsBuilder) -> Self {
        self.request_metrics = RequestMetricsChoice::Build(builder);
        self
    }

    /// Record requests with metrics already built (their store should be this worker's).
    pub fn with_request_metrics(mut self, metrics: RequestMetrics) -> Self {
        self.request_metrics = RequestMetricsChoice::Built(metrics);
        self
    }

    /// Record no request metrics (to measure their cost, or to record them another way).
    /// Worker metrics are still recorded.
    pub fn no_request_metrics(mut self) -> Self {
        self.request_metrics = RequestMetricsChoice::Off;
        self
    }

    /// How often to sample the worker's memory, CPU and uptime (default
    /// [`DEFAULT_SAMPLE_INTERVAL`]).
    ///
    /// # Errors
    /// [`HostError::ZeroInterval`] for a zero interval.
    pub fn sample_interval(mut self, interval: Duration) -> Result<Self, HostError> {
        if interval.is_zero() {
            return Err(HostError::ZeroInterval);
        }
        self.sample_interval = interval;
        Ok(self)
    }

    /// Standalone, serve `/metrics` with this configuration instead of
    /// [`ServerConfig::from_env`]'s.
    pub fn metrics_server(mut self, config: ServerConfig) -> Self {
        self.metrics_server = MetricsServerChoice::Config(config);
        self
    }

    /// Serve no `/metrics` standalone (another process scrapes the store's directory).
    pub fn no_metrics_server(mut self) -> Self {
        self.metrics_server = MetricsServerChoice::Off;
        self
    }

    /// Write the access log to `log` instead of the one the environment asks for
    /// ([`AccessLog::from_env`]: gpe-master's `--access-logfile` and `--access-logformat`).
    /// Requests are logged only with request metrics (the log line is written by each request's
    /// tracker).
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = AccessLogChoice::Given(log);
        self
    }

    /// Write no access log, whatever the environment says.
    pub fn no_access_log(mut self) -> Self {
        self.access_log = AccessLogChoice::Off;
        self
    }

    /// Read the environment, open the store, take or bind the listeners (non-blocking), build
    /// the metrics, start the sampler, install the signal handlers and, standalone, bind
    /// `/metrics`. Must be called inside a tokio runtime with its I/O and time drivers enabled
    /// (actix-web's runtime is one).
    ///
    /// # Errors
    /// - [`HostError::NoRuntime`] outside a tokio runtime;
    /// - [`HostError::Worker`] when a `LISTEN_*` / `GPE_*` variable or an inherited fd cannot
    ///   be used, [`HostError::NoListener`] when the master passed none;
    /// - [`HostError::InvalidBind`] / [`HostError::Bind`] when the standalone address is
    ///   misspelled or cannot be bound;
    /// - [`HostError::Store`] / [`HostError::RequestMetrics`] when the store cannot be opened or
    ///   rejects a family;
    /// - [`HostError::Signals`] when a signal handler cannot be installed;
    /// - [`HostError::Config`] / [`HostError::MetricsServer`] when the standalone `/metrics`
    ///   server's configuration is invalid or its address cannot be bound.
    pub fn build(self) -> Result<Host, HostError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(HostError::NoRuntime);
        }
        let ctx = Arc::new(WorkerContext::from_env()?);
        let store = match self.store {
            Some(s) => s,
            None => Store::from_env()?,
        };
        let worker_id = ctx.worker_id().to_string();
        let listeners = take_or_bind(&ctx, self.bind)?;

        let request_metrics = match self.request_metrics {
            RequestMetricsChoice::Build(b) => {
                Some(b.worker_id_or(worker_id.clone()).build(&store)?)
            }
            RequestMetricsChoice::Built(m) => Some(m),
            RequestMetricsChoice::Off => None,
        };
        let access_log = match self.access_log {
            AccessLogChoice::FromEnv => AccessLog::from_env()?,
            AccessLogChoice::Given(log) => Some(log),
            AccessLogChoice::Off => None,
        };
        let worker_metrics = WorkerMetrics::new(&store, worker_id.clone())?;
        let sampler = worker_metrics.spawn_sampler(self.sample_interval)?;

        let shutdown = Shutdown::install(&ctx).map_err(HostError::Signals)?;
        // Record why the worker stops in its metrics at the moment it does: once for the
        // graceful stop and once more if it turns fast.
        let stops = Arc::new(StopRecord::new(worker_metrics.clone()));
        shutdown.record_stops(&stops);

        // Standalone only: gpe-master serves /metrics for all its workers.
        let config = match self.metrics_server {
            _ if ctx.is_managed() => None,
            MetricsServerChoice::FromEnv => Some(ServerConfig::from_env()?),
            MetricsServerChoice::Config(c) => Some(c),
            MetricsServerChoice::Off => None,
        };
        let metrics_server = match config {
            Some(config) => {
                let collector = MultiProcessCollector::new(store.dir()).with_self_metrics();
                // `/ready` while the store directory is writable.
                let server = MetricsServer::bind(config, Arc::new(move || collector.scrape()))?
                    .readiness(crate::expose::server::store_writable(store.dir()));
                if let Ok(addr) = server.local_addr() {
                    tracing::info!(%addr, "metrics on http://{addr}/metrics");
                }
                Some(server)
            }
            None => None,
        };

        Ok(Host {
            ctx,
            store,
            worker_id,
            listeners,
            request_metrics,
            access_log,
            worker_metrics,
            sampler,
            shutdown,
            stops,
            metrics_server,
        })
    }
}

/// Under gpe-master its listeners (all of them), else one bound to `bind`, `GPE_BIND` or
/// [`DEFAULT_BIND`]; non-blocking.
fn take_or_bind(ctx: &WorkerContext, bind: Option<BindAddr>) -> Result<Vec<Listener>, HostError> {
    let listeners = if ctx.is_managed() {
        let inherited = ctx.listeners()?;
        if inherited.is_empty() {
            return Err(HostError::NoListener);
        }
        inherited
    } else {
        let addr = match bind {
            Some(a) => a,
            None => match std::env::var(env::BIND) {
                Ok(v) if !v.is_empty() => v.parse()?,
                _ => DEFAULT_BIND.parse()?,
            },
        };
        vec![addr.bind().map_err(|source| HostError::Bind {
            addr: addr.to_string(),
            source,
        })?]
    };
    for l in &listeners {
        l.set_nonblocking(true).map_err(HostError::Io)?;
    }
    Ok(listeners)
}

/// A worker ready to serve: listeners bound, metrics built, signal handlers installed. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Host {
    ctx: Arc<WorkerContext>,
    store: Store,
    worker_id: String,
    listeners: Vec<Listener>,
    request_metrics: Option<RequestMetrics>,
    access_log: Option<AccessLog>,
    worker_metrics: WorkerMetrics,
    sampler: SamplerHandle,
    shutdown: Shutdown,
    stops: Arc<StopRecord>,
    metrics_server: Option<MetricsServer>,
}

/// The background tasks of a serving [`Host`] (heartbeat, standalone `/metrics`), stopped by
/// [`Host::finish`] or when dropped.
#[derive(Debug)]
#[must_use = "the background tasks stop when this is dropped"]
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Host {
    /// Start describing a worker.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The worker side of gpe-master's contract (empty standalone).
    pub fn context(&self) -> &WorkerContext {
        &self.ctx
    }

    /// Whether gpe-master started this process.
    pub fn is_managed(&self) -> bool {
        self.ctx.is_managed()
    }

    /// The store the metrics are written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `worker_id` label value (`GPE_WORKER_ID`, `0` standalone).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The request metrics to record into, if any.
    pub fn request_metrics(&self) -> Option<&RequestMetrics> {
        self.request_metrics.as_ref()
    }

    /// The access log the adapters write to, if any (gpe-master's `--access-logfile`, or
    /// [`HostBuilder::access_log`]).
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    /// The worker metrics (sampled; state and restarts recorded on stop).
    pub fn worker_metrics(&self) -> &WorkerMetrics {
        &self.worker_metrics
    }

    /// The stop state: [`Shutdown::stop`] stops the worker as TERM or QUIT would.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The listeners not taken yet (non-blocking).
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Take the listeners to serve (non-blocking std listeners: register them with the server's
    /// runtime).
    pub fn take_listeners(&mut self) -> Vec<Listener> {
        std::mem::take(&mut self.listeners)
    }

    /// Standalone, the address of this process's `/metrics` server.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server
            .as_ref()
            .and_then(|s| s.local_addr().ok())
    }

    /// Start the background tasks on the current tokio runtime: the heartbeat (a task of the
    /// serving runtime, not a thread: a runtime whose threads are all stuck stops heartbeating,
    /// and the master's `--timeout` replaces the worker), standalone, the `/metrics` server, and
    /// with an access log file, its reopening on USR1 (logrotate; gpe-master forwards USR1).
    pub fn start(&mut self) -> Running {
        let mut tasks: Vec<_> = self
            .ctx
            .heartbeat_task()
            .map(tokio::spawn)
            .into_iter()
            .collect();
        if let Some(server) = self.metrics_server.take() {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = server.serve(std::future::pending()).await {
                    tracing::error!(error = %e, "metrics server failed");
                }
            }));
        }
        if let Some(log) = self.access_log.clone().filter(|l| l.path().is_some()) {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(mut usr1) => tasks.push(tokio::spawn(async move {
                    while usr1.recv().await.is_some() {
                        match log.reopen() {
                            Ok(()) => {
                                tracing::info!(path = ?log.path(), "USR1: access log reopened")
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "USR1: cannot reopen the access log")
                            }
                        }
                    }
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the USR1 handler: the access log will not be reopened")
                }
            }
        }
        Running { tasks }
    }

    /// Tell gpe-master (if any) that this worker serves: call it once its listeners are
    /// served. The master's max-requests hand-over waits for it.
    pub fn ready(&self) {
        if let Some(master) = self.ctx.master_link() {
            master.ready();
        }
    }

    /// The worker has stopped serving: stop the background tasks, record the stop (state and
    /// restart reason), stop the sampler.
    pub fn finish(self, running: Running) {
        drop(running);
        self.shutdown.record_now(&self.stops);
        drop(self.sampler);
    }
}

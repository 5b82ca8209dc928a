//! Serve an [`axum::Router`] as a gpe worker, under gpe-master or standalone (feature `axum`).
//!
//! [`Worker::builder`] → [`WorkerBuilder::build`] → [`Worker::serve`] does what every pre-fork
//! worker needs around the application:
//!
//! - reads the worker environment ([`WorkerContext::from_env`]) and opens the store
//!   ([`Store::from_env`], or [`WorkerBuilder::store`]);
//! - under gpe-master, serves every inherited listener (TCP and Unix-domain); standalone, binds
//!   [`WorkerBuilder::bind`] (`HOST:PORT` or `unix:PATH`; default `GPE_BIND`, else
//!   [`DEFAULT_BIND`]);
//! - wraps the router in the [`MetricsLayer`] (from a [`RequestMetricsBuilder`], a built
//!   [`RequestMetrics`], or none), a request counter for `GPE_MAX_REQUESTS`, and
//!   `Connection: close` on every response once the worker is stopping;
//! - samples [`WorkerMetrics`] on a timer, and records the worker's state and restart reason when
//!   it stops (`term`, `quit` or `max_requests`); heartbeats for the master from a task of the
//!   runtime ([`WorkerContext::heartbeat_task`]);
//! - with gpe-master's `--access-logfile` (`GPE_ACCESS_LOGFILE`, or [`WorkerBuilder::access_log`]),
//!   writes gunicorn's access log: a line per request, in `--access-logformat`
//!   ([`gpe_core::http::access`]), reopened on USR1;
//! - standalone only, serves this process's own `/metrics` ([`ServerConfig::from_env`]:
//!   `PROMETHEUS_BIND_ADDRESS`, `PROMETHEUS_METRICS_PORT`, TLS, basic auth); under gpe-master
//!   the master serves them for every worker;
//! - serves until a graceful stop has drained, a fast stop, or the graceful deadline
//!   (see [`Worker::serve`] and [`gpe_core::worker::shutdown`]).
//!
//! A whole service (`no_run`: it binds 127.0.0.1:8000, or serves gpe-master's listeners):
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use gpe_tower::serve::Worker;
//! use gpe_tower::RequestMetrics;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), gpe_tower::BuildError> {
//!     let app = Router::new()
//!         .route("/", get(|| async { "hello\n" }))
//!         .route("/health", get(|| async { "ok\n" }));
//!     Worker::builder()
//!         .bind("127.0.0.1:8000")? // standalone only: under gpe-master its listeners are served
//!         .request_metrics(RequestMetrics::builder().exclude_path("/health"))
//!         .build()?
//!         .serve(app)
//!         .await
//! }
//! ```
//!
//! The same, stopped from the program (a [`Shutdown`] stop is what TERM, QUIT, INT and
//! max-requests do):
//!
//! ```
//! use axum::{routing::get, Router};
//! use gpe_core::worker::shutdown::StopReason;
//! use gpe_tower::serve::{LocalAddr, Worker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let worker = Worker::builder()
//!     .bind("127.0.0.1:0")?
//!     .store(gpe_core::Store::open(dir.path())?)
//!     .no_metrics_server()
//!     .build()?;
//! let Some(LocalAddr::Tcp(addr)) = worker.local_addrs().into_iter().next() else {
//!     unreachable!("bound to TCP")
//! };
//! println!("serving on http://{addr}/");
//! let shutdown = worker.shutdown().clone();
//! let serving = tokio::spawn(worker.serve(Router::new().route("/", get(|| async { "hi" }))));
//!
//! shutdown.stop(StopReason::Quit);
//! serving.await??;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use gpe_core::expose::server::ServerConfig;
use gpe_core::http::access::AccessLog;
use gpe_core::worker::host::{Host, HostBuilder};
use gpe_core::worker::shutdown::{Shutdown, Tracked};
use gpe_core::worker::{Listener, WorkerContext};
use gpe_core::Store;

use crate::{BuildError, MetricsLayer, RequestMetrics, RequestMetricsBuilder, WorkerMetrics};

/// How often [`WorkerMetrics`] are sampled unless [`WorkerBuilder::sample_interval`] says.
pub use gpe_core::worker::host::DEFAULT_SAMPLE_INTERVAL;

/// The request body of what [`Worker::serve_service`] serves (axum's body type, which it is
/// served with).
pub use axum::body::Body;

/// The standalone bind address (`HOST:PORT` or `unix:PATH`), shared with every worker kind.
pub use gpe_core::worker::{BindAddr, InvalidBindAddr, DEFAULT_BIND};

/// Where a [`Worker`] accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalAddr {
    /// A TCP listener's address (port 0 resolved).
    Tcp(SocketAddr),
    /// A Unix-domain listener's path (`None` when unnamed).
    Unix(Option<PathBuf>),
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Tcp(a) => write!(f, "http://{a}/"),
            LocalAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            LocalAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

/// How to start a [`Worker`]; see the [module docs](self). The framework-neutral part is
/// gpe-core's [`HostBuilder`]; this adds the axum serving.
#[derive(Debug, Default)]
#[must_use = "a WorkerBuilder does nothing until .build()"]
pub struct WorkerBuilder {
    host: HostBuilder,
}

impl WorkerBuilder {
    /// The address to bind standalone: `HOST:PORT` or `unix:PATH` (default `GPE_BIND`, else
    /// [`DEFAULT_BIND`]). Ignored under gpe-master, whose listeners are served instead.
    ///
    /// # Errors
    /// [`BuildError::InvalidBind`] when `addr` is neither spelling.
    pub fn bind(self, addr: &str) -> Result<Self, BuildError> {
        Ok(WorkerBuilder {
            host: self.host.bind(addr)?,
        })
    }

    /// As [`bind`](Self::bind), with an address already parsed (from a command line, say).
    pub fn bind_addr(self, addr: BindAddr) -> Self {
        WorkerBuilder {
            host: self.host.bind_addr(addr),
        }
    }

    /// Write metrics into this store instead of [`Store::from_env`]'s
    /// (`PROMETHEUS_MULTIPROC_DIR`). The standalone `/metrics` server reads its directory.
    pub fn store(self, store: Store) -> Self {
        WorkerBuilder {
            host: self.host.store(store),
        }
    }

    /// Record requests with metrics built from `builder` (the default is
    /// [`RequestMetrics::builder()`]); its `worker_id` defaults to the worker's.
    pub fn request_metrics(self, builder: RequestMetricsBuilder) -> Self {
        WorkerBuilder {
            host: self.host.request_metrics(builder),
        }
    }

    /// Record requests with metrics already built (their store should be this worker's).
    pub fn with_request_metrics(self, metrics: RequestMetrics) -> Self {
        WorkerBuilder {
            host: self.host.with_request_metrics(metrics),
        }
    }

    /// Add no [`MetricsLayer`] (to measure its cost, or to add one with another label hook
    /// to the router yourself). Worker metrics are still recorded.
    pub fn no_request_metrics(self) -> Self {
        WorkerBuilder {
            host: self.host.no_request_metrics(),
        }
    }

    /// Write the access log to `log` instead of the one gpe-master asks for
    /// (`GPE_ACCESS_LOGFILE`, `GPE_ACCESS_LOGFORMAT`; see [`AccessLog::from_env`]). Needs the
    /// request metrics (their tracker writes the line).
    pub fn access_log(self, log: AccessLog) -> Self {
        WorkerBuilder {
            host: self.host.access_log(log),
        }
    }

    /// Write no access log, whatever the environment says.
    pub fn no_access_log(self) -> Self {
        WorkerBuilder {
            host: self.host.no_access_log(),
        }
    }

    /// How often to sample the worker's memory, CPU and uptime (default
    /// [`DEFAULT_SAMPLE_INTERVAL`]).
    ///
    /// # Errors
    /// [`BuildError::ZeroInterval`] for a zero interval.
    pub fn sample_interval(self, interval: Duration) -> Result<Self, BuildError> {
        Ok(WorkerBuilder {
            host: self.host.sample_interval(interval)?,
        })
    }

    /// Standalone, serve `/metrics` with this configuration instead of
    /// [`ServerConfig::from_env`]'s.
    pub fn metrics_server(self, config: ServerConfig) -> Self {
        WorkerBuilder {
            host: self.host.metrics_server(config),
        }
    }

    /// Serve no `/metrics` standalone (another process scrapes the store's directory).
    pub fn no_metrics_server(self) -> Self {
        WorkerBuilder {
            host: self.host.no_metrics_server(),
        }
    }

    /// Read the environment, open the store, take or bind the listeners, build the metrics,
    /// start the sampler, install the signal handlers and, standalone, bind `/metrics`
    /// ([`HostBuilder::build`]); then register the listeners with the current tokio runtime.
    /// Must be called inside a tokio runtime with its I/O and time drivers enabled
    /// (`Builder::enable_all`, `#[tokio::main]`).
    ///
    /// # Errors
    /// As [`HostBuilder::build`], and [`BuildError::Io`] when a listener cannot be registered.
    ///
    /// # Panics
    /// Inside a tokio runtime built without the I/O or time driver (tokio's own panic).
    pub fn build(self) -> Result<Worker, BuildError> {
        let mut host = self.host.build()?;
        let listeners = host
            .take_listeners()
            .into_iter()
            .map(|l| {
                match l {
                    Listener::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Bound::Tcp),
                    Listener::Unix(l) => tokio::net::UnixListener::from_std(l).map(Bound::Unix),
                    _ => return Err(BuildError::UnsupportedListener),
                }
                .map_err(BuildError::Io)
            })
            .collect::<Result<_, _>>()?;
        Ok(Worker { host, listeners })
    }

    /// [`build`](Self::build), then [`Worker::serve`].
    ///
    /// # Errors
    /// As both.
    pub async fn serve(self, app: Router) -> Result<(), BuildError> {
        self.build()?.serve(app).await
    }
}

#[derive(Debug)]
enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Bound {
    fn local_addr(&self) -> Option<LocalAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok().map(LocalAddr::Tcp),
            Bound::Unix(l) => l
                .local_addr()
                .ok()
                .map(|a| LocalAddr::Unix(a.as_pathname().map(PathBuf::from))),
        }
    }
}

/// A worker ready to serve: listeners bound, metrics built, signal handlers installed. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Worker {
    host: Host,
    listeners: Vec<Bound>,
}

impl Worker {
    /// Start describing a worker.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// The worker side of gpe-master's contract (empty standalone).
    pub fn context(&self) -> &WorkerContext {
        self.host.context()
    }

    /// Whether gpe-master started this process.
    pub fn is_managed(&self) -> bool {
        self.host.is_managed()
    }

    /// The store the metrics are written to.
    pub fn store(&self) -> &Store {
        self.host.store()
    }

    /// The `worker_id` label value (`GPE_WORKER_ID`, `0` standalone).
    pub fn worker_id(&self) -> &str {
        self.host.worker_id()
    }

    /// The request metrics the [`MetricsLayer`] records into, if any.
    pub fn request_metrics(&self) -> Option<&RequestMetrics> {
        self.host.request_metrics()
    }

    /// The access log the [`MetricsLayer`] writes to, if any.
    pub fn access_log(&self) -> Option<&AccessLog> {
        self.host.access_log()
    }

    /// The worker metrics (sampled; state and restarts recorded on stop).
    pub fn worker_metrics(&self) -> &WorkerMetrics {
        self.host.worker_metrics()
    }

    /// The stop state: [`Shutdown::stop`] stops the worker as TERM or QUIT would.
    pub fn shutdown(&self) -> &Shutdown {
        self.host.shutdown()
    }

    /// Where the worker accepts connections.
    pub fn local_addrs(&self) -> Vec<LocalAddr> {
        self.listeners
            .iter()
            .filter_map(Bound::local_addr)
            .collect()
    }

    /// Standalone, the address of this process's `/metrics` server.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.host.metrics_addr()
    }

    /// Serve `app` on every listener until a graceful stop has drained, a fast stop, or the
    /// graceful deadline:
    ///
    /// - on a graceful stop (TERM, max-requests, a changed parent) stop accepting at once (the
    ///   other workers take the accept queue) and answer with `Connection: close`; once no
    ///   connection is open, or [`ACCEPT_SETTLE`](gpe_core::worker::shutdown::ACCEPT_SETTLE) later, ask
    ///   the open connections to finish; return when they have;
    /// - under gpe-master, max-requests first asks the master for a replacement and serves on
    ///   until the master's TERM, which comes once the replacement serves (it tells the master
    ///   so when its listeners are up, as this worker does);
    /// - on a fast stop (QUIT, INT) return at once;
    /// - `GPE_GRACEFUL_TIMEOUT` after a graceful stop, return with requests in flight (warns).
    ///
    /// Connections still open when it returns are dropped with the runtime (return from
    /// `main`). The worker's state and restart reason are recorded before it returns.
    ///
    /// # Errors
    /// [`BuildError::Io`] when serving a listener fails.
    pub async fn serve(self, app: Router) -> Result<(), BuildError> {
        let Worker {
            mut host,
            listeners,
        } = self;
        let running = host.start();
        let shutdown = host.shutdown().clone();
        let access_log = host.access_log().cloned();
        let with_remote = access_log.is_some();
        let app = stack(app, host.request_metrics().cloned(), access_log, &shutdown);

        let (worker_id, pid) = (host.worker_id().to_owned(), std::process::id());
        let mut tasks = tokio::task::JoinSet::new();
        for listener in listeners {
            if let Some(addr) = listener.local_addr() {
                tracing::info!(%worker_id, pid, "listening on {addr}");
            }
            match listener {
                // The client's address only for the access log: a request extension costs an
                // allocation per request.
                Bound::Tcp(l) if with_remote => {
                    tasks.spawn(serve_tcp_with_remote(l, app.clone(), shutdown.clone()))
                }
                Bound::Tcp(l) => tasks.spawn(serve_listener(l, app.clone(), shutdown.clone())),
                // A Unix-domain peer has no address: `%(h)s` is `-`.
                Bound::Unix(l) => tasks.spawn(serve_listener(l, app.clone(), shutdown.clone())),
            };
        }
        host.ready();
        let drained = async {
            while let Some(joined) = tasks.join_next().await {
                joined
                    .map_err(|e| BuildError::Io(std::io::Error::other(e)))?
                    .map_err(BuildError::Io)?;
            }
            Ok(())
        };
        let result = tokio::select! {
            r = drained => r,
            () = shutdown.fast() => Ok(()),
            () = shutdown.deadline() => {
                tracing::warn!("graceful timeout: exiting with requests in flight");
                Ok(())
            }
        };
        tasks.abort_all();
        host.finish(running);
        result
    }

    /// Serve any tower service as the whole application (a hyper `service_fn` behind
    /// `tower::service_fn`, tonic's `Routes::into_axum_router`, a `ServiceBuilder` stack): every
    /// request reaches it, with the same layers, listeners and stops as [`serve`](Self::serve).
    /// Without a router there is no `MatchedPath`: put a [`RouteTemplate`](crate::RouteTemplate)
    /// in the request extensions before the metrics layer reads it (build the worker with
    /// [`no_request_metrics`](WorkerBuilder::no_request_metrics) and add the
    /// [`MetricsLayer`] to your stack after your routing), or requests are `<unmatched>`.
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub async fn serve_service<S>(self, service: S) -> Result<(), BuildError>
    where
        S: tower_service::Service<Request, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.serve(Router::new().fallback_service(service)).await
    }
}

/// The router inside the metrics layer (with the access log, if any), the max-requests counter
/// and `Connection: close` while stopping (outermost).
fn stack(
    app: Router,
    metrics: Option<RequestMetrics>,
    access_log: Option<AccessLog>,
    shutdown: &Shutdown,
) -> Router {
    let app = match (metrics, access_log) {
        (Some(m), Some(log)) => app.layer(MetricsLayer::new(m).access_log(log)),
        (Some(m), None) => app.layer(MetricsLayer::new(m)),
        (None, _) => app,
    };
    let counter = shutdown.clone();
    let stopping = shutdown.clone();
    app.layer(axum::middleware::map_request(move |req: Request| {
        counter.count_request();
        std::future::ready(count_unsized_body(req))
    }))
    // Once stopping, every answer closes its connection: keep-alive clients reconnect (to
    // another worker) instead of losing a request to the close of an idle connection.
    .layer(axum::middleware::map_response(move |mut res: Response| {
        if stopping.is_stopping() {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        std::future::ready(res)
    }))
}

/// A request whose body size is unknown (chunked) gets its body counted for the metrics layer
/// ([`count_request_body`](crate::count_request_body), boxed back into an axum `Body`); others
/// pass untouched.
fn count_unsized_body(req: Request) -> Request {
    if crate::request_body::needs_counting(&req) {
        crate::count_request_body(req).map(axum::body::Body::new)
    } else {
        req
    }
}

/// Serve one listener until a graceful stop has settled and its connections are done.
async fn serve_listener<L>(listener: L, app: Router, shutdown: Shutdown) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: fmt::Debug,
{
    axum::serve(stop_accepting(listener, &shutdown), app)
        .with_graceful_shutdown(shutdown.settled())
        .await
}

/// As [`serve_listener`], with each request's client address in its extensions (for the access
/// log's `%(h)s`).
async fn serve_tcp_with_remote(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(stop_accepting(listener, &shutdown), WithRemote(app))
        .with_graceful_shutdown(shutdown.settled())
        .await
}

/// `listener`, stopping to accept on a graceful stop.
fn stop_accepting<L>(listener: L, shutdown: &Shutdown) -> StopAccepting<L> {
    // Stop accepting at once on a graceful stop, but ask the open connections to finish only a
    // moment later (see `gpe_core::worker::shutdown::ACCEPT_SETTLE`): one accepted just before the stop
    // may not have had its first request read yet, and a keep-alive client's next request may
    // be on its way.
    shutdown.settle_when_idle();
    StopAccepting {
        inner: listener,
        stop: Box::pin(shutdown.graceful()),
        stopped: false,
        shutdown: shutdown.clone(),
    }
}

/// Makes, per TCP connection, the router with the client's address put in each request's
/// extensions (what `into_make_service_with_connect_info` does, for our listener type).
#[derive(Clone)]
struct WithRemote(Router);

impl tower_service::Service<axum::serve::IncomingStream<'_, StopAccepting<tokio::net::TcpListener>>>
    for WithRemote
{
    type Response = AddRemote;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<AddRemote, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(
        &mut self,
        stream: axum::serve::IncomingStream<'_, StopAccepting<tokio::net::TcpListener>>,
    ) -> Self::Future {
        std::future::ready(Ok(AddRemote {
            app: self.0.clone(),
            remote: *stream.remote_addr(),
        }))
    }
}

/// The router of one connection, adding its client's address to each request.
#[derive(Clone)]
struct AddRemote {
    app: Router,
    remote: SocketAddr,
}

impl tower_service::Service<Request> for AddRemote {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower_service::Service<Request>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::<Request>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        req.extensions_mut().insert(self.remote);
        tower_service::Service::<Request>::call(&mut self.app, req)
    }
}

/// A listener that stops accepting (pends forever) once `stop` resolves, so the other workers
/// take the accept queue while this one finishes its connections. Every connection counts as
/// open while it lives, so a worker with none left stops waiting at once.
struct StopAccepting<L> {
    inner: L,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stopped: bool,
    shutdown: Shutdown,
}

impl<L: axum::serve::Listener> axum::serve::Listener for StopAccepting<L> {
    type Io = Tracked<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if !self.stopped {
            // An accept in progress counts as an open connection, from before the stop is
            // checked until the connection it yields closes: `settled` (which resolves as soon as
            // none is open) cannot slip in between a check that found no stop and the accept
            // that follows it. Else a connection accepted in that moment was shut down before
            // its request was read, and its client got a reset (seen about once in 100 runs of
            // the recycling test under load).
            let open = self.shutdown.track_connection();
            // The stop first: once the worker is stopping nothing more is accepted, even when a
            // connection is waiting.
            tokio::select! {
                biased;
                () = &mut self.stop => self.stopped = true,
                (io, addr) = self.inner.accept() => {
                    return (Tracked::with_guard(io, open), addr);
                }
            }
        }
        std::future::pending().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Worker::builder().build(),
            Err(BuildError::NoRuntime)
        ));
    }
}

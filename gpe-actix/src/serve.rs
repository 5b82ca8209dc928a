//! Serve an actix-web application as a gpe worker, under gpe-master or standalone, as
//! `gpe_tower::serve` does for axum.
//!
//! [`Worker::builder`] → [`WorkerBuilder::build`] → [`Worker::serve`] does what every pre-fork
//! worker needs around the application (the framework-neutral part is gpe-core's
//! [`Host`]):
//!
//! - reads the worker environment and opens the store;
//! - under gpe-master, serves every inherited listener (TCP and Unix-domain); standalone, binds
//!   [`WorkerBuilder::bind`] (`HOST:PORT` or `unix:PATH`; default `GPE_BIND`, else
//!   `127.0.0.1:8000`);
//! - wraps the application in [`ActixMetrics`] (unless
//!   [`no_request_metrics`](WorkerBuilder::no_request_metrics)), a request counter for
//!   `GPE_MAX_REQUESTS`, and `Connection: close` on every response once the worker is stopping;
//! - samples the worker resource metrics, heartbeats, and records the worker's state and restart
//!   reason when it stops;
//! - with gpe-master's `--access-logfile` (`GPE_ACCESS_LOGFILE`, or [`WorkerBuilder::access_log`]),
//!   writes gunicorn's access log: a line per request, in `--access-logformat`
//!   ([`gpe_core::http::access`]), reopened on USR1;
//! - standalone only, serves this process's own `/metrics`;
//! - on TERM (and max-requests) stops accepting at once, lets the open connections finish and
//!   returns; on QUIT or INT returns at once; `GPE_GRACEFUL_TIMEOUT` after a TERM, returns with
//!   requests in flight.
//!
//! A whole service (`no_run`: it binds 127.0.0.1:8000, or serves gpe-master's listeners):
//!
//! ```no_run
//! use actix_web::{web, App};
//! use gpe_actix::serve::Worker;
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), gpe_actix::BuildError> {
//!     Worker::builder()
//!         .bind("127.0.0.1:8000")? // standalone only: under gpe-master its listeners are served
//!         .build()?
//!         .serve(|| App::new().route("/", web::get().to(|| async { "hello\n" })))
//!         .await
//! }
//! ```
//!
//! The request metrics record the resource pattern (`/users/{id}`) as `endpoint`, as
//! [`ActixMetrics`] does; pass your own with
//! [`WorkerBuilder::request_metrics`] (a builder: prefix, buckets, excluded paths).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service as _, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::{App, HttpServer};
use gpe_core::expose::server::ServerConfig;
use gpe_core::http::access::AccessLog;
use gpe_core::http::{RequestMetrics, RequestMetricsBuilder};
use gpe_core::worker::host::{Host, HostBuilder, HostError};
use gpe_core::worker::shutdown::Shutdown;
use gpe_core::worker::{BindAddr, Listener};
use gpe_core::Store;

use crate::ActixMetrics;

/// How long a connection accepted by actix-web's accept thread may take to reach a worker thread
/// (and its `on_connect`, which counts it as open) after the accept thread was paused.
const ACCEPT_HANDOFF: Duration = Duration::from_millis(100);

/// How to start a [`Worker`]; see the [module docs](self).
#[derive(Debug)]
#[must_use = "a WorkerBuilder does nothing until .build()"]
pub struct WorkerBuilder {
    host: HostBuilder,
    threads: Option<usize>,
}

/// A worker ready to serve: listeners bound, metrics built, signal handlers installed. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Worker {
    host: Host,
    threads: Option<usize>,
}

impl Worker {
    /// Start describing a worker.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            host: Host::builder(),
            threads: None,
        }
    }

    /// The framework-neutral host: the worker's context, store, metrics and
    /// [`Shutdown`] (whose `stop` stops the worker as TERM or QUIT would).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The stop state: [`Shutdown::stop`] stops the worker as TERM or QUIT would.
    pub fn shutdown(&self) -> &Shutdown {
        self.host.shutdown()
    }

    /// Where the worker accepts connections (TCP listeners; Unix-domain ones are not listed).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.host
            .listeners()
            .iter()
            .filter_map(|l| match l {
                Listener::Tcp(t) => t.local_addr().ok(),
                _ => None,
            })
            .collect()
    }

    /// Serve the application `app` builds (one per actix-web worker thread, as
    /// `HttpServer::new` takes it) on every listener, until a graceful stop has drained, a fast
    /// stop, or the graceful deadline. Must run on actix-web's runtime (`#[actix_web::main]`,
    /// `actix_web::rt::System`). The worker's state and restart reason are recorded before it
    /// returns.
    ///
    /// # Errors
    /// [`HostError::Io`] when a listener cannot be served or the server fails.
    pub async fn serve<F, T, B>(self, app: F) -> Result<(), HostError>
    where
        F: Fn() -> App<T> + Send + Clone + 'static,
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = actix_web::Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
    {
        let Worker { mut host, threads } = self;
        let running = host.start();
        let shutdown = host.shutdown().clone();
        let listeners = host.take_listeners();
        let graceful = host.context().graceful_timeout();
        let served = match host.request_metrics().cloned() {
            Some(metrics) => {
                let access_log = host.access_log().cloned();
                let factory = move || {
                    let mw = ActixMetrics::new(metrics.clone());
                    app().wrap(match &access_log {
                        Some(log) => mw.access_log(log.clone()),
                        None => mw,
                    })
                };
                run(factory, listeners, &shutdown, &host, threads, graceful).await
            }
            None => run(app, listeners, &shutdown, &host, threads, graceful).await,
        };
        host.finish(running);
        served
    }
}

/// Serve the apps of `factory` (with the max-requests counter and `Connection: close` while
/// stopping) on `listeners` until the stop.
async fn run<F, T, B>(
    factory: F,
    listeners: Vec<Listener>,
    shutdown: &Shutdown,
    host: &Host,
    threads: Option<usize>,
    graceful: Duration,
) -> Result<(), HostError>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let counting = shutdown.clone();
    let tracking = shutdown.clone();
    let mut server = HttpServer::new(move || {
        let counter = counting.clone();
        factory().wrap_fn(move |req, srv| {
            counter.count_request();
            let stopping = counter.clone();
            let res = srv.call(req);
            async move {
                let mut res = res.await?;
                // Once stopping, every answer closes its connection: keep-alive clients
                // reconnect (to another worker) instead of losing a request to the close of an
                // idle connection.
                if stopping.is_stopping() {
                    res.response_mut()
                        .head_mut()
                        .set_connection_type(ConnectionType::Close);
                }
                Ok(res)
            }
        })
    })
    // Each connection's extensions live as long as it does: the guard counts it as open.
    .on_connect(move |_, ext| {
        ext.insert(tracking.track_connection());
    })
    .disable_signals()
    .shutdown_timeout(graceful.as_secs());
    if let Some(n) = threads {
        server = server.workers(n);
    }
    let (worker_id, pid) = (host.worker_id().to_owned(), std::process::id());
    for listener in listeners {
        server = match listener {
            Listener::Tcp(l) => {
                tracing::info!(%worker_id, pid, "listening on {:?}", l.local_addr());
                server.listen(l).map_err(HostError::Io)?
            }
            Listener::Unix(l) => {
                tracing::info!(%worker_id, pid, "listening on {:?}", l.local_addr());
                server.listen_uds(l).map_err(HostError::Io)?
            }
            _ => return Err(HostError::UnsupportedListener),
        };
    }
    let server = server.run();
    shutdown.settle_when_idle();
    host.ready();
    let handle = server.handle();
    let stopper = shutdown.clone();
    actix_web::rt::spawn(async move {
        stopper.graceful().await;
        // Stop accepting at once, and stop the connections only a moment later: one accepted
        // just before the stop may not have had its request read yet, and actix closes idle
        // connections on a graceful stop (see `gpe_core::worker::shutdown::ACCEPT_SETTLE`).
        handle.pause().await;
        // actix-web accepts on a thread of its own and hands each connection to a worker
        // thread, where `on_connect` counts it: give the hand-off time to finish before the
        // count of open connections is trusted.
        let settled = async {
            tokio::time::sleep(ACCEPT_HANDOFF).await;
            stopper.settled().await;
        };
        tokio::select! {
            () = stopper.fast() => return handle.stop(false).await,
            () = settled => {}
        }
        tokio::select! {
            () = stopper.fast() => handle.stop(false).await,
            () = handle.stop(true) => {}
        }
    });
    tokio::select! {
        r = server => r.map_err(HostError::Io),
        () = shutdown.fast() => Ok(()),
        () = shutdown.deadline() => {
            tracing::warn!("graceful timeout: exiting with requests in flight");
            Ok(())
        }
    }
}

impl WorkerBuilder {
    /// The address to bind standalone: `HOST:PORT` or `unix:PATH` (default `GPE_BIND`, else
    /// `127.0.0.1:8000`). Ignored under gpe-master, whose listeners are served instead.
    ///
    /// # Errors
    /// [`HostError::InvalidBind`] when `addr` is neither spelling.
    pub fn bind(self, addr: &str) -> Result<Self, HostError> {
        Ok(WorkerBuilder {
            host: self.host.bind(addr)?,
            ..self
        })
    }

    /// As [`bind`](Self::bind), with an address already parsed (from a command line, say).
    pub fn bind_addr(self, addr: BindAddr) -> Self {
        WorkerBuilder {
            host: self.host.bind_addr(addr),
            ..self
        }
    }

    /// Write metrics into this store instead of `PROMETHEUS_MULTIPROC_DIR`'s.
    pub fn store(self, store: Store) -> Self {
        WorkerBuilder {
            host: self.host.store(store),
            ..self
        }
    }

    /// Record requests with metrics built from `builder` (the default is
    /// [`RequestMetrics::builder()`]); its `worker_id` defaults to the worker's.
    pub fn request_metrics(self, builder: RequestMetricsBuilder) -> Self {
        WorkerBuilder {
            host: self.host.request_metrics(builder),
            ..self
        }
    }

    /// Record requests with metrics already built (their store should be this worker's).
    pub fn with_request_metrics(self, metrics: RequestMetrics) -> Self {
        WorkerBuilder {
            host: self.host.with_request_metrics(metrics),
            ..self
        }
    }

    /// Wrap no [`ActixMetrics`] (to measure its cost, or to wrap your own
    /// with another label hook). Worker metrics are still recorded.
    pub fn no_request_metrics(self) -> Self {
        WorkerBuilder {
            host: self.host.no_request_metrics(),
            ..self
        }
    }

    /// How often to sample the worker's memory, CPU and uptime (default 5 s).
    ///
    /// # Errors
    /// [`HostError::ZeroInterval`] for a zero interval.
    pub fn sample_interval(self, interval: Duration) -> Result<Self, HostError> {
        Ok(WorkerBuilder {
            host: self.host.sample_interval(interval)?,
            ..self
        })
    }

    /// Standalone, serve `/metrics` with this configuration instead of the `PROMETHEUS_*`
    /// variables'.
    pub fn metrics_server(self, config: ServerConfig) -> Self {
        WorkerBuilder {
            host: self.host.metrics_server(config),
            ..self
        }
    }

    /// Serve no `/metrics` standalone (another process scrapes the store's directory).
    pub fn no_metrics_server(self) -> Self {
        WorkerBuilder {
            host: self.host.no_metrics_server(),
            ..self
        }
    }

    /// Write the access log to `log` instead of the one gpe-master asks for
    /// (`GPE_ACCESS_LOGFILE`, `GPE_ACCESS_LOGFORMAT`; see [`AccessLog::from_env`]). Needs the
    /// request metrics (their tracker writes the line).
    pub fn access_log(self, log: AccessLog) -> Self {
        WorkerBuilder {
            host: self.host.access_log(log),
            ..self
        }
    }

    /// Write no access log, whatever the environment says.
    pub fn no_access_log(self) -> Self {
        WorkerBuilder {
            host: self.host.no_access_log(),
            ..self
        }
    }

    /// actix-web worker threads in this process (default: actix-web's, one per core). Under
    /// gpe-master the processes are the unit of scale: 1 or 2 threads per process is usual.
    pub fn threads(self, n: usize) -> Self {
        WorkerBuilder {
            threads: Some(n.max(1)),
            ..self
        }
    }

    /// Read the environment, open the store, take or bind the listeners, build the metrics,
    /// start the sampler, install the signal handlers and, standalone, bind `/metrics`. Must
    /// be called on actix-web's runtime (a tokio runtime).
    ///
    /// # Errors
    /// As [`HostBuilder::build`].
    pub fn build(self) -> Result<Worker, HostError> {
        Ok(Worker {
            host: self.host.build()?,
            threads: self.threads,
        })
    }
}

//! What the example services share. All of them (`example-axum`, `example-actix`,
//! `example-hyper`): logging and the command line ([`Args`]: `--bind`). The actix-web and hyper
//! examples also: where the listener comes from (gpe-master's socket activation or `--bind`),
//! the worker environment, signals (TERM graceful, QUIT/INT fast, USR1 harmless), max-requests,
//! the heartbeat, the worker sampler and, standalone, the process's own `/metrics` server
//! ([`Boot`], [`Control`]); framework-specific serving stays in each example. example-axum gets
//! all of that from `gpe_tower::serve` instead.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gpe_core::http::RequestMetrics;
use gpe_core::worker::lifecycle::StopRecord;
use gpe_core::worker::metrics::{SamplerHandle, WorkerMetrics};
use gpe_core::worker::shutdown::{ConnectionGuard, Shutdown, Tracked};
use gpe_core::worker::{BindAddr, Listener, WorkerContext, DEFAULT_BIND};
use gpe_core::Store;

/// An example's `main`: logging, then `boot` (`--help`: exit 0; an error: exit 3, the boot error
/// gpe-master stops on rather than respawning a worker that cannot start), then `serve` what
/// booted (an error while serving: exit 1).
pub fn main<A>(
    name: &str,
    boot: impl FnOnce() -> anyhow::Result<Option<A>>,
    serve: impl FnOnce(A) -> anyhow::Result<()>,
) -> ExitCode {
    init_logging();
    let booted = match boot() {
        Ok(Some(b)) => b,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{name}: cannot boot");
            return ExitCode::from(3);
        }
    };
    match serve(booted) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{name}: failed");
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded tokio runtime with every driver.
///
/// # Errors
/// When the runtime cannot start (threads, the I/O driver).
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Log to stderr at `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What the process starts from.
#[derive(Debug)]
pub struct Boot {
    /// The worker side of gpe-master's contract (empty when standalone).
    pub ctx: Arc<WorkerContext>,
    /// The metrics store (`PROMETHEUS_MULTIPROC_DIR`).
    pub store: Store,
    /// The `worker_id` label value (`GPE_WORKER_ID`, or 0 standalone).
    pub worker_id: String,
    bind: BindAddr,
}

/// The command line the examples take: `--bind ADDR` (standalone only) and `--help`.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(about = "A gpe example service: run it under gpe-master, or standalone with --bind.")]
pub struct Args {
    /// Where to listen standalone (ignored under gpe-master, whose listeners are served).
    #[arg(short, long, value_name = "HOST:PORT|unix:PATH")]
    pub bind: Option<BindAddr>,
}

impl Args {
    /// Parse the process's arguments; `None` after printing `--help`.
    ///
    /// # Errors
    /// An unknown argument, or a `--bind` address that is neither `HOST:PORT` nor `unix:PATH`.
    pub fn parse() -> anyhow::Result<Option<Args>> {
        match <Args as clap::Parser>::try_parse() {
            Ok(args) => Ok(Some(args)),
            Err(e) if !e.use_stderr() => {
                let _ = e.print();
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!(e.to_string().trim_end().to_owned())),
        }
    }
}

impl Boot {
    /// Read the gpe-master contract (if any) and `--bind ADDR` (standalone only; default
    /// `127.0.0.1:8000`); `None` after printing `--help`.
    pub fn from_env_and_args() -> anyhow::Result<Option<Boot>> {
        let Some(args) = Args::parse()? else {
            return Ok(None);
        };
        let bind = match args.bind {
            Some(addr) => addr,
            None => DEFAULT_BIND.parse()?,
        };
        let ctx = Arc::new(WorkerContext::from_env().context("reading the worker environment")?);
        let store = Store::from_env().context("opening the metrics store")?;
        let worker_id = ctx.worker_id().to_string();
        Ok(Some(Boot {
            ctx,
            store,
            worker_id,
            bind,
        }))
    }

    /// The request metrics (requests to `/health` not recorded) and the worker resource metrics,
    /// sampled every 5 s until the returned handle is dropped.
    ///
    /// # Errors
    /// When the store rejects a family or the sampler thread cannot start.
    pub fn metrics(&self) -> anyhow::Result<(RequestMetrics, WorkerMetrics, SamplerHandle)> {
        let requests = RequestMetrics::builder()
            .worker_id(self.worker_id.clone())
            .exclude_path("/health")
            .build(&self.store)?;
        let worker = WorkerMetrics::new(&self.store, self.worker_id.clone())?;
        let sampler = worker.spawn_sampler(Duration::from_secs(5))?;
        Ok((requests, worker, sampler))
    }

    /// Tell the master (if any) that this worker serves.
    pub fn tell_master_ready(&self) {
        if let Some(master) = self.ctx.master_link() {
            master.ready();
        }
    }

    /// Under gpe-master: whether listeners were inherited.
    pub fn under_master(&self) -> bool {
        self.ctx.is_managed()
    }

    /// The first inherited listener, else a fresh one on `--bind` (`host:port` or
    /// `unix:/path`). Blocking mode: the caller converts it for its runtime.
    pub fn listener(&self) -> anyhow::Result<Listener> {
        if self.under_master() {
            let mut listeners = self
                .ctx
                .listeners()
                .context("taking the inherited listeners")?
                .into_iter();
            let first = listeners.next().context("gpe-master passed no listener")?;
            if listeners.len() > 0 {
                tracing::warn!("serving the first of several inherited listeners only");
            }
            return Ok(first);
        }
        self.bind
            .bind()
            .with_context(|| format!("binding {}", self.bind))
    }

    /// Standalone only: serve this process's `/metrics` (gpe-master serves them otherwise).
    pub async fn standalone_metrics_server(
        &self,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        if self.under_master() {
            return Ok(None);
        }
        let collector = gpe_core::MultiProcessCollector::new(self.store.dir());
        let config =
            gpe_core::expose::server::ServerConfig::from_env().context("metrics server config")?;
        let server = gpe_core::expose::server::MetricsServer::bind(
            config,
            Arc::new(move || collector.gather()),
        )
        .context("binding the metrics server")?;
        let addr = server.local_addr()?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        Ok(Some(tokio::spawn(async move {
            if let Err(e) = server.serve(std::future::pending()).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        })))
    }
}

/// See [`gpe_core::worker::shutdown::ACCEPT_SETTLE`].
pub use gpe_core::worker::shutdown::ACCEPT_SETTLE;

/// The stop state ([`gpe_core::worker::shutdown::Shutdown`]: signals, max-requests, a changed parent),
/// plus what the example's worker metrics record about it.
#[derive(Debug, Clone)]
pub struct Control {
    shutdown: Shutdown,
}

impl Control {
    /// Install the signal handlers, start the heartbeat and the parent watch.
    ///
    /// # Errors
    /// When a signal handler cannot be installed.
    pub fn start(boot: &Boot, worker: &WorkerMetrics) -> anyhow::Result<Control> {
        let shutdown = Shutdown::install(&boot.ctx).context("installing signal handlers")?;
        // On the runtime, not a thread of its own: a runtime stuck as a whole stops beating
        // and the master's --timeout replaces the worker.
        if let Some(beat) = boot.ctx.heartbeat_task() {
            tokio::spawn(beat);
        }
        // Record why the worker stops in its metrics, once for the graceful stop and once more
        // if it turns fast.
        shutdown.record_stops(&Arc::new(StopRecord::new(worker.clone())));
        Ok(Control { shutdown })
    }

    /// From now on every connection is counted ([`Control::track`],
    /// [`Control::track_connection`]): once none is open, a graceful stop does not wait
    /// [`ACCEPT_SETTLE`].
    pub fn settle_when_idle(&self) {
        self.shutdown.settle_when_idle();
    }

    /// Count `io` as an open connection while it lives (see [`Control::settle_when_idle`]).
    pub fn track<T>(&self, io: T) -> Tracked<T> {
        Tracked::new(io, &self.shutdown)
    }

    /// Count one open connection until the guard is dropped, for servers that do not hand over
    /// the connection's I/O (actix-web's `on_connect`; see [`Control::settle_when_idle`]).
    pub fn track_connection(&self) -> ConnectionGuard {
        self.shutdown.track_connection()
    }

    /// Whether a stop was asked for: responses should carry `Connection: close`.
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_stopping()
    }

    /// Count one request; asks for a graceful stop at max-requests.
    pub fn count_request(&self) {
        self.shutdown.count_request();
    }

    /// Resolves when a graceful (or fast) stop is asked for.
    pub fn graceful(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shutdown.graceful()
    }

    /// Resolves on a fast stop.
    pub async fn fast(&self) {
        self.shutdown.fast().await;
    }

    /// Resolves [`ACCEPT_SETTLE`] after a graceful stop was asked for: when to tell the open
    /// connections to finish, once the server has stopped accepting new ones.
    pub fn graceful_settled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shutdown.settled()
    }

    /// How long a graceful stop may take.
    pub fn graceful_timeout(&self) -> Duration {
        self.shutdown.graceful_timeout()
    }

    /// Resolves the graceful timeout after a graceful stop was asked for.
    pub async fn graceful_deadline(&self) {
        self.shutdown.deadline().await;
    }
}

//! What the example services (`example-axum`, `example-actix`, `example-hyper`) share: where the
//! listener comes from (gpe-master's socket activation or `--bind`), the worker environment,
//! signals (TERM graceful, QUIT/INT fast, USR1 harmless), max-requests, the heartbeat, the worker
//! sampler and, standalone, the process's own `/metrics` server. Framework-specific serving stays
//! in each example.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gpe_core::worker::{Listener, WorkerContext};
use gpe_core::Store;
use gpe_tower::{RestartReason, WorkerMetrics, WorkerState};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

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
    bind: String,
}

impl Boot {
    /// Read the gpe-master contract (if any) and `--bind ADDR` (standalone only); `None` after
    /// printing `--help`.
    pub fn from_env_and_args() -> anyhow::Result<Option<Boot>> {
        let mut bind = "127.0.0.1:8000".to_owned();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bind" | "-b" => bind = args.next().context("--bind needs an address")?,
                s if s.starts_with("--bind=") => bind = s["--bind=".len()..].to_owned(),
                "-h" | "--help" => {
                    println!("usage: {} [--bind HOST:PORT|unix:PATH]", program_name());
                    return Ok(None);
                }
                other => anyhow::bail!("unknown argument {other:?} (try --help)"),
            }
        }
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
        Ok(match self.bind.strip_prefix("unix:") {
            Some(path) => Listener::Unix(
                std::os::unix::net::UnixListener::bind(path)
                    .with_context(|| format!("binding {}", self.bind))?,
            ),
            None => Listener::Tcp(
                std::net::TcpListener::bind(&self.bind)
                    .with_context(|| format!("binding {}", self.bind))?,
            ),
        })
    }

    /// Standalone only: serve this process's `/metrics` (gpe-master serves them otherwise).
    pub async fn standalone_metrics_server(
        &self,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        if self.under_master() {
            return Ok(None);
        }
        let collector = gpe_core::MultiProcessCollector::new(self.store.dir());
        let config = gpe_core::server::ServerConfig::from_env().context("metrics server config")?;
        let server =
            gpe_core::server::MetricsServer::bind(config, Arc::new(move || collector.gather()))
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

/// How long a worker that stopped accepting waits before it asks its open connections to finish.
///
/// hyper closes an HTTP/1 connection with no request in progress at once on graceful shutdown,
/// and a connection accepted just before the stop may not have had its first request read yet:
/// closing it then resets a request the client already sent (seen as one failed request per
/// HUP under load). So a graceful stop first stops accepting (the other workers take the queue),
/// waits this long for such connections to start their request, and only then shuts the
/// connections down; requests in progress always finish.
pub const ACCEPT_SETTLE: Duration = Duration::from_millis(250);

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const FAST: u8 = 2;

/// The stop state, driven by signals, max-requests and a changed parent.
#[derive(Debug, Clone)]
pub struct Control {
    state: watch::Sender<u8>,
    handled: Arc<AtomicU64>,
    max_requests: u64,
    graceful_timeout: Duration,
    worker: WorkerMetrics,
}

impl Control {
    /// Install the signal handlers, start the heartbeat and the parent watch.
    pub fn start(boot: &Boot, worker: &WorkerMetrics) -> Control {
        let (state, _) = watch::channel(RUNNING);
        let control = Control {
            state,
            handled: Arc::new(AtomicU64::new(0)),
            max_requests: boot.ctx.max_requests(),
            graceful_timeout: boot.ctx.graceful_timeout(),
            worker: worker.clone(),
        };
        boot.ctx.start_heartbeat();
        for (kind, to, reason) in [
            (SignalKind::terminate(), GRACEFUL, RestartReason::Term),
            (SignalKind::quit(), FAST, RestartReason::Quit),
            (SignalKind::interrupt(), FAST, RestartReason::Quit),
        ] {
            match signal(kind) {
                Ok(mut s) => {
                    let c = control.clone();
                    tokio::spawn(async move {
                        while s.recv().await.is_some() {
                            c.stop(to, reason);
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot install a signal handler"),
            }
        }
        // USR1 (the master forwards it, as gunicorn): reopen log files. This worker logs to
        // stderr only, so there is nothing to reopen, but the signal must not kill it.
        match signal(SignalKind::user_defined1()) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        tracing::info!("USR1: log files reopened (stderr only)");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot install the USR1 handler"),
        }
        if boot.under_master() {
            let c = control.clone();
            let ctx = boot.ctx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if ctx.parent_changed() {
                        tracing::info!("parent changed, shutting down");
                        c.stop(GRACEFUL, RestartReason::Term);
                        break;
                    }
                }
            });
        }
        control
    }

    fn stop(&self, to: u8, reason: RestartReason) {
        let mut changed = false;
        self.state.send_if_modified(|s| {
            changed = *s < to;
            if changed {
                *s = to;
            }
            changed
        });
        if changed {
            self.worker.record_restart(reason);
            self.worker.set_state(if to == FAST {
                WorkerState::Quitting
            } else {
                WorkerState::Stopping
            });
            tracing::info!(
                fast = to == FAST,
                reason = reason.as_str(),
                "worker stopping"
            );
        }
    }

    /// Count one request; asks for a graceful stop at max-requests.
    pub fn count_request(&self) {
        let n = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0 && n == self.max_requests {
            tracing::info!(
                max_requests = self.max_requests,
                "autorestarting worker after current requests"
            );
            self.stop(GRACEFUL, RestartReason::MaxRequests);
        }
    }

    async fn reached(&self, at_least: u8) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| *s >= at_least).await;
    }

    /// Resolves when a graceful (or fast) stop is asked for.
    pub fn graceful(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let c = self.clone();
        async move { c.reached(GRACEFUL).await }
    }

    /// Resolves on a fast stop.
    pub async fn fast(&self) {
        self.reached(FAST).await;
    }

    /// How long a graceful stop may take.
    pub fn graceful_timeout(&self) -> Duration {
        self.graceful_timeout
    }

    /// Resolves [`ACCEPT_SETTLE`] after a graceful stop was asked for: when to tell the open
    /// connections to finish, once the server has stopped accepting new ones.
    pub fn graceful_settled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let c = self.clone();
        async move {
            c.reached(GRACEFUL).await;
            tokio::time::sleep(ACCEPT_SETTLE).await;
        }
    }

    /// Resolves the graceful timeout after a graceful stop was asked for.
    pub async fn graceful_deadline(&self) {
        self.reached(GRACEFUL).await;
        tokio::time::sleep(self.graceful_timeout).await;
    }
}

/// This program's file name, for its usage line.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map_or_else(
            || "example".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        )
}

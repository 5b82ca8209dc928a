//! The shutdown future of a tokio worker (feature `server`): the worker side of gpe-master's
//! signals, max-requests and parent watch, as futures a server loop selects on.
//!
//! | event | stop |
//! |---|---|
//! | `SIGTERM` | graceful: stop accepting, finish the requests in progress |
//! | `SIGQUIT`, `SIGINT` | fast: exit now |
//! | `SIGUSR1` | none (the master forwards it to reopen logs; it must not kill the worker) |
//! | `GPE_MAX_REQUESTS` requests counted by [`Shutdown::count_request`] | graceful |
//! | the parent is no longer the master that started the worker | graceful |
//!
//! A graceful stop has three moments, each a future: [`Shutdown::graceful`] (stop accepting new
//! connections now, and answer with `Connection: close` from now on: [`Shutdown::is_stopping`]),
//! [`Shutdown::settled`] ([`ACCEPT_SETTLE`] later: now ask the open connections to finish) and
//! [`Shutdown::deadline`] (`GPE_GRACEFUL_TIMEOUT` later: give up on them).
//!
//! ```no_run
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! use gpe_core::shutdown::Shutdown;
//! use gpe_core::worker::WorkerContext;
//!
//! let ctx = WorkerContext::from_env()?;
//! let shutdown = Shutdown::install(&ctx)?; // inside a tokio runtime
//! tokio::select! {
//!     () = shutdown.graceful() => { /* stop accepting; then await shutdown.settled() */ }
//!     () = shutdown.fast() => { /* exit now */ }
//! }
//! println!("stopping: {:?}", shutdown.reason());
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::worker::WorkerContext;

/// How long a worker that stopped accepting keeps its open connections before it asks them to
/// finish.
///
/// HTTP servers (hyper, actix-web) close an HTTP/1 connection with no request in progress at once
/// on a graceful shutdown. Two kinds of client lose a request to that: a connection accepted just
/// before the stop whose first request was not read yet, and a keep-alive client whose next
/// request is on its way. So a graceful stop first stops accepting (the other workers take the
/// accept queue) and answers every request with `Connection: close` (see
/// [`Shutdown::is_stopping`]), so active keep-alive clients reconnect, to another worker, at a
/// moment of their choosing; only after this long are the connections left idle shut down.
/// Requests in progress always finish.
pub const ACCEPT_SETTLE: Duration = Duration::from_secs(1);

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const FAST: u8 = 2;

/// Why a worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// `SIGTERM`: graceful.
    Term,
    /// `SIGQUIT` or `SIGINT`: fast.
    Quit,
    /// The max-requests limit was reached: graceful.
    MaxRequests,
    /// The parent is no longer the master that started this worker: graceful.
    ParentChanged,
}

impl StopReason {
    /// Whether the worker exits at once (no draining).
    pub fn is_fast(self) -> bool {
        matches!(self, StopReason::Quit)
    }
}

/// The stop state of a worker, driven by signals, max-requests and the parent watch. Cheap to
/// clone (shared state).
#[derive(Debug, Clone)]
pub struct Shutdown {
    state: watch::Sender<u8>,
    reason: Arc<Mutex<Option<StopReason>>>,
    handled: Arc<AtomicU64>,
    max_requests: u64,
    graceful_timeout: Duration,
}

impl Shutdown {
    /// Install the handlers of `SIGTERM`, `SIGQUIT`, `SIGINT` and `SIGUSR1` and, under a master,
    /// the parent watch. Must be called inside a tokio runtime (with the `signal` and `time`
    /// drivers enabled).
    ///
    /// # Errors
    /// When a signal handler cannot be installed.
    pub fn install(ctx: &WorkerContext) -> std::io::Result<Shutdown> {
        let (state, _) = watch::channel(RUNNING);
        let shutdown = Shutdown {
            state,
            reason: Arc::new(Mutex::new(None)),
            handled: Arc::new(AtomicU64::new(0)),
            max_requests: ctx.max_requests(),
            graceful_timeout: ctx.graceful_timeout(),
        };
        for (kind, reason) in [
            (SignalKind::terminate(), Some(StopReason::Term)),
            (SignalKind::quit(), Some(StopReason::Quit)),
            (SignalKind::interrupt(), Some(StopReason::Quit)),
            (SignalKind::user_defined1(), None),
        ] {
            let mut s = signal(kind)?;
            let sd = shutdown.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    match reason {
                        Some(r) => {
                            sd.stop(r);
                        }
                        None => tracing::info!("USR1: nothing to reopen (logs go to stderr)"),
                    }
                }
            });
        }
        if let Some(master) = ctx.master_pid() {
            let sd = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if nix::unistd::getppid().as_raw() as u32 != master {
                        tracing::info!("parent changed, shutting down");
                        sd.stop(StopReason::ParentChanged);
                        break;
                    }
                }
            });
        }
        Ok(shutdown)
    }

    /// Ask for a stop (graceful or fast by `reason`); a stop already asked for is only ever made
    /// faster. Returns whether this call changed the state.
    pub fn stop(&self, reason: StopReason) -> bool {
        let to = if reason.is_fast() { FAST } else { GRACEFUL };
        // The reason is stored before the waiters are woken (inside the update, which holds the
        // channel's lock): a waiter on another thread must never see the state without it.
        let changed = self.state.send_if_modified(|s| {
            let changed = *s < to;
            if changed {
                *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                *s = to;
            }
            changed
        });
        if changed {
            tracing::info!(fast = reason.is_fast(), reason = ?reason, "worker stopping");
        }
        changed
    }

    /// Whether a stop (graceful or fast) was asked for: from then on, answer with
    /// `Connection: close` (see [`ACCEPT_SETTLE`]). Cheap enough for every response.
    pub fn is_stopping(&self) -> bool {
        *self.state.borrow() >= GRACEFUL
    }

    /// Why the worker is stopping (the latest reason that changed the state), if it is.
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one request; asks for a graceful stop when `GPE_MAX_REQUESTS` is reached.
    pub fn count_request(&self) {
        let n = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0 && n == self.max_requests {
            tracing::info!(
                max_requests = self.max_requests,
                "autorestarting worker after current requests"
            );
            self.stop(StopReason::MaxRequests);
        }
    }

    /// The graceful timeout (`GPE_GRACEFUL_TIMEOUT`).
    pub fn graceful_timeout(&self) -> Duration {
        self.graceful_timeout
    }

    fn reached(&self, at_least: u8) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.state.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s >= at_least).await;
        }
    }

    /// Resolves when a graceful (or fast) stop is asked for: stop accepting.
    pub fn graceful(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(GRACEFUL)
    }

    /// Resolves on a fast stop: exit now.
    pub fn fast(&self) -> impl Future<Output = ()> + Send + 'static {
        self.reached(FAST)
    }

    /// Resolves [`ACCEPT_SETTLE`] after a graceful stop was asked for: shut the open connections
    /// down now.
    pub fn settled(&self) -> impl Future<Output = ()> + Send + 'static {
        let graceful = self.graceful();
        async move {
            graceful.await;
            tokio::time::sleep(ACCEPT_SETTLE).await;
        }
    }

    /// Resolves the graceful timeout after a graceful stop was asked for: give up on the
    /// requests still in progress.
    pub fn deadline(&self) -> impl Future<Output = ()> + Send + 'static {
        let graceful = self.graceful();
        let timeout = self.graceful_timeout;
        async move {
            graceful.await;
            tokio::time::sleep(timeout).await;
        }
    }
}

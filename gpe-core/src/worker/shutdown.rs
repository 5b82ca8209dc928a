//! The shutdown future of a tokio worker (feature `server`): the worker side of gpe-master's
//! signals, max-requests and parent watch, as futures a server loop selects on.
//!
//! | event | stop |
//! |---|---|
//! | `SIGTERM` | graceful: stop accepting, finish the requests in progress |
//! | `SIGQUIT`, `SIGINT` | fast: exit now |
//! | `SIGUSR1` | none (the master forwards it to reopen logs; it must not kill the worker) |
//! | `GPE_MAX_REQUESTS` requests counted by [`Shutdown::count_request`] | under a gpe-master: ask it for a replacement and serve on until its `SIGTERM`; standalone: graceful |
//! | the parent is no longer the master that started the worker | graceful |
//!
//! A graceful stop has three moments, each a future: [`Shutdown::graceful`] (stop accepting new
//! connections now, and answer with `Connection: close` from now on: [`Shutdown::is_stopping`]),
//! [`Shutdown::settled`] (no connection open any more, or [`ACCEPT_SETTLE`] later: now ask the
//! open connections to finish) and
//! [`Shutdown::deadline`] (`GPE_GRACEFUL_TIMEOUT` later: give up on them).
//!
//! ```no_run
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! use gpe_core::worker::shutdown::Shutdown;
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub use super::lifecycle::StopReason;
use super::lifecycle::StopRecord;
use super::{MasterLink, WorkerContext};

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
/// Requests in progress always finish. A server that counts its connections
/// ([`Shutdown::settle_when_idle`]) does not wait that long once none is open: an idle worker
/// exits in milliseconds.
pub const ACCEPT_SETTLE: Duration = Duration::from_secs(1);

const RUNNING: u8 = 0;
/// Max-requests reached under a master that was asked for a replacement: still serving.
const RETIRING: u8 = 1;
const GRACEFUL: u8 = 2;
const FAST: u8 = 3;

/// The stop state of a worker, driven by signals, max-requests and the parent watch. Cheap to
/// clone (shared state).
#[derive(Debug, Clone)]
pub struct Shutdown {
    state: watch::Sender<u8>,
    reason: Arc<Mutex<Option<StopReason>>>,
    handled: Arc<AtomicU64>,
    max_requests: u64,
    graceful_timeout: Duration,
    master: Option<MasterLink>,
    /// Connections open, counted by [`ConnectionGuard`]s.
    connections: watch::Sender<usize>,
    /// Whether the server counts its connections at all.
    tracked: Arc<AtomicBool>,
}

/// One open connection of the server, counted while it lives (see
/// [`Shutdown::track_connection`]).
#[derive(Debug)]
#[must_use = "the connection counts as open while the guard lives"]
pub struct ConnectionGuard {
    connections: watch::Sender<usize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connections.send_modify(|n| *n = n.saturating_sub(1));
    }
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
            master: ctx.master_link(),
            connections: watch::channel(0).0,
            tracked: Arc::new(AtomicBool::new(false)),
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
                        None => {
                            tracing::debug!("USR1 (the worker host reopens an access log file)")
                        }
                    }
                }
            });
        }
        // A master that was asked for a replacement answers with SIGTERM once the replacement
        // serves; one that never does (its replacement keeps failing) does not keep this
        // worker past its limit for longer than the graceful timeout.
        let sd = shutdown.clone();
        tokio::spawn(async move {
            sd.reached(RETIRING).await;
            tokio::time::sleep(sd.graceful_timeout).await;
            if !sd.is_stopping() {
                tracing::warn!(
                    "no SIGTERM from the master {}s after asking for a replacement; stopping",
                    sd.graceful_timeout.as_secs()
                );
                sd.stop(StopReason::MaxRequests);
            }
        });
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
        let changed = self.advance(to, reason);
        if changed {
            tracing::info!(fast = reason.is_fast(), reason = ?reason, "worker stopping");
        }
        changed
    }

    /// Move the state forward to `to` (never back), with `reason`; whether it moved. The reason
    /// is stored before the waiters are woken (inside the update, which holds the channel's
    /// lock): a waiter on another thread must never see the state without it.
    fn advance(&self, to: u8, reason: StopReason) -> bool {
        self.state.send_if_modified(|s| {
            let changed = *s < to;
            if changed {
                let mut why = self.reason.lock().unwrap_or_else(|p| p.into_inner());
                // The master's TERM to a worker that asked for a replacement is the end of its
                // max-requests retirement, not a stop of its own.
                if !(*s == RETIRING && reason == StopReason::Term) {
                    *why = Some(reason);
                }
                *s = to;
            }
            changed
        })
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

    /// Count one request. When `GPE_MAX_REQUESTS` is reached: under a gpe-master, ask it for
    /// a replacement and serve on until its `SIGTERM` (so the worker's capacity is there while
    /// the replacement boots); standalone, or when the master cannot be told, stop gracefully.
    pub fn count_request(&self) {
        let n = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests == 0 || n != self.max_requests {
            return;
        }
        if self
            .master
            .as_ref()
            .is_some_and(MasterLink::ask_to_be_replaced)
        {
            tracing::info!(
                max_requests = self.max_requests,
                "max requests reached: serving until the master's replacement is up"
            );
            self.advance(RETIRING, StopReason::MaxRequests);
        } else {
            tracing::info!(
                max_requests = self.max_requests,
                "autorestarting worker after current requests"
            );
            self.stop(StopReason::MaxRequests);
        }
    }

    /// Declare that every connection this worker accepts is counted with
    /// [`track_connection`](Self::track_connection) (or [`Tracked`]): from now on
    /// [`settled`](Self::settled) resolves as soon as none is open, so an idle worker stops at
    /// once. Call it before serving.
    pub fn settle_when_idle(&self) {
        self.tracked.store(true, Ordering::Relaxed);
    }

    /// Count one open connection until the guard is dropped (see
    /// [`settle_when_idle`](Self::settle_when_idle)).
    pub fn track_connection(&self) -> ConnectionGuard {
        self.connections.send_modify(|n| *n += 1);
        ConnectionGuard {
            connections: self.connections.clone(),
        }
    }

    /// The connections open now, as counted by [`track_connection`](Self::track_connection).
    pub fn open_connections(&self) -> usize {
        *self.connections.borrow()
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

    /// Resolves once a graceful stop was asked for and then either no tracked connection is
    /// open ([`settle_when_idle`](Self::settle_when_idle)) or [`ACCEPT_SETTLE`] has passed: shut
    /// the open connections down now. A server that does not track its connections always
    /// waits `ACCEPT_SETTLE`.
    pub fn settled(&self) -> impl Future<Output = ()> + Send + 'static {
        let graceful = self.graceful();
        let mut open = self.connections.subscribe();
        let tracked = Arc::clone(&self.tracked);
        async move {
            graceful.await;
            let none_open = async {
                if tracked.load(Ordering::Relaxed) {
                    let _ = open.wait_for(|n| *n == 0).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = tokio::time::sleep(ACCEPT_SETTLE) => {}
                () = none_open => {}
            }
        }
    }

    /// Record the stop asked for so far, if any, in `record` (a no-op for a stage already
    /// recorded).
    pub fn record_now(&self, record: &StopRecord) {
        // The state first: once it says stopping, the reason is set.
        if self.is_stopping() {
            record.record(self.reason().unwrap_or(StopReason::Term));
        }
    }

    /// Record every stop of this worker in `record` the moment it is asked for: a task waits
    /// for the graceful stop, then for the fast one. Call [`record_now`](Self::record_now) once
    /// more when the server has stopped, in case the process ends before the task runs.
    pub fn record_stops(&self, record: &Arc<StopRecord>) {
        let (sd, record) = (self.clone(), Arc::clone(record));
        tokio::spawn(async move {
            sd.graceful().await;
            sd.record_now(&record);
            sd.fast().await;
            sd.record_now(&record);
        });
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

/// A connection's I/O that counts as open while it lives ([`Shutdown::track_connection`]), for
/// servers that take any `AsyncRead + AsyncWrite` (hyper, axum's `Listener`).
#[derive(Debug)]
pub struct Tracked<T> {
    io: T,
    _open: ConnectionGuard,
}

impl<T> Tracked<T> {
    /// `io`, counted as an open connection of `shutdown` until dropped.
    pub fn new(io: T, shutdown: &Shutdown) -> Tracked<T> {
        Tracked {
            io,
            _open: shutdown.track_connection(),
        }
    }

    /// `io`, counted as open by `guard`, taken before it was accepted (see
    /// [`Shutdown::track_connection`]): an accept loop that takes the guard before it checks
    /// for a stop leaves no moment in which [`Shutdown::settled`] sees no connection while one
    /// is being accepted.
    pub fn with_guard(io: T, guard: ConnectionGuard) -> Tracked<T> {
        Tracked { io, _open: guard }
    }

    /// The connection itself.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

//! The worker side of the gpe-master contract (see `ARCHITECTURE.md`).
//!
//! A worker started by gpe-master inherits its listening sockets by systemd socket activation
//! (`LISTEN_FDS`, fds from 3, `LISTEN_FDNAMES`), learns its identity and limits from `GPE_*`
//! variables, and proves it is alive by touching its heartbeat file. [`WorkerContext`] reads all
//! of that; without a master (`LISTEN_FDS` unset) it describes a standalone process that binds its
//! own address.
//!
//! ```no_run
//! # fn main() -> Result<(), gpe_core::worker::WorkerError> {
//! let ctx = gpe_core::worker::WorkerContext::from_env()?;
//! let listeners = ctx.listeners_or_bind()?;
//! println!("worker {} with {} listener(s)", ctx.worker_id(), listeners.len());
//! ctx.notify(); // call from the worker loop at least every timeout/2
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt, AddressFamily, SockaddrLike, SockaddrStorage};

pub use bind::{BindAddr, InvalidBindAddr, DEFAULT_BIND};
use notify::{Notifier, NotifyError};

mod bind;
pub mod env;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod host;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod procfs;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod shutdown;

/// Errors reading the worker environment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A variable has a value that cannot be used.
    #[error("{var}={value:?} is invalid: expected {expected}")]
    InvalidVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An inherited descriptor is not a listening socket.
    #[error(
        "inherited fd {fd} is not a listening stream socket ({why}); check the master's --bind"
    )]
    NotAListener {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An inherited descriptor could not be inspected.
    #[error("cannot inspect inherited fd {fd}: {source}; check the master's --bind")]
    Inspect {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
    /// The listeners were already taken (they can be taken once).
    #[error("the inherited listeners were already taken by an earlier call")]
    AlreadyTaken,
    /// Binding the standalone address failed.
    #[error("cannot bind {addr} (set GPE_BIND to another address): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A listening socket.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// TCP (v4 or v6).
    Tcp(TcpListener),
    /// A Unix-domain stream socket.
    Unix(UnixListener),
}

impl Listener {
    /// Switch non-blocking mode.
    ///
    /// # Errors
    /// As the underlying `set_nonblocking`.
    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(on),
            Listener::Unix(l) => l.set_nonblocking(on),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// What a worker knows about its place under gpe-master.
#[derive(Debug)]
pub struct WorkerContext {
    worker_id: u64,
    master_pid: Option<u32>,
    timeout: Duration,
    graceful_timeout: Duration,
    max_requests: u64,
    listen_fds: usize,
    fd_names: Vec<String>,
    heartbeat: Option<Heartbeat>,
    /// The master's notification socket (`NOTIFY_SOCKET`, under a master only).
    master_link: Option<MasterLink>,
    taken: AtomicBool,
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The variables, as `lookup` gives them (empty counts as unset).
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, WorkerError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| WorkerError::InvalidVar {
                var: name,
                value: v,
                expected,
            }),
        }
    }
}

impl WorkerContext {
    /// Read the environment gpe-master sets (or its absence: standalone).
    ///
    /// # Errors
    /// When a variable is present with a value that cannot be used.
    pub fn from_env() -> Result<WorkerContext, WorkerError> {
        WorkerContext::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env), with the variables from `lookup`.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<WorkerContext, WorkerError> {
        let vars = Vars(lookup);
        let parse = |name, expected| vars.parse(name, expected);
        let listen_pid: Option<u32> = parse(env::LISTEN_PID, "a pid")?;
        let mut listen_fds: usize = vars
            .parse(env::LISTEN_FDS, "a number of descriptors")?
            .unwrap_or(0);
        if listen_pid.is_some_and(|p| p != std::process::id()) {
            // Meant for another process (systemd's rule): ignore the fds.
            listen_fds = 0;
        }
        let fd_names = vars
            .get(env::LISTEN_FDNAMES)
            .map(|v| v.split(':').map(|n| n.replace("%3A", ":")).collect())
            .unwrap_or_default();
        let timeout = vars.parse::<u64>(env::TIMEOUT, "seconds")?.unwrap_or(0);
        let heartbeat = match vars.parse::<RawFd>(env::HEARTBEAT_FD, "a file descriptor number")? {
            Some(fd) => Some(Heartbeat::adopt(fd, Duration::from_secs(timeout))?),
            None => None,
        };
        let master_pid: Option<u32> = parse(env::MASTER_PID, "a pid")?;
        // The master's own variable, not NOTIFY_SOCKET: under an older master that one may be
        // systemd's, which would ignore a retirement request.
        let master_link = match (master_pid, vars.get(env::NOTIFY_SOCKET)) {
            (Some(_), Some(addr)) => {
                let notifier = Notifier::new(&addr).map_err(|e| WorkerError::InvalidVar {
                    var: env::NOTIFY_SOCKET,
                    value: addr,
                    expected: match e {
                        NotifyError::Unsupported(_) => "an absolute path or @abstract-name",
                        _ => "a unix datagram socket this process can send to",
                    },
                })?;
                Some(MasterLink {
                    notifier: Arc::new(notifier),
                })
            }
            _ => None,
        };
        Ok(WorkerContext {
            worker_id: vars
                .parse(env::WORKER_ID, "a non-negative integer")?
                .unwrap_or(0),
            master_pid,
            master_link,
            timeout: Duration::from_secs(timeout),
            graceful_timeout: Duration::from_secs(
                vars.parse(env::GRACEFUL_TIMEOUT, "seconds")?.unwrap_or(30),
            ),
            max_requests: vars
                .parse(env::MAX_REQUESTS, "a non-negative integer")?
                .unwrap_or(0),
            listen_fds,
            fd_names,
            heartbeat,
            taken: AtomicBool::new(false),
        })
    }

    /// The worker's slot under the master (1, 2, ...; a replacement takes the slot of the worker
    /// it replaces); 0 when standalone.
    pub fn worker_id(&self) -> u64 {
        self.worker_id
    }

    /// Whether a master started this process (it passed listeners or a worker id).
    pub fn is_managed(&self) -> bool {
        self.listen_fds > 0 || self.worker_id > 0
    }

    /// Requests after which the worker should exit gracefully (0: no limit).
    pub fn max_requests(&self) -> u64 {
        self.max_requests
    }

    /// The master's heartbeat timeout (zero: none).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long the worker may take to finish in-flight work after TERM.
    pub fn graceful_timeout(&self) -> Duration {
        self.graceful_timeout
    }

    /// The pid of the master that started this worker (`GPE_MASTER_PID`), if one did.
    pub fn master_pid(&self) -> Option<u32> {
        self.master_pid
    }

    /// Whether the master that started us is gone (our parent pid changed).
    pub fn parent_changed(&self) -> bool {
        self.master_pid
            .is_some_and(|p| nix::unistd::getppid().as_raw() as u32 != p)
    }

    /// The channel to the master's notification socket, under a gpe-master that gave one.
    pub fn master_link(&self) -> Option<MasterLink> {
        self.master_link.clone()
    }

    /// Heartbeat now if the last one is older than a quarter of the timeout. Cheap enough for
    /// every loop iteration.
    pub fn notify(&self) {
        if let Some(h) = &self.heartbeat {
            h.notify();
        }
    }

    /// Heartbeat from a background thread for as long as the process lives (for frameworks whose
    /// loop is not ours to call [`notify`](Self::notify) from). A stuck request then no longer
    /// stops the heartbeat: prefer `notify` where you can.
    pub fn start_heartbeat(&self) {
        let Some(h) = self.heartbeat.clone() else {
            return;
        };
        let period = h.background_period();
        let spawned = std::thread::Builder::new()
            .name("gpe-heartbeat".to_owned())
            .spawn(move || loop {
                h.beat();
                std::thread::sleep(period);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the heartbeat thread");
        }
    }

    /// The heartbeat as a task for the worker's own async runtime (`None` without a heartbeat
    /// channel): it beats every half period for as long as the runtime runs it, so a runtime
    /// whose threads are all stuck stops heartbeating and the master's `--timeout` replaces the
    /// worker, as gunicorn's async workers that notify from their event loop. Prefer it to
    /// [`start_heartbeat`](Self::start_heartbeat) in tokio-based servers.
    ///
    /// ```no_run
    /// # async fn serve(ctx: &gpe_core::worker::WorkerContext) {
    /// if let Some(beat) = ctx.heartbeat_task() {
    ///     tokio::spawn(beat);
    /// }
    /// # }
    /// ```
    #[cfg(feature = "server")]
    pub fn heartbeat_task(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let h = self.heartbeat.clone()?;
        let period = h.background_period();
        Some(async move {
            loop {
                h.beat();
                tokio::time::sleep(period).await;
            }
        })
    }

    /// The inherited listeners, in `--bind` order, named as in `LISTEN_FDNAMES`. Taken once.
    ///
    /// # Errors
    /// When called twice, or an inherited fd is not a listening stream socket.
    pub fn named_listeners(&self) -> Result<Vec<(String, Listener)>, WorkerError> {
        if self.taken.swap(true, Ordering::SeqCst) {
            return Err(WorkerError::AlreadyTaken);
        }
        let mut out = Vec::with_capacity(self.listen_fds);
        for i in 0..self.listen_fds {
            let fd = 3 + i as RawFd;
            let owned = adopt_fd(fd).ok_or(WorkerError::NotAListener {
                fd,
                why: "not open, or already taken",
            })?;
            let name = self
                .fd_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("fd://{fd}"));
            out.push((name, to_listener(owned)?));
        }
        Ok(out)
    }

    /// The inherited listeners (see [`named_listeners`](Self::named_listeners)).
    ///
    /// # Errors
    /// As `named_listeners`.
    pub fn listeners(&self) -> Result<Vec<Listener>, WorkerError> {
        Ok(self
            .named_listeners()?
            .into_iter()
            .map(|(_, l)| l)
            .collect())
    }

    /// The inherited listeners, or, standalone, one bound to `GPE_BIND` (`host:port` or
    /// `unix:/path`; default `127.0.0.1:8000`).
    ///
    /// # Errors
    /// As `listeners`, or when binding fails.
    pub fn listeners_or_bind(&self) -> Result<Vec<Listener>, WorkerError> {
        if self.listen_fds > 0 {
            return self.listeners();
        }
        let spelled = var(env::BIND).unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let addr: BindAddr = spelled.parse().map_err(|_| WorkerError::InvalidVar {
            var: env::BIND,
            value: spelled.clone(),
            expected: "HOST:PORT or unix:PATH",
        })?;
        let listener = addr.bind().map_err(|source| WorkerError::Bind {
            addr: spelled,
            source,
        })?;
        tracing::info!(addr = %addr, "standalone: listening");
        Ok(vec![listener])
    }
}

/// What a worker tells its gpe-master through the notification socket (see
/// [`crate::notify`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct MasterLink {
    notifier: Arc<Notifier>,
}

impl MasterLink {
    /// Tell the master that this worker serves (`READY=1`): it counts as up from now on (for
    /// the master's own readiness, and to stop the worker a replacement is booting for). A
    /// failure is logged at debug: the master then goes by the heartbeat.
    pub fn ready(&self) {
        if let Err(e) = self.notifier.notify("READY=1") {
            tracing::debug!(error = %e, "cannot tell the master this worker is ready");
        }
    }

    /// Ask the master for a replacement because `GPE_MAX_REQUESTS` was reached
    /// ([`RETIRE`](crate::worker::notify::RETIRE)): the master starts one and sends this worker
    /// `SIGTERM` once it serves. Returns whether the master was told; when it was not, stop at
    /// once instead.
    pub fn ask_to_be_replaced(&self) -> bool {
        match self.notifier.notify(crate::worker::notify::RETIRE) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the master for a replacement; stopping now");
                false
            }
        }
    }
}

/// Take ownership of the inherited descriptor `fd` (socket activation, the heartbeat file, a
/// master's re-exec), closed on exec from now on. `None` when it is stdio, not open, or was
/// already taken in this process: each inherited descriptor is adopted at most once, whoever
/// asks (the worker side and gpe-master share this one registry).
///
/// ```
/// assert!(gpe_core::worker::adopt_fd(1).is_none()); // stdio is never adopted
/// assert!(gpe_core::worker::adopt_fd(1 << 20).is_none()); // not open
/// ```
pub fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    crate::sys::fd::adopt_inherited(fd)
}

fn to_listener(fd: OwnedFd) -> Result<Listener, WorkerError> {
    let raw = fd.as_raw_fd();
    let bad = |why: &'static str| WorkerError::NotAListener { fd: raw, why };
    let inspect = |source| WorkerError::Inspect { fd: raw, source };
    let accepting = getsockopt(&fd, sockopt::AcceptConn).map_err(inspect)?;
    if !accepting {
        return Err(bad("it is not listening"));
    }
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).map_err(inspect)?;
    let mut flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
    flags.insert(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(flags)).map_err(inspect)?;
    let addr: SockaddrStorage = nix::sys::socket::getsockname(raw).map_err(inspect)?;
    match addr.family() {
        Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(fd))),
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            Ok(Listener::Tcp(TcpListener::from(fd)))
        }
        _ => Err(bad("its address family is neither Unix nor IP")),
    }
}

/// The heartbeat file: setting its times to the monotonic clock (gunicorn 22+'s
/// `os.utime(fd, (monotonic, monotonic))`) tells the master the worker is alive. The master
/// compares the file's mtime with its own monotonic clock, so a step of the wall clock (NTP, a
/// resumed VM) neither kills a live worker nor hides a hung one.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    inner: Arc<HeartbeatInner>,
}

#[derive(Debug)]
struct HeartbeatInner {
    file: File,
    period: Duration,
    started: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn adopt(fd: RawFd, timeout: Duration) -> Result<Heartbeat, WorkerError> {
        let owned = adopt_fd(fd).ok_or(WorkerError::InvalidVar {
            var: env::HEARTBEAT_FD,
            value: fd.to_string(),
            expected: "an open descriptor inherited from gpe-master",
        })?;
        let hb = Heartbeat {
            inner: Arc::new(HeartbeatInner {
                file: File::from(owned),
                period: (timeout / 4).max(Duration::from_millis(100)),
                started: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        };
        hb.beat();
        Ok(hb)
    }

    /// Touch the file now: atime and mtime become the monotonic clock's reading.
    pub fn beat(&self) {
        let now = match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
            Ok(t) => nix::sys::time::TimeSpec::new(t.tv_sec(), t.tv_nsec()),
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed: no monotonic clock");
                return;
            }
        };
        if let Err(e) = nix::sys::stat::futimens(self.inner.file.as_fd(), &now, &now) {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        let now = self.inner.started.elapsed().as_millis() as u64;
        self.inner.last_ms.store(now, Ordering::Relaxed);
    }

    /// How often a background beater (thread or task) touches the file: half of `notify`'s period,
    /// at least 100 ms.
    fn background_period(&self) -> Duration {
        (self.inner.period / 2).max(Duration::from_millis(100))
    }

    /// Touch the file if the last beat is older than a quarter of the timeout.
    pub fn notify(&self) {
        let now = self.inner.started.elapsed().as_millis() as u64;
        let last = self.inner.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.inner.period.as_millis() as u64 {
            self.beat();
        }
    }
}

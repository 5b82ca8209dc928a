//! The `/metrics` HTTP server that any process can start (feature `server`).
//!
//! hyper 1 over HTTP/1.1, optionally TLS (rustls, with client certificates verified and, when
//! asked, required), optional HTTP basic auth. Paths: `/metrics` (text 0.0.4 or OpenMetrics by
//! `Accept`, gzip by `Accept-Encoding`), the probes `/health` (liveness: 200 while the server
//! answers) and `/ready` (200 while [`MetricsServer::readiness`] passes, else 503 saying why),
//! which answer without credentials unless [`ServerConfig::probes_auth`] says otherwise, and 404
//! for anything else; a request hyper cannot parse gets 400 and the server goes on. Header size
//! and the time to send headers are bounded, and so is the number of connections served at once:
//! at the cap, the connection idle the longest makes room, so clients that hold connections open
//! without a request cannot keep a scrape out.
//!
//! Binding happens in [`MetricsServer::bind`], so a taken port is an error at once.
//!
//! ```
//! use std::sync::Arc;
//! use gpe_core::expose::server::{MetricsServer, ServerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new();
//! let hits = prometheus::IntCounter::new("hits_total", "Hits.")?;
//! registry.register(Box::new(hits.clone()))?;
//! hits.inc();
//!
//! let config = ServerConfig::new("127.0.0.1:0".parse()?);
//! let server = MetricsServer::bind(config, Arc::new(move || registry.gather().into()))?;
//! let handle = server.spawn_thread()?;
//!
//! use std::io::{Read, Write};
//! let mut conn = std::net::TcpStream::connect(handle.local_addr())?;
//! conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//! let mut response = String::new();
//! conn.read_to_string(&mut response)?;
//! assert!(response.starts_with("HTTP/1.1 200 OK"));
//! assert!(response.contains("hits_total 1"));
//! handle.shutdown();
//! # Ok(())
//! # }
//! ```

mod admission;
mod config;
mod respond;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

pub use config::ServerConfig;

use super::config::ConfigError;
use super::Scrape;
use admission::{Admission, Ticket};
use respond::{expected_authorization, respond, Shared};
use tls::tls_acceptor;

/// What the server exposes: called (on a blocking thread) for every scrape.
pub type Source = Arc<dyn Fn() -> Scrape + Send + Sync>;

/// What `/ready` asks (on a blocking thread): `Err` says why the process is not ready, and
/// `/ready` answers 503 with it. See [`MetricsServer::readiness`] and [`store_writable`].
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A readiness check that passes while `dir` (the store directory) is writable by this
/// process (`access(2)` with `W_OK`: permissions and a read-only file system; not free space).
pub fn store_writable(dir: impl Into<PathBuf>) -> Readiness {
    let dir = dir.into();
    Arc::new(move || {
        nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| format!("the store directory {} is not writable: {e}", dir.display()))
    })
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot bind the metrics server to {addr}: {source} (is another process using it? set PROMETHEUS_METRICS_PORT / PROMETHEUS_BIND_ADDRESS)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file could not be used.
    #[error("TLS: {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An I/O error of the listener or the runtime.
    #[error("metrics server: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet serving, metrics server.
pub struct MetricsServer {
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: ServerConfig,
    source: Source,
    readiness: Option<Readiness>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Bind the address and load the TLS files.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address is taken or not ours, [`ServerError::Tls`] when a
    /// certificate, key or CA file cannot be read or used.
    pub fn bind(config: ServerConfig, source: Source) -> Result<MetricsServer, ServerError> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener =
            std::net::TcpListener::bind(config.addr).map_err(|source| ServerError::Bind {
                addr: config.addr,
                source,
            })?;
        MetricsServer::serving(listener, tls, config, source)
    }

    /// Serve on a listener bound elsewhere (inherited from another process, say); the
    /// configured address is ignored.
    ///
    /// # Errors
    /// [`ServerError::Tls`] as [`bind`](Self::bind), or when the socket cannot be made
    /// non-blocking.
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: ServerConfig,
        source: Source,
    ) -> Result<MetricsServer, ServerError> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        MetricsServer::serving(listener, tls, config, source)
    }

    fn serving(
        listener: std::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        config: ServerConfig,
        source: Source,
    ) -> Result<MetricsServer, ServerError> {
        listener.set_nonblocking(true)?;
        Ok(MetricsServer {
            listener,
            tls,
            config,
            source,
            readiness: None,
        })
    }

    /// What `/ready` checks (without one, `/ready` always answers 200): the master's says
    /// whether its configured workers are up and the store directory is writable; a standalone
    /// worker's, the store directory ([`store_writable`]).
    #[must_use]
    pub fn readiness(mut self, check: Readiness) -> MetricsServer {
        self.readiness = Some(check);
        self
    }

    /// A duplicate of the listening socket (to hand to another process, e.g. a re-exec'd master).
    ///
    /// # Errors
    /// When `dup` fails.
    pub fn listener_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        Ok(self.listener.try_clone()?.into())
    }

    /// The address actually bound (port 0 resolved).
    ///
    /// # Errors
    /// Never in practice: the socket is bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes; must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the listener cannot be registered with the runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let shared = Arc::new(Shared {
            source: self.source,
            auth: self.config.basic_auth.as_ref().map(expected_authorization),
            probes_auth: self.config.probes_auth,
            readiness: self.readiness,
        });
        let admission = Admission::new(self.config.max_connections);
        let config = Arc::new(self.config);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "metrics server: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // A slot: free, or made by closing the connection idle the longest.
            let ticket = tokio::select! {
                () = &mut shutdown => return Ok(()),
                t = admission.admit() => Arc::new(t),
            };
            let shared = Arc::clone(&shared);
            let config = Arc::clone(&config);
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let closing = Arc::clone(&ticket);
                let served = async move {
                    match tls {
                        None => serve_connection(stream, &config, shared, ticket).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(
                                config.header_timeout,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => serve_connection(tls, &config, shared, ticket).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "metrics server: TLS handshake failed")
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "metrics server: TLS handshake timed out")
                                }
                            }
                        }
                    }
                };
                tokio::select! {
                    () = served => {}
                    () = closing.closing() => {
                        tracing::debug!(%peer, "metrics server: closed an idle connection to make room");
                    }
                }
            });
        }
    }

    /// Serve on a thread of its own (with its own single-threaded runtime), for processes that
    /// have no tokio runtime (gpe-master, sync workers).
    ///
    /// # Errors
    /// When the runtime or the thread cannot be created.
    pub fn spawn_thread(self) -> Result<ServerHandle, ServerError> {
        let local_addr = self.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gpe-metrics".into())
            .spawn(move || {
                let shutdown = async {
                    let _ = rx.await;
                };
                if let Err(e) = runtime.block_on(self.serve(shutdown)) {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            })?;
        Ok(ServerHandle {
            local_addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

/// A server running on its own thread; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting and wait for the thread to end (connections in progress are dropped).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn serve_connection<S>(
    stream: S,
    config: &ServerConfig,
    shared: Arc<Shared>,
    ticket: Arc<Ticket>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let ticket = Arc::clone(&ticket);
        async move {
            // Inside a request, a connection is not closed to make room.
            ticket.busy();
            let response = respond(req, &shared).await;
            ticket.idle();
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "metrics server: connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_port_is_an_immediate_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let start = std::time::Instant::now();
        let err =
            MetricsServer::bind(ServerConfig::new(addr), Arc::new(Scrape::default)).unwrap_err();
        assert!(matches!(err, ServerError::Bind { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}

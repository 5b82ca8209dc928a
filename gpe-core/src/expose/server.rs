//! The `/metrics` HTTP server that any process can start (feature `server`).
//!
//! hyper 1 over HTTP/1.1, optionally TLS (rustls, with client certificates verified and, when
//! asked, required), optional HTTP basic auth. Paths: `/metrics` (text 0.0.4 or OpenMetrics by
//! `Accept`, gzip by `Accept-Encoding`), `/health`, and 404 for anything else; a request hyper
//! cannot parse gets 400 and the server goes on. Header size and the time to send headers are
//! bounded, and so is the number of connections served at once.
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
//! let server = MetricsServer::bind(config, Arc::new(move || registry.gather()))?;
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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::proto::MetricFamily;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use super::config::{BasicAuth, Config, ConfigError, TlsFiles};

/// What the server exposes: called (on a blocking thread) for every scrape.
pub type Source = Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

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

/// How the server listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    addr: SocketAddr,
    tls: Option<TlsFiles>,
    basic_auth: Option<BasicAuth>,
    max_header_bytes: usize,
    header_timeout: Duration,
    max_connections: usize,
}

impl ServerConfig {
    /// Plain HTTP on `addr`, no auth.
    pub fn new(addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            addr,
            tls: None,
            basic_auth: None,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            max_connections: 128,
        }
    }

    /// Address, TLS and basic auth from a [`Config`].
    pub fn from_config(config: &Config) -> ServerConfig {
        let mut c = ServerConfig::new(config.metrics_addr());
        c.tls = config.tls().cloned();
        c.basic_auth = config.basic_auth().cloned();
        c
    }

    /// [`from_config`](Self::from_config) of [`Config::from_env`].
    ///
    /// # Errors
    /// When a variable has an invalid value.
    pub fn from_env() -> Result<ServerConfig, ConfigError> {
        Ok(ServerConfig::from_config(&Config::from_env()?))
    }

    /// Listen on `addr` instead.
    #[must_use]
    pub fn addr(mut self, addr: SocketAddr) -> ServerConfig {
        self.addr = addr;
        self
    }

    /// Serve over TLS.
    #[must_use]
    pub fn tls(mut self, tls: Option<TlsFiles>) -> ServerConfig {
        self.tls = tls;
        self
    }

    /// Require these basic auth credentials.
    #[must_use]
    pub fn basic_auth(mut self, auth: Option<BasicAuth>) -> ServerConfig {
        self.basic_auth = auth;
        self
    }

    /// Largest request head accepted (default 16 KiB); larger gets 431.
    #[must_use]
    pub fn max_header_bytes(mut self, bytes: usize) -> ServerConfig {
        self.max_header_bytes = bytes.max(8192);
        self
    }

    /// Time a client has to send the request head (and the TLS handshake), default 10 s.
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.header_timeout = timeout;
        self
    }

    /// Connections served at once (default 128); more wait to be accepted.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> ServerConfig {
        self.max_connections = n.max(1);
        self
    }
}

/// A bound, not yet serving, metrics server.
pub struct MetricsServer {
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: ServerConfig,
    source: Source,
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
        listener.set_nonblocking(true)?;
        Ok(MetricsServer {
            listener,
            tls,
            config,
            source,
        })
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
        listener.set_nonblocking(true)?;
        Ok(MetricsServer {
            listener,
            tls,
            config,
            source,
        })
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
        });
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let config = Arc::new(self.config);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => return Ok(()),
                p = Arc::clone(&limit).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
            };
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
            let shared = Arc::clone(&shared);
            let config = Arc::clone(&config);
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    None => serve_connection(stream, &config, shared).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(config.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => serve_connection(tls, &config, shared).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "metrics server: TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "metrics server: TLS handshake timed out")
                            }
                        }
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

struct Shared {
    source: Source,
    auth: Option<Vec<u8>>,
}

async fn serve_connection<S>(stream: S, config: &ServerConfig, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(respond(req, &shared).await) }
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if let Some(expected) = &shared.auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(header::HeaderValue::as_bytes);
        if !given.is_some_and(|g| constant_time_eq(g, expected)) {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"metrics\", charset=\"UTF-8\""),
            );
            return r;
        }
    }
    let head_or_get = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        "/metrics" if head_or_get => {}
        "/health" if head_or_get => return text(StatusCode::OK, "ok\n"),
        "/metrics" | "/health" => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        _ => return text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
    let header_str = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let accept = header_str(header::ACCEPT);
    let accept_encoding = header_str(header::ACCEPT_ENCODING);
    let source = Arc::clone(&shared.source);
    // Reading every process's files is blocking work: keep it off the reactor.
    let encoded = tokio::task::spawn_blocking(move || {
        crate::expose::encode(&source(), accept.as_deref(), accept_encoding.as_deref())
    })
    .await;
    match encoded {
        Ok(Ok(e)) => {
            let mut r = Response::new(Full::new(Bytes::from(e.body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(e.content_type),
            );
            if let Some(enc) = e.content_encoding {
                r.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static(enc),
                );
            }
            r.headers_mut().insert(
                header::VARY,
                header::HeaderValue::from_static("Accept, Accept-Encoding"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "metrics server: encoding failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed; see the server's log\n",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics server: collecting panicked");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting the metrics failed; see the server's log\n",
            )
        }
    }
}

/// The exact `Authorization` header value the credentials produce.
fn expected_authorization(auth: &BasicAuth) -> Vec<u8> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", auth.user, auth.password));
    format!("Basic {token}").into_bytes()
}

/// Compare without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &y) in b.iter().enumerate() {
        let x = a.get(i).copied().unwrap_or(!y);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> ServerError {
    ServerError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ServerError> {
    let pem = std::fs::read(path).map_err(|e| tls_error(path, e))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let certs = read_certs(&files.cert)?;
    let pem = std::fs::read(&files.key).map_err(|e| tls_error(&files.key, e))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| tls_error(&files.key, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| tls_error(&files.key, "no PEM private key in the file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&files.cert, e))?;
    let builder = match &files.client_ca {
        None if files.client_auth_required => {
            return Err(tls_error(
                &files.cert,
                "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED is set but PROMETHEUS_SSL_CLIENT_CAFILE is not: set the CA that signs client certificates",
            ))
        }
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_auth_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| tls_error(ca, e))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&files.key, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"Basic abc", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic abd", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic ab", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic abcd", b"Basic abc"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn authorization_header() {
        let auth = BasicAuth {
            user: "prom".into(),
            password: "s3cret".into(),
        };
        assert_eq!(
            expected_authorization(&auth),
            b"Basic cHJvbTpzM2NyZXQ=".to_vec()
        );
    }

    #[test]
    fn taken_port_is_an_immediate_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let start = std::time::Instant::now();
        let err = MetricsServer::bind(ServerConfig::new(addr), Arc::new(Vec::new)).unwrap_err();
        assert!(matches!(err, ServerError::Bind { .. }), "{err}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}

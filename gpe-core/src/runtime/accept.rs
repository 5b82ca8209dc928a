//! Connections for the connection kinds: [`Connection`] (blocking) and [`AsyncConnection`] /
//! [`AsyncStream`] (async), accepted on every listener the worker inherits.

use std::io::{Read, Write};
use std::time::Duration;

use crate::worker::Listener;

/// A connection accepted on one of the worker's listeners.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connection {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A Unix-domain stream.
    Unix(std::os::unix::net::UnixStream),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.read(buf),
            Connection::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.write(buf),
            Connection::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => s.flush(),
            Connection::Unix(s) => s.flush(),
        }
    }
}

/// Wait up to `timeout` for a connection on any of `listeners`.
pub(super) fn accept(listeners: &[Listener], timeout: Duration) -> Option<Connection> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = listeners
        .iter()
        .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms =
        PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    for (l, fd) in listeners.iter().zip(&fds) {
        if !fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            continue;
        }
        // Listeners are non-blocking: another worker may have taken the connection.
        let accepted = match l {
            Listener::Tcp(t) => t.accept().map(|(s, _)| Connection::Tcp(s)),
            Listener::Unix(u) => u.accept().map(|(s, _)| Connection::Unix(s)),
        };
        if let Ok(conn) = accepted {
            let _ = match &conn {
                Connection::Tcp(s) => s.set_nonblocking(false),
                Connection::Unix(s) => s.set_nonblocking(false),
            };
            return Some(conn);
        }
    }
    None
}

/// A connection accepted by the async connection kind, on a TCP or a Unix listener. A handler
/// taking this type is served on every listener the worker inherits.
///
/// ```
/// use gpe_core::runtime::AsyncConnection;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (a, b) = tokio::net::UnixStream::pair()?;
/// let mut conn = AsyncConnection::Unix(a);
/// conn.write_all(b"hi").await?;
/// let mut buf = [0; 2];
/// let mut peer = AsyncConnection::Unix(b);
/// peer.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"hi");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AsyncConnection {
    /// TCP.
    Tcp(tokio::net::TcpStream),
    /// A Unix-domain stream.
    Unix(tokio::net::UnixStream),
}

impl tokio::io::AsyncRead for AsyncConnection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for AsyncConnection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AsyncConnection::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            AsyncConnection::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What an async connection handler may take: [`tokio::net::TcpStream`] (served on the TCP
/// listeners only), [`tokio::net::UnixStream`] (Unix listeners only) or [`AsyncConnection`]
/// (every listener).
pub trait AsyncStream: Sized + Send + 'static {
    /// Whether TCP listeners are served.
    const TCP: bool;
    /// Whether Unix listeners are served.
    const UNIX: bool;
    /// A TCP connection as this type (`None` when not served).
    fn from_tcp(stream: tokio::net::TcpStream) -> Option<Self>;
    /// A Unix connection as this type (`None` when not served).
    fn from_unix(stream: tokio::net::UnixStream) -> Option<Self>;
}

impl AsyncStream for tokio::net::TcpStream {
    const TCP: bool = true;
    const UNIX: bool = false;
    fn from_tcp(stream: tokio::net::TcpStream) -> Option<Self> {
        Some(stream)
    }
    fn from_unix(_: tokio::net::UnixStream) -> Option<Self> {
        None
    }
}

impl AsyncStream for tokio::net::UnixStream {
    const TCP: bool = false;
    const UNIX: bool = true;
    fn from_tcp(_: tokio::net::TcpStream) -> Option<Self> {
        None
    }
    fn from_unix(stream: tokio::net::UnixStream) -> Option<Self> {
        Some(stream)
    }
}

impl AsyncStream for AsyncConnection {
    const TCP: bool = true;
    const UNIX: bool = true;
    fn from_tcp(stream: tokio::net::TcpStream) -> Option<Self> {
        Some(AsyncConnection::Tcp(stream))
    }
    fn from_unix(stream: tokio::net::UnixStream) -> Option<Self> {
        Some(AsyncConnection::Unix(stream))
    }
}

/// Accept on `listener` forever, sending each connection to `tx` (one task per listener).
pub(super) async fn accept_loop<C: AsyncStream>(
    listener: Listener,
    tx: tokio::sync::mpsc::Sender<C>,
) {
    enum Async {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let _ = listener.set_nonblocking(true);
    let converted = match listener {
        Listener::Tcp(t) => tokio::net::TcpListener::from_std(t).map(Async::Tcp),
        Listener::Unix(u) => tokio::net::UnixListener::from_std(u).map(Async::Unix),
    };
    let listener = match converted {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot use an inherited listener");
            return;
        }
    };
    loop {
        let accepted = match &listener {
            Async::Tcp(t) => t.accept().await.map(|(s, _)| C::from_tcp(s)),
            Async::Unix(u) => u.accept().await.map(|(s, _)| C::from_unix(s)),
        };
        match accepted {
            Ok(Some(conn)) => {
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // EMFILE and the like: do not spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

//! The client side of systemd's notification protocol (`sd_notify(3)`): one datagram of
//! `KEY=VALUE` lines sent to the unix socket named by `NOTIFY_SOCKET`.
//!
//! gpe uses it twice: gpe-master tells systemd `READY=1`, `RELOADING=1`, `STOPPING=1` and
//! `MAINPID=` (a `Type=notify` unit), and a worker tells its gpe-master that it serves
//! (`READY=1`) or that it reached `--max-requests` and wants a replacement
//! ([`RETIRE`]). gpe-master gives each worker a socket of its own making in `GPE_NOTIFY_SOCKET`
//! ([`crate::worker::env::NOTIFY_SOCKET`])
//! and `NOTIFY_SOCKET`, so a worker that already speaks the protocol (through any sd_notify
//! library) is understood as well.
//!
//! ```no_run
//! # fn main() -> Result<(), gpe_core::worker::notify::NotifyError> {
//! use gpe_core::worker::notify::Notifier;
//!
//! if let Some(notifier) = Notifier::from_env()? {
//!     notifier.notify("READY=1\nSTATUS=serving")?;
//! }
//! # Ok(())
//! # }
//! ```

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable naming the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The message a worker sends its master when it reached its `GPE_MAX_REQUESTS`: "start my
/// replacement, then stop me" (a gpe extension: systemd ignores keys it does not know). The
/// worker keeps serving until the master's `SIGTERM`, so no capacity is lost while the
/// replacement boots.
pub const RETIRE: &str = "X_GPE_RETIRE=max_requests";

/// Errors of the notification client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` names no unix socket this client can reach.
    #[error("NOTIFY_SOCKET={0:?} is not supported: expected an absolute path or @abstract-name")]
    Unsupported(String),
    /// The socket could not be created or the message not sent.
    #[error("sd_notify to {addr}: {source}")]
    Io {
        /// The socket's address as given.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A connection-less sender to one notification socket. Cheap to share (`&self` methods).
#[derive(Debug)]
pub struct Notifier {
    spelled: String,
    addr: SocketAddr,
    socket: UnixDatagram,
}

/// The address for a `NOTIFY_SOCKET` value: `/path` or `@abstract`.
fn parse_addr(spelled: &str) -> Result<SocketAddr, NotifyError> {
    let unsupported = || NotifyError::Unsupported(spelled.to_owned());
    if let Some(name) = spelled.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| unsupported())
    } else if spelled.starts_with('/') {
        SocketAddr::from_pathname(spelled).map_err(|_| unsupported())
    } else {
        Err(unsupported())
    }
}

impl Notifier {
    /// A sender to `NOTIFY_SOCKET`, or `None` when it is unset or empty.
    ///
    /// # Errors
    /// When the variable names an address this client cannot use (`vsock:` for one), or the
    /// sending socket cannot be created.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var(NOTIFY_SOCKET) {
            Ok(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// A sender to the socket spelled `addr` (`/path` or `@abstract-name`).
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn new(addr: &str) -> Result<Notifier, NotifyError> {
        let parsed = parse_addr(addr)?;
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Io {
            addr: addr.to_owned(),
            source,
        })?;
        Ok(Notifier {
            spelled: addr.to_owned(),
            addr: parsed,
            socket,
        })
    }

    /// Send `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    ///
    /// # Errors
    /// When the datagram cannot be sent (no one listens there, for one).
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
            .map_err(|source| NotifyError::Io {
                addr: self.spelled.clone(),
                source,
            })
    }

    /// The address as given.
    pub fn addr(&self) -> &str {
        &self.spelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(parse_addr("/run/systemd/notify").is_ok());
        assert!(parse_addr("@gpe-1").is_ok());
        for bad in ["", "relative", "vsock:2:1"] {
            assert!(
                matches!(parse_addr(bad), Err(NotifyError::Unsupported(s)) if s == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        let name = format!("gpe-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}

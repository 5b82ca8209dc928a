//! [`BindAddr`]: where a standalone worker listens, spelled as gpe-master's `--bind` and
//! `GPE_BIND` spell it (`HOST:PORT` or `unix:PATH`). Every worker kind parses it here.
//!
//! ```
//! use gpe_core::worker::BindAddr;
//!
//! let tcp: BindAddr = "127.0.0.1:0".parse()?;
//! let listener = tcp.bind()?; // a std listener, blocking
//! assert!(matches!(listener, gpe_core::worker::Listener::Tcp(_)));
//!
//! let err = "8000".parse::<BindAddr>().unwrap_err();
//! assert!(err.to_string().contains("use HOST:PORT"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::str::FromStr;

use super::Listener;

/// The standalone address when none is given.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";

/// A standalone bind address: `HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindAddr {
    /// `HOST:PORT` (resolved when bound): `127.0.0.1:8000`, `[::1]:8000`, `localhost:0`.
    Tcp(String),
    /// `unix:PATH`: a Unix-domain socket at `PATH` (which must not exist yet).
    Unix(PathBuf),
}

/// A bind address that is neither `HOST:PORT` nor `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bind address {0:?}: use HOST:PORT (127.0.0.1:8000, [::1]:8000) or unix:PATH")]
pub struct InvalidBindAddr(pub String);

impl FromStr for BindAddr {
    type Err = InvalidBindAddr;

    fn from_str(s: &str) -> Result<BindAddr, InvalidBindAddr> {
        let invalid = || InvalidBindAddr(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:") {
            return if path.is_empty() {
                Err(invalid())
            } else {
                Ok(BindAddr::Unix(PathBuf::from(path)))
            };
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(invalid());
        }
        Ok(BindAddr::Tcp(s.to_owned()))
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => f.write_str(a),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl BindAddr {
    /// Bind a blocking listener here (the first address a host name resolves to that binds).
    ///
    /// # Errors
    /// When the host does not resolve or the address cannot be bound (in use, no permission, a
    /// socket path that exists).
    pub fn bind(&self) -> std::io::Result<Listener> {
        Ok(match self {
            BindAddr::Tcp(a) => {
                let addrs: Vec<_> = a.to_socket_addrs()?.collect();
                Listener::Tcp(TcpListener::bind(&addrs[..])?)
            }
            BindAddr::Unix(p) => Listener::Unix(UnixListener::bind(p)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(
            "127.0.0.1:8000".parse::<BindAddr>().ok(),
            Some(BindAddr::Tcp("127.0.0.1:8000".to_owned()))
        );
        assert!("[::1]:0".parse::<BindAddr>().is_ok());
        assert!("localhost:80".parse::<BindAddr>().is_ok());
        assert_eq!(
            "unix:/tmp/app.sock".parse::<BindAddr>().ok(),
            Some(BindAddr::Unix(PathBuf::from("/tmp/app.sock")))
        );
        for bad in [
            "",
            "8000",
            ":8000",
            "host:",
            "host:99999",
            "host:x",
            "unix:",
        ] {
            assert_eq!(
                bad.parse::<BindAddr>(),
                Err(InvalidBindAddr(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            BindAddr::Unix(PathBuf::from("/a b")).to_string(),
            "unix:/a b"
        );
        assert_eq!(
            DEFAULT_BIND.parse::<BindAddr>().unwrap().to_string(),
            DEFAULT_BIND
        );
    }
}

//! Binding the listeners before any worker starts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};

use crate::MasterError;

/// A parsed `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindSpec {
    Tcp(String),
    Unix(PathBuf),
    Fd(RawFd),
}

impl BindSpec {
    pub(crate) fn parse(s: &str) -> Result<BindSpec, MasterError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(MasterError::BadBind(s.to_owned(), "empty socket path"));
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            return fd
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 3)
                .map(BindSpec::Fd)
                .ok_or(MasterError::BadBind(
                    s.to_owned(),
                    "expected fd://N with N >= 3",
                ));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(MasterError::BadBind(
                s.to_owned(),
                "expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N",
            ));
        };
        if port.parse::<u16>().is_err() {
            return Err(MasterError::BadBind(
                s.to_owned(),
                "the port is not a number from 0 to 65535",
            ));
        }
        let bracketed = host.starts_with('[') || host.ends_with(']');
        if bracketed && !(host.len() > 2 && host.starts_with('[') && host.ends_with(']')) {
            return Err(MasterError::BadBind(
                s.to_owned(),
                "an IPv6 address is written [ADDR]:PORT",
            ));
        }
        if !bracketed && host.contains(':') {
            return Err(MasterError::BadBind(
                s.to_owned(),
                "an IPv6 address must be in brackets: [ADDR]:PORT",
            ));
        }
        Ok(BindSpec::Tcp(s.to_owned()))
    }
}

/// A bound, listening socket and the name workers see in `LISTEN_FDNAMES`.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) name: String,
    pub(crate) fd: OwnedFd,
    unix_path: Option<PathBuf>,
}

impl Bound {
    /// A listener inherited from an old master (USR2).
    pub(crate) fn inherited(name: String, fd: OwnedFd, unix_path: Option<PathBuf>) -> Bound {
        Bound {
            name,
            fd,
            unix_path,
        }
    }

    /// Do not unlink the socket file on drop (a re-exec'd master still serves it).
    pub(crate) fn keep_path(&mut self) {
        self.unix_path = None;
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bind one spec.
pub(crate) fn bind_one(
    spec: &BindSpec,
    text: &str,
    backlog: i32,
    reuse_port: bool,
) -> Result<Bound, MasterError> {
    let io = |e: nix::errno::Errno| MasterError::Bind(text.to_owned(), std::io::Error::from(e));
    let backlog = Backlog::new(backlog.clamp(1, 65535)).map_err(io)?;
    match spec {
        BindSpec::Tcp(addr) => {
            let addrs: Vec<SocketAddr> = addr
                .to_socket_addrs()
                .map_err(|e| MasterError::Resolve(text.to_owned(), e))?
                .collect();
            let sa = *addrs.first().ok_or(MasterError::BadBind(
                text.to_owned(),
                "the host resolves to no address",
            ))?;
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io)?;
            if reuse_port {
                setsockopt(&fd, sockopt::ReusePort, &true).map_err(io)?;
            }
            match sa {
                SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).map_err(io)?,
                SocketAddr::V6(v6) => {
                    setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(io)?;
                    bind(fd.as_raw_fd(), &SockaddrIn6::from(v6)).map_err(io)?
                }
            }
            listen(&fd.as_fd(), backlog).map_err(io)?;
            Ok(Bound {
                name: text.to_owned(),
                fd,
                unix_path: None,
            })
        }
        BindSpec::Unix(path) => {
            match std::fs::symlink_metadata(path) {
                // A stale socket from an earlier run: gunicorn removes it too.
                Ok(meta) if meta.file_type().is_socket() => {
                    std::fs::remove_file(path)
                        .map_err(|e| MasterError::Bind(text.to_owned(), e))?;
                }
                // Anything else is not ours to delete (gunicorn: "%r is not a socket").
                Ok(_) => return Err(MasterError::NotASocket(path.clone())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MasterError::Bind(text.to_owned(), e)),
            }
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(io)?;
            let addr = UnixAddr::new(path.as_path()).map_err(io)?;
            bind(fd.as_raw_fd(), &addr).map_err(io)?;
            listen(&fd.as_fd(), backlog).map_err(io)?;
            Ok(Bound {
                name: text.to_owned(),
                fd,
                unix_path: Some(path.clone()),
            })
        }
        BindSpec::Fd(raw) => {
            let fd = crate::sys::adopt_fd(*raw).ok_or(MasterError::BadBind(
                text.to_owned(),
                "that descriptor is not open in the master",
            ))?;
            let listening = nix::sys::socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
            if !listening {
                return Err(MasterError::BadBind(
                    text.to_owned(),
                    "that descriptor is not a listening socket",
                ));
            }
            Ok(Bound {
                name: text.to_owned(),
                fd,
                unix_path: None,
            })
        }
    }
}

/// Parse every `--bind` (without binding anything): the spelling and the spec.
pub(crate) fn parse_all(texts: &[String]) -> Result<Vec<(String, BindSpec)>, MasterError> {
    texts
        .iter()
        .map(|t| Ok((t.clone(), BindSpec::parse(t)?)))
        .collect()
}

/// Bind every parsed `--bind`, in order.
pub(crate) fn bind_all(
    specs: &[(String, BindSpec)],
    backlog: i32,
    reuse_port: bool,
) -> Result<Vec<Bound>, MasterError> {
    specs
        .iter()
        .map(|(text, spec)| {
            let bound = bind_one(spec, text, backlog, reuse_port)?;
            tracing::info!("Listening at: {text} ({})", std::process::id());
            Ok(bound)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_specs_parse_like_gunicorn_spells_them() {
        for ok in [
            "127.0.0.1:8000",
            "localhost:0",
            "[::1]:8000",
            "0.0.0.0:65535",
        ] {
            assert_eq!(
                BindSpec::parse(ok).ok(),
                Some(BindSpec::Tcp(ok.to_owned())),
                "{ok}"
            );
        }
        assert_eq!(
            BindSpec::parse("unix:/run/x.sock").ok(),
            Some(BindSpec::Unix(PathBuf::from("/run/x.sock")))
        );
        assert_eq!(BindSpec::parse("fd://3").ok(), Some(BindSpec::Fd(3)));
        for bad in [
            "nonsense",
            "127.0.0.1:http",
            "127.0.0.1:65536",
            "127.0.0.1:",
            "::1:8000",
            "[::1:8000",
            "[]:8000",
            "unix:",
            "fd://2",
            "fd://x",
        ] {
            assert!(
                matches!(BindSpec::parse(bad), Err(MasterError::BadBind(..))),
                "{bad}"
            );
        }
    }
}

//! Binding the listeners before any worker starts, as gunicorn does (`util.parse_address`,
//! `sock.create_sockets`).
//!
//! `--bind` spellings (gunicorn's):
//!
//! | spelling | listener |
//! |---|---|
//! | `HOST:PORT`, `tcp://HOST:PORT` | TCP; a hostname binds its first IPv4 address (`localhost`: 127.0.0.1) |
//! | `HOST` | TCP on port 8000 |
//! | `:PORT` | TCP on every IPv4 interface (0.0.0.0) |
//! | `[V6ADDR]:PORT`, `[V6ADDR]` | TCP over IPv6, `IPV6_V6ONLY` left at the system default (Linux: dual-stack, so `[::]` also takes IPv4 clients) |
//! | `unix:PATH`, `unix://PATH` | a unix socket (a relative path is relative to the working directory), created under `--umask` and given to `--user`/`--group` |
//! | `fd://N` | the inherited socket at descriptor N (N ≥ 3), put in listening state again with `--backlog` |
//!
//! TCP listeners get `SO_REUSEADDR` and `TCP_NODELAY` (and `SO_REUSEPORT` with `--reuse-port`).
//! A bind that fails is retried [`BIND_ATTEMPTS`] times in all, [`BIND_RETRY_DELAY`] apart, so a
//! quick restart outlasts the old process still holding the port.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{
    bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage, UnixAddr,
};
use nix::sys::stat::Mode;

use crate::MasterError;

/// The port of a `--bind HOST` without one (gunicorn's).
pub(crate) const DEFAULT_PORT: u16 = 8000;
/// How many times a bind is tried before the master gives up (gunicorn's 5).
pub(crate) const BIND_ATTEMPTS: u32 = 5;
/// The pause between two bind attempts (gunicorn's 1 s).
pub(crate) const BIND_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A parsed `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindSpec {
    /// `host` is lowercase and without brackets: `""` for every IPv4 interface, an IPv6 address,
    /// an IPv4 address or a hostname.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
    Fd(RawFd),
}

/// Whether `host` could be a hostname (letters, digits, `.`, `-`, `_`): anything else is a typo
/// worth an error before anything is bound (gunicorn would only fail to resolve it).
fn hostname_like(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl BindSpec {
    pub(crate) fn parse(s: &str) -> Result<BindSpec, MasterError> {
        let bad = |why| Err(MasterError::BadBind(s.to_owned(), why));
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return bad("empty socket path");
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            return match fd.parse::<RawFd>() {
                Ok(fd) if fd >= 3 => Ok(BindSpec::Fd(fd)),
                _ => bad("expected fd://N with N >= 3"),
            };
        }
        let netloc = s.strip_prefix("tcp://").unwrap_or(s);
        let (host, port) = if let Some(rest) = netloc.strip_prefix('[') {
            let Some((addr, after)) = rest.split_once(']') else {
                return bad("an IPv6 address is written [ADDR]:PORT");
            };
            if addr.parse::<Ipv6Addr>().is_err() {
                return bad("the text in brackets is not an IPv6 address");
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return bad("an IPv6 address is written [ADDR]:PORT"),
                },
            };
            (addr, port)
        } else {
            match netloc.split_once(':') {
                Some((_, p)) if p.contains(':') => {
                    return bad("an IPv6 address must be in brackets: [ADDR]:PORT")
                }
                Some((h, p)) => (h, Some(p)),
                None => (netloc, None),
            }
        };
        if host.contains(']') || !(host.contains(':') || hostname_like(host)) {
            return bad("expected HOST:PORT, HOST, :PORT, [IPV6]:PORT, unix:PATH or fd://N");
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return bad("the port is not a number from 0 to 65535"),
            },
        };
        Ok(BindSpec::Tcp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// How listeners are made (from the command line).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BindOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_port: bool,
    /// The umask unix sockets are created under (`--umask`).
    pub(crate) umask: u32,
    /// The owner given to unix sockets (`--user`, `--group`).
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
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

    /// Do not unlink the socket file on drop (another master still serves it).
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

/// The address a TCP spec binds: hostnames and IPv4 over IPv4 (as gunicorn, whose socket family
/// is AF_INET unless the host is an IPv6 address), the first address the resolver gives.
fn resolve(host: &str, port: u16, text: &str) -> Result<SocketAddr, MasterError> {
    if host.is_empty() {
        return Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into());
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok((v6, port).into());
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Ok((v4, port).into());
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| MasterError::Resolve(text.to_owned(), e))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| {
            MasterError::Resolve(
                text.to_owned(),
                std::io::Error::other(
                    "no IPv4 address (a hostname binds over IPv4, as in gunicorn; \
                     write an IPv6 address as [ADDR]:PORT)",
                ),
            )
        })
}

/// Bind one spec, once.
pub(crate) fn bind_one(
    spec: &BindSpec,
    text: &str,
    opts: &BindOptions,
) -> Result<Bound, MasterError> {
    let io = |e: nix::errno::Errno| MasterError::Bind(text.to_owned(), std::io::Error::from(e));
    let backlog = Backlog::new(opts.backlog.clamp(1, 65535)).map_err(io)?;
    match spec {
        BindSpec::Tcp { host, port } => {
            let sa = resolve(host, *port, text)?;
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io)?;
            if opts.reuse_port {
                setsockopt(&fd, sockopt::ReusePort, &true).map_err(io)?;
            }
            setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(io)?;
            // IPv6: IPV6_V6ONLY stays at the system default, as in gunicorn (dual-stack `[::]`).
            match sa {
                SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)).map_err(io)?,
                SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6)).map_err(io)?,
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
            // The socket file's mode is 0777 & !umask: bind under --umask (gunicorn's default 0
            // lets a proxy running as another user connect). The master is single-threaded here.
            let old = nix::sys::stat::umask(Mode::from_bits_truncate(opts.umask));
            let bound = bind(fd.as_raw_fd(), &addr);
            nix::sys::stat::umask(old);
            bound.map_err(io)?;
            let listener = Bound {
                name: text.to_owned(),
                fd,
                unix_path: Some(path.clone()),
            };
            if opts.uid.is_some() || opts.gid.is_some() {
                nix::unistd::chown(
                    path,
                    opts.uid.map(nix::unistd::Uid::from_raw),
                    opts.gid.map(nix::unistd::Gid::from_raw),
                )
                .map_err(io)?;
            }
            listen(&listener.fd.as_fd(), backlog).map_err(io)?;
            Ok(listener)
        }
        BindSpec::Fd(raw) => {
            let fd = gpe_core::worker::adopt_fd(*raw).ok_or(MasterError::BadBind(
                text.to_owned(),
                "that descriptor is not open in the master",
            ))?;
            let not_a_stream = MasterError::BadBind(
                text.to_owned(),
                "that descriptor is not a stream socket (TCP or unix)",
            );
            let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())
                .ok()
                .and_then(|a| a.family());
            let stream = getsockopt(&fd, sockopt::SockType).ok() == Some(SockType::Stream);
            if !stream {
                return Err(not_a_stream);
            }
            // As gunicorn's BaseSocket.set_options on an inherited socket: the options, then
            // listen() again (harmless on a listening socket, needed on one only bound).
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io)?;
            match family {
                Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                    setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(io)?;
                }
                Some(AddressFamily::Unix) => {}
                _ => return Err(not_a_stream),
            }
            listen(&fd.as_fd(), backlog).map_err(io)?;
            Ok(Bound {
                name: text.to_owned(),
                fd,
                unix_path: None,
            })
        }
    }
}

/// Bind one spec, retrying failures of the bind itself (not bad values, nor `fd://`) as
/// gunicorn's `create_sockets` does.
fn bind_retrying(
    spec: &BindSpec,
    text: &str,
    opts: &BindOptions,
    attempts: u32,
    delay: Duration,
) -> Result<Bound, MasterError> {
    let mut attempt = 1;
    loop {
        match bind_one(spec, text, opts) {
            Ok(bound) => return Ok(bound),
            Err(e @ (MasterError::Bind(..) | MasterError::Resolve(..)))
                if attempt < attempts && !matches!(spec, BindSpec::Fd(_)) =>
            {
                tracing::warn!("{e}; retrying in {delay:?} (attempt {attempt} of {attempts})");
                std::thread::sleep(delay);
                attempt += 1;
            }
            Err(e) => return Err(e),
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

/// Bind every parsed `--bind`, in order, each tried [`BIND_ATTEMPTS`] times.
pub(crate) fn bind_all(
    specs: &[(String, BindSpec)],
    opts: &BindOptions,
) -> Result<Vec<Bound>, MasterError> {
    specs
        .iter()
        .map(|(text, spec)| {
            let bound = bind_retrying(spec, text, opts, BIND_ATTEMPTS, BIND_RETRY_DELAY)?;
            tracing::info!("Listening at: {text} ({})", std::process::id());
            Ok(bound)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Option<BindSpec> {
        Some(BindSpec::Tcp {
            host: host.to_owned(),
            port,
        })
    }

    #[test]
    fn tcp_spellings_parse_like_gunicorn_parse_address() {
        for (text, want) in [
            ("127.0.0.1:8000", tcp("127.0.0.1", 8000)),
            ("localhost:0", tcp("localhost", 0)),
            ("LocalHost:1", tcp("localhost", 1)),
            ("[::1]:8000", tcp("::1", 8000)),
            ("[::]:9", tcp("::", 9)),
            ("[::1]", tcp("::1", DEFAULT_PORT)),
            ("0.0.0.0:65535", tcp("0.0.0.0", 65535)),
            ("0.0.0.0", tcp("0.0.0.0", DEFAULT_PORT)),
            ("example.com", tcp("example.com", DEFAULT_PORT)),
            (":5000", tcp("", 5000)),
            ("", tcp("", DEFAULT_PORT)),
            ("tcp://127.0.0.1:81", tcp("127.0.0.1", 81)),
            ("tcp://[::1]:82", tcp("::1", 82)),
            ("tcp://localhost", tcp("localhost", DEFAULT_PORT)),
        ] {
            assert_eq!(BindSpec::parse(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn unix_and_fd_spellings_parse_like_gunicorn_parse_address() {
        for (text, path) in [
            ("unix:/run/x.sock", "/run/x.sock"),
            ("unix:///run/x.sock", "/run/x.sock"),
            ("unix://x.sock", "x.sock"),
            ("unix:x.sock", "x.sock"),
            ("unix:run/x.sock", "run/x.sock"),
        ] {
            assert_eq!(
                BindSpec::parse(text).ok(),
                Some(BindSpec::Unix(PathBuf::from(path))),
                "{text:?}"
            );
        }
        assert_eq!(BindSpec::parse("fd://3").ok(), Some(BindSpec::Fd(3)));
    }

    #[test]
    fn bad_spellings_are_refused() {
        for bad in [
            "127.0.0.1:http",
            "127.0.0.1:65536",
            "127.0.0.1:",
            "127.0.0.1:+80",
            "127.0.0.1: 80",
            "127.0.0.1/8000",
            "host name:80",
            "::1:8000",
            "::1",
            "[::1:8000",
            "[::1]8000",
            "[]:8000",
            "[localhost]:8000",
            "]:8000",
            "unix:",
            "unix://",
            "fd://2",
            "fd://x",
            "fd://",
        ] {
            assert!(
                matches!(BindSpec::parse(bad), Err(MasterError::BadBind(..))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hostnames_resolve_over_ipv4() {
        let sa = resolve("localhost", 80, "localhost:80").expect("localhost resolves");
        assert_eq!(sa, SocketAddr::from(([127, 0, 0, 1], 80)));
        assert_eq!(
            resolve("", 81, ":81").ok(),
            Some(SocketAddr::from(([0, 0, 0, 0], 81)))
        );
        assert_eq!(
            resolve("::", 82, "[::]:82").ok(),
            Some(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 82)))
        );
    }
}

//! What workers tell the master: systemd's notification protocol (`sd_notify(3)`), with the
//! master in systemd's place.
//!
//! The master binds one unix datagram socket in the abstract namespace and gives its address to
//! every worker in `GPE_NOTIFY_SOCKET` and `NOTIFY_SOCKET`. The kernel stamps every datagram
//! with its sender's pid (`SO_PASSCRED`), so a message is always tied to the worker that sent
//! it, whatever it says; datagrams from other processes are ignored.
//!
//! | message | meaning |
//! |---|---|
//! | `READY=1` | the worker serves: it counts as up (see [`crate::arbiter`]) |
//! | `X_GPE_RETIRE=max_requests` ([`gpe_core::worker::notify::RETIRE`]) | the worker reached `--max-requests`: start its replacement, then `SIGTERM` it once the replacement is up. It serves on meanwhile |
//!
//! Other keys (`STATUS=`, `STOPPING=1`, …) are accepted and ignored.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

/// One thing a worker said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// `READY=1`.
    Ready,
    /// `X_GPE_RETIRE=…`: replace me.
    Retire,
}

/// The notices in one datagram, in order; unknown keys are skipped.
pub(crate) fn parse(datagram: &[u8]) -> Vec<Notice> {
    let text = String::from_utf8_lossy(datagram);
    text.lines()
        .filter_map(|line| match line.split_once('=') {
            Some(("READY", "1")) => Some(Notice::Ready),
            Some(("X_GPE_RETIRE", _)) => Some(Notice::Retire),
            _ => None,
        })
        .collect()
}

/// The master's end: the socket the workers send to.
#[derive(Debug)]
pub(crate) struct Notices {
    socket: UnixDatagram,
    addr: String,
}

/// The largest datagram read; longer ones are cut (sd_notify messages are a few lines).
const MAX_DATAGRAM: usize = 4096;

impl Notices {
    /// Bind a fresh abstract address (`@gpe-master/PID/NANOS`), non-blocking, with sender
    /// credentials on.
    pub(crate) fn bind() -> std::io::Result<Notices> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!("gpe-master/{}/{nanos}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        socket.set_nonblocking(true)?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(std::io::Error::from)?;
        Ok(Notices {
            socket,
            addr: format!("@{name}"),
        })
    }

    /// The address to give the workers.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Every notice received since the last call, with its sender's pid.
    pub(crate) fn take(&self) -> Vec<(i32, Notice)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let received = recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            );
            let Ok(msg) = received else {
                break; // EAGAIN: nothing more
            };
            let len = msg.bytes;
            let pid = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            });
            let Some(pid) = pid else {
                continue;
            };
            out.extend(parse(&buf[..len]).into_iter().map(|n| (pid, n)));
        }
        out
    }
}

impl AsFd for Notices {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(parse(b"READY=1"), [Notice::Ready]);
        assert_eq!(
            parse(b"STATUS=busy\nX_GPE_RETIRE=max_requests\nREADY=1\n"),
            [Notice::Retire, Notice::Ready]
        );
        assert!(parse(b"READY=0\nSTOPPING=1\n\xff\xfe").is_empty());
    }

    #[test]
    fn a_notice_comes_with_its_senders_pid() {
        let notices = Notices::bind().unwrap();
        let to = gpe_core::worker::notify::Notifier::new(notices.addr()).unwrap();
        to.notify("READY=1").unwrap();
        to.notify(gpe_core::worker::notify::RETIRE).unwrap();
        let me = std::process::id() as i32;
        assert_eq!(notices.take(), [(me, Notice::Ready), (me, Notice::Retire)]);
        assert!(notices.take().is_empty());
    }
}

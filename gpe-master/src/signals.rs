//! Signal handling as gunicorn's arbiter: a handler only writes one byte, the signal's number,
//! to the master's signal queue (a non-blocking socket pair); the arbiter's loop sleeps on it,
//! reads the signals in the order they arrived and acts on every one of them (gunicorn ≥ 24's
//! queue is unbounded; the socket pair holds hundreds of kilobytes, far more signals than can
//! be pending). CHLD only wakes the loop, which reaps; the kernel merges CHLDs that arrive
//! together, so their count is of deliveries, not of exits.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use signal_hook::consts::signal::{
    SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
};

/// The signals the master handles, with the names used in metrics and logs.
pub(crate) const HANDLED: [(i32, &str); 10] = [
    (SIGHUP, "hup"),
    (SIGTERM, "term"),
    (SIGINT, "int"),
    (SIGQUIT, "quit"),
    (SIGTTIN, "ttin"),
    (SIGTTOU, "ttou"),
    (SIGUSR1, "usr1"),
    (SIGUSR2, "usr2"),
    (SIGCHLD, "chld"),
    (SIGWINCH, "winch"),
];

fn name_of(sig: i32) -> Option<&'static str> {
    HANDLED.iter().find(|(s, _)| *s == sig).map(|(_, n)| *n)
}

/// The read end of the signal queue.
#[derive(Debug)]
pub(crate) struct Signals {
    read: UnixStream,
}

impl Signals {
    pub(crate) fn install() -> std::io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        for (sig, _) in HANDLED {
            let tag = u8::try_from(sig).map_err(|_| std::io::Error::other("signal number"))?;
            crate::sys::register_queue_handler(sig, tag, OwnedFd::from(write.try_clone()?))?;
        }
        Ok(Signals { read })
    }

    /// The signals received since the last call, in arrival order.
    pub(crate) fn take(&self) -> Vec<(i32, &'static str)> {
        let mut taken = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(k) = (&self.read).read(&mut buf) {
            if k == 0 {
                break;
            }
            for &b in &buf[..k] {
                let sig = i32::from(b);
                if let Some(name) = name_of(sig) {
                    taken.push((sig, name));
                }
            }
        }
        taken
    }

    /// Sleep until a signal is pending, `also` is readable, or `timeout` passes (nothing is
    /// read: pending bytes are left for `take`).
    pub(crate) fn wait(&self, timeout: Duration, also: Option<BorrowedFd<'_>>) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = vec![PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        fds.extend(also.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, ms);
    }
}

/// An owned duplicate of `fd` numbered at least `min`, close-on-exec.
pub(crate) fn dup_high(fd: impl AsFd, min: i32) -> std::io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    crate::sys::own_new_fd(raw).ok_or_else(|| std::io::Error::other("dup returned no descriptor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `raise` runs the handler before it returns, so the order of arrival is the order here.
    #[test]
    fn signals_come_out_in_arrival_order_none_dropped() {
        let signals = Signals::install().unwrap();
        for sig in [SIGUSR2, SIGWINCH, SIGTTIN, SIGUSR1] {
            signal_hook::low_level::raise(sig).unwrap();
        }
        for _ in 0..7 {
            signal_hook::low_level::raise(SIGTTOU).unwrap();
        }
        signal_hook::low_level::raise(SIGCHLD).unwrap();
        let names: Vec<&str> = signals.take().iter().map(|(_, n)| *n).collect();
        let mut want = vec!["usr2", "winch", "ttin", "usr1"];
        want.extend(["ttou"; 7]);
        want.push("chld");
        assert_eq!(names, want);
        assert!(signals.take().is_empty(), "taken once");
    }
}

//! Signal handling: a handler only writes a byte to the self-pipe of its signal (signal-hook
//! does that); the arbiter's loop sleeps on the pipes and counts the bytes, so signals sent back
//! to back are each acted on (gunicorn queues them) instead of being merged into one.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
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

/// At most this many pending deliveries of one signal are acted on (gunicorn's queue holds 5).
const MAX_PENDING: usize = 5;

/// One self-pipe per signal: the handler writes a byte to `write`, the loop reads `read`.
#[derive(Debug)]
struct Pipe {
    sig: i32,
    name: &'static str,
    read: UnixStream,
    /// Kept so the pipe stays open for the handler.
    _write: UnixStream,
}

/// The read ends of the signals' self-pipes.
#[derive(Debug)]
pub(crate) struct Signals {
    pipes: Vec<Pipe>,
}

impl Signals {
    pub(crate) fn install() -> std::io::Result<Signals> {
        let mut pipes = Vec::new();
        for (sig, name) in HANDLED {
            let (read, write) = UnixStream::pair()?;
            read.set_nonblocking(true)?;
            write.set_nonblocking(true)?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
            pipes.push(Pipe {
                sig,
                name,
                read,
                _write: write,
            });
        }
        Ok(Signals { pipes })
    }

    /// Signals received since the last call, in the fixed order of [`HANDLED`], each repeated as
    /// many times as it was delivered (up to 5).
    pub(crate) fn take(&self) -> Vec<(i32, &'static str)> {
        let mut out = Vec::new();
        for p in &self.pipes {
            let mut n = 0;
            let mut buf = [0u8; 64];
            while let Ok(k) = (&p.read).read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            out.extend(std::iter::repeat_n((p.sig, p.name), n.min(MAX_PENDING)));
        }
        out
    }

    /// Sleep until a signal is pending or `timeout` passes (pending bytes are left for `take`).
    pub(crate) fn wait(&self, timeout: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds: Vec<PollFd<'_>> = self
            .pipes
            .iter()
            .map(|p| PollFd::new(p.read.as_fd(), PollFlags::POLLIN))
            .collect();
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

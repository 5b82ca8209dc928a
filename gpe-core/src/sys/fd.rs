//! Adopting inherited file descriptors (systemd socket activation, the heartbeat, a master's
//! re-exec), for gpe workers and gpe-master alike.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Descriptors already adopted by this process: each is taken at most once.
static ADOPTED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Take ownership of the inherited descriptor `fd`.
///
/// Returns `None` if it is stdio, not open, or was already taken.
pub(crate) fn adopt_inherited(fd: RawFd) -> Option<OwnedFd> {
    if fd < 3 {
        return None;
    }
    // SAFETY: the borrow only lives for this `fcntl(F_GETFD)` call, which is valid on any number
    // (it fails with EBADF when `fd` is not open) and does not change the descriptor.
    let probe = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if nix::fcntl::fcntl(probe, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return None;
    }
    let mut adopted = ADOPTED.lock().unwrap_or_else(|p| p.into_inner());
    if adopted.contains(&fd) {
        return None;
    }
    adopted.push(fd);
    // SAFETY: `fd` is open (F_GETFD succeeded), is not stdio, and was inherited from the parent
    // process under the socket-activation / heartbeat contract, so nothing else in this process
    // owns it: gpe-core never opened it, and `ADOPTED` (checked and updated under its lock) makes
    // this the only place that ever takes ownership of an inherited descriptor, once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Ours now: not to be leaked into the processes this one starts (they get explicit copies).
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}

//! The one module of gpe-master where `unsafe` is allowed: adopting inherited descriptors and
//! the descriptor shuffle between `fork` and `exec` of a worker. Every block carries a
//! `// SAFETY:` comment; the rest of the crate goes through these safe functions (and nix).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;

use nix::unistd::Pid;

/// Descriptors already adopted: each inherited descriptor is taken at most once.
static ADOPTED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Take ownership of the inherited descriptor `fd` (`--bind fd://N`); `None` if it is stdio,
/// not open, or already taken.
pub(crate) fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    if fd < 3 {
        return None;
    }
    // SAFETY: the borrow only lives for this `fcntl(F_GETFD)` call, which is defined for any
    // number (EBADF when `fd` is not open) and does not change the descriptor.
    let probe = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(probe, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    let mut adopted = ADOPTED.lock().unwrap_or_else(|p| p.into_inner());
    if adopted.contains(&fd) {
        return None;
    }
    adopted.push(fd);
    // SAFETY: `fd` is open (F_GETFD succeeded), is not stdio, and was inherited from our parent:
    // the master never opened it itself, and `ADOPTED` makes this the one place that takes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Ours now: not to be leaked into the processes we start (they get explicit copies).
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}

/// Own a descriptor that a syscall just returned to us (e.g. `fcntl(F_DUPFD_CLOEXEC)`).
pub(crate) fn own_new_fd(raw: RawFd) -> Option<OwnedFd> {
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` was just created by a successful syscall of this thread and nothing else
    // holds it, so this `OwnedFd` is its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Spawn `cmd` with `fds` placed at descriptors `3, 4, ...` (not close-on-exec), and with
/// (when `pdeathsig`) `PR_SET_PDEATHSIG(SIGKILL)` so a worker dies with the master even if the
/// master is SIGKILLed. Every descriptor in `fds` must be numbered above `3 + fds.len()` so the shuffle
/// never overwrites one it still needs (the caller dups them high).
pub(crate) fn spawn_with_fds(
    mut cmd: Command,
    fds: &[OwnedFd],
    master: Pid,
    pdeathsig: bool,
) -> std::io::Result<Child> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let limit = 3 + raw.len() as RawFd;
    if raw.iter().any(|&fd| fd < limit) {
        return Err(std::io::Error::other(
            "descriptors to pass must be numbered high",
        ));
    }
    let master = master.as_raw();
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It only calls dup2, prctl, getppid and _exit (all async-signal-safe),
    // reads the `raw` vector allocated before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                // dup2 leaves the new descriptor without FD_CLOEXEC, so it survives exec.
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if !pdeathsig {
                return Ok(());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The master may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != master {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Install a handler for `sig` that writes the one byte `tag` to `queue` and does nothing else
/// (gunicorn's handlers only enqueue the signal and wake the loop). `queue` is the non-blocking
/// write end of the master's signal queue, whose buffer holds far more signals than can be
/// pending; were it ever full, the byte would be dropped rather than block the handler.
pub(crate) fn register_queue_handler(sig: i32, tag: u8, queue: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the handler only calls write(2) (async-signal-safe) on a descriptor the closure
    // owns for the life of the process: no lock, no allocation, no panic path (the result is
    // ignored); signal-hook-registry saves and restores errno around it.
    unsafe {
        signal_hook::low_level::register(sig, move || {
            let _ = nix::unistd::write(&queue, &[tag]);
        })?;
    }
    Ok(())
}

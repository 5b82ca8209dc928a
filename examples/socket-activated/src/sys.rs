//! Taking ownership of inherited descriptors: the standard library has no safe way to do it, so
//! this is the example's one `unsafe` module.
#![allow(unsafe_code)]

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use crate::Listener;

/// Adopt `fd`, one of the `LISTEN_FDS` sockets systemd or gpe-master passed us.
pub(crate) fn adopt_listener(fd: RawFd, unix: bool) -> std::io::Result<Listener> {
    // SAFETY: the socket-activation protocol hands fds `3 .. 3+LISTEN_FDS` to this process (we
    // checked `LISTEN_PID`); nothing else in the program opened or owns them, and each number is
    // adopted once (the caller walks the range once).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(if unix {
        Listener::Unix(UnixListener::from(owned))
    } else {
        Listener::Tcp(TcpListener::from(owned))
    })
}

/// Adopt the heartbeat file gpe-master passed in `GPE_HEARTBEAT_FD`; `None` for stdio numbers.
pub(crate) fn adopt_file(fd: RawFd) -> Option<File> {
    if fd < 3 {
        return None;
    }
    // SAFETY: gpe-master opened this descriptor for us alone (its contract) and nothing else in
    // the program owns it; it is adopted once, at start.
    Some(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

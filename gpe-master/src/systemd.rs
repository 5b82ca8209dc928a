//! The master under systemd, as gunicorn's `systemd.py` and its documented `Type=notify` unit
//! with a `.socket` unit, plus the messages gunicorn does not send.
//!
//! - **Socket activation.** When `LISTEN_PID` is the master's own pid, the `LISTEN_FDS`
//!   descriptors from 3 are its listeners (bound as `--bind fd://N`, so `listen()` is called on
//!   them again) and `--bind` is ignored, as in gunicorn.
//! - **Readiness** (`NOTIFY_SOCKET`, through [`gpe_core::worker::notify`]): `READY=1` once the
//!   configured workers are up (gunicorn sends it before spawning them), `RELOADING=1` on HUP and
//!   `READY=1` again once the new workers are up, `STOPPING=1` when the master stops. On a USR2
//!   upgrade the old master, when it is stopped, hands the unit over with `MAINPID=<new
//!   master>`; the new master stays silent until it is promoted, then sends `MAINPID=` and
//!   `READY=1` itself. So a `Type=notify` unit follows the upgrade instead of stopping when the
//!   old master exits.

use gpe_core::worker::notify::Notifier;

/// Why `LISTEN_PID`/`LISTEN_FDS` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LISTEN_FDS={0:?} is not a number of descriptors")]
pub(crate) struct BadListenFds(pub(crate) String);

/// The descriptors systemd passed to `our_pid`, from `LISTEN_PID` and `LISTEN_FDS`: `None`
/// when they are meant for another process, or absent.
pub(crate) fn activation(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    our_pid: u32,
) -> Result<Option<std::ops::Range<i32>>, BadListenFds> {
    let for_us = listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(our_pid);
    let Some(fds) = listen_fds.filter(|_| for_us) else {
        return Ok(None);
    };
    let n: i32 = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| BadListenFds(fds.to_owned()))?;
    Ok(Some(3..3 + n))
}

/// The `--bind` spellings of the descriptors systemd passed to this process, if any.
pub(crate) fn listen_fds_binds() -> Result<Option<Vec<String>>, BadListenFds> {
    let pid = std::env::var(gpe_core::worker::env::LISTEN_PID).ok();
    let fds = std::env::var(gpe_core::worker::env::LISTEN_FDS).ok();
    let binds: Option<Vec<String>> =
        activation(pid.as_deref(), fds.as_deref(), std::process::id())?
            .map(|range| range.map(|fd| format!("fd://{fd}")).collect());
    if let Some(fds) = &binds {
        tracing::info!(
            "socket activation: listening on the {} descriptor(s) systemd passed; --bind ignored",
            fds.len()
        );
    }
    Ok(binds)
}

/// The master's channel to systemd (silent without `NOTIFY_SOCKET`).
#[derive(Debug)]
pub(crate) struct Systemd {
    notifier: Option<Notifier>,
}

impl Systemd {
    /// From `NOTIFY_SOCKET`; an address that cannot be used is a warning, not an error (the
    /// unit then times out, which names the problem in systemd's own log too).
    pub(crate) fn from_env() -> Systemd {
        let notifier = match Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot notify systemd");
                None
            }
        };
        Systemd { notifier }
    }

    /// One that sends nothing.
    pub(crate) fn silent() -> Systemd {
        Systemd { notifier: None }
    }

    fn send(&self, state: &str) {
        if let Some(n) = &self.notifier {
            match n.notify(state) {
                Ok(()) => tracing::debug!(state, "notified systemd"),
                Err(e) => tracing::warn!(error = %e, state, "cannot notify systemd"),
            }
        }
    }

    /// `READY=1`: the configured workers are up.
    pub(crate) fn ready(&self, workers: usize) {
        self.send(&format!(
            "READY=1\nSTATUS=gpe-master: {workers} worker(s) up\nMAINPID={}",
            std::process::id()
        ));
    }

    /// `RELOADING=1` (HUP), with the monotonic timestamp `Type=notify-reload` units need.
    pub(crate) fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=gpe-master: reloading"
        ));
    }

    /// `STOPPING=1`.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=gpe-master: stopping");
    }

    /// `MAINPID=pid`: the unit's main process is now `pid` (a USR2 upgrade).
    pub(crate) fn main_pid(&self, pid: i32) {
        self.send(&format!("MAINPID={pid}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_for_our_pid_only() {
        assert_eq!(activation(Some("7"), Some("2"), 7), Ok(Some(3..5)));
        assert_eq!(activation(Some("8"), Some("2"), 7), Ok(None));
        assert_eq!(activation(None, Some("2"), 7), Ok(None));
        assert_eq!(activation(Some("7"), None, 7), Ok(None));
        for bad in ["", "0", "-1", "x", "99999"] {
            assert_eq!(
                activation(Some("7"), Some(bad), 7),
                Err(BadListenFds(bad.to_owned()))
            );
        }
    }
}

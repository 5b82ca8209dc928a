//! The environment of the worker/master contract, in one place: the names of the variables
//! (every `GPE_*` name of the workspace is spelled here), and [`WorkerEnv`], what gpe-master puts
//! in a worker's environment and the worker reads back ([`WorkerContext`](super::WorkerContext)).
//!
//! ```
//! use std::time::Duration;
//! use gpe_core::worker::env::{self, WorkerEnv};
//!
//! let vars = WorkerEnv {
//!     fd_names: vec!["127.0.0.1:8000".into()],
//!     worker_id: 3,
//!     master_pid: 1234,
//!     timeout: Duration::from_secs(30),
//!     graceful_timeout: Duration::from_secs(30),
//!     max_requests: 1000,
//!     heartbeat_fd: Some(4),
//!     notify_socket: Some("@gpe-master/1234/1".into()),
//!     multiproc_dir: "/run/app/metrics".into(),
//! }
//! .vars();
//! assert!(vars.contains(&(env::WORKER_ID, Some("3".into()))));
//! assert!(vars.contains(&(env::LISTEN_PID, None)), "the spawner writes the worker's own pid");
//! ```

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

/// Number of inherited listening sockets, at fds `3..3+LISTEN_FDS` (systemd's protocol).
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the inherited sockets are meant for: the worker's own.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// `:`-separated names of the inherited sockets (their `--bind` spelling, `:` as `%3A`).
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The worker's slot under its master, from 1: a replacement takes the slot of the worker it
/// replaces, so `worker_id` labels stay bounded by the pool size.
pub const WORKER_ID: &str = "GPE_WORKER_ID";
/// The master's pid: a worker whose parent differs stops.
pub const MASTER_PID: &str = "GPE_MASTER_PID";
/// The inherited heartbeat file's descriptor.
pub const HEARTBEAT_FD: &str = "GPE_HEARTBEAT_FD";
/// The master's `--timeout`, in seconds (0: no heartbeat enforcement).
pub const TIMEOUT: &str = "GPE_TIMEOUT";
/// The master's `--graceful-timeout`, in seconds.
pub const GRACEFUL_TIMEOUT: &str = "GPE_GRACEFUL_TIMEOUT";
/// Requests after which the worker is replaced (jitter applied; 0: unlimited).
pub const MAX_REQUESTS: &str = "GPE_MAX_REQUESTS";
/// The master's notification socket (see [`crate::notify`]).
pub const NOTIFY_SOCKET: &str = "GPE_NOTIFY_SOCKET";
/// systemd's notification socket; gpe-master sets it to its own for its workers.
pub const SD_NOTIFY_SOCKET: &str = crate::worker::notify::NOTIFY_SOCKET;
/// The store directory.
pub const MULTIPROC_DIR: &str = "PROMETHEUS_MULTIPROC_DIR";
/// Standalone only: the address a worker binds (`HOST:PORT` or `unix:PATH`).
pub const BIND: &str = "GPE_BIND";
/// This host's identity in Redis keys (configuration of the Redis sync; default the hostname).
pub const HOST_ID: &str = "GPE_HOST_ID";

/// gunicorn's `--access-logfile`: the file each worker appends its access log lines to, or `-`
/// for stdout (see [`crate::http::access`]). Unset or empty: no access log.
pub const ACCESS_LOGFILE: &str = "GPE_ACCESS_LOGFILE";
/// gunicorn's `--access-logformat` (its `%(h)s`-style atoms); unset or empty: gunicorn's
/// default, [`DEFAULT_FORMAT`](crate::http::access::DEFAULT_FORMAT). Read only when
/// [`ACCESS_LOGFILE`] is set.
pub const ACCESS_LOGFORMAT: &str = "GPE_ACCESS_LOGFORMAT";

/// USR2, from the old master to the new one: the inherited listener fds, comma-separated
/// (gunicorn's `GUNICORN_FD`).
pub const REEXEC_FDS: &str = "GPE_REEXEC_FDS";
/// USR2: the inherited listeners' `--bind` spellings, `:`-separated, `:` inside a name as `%3A`.
pub const REEXEC_FDNAMES: &str = "GPE_REEXEC_FDNAMES";
/// USR2: the inherited `/metrics` listener, when the old master served one.
pub const REEXEC_METRICS_FD: &str = "GPE_REEXEC_METRICS_FD";
/// USR2: the old master's pid (gunicorn's `GUNICORN_PID`).
pub const REEXEC_PARENT: &str = "GPE_REEXEC_PARENT";

/// The worker id gpe-master passes in [`WORKER_ID`], as a label value; `"0"` without one (or
/// with a value longer than any id).
pub fn worker_id_label() -> String {
    std::env::var(WORKER_ID)
        .ok()
        .filter(|v| !v.is_empty() && v.len() <= 32)
        .unwrap_or_else(|| "0".to_owned())
}

/// What gpe-master tells one worker through its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerEnv {
    /// The names of the inherited listeners, in fd order (fds from 3).
    pub fd_names: Vec<String>,
    /// [`WORKER_ID`].
    pub worker_id: u64,
    /// [`MASTER_PID`].
    pub master_pid: u32,
    /// [`TIMEOUT`] (whole seconds).
    pub timeout: Duration,
    /// [`GRACEFUL_TIMEOUT`] (whole seconds).
    pub graceful_timeout: Duration,
    /// [`MAX_REQUESTS`], jitter included.
    pub max_requests: u64,
    /// [`HEARTBEAT_FD`], when the master watches heartbeats.
    pub heartbeat_fd: Option<RawFd>,
    /// [`NOTIFY_SOCKET`] (and systemd's variable, for workers that speak sd_notify).
    pub notify_socket: Option<String>,
    /// [`MULTIPROC_DIR`].
    pub multiproc_dir: PathBuf,
}

impl WorkerEnv {
    /// Every variable to set (`Some`) or remove (`None`) in the worker's environment.
    /// [`LISTEN_PID`] is removed: the spawner writes the worker's own pid, which only exists
    /// after the fork.
    pub fn vars(&self) -> Vec<(&'static str, Option<OsString>)> {
        let text = |v: String| Some(OsString::from(v));
        vec![
            (LISTEN_FDS, text(self.fd_names.len().to_string())),
            (
                LISTEN_FDNAMES,
                text(
                    self.fd_names
                        .iter()
                        .map(|n| n.replace(':', "%3A"))
                        .collect::<Vec<_>>()
                        .join(":"),
                ),
            ),
            (LISTEN_PID, None),
            (WORKER_ID, text(self.worker_id.to_string())),
            (MASTER_PID, text(self.master_pid.to_string())),
            (TIMEOUT, text(self.timeout.as_secs().to_string())),
            (
                GRACEFUL_TIMEOUT,
                text(self.graceful_timeout.as_secs().to_string()),
            ),
            (MAX_REQUESTS, text(self.max_requests.to_string())),
            (
                HEARTBEAT_FD,
                self.heartbeat_fd.map(|fd| fd.to_string().into()),
            ),
            (
                NOTIFY_SOCKET,
                self.notify_socket.clone().map(OsString::from),
            ),
            (
                SD_NOTIFY_SOCKET,
                self.notify_socket.clone().map(OsString::from),
            ),
            (
                MULTIPROC_DIR,
                Some(self.multiproc_dir.clone().into_os_string()),
            ),
        ]
    }
}

/// The access log flags gpe-master passes on ([`ACCESS_LOGFILE`], [`ACCESS_LOGFORMAT`]), apart
/// from [`WorkerEnv`] because, unlike its variables, an unset one is not removed: a worker then
/// inherits what the master's own environment holds, so a deployment (or a test) can set them on
/// the master.
///
/// ```
/// use gpe_core::worker::env::{self, AccessLogEnv};
///
/// let vars = AccessLogEnv { file: Some("/var/log/app/access.log".into()), format: None }.vars();
/// assert_eq!(vars, [(env::ACCESS_LOGFILE, "/var/log/app/access.log".into())]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLogEnv {
    /// `--access-logfile`: a path, or `-` for stdout.
    pub file: Option<OsString>,
    /// `--access-logformat`.
    pub format: Option<String>,
}

impl AccessLogEnv {
    /// The variables to set in the worker's environment (only those given).
    pub fn vars(&self) -> Vec<(&'static str, OsString)> {
        let file = self.file.clone().map(|f| (ACCESS_LOGFILE, f));
        let format = self.format.clone().map(|f| (ACCESS_LOGFORMAT, f.into()));
        file.into_iter().chain(format).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::WorkerContext;

    #[test]
    fn a_worker_reads_back_what_the_master_wrote() {
        let written = WorkerEnv {
            fd_names: vec!["127.0.0.1:8000".into(), "unix:/run/a b.sock".into()],
            worker_id: 7,
            master_pid: 4242,
            timeout: Duration::from_secs(20),
            graceful_timeout: Duration::from_secs(5),
            max_requests: 1100,
            heartbeat_fd: None,
            notify_socket: None,
            multiproc_dir: "/tmp/m".into(),
        };
        let vars: std::collections::HashMap<&str, String> = written
            .vars()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?.into_string().ok()?)))
            .collect();
        assert_eq!(
            vars[LISTEN_FDNAMES],
            "127.0.0.1%3A8000:unix%3A/run/a b.sock"
        );
        let ctx = WorkerContext::from_lookup(|k| vars.get(k).cloned()).unwrap();
        assert_eq!(ctx.worker_id(), 7);
        assert_eq!(ctx.master_pid(), Some(4242));
        assert_eq!(ctx.timeout(), Duration::from_secs(20));
        assert_eq!(ctx.graceful_timeout(), Duration::from_secs(5));
        assert_eq!(ctx.max_requests(), 1100);
        assert_eq!(ctx.fd_names, written.fd_names, "names decoded");
        assert!(ctx.master_link().is_none(), "no notification socket given");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = WorkerContext::from_lookup(|k| (k == MAX_REQUESTS).then(|| "many".to_owned()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GPE_MAX_REQUESTS=\"many\" is invalid: expected a non-negative integer"
        );
    }
}

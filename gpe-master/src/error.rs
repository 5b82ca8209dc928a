//! The master's errors, each saying what to fix.

use std::path::PathBuf;

/// Errors of the master, each saying what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum MasterError {
    /// A `--bind` value that cannot be used.
    #[error("invalid value {0:?} for --bind: {1}")]
    BadBind(String, &'static str),
    /// `--user` names no user of this system.
    #[error("invalid value {0:?} for --user: no such user")]
    NoSuchUser(String),
    /// `--group` names no group of this system.
    #[error("invalid value {0:?} for --group: no such group")]
    NoSuchGroup(String),
    /// `--worker-tmp-dir` is not a directory.
    #[error("invalid value {0:?} for --worker-tmp-dir: not a directory")]
    WorkerTmpDirMissing(PathBuf),
    /// `--worker-tmp-dir` is a directory the master cannot create heartbeat files in.
    #[error("invalid value {0:?} for --worker-tmp-dir: cannot create heartbeat files in it: {1}")]
    WorkerTmpDirUnusable(PathBuf, #[source] std::io::Error),
    /// A unix socket path already exists and is not a socket (gunicorn refuses it too).
    #[error("cannot bind unix:{}: {} exists and is not a socket (remove it or choose another path)", .0.display(), .0.display())]
    NotASocket(PathBuf),
    /// The host of a `--bind HOST:PORT` could not be resolved.
    #[error("cannot bind {0}: resolving the host failed: {1}")]
    Resolve(String, std::io::Error),
    /// Binding failed.
    #[error("cannot bind {0}: {1} (is another server using it? choose another --bind)")]
    Bind(String, std::io::Error),
    /// A worker could not be started.
    #[error("cannot start worker {0:?}: {1}")]
    Spawn(String, std::io::Error),
    /// The pidfile names a running process: another master (gunicorn's message).
    #[error("Already running on PID {pid} (or pid file '{path}' is stale): stop that master, or remove the file if the pid is not a master's", pid = .1, path = .0.display())]
    PidfileLocked(PathBuf, i32),
    /// The pidfile cannot be written.
    #[error("cannot write the pid file {path}: {err}", path = .0.display(), err = .1)]
    Pidfile(PathBuf, std::io::Error),
    /// Descriptors inherited from an old master (USR2) that cannot be used.
    #[error("re-exec: {var}={value:?}: not what a gpe-master re-exec passes")]
    Inherit {
        /// The variable the old master set.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The settings could not be read (a config file, `GUNICORN_CMD_ARGS`, no worker binary).
    #[error(transparent)]
    Config(#[from] crate::cli::LoadError),
    /// `--access-logformat` that gpe workers cannot write.
    #[error("invalid value {0:?} for --access-logformat: {1}")]
    AccessLogFormat(String, gpe_core::http::access::AccessLogError),
    /// `--chdir` names a directory we cannot change to.
    #[error("invalid value {0:?} for --chdir: {1}")]
    Chdir(PathBuf, std::io::Error),
    /// The master's own metrics could not be registered.
    #[error("master metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl MasterError {
    /// Whether this is a bad flag value: exit status 2, like an unknown flag (argparse, clap).
    pub(crate) fn is_usage(&self) -> bool {
        matches!(
            self,
            MasterError::Config(_)
                | MasterError::Chdir(..)
                | MasterError::AccessLogFormat(..)
                | MasterError::BadBind(..)
                | MasterError::NoSuchUser(_)
                | MasterError::NoSuchGroup(_)
                | MasterError::WorkerTmpDirMissing(_)
                | MasterError::WorkerTmpDirUnusable(..)
        )
    }
}

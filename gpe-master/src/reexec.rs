//! USR2: re-exec a new master that inherits the listeners (gunicorn's binary upgrade), and the
//! pidfile dance that goes with it.
//!
//! The old master starts `<its own executable> <its own arguments>` with every listener (and the
//! metrics listener) placed at fds `3..`, and these variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `GPE_REEXEC_FDS` | the inherited listener fds, comma-separated (gunicorn's `GUNICORN_FD`) |
//! | `GPE_REEXEC_FDNAMES` | their `--bind` spellings, `:`-separated, `:` inside a name as `%3A` |
//! | `GPE_REEXEC_METRICS_FD` | the inherited `/metrics` listener, when the old master served one |
//! | `GPE_REEXEC_PARENT` | the old master's pid (gunicorn's `GUNICORN_PID`) |
//!
//! The old master renames its pidfile to `<pidfile>.oldbin`; the new one writes `<pidfile>.2`
//! while its parent is the old master, and renames it to `<pidfile>` once the old master is gone
//! (it is "promoted"). If the new master dies first, the old one takes its pidfile name back.
//! The new master does not empty the metrics directory: the old master's workers are still
//! writing there, and counters must not go backwards across an upgrade.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::bind::{BindSpec, Bound};
use crate::signals::dup_high;
use crate::MasterError;

const FDS: &str = "GPE_REEXEC_FDS";
const FDNAMES: &str = "GPE_REEXEC_FDNAMES";
const METRICS_FD: &str = "GPE_REEXEC_METRICS_FD";
const PARENT: &str = "GPE_REEXEC_PARENT";

/// Every variable of the re-exec protocol (removed from the workers' environment).
pub(crate) const VARS: [&str; 4] = [FDS, FDNAMES, METRICS_FD, PARENT];

/// What a re-exec'd master inherited from the old one.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub(crate) listeners: Vec<Bound>,
    pub(crate) metrics: Option<std::net::TcpListener>,
    /// The old master, while it is our parent.
    pub(crate) old_master: Option<i32>,
}

fn bad(what: &str, value: &str) -> MasterError {
    MasterError::Inherit(format!(
        "{what}={value:?}: not what a gpe-master re-exec passes"
    ))
}

/// The inherited listeners, when this master was started by another one's USR2.
pub(crate) fn inherited() -> Result<Option<Inherited>, MasterError> {
    let Ok(fds) = std::env::var(FDS) else {
        return Ok(None);
    };
    let names = std::env::var(FDNAMES).unwrap_or_default();
    let names: Vec<String> = names.split(':').map(|n| n.replace("%3A", ":")).collect();
    let mut listeners = Vec::new();
    for (i, fd) in fds.split(',').filter(|s| !s.is_empty()).enumerate() {
        let raw: i32 = fd.parse().map_err(|_| bad(FDS, &fds))?;
        let owned = crate::sys::adopt_fd(raw).ok_or_else(|| bad(FDS, &fds))?;
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("fd://{raw}"));
        let unix_path = match BindSpec::parse(&name) {
            Ok(BindSpec::Unix(p)) => Some(p),
            _ => None,
        };
        listeners.push(Bound::inherited(name, owned, unix_path));
    }
    let metrics = match std::env::var(METRICS_FD) {
        Ok(v) => {
            let raw: i32 = v.parse().map_err(|_| bad(METRICS_FD, &v))?;
            let fd = crate::sys::adopt_fd(raw).ok_or_else(|| bad(METRICS_FD, &v))?;
            Some(std::net::TcpListener::from(fd))
        }
        Err(_) => None,
    };
    let old_master = std::env::var(PARENT)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p == nix::unistd::getppid().as_raw());
    Ok(Some(Inherited {
        listeners,
        metrics,
        old_master,
    }))
}

/// Start a new master: this executable with these arguments, inheriting `listeners` and
/// `metrics`. It is not tied to our life (no parent-death signal): it is meant to outlive us.
pub(crate) fn spawn_new_master(
    exe: &Path,
    args: &[OsString],
    listeners: &[Bound],
    metrics: Option<&OwnedFd>,
) -> std::io::Result<Child> {
    let n = listeners.len() + usize::from(metrics.is_some());
    let high = 3 + n as i32 + 64;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(n);
    for l in listeners {
        fds.push(dup_high(l.fd.as_fd(), high)?);
    }
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(
            FDS,
            (0..listeners.len())
                .map(|i| (3 + i).to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env(
            FDNAMES,
            listeners
                .iter()
                .map(|l| l.name.replace(':', "%3A"))
                .collect::<Vec<_>>()
                .join(":"),
        )
        .env(PARENT, std::process::id().to_string())
        .env_remove(METRICS_FD)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    if let Some(m) = metrics {
        fds.push(dup_high(m.as_fd(), high)?);
        cmd.env(METRICS_FD, (3 + listeners.len()).to_string());
    }
    crate::sys::spawn_with_fds(cmd, &fds, nix::unistd::getpid(), false)
}

/// The pidfile, under whichever name the upgrade dance gives it now.
#[derive(Debug)]
pub(crate) struct PidFile {
    configured: PathBuf,
    current: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl PidFile {
    /// Write our pid to `path` (or `path.2` while an old master is our parent).
    pub(crate) fn create(path: &Path, upgrading: bool) -> std::io::Result<PidFile> {
        let current = if upgrading {
            with_suffix(path, ".2")
        } else {
            path.to_owned()
        };
        std::fs::write(&current, format!("{}\n", std::process::id()))?;
        Ok(PidFile {
            configured: path.to_owned(),
            current,
        })
    }

    fn rename(&mut self, to: PathBuf) {
        match std::fs::rename(&self.current, &to) {
            Ok(()) => self.current = to,
            Err(e) => {
                tracing::warn!(error = %e, from = %self.current.display(), to = %to.display(), "cannot rename the pidfile")
            }
        }
    }

    /// USR2: the old master's pidfile becomes `<pidfile>.oldbin`.
    pub(crate) fn rename_to_oldbin(&mut self) {
        self.rename(with_suffix(&self.configured, ".oldbin"));
    }

    /// The new master died, or the old one is gone: take the configured name (back).
    pub(crate) fn rename_to_configured(&mut self) {
        self.rename(self.configured.clone());
    }

    /// Remove it (at exit).
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.current);
    }
}

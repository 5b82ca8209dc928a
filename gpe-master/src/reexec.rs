//! USR2: re-exec a new master that inherits the listeners (gunicorn's binary upgrade), and the
//! pidfile dance that goes with it.
//!
//! The old master starts its program as it was typed (`argv[0]`, looked up again at USR2 time:
//! through `PATH` if it has no slash, else relative to the start directory) with its own
//! arguments, in the directory it was started in (`$PWD` when that names the working directory,
//! as gunicorn's `util.getcwd`), so a `current -> releases/N` symlink switched before USR2
//! starts the new release. Every listener (and the metrics listener) is placed at fds `3..`,
//! with these variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `GPE_REEXEC_FDS` | the inherited listener fds, comma-separated (gunicorn's `GUNICORN_FD`) |
//! | `GPE_REEXEC_FDNAMES` | their `--bind` spellings, `:`-separated, `:` inside a name as `%3A` |
//! | `GPE_REEXEC_METRICS_FD` | the inherited `/metrics` listener, when the old master served one |
//! | `GPE_REEXEC_PARENT` | the old master's pid (gunicorn's `GUNICORN_PID`) |
//!
//! As in gunicorn ≥ 19.6, the old master keeps `<pidfile>`; the new one writes `<pidfile>.2`
//! while its parent is the old master, and moves it to `<pidfile>` once the old master is gone
//! (it is "promoted"). If the new master dies first, the old one keeps (rewrites if needed)
//! `<pidfile>`. Until its promotion, a new master leaves the unix socket files in place when it
//! exits (the old master still serves them: TERM to the new master is the rollback).
//! The new master does not empty the metrics directory: the old master's workers are still
//! writing there, and counters must not go backwards across an upgrade.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::bind::{BindSpec, Bound};
use crate::signals::dup_high;
use crate::MasterError;

use gpe_core::worker::env::{
    LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID, REEXEC_FDNAMES as FDNAMES, REEXEC_FDS as FDS,
    REEXEC_METRICS_FD as METRICS_FD, REEXEC_PARENT as PARENT,
};

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

fn bad(var: &'static str, value: &str) -> MasterError {
    MasterError::Inherit {
        var,
        value: value.to_owned(),
    }
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
        let owned = gpe_core::worker::adopt_fd(raw).ok_or_else(|| bad(FDS, &fds))?;
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
            let fd = gpe_core::worker::adopt_fd(raw).ok_or_else(|| bad(METRICS_FD, &v))?;
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

/// Start a new master: `exe` (with `arg0` as its `argv[0]`, so it re-execs the same way) with
/// `args`, in `cwd`, inheriting `listeners` and `metrics`. It is not tied to our life (no
/// parent-death signal): it is meant to outlive us.
pub(crate) fn spawn_new_master(
    exe: &Path,
    arg0: &OsStr,
    args: &[OsString],
    cwd: &Path,
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
    cmd.arg0(arg0)
        .args(args)
        .current_dir(cwd)
        .env("PWD", cwd)
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
        .env_remove(LISTEN_FDS)
        .env_remove(LISTEN_PID)
        .env_remove(LISTEN_FDNAMES);
    if let Some(m) = metrics {
        fds.push(dup_high(m.as_fd(), high)?);
        cmd.env(METRICS_FD, (3 + listeners.len()).to_string());
    }
    crate::sys::spawn_with_fds(cmd, &fds, nix::unistd::getpid(), crate::sys::Role::Master)
}

/// Where the master was started, for USR2: gunicorn's `util.getcwd` (`$PWD` when it names the
/// working directory, so a `current -> releases/N` symlink in it is kept, else the real path).
pub(crate) fn start_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let cwd = std::env::current_dir()?;
    if let Some(pwd) = std::env::var_os("PWD").map(PathBuf::from) {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&pwd), std::fs::metadata(&cwd)) {
            if pwd.is_absolute() && a.dev() == b.dev() && a.ino() == b.ino() {
                return Ok(pwd);
            }
        }
    }
    Ok(cwd)
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program to re-exec on USR2: `argv0` as it was typed, looked up now (so a symlink or a
/// `PATH` entry switched to a new release since the start is followed): through `PATH` if it has
/// no slash, relative to `start_dir` if relative. `None` if no executable file is there.
pub(crate) fn program_path(argv0: &OsStr, start_dir: &Path) -> Option<PathBuf> {
    let p = Path::new(argv0);
    if argv0.is_empty() {
        return None;
    }
    if p.components().count() > 1 || argv0.as_encoded_bytes().contains(&b'/') {
        return Some(start_dir.join(p)).filter(|c| executable(c));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| start_dir.join(d).join(p))
        .find(|c| executable(c))
}

/// The pidfile (gunicorn's `pidfile.py`): a lock against a second master, written atomically
/// (mode 0644), removed at exit only while it still holds our pid, and named `<pidfile>.2` by a
/// new master until it is promoted.
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

/// The pid written in `path`, if the file exists and holds one.
fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Whether `pid` names a process (a process of another user counts, as in gunicorn).
fn alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// `pid` into `path`: a temp file in the same directory, mode 0644 whatever the umask, renamed
/// over `path` (readers see the old content or the new, never a partial one).
fn write_atomically(path: &Path, pid: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".gpe-pid.")
        .tempfile_in(dir)?;
    tmp.write_all(format!("{pid}\n").as_bytes())?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl PidFile {
    /// The name a master writes: `path`, or `path.2` while an old master is its parent.
    pub(crate) fn name(path: &Path, upgrading: bool) -> PathBuf {
        if upgrading {
            with_suffix(path, ".2")
        } else {
            path.to_owned()
        }
    }

    /// Refuse to go on when `path` names a live process other than us (gunicorn: "Already
    /// running on PID N (or pid file 'F' is stale)"); a stale file (dead pid) is no obstacle.
    pub(crate) fn check(path: &Path) -> Result<(), MasterError> {
        match read_pid(path) {
            Some(pid) if pid != std::process::id() as i32 && alive(pid) => {
                Err(MasterError::PidfileLocked(path.to_owned(), pid))
            }
            _ => Ok(()),
        }
    }

    /// Write our pid to `path` (or `path.2` while an old master is our parent), after
    /// [`PidFile::check`].
    pub(crate) fn create(path: &Path, upgrading: bool) -> Result<PidFile, MasterError> {
        let current = PidFile::name(path, upgrading);
        PidFile::check(&current)?;
        write_atomically(&current, std::process::id())
            .map_err(|e| MasterError::Pidfile(current.clone(), e))?;
        Ok(PidFile {
            configured: path.to_owned(),
            current,
        })
    }

    /// A new master promoted (the old master `old` is gone): `<pidfile>.2` becomes `<pidfile>`.
    /// A `<pidfile>` naming a live process other than us and `old` is left alone (warned).
    pub(crate) fn promote(&mut self, old: i32) {
        if self.current == self.configured {
            return;
        }
        let me = std::process::id() as i32;
        if let Some(pid) = read_pid(&self.configured) {
            if pid != me && pid != old && alive(pid) {
                tracing::warn!(
                    "keeping the pid file {}: {} names pid {pid}, which is running",
                    self.current.display(),
                    self.configured.display()
                );
                return;
            }
        }
        match write_atomically(&self.configured, std::process::id()) {
            Ok(()) => {
                self.remove();
                self.current = self.configured.clone();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the pid file {}", self.configured.display())
            }
        }
    }

    /// The new master `child` died before its promotion: `<pidfile>` is ours (rewritten if it
    /// is not), and the `<pidfile>.2` it may have left is removed.
    pub(crate) fn reclaim(&mut self, child: i32) {
        let me = std::process::id() as i32;
        if read_pid(&self.configured) != Some(me) {
            match write_atomically(&self.configured, std::process::id()) {
                Ok(()) => self.current = self.configured.clone(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the pid file {}", self.configured.display())
                }
            }
        }
        let new = with_suffix(&self.configured, ".2");
        if read_pid(&new) == Some(child) {
            let _ = std::fs::remove_file(new);
        }
    }

    /// Remove it (at exit), only while it still holds our pid.
    pub(crate) fn remove(&self) {
        if read_pid(&self.current) == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.current);
        }
    }
}

//! `gpe-master`: a gunicorn-compatible pre-fork master for any worker binary.
//!
//! ```sh
//! gpe-master --workers 4 --bind 127.0.0.1:8000 ./my-worker --its-own-flag
//! curl 127.0.0.1:9091/metrics      # every worker's metrics, added up, plus gunicorn_master_*
//! ```
//!
//! See `ARCHITECTURE.md` for the worker/master contract (socket activation, `GPE_*` variables,
//! heartbeat).
#![allow(clippy::exit)] // the binary's edge: exit codes are part of the interface

mod arbiter;
mod bind;
mod cli;
mod exit;
mod exporter;
mod heartbeat;
mod metrics;
mod notices;
mod procfs;
mod reexec;
mod signals;
mod sys;
mod systemd;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

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
    /// `--worker-tmp-dir` is not a directory the master can create heartbeat files in.
    #[error("invalid value {0:?} for --worker-tmp-dir: {1}")]
    BadWorkerTmpDir(PathBuf, String),
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
    #[error("re-exec: {0}")]
    Inherit(String),
    /// The master's own metrics could not be registered.
    #[error("master metrics: {0}")]
    Metrics(String),
}

impl MasterError {
    /// Whether this is a bad flag value: exit status 2, like an unknown flag (argparse, clap).
    fn is_usage(&self) -> bool {
        matches!(
            self,
            MasterError::BadBind(..)
                | MasterError::NoSuchUser(_)
                | MasterError::NoSuchGroup(_)
                | MasterError::BadWorkerTmpDir(..)
        )
    }
}

/// A log file that USR1 reopens (for logrotate).
#[derive(Debug, Clone)]
struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogFile {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn reopen(&self) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f,
            Err(e) => eprintln!("gpe-master: cannot reopen {}: {e}", self.path.display()),
        }
    }

    /// Point this process's stdout and stderr at the file (under `--daemon`, so that the
    /// workers, which inherit them, write there instead of /dev/null).
    fn take_stdio(&self) -> std::io::Result<()> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        nix::unistd::dup2_stdout(&*file)?;
        nix::unistd::dup2_stderr(&*file)?;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

fn init_logging(cli: &cli::Cli) -> anyhow::Result<Option<LogFile>> {
    init_logging_with(&cli.log_level, cli.error_logfile.as_deref())
}

/// Logging at gunicorn's level names, to stderr or a (USR1-reopenable) file.
pub(crate) fn init_logging_with(
    level: &str,
    error_logfile: Option<&Path>,
) -> anyhow::Result<Option<LogFile>> {
    let level = match level {
        "warning" => "warn",
        "critical" => "error",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match error_logfile {
        Some(path) if path.as_os_str() != "-" => {
            let log = LogFile::open(path)
                .with_context(|| format!("--error-logfile {}", path.display()))?;
            let writer = log.clone();
            builder
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            Ok(Some(log))
        }
        _ => {
            builder.with_writer(std::io::stderr).init();
            Ok(None)
        }
    }
}

/// Resolve `--user`/`--group` (names or numbers).
fn ids(cli: &cli::Cli) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    let uid = match &cli.user {
        None => None,
        Some(u) => Some(match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::User::from_name(u)
                .with_context(|| format!("--user {u:?}: looking the user up"))?
                .ok_or_else(|| MasterError::NoSuchUser(u.clone()))?
                .uid
                .as_raw(),
        }),
    };
    let gid = match &cli.group {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::unistd::Group::from_name(g)
                .with_context(|| format!("--group {g:?}: looking the group up"))?
                .ok_or_else(|| MasterError::NoSuchGroup(g.clone()))?
                .gid
                .as_raw(),
        }),
    };
    Ok((uid, gid))
}

/// The workers' supplementary groups: `--initgroups` gives them --user's from the group
/// database; otherwise root's workers running as --user get none (they would keep root's).
fn groups(cli: &cli::Cli, uid: Option<u32>, gid: Option<u32>) -> anyhow::Result<Option<Vec<u32>>> {
    let Some(uid) = uid else {
        if cli.initgroups {
            tracing::warn!("--initgroups has no effect without --user");
        }
        return Ok(None);
    };
    if !nix::unistd::getuid().is_root() {
        return Ok(None); // not ours to change
    }
    if !cli.initgroups {
        return Ok(Some(Vec::new()));
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .context("--initgroups: looking --user up")?
        .ok_or_else(|| {
            anyhow::anyhow!("--initgroups: uid {uid} has no name in the user database")
        })?;
    let name = std::ffi::CString::new(user.name.clone()).context("--initgroups: user name")?;
    let primary = gid.map_or(user.gid, nix::unistd::Gid::from_raw);
    let list = nix::unistd::getgrouplist(&name, primary)
        .with_context(|| format!("--initgroups: the groups of {}", user.name))?;
    Ok(Some(
        list.into_iter().map(nix::unistd::Gid::as_raw).collect(),
    ))
}

/// The worker binary, resolved like a shell would, and checked before any fork.
fn resolve_program(program: &std::ffi::OsStr) -> anyhow::Result<PathBuf> {
    let p = Path::new(program);
    let candidates: Vec<PathBuf> = if p.components().count() > 1 {
        vec![p.to_owned()]
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|d| d.join(p)).collect())
            .unwrap_or_default()
    };
    for c in &candidates {
        if let Ok(meta) = std::fs::metadata(c) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(c.clone());
            }
            if meta.is_file() {
                anyhow::bail!(
                    "worker binary {} is not executable (chmod +x it)",
                    c.display()
                );
            }
        }
    }
    anyhow::bail!(
        "worker binary {} not found{}",
        p.display(),
        if candidates.len() > 1 { " in PATH" } else { "" }
    )
}

/// The Redis sync of this host's store, when `REDIS_ENABLED` (a Redis that is down is only a
/// warning: the sync retries, and `/metrics` serves from the files meanwhile).
fn redis_sync(
    dir: &Path,
    live: &gpe_core::LivePids,
) -> anyhow::Result<Option<gpe_core::redis::SyncHandle>> {
    use gpe_core::redis::{RedisConfig, RedisSync, SyncSource};
    let config = RedisConfig::from_env().context("Redis configuration")?;
    if !config.enabled() {
        return Ok(None);
    }
    tracing::info!(server = %config.server(), prefix = config.prefix(), host = config.host_id(), "syncing metrics to Redis");
    let source = SyncSource::dir(dir, gpe_core::Liveness::Pids(live.clone()));
    Ok(Some(RedisSync::new(config, source)?.spawn()?))
}

/// `--worker-tmp-dir` (default: the system temp dir), checked by creating a file in it.
fn worker_tmp_dir(cli: &cli::Cli) -> Result<PathBuf, MasterError> {
    let dir = cli
        .worker_tmp_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    if !dir.is_dir() {
        return Err(MasterError::BadWorkerTmpDir(
            dir,
            "not a directory".to_owned(),
        ));
    }
    if let Err(e) = tempfile::tempfile_in(&dir) {
        return Err(MasterError::BadWorkerTmpDir(
            dir,
            format!("cannot create heartbeat files in it: {e}"),
        ));
    }
    Ok(dir)
}

fn run() -> anyhow::Result<i32> {
    let cli = cli::Cli::from_env_and_args();
    let log = init_logging(&cli)?;
    // Every flag value first (exit 2 on a bad one), then the worker binary; nothing is bound yet.
    // Socket activation: systemd's descriptors replace --bind, as in gunicorn.
    let activated = systemd::listen_fds_binds()?;
    let binds = bind::parse_all(activated.as_ref().unwrap_or(&cli.binds()))?;
    if let Some(fds) = &activated {
        tracing::info!(
            "socket activation: listening on the {} descriptor(s) systemd passed; --bind ignored",
            fds.len()
        );
    }
    let (uid, gid) = ids(&cli)?;
    let worker_groups = groups(&cli, uid, gid)?;
    let worker_tmp_dir = worker_tmp_dir(&cli)?;
    let program = resolve_program(&cli.command[0])?;
    let config = gpe_core::config::Config::from_env().context("metrics configuration")?;
    let metrics_dir = config.multiproc_dir().to_path_buf();
    if cli.check_config {
        // As gunicorn's --check-config: the configuration and the worker are checked, the
        // sockets are not bound (a server already running on them is no error).
        println!(
            "configuration OK: {} worker(s) of {} on {}",
            cli.workers,
            program.display(),
            cli.binds().join(", ")
        );
        return Ok(0);
    }
    let inherited = reexec::inherited()?;
    let upgrading = inherited.as_ref().is_some_and(|i| i.old_master.is_some());
    if let Some(p) = &cli.pidfile {
        // Before binding: a second master is refused at once (the pidfile is a lock, as in
        // gunicorn), instead of after the bind retries.
        reexec::PidFile::check(&reexec::PidFile::name(p, upgrading))
            .with_context(|| format!("--pid {}", p.display()))?;
    }
    let bind_options = bind::BindOptions {
        backlog: cli.backlog,
        reuse_port: cli.reuse_port,
        umask: cli.umask,
        uid,
        gid,
    };
    let (listeners, inherited_metrics, old_master) = match inherited {
        Some(i) => {
            tracing::info!(
                listeners = i.listeners.len(),
                old_master = ?i.old_master,
                "started by USR2: using the old master's listeners"
            );
            (i.listeners, i.metrics, i.old_master)
        }
        None => (bind::bind_all(&binds, &bind_options)?, None, None),
    };
    if cli.daemon && old_master.is_none() {
        // (A master re-exec'd by a daemonized one is detached already.)
        // Before any thread exists (the metrics server's comes next): daemon(3) forks and setsids.
        // The working directory is kept so relative paths given on the command line still work.
        nix::unistd::daemon(true, false).context("--daemon: detaching")?;
        // As gunicorn's daemonize (--umask only applies to the unix sockets).
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        // Workers inherit stdout and stderr: their output goes to --error-logfile, not to
        // /dev/null (and follows it when USR1 or HUP reopens it).
        if let Some(log) = &log {
            log.take_stdio()
                .context("--daemon: sending output to --error-logfile")?;
        }
    }
    if old_master.is_some() {
        // The old master's workers still write here: keep their files (counters stay monotonic).
        std::fs::create_dir_all(&metrics_dir)
            .with_context(|| format!("metrics directory {}", metrics_dir.display()))?;
    } else {
        gpe_core::prepare_dir(&metrics_dir).context("metrics directory")?;
    }
    if uid.is_some() || gid.is_some() {
        // Workers running as --user/--group create their own files in the store directory.
        nix::unistd::chown(
            &metrics_dir,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .with_context(|| {
            format!(
                "giving the metrics directory {} to --user/--group",
                metrics_dir.display()
            )
        })?;
    }
    let metrics = metrics::MasterMetrics::new()?;
    let live = gpe_core::LivePids::new();
    let mut metrics_fd = None;
    let server = if cli.no_metrics {
        None
    } else {
        let mut server_config = gpe_core::server::ServerConfig::from_config(&config);
        if let Some(addr) = cli.metrics_bind {
            server_config = server_config.addr(addr);
        }
        let source = metrics.source(&metrics_dir, live.clone());
        let server = match inherited_metrics {
            Some(l) => gpe_core::server::MetricsServer::from_listener(l, server_config, source),
            None => gpe_core::server::MetricsServer::bind(server_config, source),
        }
        .context(
            "metrics server (set --metrics-bind or PROMETHEUS_METRICS_PORT, or pass --no-metrics)",
        )?;
        metrics_fd = server.listener_fd().ok();
        Some(server.spawn_thread()?)
    };
    let pidfile = match &cli.pidfile {
        Some(p) => Some(
            reexec::PidFile::create(p, old_master.is_some())
                .with_context(|| format!("--pid {}", p.display()))?,
        ),
        None => None,
    };
    let signals = signals::Signals::install().context("installing signal handlers")?;
    let redis = redis_sync(&metrics_dir, &live)?;
    let settings = arbiter::Settings {
        args: cli.command[1..].to_vec(),
        program: program.into_os_string(),
        workers: cli.workers,
        timeout: std::time::Duration::from_secs(cli.timeout),
        graceful_timeout: std::time::Duration::from_secs(cli.graceful_timeout),
        max_requests: cli.max_requests,
        max_requests_jitter: cli.max_requests_jitter,
        worker_tmp_dir,
        metrics_dir,
        daemon: cli.daemon,
        exe: std::env::current_exe().context("finding our own executable (for USR2)")?,
        argv0: std::env::args_os().next().unwrap_or_default(),
        argv: std::env::args_os().skip(1).collect(),
        start_dir: reexec::start_dir().context("finding the working directory (for USR2)")?,
        uid,
        gid,
        groups: worker_groups,
    };
    tracing::info!(
        "Starting gpe-master {} ({})",
        env!("CARGO_PKG_VERSION"),
        cli.name.as_deref().unwrap_or("gpe")
    );
    if let Some(s) = &server {
        tracing::info!("Serving metrics at http://{}/metrics", s.local_addr());
    }
    let daemonized = cli.daemon;
    let reopen = arbiter::OnUsr1(match log {
        Some(log) => Box::new(move || {
            log.reopen();
            if daemonized {
                if let Err(e) = log.take_stdio() {
                    tracing::warn!(error = %e, "cannot send the workers' output to the reopened log file");
                }
            }
        }),
        None => Box::new(|| {}),
    });
    let upgrade = arbiter::Upgrade {
        pidfile,
        metrics_fd,
        old_master,
    };
    let mut arbiter =
        arbiter::Arbiter::new(settings, listeners, metrics, live, signals, reopen, upgrade)
            .with_redis(redis)
            .with_systemd(systemd::Systemd::from_env());
    let code = arbiter.run();
    drop(arbiter);
    if let Some(s) = server {
        s.shutdown();
    }
    Ok(code)
}

fn main() {
    let result = if std::env::args_os().nth(1).is_some_and(|a| a == "exporter") {
        exporter::run()
    } else {
        run()
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("gpe-master: error: {e:#}");
            if e.downcast_ref::<MasterError>()
                .is_some_and(MasterError::is_usage)
            {
                eprintln!("\nFor more information, try '--help'.");
                std::process::exit(2);
            }
            std::process::exit(1);
        }
    }
}

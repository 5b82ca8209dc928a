//! What the master checks and prepares before its arbiter runs: the worker binary, the
//! heartbeat directory, the store directory, detaching (`--daemon`), the `/metrics` server and
//! the Redis sync.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::MasterError;

/// The worker binary, resolved like a shell would, and checked before any fork.
pub(crate) fn resolve_program(program: &std::ffi::OsStr) -> anyhow::Result<PathBuf> {
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
pub(crate) fn redis_sync(
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
pub(crate) fn worker_tmp_dir(cli: &crate::cli::Cli) -> Result<PathBuf, MasterError> {
    let dir = cli
        .worker_tmp_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    if !dir.is_dir() {
        return Err(MasterError::WorkerTmpDirMissing(dir));
    }
    if let Err(e) = tempfile::tempfile_in(&dir) {
        return Err(MasterError::WorkerTmpDirUnusable(dir, e));
    }
    Ok(dir)
}
/// `--daemon`: detach (`daemon(3)`, before any thread exists; the working directory is kept so
/// relative paths still work), umask 022 as gunicorn's daemonize (`--umask` only applies to the
/// unix sockets), and stdout/stderr to `--error-logfile`, so the workers' output lands there
/// rather than in /dev/null.
pub(crate) fn detach(log: Option<&crate::logging::LogFile>) -> anyhow::Result<()> {
    nix::unistd::daemon(true, false).context("--daemon: detaching")?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if let Some(log) = log {
        log.take_stdio()
            .context("--daemon: sending output to --error-logfile")?;
    }
    Ok(())
}

/// The store directory: emptied at start, or kept as it is under a USR2 upgrade (the old
/// master's workers still write there, and counters must not go backwards); given to
/// `--user`/`--group`, whose workers create their files in it.
pub(crate) fn prepare_store(
    dir: &Path,
    upgrading: bool,
    uid: Option<u32>,
    gid: Option<u32>,
) -> anyhow::Result<()> {
    if upgrading {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("metrics directory {}", dir.display()))?;
    } else {
        gpe_core::prepare_dir(dir).context("metrics directory")?;
    }
    if uid.is_some() || gid.is_some() {
        nix::unistd::chown(
            dir,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .with_context(|| {
            format!(
                "giving the metrics directory {} to --user/--group",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// The host's `/metrics` server on its own thread (none with `--no-metrics`), on the listener
/// an old master passed (USR2) or a new one; and a copy of its listener, for a later USR2.
pub(crate) fn metrics_server(
    cli: &crate::cli::Cli,
    config: &gpe_core::expose::config::Config,
    source: gpe_core::expose::server::Source,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<(
    Option<gpe_core::expose::server::ServerHandle>,
    Option<std::os::fd::OwnedFd>,
)> {
    if cli.no_metrics {
        return Ok((None, None));
    }
    let mut server_config = gpe_core::expose::server::ServerConfig::from_config(config);
    if let Some(addr) = cli.metrics_bind {
        server_config = server_config.addr(addr);
    }
    let server = match inherited {
        Some(l) => gpe_core::expose::server::MetricsServer::from_listener(l, server_config, source),
        None => gpe_core::expose::server::MetricsServer::bind(server_config, source),
    }
    .context(
        "metrics server (set --metrics-bind or PROMETHEUS_METRICS_PORT, or pass --no-metrics)",
    )?;
    let fd = server.listener_fd().ok();
    let handle = server.spawn_thread()?;
    tracing::info!("Serving metrics at http://{}/metrics", handle.local_addr());
    Ok((Some(handle), fd))
}

/// The listeners an old master passed (USR2), with its `/metrics` listener and pid; else the
/// `binds`, bound now.
pub(crate) fn listeners(
    inherited: Option<crate::reexec::Inherited>,
    binds: &[(String, crate::bind::BindSpec)],
    options: &crate::bind::BindOptions,
) -> anyhow::Result<(
    Vec<crate::bind::Bound>,
    Option<std::net::TcpListener>,
    Option<i32>,
)> {
    Ok(match inherited {
        Some(i) => {
            tracing::info!(
                listeners = i.listeners.len(),
                old_master = ?i.old_master,
                "started by USR2: using the old master's listeners"
            );
            (i.listeners, i.metrics, i.old_master)
        }
        None => (crate::bind::bind_all(binds, options)?, None, None),
    })
}

/// `--pid`: written now (`<pidfile>.2` while an old master is our parent).
pub(crate) fn pidfile(
    cli: &crate::cli::Cli,
    upgrading: bool,
) -> anyhow::Result<Option<crate::reexec::PidFile>> {
    match &cli.pidfile {
        Some(p) => Ok(Some(
            crate::reexec::PidFile::create(p, upgrading)
                .with_context(|| format!("--pid {}", p.display()))?,
        )),
        None => Ok(None),
    }
}

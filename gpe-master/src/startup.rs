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
pub(crate) fn detach(
    log: Option<&crate::logging::LogFile>,
    keep_stdio: bool,
) -> anyhow::Result<()> {
    // -R (gunicorn's --enable-stdio-inheritance): stdout and stderr stay where they were.
    nix::unistd::daemon(true, keep_stdio).context("--daemon: detaching")?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    if let Some(log) = log.filter(|_| !keep_stdio) {
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
    up: std::sync::Arc<crate::arbiter::WorkersUp>,
) -> anyhow::Result<(
    Option<gpe_core::expose::server::ServerHandle>,
    Option<std::os::fd::OwnedFd>,
)> {
    if cli.no_metrics {
        return Ok((None, None));
    }
    // `/ready`: every configured worker up, and the store directory writable.
    let store = gpe_core::expose::server::store_writable(config.multiproc_dir());
    let readiness: gpe_core::expose::server::Readiness =
        std::sync::Arc::new(move || up.check().and_then(|()| store()));
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
    )?
    .readiness(readiness);
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

/// The variables every worker gets besides the contract's: `-e KEY=VALUE`, then the access log
/// settings (`--access-logfile`, `--access-logformat`), which gpe workers read.
pub(crate) fn worker_env(cli: &crate::cli::Cli) -> Vec<(String, String)> {
    let access = gpe_core::worker::env::AccessLogEnv {
        file: cli.access_logfile.clone().map(Into::into),
        format: cli.access_logformat.clone(),
    };
    let mut env = cli.env.clone();
    env.extend(
        access
            .vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_string_lossy().into_owned())),
    );
    env
}

/// Log what the settings came from, and what of them is not applied.
pub(crate) fn report_settings(loaded: &crate::cli::Loaded) {
    use crate::config::settings::Use;
    if let Some((file, by_default)) = &loaded.file {
        let how = if *by_default {
            " (found in the working directory, as gunicorn does)"
        } else {
            ""
        };
        tracing::info!("Loaded configuration from {}{how}", file.display());
    }
    let named = |used: Use| -> Vec<&str> {
        loaded
            .ignored
            .iter()
            .filter(|(_, u)| *u == used)
            .map(|(n, _)| n.as_str())
            .collect()
    };
    let worker = named(Use::Worker);
    if !worker.is_empty() {
        tracing::warn!(
            "Ignoring {}: they configure gunicorn's own Python workers and do not apply to gpe workers (configure the worker binary with its own flags)",
            worker.join(", ")
        );
    }
    let unsupported = named(Use::Unsupported);
    if !unsupported.is_empty() {
        tracing::warn!(
            "Ignoring {}: gunicorn features gpe-master does not have (it logs to --error-logfile and serves Prometheus metrics at /metrics)",
            unsupported.join(", ")
        );
    }
    let hooks = named(Use::Hook);
    if !hooks.is_empty() {
        tracing::warn!(
            "Ignoring the Python server hooks {} of the config file: gpe-master runs no Python",
            hooks.join(", ")
        );
    }
}

/// `--print-config`: the effective settings, as gpe's TOML config file (which `-c` reads back).
pub(crate) fn print_config(loaded: &crate::cli::Loaded) -> String {
    use toml::Value;
    let cli = &loaded.cli;
    let mut t = toml::Table::new();
    let mut put = |k: &str, v: Value| {
        t.insert(k.to_owned(), v);
    };
    let text = |s: &str| Value::String(s.to_owned());
    let path = |p: &std::path::Path| Value::String(p.display().to_string());
    let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    put("workers", int(cli.workers.into()));
    put(
        "bind",
        Value::Array(cli.binds().iter().map(|b| text(b)).collect()),
    );
    put("backlog", Value::Integer(cli.backlog.into()));
    put("timeout", int(cli.timeout));
    put("graceful_timeout", int(cli.graceful_timeout));
    put("max_requests", int(cli.max_requests));
    put("max_requests_jitter", int(cli.max_requests_jitter));
    put("reuse_port", Value::Boolean(cli.reuse_port));
    put("daemon", Value::Boolean(cli.daemon));
    put("umask", text(&format!("0o{:o}", cli.umask)));
    put("initgroups", Value::Boolean(cli.initgroups));
    put("loglevel", text(&cli.log_level));
    put("capture_output", Value::Boolean(cli.capture_output));
    put(
        "enable_stdio_inheritance",
        Value::Boolean(cli.enable_stdio_inheritance),
    );
    put(
        "raw_env",
        Value::Array(
            cli.env
                .iter()
                .map(|(k, v)| text(&format!("{k}={v}")))
                .collect(),
        ),
    );
    let optional = [
        ("pidfile", cli.pidfile.as_deref().map(path)),
        ("user", cli.user.as_deref().map(text)),
        ("group", cli.group.as_deref().map(text)),
        ("worker_tmp_dir", cli.worker_tmp_dir.as_deref().map(path)),
        ("errorlog", cli.error_logfile.as_deref().map(path)),
        ("accesslog", cli.access_logfile.as_deref().map(text)),
        (
            "access_log_format",
            cli.access_logformat.as_deref().map(text),
        ),
        ("chdir", cli.chdir.as_deref().map(path)),
        ("proc_name", cli.name.as_deref().map(text)),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, v);
        }
    }
    put(
        "command",
        Value::Array(
            cli.command
                .iter()
                .map(|w| text(&w.to_string_lossy()))
                .collect(),
        ),
    );
    let mut out = String::from(
        "# gpe-master's effective settings (a TOML config file: gpe-master -c FILE.toml)\n",
    );
    if let Some((file, _)) = &loaded.file {
        out.push_str(&format!(
            "# read from {} and the command line\n",
            file.display()
        ));
    }
    for (name, _) in &loaded.ignored {
        out.push_str(&format!("# ignored: {name}\n"));
    }
    out.push_str(&toml::to_string(&t).unwrap_or_default());
    out
}

/// Read the settings (exit 2 on bad ones), then `--print-config` (`None`: printed, exit 0) and
/// `--chdir`.
pub(crate) fn settings() -> anyhow::Result<Option<crate::cli::Loaded>> {
    let loaded = match crate::cli::Cli::load() {
        Ok(loaded) => loaded,
        Err(crate::cli::LoadError::Usage(e)) => e.exit(),
        Err(e) => return Err(MasterError::Config(e).into()),
    };
    if loaded.cli.print_config {
        print!("{}", print_config(&loaded));
        return Ok(None);
    }
    if let Some(format) = &loaded.cli.access_logformat {
        // Checked here, before any worker would refuse it.
        gpe_core::http::access::AccessLogFormat::parse(format)
            .map_err(|e| MasterError::AccessLogFormat(format.clone(), e))?;
    }
    if let Some(dir) = &loaded.cli.chdir {
        std::env::set_current_dir(dir).map_err(|e| MasterError::Chdir(dir.clone(), e))?;
    }
    Ok(Some(loaded))
}

/// The arbiter's settings: the workers' (as a HUP re-reads them, see
/// [`crate::reconfigure::Reconfigured`]) and the master's own.
pub(crate) fn arbiter_settings(
    cli: &crate::cli::Cli,
    program: PathBuf,
    worker_tmp_dir: PathBuf,
    metrics_dir: PathBuf,
    (uid, gid, groups): (Option<u32>, Option<u32>, Option<Vec<u32>>),
    rebind: Option<crate::bind::BindOptions>,
) -> anyhow::Result<crate::arbiter::Settings> {
    let w = crate::reconfigure::Reconfigured::from_cli(cli, program.into_os_string());
    Ok(crate::arbiter::Settings {
        args: w.args,
        env: w.env,
        rebind,
        program: w.program,
        workers: w.workers,
        timeout: w.timeout,
        graceful_timeout: w.graceful_timeout,
        max_requests: w.max_requests,
        max_requests_jitter: w.max_requests_jitter,
        worker_tmp_dir,
        metrics_dir,
        daemon: cli.daemon,
        exe: std::env::current_exe().context("finding our own executable (for USR2)")?,
        argv0: crate::argv().first().cloned().unwrap_or_default(),
        argv: crate::argv().get(1..).unwrap_or_default().to_vec(),
        start_dir: crate::reexec::start_dir()
            .context("finding the working directory (for USR2)")?,
        uid,
        gid,
        groups,
    })
}

/// Log the start, and set gunicorn's process title, `gpe-master: master [NAME]` in `ps` (NAME:
/// `--name`, else the worker binary's file name, as gunicorn's default is the app).
pub(crate) fn announce(cli: &crate::cli::Cli, program: &std::ffi::OsStr) {
    let label = cli.name.as_deref().unwrap_or("gpe");
    tracing::info!(
        "Starting gpe-master {} ({label})",
        env!("CARGO_PKG_VERSION")
    );
    let name = cli.name.clone().unwrap_or_else(|| {
        Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if let Err(e) = crate::sys::set_proc_title(&format!("gpe-master: master [{name}]")) {
        tracing::debug!(error = %e, "cannot set the process title");
    }
}

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
mod config;
mod error;
mod exit;
mod exporter;
mod heartbeat;
mod log_format;
mod logging;
mod metrics;
mod notices;
mod reconfigure;
mod reexec;
mod signals;
mod startup;
mod sys;
mod systemd;
mod users;

use anyhow::Context;

pub(crate) use error::MasterError;

/// This process's arguments (`argv[0]` first), read once: the process title (see
/// [`sys::set_proc_title`]) overwrites where std reads them from.
pub(crate) fn argv() -> &'static [std::ffi::OsString] {
    static ARGV: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();
    ARGV.get_or_init(|| std::env::args_os().collect())
}

fn run() -> anyhow::Result<i32> {
    let Some(loaded) = startup::settings()? else {
        return Ok(0); // --print-config
    };
    let cli = &loaded.cli;
    let log = logging::init_logging(cli)?;
    startup::report_settings(&loaded);
    logging::capture_output(log.as_ref(), cli)?;
    // Every flag value first (exit 2 on a bad one), then the worker binary; nothing is bound yet.
    // Socket activation: systemd's descriptors replace --bind, as in gunicorn.
    let activated = systemd::listen_fds_binds()?;
    let binds = bind::parse_all(activated.as_ref().unwrap_or(&cli.binds()))?;
    let (uid, gid) = users::ids(cli)?;
    let groups = users::groups(cli, uid, gid)?;
    let worker_tmp_dir = startup::worker_tmp_dir(cli)?;
    let program = startup::resolve_program(&cli.command[0])?;
    let config = gpe_core::expose::config::Config::from_env().context("metrics configuration")?;
    let metrics_dir = config.multiproc_dir().to_path_buf();
    if cli.check_config {
        // As gunicorn's --check-config: the configuration and the worker are checked, the
        // sockets are not bound (a server already running on them is no error).
        let binds = cli.binds().join(", ");
        println!(
            "configuration OK: {} worker(s) of {} on {binds}",
            cli.workers,
            program.display()
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
    let options = bind::BindOptions {
        backlog: cli.backlog,
        reuse_port: cli.reuse_port,
        umask: cli.umask,
        uid,
        gid,
    };
    let (listeners, inherited_metrics, old_master) =
        startup::listeners(inherited, &binds, &options)?;
    if cli.daemon && old_master.is_none() {
        // (A master re-exec'd by a daemonized one is detached already.)
        startup::detach(log.as_ref(), cli.enable_stdio_inheritance)?;
    }
    startup::prepare_store(&metrics_dir, old_master.is_some(), uid, gid)?;
    let metrics = metrics::MasterMetrics::new()?;
    let live = gpe_core::LivePids::new();
    let source = metrics.source(&metrics_dir, live.clone());
    let up = std::sync::Arc::new(arbiter::WorkersUp::default());
    let (server, metrics_fd) =
        startup::metrics_server(cli, &config, source, inherited_metrics, up.clone())?;
    let pidfile = startup::pidfile(cli, old_master.is_some())?;
    let signals = signals::Signals::install().context("installing signal handlers")?;
    let redis = startup::redis_sync(&metrics_dir, &live)?;
    let rebind = activated.is_none().then_some(options); // systemd's sockets stay systemd's
    let ids = (uid, gid, groups);
    let settings =
        startup::arbiter_settings(cli, program, worker_tmp_dir, metrics_dir, ids, rebind)?;
    let (running, log_file) = (cli.clone(), log.clone());
    startup::announce(cli, &settings.program);
    let reopen = logging::reopener(log, cli);
    let upgrade = arbiter::Upgrade {
        pidfile,
        metrics_fd,
        old_master,
    };
    let mut arbiter =
        arbiter::Arbiter::new(settings, listeners, metrics, live, signals, reopen, upgrade)
            .with_redis(redis)
            .with_systemd(systemd::Systemd::from_env())
            .with_workers_up(up)
            .with_reconfigure(arbiter::Reconfigure(Box::new(move || {
                reconfigure::reread(&running, log_file.as_ref())
            })));
    let code = arbiter.run();
    drop(arbiter);
    if let Some(s) = server {
        s.shutdown();
    }
    Ok(code)
}

fn main() {
    let result = if argv().get(1).is_some_and(|a| a == "exporter") {
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

//! HUP re-reads the settings (config file, `GUNICORN_CMD_ARGS`, the command line) as gunicorn
//! does: what applies to new workers takes effect with the workers the reload starts; what
//! cannot change in a running master is named in the log.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::Cli;

/// The settings a HUP applies: those of the workers it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reconfigured {
    pub(crate) workers: u32,
    pub(crate) timeout: Duration,
    pub(crate) graceful_timeout: Duration,
    pub(crate) max_requests: u64,
    pub(crate) max_requests_jitter: u64,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// The `--bind` addresses, as spelled.
    pub(crate) binds: Vec<String>,
}

impl Reconfigured {
    /// What `cli` says for new workers; `program` is its worker binary, resolved.
    pub(crate) fn from_cli(cli: &Cli, program: OsString) -> Reconfigured {
        Reconfigured {
            workers: cli.workers,
            timeout: Duration::from_secs(cli.timeout),
            graceful_timeout: Duration::from_secs(cli.graceful_timeout),
            max_requests: cli.max_requests,
            max_requests_jitter: cli.max_requests_jitter,
            env: crate::startup::worker_env(cli),
            program,
            args: cli.command.get(1..).unwrap_or_default().to_vec(),
            binds: cli.binds(),
        }
    }
}

/// The settings that differ between `old` and `new` and that a running master keeps until it is
/// restarted (or upgraded with USR2): pure, so tested without processes.
pub(crate) fn needing_restart(old: &Cli, new: &Cli) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name: &'static str, changed: bool| {
        if changed {
            out.push(name);
        }
    };
    check("backlog", old.backlog != new.backlog);
    check("reuse_port", old.reuse_port != new.reuse_port);
    check("user", old.user != new.user);
    check("group", old.group != new.group);
    check("initgroups", old.initgroups != new.initgroups);
    check("umask", old.umask != new.umask);
    check("pidfile", old.pidfile != new.pidfile);
    check("daemon", old.daemon != new.daemon);
    check("chdir", old.chdir != new.chdir);
    check("worker_tmp_dir", old.worker_tmp_dir != new.worker_tmp_dir);
    // A file can change to another file, not from or to stderr.
    let is_file = |c: &Cli| {
        c.error_logfile
            .as_ref()
            .is_some_and(|p| p.as_os_str() != "-")
    };
    check(
        "errorlog",
        old.error_logfile != new.error_logfile && !(is_file(old) && is_file(new)),
    );
    check("log_format", old.log_format != new.log_format);
    check("capture_output", old.capture_output != new.capture_output);
    check("proc_name", old.name != new.name);
    check("metrics_bind", old.metrics_bind != new.metrics_bind);
    check("no_metrics", old.no_metrics != new.no_metrics);
    out
}

/// Re-read the settings for a HUP: `None` (logged) when they cannot be read, the worker binary
/// cannot be found or a `--bind` cannot be parsed, and the running ones stay. The log settings
/// apply at once: the level, and the file when it moves to another file.
pub(crate) fn reread(running: &Cli, log: Option<&crate::logging::LogFile>) -> Option<Reconfigured> {
    let loaded = match Cli::load() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "Reload: the settings could not be re-read; keeping the current ones: {e}"
            );
            return None;
        }
    };
    let new = loaded.cli;
    let program = match crate::startup::resolve_program(&new.command[0]) {
        Ok(p) => p.into_os_string(),
        Err(e) => {
            tracing::error!("Reload: keeping the current settings: {e:#}");
            return None;
        }
    };
    if let Err(e) = crate::bind::parse_all(&new.binds()) {
        tracing::error!("Reload: keeping the current settings: {e}");
        return None;
    }
    if new.log_level != running.log_level {
        match crate::logging::set_level(&new.log_level) {
            Ok(()) => tracing::info!("Reload: log level {}", new.log_level),
            Err(e) => tracing::error!("Reload: the log level stays: {e}"),
        }
    }
    if let (Some(log), Some(path)) = (log, &new.error_logfile) {
        if Some(path) != running.error_logfile.as_ref() && path.as_os_str() != "-" {
            match log.retarget(path) {
                Ok(()) => tracing::info!("Reload: logging to {}", path.display()),
                Err(e) => tracing::error!("Reload: cannot log to {}: {e}", path.display()),
            }
        }
    }
    let fixed = needing_restart(running, &new);
    if !fixed.is_empty() {
        tracing::warn!(
            "Reload: {} changed; these apply at the next start (or USR2 upgrade), not on HUP",
            fixed.join(", ")
        );
    }
    Some(Reconfigured::from_cli(&new, program))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(words: &str) -> Cli {
        Cli::parse_from(std::iter::once("gpe-master").chain(words.split(' ')))
    }

    #[test]
    fn what_hup_cannot_change_is_named() {
        let old = cli("--workers 2 --bind 127.0.0.1:1 ./w");
        assert!(needing_restart(
            &old,
            &cli("--workers 5 --max-requests 9 -b 127.0.0.1:1 ./w")
        )
        .is_empty());
        assert_eq!(
            needing_restart(
                &old,
                &cli("--bind 127.0.0.1:2 --user nobody --workers 2 ./w")
            ),
            ["user"],
            "binds change on HUP"
        );
        let new = cli("--workers 3 --timeout 7 -e A=1 ./other x");
        let r = Reconfigured::from_cli(&new, "/bin/other".into());
        assert_eq!(r.workers, 3);
        assert_eq!(r.timeout, Duration::from_secs(7));
        assert_eq!(r.env, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(r.args, [OsString::from("x")]);
        assert_eq!(r.binds, ["127.0.0.1:8000"]);
    }
}

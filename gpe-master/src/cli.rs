//! Command line, modelled on gunicorn's (flags also read from `GUNICORN_CMD_ARGS`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// gpe-master: a gunicorn-compatible pre-fork master for any worker binary.
///
/// Binds the listeners, starts WORKERS copies of WORKER_BINARY (passing the sockets by systemd
/// socket activation), supervises them like gunicorn's arbiter, and serves /metrics for the whole
/// host. Signals: HUP reload, TERM graceful stop, INT/QUIT fast stop, TTIN/TTOU one worker
/// more/less, USR1 reopen logs, CHLD reap and respawn.
#[derive(Debug, Clone, Parser)]
// args_override_self: a flag given twice keeps its last value, so the command line overrides
// GUNICORN_CMD_ARGS (whose words come first), as in gunicorn.
#[command(name = "gpe-master", version, about, long_about = None, args_override_self = true)]
pub(crate) struct Cli {
    /// Number of worker processes.
    #[arg(short = 'w', long, env = "WEB_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: u32,

    /// Socket to bind, spelled as in gunicorn: HOST:PORT, HOST (port 8000), :PORT (every IPv4
    /// interface), tcp://HOST:PORT, `[V6ADDR]:PORT` (`[::]` also takes IPv4 clients),
    /// unix:PATH, unix://PATH or fd://FD. A hostname binds its IPv4 address. A failed bind is
    /// retried 5 times, 1 s apart. Repeatable.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub(crate) bind: Vec<String>,

    /// Maximum number of pending connections.
    #[arg(long, default_value_t = 2048)]
    pub(crate) backlog: i32,

    /// Set SO_REUSEPORT on the listening sockets.
    #[arg(long)]
    pub(crate) reuse_port: bool,

    /// Workers silent (no heartbeat) for this many seconds are killed and replaced; 0 disables.
    #[arg(short = 't', long, default_value_t = 30)]
    pub(crate) timeout: u64,

    /// Seconds workers get to finish after TERM before they are killed.
    #[arg(long, default_value_t = 30)]
    pub(crate) graceful_timeout: u64,

    /// Requests a worker serves before it is replaced (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub(crate) max_requests: u64,

    /// Random 0..=N added to --max-requests per worker, so workers do not restart together.
    #[arg(long, default_value_t = 0)]
    pub(crate) max_requests_jitter: u64,

    /// Write the master's pid to this file.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub(crate) pidfile: Option<PathBuf>,

    /// Detach from the terminal: fork into the background, new session, stdio on /dev/null
    /// (log with --error-logfile). The working directory is kept.
    #[arg(short = 'D', long)]
    pub(crate) daemon: bool,

    /// Switch worker processes to this user (name or uid).
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,

    /// Switch worker processes to this group (name or gid).
    #[arg(short = 'g', long)]
    pub(crate) group: Option<String>,

    /// Give workers the supplementary groups of --user from the group database (as
    /// initgroups(3)); without it, a worker started by root as --user has none.
    #[arg(long)]
    pub(crate) initgroups: bool,

    /// Umask the unix sockets are created under, as in gunicorn: the default 0 gives mode 0777,
    /// so a proxy running as another user can connect. Read like gunicorn reads it: 0o22 or 022
    /// is octal, 0x12 hex, 18 decimal (so 22 means 0o26). It is not the master's or the workers'
    /// own umask: they keep the one they were started with (022 under --daemon).
    #[arg(short = 'm', long, default_value = "0", value_parser = parse_umask)]
    pub(crate) umask: u32,

    /// Directory of the workers' heartbeat files (default: the system temp dir).
    #[arg(long)]
    pub(crate) worker_tmp_dir: Option<PathBuf>,

    /// Check the configuration (flags and their values, the worker binary, the spelling of the
    /// bind addresses) and exit; nothing is bound, so a running server on them is no error.
    #[arg(long)]
    pub(crate) check_config: bool,

    /// Process name used in logs.
    #[arg(short = 'n', long)]
    pub(crate) name: Option<String>,

    /// Log level: trace, debug, info, warning, error, critical.
    #[arg(long, default_value = "info", value_parser = ["trace", "debug", "info", "warning", "warn", "error", "critical"])]
    pub(crate) log_level: String,

    /// Write the master's log to this file ("-" for stderr); reopened on USR1.
    #[arg(long, value_name = "FILE")]
    pub(crate) error_logfile: Option<PathBuf>,

    /// Address of the host's /metrics server (default from PROMETHEUS_BIND_ADDRESS and
    /// PROMETHEUS_METRICS_PORT, else 127.0.0.1:9091).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_bind: Option<SocketAddr>,

    /// Do not serve /metrics.
    #[arg(long)]
    pub(crate) no_metrics: bool,

    /// The worker binary, then its arguments.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, value_name = "WORKER_BINARY [ARGS]")]
    pub(crate) command: Vec<OsString>,
}

/// A umask as gunicorn's `auto_int` reads `--umask`: `int(x, 0)` (`0o`/`0x`/`0b` prefixes,
/// else decimal), with a leading `0` before a digit meaning octal (`022`). Unlike gunicorn, a
/// value above 0o777 is refused rather than silently masked.
fn parse_umask(s: &str) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    let value = u32::from_str_radix(digits, radix)
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_alphanumeric()));
    match value {
        Some(m) if m <= 0o777 => Ok(m),
        Some(_) => Err(format!("{s:?} is above 0o777 (511), the largest umask")),
        None => Err(format!(
            "{s:?} is not a number (0o22 or 022 octal, 0x12 hex, 18 decimal)"
        )),
    }
}

/// `words` without their `--bind ADDR`, `--bind=ADDR`, `-b ADDR` and `-bADDR`.
fn without_bind(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut skip_next = false;
    for w in words {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if w == "--bind" || w == "-b" {
            skip_next = true;
        } else if !(w.starts_with("--bind=") || (w.starts_with("-b") && w.len() > 2)) {
            out.push(w);
        }
    }
    out
}

impl Cli {
    /// Parse `GUNICORN_CMD_ARGS` (shell words, placed before the real arguments, like gunicorn)
    /// and the command line. Exits with status 2 and a message naming the flag on bad input.
    pub(crate) fn from_env_and_args() -> Cli {
        let mut args: Vec<OsString> = std::env::args_os().collect();
        if let Ok(extra) = std::env::var("GUNICORN_CMD_ARGS") {
            match shlex::split(&extra) {
                Some(mut words) => {
                    // gunicorn: a `--bind` on the command line replaces the environment's binds
                    // (the setting is a list, set whole by whichever source comes last).
                    if Cli::try_parse_from(&args).is_ok_and(|cli| !cli.bind.is_empty()) {
                        words = without_bind(words);
                    }
                    let at = 1.min(args.len());
                    args.splice(at..at, words.into_iter().map(OsString::from));
                }
                None => {
                    eprintln!("gpe-master: GUNICORN_CMD_ARGS={extra:?} is not valid shell words (unbalanced quote?)");
                    std::process::exit(2);
                }
            }
        }
        Cli::parse_from(args)
    }

    /// The bind addresses, with gunicorn's default.
    pub(crate) fn binds(&self) -> Vec<String> {
        if self.bind.is_empty() {
            match std::env::var("PORT") {
                Ok(port) if !port.is_empty() => vec![format!("0.0.0.0:{port}")],
                _ => vec!["127.0.0.1:8000".to_owned()],
            }
        } else {
            self.bind.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn umask_is_read_like_gunicorn_auto_int() {
        for (text, want) in [
            ("0", 0),
            ("00", 0),
            ("022", 0o22),
            ("0022", 0o22),
            ("0o22", 0o22),
            ("0O22", 0o22),
            ("0x12", 0o22),
            ("0b10010", 0o22),
            ("18", 0o22),
            ("22", 22),
            ("0o777", 0o777),
            ("511", 0o777),
        ] {
            assert_eq!(parse_umask(text), Ok(want), "{text:?}");
        }
        for bad in [
            "", "08", "0o8", "0x", "-1", "+1", "0o1000", "512", "999", "abc", " 0",
        ] {
            assert!(parse_umask(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_words_are_removed() {
        assert_eq!(
            without_bind(words(
                "--workers 2 --bind a:1 -b b:2 --bind=c:3 -bd:4 --name x"
            )),
            words("--workers 2 --name x")
        );
    }
}

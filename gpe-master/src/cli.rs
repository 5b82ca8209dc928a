//! Command line, modelled on gunicorn's: flags also read from `GUNICORN_CMD_ARGS` and from a
//! config file (see [`crate::config`]), every gunicorn flag accepted.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::config::settings::{self, Kind, Use};
use crate::config::{self as file_config, ConfigError, FileConfig};

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
    /// Config file: a gunicorn.conf.py (run by python3) or gpe's TOML (FILE.toml). Default:
    /// ./gunicorn.conf.py when present. The command line and GUNICORN_CMD_ARGS override it.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Print the effective settings (after the config file, GUNICORN_CMD_ARGS and the command
    /// line) and exit.
    #[arg(long)]
    pub(crate) print_config: bool,

    /// Number of worker processes (0: none until TTIN adds one, as gunicorn allows).
    #[arg(short = 'w', long, env = "WEB_CONCURRENCY", default_value_t = 1)]
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

    /// Log level: trace, debug, info, warning, error, critical (in any case).
    #[arg(long, default_value = "info", value_parser = clap::builder::PossibleValuesParser::new(["trace", "debug", "info", "warning", "warn", "error", "critical"]).map(|s| s.to_ascii_lowercase()), ignore_case = true)]
    pub(crate) log_level: String,

    /// Write the master's log to this file ("-" for stderr); reopened on USR1 and HUP.
    #[arg(long, alias = "log-file", value_name = "FILE")]
    pub(crate) error_logfile: Option<PathBuf>,

    /// The master's log lines: gunicorn's (`[time] [pid] [LEVEL] message`) or JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Gunicorn)]
    pub(crate) log_format: LogFormat,

    /// Workers write an access log line per request to this file ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub(crate) access_logfile: Option<String>,

    /// The access log's format, in gunicorn's atoms (default: gunicorn's
    /// '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"').
    #[arg(long, value_name = "FORMAT")]
    pub(crate) access_logformat: Option<String>,

    /// Send the workers' stdout and stderr to --error-logfile too.
    #[arg(long)]
    pub(crate) capture_output: bool,

    /// Under --daemon, keep stdout and stderr (workers inherit them) instead of /dev/null.
    #[arg(short = 'R', long)]
    pub(crate) enable_stdio_inheritance: bool,

    /// Set an environment variable of the workers: KEY=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,

    /// Change to this directory before anything else (the worker binary and relative paths
    /// are then found from there).
    #[arg(long, value_name = "DIR")]
    pub(crate) chdir: Option<PathBuf>,

    /// Address of the host's /metrics server (default from PROMETHEUS_BIND_ADDRESS and
    /// PROMETHEUS_METRICS_PORT, else 127.0.0.1:9091).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_bind: Option<SocketAddr>,

    /// Do not serve /metrics.
    #[arg(long)]
    pub(crate) no_metrics: bool,

    /// The worker binary, then its arguments (or `command` in the config file).
    #[arg(num_args = 1.., trailing_var_arg = true, value_name = "WORKER_BINARY [ARGS]")]
    pub(crate) command: Vec<OsString>,
}

/// How the master writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `[2026-12-01 10:00:00 +0000] [1234] [INFO] Booting worker with pid: 1235`.
    Gunicorn,
    /// One JSON object per line (time, level, message, fields).
    Json,
}

/// `-e KEY=VALUE`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// What the command line, `GUNICORN_CMD_ARGS` and the config file say, and what to tell the
/// log about them once it is set up.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) cli: Cli,
    /// The config file read, if any, and whether it was found by default.
    pub(crate) file: Option<(PathBuf, bool)>,
    /// Flags and settings accepted but not applied, by why.
    pub(crate) ignored: Vec<(String, Use)>,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("GUNICORN_CMD_ARGS={0:?} is not valid shell words (unbalanced quote?)")]
    CmdArgs(String),
    #[error("no worker binary: name one after the flags (gpe-master [FLAGS] WORKER_BINARY [ARGS]) or set `command` in the config file")]
    NoCommand,
    #[error(transparent)]
    Usage(#[from] clap::Error),
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

/// The command with every gunicorn flag gpe-master does not apply, hidden, so that they are
/// accepted (and reported) instead of refused.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for s in settings::ignored() {
        let mut arg = clap::Arg::new(s.name).hide(true);
        for f in s.flags {
            arg = match f.strip_prefix("--") {
                Some(long) if arg.get_long().is_none() => arg.long(long),
                Some(long) => arg.alias(long),
                None => arg.short(f.chars().nth(1).unwrap_or('?')),
            };
        }
        arg = match s.kind {
            Kind::Flag => arg.action(ArgAction::Count),
            Kind::Value | Kind::List => arg.action(ArgAction::Append).value_name("VALUE"),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// What a list of words sets, read leniently (to find `-c`, `--bind` and the worker binary
/// before the real parse).
fn peek(words: &[OsString]) -> clap::ArgMatches {
    let mut argv = vec![OsString::from("gpe-master")];
    argv.extend_from_slice(words);
    command()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .unwrap_or_default()
}

/// `words` without the words of the list setting `long` (`--bind ADDR`, `--bind=ADDR`, `-b ADDR`,
/// `-bADDR`).
fn without_list(words: Vec<OsString>, long: &str, short: Option<char>) -> Vec<OsString> {
    let short = short.map(|c| format!("-{c}"));
    let mut out = Vec::with_capacity(words.len());
    let mut skip_next = false;
    for w in words {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        let text = w.to_string_lossy();
        let is_short = short.as_deref().is_some_and(|s| text.starts_with(s));
        if text == long || short.as_deref() == Some(&*text) {
            skip_next = true;
        } else if !(text.starts_with(&format!("{long}=")) || is_short) {
            out.push(w);
        }
    }
    out
}

/// Each source's words: the config file's, `GUNICORN_CMD_ARGS`'s and the command line's, in
/// that order of increasing weight.
struct Sources {
    file: Vec<OsString>,
    env: Vec<OsString>,
    args: Vec<OsString>,
}

impl Sources {
    /// gunicorn: a list setting (`--bind`, `-e`) is set whole by the heaviest source that names it.
    fn lists_from_one_source(mut self) -> Self {
        // Parsed once: taking one list's words out changes no other list's presence.
        let (args, env) = (peek(&self.args), peek(&self.env));
        for s in settings::SETTINGS
            .iter()
            .filter(|s| s.kind == Kind::List && s.used == Use::Master)
        {
            let (Some(long), id) = (s.long(), list_id(s.name)) else {
                continue;
            };
            let short = s
                .flags
                .iter()
                .find(|f| f.len() == 2)
                .and_then(|f| f.chars().nth(1));
            let (in_args, in_env) = (args.contains_id(id), env.contains_id(id));
            if in_args {
                self.env = without_list(std::mem::take(&mut self.env), long, short);
            }
            if in_args || in_env {
                self.file = without_list(std::mem::take(&mut self.file), long, short);
            }
        }
        self
    }
}

/// The clap id of a master list setting.
fn list_id(name: &str) -> &str {
    match name {
        "raw_env" => "env",
        other => other,
    }
}

impl Cli {
    /// Read the settings: the config file (`-c`, else `./gunicorn.conf.py` when present), then
    /// `GUNICORN_CMD_ARGS` (shell words), then the command line, each overriding the one before.
    pub(crate) fn load() -> Result<Loaded, LoadError> {
        let args: Vec<OsString> = crate::argv().get(1..).unwrap_or_default().to_vec();
        let env = match std::env::var("GUNICORN_CMD_ARGS") {
            Ok(extra) => shlex::split(&extra)
                .ok_or(LoadError::CmdArgs(extra))?
                .into_iter()
                .map(OsString::from)
                .collect(),
            Err(_) => Vec::new(),
        };
        let named = [&args, &env]
            .into_iter()
            .find_map(|w| peek(w).get_one::<PathBuf>("config").cloned());
        let file = match named {
            Some(path) => Some((path, false)),
            None => Path::new(file_config::DEFAULT_FILE)
                .is_file()
                .then(|| (PathBuf::from(file_config::DEFAULT_FILE), true)),
        };
        let config = match &file {
            Some((path, _)) => file_config::load(path)?,
            None => FileConfig::default(),
        };
        let sources = Sources {
            file: config.words.iter().map(OsString::from).collect(),
            env,
            args,
        }
        .lists_from_one_source();
        let mut argv = vec![OsString::from("gpe-master")];
        argv.extend(sources.file);
        argv.extend(sources.env);
        argv.extend(sources.args);
        let matches = command().try_get_matches_from(&argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if cli.command.is_empty() {
            cli.command = config
                .command
                .clone()
                .ok_or(LoadError::NoCommand)?
                .into_iter()
                .map(OsString::from)
                .collect();
        }
        let mut ignored: Vec<(String, Use)> = settings::ignored()
            .filter(|s| {
                matches.contains_id(s.name)
                    && matches.value_source(s.name) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|s| (s.flags.join("/"), s.used))
            .collect();
        ignored.extend(config.ignored.iter().map(|(n, u)| ((*n).to_owned(), *u)));
        Ok(Loaded { cli, file, ignored })
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

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
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
            without_list(
                words("--workers 2 --bind a:1 -b b:2 --bind=c:3 -bd:4 --name x"),
                "--bind",
                Some('b')
            ),
            words("--workers 2 --name x")
        );
    }
}

//! The master's log: gunicorn's level names, to stderr or a file that USR1 and HUP reopen.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::cli::LogFormat;

/// A log file that USR1 reopens (for logrotate), and that a HUP may point elsewhere.
#[derive(Debug, Clone)]
pub(crate) struct LogFile {
    path: Arc<Mutex<PathBuf>>,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogFile {
            path: Arc::new(Mutex::new(path.to_owned())),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub(crate) fn reopen(&self) {
        let path = self.path.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f,
            Err(e) => eprintln!("gpe-master: cannot reopen {}: {e}", path.display()),
        }
    }

    /// Write to `path` from now on (a HUP that changed `--error-logfile`); the old file is kept
    /// when the new one cannot be opened.
    pub(crate) fn retarget(&self, path: &Path) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        *self.path.lock().unwrap_or_else(|p| p.into_inner()) = path.to_owned();
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    }

    /// Point this process's stdout and stderr at the file (under `--daemon`, so that the
    /// workers, which inherit them, write there instead of /dev/null).
    pub(crate) fn take_stdio(&self) -> std::io::Result<()> {
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

pub(crate) fn init_logging(cli: &crate::cli::Cli) -> anyhow::Result<Option<LogFile>> {
    init_logging_with(&cli.log_level, cli.error_logfile.as_deref(), cli.log_format)
}

/// Logging at gunicorn's level names, in gunicorn's line format (or JSON), to stderr or a
/// (USR1-reopenable) file.
pub(crate) fn init_logging_with(
    level: &str,
    error_logfile: Option<&Path>,
    format: LogFormat,
) -> anyhow::Result<Option<LogFile>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_level(level)));
    match error_logfile {
        Some(path) if path.as_os_str() != "-" => {
            let log = LogFile::open(path)
                .with_context(|| format!("--error-logfile {}", path.display()))?;
            let writer = log.clone();
            install(format, filter, move || writer.clone());
            Ok(Some(log))
        }
        _ => {
            install(format, filter, std::io::stderr);
            Ok(None)
        }
    }
}

/// tracing's name of a gunicorn level.
fn filter_level(level: &str) -> &str {
    match level {
        "warning" => "warn",
        "critical" => "error",
        other => other,
    }
}

/// Changes the level of the running log (a HUP that changed `--log-level`).
type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static SET_LEVEL: std::sync::OnceLock<SetLevel> = std::sync::OnceLock::new();

/// Log at `level` (gunicorn's name) from now on, unless `RUST_LOG` chose the filter.
pub(crate) fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    match SET_LEVEL.get() {
        Some(set) => set(filter_level(level)),
        None => Ok(()),
    }
}

fn install<W>(format: LogFormat, filter: tracing_subscriber::EnvFilter, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer);
    // The filter can be swapped while running (see `set_level`).
    macro_rules! init_reloadable {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = SET_LEVEL.set(Box::new(move |level: &str| {
                handle
                    .reload(tracing_subscriber::EnvFilter::new(level))
                    .map_err(|e| e.to_string())
            }));
            builder.init();
        }};
    }
    match format {
        LogFormat::Gunicorn => init_reloadable!(builder.event_format(crate::log_format::Gunicorn)),
        LogFormat::Json => {
            init_reloadable!(builder.json().flatten_event(true).with_current_span(false))
        }
    }
}

/// gunicorn's `--capture-output`: stdout and stderr (which the workers inherit) go to the log file.
pub(crate) fn capture_output(log: Option<&LogFile>, cli: &crate::cli::Cli) -> anyhow::Result<()> {
    if let Some(log) = log.filter(|_| cli.capture_output) {
        log.take_stdio()
            .context("--capture-output: sending output to --error-logfile")?;
    }
    Ok(())
}

/// What USR1 and HUP do to the log: reopen the file and, under `--daemon`, point stdout and
/// stderr (which new workers inherit) at the reopened file.
pub(crate) fn reopener(log: Option<LogFile>, cli: &crate::cli::Cli) -> crate::arbiter::OnUsr1 {
    // Under --daemon (without -R) and --capture-output, stdout and stderr are the log file too.
    let daemonized = (cli.daemon && !cli.enable_stdio_inheritance) || cli.capture_output;
    crate::arbiter::OnUsr1(match log {
        Some(log) => Box::new(move || {
            log.reopen();
            if daemonized {
                if let Err(e) = log.take_stdio() {
                    tracing::warn!(error = %e, "cannot send the workers' output to the reopened log file");
                }
            }
        }),
        None => Box::new(|| {}),
    })
}

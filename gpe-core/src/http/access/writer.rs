//! [`AccessLog`]: where the lines go (a file opened for appending, or stdout), one `write` per
//! line.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::entry::{AccessEntry, Captured, RequestHead};
use super::{AccessLogError, AccessLogFormat};
use crate::worker::env;

/// The access log of a worker: a compiled [`AccessLogFormat`] and where its lines go. Cheap to
/// clone (shared).
///
/// A file is opened with `O_APPEND` (created if missing), and each line is formatted into a
/// buffer and written with one `write` call: the kernel appends each such write whole at the end
/// of the file, so the workers of one master (and any other process) appending to the same file
/// never interleave their lines. `-` writes to stdout the same way (one `write` to fd 1, past
/// the standard library's buffer). [`reopen`](Self::reopen) opens the path again, for
/// logrotate's USR1 (gpe-master forwards USR1 to its workers, and the worker host reopens the
/// log on it). A failing write is reported once (`warn!`) until a write succeeds again; a
/// request never fails because of its log line.
///
/// The worker hosts (`gpe_tower::serve`, `gpe_actix::serve`) open it from the worker's
/// environment ([`from_env`](Self::from_env)); the adapters' layers take one too.
///
/// ```
/// use std::time::Duration;
/// use gpe_core::http::access::{AccessLog, AccessLogFormat, RequestHead};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("access.log");
/// let log = AccessLog::open(&path, AccessLogFormat::parse(r#""%(r)s" %(s)s %(b)s "%(a)s""#)?)?;
///
/// // What an adapter does (through its RequestTracker) for one request.
/// let head = RequestHead {
///     remote: Some([127, 0, 0, 1].into()),
///     method: "GET",
///     path: "/users/7",
///     query: Some("full=1"),
///     protocol: "HTTP/1.1",
/// };
/// let entry = log.begin(&head, |name| (name == "user-agent").then_some(&b"curl/8"[..]));
/// entry.finish(Some(200), 512, Duration::from_millis(3));
///
/// assert_eq!(
///     std::fs::read_to_string(&path)?,
///     "\"GET /users/7?full=1 HTTP/1.1\" 200 512 \"curl/8\"\n"
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    format: AccessLogFormat,
    target: Target,
    pid: u32,
    /// A write failed and was reported; quiet until one succeeds.
    failing: AtomicBool,
}

#[derive(Debug)]
enum Target {
    Stdout,
    File {
        path: PathBuf,
        file: RwLock<Arc<File>>,
    },
}

fn open_append(path: &Path) -> Result<File, AccessLogError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_owned(),
            source,
        })
}

impl AccessLog {
    fn with_target(format: AccessLogFormat, target: Target) -> AccessLog {
        AccessLog {
            inner: Arc::new(Inner {
                format,
                target,
                pid: std::process::id(),
                failing: AtomicBool::new(false),
            }),
        }
    }

    /// Append lines of `format` to the file at `path` (created if missing).
    ///
    /// # Errors
    /// [`AccessLogError::Open`] when the file cannot be opened for appending.
    pub fn open(
        path: impl AsRef<Path>,
        format: AccessLogFormat,
    ) -> Result<AccessLog, AccessLogError> {
        let path = path.as_ref();
        let file = open_append(path)?;
        Ok(AccessLog::with_target(
            format,
            Target::File {
                path: path.to_owned(),
                file: RwLock::new(Arc::new(file)),
            },
        ))
    }

    /// Write lines of `format` to stdout (gunicorn's `--access-logfile -`).
    pub fn stdout(format: AccessLogFormat) -> AccessLog {
        AccessLog::with_target(format, Target::Stdout)
    }

    /// The access log gpe-master asks for: [`ACCESS_LOGFILE`](env::ACCESS_LOGFILE) (a path, or
    /// `-` for stdout) in the format of [`ACCESS_LOGFORMAT`](env::ACCESS_LOGFORMAT) (default
    /// gunicorn's, [`DEFAULT_FORMAT`](super::DEFAULT_FORMAT)). `None` when no file is named: as
    /// gunicorn, a format alone logs nothing.
    ///
    /// # Errors
    /// [`AccessLogError::Variable`] naming the variable whose value cannot be used (a format
    /// that does not parse, a file that cannot be opened).
    pub fn from_env() -> Result<Option<AccessLog>, AccessLogError> {
        AccessLog::from_lookup(|name| std::env::var_os(name))
    }

    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Option<AccessLog>, AccessLogError> {
        let Some(file) = lookup(env::ACCESS_LOGFILE).filter(|f| !f.is_empty()) else {
            return Ok(None);
        };
        let in_variable = |name: &'static str| {
            move |e: AccessLogError| AccessLogError::Variable {
                name,
                source: Box::new(e),
            }
        };
        let format = match lookup(env::ACCESS_LOGFORMAT).filter(|f| !f.is_empty()) {
            Some(f) => AccessLogFormat::parse(&f.to_string_lossy())
                .map_err(in_variable(env::ACCESS_LOGFORMAT))?,
            None => AccessLogFormat::default(),
        };
        if file == "-" {
            return Ok(Some(AccessLog::stdout(format)));
        }
        AccessLog::open(PathBuf::from(file), format)
            .map(Some)
            .map_err(in_variable(env::ACCESS_LOGFILE))
    }

    /// The compiled format.
    pub fn format(&self) -> &AccessLogFormat {
        &self.inner.format
    }

    /// The file written to (`None`: stdout).
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.target {
            Target::Stdout => None,
            Target::File { path, .. } => Some(path),
        }
    }

    /// Open the file again (after logrotate moved it away; USR1); the lines written meanwhile
    /// went to the moved file. Nothing to do for stdout.
    ///
    /// # Errors
    /// [`AccessLogError::Open`] when the path cannot be opened: the log keeps writing to the
    /// file it had.
    pub fn reopen(&self) -> Result<(), AccessLogError> {
        if let Target::File { path, file } = &self.inner.target {
            let reopened = Arc::new(open_append(path)?);
            *file.write().unwrap_or_else(|p| p.into_inner()) = reopened;
        }
        Ok(())
    }

    /// Start the line of a request: capture what the format needs of `head` and of its headers
    /// (`header` looks one up by its lower-case name; only the format's are asked for). Finish
    /// it with [`AccessEntry::finish`], or hand it to the request's
    /// [`RequestTracker::log_access`](crate::http::RequestTracker::log_access).
    pub fn begin<'h>(
        &self,
        head: &RequestHead<'_>,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> AccessEntry {
        AccessEntry::new(self.clone(), Captured::capture(self.format(), head, header))
    }

    /// Render a line with `render` (given the buffer and this process's pid) and write it.
    pub(super) fn write_with(&self, render: impl FnOnce(&mut Vec<u8>, u32)) {
        thread_local!(static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) });
        let result = LINE.with_borrow_mut(|line| {
            line.clear();
            render(line, self.inner.pid);
            let written = match &self.inner.target {
                Target::Stdout => write_whole(std::io::stdout().as_fd(), line),
                Target::File { file, .. } => {
                    let file = file.read().unwrap_or_else(|p| p.into_inner());
                    write_whole(file.as_fd(), line)
                }
            };
            if line.capacity() > 64 * 1024 {
                *line = Vec::new();
            }
            written
        });
        match result {
            Ok(()) => {
                if self.inner.failing.load(Ordering::Relaxed) {
                    self.inner.failing.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if !self.inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, path = ?self.path(), "cannot write the access log");
                }
            }
        }
    }
}

/// One `write` of `line`; only a short write (a full disk, a signal) needs more.
fn write_whole(fd: std::os::fd::BorrowedFd<'_>, mut line: &[u8]) -> std::io::Result<()> {
    while !line.is_empty() {
        match nix::unistd::write(fd, line) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => line = &line[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

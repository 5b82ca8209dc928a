//! gunicorn's access log, written by the workers: `--access-logfile` and
//! `--access-logformat`, which gpe-master passes to its workers as
//! [`GPE_ACCESS_LOGFILE`](crate::worker::env::ACCESS_LOGFILE) and
//! [`GPE_ACCESS_LOGFORMAT`](crate::worker::env::ACCESS_LOGFORMAT).
//!
//! - [`AccessLogFormat`]: the format, compiled once (its table lists the atoms);
//! - [`AccessLog`]: where the lines go, one `write` per line so that workers appending to one
//!   file never interleave;
//! - [`AccessEntry`]: one request's line, captured at its start ([`AccessLog::begin`] with a
//!   [`RequestHead`]) and written when the request is recorded: adapters hand it to the
//!   request's [`RequestTracker`](super::RequestTracker)
//!   ([`log_access`](super::RequestTracker::log_access)), whose drop writes it after the metrics.
//!
//! Without an access log nothing of this runs: the tracker holds an empty `Option`. With one,
//! a request costs the copies of what the format reads, and the formatting and `write` of its
//! line.
//!
//! Requests to paths excluded from the metrics
//! ([`exclude_path`](super::RequestMetricsBuilder::exclude_path)) have no tracker, so they are
//! not logged either (gunicorn logs every request): exclude health checks to keep them out of
//! both.

mod entry;
mod format;
mod time;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use entry::{AccessEntry, RequestHead};
pub use format::{AccessLogFormat, DEFAULT_FORMAT};
pub use writer::AccessLog;

/// Why an access log cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessLogError {
    /// An atom gunicorn does not have.
    #[error(
        "access log format {format:?}: unknown atom `%({atom})s` at byte {at}; the atoms are \
         h l u t r m U q H s B b f a T M D L p, {{Header}}i, {{Header}}o and {{VAR}}e"
    )]
    UnknownAtom {
        /// The whole format.
        format: String,
        /// The atom's name, as written.
        atom: String,
        /// Where its `%` is (byte offset).
        at: usize,
    },

    /// A `%` that starts neither an atom nor `%%`.
    #[error(
        "access log format {format:?}: {what} at byte {at}; write an atom as `%(name)s` and a \
         literal `%` as `%%`"
    )]
    Syntax {
        /// The whole format.
        format: String,
        /// Where (byte offset).
        at: usize,
        /// What is wrong there.
        what: &'static str,
    },

    /// The file cannot be opened for appending.
    #[error("cannot open the access log {path:?} for appending: {source} (check the directory exists and is writable by the worker's user)")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A variable of the worker environment whose value cannot be used.
    #[error("{name}: {source}")]
    Variable {
        /// The variable.
        name: &'static str,
        /// Why.
        source: Box<AccessLogError>,
    },
}

//! What a job's handler returned: success, or a failure with its `error_type` label.

use std::fmt;

/// Why a job failed: the `error_type` label it is counted under (the short type name of the
/// handler's error, `panic`, or `cancelled`).
///
/// ```
/// use gpe_core::runtime::{IntoOutcome, JobFailure};
/// let failed = Err::<(), _>(std::fmt::Error).into_outcome();
/// assert_eq!(failed, Err(JobFailure::new("Error")));
/// assert_eq!(failed.unwrap_err().error_type(), "Error");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobFailure(&'static str);

impl JobFailure {
    /// A handler panicked (the worker goes on).
    pub const PANIC: JobFailure = JobFailure("panic");
    /// An async job's task was cancelled.
    pub const CANCELLED: JobFailure = JobFailure("cancelled");

    /// A failure counted under `error_type`.
    pub const fn new(error_type: &'static str) -> JobFailure {
        JobFailure(error_type)
    }

    /// The `error_type` label value.
    pub fn error_type(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job failed ({})", self.0)
    }
}

impl std::error::Error for JobFailure {}

/// How a handler's return value becomes a success or a failure with an error type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler return type #[instrument_worker] supports",
    label = "the handler returns `{Self}`",
    note = "return `()` (every job succeeds) or `Result<T, E>` with `E: std::fmt::Debug` (an `Err` counts as a failed job, labelled with the type name of `E` or the `error_label`)"
)]
pub trait IntoOutcome {
    /// `Err` with the failure's `error_type` on failure.
    fn into_outcome(self) -> Result<(), JobFailure>;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Result<(), JobFailure> {
        Ok(())
    }
}

impl<T, E: std::fmt::Debug> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Result<(), JobFailure> {
        match self {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = ?e, "job failed");
                Err(JobFailure::new(short_type_name(std::any::type_name::<E>())))
            }
        }
    }
}

/// A handler's outcome, converted where the handler returns. Not public API: the code
/// `#[instrument_worker]` generates wraps each handler call in [`Outcome::of`], so that an
/// unsupported return type is reported at the handler's signature.
#[doc(hidden)]
#[derive(Debug)]
pub struct Outcome(Result<(), JobFailure>);

impl Outcome {
    /// Convert a handler's return value.
    #[inline]
    pub fn of<R: IntoOutcome>(r: R) -> Outcome {
        Outcome(r.into_outcome())
    }
}

impl IntoOutcome for Outcome {
    #[inline]
    fn into_outcome(self) -> Result<(), JobFailure> {
        self.0
    }
}

/// `std::io::error::Error` -> `Error`; `my::Wrapper<other::Thing>` -> `Wrapper`.
pub(super) fn short_type_name(full: &'static str) -> &'static str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

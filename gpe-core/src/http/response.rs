//! The framework-neutral half of a metrics response: what an adapter's response body and
//! response future report to the request's [`RequestTracker`] as they are polled, and the 500
//! answered after a handler panic.

use std::any::Any;
use std::panic::resume_unwind;
use std::task::Poll;

use super::{FailureKind, RequestTracker};

/// Follows a response body for its request: an adapter's body (gpe-tower's `MetricsBody` over
/// `http_body::Body`, gpe-actix's over `MessageBody`) polls its inner body inside
/// `catch_unwind` and hands the result to [`after_poll`](Self::after_poll), which counts the
/// bytes and records the end, an error or a panic. Dropping it records the request (as a client
/// disconnect unless the body completed).
///
/// ```
/// use std::task::Poll;
/// use gpe_core::http::{BodyRecord, RequestMetrics};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let store = gpe_core::Store::open(dir.path())?;
/// let metrics = RequestMetrics::builder().build(&store)?;
/// let mut t = metrics.start("GET", "/");
/// t.set_status(200);
/// let mut body = BodyRecord::new(Some(t));
/// let chunk: Poll<Option<Result<&str, ()>>> = Poll::Ready(Some(Ok("hello")));
/// let _ = body.after_poll(Ok(chunk), |c| c.len() as u64);
/// let _ = body.after_poll(Ok(Poll::Ready(None::<Result<&str, ()>>)), |c| c.len() as u64);
/// drop(body); // recorded: 5 bytes, complete
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BodyRecord {
    tracker: Option<RequestTracker>,
}

impl BodyRecord {
    /// Follow a body for `tracker` (`None`: a request not measured).
    pub fn new(tracker: Option<RequestTracker>) -> BodyRecord {
        BodyRecord { tracker }
    }

    /// The tracker, while the body has not ended.
    pub fn tracker_mut(&mut self) -> Option<&mut RequestTracker> {
        self.tracker.as_mut()
    }

    /// The body has ended (no inner body, or its end was polled): record the request now.
    pub fn end(&mut self) {
        if let Some(mut t) = self.tracker.take() {
            t.complete();
        }
    }

    /// The last data was polled (the body says it is at its end, or sent its announced size):
    /// the request is complete, and is recorded when the body is dropped.
    pub fn mark_complete(&mut self) {
        if let Some(t) = &mut self.tracker {
            t.complete();
        }
    }

    /// Record the request now, as a client disconnect unless it completed (for a body's
    /// `Drop`, to record before the inner body is dropped).
    pub fn finish(&mut self) {
        drop(self.tracker.take());
    }

    /// Record what one poll of the inner body gave: `polled` is the result of the poll caught
    /// with `catch_unwind` (a panic is recorded, then resumed), `data_len` the data bytes of a
    /// frame or chunk. Returns the poll.
    #[inline]
    pub fn after_poll<T, E>(
        &mut self,
        polled: std::thread::Result<Poll<Option<Result<T, E>>>>,
        data_len: impl FnOnce(&T) -> u64,
    ) -> Poll<Option<Result<T, E>>> {
        let polled = match polled {
            Ok(p) => p,
            Err(panic) => {
                self.fail(FailureKind::Panic);
                resume_unwind(panic)
            }
        };
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => self.end(),
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(t) = &mut self.tracker {
                    t.add_response_bytes(data_len(chunk));
                }
            }
            Poll::Ready(Some(Err(_))) => self.fail(FailureKind::BodyError),
        }
        polled
    }

    fn fail(&mut self, kind: FailureKind) {
        if let Some(mut t) = self.tracker.take() {
            t.fail(kind);
            t.complete();
        }
    }
}

/// Log a panic of a request handler, caught by an adapter that answers 500 instead (and records
/// the request with [`RequestTracker::answered_after_panic`]).
pub fn log_handler_panic(panic: &(dyn Any + Send)) {
    tracing::error!(
        panic = panic_message(panic),
        "request handler panicked; answering 500"
    );
}

/// What a caught panic said, for the log.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

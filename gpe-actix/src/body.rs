//! The response body wrapper; the request is recorded in its `PinnedDrop`.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use gpe_core::http::{FailureKind, RequestTracker};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that counts its bytes and records the request when it ends: after the
    /// last chunk, or when dropped early (a client disconnect).
    pub struct MetricsBody<B> {
        // `None` for the empty body of a 500 answered after a panic.
        #[pin]
        inner: Option<B>,
        tracker: Option<RequestTracker>,
        // The body's announced size, if any: reaching it completes the request.
        expected: Option<u64>,
        sent: u64,
    }

    impl<B> PinnedDrop for MetricsBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Records the request (as a client disconnect unless the body completed).
            drop(this.project().tracker.take());
        }
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("tracker", &self.tracker)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl<B: MessageBody> MetricsBody<B> {
    /// Wrap `inner`; `tracker` (if any) is recorded when the body ends. A body with nothing to
    /// send completes the tracker at once (actix may never poll it).
    pub fn new(inner: B, mut tracker: Option<RequestTracker>) -> Self {
        let expected = match inner.size() {
            BodySize::None => Some(0),
            BodySize::Sized(n) => Some(n),
            BodySize::Stream => None,
        };
        if expected == Some(0) {
            if let Some(t) = &mut tracker {
                t.complete();
            }
        }
        MetricsBody {
            inner: Some(inner),
            tracker,
            expected,
            sent: 0,
        }
    }
}

impl<B> MetricsBody<B> {
    /// An empty body (used for the 500 answered after a panic).
    pub fn empty(mut tracker: Option<RequestTracker>) -> Self {
        if let Some(t) = &mut tracker {
            t.complete();
        }
        MetricsBody {
            inner: None,
            tracker,
            expected: Some(0),
            sent: 0,
        }
    }
}

impl<B: MessageBody> MessageBody for MetricsBody<B> {
    type Error = B::Error;

    #[inline]
    fn size(&self) -> BodySize {
        self.inner
            .as_ref()
            .map_or(BodySize::Sized(0), MessageBody::size)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let Some(mut inner) = this.inner.as_pin_mut() else {
            if let Some(mut t) = this.tracker.take() {
                t.complete();
            }
            return Poll::Ready(None);
        };
        let polled = match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_next(cx))) {
            Ok(p) => p,
            Err(panic) => {
                if let Some(mut t) = this.tracker.take() {
                    t.fail(FailureKind::Panic);
                    t.complete();
                }
                resume_unwind(panic)
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                if let Some(mut t) = this.tracker.take() {
                    t.complete();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(chunk))) => {
                *this.sent += chunk.len() as u64;
                if let Some(t) = this.tracker.as_mut() {
                    t.add_response_bytes(chunk.len() as u64);
                    if this.expected.is_some_and(|n| *this.sent >= n) {
                        t.complete();
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut t) = this.tracker.take() {
                    t.fail(FailureKind::BodyError);
                    t.complete();
                }
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn try_into_bytes(mut self) -> Result<Bytes, Self> {
        let Some(inner) = self.inner.take() else {
            return Ok(Bytes::new());
        };
        match inner.try_into_bytes() {
            Ok(bytes) => {
                // A complete in-memory body: record it now (dropping `self` does).
                if let Some(t) = self.tracker.as_mut() {
                    t.add_response_bytes(bytes.len() as u64);
                    t.complete();
                }
                Ok(bytes)
            }
            Err(inner) => {
                self.inner = Some(inner);
                Err(self)
            }
        }
    }
}

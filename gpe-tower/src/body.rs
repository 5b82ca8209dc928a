//! The response body wrapper: ends the measurement when the body is finished or dropped.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{FailureKind, RequestTracker};

pin_project! {
    /// A response body that counts its bytes and records the request when it ends: after its
    /// last frame, or when dropped early (a client disconnect).
    pub struct MetricsBody<B> {
        // `None` for the empty body of a 500 answered after a panic.
        #[pin]
        inner: Option<B>,
        tracker: Option<RequestTracker>,
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl<B> MetricsBody<B> {
    /// Wrap `inner`; `tracker` (if any) is recorded when the body ends.
    pub fn new(inner: B, tracker: Option<RequestTracker>) -> Self {
        MetricsBody {
            inner: Some(inner),
            tracker,
        }
    }

    /// An empty body (used for the 500 answered after a panic).
    pub fn empty(tracker: Option<RequestTracker>) -> Self {
        MetricsBody {
            inner: None,
            tracker,
        }
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(mut inner) = this.inner.as_pin_mut() else {
            if let Some(mut t) = this.tracker.take() {
                t.complete();
            }
            return Poll::Ready(None);
        };
        let polled = match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_frame(cx))) {
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
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = this.tracker.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        t.add_response_bytes(data.remaining() as u64);
                    }
                    if inner.is_end_stream() {
                        // The server may drop the body without polling again.
                        t.complete();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
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

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

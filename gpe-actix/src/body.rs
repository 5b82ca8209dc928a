//! The response body wrapper; the request is recorded in its `PinnedDrop`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use gpe_core::http::{BodyRecord, RequestTracker};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that counts its bytes and records the request when it ends: after the
    /// last chunk, or when dropped early (a client disconnect).
    pub struct MetricsBody<B> {
        // `None` for the empty body of a 500 answered after a panic.
        #[pin]
        inner: Option<B>,
        record: BodyRecord,
        // The body's announced size, if any: reaching it completes the request.
        expected: Option<u64>,
        sent: u64,
    }

    impl<B> PinnedDrop for MetricsBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Records the request (as a client disconnect unless the body completed).
            this.project().record.finish();
        }
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("record", &self.record)
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
            record: BodyRecord::new(tracker),
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
            record: BodyRecord::new(tracker),
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
            this.record.end();
            return Poll::Ready(None);
        };
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_next(cx)));
        let polled = this.record.after_poll(polled, |chunk| chunk.len() as u64);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            *this.sent += chunk.len() as u64;
            if this.expected.is_some_and(|n| *this.sent >= n) {
                this.record.mark_complete();
            }
        }
        polled
    }

    fn try_into_bytes(mut self) -> Result<Bytes, Self> {
        let Some(inner) = self.inner.take() else {
            return Ok(Bytes::new());
        };
        match inner.try_into_bytes() {
            Ok(bytes) => {
                // A complete in-memory body: record it now (dropping `self` does).
                if let Some(t) = self.record.tracker_mut() {
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

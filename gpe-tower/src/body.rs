//! The response body wrapper: ends the measurement when the body is finished or dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use gpe_core::http::grpc::GrpcCode;
use gpe_core::http::BodyRecord;

use crate::RequestTracker;

pin_project! {
    /// A response body that counts its bytes and records the request when it ends: after its
    /// last frame, or when dropped early (a client disconnect).
    pub struct MetricsBody<B> {
        // `None` for the empty body of a 500 answered after a panic.
        #[pin]
        inner: Option<B>,
        record: BodyRecord,
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl<B> MetricsBody<B> {
    /// Wrap `inner`; `tracker` (if any) is recorded when the body ends.
    pub fn new(inner: B, tracker: Option<RequestTracker>) -> Self {
        MetricsBody {
            inner: Some(inner),
            record: BodyRecord::new(tracker),
        }
    }

    /// An empty body (used for the 500 answered after a panic).
    pub fn empty(tracker: Option<RequestTracker>) -> Self {
        MetricsBody {
            inner: None,
            record: BodyRecord::new(tracker),
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
            this.record.end();
            return Poll::Ready(None);
        };
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll_frame(cx)));
        let polled = this.record.after_poll(polled, |frame| {
            frame.data_ref().map_or(0, |d| d.remaining() as u64)
        });
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(trailers), Some(t)) = (frame.trailers_ref(), this.record.tracker_mut()) {
                if t.is_grpc() {
                    grpc_status(t, trailers);
                }
            }
        }
        if matches!(polled, Poll::Ready(Some(Ok(_)))) && inner.is_end_stream() {
            // The server may drop the body without polling again.
            this.record.mark_complete();
        }
        polled
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

/// Give a gRPC call its status, if `headers` (the response's, or its trailers) carry one.
pub(crate) fn grpc_status(t: &mut RequestTracker, headers: &http::HeaderMap) {
    if let Some(v) = headers.get("grpc-status") {
        t.set_grpc_status(GrpcCode::from_header(v.as_bytes()));
    }
}

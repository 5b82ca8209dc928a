//! The request payload wrapper that counts a body sent without `Content-Length` (chunked).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_core::Stream;
use pin_project_lite::pin_project;

pin_project! {
    /// A request payload that adds the size of every chunk the handler reads to `count`.
    pub(crate) struct CountingPayload {
        #[pin]
        inner: Payload,
        count: Rc<Cell<u64>>,
    }
}

impl CountingPayload {
    /// Wrap `inner`; the bytes read are added to `count`.
    pub(crate) fn new(inner: Payload, count: Rc<Cell<u64>>) -> Self {
        CountingPayload { inner, count }
    }
    /// As the request's payload (boxed: one allocation, for chunked requests only).
    pub(crate) fn into_payload(self) -> Payload {
        let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(self);
        Payload::from(boxed)
    }
}

impl Stream for CountingPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let polled = this.inner.poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            this.count
                .set(this.count.get().saturating_add(chunk.len() as u64));
        }
        polled
    }
}

/// Where the size of a request body without `Content-Length` is counted, when there is one.
pub(crate) type RequestBytes = Option<Rc<Cell<u64>>>;

/// Take the tracker out of `slot` to record it, with the request body bytes counted so far.
pub(crate) fn take_tracker(
    slot: &mut Option<gpe_tower::RequestTracker>,
    request_bytes: &RequestBytes,
) -> Option<gpe_tower::RequestTracker> {
    let mut t = slot.take()?;
    if let Some(n) = request_bytes {
        t.set_request_size(n.get());
    }
    Some(t)
}

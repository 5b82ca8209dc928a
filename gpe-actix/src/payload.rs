//! The request payload wrapper that counts a body sent without `Content-Length` (chunked).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_core::Stream;
use gpe_core::http::RequestBodyBytes;
use pin_project_lite::pin_project;

pin_project! {
    /// A request payload that adds the size of every chunk the handler reads to `count`.
    pub(crate) struct CountingPayload {
        #[pin]
        inner: Payload,
        count: RequestBodyBytes,
    }
}

impl CountingPayload {
    /// Wrap `inner`; the bytes read are added to `count`.
    pub(crate) fn new(inner: Payload, count: RequestBodyBytes) -> Self {
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
            this.count.add(chunk.len() as u64);
        }
        polled
    }
}

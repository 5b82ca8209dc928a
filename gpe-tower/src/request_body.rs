//! Counting request bodies sent without a known size (chunked uploads), for
//! `request_size_bytes`.
//!
//! The [`Metrics`](crate::Metrics) service takes a request's size from its body's exact size hint
//! or its `Content-Length`. A body with neither (`Transfer-Encoding: chunked`) can only be
//! measured by counting it as the service reads it, which changes the request body's type; so it
//! is a separate, opt-in step in front of the layer: [`count_request_body`]. The [`serve`]
//! module does it for its axum routers.
//!
//! ```
//! use bytes::Bytes;
//! use gpe_tower::{count_request_body, MetricsLayer, RequestMetrics};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! # use std::{convert::Infallible, pin::Pin, task::{Context, Poll}};
//! # /// Chunks and no size, as a chunked upload arrives.
//! # struct Chunked(Vec<Bytes>);
//! # impl http_body::Body for Chunked {
//! #     type Data = Bytes;
//! #     type Error = Infallible;
//! #     fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>)
//! #         -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
//! #         Poll::Ready(self.0.pop().map(|b| Ok(http_body::Frame::data(b))))
//! #     }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let store = gpe_core::Store::open(dir.path())?;
//! let metrics = RequestMetrics::builder().build(&store)?;
//! let svc = ServiceBuilder::new()
//!     .map_request(count_request_body)
//!     .layer(MetricsLayer::new(metrics))
//!     .service(service_fn(|req: http::Request<gpe_tower::CountedBody<Chunked>>| async move {
//!         let body = req.into_body().collect().await?.to_bytes();
//!         Ok::<_, Infallible>(http::Response::new(format!("{} bytes", body.len())))
//!     }));
//! // Two chunks and no Content-Length.
//! let body = Chunked(vec![Bytes::from("abc"), Bytes::from("defg")]);
//! let res = svc.oneshot(http::Request::post("/upload").body(body)?).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "7 bytes");
//! # let text = gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir.path()).gather())?;
//! # assert!(text.contains("gunicorn_worker_request_size_bytes_sum{endpoint=\"<unmatched>\",method=\"POST\",status=\"200\",worker_id=\"0\"} 7"), "{text}");
//! # Ok(())
//! # }
//! ```
//!
//! [`serve`]: crate::serve

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pub use gpe_core::http::RequestBodyBytes;

pin_project! {
    /// A request body that counts the data bytes read from it (see [`count_request_body`]).
    #[derive(Debug)]
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        // `None` when the size was known up front: nothing to count.
        count: Option<RequestBodyBytes>,
    }
}

impl<B> CountedBody<B> {
    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// Prepare `req` for the [`Metrics`](crate::Metrics) service to record the size of a body sent
/// without a known size: when the body has no exact size hint, no `Content-Length` and is not
/// already finished, its data bytes are counted as the service reads them (one shared counter,
/// allocated for such requests only). Other requests pass through, wrapped but not counted.
pub fn count_request_body<B: Body>(mut req: Request<B>) -> Request<CountedBody<B>> {
    let count = needs_counting(&req).then(|| {
        let count = RequestBodyBytes::default();
        req.extensions_mut().insert(count.clone());
        count
    });
    req.map(|inner| CountedBody { inner, count })
}

/// `req`'s body size when it is known before the body is read: the body's exact size hint, else
/// its `Content-Length`.
pub(crate) fn known_size<B: Body>(req: &Request<B>) -> Option<u64> {
    req.body().size_hint().exact().or_else(|| {
        req.headers()
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    })
}

/// Whether `req`'s body size is unknown until it is read.
pub(crate) fn needs_counting<B: Body>(req: &Request<B>) -> bool {
    known_size(req).is_none() && !req.body().is_end_stream()
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(count), Poll::Ready(Some(Ok(frame)))) = (this.count.as_ref(), &polled) {
            if let Some(data) = frame.data_ref() {
                count.add(data.remaining() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

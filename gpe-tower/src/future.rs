//! The response future.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use gpe_core::http::log_handler_panic;

use crate::{FailureKind, MetricsBody, RequestTracker};

pin_project! {
    /// The response future of [`Metrics`](crate::Metrics): the inner future, with panics caught.
    pub struct ResponseFuture<F> {
        // `None` once the inner future panicked (it is never polled again).
        #[pin]
        inner: Option<F>,
        tracker: Option<RequestTracker>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, tracker: Option<RequestTracker>) -> Self {
        ResponseFuture {
            inner: Some(inner),
            tracker,
        }
    }

    pub(crate) fn panicked(tracker: Option<RequestTracker>) -> Self {
        ResponseFuture {
            inner: None,
            tracker,
        }
    }
}

fn internal_error<B>(mut tracker: Option<RequestTracker>) -> Response<MetricsBody<B>> {
    if let Some(t) = &mut tracker {
        t.answered_after_panic();
    }
    let mut res = Response::new(MetricsBody::empty(tracker));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Ok(internal_error(this.tracker.take())));
        };
        let result = match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => ready!(poll),
            Err(panic) => {
                log_handler_panic(&*panic);
                this.inner.set(None);
                return Poll::Ready(Ok(internal_error(this.tracker.take())));
            }
        };
        let mut tracker = this.tracker.take();
        Poll::Ready(match result {
            Ok(res) => {
                if let Some(t) = &mut tracker {
                    t.set_status(res.status().as_u16());
                    if t.is_grpc() {
                        // A call answered without a body has its status in the headers.
                        crate::body::grpc_status(t, res.headers());
                    }
                    if let Some(entry) = t.access_entry_mut() {
                        if entry.wants_response_headers() {
                            entry.capture_response_headers(|name| {
                                res.headers().get(name).map(|v| v.as_bytes())
                            });
                        }
                    }
                    if res.body().is_end_stream() {
                        t.complete();
                    }
                }
                Ok(res.map(|body| MetricsBody::new(body, tracker)))
            }
            Err(e) => {
                if let Some(t) = &mut tracker {
                    t.fail(FailureKind::ServiceError);
                    t.complete();
                }
                Err(e)
            }
        })
    }
}

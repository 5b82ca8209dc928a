//! actix-web hello world with the smallest middleware of the same shape as gpe-actix's: it
//! wraps the response future and body and ends its measurement when the body is finished or
//! dropped, updating one process-local atomic at the start and one at the end (what tower-http's
//! `InFlightRequestsLayer`, served by axum-inflight, does; actix-web has no such middleware of
//! its own). Its ratio to actix-bare is what any middleware that measures to the end of the
//! body pays here before it records anything.
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::web::Bytes;
use actix_web::Error;

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let counter = Arc::new(AtomicUsize::new(0));
    gpe_http_bench::serve_actix!(
        threads,
        actix_web::App::new()
            .wrap(InFlight(counter.clone()))
            .configure(gpe_http_bench::actix_routes)
    )
}

struct InFlight(Arc<AtomicUsize>);

impl<S, B> Transform<S, ServiceRequest> for InFlight
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + Unpin,
{
    type Response = ServiceResponse<CountedBody<B>>;
    type Error = Error;
    type Transform = InFlightService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(InFlightService {
            service,
            counter: self.0.clone(),
        }))
    }
}

struct InFlightService<S> {
    service: S,
    counter: Arc<AtomicUsize>,
}

impl<S, B> Service<ServiceRequest> for InFlightService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + Unpin,
{
    type Response = ServiceResponse<CountedBody<B>>;
    type Error = Error;
    type Future = InFlightFuture<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        self.counter.fetch_add(1, Ordering::Relaxed);
        InFlightFuture {
            inner: self.service.call(req),
            guard: Some(Guard(self.counter.clone())),
        }
    }
}

/// Takes the count down when dropped.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    struct InFlightFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F, B> Future for InFlightFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<CountedBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(res.map_body(|_, inner| CountedBody { inner, guard })))
    }
}

struct CountedBody<B> {
    inner: B,
    guard: Option<Guard>,
}

impl<B: MessageBody + Unpin> MessageBody for CountedBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }
}

//! The actix-web `Transform` and `Service`.

use std::future::{ready, Future, Ready};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready as ready_poll, Context, Poll};

use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::StatusCode;
use actix_web::Error;
use gpe_tower::{
    BuildError, DefaultEndpoint, EndpointLabel, FailureKind, RequestInfo, RequestMetrics,
    RequestTracker, UNMATCHED,
};
use pin_project_lite::pin_project;

use crate::MetricsBody;

/// The actix-web middleware factory: `App::new().wrap(ActixMetrics::new(metrics))`.
///
/// `E` is the endpoint label hook (see [`gpe_tower::hooks`]); the default is the resource
/// pattern.
#[derive(Debug, Clone)]
pub struct ActixMetrics<E = DefaultEndpoint> {
    metrics: RequestMetrics,
    endpoint: E,
}

impl ActixMetrics {
    /// Record into `metrics`, with the resource pattern as endpoint.
    pub fn new(metrics: RequestMetrics) -> Self {
        ActixMetrics {
            metrics,
            endpoint: DefaultEndpoint,
        }
    }

    /// Record the default families into the store of `PROMETHEUS_MULTIPROC_DIR`.
    ///
    /// # Errors
    /// As [`RequestMetrics::from_env`].
    pub fn from_env() -> Result<Self, BuildError> {
        Ok(ActixMetrics::new(RequestMetrics::from_env()?))
    }
}

impl<E> ActixMetrics<E> {
    /// Replace the endpoint label hook.
    #[must_use]
    pub fn endpoint_label<E2>(self, endpoint: E2) -> ActixMetrics<E2> {
        ActixMetrics {
            metrics: self.metrics,
            endpoint,
        }
    }

    /// The families recorded into.
    pub fn metrics(&self) -> &RequestMetrics {
        &self.metrics
    }
}

#[derive(Debug)]
struct Config<E> {
    metrics: RequestMetrics,
    endpoint: E,
}

impl<S, B, E> Transform<S, ServiceRequest> for ActixMetrics<E>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
    E: EndpointLabel + Clone,
{
    type Response = ServiceResponse<MetricsBody<B>>;
    type Error = Error;
    type Transform = MetricsMiddleware<S, E>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(MetricsMiddleware {
            service,
            config: Rc::new(Config {
                metrics: self.metrics.clone(),
                endpoint: self.endpoint.clone(),
            }),
        }))
    }
}

/// The middleware service made by [`ActixMetrics`].
#[derive(Debug)]
pub struct MetricsMiddleware<S, E> {
    service: S,
    config: Rc<Config<E>>,
}

impl<S, B, E> Service<ServiceRequest> for MetricsMiddleware<S, E>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
    E: EndpointLabel,
{
    type Response = ServiceResponse<MetricsBody<B>>;
    type Error = Error;
    type Future = MetricsFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let c = &*self.config;
        let tracker = if c.metrics.is_excluded(req.path()) {
            None
        } else {
            let pattern = req.match_pattern();
            let info = RequestInfo::new(req.method().as_str(), req.path(), pattern.as_deref());
            let endpoint = c.endpoint.endpoint(&info);
            let mut t = c
                .metrics
                .start(info.method, endpoint.as_deref().unwrap_or(UNMATCHED));
            let size = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            t.set_request_size(size.unwrap_or(0));
            Some(t)
        };
        match catch_unwind(AssertUnwindSafe(|| self.service.call(req))) {
            Ok(inner) => MetricsFuture {
                inner: Some(inner),
                tracker,
            },
            Err(panic) => {
                log_panic(&*panic);
                MetricsFuture {
                    inner: None,
                    tracker,
                }
            }
        }
    }
}

fn log_panic(panic: &(dyn std::any::Any + Send)) {
    let msg = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    tracing::error!(panic = msg, "request handler panicked; answering 500");
}

pin_project! {
    /// The response future of [`MetricsMiddleware`]: the inner future, with panics caught.
    pub struct MetricsFuture<F> {
        // `None` once the inner future panicked (it is never polled again).
        #[pin]
        inner: Option<F>,
        tracker: Option<RequestTracker>,
    }
}

impl<F> std::fmt::Debug for MetricsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsFuture")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

/// The error a panic becomes: actix renders it as an empty 500 response. (The request was moved
/// into the inner service, and cloning it beforehand would break actix's routing.)
fn internal_error(tracker: Option<RequestTracker>) -> Error {
    if let Some(mut t) = tracker {
        t.fail(FailureKind::Panic);
        t.set_status(500);
        t.complete();
    }
    actix_web::error::InternalError::new("handler panicked", StatusCode::INTERNAL_SERVER_ERROR)
        .into()
}

impl<F, B> Future for MetricsFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<MetricsBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.inner.as_mut().as_pin_mut() {
            None => None,
            Some(inner) => match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(p) => Some(ready_poll!(p)),
                Err(panic) => {
                    log_panic(&*panic);
                    this.inner.set(None);
                    None
                }
            },
        };
        let mut tracker = this.tracker.take();
        let Some(result) = polled else {
            return Poll::Ready(Err(internal_error(tracker)));
        };
        Poll::Ready(match result {
            Ok(res) => {
                if let Some(t) = &mut tracker {
                    t.set_status(res.status().as_u16());
                    // A handler's `Err` that actix already rendered into a 5xx response.
                    if res.status().is_server_error() && res.response().error().is_some() {
                        t.fail(FailureKind::ServiceError);
                    }
                }
                Ok(res.map_body(|_, body| MetricsBody::new(body, tracker)))
            }
            Err(e) => {
                // actix renders the error into a response after the middleware.
                let status = e.as_response_error().status_code().as_u16();
                if let Some(t) = &mut tracker {
                    t.set_status(status);
                    if status >= 500 {
                        t.fail(FailureKind::ServiceError);
                    }
                    t.complete();
                }
                Err(e)
            }
        })
    }
}

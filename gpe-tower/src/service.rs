//! The tower [`Service`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use gpe_core::http::access::{AccessLog, RequestHead};
use gpe_core::http::grpc;

use crate::future::ResponseFuture;
use crate::layer::RequestLabels;
use crate::request_body::{known_size, RequestBodyBytes};
use crate::{EndpointLabel, MetricsBody, RequestInfo, RequestMetrics, UNMATCHED};

/// Records each request's metrics; made by [`MetricsLayer`](crate::MetricsLayer).
///
/// A panic in the inner service (in `call` or in its future) is caught, counted
/// (`error_type="panic"`) and answered with an empty 500 response. The request is recorded when
/// its response body is finished or dropped.
#[derive(Debug, Clone)]
pub struct Metrics<S, E> {
    inner: S,
    metrics: RequestMetrics,
    endpoint: E,
    labels: Option<RequestLabels>,
    access_log: Option<AccessLog>,
}

impl<S, E> Metrics<S, E> {
    /// Wrap `inner`.
    pub fn new(inner: S, metrics: RequestMetrics, endpoint: E) -> Self {
        Metrics {
            inner,
            metrics,
            endpoint,
            labels: None,
            access_log: None,
        }
    }

    /// Compute the values of the families' own labels with `labels` (see
    /// [`MetricsLayer::request_labels`](crate::MetricsLayer::request_labels)).
    #[must_use]
    pub fn with_request_labels(mut self, labels: Option<RequestLabels>) -> Self {
        self.labels = labels;
        self
    }

    /// Write each request's line to `log` (see
    /// [`MetricsLayer::access_log`](crate::MetricsLayer::access_log)).
    #[must_use]
    pub fn with_access_log(mut self, log: Option<AccessLog>) -> Self {
        self.access_log = log;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The route template axum put in the request extensions, if any.
#[inline]
fn route<B>(req: &Request<B>) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(m) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Some(m.as_str());
    }
    req.extensions().get::<RouteTemplate>().map(|r| r.0)
}

/// The client's address: axum's `ConnectInfo`, else a `SocketAddr` extension.
fn remote<B>(req: &Request<B>) -> Option<std::net::IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(c) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(c.0.ip());
    }
    req.extensions()
        .get::<std::net::SocketAddr>()
        .map(std::net::SocketAddr::ip)
}

/// `HTTP/1.1`, as gunicorn's `SERVER_PROTOCOL`.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Begin the access log line of `req`.
fn access_entry<B>(log: &AccessLog, req: &Request<B>) -> gpe_core::http::access::AccessEntry {
    let head = RequestHead {
        remote: remote(req),
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        protocol: protocol(req.version()),
    };
    log.begin(&head, |name| req.headers().get(name).map(|v| v.as_bytes()))
}

/// Whether `req` is a gRPC call: a `POST` (checked first: it costs nothing) with gRPC's
/// content type (see [`gpe_core::http::grpc`]).
#[inline]
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| grpc::is_grpc(v.as_bytes()))
}

/// A route template a router without axum's `MatchedPath` can put in the request extensions
/// for the `endpoint` label (plain hyper services, custom routers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTemplate(pub &'static str);

impl<S, E, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S, E>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    E: EndpointLabel,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let tracker = if self.metrics.is_excluded(req.uri().path()) {
            None
        } else {
            let info = RequestInfo::new(req.method().as_str(), req.uri().path(), route(&req));
            let grpc = is_grpc(&req);
            // A gRPC call is labelled by its method, the path, whatever route served it.
            let endpoint = if grpc {
                Some(info.path.into())
            } else {
                self.endpoint.endpoint(&info)
            };
            let endpoint = endpoint.as_deref().unwrap_or(UNMATCHED);
            let mut t = match &self.labels {
                None => self.metrics.start(info.method, endpoint),
                Some(hook) => {
                    let values = (hook.0)(&info, req.headers());
                    self.metrics.start_labelled(info.method, endpoint, &values)
                }
            };
            if grpc {
                t.set_grpc();
            }
            // The trace of the request, for the exemplars (`traceparent` by default).
            t.trace_from(req.headers());
            if let Some(log) = &self.access_log {
                t.log_access(access_entry(log, &req));
            }
            match known_size(&req) {
                Some(n) => t.set_request_size(n),
                // Counted as read, if `count_request_body` ran in front of this layer.
                None => {
                    if let Some(c) = req.extensions().get::<RequestBodyBytes>() {
                        t.count_request_body(c.clone());
                    }
                }
            }
            Some(t)
        };
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(move || inner.call(req))) {
            Ok(future) => ResponseFuture::new(future, tracker),
            Err(panic) => {
                gpe_core::http::log_handler_panic(&*panic);
                ResponseFuture::panicked(tracker)
            }
        }
    }
}

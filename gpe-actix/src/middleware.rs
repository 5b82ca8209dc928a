//! The actix-web `Transform` and `Service`.

use std::borrow::Cow;
use std::future::{ready, Future, Ready};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready as ready_poll, Context, Poll};

use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::StatusCode;
use actix_web::Error;
use gpe_core::http::access::{AccessEntry, AccessLog, RequestHead};
use gpe_core::http::{
    log_handler_panic, DefaultEndpoint, EndpointLabel, FailureKind, RequestBodyBytes, RequestInfo,
    RequestMetrics, RequestMetricsError, RequestTracker, UNMATCHED,
};
use pin_project_lite::pin_project;

use crate::payload::CountingPayload;
use crate::MetricsBody;

/// The actix-web middleware factory: `App::new().wrap(ActixMetrics::new(metrics))`.
///
/// `E` is the endpoint label hook (see [`gpe_core::http::hooks`]); the default is the resource
/// pattern.
///
/// The middleware wraps the whole app, so it runs before actix routes the request. By default it
/// reads the matched pattern from the routed request in the response, which costs nothing, and
/// the in-flight gauge is labelled by method only (`endpoint=""`, [`gpe_core::http::UNROUTED`]); a
/// request that ends without a response (a handler panic, an error from an inner middleware) has
/// no routed request to read, and is recorded under `endpoint=""` too.
/// [`in_flight_by_endpoint`](Self::in_flight_by_endpoint) resolves the pattern before routing
/// instead.
#[derive(Debug, Clone)]
pub struct ActixMetrics<E = DefaultEndpoint> {
    metrics: RequestMetrics,
    endpoint: E,
    route_first: bool,
    labels: Option<RequestLabels>,
    access_log: Option<AccessLog>,
}

/// The hook of [`ActixMetrics::request_labels`]: the values of the labels added with
/// [`RequestMetricsBuilder::label`](gpe_core::http::RequestMetricsBuilder::label), from the
/// request.
#[derive(Clone)]
pub struct RequestLabels(Arc<dyn Fn(&ServiceRequest) -> Vec<String> + Send + Sync>);

impl std::fmt::Debug for RequestLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestLabels(..)")
    }
}

impl ActixMetrics {
    /// Record into `metrics`, with the resource pattern as endpoint.
    pub fn new(metrics: RequestMetrics) -> Self {
        ActixMetrics {
            metrics,
            endpoint: DefaultEndpoint,
            route_first: false,
            labels: None,
            access_log: None,
        }
    }

    /// Record the default families into the store of `PROMETHEUS_MULTIPROC_DIR`.
    ///
    /// # Errors
    /// As [`RequestMetrics::from_env`].
    pub fn from_env() -> Result<Self, RequestMetricsError> {
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
            route_first: self.route_first,
            labels: self.labels,
            access_log: self.access_log,
        }
    }

    /// Compute the values of the labels added with
    /// [`RequestMetricsBuilder::label`](gpe_core::http::RequestMetricsBuilder::label) from each
    /// request (its headers, say). The series cap bounds them (past it, the overflow series);
    /// the cost is the hook's own work and allocations, and one hash of the values per request.
    ///
    /// ```
    /// use actix_web::{web, App};
    /// use gpe_actix::{ActixMetrics, RequestMetrics};
    /// # fn main() -> Result<(), gpe_actix::RequestMetricsError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = RequestMetrics::builder().label("tenant")?.build(&store)?;
    /// let mw = ActixMetrics::new(metrics).request_labels(|req| {
    ///     let tenant = req.headers().get("x-tenant").and_then(|v| v.to_str().ok());
    ///     vec![tenant.unwrap_or("none").to_owned()]
    /// });
    /// let _app = App::new().wrap(mw).route("/", web::get().to(|| async { "hi" }));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn request_labels<F>(mut self, hook: F) -> Self
    where
        F: Fn(&ServiceRequest) -> Vec<String> + Send + Sync + 'static,
    {
        self.labels = Some(RequestLabels(Arc::new(hook)));
        self
    }

    /// Resolve the endpoint before the app routes the request (`HttpRequest::match_pattern()` on
    /// the unrouted request), so that the in-flight gauge is labelled by endpoint and a request
    /// that ends without a response keeps its route. This routes every request twice: 0.5 to
    /// 2 µs more per request for a route with a parameter (see `BENCHMARKS.md`).
    #[must_use]
    pub fn in_flight_by_endpoint(mut self) -> Self {
        self.route_first = true;
        self
    }

    /// Write a line per request to `log`, gunicorn's access log (see
    /// [`gpe_core::http::access`]), after the request's metrics are recorded. `%(h)s` is the
    /// peer address actix reports (`-` over a Unix-domain socket). Requests to excluded paths
    /// are not logged. [`serve`](crate::serve) sets this up from gpe-master's
    /// `--access-logfile` and `--access-logformat`.
    ///
    /// ```
    /// use actix_web::{web, App};
    /// use gpe_actix::{ActixMetrics, RequestMetrics};
    /// use gpe_core::http::access::{AccessLog, AccessLogFormat};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = RequestMetrics::builder().build(&store)?;
    /// let log = AccessLog::open(dir.path().join("access.log"), AccessLogFormat::default())?;
    /// let _app = App::new()
    ///     .wrap(ActixMetrics::new(metrics).access_log(log))
    ///     .route("/", web::get().to(|| async { "hi" }));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
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
    route_first: bool,
    labels: Option<RequestLabels>,
    access_log: Option<AccessLog>,
}

/// `HTTP/1.1`, as gunicorn's `SERVER_PROTOCOL`.
fn protocol(version: actix_web::http::Version) -> &'static str {
    use actix_web::http::Version;
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Begin the access log line of `req`.
fn access_entry(log: &AccessLog, req: &ServiceRequest) -> AccessEntry {
    let head = RequestHead {
        remote: req.peer_addr().map(|a| a.ip()),
        method: req.method().as_str(),
        path: req.path(),
        query: req.uri().query(),
        protocol: protocol(req.version()),
    };
    log.begin(&head, |name| req.headers().get(name).map(|v| v.as_bytes()))
}

impl<E: EndpointLabel> Config<E> {
    /// The endpoint label of a request to `path` whose matched pattern is `pattern`.
    fn endpoint<'a>(
        &self,
        method: &'a str,
        path: &'a str,
        pattern: Option<&'a str>,
    ) -> Option<Cow<'a, str>> {
        self.endpoint
            .endpoint(&RequestInfo::new(method, path, pattern))
    }
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
                route_first: self.route_first,
                labels: self.labels.clone(),
                access_log: self.access_log.clone(),
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
    type Future = MetricsFuture<S::Future, E>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let c = &*self.config;
        let tracker = if c.metrics.is_excluded(req.path()) {
            None
        } else {
            let method = req.method().as_str();
            let values = c
                .labels
                .as_ref()
                .map_or_else(Vec::new, |hook| (hook.0)(&req));
            let mut t = if c.route_first {
                // Routes the request once more, before the app does.
                let pattern = req.match_pattern();
                let endpoint = c.endpoint(method, req.path(), pattern.as_deref());
                let endpoint = endpoint.as_deref().unwrap_or(UNMATCHED);
                c.metrics.start_labelled(method, endpoint, &values)
            } else {
                c.metrics.start_unrouted_labelled(method, &values)
            };
            // No payload (a bodyless request, `Content-Length: 0`): size 0, no header lookup.
            if !matches!(req.parts().1, Payload::None) {
                let size = req
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                match size {
                    Some(n) => t.set_request_size(n),
                    // A body without Content-Length (chunked): count what the handler reads.
                    None => {
                        let count = RequestBodyBytes::default();
                        t.count_request_body(count.clone());
                        let inner = actix_web::HttpMessage::take_payload(&mut req);
                        let counted = CountingPayload::new(inner, count);
                        req.set_payload(counted.into_payload());
                    }
                }
            }
            if let Some(log) = &c.access_log {
                t.log_access(access_entry(log, &req));
            }
            // The trace of the request, for the exemplars (`traceparent` by default).
            t.trace_from(&ActixHeaders(req.headers()));
            Some(t)
        };
        match catch_unwind(AssertUnwindSafe(|| self.service.call(req))) {
            Ok(inner) => MetricsFuture {
                inner: Some(inner),
                tracker,
                config: self.config.clone(),
            },
            Err(panic) => {
                log_handler_panic(&*panic);
                MetricsFuture {
                    inner: None,
                    tracker,
                    config: self.config.clone(),
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`MetricsMiddleware`]: the inner future, with panics caught.
    pub struct MetricsFuture<F, E> {
        // `None` once the inner future panicked (it is never polled again).
        #[pin]
        inner: Option<F>,
        tracker: Option<RequestTracker>,
        config: Rc<Config<E>>,
    }
}

impl<F, E> std::fmt::Debug for MetricsFuture<F, E> {
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
        t.answered_after_panic();
    }
    actix_web::error::InternalError::new("handler panicked", StatusCode::INTERNAL_SERVER_ERROR)
        .into()
}

impl<F, B, E> Future for MetricsFuture<F, E>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody,
    E: EndpointLabel,
{
    type Output = Result<ServiceResponse<MetricsBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.inner.as_mut().as_pin_mut() {
            None => None,
            Some(inner) => match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(p) => Some(ready_poll!(p)),
                Err(panic) => {
                    log_handler_panic(&*panic);
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
                    let c = &**this.config;
                    if !c.route_first {
                        // Routed by now: `match_pattern()` reads the matched resource's index
                        // instead of matching the path again.
                        let req = res.request();
                        let pattern = req.match_pattern();
                        let endpoint =
                            c.endpoint(req.method().as_str(), req.path(), pattern.as_deref());
                        t.set_endpoint(endpoint.as_deref().unwrap_or(UNMATCHED));
                    }
                    t.set_status(res.status().as_u16());
                    if let Some(entry) = t.access_entry_mut() {
                        if entry.wants_response_headers() {
                            entry.capture_response_headers(|name| {
                                res.headers().get(name).map(|v| v.as_bytes())
                            });
                        }
                    }
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

/// actix-web's header map as the request-metrics engine reads headers.
struct ActixHeaders<'a>(&'a actix_web::http::header::HeaderMap);

impl gpe_core::exemplar::Headers for ActixHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.to_str().ok()
    }

    #[inline]
    fn traceparent(&self) -> Option<&str> {
        // A name made once: no parsing of the name on each request.
        static TRACEPARENT: actix_web::http::header::HeaderName =
            actix_web::http::header::HeaderName::from_static("traceparent");
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&TRACEPARENT)?.to_str().ok()
    }
}

//! The tower [`Layer`].

use std::sync::Arc;

use tower_layer::Layer;

use gpe_core::http::access::AccessLog;

use crate::{BuildError, DefaultEndpoint, Metrics, RequestInfo, RequestMetrics};

/// The hook of [`MetricsLayer::request_labels`]: the values of the labels added with
/// [`RequestMetricsBuilder::label`](crate::RequestMetricsBuilder::label), from the request.
#[derive(Clone)]
pub struct RequestLabels(
    pub(crate) Arc<dyn Fn(&RequestInfo<'_>, &http::HeaderMap) -> Vec<String> + Send + Sync>,
);

impl std::fmt::Debug for RequestLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestLabels(..)")
    }
}

/// Wraps services in [`Metrics`], recording every request into [`RequestMetrics`].
///
/// ```
/// use axum::{routing::get, Router};
/// # fn main() -> Result<(), gpe_tower::BuildError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = gpe_core::Store::open(dir.path())?;
/// let metrics = gpe_tower::RequestMetrics::builder().build(&store)?;
/// // `Router::layer` runs after routing, so the `endpoint` label is the route template.
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "hi" }))
///     .layer(gpe_tower::MetricsLayer::new(metrics));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MetricsLayer<E = DefaultEndpoint> {
    metrics: RequestMetrics,
    endpoint: E,
    labels: Option<RequestLabels>,
    access_log: Option<AccessLog>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`, with the route template as endpoint.
    pub fn new(metrics: RequestMetrics) -> Self {
        MetricsLayer {
            metrics,
            endpoint: DefaultEndpoint,
            labels: None,
            access_log: None,
        }
    }

    /// A layer with the default families in the store of `PROMETHEUS_MULTIPROC_DIR`.
    ///
    /// # Errors
    /// As [`RequestMetrics::from_env`].
    pub fn from_env() -> Result<Self, BuildError> {
        Ok(MetricsLayer::new(RequestMetrics::from_env()?))
    }
}

impl<E> MetricsLayer<E> {
    /// Replace the endpoint label hook (see [`hooks`](crate::hooks)).
    #[must_use]
    pub fn endpoint_label<E2>(self, endpoint: E2) -> MetricsLayer<E2> {
        MetricsLayer {
            metrics: self.metrics,
            endpoint,
            labels: self.labels,
            access_log: self.access_log,
        }
    }

    /// Compute the values of the labels added with
    /// [`RequestMetricsBuilder::label`](crate::RequestMetricsBuilder::label) from each request:
    /// its method, path and route, and its headers. The series cap bounds them (past it, the
    /// overflow series); the cost is the hook's own work and allocations, and one hash of the
    /// values per request.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// # fn main() -> Result<(), gpe_tower::BuildError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = gpe_tower::RequestMetrics::builder().label("tenant")?.build(&store)?;
    /// let layer = gpe_tower::MetricsLayer::new(metrics).request_labels(|_req, headers| {
    ///     let tenant = headers.get("x-tenant").and_then(|v| v.to_str().ok());
    ///     vec![tenant.unwrap_or("none").to_owned()]
    /// });
    /// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn request_labels<F>(mut self, hook: F) -> Self
    where
        F: Fn(&RequestInfo<'_>, &http::HeaderMap) -> Vec<String> + Send + Sync + 'static,
    {
        self.labels = Some(RequestLabels(Arc::new(hook)));
        self
    }

    /// Write a line per request to `log`, gunicorn's access log (see
    /// [`gpe_core::http::access`]), after the request's metrics are recorded. `%(h)s`, the
    /// client's address, comes from axum's `ConnectInfo<SocketAddr>` (serve the router with
    /// [`into_make_service_with_connect_info`](axum::Router::into_make_service_with_connect_info))
    /// or a [`SocketAddr`](std::net::SocketAddr) request extension; without either it is `-`.
    /// Requests to excluded paths are not logged. [`serve`](crate::serve) sets this up from
    /// gpe-master's `--access-logfile` and `--access-logformat`.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{routing::get, Router};
    /// use gpe_core::http::access::{AccessLog, AccessLogFormat};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = gpe_tower::RequestMetrics::builder().build(&store)?;
    /// let log = AccessLog::open(dir.path().join("access.log"), AccessLogFormat::default())?;
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hi" }))
    ///     .layer(gpe_tower::MetricsLayer::new(metrics).access_log(log));
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>());
    /// # drop(server);
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

impl<S, E: Clone> Layer<S> for MetricsLayer<E> {
    type Service = Metrics<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.metrics.clone(), self.endpoint.clone())
            .with_request_labels(self.labels.clone())
            .with_access_log(self.access_log.clone())
    }
}

//! The tower [`Layer`].

use tower_layer::Layer;

use crate::{BuildError, DefaultEndpoint, Metrics, RequestMetrics};

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
}

impl MetricsLayer {
    /// A layer recording into `metrics`, with the route template as endpoint.
    pub fn new(metrics: RequestMetrics) -> Self {
        MetricsLayer {
            metrics,
            endpoint: DefaultEndpoint,
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
        }
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
    }
}

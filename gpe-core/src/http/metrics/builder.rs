//! [`RequestMetricsBuilder`]: the prefix, buckets, series cap, worker id, excluded paths and
//! labels of the request families, and their registration in a store.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{HistogramOpts, Opts};

use super::{recent, EndpointSeries, Inner, PathMatch, RequestMetrics};
use crate::clock::Clock;
use crate::exemplar::TraceSource;
use crate::http::budget::SeriesBudget;
use crate::http::{
    RequestMetricsError, DEFAULT_DURATION_BUCKETS, DEFAULT_DURATION_NATIVE, DEFAULT_MAX_SERIES,
    DEFAULT_PREFIX, DEFAULT_SIZE_BUCKETS, OVERFLOW, UNROUTED,
};
use crate::metrics::{CounterVec, GaugeVec, HistogramVec};
use crate::native::NativeOpts;
use crate::store::{GaugeMode, Store};

/// Builds [`RequestMetrics`]: prefix, buckets, series cap, worker id and excluded paths.
///
/// ```
/// # fn main() -> Result<(), gpe_core::http::RequestMetricsError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let metrics = gpe_core::http::RequestMetrics::builder()
///     .duration_buckets(vec![0.005, 0.05, 0.5])?
///     .exclude_path("/health")
///     .exclude_path("/static/*")
///     .max_series(500)?
///     .build(&store)?;
/// assert!(metrics.is_excluded("/static/app.js"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequestMetricsBuilder {
    prefix: String,
    duration_buckets: Vec<f64>,
    duration_native: Option<NativeOpts>,
    size_buckets: Vec<f64>,
    max_series: usize,
    worker_id: Option<String>,
    exclude: Vec<PathMatch>,
    labels: Vec<String>,
    traces: TraceSource,
}

impl Default for RequestMetricsBuilder {
    fn default() -> Self {
        RequestMetricsBuilder {
            prefix: DEFAULT_PREFIX.to_owned(),
            duration_buckets: DEFAULT_DURATION_BUCKETS.to_vec(),
            duration_native: Some(DEFAULT_DURATION_NATIVE),
            size_buckets: DEFAULT_SIZE_BUCKETS.to_vec(),
            max_series: DEFAULT_MAX_SERIES,
            worker_id: None,
            exclude: Vec::new(),
            labels: Vec::new(),
            traces: TraceSource::default(),
        }
    }
}

fn check_buckets(what: &'static str, buckets: &[f64]) -> Result<(), RequestMetricsError> {
    let ok = !buckets.is_empty()
        && buckets.iter().all(|b| b.is_finite())
        && buckets.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(RequestMetricsError::InvalidBuckets {
            what,
            buckets: buckets.to_vec(),
        })
    }
}

impl RequestMetricsBuilder {
    /// The metric name prefix (default `gunicorn_worker_`). It must be a valid metric name start
    /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and may be empty.
    ///
    /// # Errors
    /// [`RequestMetricsError::InvalidPrefix`] for other characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Result<Self, RequestMetricsError> {
        let prefix = prefix.into();
        let ok = prefix.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if !ok {
            return Err(RequestMetricsError::InvalidPrefix(prefix));
        }
        self.prefix = prefix;
        Ok(self)
    }

    /// The native buckets of the request duration histogram, beside its classic ones (see
    /// [`native`](crate::native)); `None` turns them off. Default: schema 3 (8 buckets per power
    /// of two, each 9 % wider than the one before), client_golang's zero bucket, 160 buckets at
    /// most. A Prometheus started with `--enable-feature=native-histograms` reads them; others
    /// keep reading the classic buckets.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let finer = gpe_core::native::NativeOpts::new(5)?;
    /// let builder = gpe_core::http::RequestMetrics::builder().duration_native(Some(finer));
    /// let off = gpe_core::http::RequestMetrics::builder().duration_native(None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn duration_native(mut self, native: Option<NativeOpts>) -> Self {
        self.duration_native = native;
        self
    }

    /// Where a request's trace comes from: its exemplar goes on the duration bucket (classic
    /// and native) and the requests counter it was counted in (see
    /// [`exemplar`](crate::exemplar)). Default: the W3C `traceparent` header of sampled traces;
    /// [`TraceSource::Off`] turns exemplars off (and saves the header lookup on every request).
    ///
    /// ```
    /// use gpe_core::exemplar::{TraceContext, TraceSource};
    /// // A trace id from another header, for example a load balancer's.
    /// let source = TraceSource::Custom(std::sync::Arc::new(|headers| {
    ///     TraceContext::from_traceparent(headers.header("x-my-traceparent")?)
    /// }));
    /// let builder = gpe_core::http::RequestMetrics::builder().exemplars(source);
    /// ```
    pub fn exemplars(mut self, source: TraceSource) -> Self {
        self.traces = source;
        self
    }

    /// The request duration buckets in seconds (default [`DEFAULT_DURATION_BUCKETS`]).
    ///
    /// # Errors
    /// [`RequestMetricsError::InvalidBuckets`] unless non-empty, finite and strictly increasing.
    pub fn duration_buckets(mut self, buckets: Vec<f64>) -> Result<Self, RequestMetricsError> {
        check_buckets("duration", &buckets)?;
        self.duration_buckets = buckets;
        Ok(self)
    }

    /// The request and response size buckets in bytes (default [`DEFAULT_SIZE_BUCKETS`]).
    ///
    /// # Errors
    /// [`RequestMetricsError::InvalidBuckets`] unless non-empty, finite and strictly increasing.
    pub fn size_buckets(mut self, buckets: Vec<f64>) -> Result<Self, RequestMetricsError> {
        check_buckets("size", &buckets)?;
        self.size_buckets = buckets;
        Ok(self)
    }

    /// The per-family cap on label combinations in this process (default
    /// [`DEFAULT_MAX_SERIES`]). Past it, new combinations are recorded under
    /// `endpoint="<overflow>"` (method and status are kept: both are bounded sets).
    ///
    /// # Errors
    /// [`RequestMetricsError::ZeroSeriesCap`] for 0.
    pub fn max_series(mut self, max: usize) -> Result<Self, RequestMetricsError> {
        if max == 0 {
            return Err(RequestMetricsError::ZeroSeriesCap);
        }
        self.max_series = max;
        Ok(self)
    }

    /// The `worker_id` label value (default: `GPE_WORKER_ID` from the environment, set by
    /// gpe-master, else `0`).
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// The `worker_id` label value unless [`worker_id`](Self::worker_id) set one (for a server
    /// that knows its worker's id, as `gpe_tower::serve` does).
    #[must_use]
    pub fn worker_id_or(mut self, id: String) -> Self {
        if self.worker_id.is_none() {
            self.worker_id = Some(id);
        }
        self
    }

    /// Do not record requests to `path`: an exact path, or a prefix when it ends in `*`
    /// (`/static/*`).
    #[must_use]
    pub fn exclude_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.exclude.push(match path.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_owned()),
            None => PathMatch::Exact(path),
        });
        self
    }

    /// Add a label of your own to every request family, whose value an adapter computes from
    /// each request (a tenant, an API version: see gpe-tower's `MetricsLayer::request_labels`
    /// and gpe-actix's `ActixMetrics::request_labels`), in the order the labels are added.
    ///
    /// The series cap ([`max_series`](Self::max_series)) counts every combination, these values
    /// included: past it, new combinations go to the overflow series, where `endpoint` and each
    /// of these labels is `<overflow>`. Keep the set of values small and fixed. The cost: one
    /// hash of the endpoint and the values per request (instead of the endpoint alone), and
    /// the allocations of the adapter's hook.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = gpe_core::http::RequestMetrics::builder()
    ///     .worker_id("1")
    ///     .label("tenant")?
    ///     .build(&store)?;
    /// let mut t = metrics.start_labelled("GET", "/users/{id}", &["acme"]);
    /// t.set_status(200);
    /// t.complete();
    /// drop(t);
    /// let text = gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir.path()).gather())?;
    /// assert!(text.contains(
    ///     r#"gunicorn_worker_requests_total{endpoint="/users/{id}",method="GET",status="200",tenant="acme",worker_id="1"} 1"#
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`RequestMetricsError::InvalidLabel`] for a name that is not a label name, starts with
    /// `__`, is given twice, or is one the families already have (`worker_id`, `method`,
    /// `endpoint`, `status`, `error_type`, `le`, `pid`).
    pub fn label(mut self, name: impl Into<String>) -> Result<Self, RequestMetricsError> {
        let name = name.into();
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
        const TAKEN: [&str; 7] = [
            "worker_id",
            "method",
            "endpoint",
            "status",
            "error_type",
            "le",
            "pid",
        ];
        if !valid
            || name.is_empty()
            || name.starts_with("__")
            || TAKEN.contains(&name.as_str())
            || self.labels.contains(&name)
        {
            return Err(RequestMetricsError::InvalidLabel(name));
        }
        self.labels.push(name);
        Ok(self)
    }

    /// Register the families in `store`.
    ///
    /// # Errors
    /// When the store rejects a family (for example, the same name registered with another
    /// shape) or cannot write its files.
    pub fn build(self, store: &Store) -> Result<RequestMetrics, RequestMetricsError> {
        let p = &self.prefix;
        let own: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        let with_own = |base: &[&'static str]| -> Vec<&str> {
            base.iter().copied().chain(own.iter().copied()).collect()
        };
        let labels = with_own(&["worker_id", "method", "endpoint", "status"]);
        let failure_labels = with_own(&["worker_id", "method", "endpoint", "status", "error_type"]);
        let endpoint_labels = with_own(&["worker_id", "method", "endpoint"]);
        let counter = |name: &str, help: &str, labels: &[&str]| {
            CounterVec::new(Opts::new(format!("{p}{name}"), help), labels, store)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64], native: Option<NativeOpts>| {
            let opts = HistogramOpts::new(format!("{p}{name}"), help).buckets(buckets.to_vec());
            match native {
                Some(native) => HistogramVec::with_native(opts, native, &labels, store),
                None => HistogramVec::new(opts, &labels, store),
            }
        };
        let worker_id = self
            .worker_id
            .unwrap_or_else(crate::worker::env::worker_id_label);
        let inner = Inner {
            requests: counter("requests_total", "Total HTTP requests handled.", &labels)?,
            duration: histogram(
                "request_duration_seconds",
                "HTTP request duration in seconds, until the response body was sent.",
                &self.duration_buckets,
                self.duration_native,
            )?,
            request_size: histogram(
                "request_size_bytes",
                "HTTP request body size in bytes (from Content-Length).",
                &self.size_buckets,
                None,
            )?,
            response_size: histogram(
                "response_size_bytes",
                "HTTP response body size in bytes, as sent.",
                &self.size_buckets,
                None,
            )?,
            in_flight: GaugeVec::new(
                Opts::new(format!("{p}requests_in_flight"), "HTTP requests in flight."),
                &endpoint_labels,
                GaugeMode::LiveSum,
                store,
            )?,
            failed: counter(
                "failed_requests_total",
                "Failed HTTP requests (5xx responses, service errors, panics, body errors).",
                &failure_labels,
            )?,
            error_handling: counter(
                "error_handling_total",
                "HTTP request failures handled by the stack (5xx responses, service errors, panics, body errors).",
                &failure_labels,
            )?,
            disconnects: counter(
                "client_disconnects_total",
                "Requests whose client went away before the response body was complete.",
                &endpoint_labels,
            )?,
            capped: CounterVec::new(
                Opts::new(
                    crate::health::SERIES_CAPPED,
                    "Requests whose label combination a series cap refused (recorded under <overflow>), by family.",
                ),
                &["family"],
                store,
            )?,
            capped_family: format!("{p}requests_total"),
            capped_handle: OnceLock::new(),
            worker_id,
            series: SeriesBudget::new(self.max_series),
            endpoints: RwLock::new(HashMap::default()),
            overflow: Arc::new(EndpointSeries::with_values(
                OVERFLOW,
                own.iter().map(|_| OVERFLOW.into()).collect(),
            )),
            unmatched: OnceLock::new(),
            unrouted: EndpointSeries::with_values(
                UNROUTED,
                own.iter().map(|_| UNROUTED.into()).collect(),
            ),
            labels: own.len(),
            exclude: self.exclude,
            clock: Clock::new(),
            id: recent::next_id(),
            traces: self.traces,
        };
        Ok(RequestMetrics {
            inner: Arc::new(inner),
        })
    }

    /// [`build`](Self::build) into [`Store::from_env`] (`PROMETHEUS_MULTIPROC_DIR`).
    ///
    /// # Errors
    /// As [`build`](Self::build), or when the store directory cannot be opened.
    pub fn build_from_env(self) -> Result<RequestMetrics, RequestMetricsError> {
        let store = Store::from_env()?;
        self.build(&store)
    }
}

//! The request metric families, shared by every framework adapter (gpe-tower, gpe-actix).
//!
//! [`RequestMetrics`] owns the families in a gpe-core [`Store`]; a [`RequestTracker`] follows one
//! request and records everything when it is dropped, so a request is counted exactly once
//! whatever happens to it (response, error, panic, client disconnect).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use foldhash::fast::RandomState;
use gpe_core::clock::{Clock, Stamp};
use gpe_core::prometheus::{HistogramOpts, Opts};
use gpe_core::{Counter, CounterVec, Gauge, GaugeMode, GaugeVec, Histogram, HistogramVec, Store};

use crate::budget::SeriesBudget;
use crate::request_body::RequestBodyBytes;
use crate::BuildError;

/// The duration buckets of the Python exporter, in seconds (`+Inf` is added).
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The size buckets of the Python exporter, in bytes: 1 KiB to 4 MiB (`+Inf` is added).
pub const DEFAULT_SIZE_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];

/// The metric name prefix of the Python exporter.
pub const DEFAULT_PREFIX: &str = "gunicorn_worker_";

/// The `endpoint` value of requests that matched no route.
pub const UNMATCHED: &str = "<unmatched>";

/// The `endpoint` value of a request whose route is not known: started before routing
/// ([`RequestMetrics::start_unrouted`]), its in-flight gauge, and the request itself if it ends
/// before its route is set (a panic). Empty, which Prometheus stores as no label at all.
pub const UNROUTED: &str = "";

/// The `endpoint` value that series go to once a family reaches its series cap.
pub const OVERFLOW: &str = "<overflow>";

/// The default per-family series cap (label combinations of one process).
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// The `status` value of a request whose client went away before the response was ready
/// (nginx's "client closed request").
pub const STATUS_CLIENT_CLOSED: u16 = 499;

/// The `status` value of a request that ended with an error and no response at all.
pub const STATUS_NO_RESPONSE: &str = "none";

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// The `method` label index of an HTTP method; extension methods share `OTHER`, so a client
/// sending made-up methods cannot grow the series count.
fn method_index(method: &str) -> u8 {
    METHODS[..9].iter().position(|m| *m == method).unwrap_or(9) as u8
}

/// Why a request counts as failed (the `error_type` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The service returned a 5xx response (`error_type="status_5xx"`).
    ServerError,
    /// The service returned an error instead of a response (`error_type="service_error"`).
    ServiceError,
    /// The service panicked; the middleware answered 500 (`error_type="panic"`).
    Panic,
    /// The response body failed while streaming (`error_type="body_error"`).
    BodyError,
}

impl FailureKind {
    /// The `error_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ServerError => "status_5xx",
            FailureKind::ServiceError => "service_error",
            FailureKind::Panic => "panic",
            FailureKind::BodyError => "body_error",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds [`RequestMetrics`]: prefix, buckets, series cap, worker id and excluded paths.
///
/// ```
/// # fn main() -> Result<(), gpe_tower::BuildError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let metrics = gpe_tower::RequestMetrics::builder()
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
    size_buckets: Vec<f64>,
    max_series: usize,
    worker_id: Option<String>,
    exclude: Vec<PathMatch>,
}

impl Default for RequestMetricsBuilder {
    fn default() -> Self {
        RequestMetricsBuilder {
            prefix: DEFAULT_PREFIX.to_owned(),
            duration_buckets: DEFAULT_DURATION_BUCKETS.to_vec(),
            size_buckets: DEFAULT_SIZE_BUCKETS.to_vec(),
            max_series: DEFAULT_MAX_SERIES,
            worker_id: None,
            exclude: Vec::new(),
        }
    }
}

fn check_buckets(what: &'static str, buckets: &[f64]) -> Result<(), BuildError> {
    let ok = !buckets.is_empty()
        && buckets.iter().all(|b| b.is_finite())
        && buckets.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(BuildError::InvalidBuckets {
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
    /// [`BuildError::InvalidPrefix`] for other characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Result<Self, BuildError> {
        let prefix = prefix.into();
        let ok = prefix.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if !ok {
            return Err(BuildError::InvalidPrefix(prefix));
        }
        self.prefix = prefix;
        Ok(self)
    }

    /// The request duration buckets in seconds (default [`DEFAULT_DURATION_BUCKETS`]).
    ///
    /// # Errors
    /// [`BuildError::InvalidBuckets`] unless non-empty, finite and strictly increasing.
    pub fn duration_buckets(mut self, buckets: Vec<f64>) -> Result<Self, BuildError> {
        check_buckets("duration", &buckets)?;
        self.duration_buckets = buckets;
        Ok(self)
    }

    /// The request and response size buckets in bytes (default [`DEFAULT_SIZE_BUCKETS`]).
    ///
    /// # Errors
    /// [`BuildError::InvalidBuckets`] unless non-empty, finite and strictly increasing.
    pub fn size_buckets(mut self, buckets: Vec<f64>) -> Result<Self, BuildError> {
        check_buckets("size", &buckets)?;
        self.size_buckets = buckets;
        Ok(self)
    }

    /// The per-family cap on label combinations in this process (default
    /// [`DEFAULT_MAX_SERIES`]). Past it, new combinations are recorded under
    /// `endpoint="<overflow>"` (method and status are kept: both are bounded sets).
    ///
    /// # Errors
    /// [`BuildError::ZeroSeriesCap`] for 0.
    pub fn max_series(mut self, max: usize) -> Result<Self, BuildError> {
        if max == 0 {
            return Err(BuildError::ZeroSeriesCap);
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

    /// The `worker_id` label value unless one was set (the serve module's worker id).
    #[cfg(feature = "axum")]
    pub(crate) fn worker_id_or(mut self, id: String) -> Self {
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

    /// Register the families in `store`.
    ///
    /// # Errors
    /// When the store rejects a family (for example, the same name registered with another
    /// shape) or cannot write its files.
    pub fn build(self, store: &Store) -> Result<RequestMetrics, BuildError> {
        let p = &self.prefix;
        let labels = ["worker_id", "method", "endpoint", "status"];
        let failure_labels = ["worker_id", "method", "endpoint", "status", "error_type"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            CounterVec::new(Opts::new(format!("{p}{name}"), help), labels, store)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(format!("{p}{name}"), help).buckets(buckets.to_vec()),
                &labels,
                store,
            )
        };
        let worker_id = self
            .worker_id
            .unwrap_or_else(gpe_core::worker::env::worker_id_label);
        let inner = Inner {
            requests: counter("requests_total", "Total HTTP requests handled.", &labels)?,
            duration: histogram(
                "request_duration_seconds",
                "HTTP request duration in seconds, until the response body was sent.",
                &self.duration_buckets,
            )?,
            request_size: histogram(
                "request_size_bytes",
                "HTTP request body size in bytes (from Content-Length).",
                &self.size_buckets,
            )?,
            response_size: histogram(
                "response_size_bytes",
                "HTTP response body size in bytes, as sent.",
                &self.size_buckets,
            )?,
            in_flight: GaugeVec::new(
                Opts::new(format!("{p}requests_in_flight"), "HTTP requests in flight."),
                &["worker_id", "method", "endpoint"],
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
                &["worker_id", "method", "endpoint"],
            )?,
            worker_id,
            series: SeriesBudget::new(self.max_series),
            endpoints: RwLock::new(HashMap::default()),
            overflow: Arc::new(EndpointSeries::new(OVERFLOW)),
            unmatched: OnceLock::new(),
            unrouted: EndpointSeries::new(UNROUTED),
            exclude: self.exclude,
            clock: Clock::new(),
        };
        Ok(RequestMetrics {
            inner: Arc::new(inner),
        })
    }

    /// [`build`](Self::build) into [`Store::from_env`] (`PROMETHEUS_MULTIPROC_DIR`).
    ///
    /// # Errors
    /// As [`build`](Self::build), or when the store directory cannot be opened.
    pub fn build_from_env(self) -> Result<RequestMetrics, BuildError> {
        let store = Store::from_env()?;
        self.build(&store)
    }
}

#[derive(Debug, Clone)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// The request metric families of one process, cheap to clone (an `Arc`).
///
/// Families (with the default prefix `gunicorn_worker_`):
///
/// | family | type | labels |
/// |---|---|---|
/// | `requests_total` | counter | `worker_id`, `method`, `endpoint`, `status` |
/// | `request_duration_seconds` | histogram | same |
/// | `request_size_bytes` | histogram | same |
/// | `response_size_bytes` | histogram | same |
/// | `requests_in_flight` | gauge (`livesum`) | `worker_id`, `method`, `endpoint` |
/// | `failed_requests_total` | counter | same four + `error_type` |
/// | `error_handling_total` | counter | same four + `error_type` |
/// | `client_disconnects_total` | counter | `worker_id`, `method`, `endpoint` |
///
/// `status` is the response status code, `499` when the client went away before the response,
/// and `none` when the service returned an error instead of a response. `endpoint` is
/// [`UNROUTED`] (empty) in the in-flight gauge of requests started with
/// [`start_unrouted`](RequestMetrics::start_unrouted), as gpe-actix does by default, and in every
/// family for such a request that ended before its route was known.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: CounterVec,
    duration: HistogramVec,
    request_size: HistogramVec,
    response_size: HistogramVec,
    in_flight: GaugeVec,
    failed: CounterVec,
    error_handling: CounterVec,
    disconnects: CounterVec,
    worker_id: String,
    /// Label combinations created so far (the largest family's series count), under the cap.
    series: SeriesBudget,
    /// Looked up on every request: a fast hash (foldhash, randomly seeded), not SipHash.
    endpoints: RwLock<HashMap<Box<str>, Arc<EndpointSeries>, RandomState>>,
    overflow: Arc<EndpointSeries>,
    unmatched: OnceLock<Arc<EndpointSeries>>,
    /// The series of requests whose route is not known (yet): held here, not in an `Arc`, so
    /// that starting such a request clones nothing.
    unrouted: EndpointSeries,
    exclude: Vec<PathMatch>,
    /// Times requests (see [`gpe_core::clock`]).
    clock: Clock,
}

/// The cached handles of one endpoint.
#[derive(Debug)]
struct EndpointSeries {
    endpoint: Box<str>,
    in_flight: [OnceLock<Option<Gauge>>; 10],
    /// The handles of status 200 per method: the common case, read without a lock.
    ok: [OnceLock<Arc<Done>>; 10],
    /// `(method, status) -> handles`; a short list, scanned.
    done: RwLock<Vec<(u8, u16, Arc<Done>)>>,
}

impl EndpointSeries {
    fn new(endpoint: &str) -> Self {
        EndpointSeries {
            endpoint: endpoint.into(),
            in_flight: Default::default(),
            ok: Default::default(),
            done: RwLock::new(Vec::new()),
        }
    }
}

/// The handles a finished request updates.
#[derive(Debug)]
struct Done {
    requests: Counter,
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

/// Status 0 in the cache stands for "no response" (label `none`).
fn status_label(status: u16) -> String {
    if status == 0 {
        STATUS_NO_RESPONSE.to_owned()
    } else {
        status.to_string()
    }
}

impl RequestMetrics {
    /// A builder with the defaults.
    pub fn builder() -> RequestMetricsBuilder {
        RequestMetricsBuilder::default()
    }

    /// The families with the defaults, in [`Store::from_env`].
    ///
    /// # Errors
    /// As [`RequestMetricsBuilder::build_from_env`].
    pub fn from_env() -> Result<RequestMetrics, BuildError> {
        RequestMetricsBuilder::default().build_from_env()
    }

    /// The `worker_id` label value.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Whether requests to `path` are excluded from the metrics.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.inner.exclude.iter().any(|m| match m {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        })
    }

    /// How many label combinations the request families hold in this process (not counting
    /// the overflow series).
    pub fn series_count(&self) -> usize {
        self.inner.series.used()
    }

    /// Start tracking a request to `endpoint` (a route template, [`UNMATCHED`] or a value from a
    /// label hook). The in-flight gauge goes up now; everything else is recorded when the
    /// returned tracker is dropped.
    pub fn start(&self, method: &str, endpoint: &str) -> RequestTracker {
        let series = self.endpoint_series(endpoint);
        self.start_in(method_index(method), Some(series))
    }

    /// Start tracking a request whose endpoint is not known yet: an actix-web middleware runs
    /// before the app routes the request, and resolving the route template there would route it
    /// twice. The in-flight gauge goes up under `endpoint=""` ([`UNROUTED`]); call
    /// [`RequestTracker::set_endpoint`] once the route is known, else the request is recorded
    /// under `endpoint=""` too.
    ///
    /// ```
    /// # fn main() -> Result<(), gpe_tower::BuildError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = gpe_tower::RequestMetrics::builder().build(&store)?;
    /// let mut t = metrics.start_unrouted("GET");
    /// // ... the framework routes the request and runs the handler ...
    /// t.set_endpoint("/users/{id}");
    /// t.set_status(200);
    /// t.complete();
    /// assert_eq!(t.endpoint(), "/users/{id}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_unrouted(&self, method: &str) -> RequestTracker {
        self.start_in(method_index(method), None)
    }

    /// Raise the in-flight gauge of `series` (`None`: the unrouted one) and start the clock.
    fn start_in(&self, method: u8, series: Option<Arc<EndpointSeries>>) -> RequestTracker {
        let gauge_series = series.as_deref().unwrap_or(&self.inner.unrouted);
        if let Some(g) = self.in_flight_gauge(gauge_series, method) {
            g.inc();
        }
        RequestTracker {
            metrics: self.clone(),
            series,
            in_flight: InFlight::Series,
            method,
            start: self.inner.clock.now(),
            request_size: RequestSize::Known(0),
            response_size: 0,
            status: None,
            failure: None,
            stage: Stage::Pending,
        }
    }

    /// The in-flight gauge of `(series, method)`, made on first use.
    fn in_flight_gauge<'s>(&self, series: &'s EndpointSeries, method: u8) -> Option<&'s Gauge> {
        series.in_flight[usize::from(method)]
            .get_or_init(|| {
                self.log_err(self.inner.in_flight.with_label_values(&[
                    &self.inner.worker_id,
                    METHODS[usize::from(method)],
                    &series.endpoint,
                ]))
            })
            .as_ref()
    }

    fn log_err<T>(&self, r: Result<T, gpe_core::Error>) -> Option<T> {
        r.map_err(|e| tracing::warn!(error = %e, "gpe-tower: cannot record a request metric"))
            .ok()
    }

    fn endpoint_series(&self, endpoint: &str) -> Arc<EndpointSeries> {
        let i = &self.inner;
        if endpoint == UNMATCHED {
            return i
                .unmatched
                .get_or_init(|| Arc::new(EndpointSeries::new(UNMATCHED)))
                .clone();
        }
        if let Some(s) = i
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
        {
            return s.clone();
        }
        let mut map = i.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(endpoint) {
            return s.clone();
        }
        // An endpoint costs at least one combination; refuse new ones once the cap is reached.
        if map.len() >= i.series.max() || i.series.is_exhausted() {
            return i.overflow.clone();
        }
        let s = Arc::new(EndpointSeries::new(endpoint));
        map.insert(endpoint.into(), s.clone());
        s
    }

    /// The handles of `(series, method, status)`, or of the overflow series past the cap; with
    /// the series they belong to.
    fn done<'s>(
        &'s self,
        series: &'s EndpointSeries,
        method: u8,
        status: u16,
    ) -> Option<(Arc<Done>, &'s EndpointSeries)> {
        let find = |v: &[(u8, u16, Arc<Done>)]| {
            v.iter()
                .find(|(m, s, _)| *m == method && *s == status)
                .map(|(_, _, d)| d.clone())
        };
        if let Some(d) = find(&series.done.read().unwrap_or_else(|p| p.into_inner())) {
            return Some((d, series));
        }
        let is_overflow = std::ptr::eq(series, &*self.inner.overflow);
        if !is_overflow && !self.inner.series.reserve() {
            return self.done(&self.inner.overflow, method, status);
        }
        let mut done = series.done.write().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = find(&done) {
            if !is_overflow {
                // Lost a race: give the reservation back.
                self.inner.series.release();
            }
            return Some((d, series));
        }
        let i = &self.inner;
        let status_s = status_label(status);
        let values = [
            i.worker_id.as_str(),
            METHODS[usize::from(method)],
            &series.endpoint,
            &status_s,
        ];
        let d = Arc::new(Done {
            requests: self.log_err(i.requests.with_label_values(&values))?,
            duration: self.log_err(i.duration.with_label_values(&values))?,
            request_size: self.log_err(i.request_size.with_label_values(&values))?,
            response_size: self.log_err(i.response_size.with_label_values(&values))?,
        });
        done.push((method, status, d.clone()));
        Some((d, series))
    }

    fn record(&self, t: &RequestTracker) {
        let i = &self.inner;
        let method = METHODS[usize::from(t.method)];
        let disconnected = matches!(t.stage, Stage::Pending | Stage::Responded);
        let status = match (t.status, t.failure) {
            (Some(s), _) => s,
            (None, Some(_)) => 0,
            (None, None) => STATUS_CLIENT_CLOSED,
        };
        let m = usize::from(t.method);
        let own = t.series();
        let fast = if status == 200 { own.ok[m].get() } else { None };
        let slow;
        let (done, series): (Option<&Done>, &EndpointSeries) = match fast {
            Some(d) => (Some(d), own),
            None => match self.done(own, t.method, status) {
                Some((d, used)) => {
                    if status == 200 && std::ptr::eq(used, own) {
                        let _ = own.ok[m].set(d.clone());
                    }
                    slow = d;
                    // The combination may have gone to the overflow series.
                    (Some(&*slow), used)
                }
                None => (None, own),
            },
        };
        if let Some(d) = done {
            d.requests.inc();
            d.duration.observe(t.elapsed().as_secs_f64());
            let request_size = match &t.request_size {
                RequestSize::Known(n) => *n,
                RequestSize::Counted(c) => c.get(),
            };
            d.request_size.observe(request_size as f64);
            d.response_size.observe(t.response_size as f64);
        }
        // Failures and disconnects are rare: plain label lookups are fine there.
        let endpoint: &str = &series.endpoint;
        if let Some(kind) = t.failure {
            let status = status_label(status);
            let values = [&i.worker_id, method, endpoint, &status, kind.as_str()];
            if let Some(c) = self.log_err(i.failed.with_label_values(&values)) {
                c.inc();
            }
            if let Some(c) = self.log_err(i.error_handling.with_label_values(&values)) {
                c.inc();
            }
        }
        if disconnected && !(t.failure.is_some() && t.status.is_none()) {
            if let Some(c) =
                self.log_err(
                    i.disconnects
                        .with_label_values(&[&i.worker_id, method, endpoint]),
                )
            {
                c.inc();
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No response yet.
    Pending,
    /// The response head is out; the body is streaming.
    Responded,
    /// The body is complete (or there was nothing left to send).
    Complete,
}

/// Follows one request; records it in its families when dropped.
///
/// Framework adapters call [`set_status`](Self::set_status) when the response head is ready,
/// [`add_response_bytes`](Self::add_response_bytes) per body chunk and
/// [`complete`](Self::complete) when the body is finished, then drop the tracker. Dropped
/// without a status, the request is recorded with status `499` and counted as a client
/// disconnect; dropped after a status but before `complete`, it keeps its status and is counted as
/// a client disconnect.
///
/// ```
/// # fn main() -> Result<(), gpe_tower::BuildError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = gpe_core::Store::open(dir.path())?;
/// let metrics = gpe_tower::RequestMetrics::builder().build(&store)?;
/// let mut t = metrics.start("GET", "/users/{id}");
/// t.set_status(200);
/// t.add_response_bytes(512);
/// t.complete();
/// drop(t); // recorded here
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RequestTracker {
    metrics: RequestMetrics,
    /// The series the request is recorded under; `None`: the unrouted one, which `metrics` holds.
    series: Option<Arc<EndpointSeries>>,
    /// Where the in-flight gauge went up.
    in_flight: InFlight,
    method: u8,
    start: Stamp,
    request_size: RequestSize,
    response_size: u64,
    status: Option<u16>,
    failure: Option<FailureKind>,
    stage: Stage,
}

/// Where a request's in-flight gauge went up.
#[derive(Debug)]
enum InFlight {
    /// Under the series the request is recorded under.
    Series,
    /// Under the unrouted series (started unrouted; the endpoint was set since).
    Unrouted,
    /// Under another series (the endpoint was changed since).
    Other(Arc<EndpointSeries>),
}

/// The request body size.
#[derive(Debug)]
enum RequestSize {
    /// Known up front (`Content-Length`, an exact size hint) or set by the adapter.
    Known(u64),
    /// Counted as the body is read (a body without a known size), read when recorded.
    Counted(RequestBodyBytes),
}

impl RequestTracker {
    /// The request body size in bytes (from `Content-Length` or an exact size hint).
    pub fn set_request_size(&mut self, bytes: u64) {
        self.request_size = RequestSize::Known(bytes);
    }

    /// The response status is known (the head is ready). A 5xx status marks the request failed
    /// ([`FailureKind::ServerError`]) unless a failure was already recorded.
    pub fn set_status(&mut self, status: u16) {
        self.status = Some(status);
        if status >= 500 && self.failure.is_none() {
            self.failure = Some(FailureKind::ServerError);
        }
        if self.stage == Stage::Pending {
            self.stage = Stage::Responded;
        }
    }

    /// Record a failure (the first one recorded wins).
    pub fn fail(&mut self, kind: FailureKind) {
        if self.failure.is_none() || self.failure == Some(FailureKind::ServerError) {
            self.failure = Some(kind);
        }
    }

    /// Take the request size from `count` (the bytes read of a body sent without a known size)
    /// when the request is recorded, instead of a size set up front.
    pub fn count_request_body(&mut self, count: RequestBodyBytes) {
        self.request_size = RequestSize::Counted(count);
    }

    /// Add `n` bytes to the response size.
    pub fn add_response_bytes(&mut self, n: u64) {
        self.response_size = self.response_size.saturating_add(n);
    }

    /// The request is over as far as the service is concerned (the body is complete, or there is
    /// no response because of an error): dropping the tracker is then not a client disconnect.
    pub fn complete(&mut self) {
        self.stage = Stage::Complete;
    }

    /// Record the request under `endpoint` (a route template, [`UNMATCHED`] or a value from a
    /// label hook) instead of the one it was started with. The in-flight gauge keeps the label
    /// it went up under, so that it comes down where it went up.
    pub fn set_endpoint(&mut self, endpoint: &str) {
        if *self.series().endpoint == *endpoint {
            return;
        }
        let series = self.metrics.endpoint_series(endpoint);
        let old = self.series.replace(series);
        if matches!(self.in_flight, InFlight::Series) {
            self.in_flight = match old {
                Some(old) => InFlight::Other(old),
                None => InFlight::Unrouted,
            };
        }
    }

    /// The endpoint label this request is recorded under (may become `<overflow>` at the end).
    pub fn endpoint(&self) -> &str {
        &self.series().endpoint
    }

    /// The series the request is recorded under.
    fn series(&self) -> &EndpointSeries {
        self.series
            .as_deref()
            .unwrap_or(&self.metrics.inner.unrouted)
    }

    /// Time since [`RequestMetrics::start`].
    pub fn elapsed(&self) -> Duration {
        self.metrics.inner.clock.elapsed(self.start)
    }
}

impl Drop for RequestTracker {
    fn drop(&mut self) {
        let gauge_series = match &self.in_flight {
            InFlight::Series => self.series(),
            InFlight::Unrouted => &self.metrics.inner.unrouted,
            InFlight::Other(s) => s,
        };
        if let Some(Some(g)) = gauge_series.in_flight[usize::from(self.method)].get() {
            g.dec();
        }
        self.metrics.record(self);
    }
}

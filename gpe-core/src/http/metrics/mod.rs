//! [`RequestMetrics`]: the request families of one process, their cached series, and how a
//! finished request is recorded; [`RequestMetricsBuilder`] sets them up.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use foldhash::fast::RandomState;
use prometheus::{HistogramOpts, Opts};

use super::budget::SeriesBudget;
use super::grpc::{self, GrpcCode};
use super::tracker::{InFlight, RequestSize, RequestTracker, Stage};
use super::{
    RequestMetricsError, DEFAULT_DURATION_BUCKETS, DEFAULT_MAX_SERIES, DEFAULT_PREFIX,
    DEFAULT_SIZE_BUCKETS, OVERFLOW, STATUS_CLIENT_CLOSED, STATUS_NO_RESPONSE, UNMATCHED, UNROUTED,
};
use crate::clock::Clock;
use crate::metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec};
use crate::store::{GaugeMode, Store};

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// The `method` label index of an HTTP method; extension methods share `OTHER`, so a client
/// sending made-up methods cannot grow the series count.
fn method_index(method: &str) -> u8 {
    METHODS[..9].iter().position(|m| *m == method).unwrap_or(9) as u8
}

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
    size_buckets: Vec<f64>,
    max_series: usize,
    worker_id: Option<String>,
    exclude: Vec<PathMatch>,
    labels: Vec<String>,
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
            labels: Vec::new(),
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
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(format!("{p}{name}"), help).buckets(buckets.to_vec()),
                &labels,
                store,
            )
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

#[derive(Debug, Clone)]
pub(super) enum PathMatch {
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
/// `none` when the service returned an error instead of a response, and the gRPC status's name
/// (`OK`, `NOT_FOUND`, …) for a gRPC call (see [`grpc`](super::grpc)). `endpoint` is
/// [`UNROUTED`] (empty) in the in-flight gauge of requests started with
/// [`start_unrouted`](RequestMetrics::start_unrouted), as gpe-actix does by default, and in every
/// family for such a request that ended before its route was known.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) requests: CounterVec,
    pub(super) duration: HistogramVec,
    pub(super) request_size: HistogramVec,
    pub(super) response_size: HistogramVec,
    pub(super) in_flight: GaugeVec,
    pub(super) failed: CounterVec,
    pub(super) error_handling: CounterVec,
    pub(super) disconnects: CounterVec,
    /// `gpe_series_capped_total` (see [`crate::health`]), its handle made on first use: nothing
    /// is written before the cap is first reached.
    capped: CounterVec,
    capped_family: String,
    capped_handle: OnceLock<Option<Counter>>,
    pub(super) worker_id: String,
    /// Label combinations created so far (the largest family's series count), under the cap.
    pub(super) series: SeriesBudget,
    /// Looked up on every request: a fast hash (foldhash, randomly seeded), not SipHash.
    pub(super) endpoints: RwLock<HashMap<Box<str>, Arc<EndpointSeries>, RandomState>>,
    pub(super) overflow: Arc<EndpointSeries>,
    pub(super) unmatched: OnceLock<Arc<EndpointSeries>>,
    /// The series of requests whose route is not known (yet): held here, not in an `Arc`, so
    /// that starting such a request clones nothing.
    pub(super) unrouted: EndpointSeries,
    pub(super) exclude: Vec<PathMatch>,
    /// How many labels of the user's own ([`RequestMetricsBuilder::label`]) follow the base ones.
    pub(super) labels: usize,
    /// Times requests (see [`crate::clock`]).
    pub(super) clock: Clock,
    /// Tells this instance's series apart in the per-thread cache ([`recent`]).
    pub(super) id: u64,
}

/// The endpoints a thread looked up last, per [`RequestMetrics`] instance: a request to one of
/// them finds its series by a string compare, without the map's lock and hash. A route's series
/// is never removed from the map, so a remembered one stays the right one.
mod recent {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::EndpointSeries;

    const SLOTS: usize = 4;

    /// A new instance's id (never 0, the id of an empty slot).
    pub(super) fn next_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[derive(Default)]
    struct Recent {
        slots: [(u64, Option<Arc<EndpointSeries>>); SLOTS],
        next: usize,
    }

    thread_local!(static RECENT: RefCell<Recent> = RefCell::default());

    /// The series of `endpoint` in instance `id`, if this thread looked it up lately.
    #[inline]
    pub(super) fn find(id: u64, endpoint: &str) -> Option<Arc<EndpointSeries>> {
        RECENT
            .try_with(|r| {
                r.borrow().slots.iter().find_map(|(slot_id, s)| {
                    s.as_ref()
                        .filter(|s| *slot_id == id && *s.endpoint == *endpoint)
                        .cloned()
                })
            })
            .ok()
            .flatten()
    }

    /// Remember `series` of instance `id` for this thread (the oldest slot goes).
    pub(super) fn remember(id: u64, series: &Arc<EndpointSeries>) {
        let _ = RECENT.try_with(|r| {
            let mut r = r.borrow_mut();
            let at = r.next;
            r.slots[at] = (id, Some(Arc::clone(series)));
            r.next = (at + 1) % SLOTS;
        });
    }
}

/// The cached handles of one endpoint.
#[derive(Debug)]
pub(super) struct EndpointSeries {
    pub(super) endpoint: Box<str>,
    /// The values of the user's own labels (empty without any).
    pub(super) values: Box<[Box<str>]>,
    pub(super) in_flight: [OnceLock<Option<Gauge>>; 10],
    /// The handles of status 200 per method: the common case, read without a lock.
    ok: [OnceLock<Arc<Done>>; 10],
    /// `(method, status) -> handles`; a short list, scanned.
    done: RwLock<Vec<(u8, u16, Arc<Done>)>>,
}

impl EndpointSeries {
    pub(super) fn new(endpoint: &str) -> Self {
        EndpointSeries::with_values(endpoint, Box::default())
    }

    pub(super) fn with_values(endpoint: &str, values: Box<[Box<str>]>) -> Self {
        EndpointSeries {
            endpoint: endpoint.into(),
            values,
            in_flight: Default::default(),
            ok: Default::default(),
            done: RwLock::new(Vec::new()),
        }
    }
}

impl EndpointSeries {
    /// `base` label values followed by the values of the user's own labels.
    fn label_values<'a>(&'a self, base: &[&'a str]) -> Vec<&'a str> {
        base.iter()
            .copied()
            .chain(self.values.iter().map(|v| &**v))
            .collect()
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

/// Status 0 in the cache stands for "no response" (label `none`); gRPC codes have their names.
fn status_label(status: u16) -> String {
    if status == 0 {
        STATUS_NO_RESPONSE.to_owned()
    } else if let Some(code) = grpc::code_of(status) {
        code.as_str().to_owned()
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
    pub fn from_env() -> Result<RequestMetrics, RequestMetricsError> {
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

    /// As [`start`](Self::start), with the values of the labels added by
    /// [`RequestMetricsBuilder::label`], in their order (missing ones are empty, extra ones
    /// ignored).
    pub fn start_labelled<V: AsRef<str>>(
        &self,
        method: &str,
        endpoint: &str,
        values: &[V],
    ) -> RequestTracker {
        let series = self.labelled_series(endpoint, values);
        self.start_in(method_index(method), Some(series))
    }

    /// As [`start_unrouted`](Self::start_unrouted), with the values of the labels added by
    /// [`RequestMetricsBuilder::label`]: they are applied when the endpoint is set (the
    /// in-flight gauge of an unrouted request has them empty).
    pub fn start_unrouted_labelled<V: AsRef<str>>(
        &self,
        method: &str,
        values: &[V],
    ) -> RequestTracker {
        let mut t = self.start_in(method_index(method), None);
        if self.inner.labels > 0 {
            t.labels = Some(values.iter().map(|v| v.as_ref().into()).collect());
        }
        t
    }

    /// How many labels of its own the families have ([`RequestMetricsBuilder::label`]).
    pub fn own_labels(&self) -> usize {
        self.inner.labels
    }

    /// Start tracking a request whose endpoint is not known yet: an actix-web middleware runs
    /// before the app routes the request, and resolving the route template there would route it
    /// twice. The in-flight gauge goes up under `endpoint=""` ([`UNROUTED`]); call
    /// [`RequestTracker::set_endpoint`] once the route is known, else the request is recorded
    /// under `endpoint=""` too.
    ///
    /// ```
    /// # fn main() -> Result<(), gpe_core::http::RequestMetricsError> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = gpe_core::Store::open(dir.path())?;
    /// let metrics = gpe_core::http::RequestMetrics::builder().build(&store)?;
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
            labels: None,
            series,
            in_flight: InFlight::Series,
            method,
            start: self.inner.clock.now(),
            request_size: RequestSize::Known(0),
            response_size: 0,
            status: None,
            failure: None,
            stage: Stage::Pending,
            grpc: false,
            access: None,
        }
    }

    /// The in-flight gauge of `(series, method)`, made on first use.
    fn in_flight_gauge<'s>(&self, series: &'s EndpointSeries, method: u8) -> Option<&'s Gauge> {
        series.in_flight[usize::from(method)]
            .get_or_init(|| {
                self.log_err(
                    self.inner
                        .in_flight
                        .with_label_values(&series.label_values(&[
                            &self.inner.worker_id,
                            METHODS[usize::from(method)],
                            &series.endpoint,
                        ])),
                )
            })
            .as_ref()
    }

    fn log_err<T>(&self, r: Result<T, crate::error::Error>) -> Option<T> {
        r.map_err(|e| tracing::warn!(error = %e, "gpe-tower: cannot record a request metric"))
            .ok()
    }

    /// The series of `endpoint` with the values of the user's own labels.
    pub(super) fn labelled_series<V: AsRef<str>>(
        &self,
        endpoint: &str,
        values: &[V],
    ) -> Arc<EndpointSeries> {
        let i = &self.inner;
        if i.labels == 0 {
            return self.endpoint_series(endpoint);
        }
        let value = |n: usize| values.get(n).map_or("", AsRef::as_ref);
        // One key for the endpoint and the values (the separator cannot be in a route
        // template), built in a buffer of this thread: a lookup allocates nothing.
        thread_local!(static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
        let found = KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(endpoint);
            for n in 0..i.labels {
                key.push('\u{1f}');
                key.push_str(value(n));
            }
            let map = i.endpoints.read().unwrap_or_else(|p| p.into_inner());
            map.get(key.as_str()).cloned().ok_or_else(|| key.clone())
        });
        let key = match found {
            Ok(s) => return s,
            Err(key) => key,
        };
        let mut map = i.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(key.as_str()) {
            return s.clone();
        }
        if map.len() >= i.series.max() || i.series.is_exhausted() {
            self.capped();
            return i.overflow.clone();
        }
        let values: Box<[Box<str>]> = (0..i.labels).map(|n| value(n).into()).collect();
        let s = Arc::new(EndpointSeries::with_values(endpoint, values));
        map.insert(key.into(), s.clone());
        s
    }

    pub(super) fn endpoint_series(&self, endpoint: &str) -> Arc<EndpointSeries> {
        let i = &self.inner;
        if i.labels > 0 {
            return self.labelled_series::<&str>(endpoint, &[]);
        }
        if endpoint == UNMATCHED {
            return i
                .unmatched
                .get_or_init(|| Arc::new(EndpointSeries::new(UNMATCHED)))
                .clone();
        }
        if let Some(s) = recent::find(i.id, endpoint) {
            return s;
        }
        let found = i
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .cloned();
        if let Some(s) = found {
            recent::remember(i.id, &s);
            return s;
        }
        let mut map = i.endpoints.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(endpoint) {
            return s.clone();
        }
        // An endpoint costs at least one combination; refuse new ones once the cap is reached.
        if map.len() >= i.series.max() || i.series.is_exhausted() {
            self.capped();
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
            self.capped();
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
        let values = series.label_values(&[
            i.worker_id.as_str(),
            METHODS[usize::from(method)],
            &series.endpoint,
            &status_s,
        ]);
        let d = Arc::new(Done {
            requests: self.log_err(i.requests.with_label_values(&values))?,
            duration: self.log_err(i.duration.with_label_values(&values))?,
            request_size: self.log_err(i.request_size.with_label_values(&values))?,
            response_size: self.log_err(i.response_size.with_label_values(&values))?,
        });
        done.push((method, status, d.clone()));
        Some((d, series))
    }

    /// A label combination was refused by the series cap.
    fn capped(&self) {
        let i = &self.inner;
        let handle = i
            .capped_handle
            .get_or_init(|| self.log_err(i.capped.with_label_values(&[i.capped_family.as_str()])));
        if let Some(c) = handle {
            c.inc();
        }
    }

    pub(super) fn record(&self, t: &RequestTracker) {
        let i = &self.inner;
        let method = METHODS[usize::from(t.method)];
        let disconnected = matches!(t.stage, Stage::Pending | Stage::Responded);
        let status = match (t.status, t.failure) {
            // A gRPC call the client dropped before its status: gRPC's own word for it.
            (s, None) if t.grpc && disconnected && s.is_none_or(|s| grpc::code_of(s).is_none()) => {
                grpc::status_of(GrpcCode::Cancelled)
            }
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
            let values =
                series.label_values(&[&i.worker_id, method, endpoint, &status, kind.as_str()]);
            if let Some(c) = self.log_err(i.failed.with_label_values(&values)) {
                c.inc();
            }
            if let Some(c) = self.log_err(i.error_handling.with_label_values(&values)) {
                c.inc();
            }
        }
        if disconnected && !(t.failure.is_some() && t.status.is_none()) {
            if let Some(c) = self.log_err(i.disconnects.with_label_values(&series.label_values(&[
                &i.worker_id,
                method,
                endpoint,
            ]))) {
                c.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(dir: &std::path::Path) -> String {
        crate::expose::encode_text(&crate::collect::MultiProcessCollector::new(dir).gather())
            .unwrap()
    }

    /// A builder for worker "1" with `labels` of its own.
    fn with_labels(labels: &[&str]) -> RequestMetricsBuilder {
        labels
            .iter()
            .fold(RequestMetrics::builder().worker_id("1"), |b, l| {
                b.label(*l).unwrap()
            })
    }

    fn finish(mut t: RequestTracker, status: u16) {
        t.set_status(status);
        t.complete();
    }

    #[test]
    fn own_labels_are_bounded_by_the_series_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = with_labels(&["tenant"])
            .max_series(2)
            .unwrap()
            .build(&store)
            .unwrap();
        assert_eq!(metrics.own_labels(), 1);
        for tenant in ["a", "b", "c", "d", "a"] {
            finish(metrics.start_labelled("GET", "/x", &[tenant]), 200);
        }
        let t = text(dir.path());
        let series = |tenant: &str| {
            format!(
                r#"gunicorn_worker_requests_total{{endpoint="/x",method="GET",status="200",tenant="{tenant}",worker_id="1"}}"#
            )
        };
        assert!(t.contains(&format!("{} 2", series("a"))), "{t}");
        assert!(t.contains(&format!("{} 1", series("b"))), "{t}");
        assert!(!t.contains(&series("c")), "{t}");
        // Past the cap, the endpoint and the label both say so.
        assert!(
            t.contains(r#"gunicorn_worker_requests_total{endpoint="<overflow>",method="GET",status="200",tenant="<overflow>",worker_id="1"} 2"#),
            "{t}"
        );
        // And gpe counts what the cap turned away, for an alert.
        assert!(
            t.contains(r#"gpe_series_capped_total{family="gunicorn_worker_requests_total"} 2"#),
            "{t}"
        );
    }

    #[test]
    fn an_unrouted_request_gets_its_labels_with_its_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = with_labels(&["tenant", "version"]).build(&store).unwrap();
        let mut t = metrics.start_unrouted_labelled("POST", &["acme", "v2"]);
        t.set_endpoint("/orders");
        finish(t, 503);
        let t = text(dir.path());
        assert!(
            t.contains(r#"gunicorn_worker_failed_requests_total{endpoint="/orders",error_type="status_5xx",method="POST",status="503",tenant="acme",version="v2",worker_id="1"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"gunicorn_worker_requests_in_flight{endpoint="",method="POST",tenant="",version="",worker_id="1"} 0"#),
            "{t}"
        );
    }

    #[test]
    fn label_names_are_checked() {
        let b = || RequestMetrics::builder();
        for bad in ["", "1x", "a-b", "__x", "status", "endpoint", "le"] {
            assert!(
                matches!(b().label(bad), Err(RequestMetricsError::InvalidLabel(n)) if n == bad),
                "{bad:?}"
            );
        }
        assert!(b().label("tenant").unwrap().label("tenant").is_err());
    }

    #[test]
    fn grpc_calls_are_labelled_by_their_grpc_status() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = with_labels(&[]).build(&store).unwrap();
        let call = |code: Option<GrpcCode>, complete: bool| {
            let mut t = metrics.start("POST", "/greet.Greeter/SayHello");
            t.set_grpc();
            t.set_status(200); // the head: gRPC answers 200 whatever happens
            if let Some(code) = code {
                t.set_grpc_status(code);
            }
            if complete {
                t.complete();
            }
        };
        call(Some(GrpcCode::Ok), true);
        call(Some(GrpcCode::Ok), true);
        call(Some(GrpcCode::InvalidArgument), true);
        call(Some(GrpcCode::Internal), true);
        call(None, false); // the client cancelled before the status
        call(Some(GrpcCode::Unimplemented), true);
        let t = text(dir.path());
        let series = |family: &str, labels: &str, v: u32| {
            let line = format!("gunicorn_worker_{family}{{{labels},worker_id=\"1\"}} {v}");
            assert!(t.contains(&line), "no {line} in\n{t}");
        };
        let call_labels = |status: &str| {
            format!(r#"endpoint="/greet.Greeter/SayHello",method="POST",status="{status}""#)
        };
        series("requests_total", &call_labels("OK"), 2);
        series("requests_total", &call_labels("INVALID_ARGUMENT"), 1);
        series("requests_total", &call_labels("INTERNAL"), 1);
        series("requests_total", &call_labels("CANCELLED"), 1);
        // Made-up method names make no series of their own.
        series(
            "requests_total",
            r#"endpoint="<unmatched>",method="POST",status="UNIMPLEMENTED""#,
            1,
        );
        assert!(!t.contains(r#"status="200""#), "{t}");
        // Only the server's faults are failures.
        series(
            "failed_requests_total",
            r#"endpoint="/greet.Greeter/SayHello",error_type="grpc_server_error",method="POST",status="INTERNAL""#,
            1,
        );
        assert_eq!(
            t.matches("gunicorn_worker_failed_requests_total{").count(),
            2,
            "{t}"
        );
        series(
            "client_disconnects_total",
            r#"endpoint="/greet.Greeter/SayHello",method="POST""#,
            1,
        );
    }

    #[test]
    fn a_thread_remembers_each_instance_s_series_apart() {
        // Two instances, one endpoint name, one thread: each request lands in its own store,
        // however the per-thread cache of recent series was filled.
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (s1, s2) = (
            Store::open(d1.path()).unwrap(),
            Store::open(d2.path()).unwrap(),
        );
        let m1 = with_labels(&[]).build(&s1).unwrap();
        let m2 = with_labels(&[]).build(&s2).unwrap();
        for _ in 0..3 {
            finish(m1.start("GET", "/same"), 200);
            finish(m2.start("GET", "/same"), 200);
            finish(m2.start("GET", "/same"), 200);
        }
        // More endpoints than the cache holds, then the first again.
        for e in ["/a", "/b", "/c", "/d", "/e", "/same"] {
            finish(m1.start("GET", e), 200);
        }
        let line = |n| {
            format!(
                r#"gunicorn_worker_requests_total{{endpoint="/same",method="GET",status="200",worker_id="1"}} {n}"#
            )
        };
        assert!(text(d1.path()).contains(&line(4)), "{}", text(d1.path()));
        assert!(text(d2.path()).contains(&line(6)), "{}", text(d2.path()));
    }
}

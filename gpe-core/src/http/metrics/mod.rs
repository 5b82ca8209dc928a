//! [`RequestMetrics`]: the request families of one process, their cached series, and how a
//! finished request is recorded; [`RequestMetricsBuilder`] (`builder.rs`) sets them up, and
//! `recent.rs` is the per-thread cache of the endpoints looked up last.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use foldhash::fast::RandomState;

use super::budget::SeriesBudget;
use super::grpc::{self, GrpcCode};
use super::tracker::{InFlight, RequestSize, RequestTracker, Stage};
use super::{RequestMetricsError, STATUS_CLIENT_CLOSED, STATUS_NO_RESPONSE, UNMATCHED};
use crate::clock::Clock;
use crate::exemplar::TraceSource;
use crate::metrics::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec};

mod builder;
mod recent;
#[cfg(test)]
mod tests;

pub use builder::RequestMetricsBuilder;

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// The `method` label index of an HTTP method; extension methods share `OTHER`, so a client
/// sending made-up methods cannot grow the series count.
fn method_index(method: &str) -> u8 {
    METHODS[..9].iter().position(|m| *m == method).unwrap_or(9) as u8
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
/// [`UNROUTED`](super::UNROUTED) (empty) in the in-flight gauge of requests started with
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
    /// Where a request's trace comes from, for the exemplars.
    pub(super) traces: TraceSource,
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

    /// The families with the defaults, in [`Store::from_env`](crate::Store::from_env).
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
    /// twice. The in-flight gauge goes up under `endpoint=""` ([`UNROUTED`](super::UNROUTED)); call
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
            trace: None,
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
            match &t.trace {
                None => {
                    d.requests.inc();
                    d.duration.observe(t.elapsed().as_secs_f64());
                }
                Some(trace) => {
                    let now = crate::clock::unix_seconds();
                    d.requests.inc_by_with_exemplar_at(1.0, trace, now);
                    d.duration
                        .observe_with_exemplar_at(t.elapsed().as_secs_f64(), trace, now);
                }
            }
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

//! [`RequestTracker`]: one request, followed from its start to its record, and
//! [`FailureKind`], why it failed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::access::AccessEntry;
use super::grpc::{self, GrpcCode};
use super::metrics::{EndpointSeries, RequestMetrics};
use super::RequestBodyBytes;
use crate::clock::Stamp;
use crate::exemplar::{Headers, TraceContext};

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
    /// A gRPC call ended with a status that gRPC maps to an HTTP 5xx
    /// ([`GrpcCode::is_server_error`]; `error_type="grpc_server_error"`).
    GrpcServerError,
}

impl FailureKind {
    /// The `error_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ServerError => "status_5xx",
            FailureKind::ServiceError => "service_error",
            FailureKind::Panic => "panic",
            FailureKind::BodyError => "body_error",
            FailureKind::GrpcServerError => "grpc_server_error",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
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
/// # fn main() -> Result<(), gpe_core::http::RequestMetricsError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let store = gpe_core::Store::open(dir.path())?;
/// let metrics = gpe_core::http::RequestMetrics::builder().build(&store)?;
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
    pub(super) metrics: RequestMetrics,
    /// The values of the user's own labels of a request started unrouted, applied when its
    /// endpoint is set.
    pub(super) labels: Option<Box<[Box<str>]>>,
    /// The series the request is recorded under; `None`: the unrouted one, which `metrics` holds.
    pub(super) series: Option<Arc<EndpointSeries>>,
    /// Where the in-flight gauge went up.
    pub(super) in_flight: InFlight,
    pub(super) method: u8,
    pub(super) start: Stamp,
    pub(super) request_size: RequestSize,
    pub(super) response_size: u64,
    pub(super) status: Option<u16>,
    pub(super) failure: Option<FailureKind>,
    pub(super) stage: Stage,
    /// A gRPC call ([`set_grpc`](Self::set_grpc)).
    pub(super) grpc: bool,
    /// The request's access log line, written after the metrics ([`log_access`](Self::log_access)).
    pub(super) access: Option<Box<AccessEntry>>,
    /// The request's trace, for exemplars ([`trace_from`](Self::trace_from)).
    pub(super) trace: Option<TraceContext>,
}

/// Where a request's in-flight gauge went up.
#[derive(Debug)]
pub(super) enum InFlight {
    /// Under the series the request is recorded under.
    Series,
    /// Under the unrouted series (started unrouted; the endpoint was set since).
    Unrouted,
    /// Under another series (the endpoint was changed since).
    Other(Arc<EndpointSeries>),
}

/// The request body size.
#[derive(Debug)]
pub(super) enum RequestSize {
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

    /// The request is a gRPC call (see [`grpc`](super::grpc)): its `status` label will be its
    /// gRPC status ([`set_grpc_status`](Self::set_grpc_status)), `CANCELLED` if the client
    /// goes away before it.
    pub fn set_grpc(&mut self) {
        self.grpc = true;
    }

    /// Take the request's trace from its `headers`, as the metrics'
    /// [`TraceSource`](crate::exemplar::TraceSource) says (by default the `traceparent` header):
    /// its exemplar is then recorded with the request.
    #[inline]
    pub fn trace_from(&mut self, headers: &dyn Headers) {
        self.trace = self.metrics.inner.traces.trace(headers);
    }

    /// Set the request's trace, for its exemplars.
    pub fn set_trace(&mut self, trace: TraceContext) {
        self.trace = Some(trace);
    }

    /// Whether the request is a gRPC call ([`set_grpc`](Self::set_grpc)).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The gRPC status of a call, from its trailers (or its headers, for an answer without a
    /// body): the `status` label becomes the code's name. A code gRPC maps to an HTTP 5xx marks
    /// the call failed ([`FailureKind::GrpcServerError`]); `UNIMPLEMENTED` moves it to the
    /// [`UNMATCHED`](super::UNMATCHED) endpoint, so that made-up method names make no series.
    pub fn set_grpc_status(&mut self, code: GrpcCode) {
        self.grpc = true;
        self.status = Some(grpc::status_of(code));
        if self.failure == Some(FailureKind::ServerError) {
            self.failure = None;
        }
        if code.is_server_error() && self.failure.is_none() {
            self.failure = Some(FailureKind::GrpcServerError);
        }
        if code == GrpcCode::Unimplemented {
            self.set_endpoint(super::UNMATCHED);
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

    /// The handler panicked and the adapter answers 500 instead: a failure
    /// ([`FailureKind::Panic`]) with status 500, and the request is over.
    pub fn answered_after_panic(&mut self) {
        self.fail(FailureKind::Panic);
        self.set_status(500);
        self.complete();
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

    /// Record the request under `endpoint` (a route template, [`UNMATCHED`](super::UNMATCHED) or a value from a
    /// label hook) instead of the one it was started with. The in-flight gauge keeps the label
    /// it went up under, so that it comes down where it went up.
    pub fn set_endpoint(&mut self, endpoint: &str) {
        if *self.series().endpoint == *endpoint {
            return;
        }
        let series = match &self.labels {
            Some(values) => self.metrics.labelled_series(endpoint, values),
            None => match &self.series {
                // Keep the values of the series it was started under.
                Some(own) if !own.values.is_empty() => {
                    self.metrics.labelled_series(endpoint, &own.values)
                }
                _ => self.metrics.endpoint_series(endpoint),
            },
        };
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
    pub(super) fn series(&self) -> &EndpointSeries {
        self.series
            .as_deref()
            .unwrap_or(&self.metrics.inner.unrouted)
    }

    /// Write `entry`, this request's access log line, when the request is recorded (after its
    /// metrics): with its status (`499` if the client left before one, `-` for an error
    /// without a response; a gRPC call's HTTP status, 200), the response bytes and the
    /// duration.
    pub fn log_access(&mut self, entry: AccessEntry) {
        self.access = Some(Box::new(entry));
    }

    /// The access log line handed over with [`log_access`](Self::log_access), to capture
    /// response headers into ([`AccessEntry::capture_response_headers`]).
    pub fn access_entry_mut(&mut self) -> Option<&mut AccessEntry> {
        self.access.as_deref_mut()
    }

    /// The HTTP status of the access log line.
    fn access_status(&self) -> Option<u16> {
        match (self.status, self.failure) {
            // The tracker holds a gRPC call's code in place of its HTTP status, which gRPC
            // always sends as 200.
            (Some(s), _) if grpc::code_of(s).is_some() => Some(200),
            (Some(s), _) => Some(s),
            (None, Some(_)) => None,
            (None, None) => Some(super::STATUS_CLIENT_CLOSED),
        }
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
        if let Some(entry) = self.access.take() {
            entry.finish(self.access_status(), self.response_size, self.elapsed());
        }
    }
}

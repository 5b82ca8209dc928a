//! Framework-neutral request metrics: the `gunicorn_worker_request*` families, one request
//! followed from start to record, the series cap and the endpoint label hooks.
//!
//! This is the engine under every framework adapter: gpe-tower's `MetricsLayer` (axum, hyper,
//! tonic) and gpe-actix's `ActixMetrics` are thin translations of their framework's request and
//! response into the calls below, so both record the same families the same way.
//!
//! [`RequestMetrics`] owns the families in a [`Store`](crate::Store); a [`RequestTracker`]
//! follows one request and records everything when it is dropped, so a request is counted
//! exactly once whatever happens to it (response, error, panic, client disconnect).
//!
//! ```
//! use gpe_core::http::RequestMetrics;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = gpe_core::Store::open(dir.path())?;
//! let metrics = RequestMetrics::builder().worker_id("1").build(&store)?;
//!
//! // What an adapter does for one request.
//! let mut request = metrics.start("GET", "/users/{id}");
//! request.set_status(200);
//! request.add_response_bytes(5);
//! request.complete();
//! drop(request); // recorded here
//!
//! let text = gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir.path()).gather())?;
//! assert!(text.contains(
//!     r#"gunicorn_worker_requests_total{endpoint="/users/{id}",method="GET",status="200",worker_id="1"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```

pub mod access;
mod body_size;
mod budget;
mod error;
pub mod grpc;
pub mod hooks;
mod metrics;
mod response;
mod sync;
mod tracker;

pub use body_size::RequestBodyBytes;
pub use error::RequestMetricsError;
pub use hooks::{DefaultEndpoint, EndpointLabel, RequestInfo};
pub use metrics::{RequestMetrics, RequestMetricsBuilder};
pub use response::{log_handler_panic, panic_message, BodyRecord};
pub use tracker::{FailureKind, RequestTracker};

/// The duration buckets of the Python exporter, in seconds (`+Inf` is added).
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// The native buckets the request duration histogram has beside its classic ones by default
/// (see [`RequestMetricsBuilder::duration_native`]).
pub const DEFAULT_DURATION_NATIVE: crate::native::NativeOpts = crate::native::NativeOpts::DEFAULT;

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

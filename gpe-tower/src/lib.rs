//! Request and worker metrics for tower stacks (axum, hyper, tonic), recorded into gpe-core's
//! multiprocess store so that `/metrics` adds up every worker of a pre-fork server.
//!
//! - [`MetricsLayer`] / [`Metrics`]: a tower middleware recording, per request,
//!   `gunicorn_worker_requests_total`, `..._request_duration_seconds`,
//!   `..._request_size_bytes`, `..._response_size_bytes`, `..._requests_in_flight`,
//!   `..._failed_requests_total`, `..._error_handling_total` and
//!   `..._client_disconnects_total` (see [`RequestMetrics`] for the labels). The `endpoint`
//!   label is the route template (axum `MatchedPath` with the `axum` feature, or a
//!   [`RouteTemplate`] extension), a label hook's value ([`hooks`]), or `<unmatched>`; a
//!   per-family series cap sends further combinations to `endpoint="<overflow>"`.
//! - Duration and response size end when the response body is finished or dropped; a body
//!   dropped early counts as a client disconnect. The request size is the body's exact size hint
//!   or `Content-Length`; [`count_request_body`] in front of the layer counts bodies sent without
//!   either (chunked uploads), as [`serve`] does.
//! - Panics in the inner service are caught, counted (`error_type="panic"`) and answered 500.
//! - [`WorkerMetrics`]: memory, CPU, uptime and state of the worker, sampled on a timer
//!   ([`WorkerMetrics::spawn_sampler`]), never per request.
//!
//! - [`serve`] (feature `axum`): an axum `Router` served as a gpe-master worker or standalone —
//!   listeners, the metrics layer, max-requests, worker metrics, graceful and fast stops, and
//!   standalone its own `/metrics` — in a few lines.
//!
//! [`RequestMetrics`] and [`RequestTracker`] are gpe-core's framework-neutral engine
//! ([`gpe_core::http`]), re-exported here: gpe-actix records the same families through them.
//!
//! ```
//! use axum::{routing::get, Router};
//! use gpe_tower::{MetricsLayer, RequestMetrics};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = gpe_core::Store::open(dir.path())?;
//! let metrics = RequestMetrics::builder().worker_id("1").build(&store)?;
//! let app = Router::new()
//!     .route("/users/{id}", get(|| async { "hello" }))
//!     .layer(MetricsLayer::new(metrics));
//!
//! let res = app
//!     .oneshot(http::Request::get("/users/7").body(axum::body::Body::empty())?)
//!     .await?;
//! // Reading the body to its end records the request.
//! http_body_util::BodyExt::collect(res.into_body()).await?;
//!
//! let families = gpe_core::MultiProcessCollector::new(dir.path()).gather();
//! let text = gpe_core::expose::encode_text(&families)?;
//! assert!(text.contains(
//!     r#"gunicorn_worker_requests_total{endpoint="/users/{id}",method="GET",status="200",worker_id="1"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod error;
mod future;
mod layer;
pub mod request_body;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod serve;
mod service;
pub mod worker;

pub use body::MetricsBody;
pub use error::BuildError;
pub use future::ResponseFuture;
/// The framework-neutral request metrics engine, from gpe-core (see [`gpe_core::http`]).
pub use gpe_core::http::{
    hooks, DefaultEndpoint, EndpointLabel, FailureKind, RequestInfo, RequestMetrics,
    RequestMetricsBuilder, RequestMetricsError, RequestTracker, DEFAULT_DURATION_BUCKETS,
    DEFAULT_MAX_SERIES, DEFAULT_PREFIX, DEFAULT_SIZE_BUCKETS, OVERFLOW, STATUS_CLIENT_CLOSED,
    STATUS_NO_RESPONSE, UNMATCHED, UNROUTED,
};
pub use layer::{MetricsLayer, RequestLabels};
pub use request_body::{count_request_body, CountedBody, RequestBodyBytes};
pub use service::{Metrics, RouteTemplate};
pub use worker::{
    RestartReason, SamplerHandle, StopReason, StopRecord, WorkerMetrics, WorkerState,
};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

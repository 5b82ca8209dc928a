//! Request metrics for actix-web, recorded into gpe-core's multiprocess store so that
//! `/metrics` adds up every worker of a pre-fork server.
//!
//! [`ActixMetrics`] is an actix-web [`Transform`](actix_web::dev::Transform) recording the same
//! families as gpe-tower (both are adapters over gpe-core's engine, [`gpe_core::http`]): requests,
//! duration, request and response sizes, in-flight, failures (5xx responses, handler errors with a
//! 5xx status, panics) and client disconnects. The `endpoint` label is the resource pattern
//! (`match_pattern()`, read from the routed request in the response, so that no request is routed
//! twice), `<unmatched>` when no resource matched, and `<overflow>` past the series cap. The
//! in-flight gauge is labelled by method only (`endpoint=""`): the middleware runs before actix
//! routes the request. [`ActixMetrics::in_flight_by_endpoint`] labels it by pattern too, at the
//! cost of a second routing pass per request.
//! The request body size is `Content-Length`, or for a body sent without it (chunked) the bytes
//! the handler read. The request is recorded when the response body is finished or dropped
//! ([`MetricsBody`]'s `PinnedDrop`); a handler panic is caught, counted and turned into an
//! `InternalError` that actix answers with a 500.
//!
//! ```
//! use actix_web::{test, web, App, HttpResponse};
//! use gpe_actix::ActixMetrics;
//!
//! # #[actix_web::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = gpe_core::Store::open(dir.path())?;
//! let metrics = gpe_actix::RequestMetrics::builder().worker_id("1").build(&store)?;
//! let app = test::init_service(
//!     App::new()
//!         .wrap(ActixMetrics::new(metrics))
//!         .route("/users/{id}", web::get().to(|| async { HttpResponse::Ok().body("hi") })),
//! )
//! .await;
//! let res = test::call_service(&app, test::TestRequest::get().uri("/users/7").to_request()).await;
//! assert_eq!(test::read_body(res).await, "hi");
//!
//! let text = gpe_core::expose::encode_text(
//!     &gpe_core::MultiProcessCollector::new(dir.path()).gather(),
//! )?;
//! assert!(text.contains(
//!     r#"gunicorn_worker_requests_total{endpoint="/users/{id}",method="GET",status="200",worker_id="1"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod body;
mod middleware;
mod payload;
pub mod serve;

pub use body::MetricsBody;
/// The framework-neutral request metrics engine and its hooks, from gpe-core (see
/// [`gpe_core::http`]).
pub use gpe_core::http::{
    hooks, DefaultEndpoint, EndpointLabel, RequestInfo, RequestMetrics, RequestMetricsBuilder,
    RequestMetricsError,
};
/// Errors starting or running a worker ([`serve`]), and building its request metrics:
/// gpe-core's [`HostError`](gpe_core::worker::host::HostError), shared with gpe-tower.
pub use gpe_core::worker::host::HostError as BuildError;
pub use middleware::{ActixMetrics, MetricsFuture, MetricsMiddleware, RequestLabels};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

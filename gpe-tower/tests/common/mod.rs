//! What gpe-tower's integration tests share (each test binary uses part of it).
#![allow(dead_code)]

use axum::routing::get;
use axum::Router;
use gpe_tower::serve::{Worker, WorkerBuilder};
use http::StatusCode;

/// The routes the shared scenarios (`gpe-core/tests/shared/`) send their requests to:
/// `/users/{id}` (GET and POST), `/fail` (503) and `/health`.
pub(crate) fn scenario_routes() -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async { "user" }).post(|| async { "made" }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route("/health", get(|| async { "ok" }))
}

/// A standalone worker on 127.0.0.1:0 writing into `dir`, without its own `/metrics` server.
pub(crate) fn standalone(dir: &std::path::Path) -> WorkerBuilder {
    Worker::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .store(gpe_core::Store::open(dir).unwrap())
        .no_metrics_server()
}

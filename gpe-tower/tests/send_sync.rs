//! Compile-time `Send`/`Sync` guarantees of gpe-tower's public types (tokio
//! `tests/async_send_sync.rs` is the model). The generic functions prove the wrappers forward
//! the bounds of what they wrap: axum and hyper need `Send` services, futures and bodies.
//!
//! A type losing one of these bounds fails to compile this file: that is the test.

use gpe_tower::{
    BuildError, DefaultEndpoint, FailureKind, Metrics, MetricsBody, MetricsLayer, RequestInfo,
    RequestMetrics, RequestMetricsBuilder, RequestTracker, ResponseFuture, RestartReason,
    RouteTemplate, SamplerHandle, WorkerMetrics, WorkerState,
};

fn assert_send<T: Send>() {}
fn assert_send_sync<T: Send + Sync>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

/// A label hook as users write them: a plain function.
type FnHook = fn(&RequestInfo<'_>) -> Option<String>;

#[test]
fn handles() {
    assert_send_sync::<RequestMetrics>();
    assert_send_sync::<RequestMetricsBuilder>();
    assert_send_sync::<RequestTracker>();
    assert_send_sync::<MetricsLayer>();
    assert_send_sync::<MetricsLayer<()>>();
    assert_send_sync::<MetricsLayer<FnHook>>();
    assert_send_sync::<DefaultEndpoint>();
    assert_send_sync::<RouteTemplate>();
    assert_send_sync::<FailureKind>();
    assert_send_sync::<WorkerMetrics>();
    assert_send_sync::<WorkerState>();
    assert_send_sync::<RestartReason>();
    assert_send_sync::<SamplerHandle>();
    assert_error::<BuildError>();
}

/// For every `S` and `E` that are `Send + Sync`, the service is.
fn service_forwards<S: Send + Sync, E: Send + Sync>() {
    assert_send_sync::<Metrics<S, E>>();
}

/// For every `Send` inner future, the response future is `Send` (and `Sync` when it is).
fn future_forwards<F: Send, G: Send + Sync>() {
    assert_send::<ResponseFuture<F>>();
    assert_send_sync::<ResponseFuture<G>>();
}

/// For every `Send` body, the metrics body is `Send` (and `Sync` when it is).
fn body_forwards<B: Send, C: Send + Sync>() {
    assert_send::<MetricsBody<B>>();
    assert_send_sync::<MetricsBody<C>>();
}

#[test]
fn wrappers_forward_send_and_sync() {
    service_forwards::<axum::routing::Router, DefaultEndpoint>();
    service_forwards::<axum::routing::Router, FnHook>();
    future_forwards::<
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        std::future::Ready<()>,
    >();
    body_forwards::<axum::body::Body, String>();
}

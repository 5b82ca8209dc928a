//! An axum service instrumented with gpe-tower, runnable standalone or as a gpe-master worker.
//! Everything around the routes (listeners, the metrics layer, max-requests, signals, worker
//! metrics, the standalone /metrics server) is `gpe_tower::serve`.
//!
//! Run with:
//!
//! ```sh
//! # Standalone: the app on 127.0.0.1:8000 (or --bind ADDR), its own /metrics on 127.0.0.1:9091
//! # (PROMETHEUS_BIND_ADDRESS / PROMETHEUS_METRICS_PORT).
//! cargo run -p example-axum
//!
//! # Under gpe-master: 4 workers share the master's listener (inherited as fd 3); the master
//! # serves /metrics for all of them on 127.0.0.1:9091. Or simply: .ci/demo
//! cargo build --release -p gpe-master -p example-axum
//! PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) target/release/gpe-master --workers 4 \
//!     --bind 127.0.0.1:8000 target/release/example-axum
//! ```
//!
//! `EXAMPLE_NO_METRICS=1` serves the same app without the metrics layer (for benchmarks).
//!
//! Routes: `/` (hello), `/users/{id}`, `/slow?ms=N` (sleeps, at most 10 s), `/fail` (503),
//! `/panic` (a handler panic, answered 500 by the layer), `/health` (not recorded).
//!
//! Signals: TERM stops accepting and finishes in-flight requests (at most `GPE_GRACEFUL_TIMEOUT`
//! seconds, default 30); QUIT and INT exit at once.

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use gpe_core::worker::host::Exit;
use gpe_core::worker::BindAddr;
use gpe_tower::serve::Worker;
use gpe_tower::{BuildError, RequestMetrics};
use tracing_subscriber::EnvFilter;

/// An example axum service: run it under gpe-master, or standalone with --bind.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen standalone (ignored under gpe-master, whose listeners are served).
    #[arg(short, long, value_name = "HOST:PORT|unix:PATH")]
    bind: Option<BindAddr>,
}

#[derive(Debug, serde::Deserialize)]
struct Slow {
    ms: Option<u64>,
}

/// The application; `gpe_tower::serve` adds the metrics layer, the max-requests counter and
/// `Connection: close` while stopping.
fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello from example-axum\n" }))
        .route(
            "/users/{id}",
            get(|Path(id): Path<u64>| async move { format!("user {id}\n") }),
        )
        .route(
            "/slow",
            get(|Query(q): Query<Slow>| async move {
                let ms = q.ms.unwrap_or(100).min(10_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("slept {ms} ms\n")
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "failing on purpose\n") }),
        )
        .route("/panic", get(panics))
        .route("/health", get(|| async { "ok\n" }))
}

async fn panics() -> &'static str {
    if std::hint::black_box(true) {
        panic!("/panic was asked to panic");
    }
    "unreachable"
}

/// Exit 0 after a stop, 3 when the worker cannot start (gpe-master then stops rather than
/// respawning it), 1 when serving fails.
#[tokio::main]
async fn main() -> Exit {
    serve().await.into()
}

async fn serve() -> Result<(), BuildError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    worker(&Args::parse())?.serve(app()).await
}

/// The worker: gpe-master's listeners, or standalone `--bind` (default `GPE_BIND`, else
/// 127.0.0.1:8000).
fn worker(args: &Args) -> Result<Worker, BuildError> {
    let mut builder = Worker::builder();
    if let Some(bind) = &args.bind {
        builder = builder.bind_addr(bind.clone());
    }
    // EXAMPLE_NO_METRICS=1 serves the same app without the layer (to measure its cost).
    builder = if std::env::var_os("EXAMPLE_NO_METRICS").is_some() {
        builder.no_request_metrics()
    } else {
        builder.request_metrics(RequestMetrics::builder().exclude_path("/health"))
    };
    builder.build()
}

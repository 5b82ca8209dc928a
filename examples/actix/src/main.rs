//! An actix-web service instrumented with gpe-actix, runnable standalone or as a gpe-master
//! worker. Everything around the routes (listeners, the metrics middleware, max-requests,
//! signals, worker metrics, the standalone /metrics server) is `gpe_actix::serve`: this file is
//! what a user writes.
//!
//! Run with:
//!
//! ```sh
//! # Standalone: the app on 127.0.0.1:8000 (or --bind ADDR), its own /metrics on 127.0.0.1:9091.
//! cargo run -p example-actix
//!
//! # Under gpe-master (the master serves /metrics for every worker on 127.0.0.1:9091):
//! cargo build --release -p gpe-master -p example-actix
//! PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) target/release/gpe-master --workers 4 \
//!     --bind 127.0.0.1:8000 target/release/example-actix
//! ```
//!
//! Routes: `/`, `/users/{id}`, `/slow?ms=N`, `/fail` (503), `/panic` (a handler panic, answered
//! 500), `/health` (not recorded). actix's own signal handling is off: TERM drains in-flight
//! requests (at most `GPE_GRACEFUL_TIMEOUT` s), QUIT and INT exit at once, as gunicorn workers do.
//! Each process runs `EXAMPLE_ACTIX_THREADS` actix worker threads (default 2).

use std::time::Duration;

use actix_web::{web, App, HttpResponse};
use clap::Parser;
use gpe_actix::serve::Worker;
use gpe_actix::{BuildError, RequestMetrics};
use gpe_core::worker::host::Exit;
use gpe_core::worker::BindAddr;
use tracing_subscriber::EnvFilter;

/// An example actix-web service: run it under gpe-master, or standalone with --bind.
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

async fn slow(q: web::Query<Slow>) -> String {
    let ms = q.ms.unwrap_or(100).min(10_000);
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

async fn panics() -> HttpResponse {
    if std::hint::black_box(true) {
        panic!("/panic was asked to panic");
    }
    HttpResponse::Ok().finish()
}

/// The application's routes.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| async { "hello from example-actix\n" }),
    )
    .route(
        "/users/{id}",
        web::get().to(|id: web::Path<u64>| async move { format!("user {id}\n") }),
    )
    .route("/slow", web::get().to(slow))
    .route(
        "/fail",
        web::get().to(|| async { HttpResponse::ServiceUnavailable().body("failing on purpose\n") }),
    )
    .route("/panic", web::get().to(panics))
    .route("/health", web::get().to(|| async { "ok\n" }));
}

/// Exit 0 after a stop, 3 when the worker cannot start (gpe-master then stops rather than
/// respawning it), 1 when serving fails.
#[actix_web::main]
async fn main() -> Exit {
    serve().await.into()
}

async fn serve() -> Result<(), BuildError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let threads = std::env::var("EXAMPLE_ACTIX_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut worker = Worker::builder()
        .request_metrics(RequestMetrics::builder().exclude_path("/health"))
        .threads(threads);
    if let Some(bind) = args.bind {
        worker = worker.bind_addr(bind);
    }
    worker.build()?.serve(|| App::new().configure(routes)).await
}

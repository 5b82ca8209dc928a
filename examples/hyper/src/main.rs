//! A plain hyper 1 service (no framework) instrumented with gpe-tower, runnable standalone or as
//! a gpe-master worker: any tower service is served by `gpe_tower::serve`'s `serve_service`.
//!
//! Run with:
//!
//! ```sh
//! # Standalone: the app on 127.0.0.1:8000 (or --bind ADDR), its own /metrics on 127.0.0.1:9091.
//! cargo run -p example-hyper
//!
//! # Under gpe-master (the master serves /metrics for every worker on 127.0.0.1:9091):
//! cargo build --release -p gpe-master -p example-hyper
//! PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) target/release/gpe-master --workers 4 \
//!     --bind 127.0.0.1:8000 target/release/example-hyper
//! ```
//!
//! Without a router there is no `MatchedPath`: the handler's tiny router puts a
//! [`gpe_tower::RouteTemplate`] in the request extensions *before* the metrics
//! layer reads it (see [`route`]), so the `endpoint` label is still the template, never the raw
//! path. Routes: `/`, `/users/{id}`, `/slow?ms=N`, `/fail` (503), `/panic`, `/health` (not
//! recorded). TERM drains in-flight requests, QUIT and INT exit at once.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use gpe_core::worker::host::Exit;
use gpe_core::worker::BindAddr;
use gpe_tower::serve::{Body, Worker};
use gpe_tower::{BuildError, MetricsLayer, RequestMetrics, RouteTemplate};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::ServiceBuilder;
use tracing_subscriber::EnvFilter;

/// An example hyper service: run it under gpe-master, or standalone with --bind.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen standalone (ignored under gpe-master, whose listeners are served).
    #[arg(short, long, value_name = "HOST:PORT|unix:PATH")]
    bind: Option<BindAddr>,
}

/// The route template of `path`.
fn route(path: &str) -> Option<&'static str> {
    match path {
        "/" => Some("/"),
        "/slow" => Some("/slow"),
        "/fail" => Some("/fail"),
        "/panic" => Some("/panic"),
        "/health" => Some("/health"),
        p if p
            .strip_prefix("/users/")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Some("/users/{id}")
        }
        _ => None,
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res
}

async fn handle<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    Ok(match req.extensions().get::<RouteTemplate>().map(|r| r.0) {
        Some("/") => text(StatusCode::OK, "hello from example-hyper\n".to_owned()),
        Some("/users/{id}") => text(
            StatusCode::OK,
            format!("user {}\n", &path["/users/".len()..]),
        ),
        Some("/slow") => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(100)
                .min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, format!("slept {ms} ms\n"))
        }
        Some("/fail") => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "failing on purpose\n".to_owned(),
        ),
        Some("/panic") => panic!("/panic was asked to panic"),
        Some(_) => text(StatusCode::OK, "ok\n".to_owned()),
        None => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    })
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
    let args = Args::parse();
    // The metrics layer goes inside the routing (which sets the template), so the worker adds
    // none of its own.
    let mut worker = Worker::builder().no_request_metrics();
    if let Some(bind) = args.bind {
        worker = worker.bind_addr(bind);
    }
    let worker = worker.build()?;
    let metrics = RequestMetrics::builder()
        .worker_id(worker.worker_id())
        .exclude_path("/health")
        .build(worker.store())?;
    let service = ServiceBuilder::new()
        .map_request(|mut req: Request<Body>| {
            if let Some(r) = route(req.uri().path()) {
                req.extensions_mut().insert(RouteTemplate(r));
            }
            req
        })
        .layer(MetricsLayer::new(metrics))
        .service_fn(handle);
    worker.serve_service(service).await
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_are_templates() {
        assert_eq!(route("/users/42"), Some("/users/{id}"));
        assert_eq!(route("/users/"), None);
        assert_eq!(route("/users/x"), None);
        assert_eq!(route("/nope"), None);
    }
}

//! A plain hyper 1 service (no framework) instrumented with gpe-tower, runnable standalone or as
//! a gpe-master worker.
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
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use gpe_core::worker::Listener;
use gpe_tower::{MetricsLayer, RouteTemplate};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;

use example_support as run;

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

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
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

fn main() -> ExitCode {
    run::main(
        "example-hyper",
        || {
            let Some(boot) = run::Boot::from_env_and_args()? else {
                return Ok(None);
            };
            Ok(Some((boot, run::tokio_runtime()?)))
        },
        |(boot, runtime)| runtime.block_on(serve(boot)),
    )
}

async fn serve(boot: run::Boot) -> anyhow::Result<()> {
    let (metrics, worker, _sampler) = boot.metrics()?;
    let listener = boot.listener()?;
    listener.set_nonblocking(true)?;
    let listener = match listener {
        Listener::Tcp(l) => Accepting::Tcp(tokio::net::TcpListener::from_std(l)?),
        Listener::Unix(l) => Accepting::Unix(tokio::net::UnixListener::from_std(l)?),
        _ => anyhow::bail!("unsupported listener kind"),
    };
    let control = run::Control::start(&boot, &worker)?;
    let _metrics_server = boot.standalone_metrics_server().await?;
    tracing::info!(worker_id = %boot.worker_id, "example-hyper listening on {}", listener.describe());

    // Routing first (it sets the template), then the metrics layer, then the handler.
    let counter = control.clone();
    let stopping = control.clone();
    let service = ServiceBuilder::new()
        // Once stopping, every answer closes its connection: keep-alive clients reconnect (to
        // another worker) instead of losing a request to the close of an idle connection.
        .map_response(move |mut res: Response<_>| {
            if stopping.is_stopping() {
                res.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            res
        })
        .map_request(move |mut req: Request<Incoming>| {
            counter.count_request();
            if let Some(r) = route(req.uri().path()) {
                req.extensions_mut().insert(RouteTemplate(r));
            }
            req
        })
        .layer(MetricsLayer::new(metrics))
        .service_fn(handle);

    let graceful = GracefulShutdown::new();
    let stop = control.graceful();
    tokio::pin!(stop);
    control.settle_when_idle();
    boot.tell_master_ready();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Another worker may have taken it, or the fd limit was hit: go on.
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                };
                let svc = service.clone();
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(control.track(stream)), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    // Connections accepted just before the stop get a moment to start their first request
    // before the idle ones are closed, unless none is open (see
    // `example_support::ACCEPT_SETTLE`).
    tokio::select! {
        () = control.graceful_settled() => {}
        () = control.fast() => return Ok(()),
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = control.fast() => {}
        () = control.graceful_deadline() => {
            tracing::warn!("graceful timeout: exiting with requests in flight");
        }
    }
    Ok(())
}

/// A connection of either listener kind.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The listener, TCP or Unix.
enum Accepting {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Accepting {
    async fn accept(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Accepting::Tcp(l) => Box::new(l.accept().await?.0),
            Accepting::Unix(l) => Box::new(l.accept().await?.0),
        })
    }

    fn describe(&self) -> String {
        match self {
            Accepting::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| format!("http://{a}/")),
            Accepting::Unix(l) => format!("{:?}", l.local_addr()),
        }
    }
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

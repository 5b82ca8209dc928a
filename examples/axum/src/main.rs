//! An axum service instrumented with gpe-tower, runnable standalone or as a gpe-master worker.
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

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use gpe_core::worker::Listener;
use gpe_tower::{MetricsLayer, RequestMetrics, WorkerMetrics};

use example_support as run;

#[derive(Debug, serde::Deserialize)]
struct Slow {
    ms: Option<u64>,
}

/// The application, with the metrics layer (none when `metrics` is `None`: for benchmarks).
fn app(metrics: Option<RequestMetrics>) -> Router {
    let router = Router::new()
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
        .route("/health", get(|| async { "ok\n" }));
    match metrics {
        Some(m) => router.layer(MetricsLayer::new(m)),
        None => router,
    }
}

async fn panics() -> &'static str {
    if std::hint::black_box(true) {
        panic!("/panic was asked to panic");
    }
    "unreachable"
}

fn main() -> ExitCode {
    run::init_logging();
    let boot = match run::Boot::from_env_and_args() {
        Ok(Some(b)) => b,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "example-axum: cannot boot");
            return ExitCode::from(3);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "example-axum: cannot start the runtime");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(serve(boot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "example-axum: failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(boot: run::Boot) -> anyhow::Result<()> {
    let metrics = RequestMetrics::builder()
        .worker_id(boot.worker_id.clone())
        .exclude_path("/health")
        .build(&boot.store)?;
    let worker = WorkerMetrics::new(&boot.store, boot.worker_id.clone())?;
    let _sampler = worker.spawn_sampler(Duration::from_secs(5))?;
    let listener = boot.listener()?;
    listener.set_nonblocking(true)?;
    let control = run::Control::start(&boot, &worker)?;
    let _metrics_server = boot.standalone_metrics_server().await?;

    // EXAMPLE_NO_METRICS=1 serves the same app without the layer (to measure its cost).
    let metrics = std::env::var_os("EXAMPLE_NO_METRICS")
        .is_none()
        .then_some(metrics);
    let stopping = control.clone();
    let app = app(metrics)
        .layer(request_counter(control.clone()))
        // Once stopping, every answer closes its connection: keep-alive clients reconnect (to
        // another worker) instead of losing a request to the close of an idle connection.
        .layer(axum::middleware::map_response(
            move |mut res: axum::response::Response| {
                if stopping.is_stopping() {
                    res.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                std::future::ready(res)
            },
        ));
    let pid = std::process::id();
    let worker_id = &boot.worker_id;
    match listener {
        Listener::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(%worker_id, pid, "example-axum listening on http://{}/", l.local_addr()?);
            run_server(l, app, &control).await
        }
        Listener::Unix(l) => {
            let l = tokio::net::UnixListener::from_std(l)?;
            tracing::info!(%worker_id, pid, "example-axum listening on {:?}", l.local_addr()?);
            run_server(l, app, &control).await
        }
        _ => anyhow::bail!("unsupported listener kind"),
    }
}

/// Serve until a graceful stop has drained, a fast stop, or the graceful timeout.
/// A layer counting requests for max-requests.
fn request_counter(
    control: run::Control,
) -> axum::middleware::MapRequestLayer<
    impl Fn(axum::extract::Request) -> std::future::Ready<axum::extract::Request>
        + Clone
        + Send
        + Sync
        + 'static,
    (),
    (axum::extract::Request,),
> {
    axum::middleware::map_request(move |req: axum::extract::Request| {
        control.count_request();
        std::future::ready(req)
    })
}

/// A listener that stops accepting (pends forever) once `stop` resolves, so the other workers
/// take the accept queue while this one finishes its connections.
struct StopAccepting<L> {
    inner: L,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    stopped: bool,
}

impl<L: axum::serve::Listener> axum::serve::Listener for StopAccepting<L> {
    type Io = L::Io;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        if !self.stopped {
            tokio::select! {
                accepted = self.inner.accept() => return accepted,
                () = &mut self.stop => self.stopped = true,
            }
        }
        std::future::pending().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn run_server<L>(listener: L, app: Router, control: &run::Control) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // Stop accepting at once on a graceful stop, but ask the open connections to finish only a
    // moment later (see `example_support::ACCEPT_SETTLE`).
    let listener = StopAccepting {
        inner: listener,
        stop: Box::pin(control.graceful()),
        stopped: false,
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(control.graceful_settled());
    tokio::select! {
        r = server => r?,
        () = control.fast() => {}
        () = control.graceful_deadline() => {
            tracing::warn!("graceful timeout: exiting with requests in flight");
        }
    }
    Ok(())
}

//! An actix-web service instrumented with gpe-actix, runnable standalone or as a gpe-master
//! worker.
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

use std::process::ExitCode;
use std::time::Duration;

use actix_web::dev::Service as _;
use actix_web::{web, App, HttpResponse, HttpServer};
use gpe_actix::ActixMetrics;
use gpe_core::worker::Listener;

use example_support as run;

/// How long a connection accepted by actix-web's accept thread may take to reach a worker
/// thread (and its `on_connect`) after the accept thread was paused.
const ACCEPT_HANDOFF: Duration = Duration::from_millis(100);

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

fn main() -> ExitCode {
    run::main("example-actix", run::Boot::from_env_and_args, |boot| {
        actix_web::rt::System::new().block_on(serve(boot))
    })
}

async fn serve(boot: run::Boot) -> anyhow::Result<()> {
    let (metrics, worker, _sampler) = boot.metrics()?;
    let listener = boot.listener()?;
    let control = run::Control::start(&boot, &worker)?;
    let _metrics_server = boot.standalone_metrics_server().await?;
    let threads = std::env::var("EXAMPLE_ACTIX_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);

    let counter = control.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new()
            .wrap(ActixMetrics::new(metrics.clone()))
            .wrap_fn(move |req, srv| {
                counter.count_request();
                let stopping = counter.clone();
                let res = srv.call(req);
                async move {
                    let mut res = res.await?;
                    // Once stopping, every answer closes its connection: keep-alive clients
                    // reconnect (to another worker) instead of losing a request to the close of
                    // an idle connection.
                    if stopping.is_stopping() {
                        res.response_mut()
                            .head_mut()
                            .set_connection_type(actix_web::http::ConnectionType::Close);
                    }
                    Ok(res)
                }
            })
            .configure(routes)
    })
    .on_connect({
        // Each connection's extensions live as long as it does: the guard counts it as open.
        let tracker = control.clone();
        move |_, ext| {
            ext.insert(tracker.track_connection());
        }
    })
    .workers(threads)
    .disable_signals()
    .shutdown_timeout(control.graceful_timeout().as_secs());
    let server = match listener {
        Listener::Tcp(l) => {
            tracing::info!(worker_id = %boot.worker_id, "example-actix listening on http://{}/", l.local_addr()?);
            server.listen(l)?
        }
        Listener::Unix(l) => {
            tracing::info!(worker_id = %boot.worker_id, "example-actix listening on {:?}", l.local_addr()?);
            server.listen_uds(l)?
        }
        _ => anyhow::bail!("unsupported listener kind"),
    }
    .run();

    control.settle_when_idle();
    boot.tell_master_ready();
    let handle = server.handle();
    let stopper = control.clone();
    actix_web::rt::spawn(async move {
        stopper.graceful().await;
        // Stop accepting at once, and stop the connections only a moment later: one accepted
        // just before the stop may not have had its request read yet, and actix closes idle
        // connections on a graceful stop (see `example_support::ACCEPT_SETTLE`).
        handle.pause().await;
        // actix-web accepts on a thread of its own and hands each connection to a worker
        // thread, where `on_connect` counts it: give the hand-off time to finish before the
        // count of open connections is trusted.
        let settled = async {
            tokio::time::sleep(ACCEPT_HANDOFF).await;
            stopper.graceful_settled().await;
        };
        tokio::select! {
            () = stopper.fast() => return handle.stop(false).await,
            () = settled => {}
        }
        tokio::select! {
            () = stopper.fast() => handle.stop(false).await,
            () = handle.stop(true) => {}
        }
    });
    tokio::select! {
        r = server => r?,
        () = control.fast() => {}
    }
    Ok(())
}

//! What the benchmark servers share: the command line, the listener, the metrics store.
//!
//! Every binary takes `--workers-threads N` (default 1: tokio worker threads, or actix workers)
//! and listens on the socket gpe-master passes by socket activation (`LISTEN_FDS`, fd 3) when
//! there is one, else binds `BIND` (default `127.0.0.1:8080`).

use std::net::TcpListener;

use anyhow::{bail, Context};

/// The body of `GET /`.
pub const HELLO: &str = "hello, world\n";

/// `--workers-threads N` (also spelt `--worker-threads`), default 1.
pub fn threads_from_args() -> anyhow::Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut threads = 1;
    while let Some(a) = args.next() {
        let value = match a.split_once('=') {
            Some((flag, v)) if flag == "--workers-threads" || flag == "--worker-threads" => {
                v.to_owned()
            }
            _ if a == "--workers-threads" || a == "--worker-threads" => {
                args.next().context("--workers-threads needs a value")?
            }
            _ => bail!("unknown argument {a:?} (accepted: --workers-threads N)"),
        };
        threads = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("--workers-threads {value:?}: expected a positive integer"))?;
    }
    Ok(threads)
}

/// The listener: fd 3 from gpe-master (socket activation) if `LISTEN_FDS` is set, else `BIND`.
/// Under a master, a background thread keeps the heartbeat going.
pub fn listener() -> anyhow::Result<TcpListener> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        let ctx = gpe_core::worker::WorkerContext::from_env()?;
        let listeners = ctx.listeners()?;
        ctx.start_heartbeat();
        // The context owns nothing we still need; the heartbeat thread holds its own handle.
        match listeners.into_iter().next() {
            Some(gpe_core::worker::Listener::Tcp(l)) => {
                l.set_nonblocking(true)?;
                Ok(l)
            }
            Some(_) => bail!("the inherited listener is not a TCP socket"),
            None => bail!("LISTEN_FDS is set but no listener was inherited"),
        }
    } else {
        let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
        let l = TcpListener::bind(&addr).with_context(|| format!("cannot bind {addr}"))?;
        l.set_nonblocking(true)?;
        Ok(l)
    }
}

/// gpe's request metrics in the store of `PROMETHEUS_MULTIPROC_DIR` (worker id from
/// `GPE_WORKER_ID`, as under gpe-master).
/// The store is returned too: keep it for the life of the process.
pub fn gpe_metrics() -> anyhow::Result<(gpe_core::Store, gpe_tower::RequestMetrics)> {
    gpe_metrics_from(gpe_tower::RequestMetrics::builder())
}

/// As [`gpe_metrics`], with every path excluded (`exclude_path("/*")`): the `*-gpe-off`
/// servers measure gpe's wrappers without the recording.
pub fn gpe_metrics_off() -> anyhow::Result<(gpe_core::Store, gpe_tower::RequestMetrics)> {
    gpe_metrics_from(gpe_tower::RequestMetrics::builder().exclude_path("/*"))
}

fn gpe_metrics_from(
    builder: gpe_tower::RequestMetricsBuilder,
) -> anyhow::Result<(gpe_core::Store, gpe_tower::RequestMetrics)> {
    let store = gpe_core::Store::from_env()?;
    let metrics = builder.build(&store)?;
    Ok((store, metrics))
}

/// Serve the `App` that `$app` builds (an expression, evaluated once per actix worker, that may
/// use clones of what it captures) on [`listener`], with `$threads` actix workers, until
/// stopped; in a function returning `anyhow::Result<()>`. A macro because `HttpServer::new`'s
/// bounds on the app factory would be longer than the server setup they spare.
#[macro_export]
macro_rules! serve_actix {
    ($threads:expr, $app:expr) => {{
        let threads: usize = $threads;
        let listener = $crate::listener()?;
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || $app)
                .workers(threads)
                .listen(listener)?
                .run()
                .await
        })?;
        Ok(())
    }};
}

/// Serve the actix-web routes with gpe-actix's middleware recording into `metrics`, on
/// [`listener`], with `threads` actix workers, until stopped.
pub fn serve_actix_gpe(metrics: gpe_tower::RequestMetrics, threads: usize) -> anyhow::Result<()> {
    serve_actix!(
        threads,
        actix_web::App::new()
            .wrap(gpe_actix::ActixMetrics::new(metrics.clone()))
            .configure(actix_routes)
    )
}

/// A tokio runtime with `threads` worker threads.
pub fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

/// The axum application: `GET /` and `GET /users/{id}`.
pub fn axum_router() -> axum::Router {
    use axum::extract::Path;
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(|| async { HELLO }))
        .route(
            "/users/{id}",
            get(|Path(id): Path<u64>| async move { format!("user {id}\n") }),
        )
}

/// Serve `app` on the listener with `threads` runtime threads.
pub fn serve_axum(app: axum::Router, threads: usize) -> anyhow::Result<()> {
    serve_axum_on(&runtime(threads)?, app)
}

/// Serve `app` on the listener, on an existing runtime.
pub fn serve_axum_on(rt: &tokio::runtime::Runtime, app: axum::Router) -> anyhow::Result<()> {
    let listener = listener()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The actix-web routes: `GET /` and `GET /users/{id}`.
pub fn actix_routes(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    cfg.route("/", web::get().to(|| async { HELLO })).route(
        "/users/{id}",
        web::get().to(|id: web::Path<u64>| async move { format!("user {id}\n") }),
    );
}

/// The sum of every `gunicorn_worker_requests_total` sample of a text exposition.
pub fn sum_requests(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix("gunicorn_worker_requests_total")
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

//! actix-web hello world with gpe-actix's middleware, recording into `PROMETHEUS_MULTIPROC_DIR`.
use actix_web::{App, HttpServer};

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let (_store, metrics) = gpe_http_bench::gpe_metrics()?;
    let listener = gpe_http_bench::listener()?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .wrap(gpe_actix::ActixMetrics::new(metrics.clone()))
                .configure(gpe_http_bench::actix_routes)
        })
        .workers(threads)
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}

//! actix-web hello world with actix-web-prom's middleware (and its `/metrics` endpoint).
use actix_web::{App, HttpServer};

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let prometheus = actix_web_prom::PrometheusMetricsBuilder::new("bench")
        .endpoint("/metrics")
        .build()
        .map_err(|e| anyhow::anyhow!("actix-web-prom: {e}"))?;
    let listener = gpe_http_bench::listener()?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .wrap(prometheus.clone())
                .configure(gpe_http_bench::actix_routes)
        })
        .workers(threads)
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}

//! actix-web hello world with actix-web-prom's middleware (and its `/metrics` endpoint).
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let prometheus = actix_web_prom::PrometheusMetricsBuilder::new("bench")
        .endpoint("/metrics")
        .build()
        .map_err(|e| anyhow::anyhow!("actix-web-prom: {e}"))?;
    gpe_http_bench::serve_actix!(
        threads,
        actix_web::App::new()
            .wrap(prometheus.clone())
            .configure(gpe_http_bench::actix_routes)
    )
}

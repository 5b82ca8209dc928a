//! actix-web hello world with gpe-actix's middleware, recording into `PROMETHEUS_MULTIPROC_DIR`.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let (_store, metrics) = gpe_http_bench::gpe_metrics()?;
    gpe_http_bench::serve_actix_gpe(metrics, threads)
}

//! actix-web hello world with gpe-actix's middleware, every path excluded
//! (`exclude_path("/*")`): the middleware's wrappers without the recording.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let (_store, metrics) = gpe_http_bench::gpe_metrics_off()?;
    gpe_http_bench::serve_actix_gpe(metrics, threads)
}

//! axum hello world with gpe-tower's layer, every path excluded (`exclude_path("/*")`): the
//! layer's wrappers without the recording, to split gpe's cost in two.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let (_store, metrics) = gpe_http_bench::gpe_metrics_off()?;
    let app = gpe_http_bench::axum_router().layer(gpe_tower::MetricsLayer::new(metrics));
    gpe_http_bench::serve_axum(app, threads)
}

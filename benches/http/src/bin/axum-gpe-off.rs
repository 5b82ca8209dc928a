//! axum hello world with gpe-tower's layer, every path excluded (`exclude_path("/*")`): the
//! layer's wrappers without the recording, to split gpe's cost in two.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let store = gpe_core::Store::from_env()?;
    let metrics = gpe_tower::RequestMetrics::builder()
        .exclude_path("/*")
        .build(&store)?;
    let app = gpe_http_bench::axum_router().layer(gpe_tower::MetricsLayer::new(metrics));
    gpe_http_bench::serve_axum(app, threads)
}

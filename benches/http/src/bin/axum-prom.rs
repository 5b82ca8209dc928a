//! axum hello world with axum-prometheus's standard layer (and its `/metrics` route).
use axum::routing::get;

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
    let app = gpe_http_bench::axum_router()
        .route("/metrics", get(move || async move { handle.render() }))
        .layer(layer);
    gpe_http_bench::serve_axum(app, threads)
}

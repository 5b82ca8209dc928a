//! axum hello world with axum-prometheus's standard layer (and its `/metrics` route).
use axum::routing::get;

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    // axum-prometheus spawns its upkeep task when the handle is made: inside a runtime.
    let rt = gpe_http_bench::runtime(threads)?;
    let app = {
        let _guard = rt.enter();
        let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
        gpe_http_bench::axum_router()
            .route("/metrics", get(move || async move { handle.render() }))
            .layer(layer)
    };
    gpe_http_bench::serve_axum_on(&rt, app)
}

//! axum hello world with a layer that does nothing (`tower_layer::Identity`) added by
//! `Router::layer`: what axum itself charges for any middleware added that way (the layered route
//! is boxed, and cloned per request), before the middleware does anything.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let app = gpe_http_bench::axum_router().layer(tower_layer::Identity::new());
    gpe_http_bench::serve_axum(app, threads)
}

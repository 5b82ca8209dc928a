//! axum hello world with tower-http's `InFlightRequestsLayer` added by `Router::layer`: the
//! smallest middleware of the same shape as gpe's (it wraps the response future and body, and
//! ends its measurement when the body is finished or dropped), from the field's own crate. It
//! updates one process-local atomic at the start and one at the end. Its ratio to axum-bare is
//! what any middleware that measures to the end of the body pays here before it records anything.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    // The counter is read nowhere here; it lives as long as the server.
    let (layer, _counter) = tower_http::metrics::InFlightRequestsLayer::pair();
    let app = gpe_http_bench::axum_router().layer(layer);
    gpe_http_bench::serve_axum(app, threads)
}

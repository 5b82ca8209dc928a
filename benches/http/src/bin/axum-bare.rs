//! axum hello world, no metrics.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    gpe_http_bench::serve_axum(gpe_http_bench::axum_router(), threads)
}

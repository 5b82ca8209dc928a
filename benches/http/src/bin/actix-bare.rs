//! actix-web hello world, no metrics.
fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    gpe_http_bench::serve_actix!(
        threads,
        actix_web::App::new().configure(gpe_http_bench::actix_routes)
    )
}

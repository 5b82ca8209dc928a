//! actix-web hello world, no metrics.
use actix_web::{App, HttpServer};

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let listener = gpe_http_bench::listener()?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().configure(gpe_http_bench::actix_routes))
            .workers(threads)
            .listen(listener)?
            .run()
            .await
    })?;
    Ok(())
}

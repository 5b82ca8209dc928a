//! actix-web hello world with gpe-actix's middleware, every path excluded
//! (`exclude_path("/*")`): the middleware's wrappers without the recording.
use actix_web::{App, HttpServer};

fn main() -> anyhow::Result<()> {
    let threads = gpe_http_bench::threads_from_args()?;
    let store = gpe_core::Store::from_env()?;
    let metrics = gpe_tower::RequestMetrics::builder()
        .exclude_path("/*")
        .build(&store)?;
    let listener = gpe_http_bench::listener()?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .wrap(gpe_actix::ActixMetrics::new(metrics.clone()))
                .configure(gpe_http_bench::actix_routes)
        })
        .workers(threads)
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}

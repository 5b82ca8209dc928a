//! Per-request cost of the gpe-actix middleware: the same actix-web app called bare and wrapped
//! in [`ActixMetrics`], in the same run, through `actix_web::test::call_service` on one actix
//! system (request in, route matched, response body read to its end). Both sides pay the same
//! test-harness overhead, so the difference is the middleware's. Run with
//! `cargo bench -p gpe-actix --bench middleware`.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::hint::black_box;

use actix_web::{test, web, App, HttpResponse};
use criterion::{criterion_group, criterion_main, Criterion};
use gpe_actix::ActixMetrics;
use gpe_actix::RequestMetrics;

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("hello, world\n")
}

fn middleware(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = gpe_core::Store::open(dir.path()).unwrap();
    let metrics = RequestMetrics::builder().build(&store).unwrap();
    let system = actix_web::rt::System::new();
    let bare = system.block_on(test::init_service(
        App::new().route("/users/{id}", web::get().to(hello)),
    ));
    let with = system.block_on(test::init_service(
        App::new()
            .wrap(ActixMetrics::new(metrics.clone()))
            .route("/users/{id}", web::get().to(hello)),
    ));
    let route_first = system.block_on(test::init_service(
        App::new()
            .wrap(ActixMetrics::new(metrics).in_flight_by_endpoint())
            .route("/users/{id}", web::get().to(hello)),
    ));
    let mut g = c.benchmark_group("actix_request");
    macro_rules! bench {
        ($name:literal, $app:expr) => {
            g.bench_function($name, |b| {
                b.iter(|| {
                    system.block_on(async {
                        let req = test::TestRequest::get().uri("/users/42").to_request();
                        let res = test::call_service(&$app, black_box(req)).await;
                        black_box(test::read_body(res).await.len())
                    })
                })
            });
        };
    }
    bench!("bare", bare);
    bench!("with_gpe_middleware", with);
    bench!("with_gpe_middleware_in_flight_by_endpoint", route_first);
    g.finish();
}

criterion_group!(benches, middleware);
criterion_main!(benches);

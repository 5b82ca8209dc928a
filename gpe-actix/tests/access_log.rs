//! The access log through the actix-web middleware (requests through actix's test service)
//! and through `gpe_actix::serve` (a real TCP connection): the same line format as gpe-tower's,
//! parsed strictly.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpResponse};
use gpe_actix::serve::Worker;
use gpe_actix::ActixMetrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../../gpe-core/tests/shared/access_log.rs"]
mod access_log;

use access_log::{assert_scenario, log_in, scenario_metrics, wait_for_lines};

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users/{id}", web::get().to(|| async { "user" }))
        .route("/users/{id}", web::post().to(|| async { "made" }))
        .route(
            "/fail",
            web::get().to(|| async { HttpResponse::ServiceUnavailable().body("down") }),
        )
        .route("/health", web::get().to(|| async { "ok" }));
}

#[actix_web::test]
async fn one_line_per_request_with_every_atom() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = scenario_metrics(dir.path());
    let app = test::init_service(
        App::new()
            .wrap(ActixMetrics::new(metrics).access_log(log_in(dir.path())))
            .configure(routes),
    )
    .await;
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();

    let requests = [
        test::TestRequest::get()
            .uri("/users/7?full=1&x=%22")
            .peer_addr(peer)
            .insert_header(("user-agent", "curl/8 \"quoted\""))
            .insert_header(("referer", "http://example.com/"))
            // alice:secret
            .insert_header(("authorization", "Basic YWxpY2U6c2VjcmV0"))
            .insert_header(("x-request-id", "r-1")),
        test::TestRequest::post().uri("/users/8").set_payload("{}"),
        test::TestRequest::get().uri("/fail"),
        test::TestRequest::get().uri("/nope"),
        test::TestRequest::get().uri("/health"),
    ];
    let mut statuses = Vec::new();
    for req in requests {
        let res = test::call_service(&app, req.to_request()).await;
        statuses.push(res.status());
        drop(test::read_body(res).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::NOT_FOUND,
            StatusCode::OK
        ]
    );

    let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    assert_scenario(&text, &[]);
}

#[actix_web::test]
async fn serve_logs_the_clients_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let worker = Worker::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .store(gpe_core::Store::open(dir.path()).unwrap())
        .no_metrics_server()
        .access_log(log_in(dir.path()))
        .threads(1)
        .build()
        .unwrap();
    let addr = worker.local_addrs()[0];
    let shutdown = worker.shutdown().clone();
    let serving = actix_web::rt::spawn(worker.serve(|| App::new().configure(routes)));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        b"GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: q\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let lines = wait_for_lines(&path, 1, Duration::from_secs(10));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].host, "127.0.0.1");
    assert_eq!(lines[0].target, "/users/1");
    assert_eq!(lines[0].request_id, "q");
    assert_eq!(lines[0].status, "200");

    shutdown.stop(gpe_core::worker::shutdown::StopReason::Quit);
    serving.await.unwrap().unwrap();
}

//! The access log through the layer (an axum stack, requests sent with `oneshot`) and through
//! `serve` (a real TCP connection, whose client address `serve` passes on): one parsed line per
//! request, with the values of every atom of the shared format.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use gpe_tower::serve::LocalAddr;
use gpe_tower::{MetricsLayer, RequestMetrics};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

#[path = "../../gpe-core/tests/shared/access_log.rs"]
mod access_log;
mod common;

use access_log::{assert_scenario, log_in, parse_all, scenario_metrics, wait_for_lines};

fn routes() -> Router {
    common::scenario_routes().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }),
    )
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

#[tokio::test]
async fn one_line_per_request_with_every_atom() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = scenario_metrics(dir.path());
    let log = log_in(dir.path());
    let app = routes().layer(MetricsLayer::new(metrics).access_log(log));
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();

    let mut req = Request::get("/users/7?full=1&x=%22")
        .header("user-agent", "curl/8 \"quoted\"")
        .header("referer", "http://example.com/")
        // alice:secret
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .header("x-request-id", "r-1")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(peer);
    assert_eq!(send(&app, req).await, (StatusCode::OK, b"user".to_vec()));
    let post = Request::post("/users/8").body(Body::from("{}")).unwrap();
    assert_eq!(send(&app, post).await.0, StatusCode::OK);
    let fail = Request::get("/fail").body(Body::empty()).unwrap();
    assert_eq!(send(&app, fail).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let missing = Request::get("/nope").body(Body::empty()).unwrap();
    assert_eq!(send(&app, missing).await.0, StatusCode::NOT_FOUND);
    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(send(&app, health).await.0, StatusCode::OK);
    // The client gives up while the handler runs: 499, as in the metrics.
    let slow = Request::get("/slow").body(Body::empty()).unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(50), app.clone().oneshot(slow)).await;
    assert!(gave_up.is_err());

    let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let lines = assert_scenario(&text, &[("GET", "/slow", "499", "0")]);
    assert!(
        lines[4].micros >= 50_000,
        "the 499 waited 50 ms: {:?}",
        lines[4]
    );
}

#[tokio::test]
async fn no_access_log_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = gpe_core::Store::open(dir.path()).unwrap();
    let metrics = RequestMetrics::builder().build(&store).unwrap();
    let app = routes().layer(MetricsLayer::new(metrics));
    let req = Request::get("/users/1").body(Body::empty()).unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    assert!(!dir.path().join("access.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_the_clients_address_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let worker = common::standalone(dir.path())
        .access_log(log_in(dir.path()))
        .build()
        .unwrap();
    let Some(LocalAddr::Tcp(addr)) = worker.local_addrs().into_iter().next() else {
        panic!("bound to TCP")
    };
    let log = worker.access_log().cloned().expect("an access log");
    let shutdown = worker.shutdown().clone();
    let serving = tokio::spawn(worker.serve(routes()));

    let get = |path: &'static str| async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let raw = format!(
            "GET {path} HTTP/1.0\r\nHost: x\r\nUser-Agent: raw\r\nX-Request-Id: {path}\r\n\r\n"
        );
        conn.write_all(raw.as_bytes()).await.unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    };
    get("/users/1").await;
    let lines = wait_for_lines(&path, 1, Duration::from_secs(10));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].host, "127.0.0.1");
    assert_eq!(lines[0].protocol, "HTTP/1.0");
    assert_eq!(lines[0].request_id, "/users/1");

    // logrotate: move the file away, reopen (what USR1 does), log on into a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen().unwrap();
    get("/users/2").await;
    let lines = wait_for_lines(&path, 1, Duration::from_secs(10));
    assert_eq!(lines.len(), 1, "the new file holds the new line only");
    assert_eq!(lines[0].target, "/users/2");
    assert_eq!(
        parse_all(&std::fs::read_to_string(&rotated).unwrap()).len(),
        1
    );

    shutdown.stop(gpe_core::worker::shutdown::StopReason::Quit);
    serving.await.unwrap().unwrap();
}

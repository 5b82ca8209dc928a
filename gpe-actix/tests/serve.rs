//! `gpe_actix::serve`: a standalone worker in this process, bound to 127.0.0.1:0, serving an
//! actix-web app with the metrics middleware, a client that hangs up mid-response, and a
//! graceful stop through its `Shutdown`, as TERM would.
//!
//! actix-web runs a handler to its end even when the client has gone (it notices only when it
//! writes), so a hang-up is seen while the response streams: it is counted as a client
//! disconnect under the status that was sent. (gpe-tower's `serve` also sees a hang-up during
//! the handler, which it records as status 499.)

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse};
use bytes::Bytes;
use gpe_actix::serve::Worker;
use gpe_core::worker::shutdown::StopReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../../gpe-core/tests/shared/exposition.rs"]
mod exposition;

use exposition::assert_stop_recorded;

/// An endless response body: a chunk every 20 ms.
struct Ticks(tokio::time::Interval);

impl futures_core::Stream for Ticks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .poll_tick(cx)
            .map(|_| Some(Ok(Bytes::from_static(b"tick\n"))))
    }
}

fn text(dir: &std::path::Path) -> String {
    gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir).gather()).unwrap()
}

/// Poll the exposition (at most 10 s) until it contains `series`.
async fn wait_for(dir: &std::path::Path, series: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(dir).contains(series) {
        assert!(
            Instant::now() < deadline,
            "never saw {series} in {}",
            text(dir)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn serves_counts_a_hang_up_apart_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .store(gpe_core::Store::open(dir.path()).unwrap())
        .no_metrics_server()
        .threads(1)
        .build()
        .unwrap();
    let addr = worker.local_addrs()[0];
    let shutdown = worker.shutdown().clone();
    let serving = actix_web::rt::spawn(worker.serve(|| {
        App::new()
            .route("/users/{id}", web::get().to(|| async { "user\n" }))
            .route(
                "/stream",
                web::get().to(|| async {
                    let ticks = tokio::time::interval(Duration::from_millis(20));
                    HttpResponse::Ok().streaming(Ticks(ticks))
                }),
            )
    }));

    // An ordinary request, recorded under its resource pattern.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /users/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    wait_for(
        dir.path(),
        r#"gunicorn_worker_requests_total{endpoint="/users/{id}",method="GET",status="200",worker_id="0"} 1"#,
    )
    .await;

    // A client that goes away while the response streams: a disconnect, under the status
    // that was sent, and never a failure.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(conn);
    wait_for(
        dir.path(),
        r#"gunicorn_worker_client_disconnects_total{endpoint="/stream",method="GET",worker_id="0"} 1"#,
    )
    .await;
    let t = text(dir.path());
    assert!(
        t.contains(r#"gunicorn_worker_requests_total{endpoint="/stream",method="GET",status="200",worker_id="0"} 1"#),
        "{t}"
    );
    assert!(!t.contains("gunicorn_worker_failed_requests_total{"), "{t}");
    assert!(
        t.contains(
            r#"gunicorn_worker_requests_in_flight{endpoint="",method="GET",worker_id="0"} 0"#
        ),
        "{t}"
    );

    // TERM: nothing in flight, so the worker stops within moments and records why.
    let stopped_at = Instant::now();
    shutdown.stop(StopReason::Term);
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(3));
    assert_stop_recorded(&text(dir.path()), "term", "stopping");
}

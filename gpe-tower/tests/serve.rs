//! `gpe_tower::serve`: a standalone worker in this process, bound to 127.0.0.1:0 through the
//! builder, serving the app (with the metrics layer) and its own `/metrics`, stopped by its
//! `Shutdown` as TERM and QUIT would.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use gpe_core::expose::server::ServerConfig;
use gpe_core::worker::shutdown::StopReason;
use gpe_tower::serve::{LocalAddr, Worker};
use gpe_tower::{BuildError, RequestMetrics};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod common;
#[path = "../../gpe-core/tests/shared/exposition.rs"]
mod exposition;

use exposition::assert_stop_recorded;

fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slept\n"
            }),
        )
        .route(
            "/forever",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "never\n"
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/upload",
            axum::routing::post(
                |body: axum::body::Bytes| async move { format!("{}\n", body.len()) },
            ),
        )
}

fn text(dir: &std::path::Path) -> String {
    gpe_core::expose::encode_text(&gpe_core::MultiProcessCollector::new(dir).gather()).unwrap()
}

/// One response read off a keep-alive connection: status line, lower-cased headers, body.
struct Reply {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn request(conn: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<Reply> {
    send(conn, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await
}

/// Write `raw` (a whole HTTP/1.1 request) and read the response.
async fn send(conn: &mut BufReader<TcpStream>, raw: &str) -> std::io::Result<Reply> {
    conn.get_mut().write_all(raw.as_bytes()).await?;
    let mut status = String::new();
    conn.read_line(&mut status).await?;
    if status.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await?;
    Ok(Reply {
        status: status.trim_end().to_owned(),
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

/// Wait (at most 10 s) until the store shows one request to `endpoint` in flight.
async fn in_flight(dir: &std::path::Path, endpoint: &str) {
    let series = format!(
        r#"gunicorn_worker_requests_in_flight{{endpoint="{endpoint}",method="GET",worker_id="0"}} 1"#
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(dir).contains(&series) {
        assert!(Instant::now() < deadline, "{endpoint} never in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

/// A standalone worker on 127.0.0.1:0 writing into `dir`, without its own `/metrics` server.
fn standalone(dir: &std::path::Path) -> Worker {
    common::standalone(dir).build().unwrap()
}

fn tcp_addr(worker: &Worker) -> SocketAddr {
    match worker.local_addrs().as_slice() {
        [LocalAddr::Tcp(a)] => *a,
        other => panic!("one TCP listener expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_counts_and_drains_on_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::builder()
        .bind("127.0.0.1:0")
        .unwrap()
        .store(gpe_core::Store::open(dir.path()).unwrap())
        .request_metrics(RequestMetrics::builder().exclude_path("/health"))
        .metrics_server(ServerConfig::new("127.0.0.1:0".parse().unwrap()))
        .build()
        .unwrap();
    assert!(!worker.is_managed());
    assert_eq!(worker.worker_id(), "0");
    let addr = tcp_addr(&worker);
    let metrics_addr = worker.metrics_addr().expect("standalone /metrics");
    let shutdown = worker.shutdown().clone();
    let serving = tokio::spawn(worker.serve(app()));

    // Keep-alive: two requests on one connection, no `Connection: close` while running.
    let mut conn = connect(addr).await;
    for i in 0..2 {
        let r = request(&mut conn, &format!("/users/{i}")).await.unwrap();
        assert_eq!(
            (r.status.as_str(), r.body.as_str()),
            ("HTTP/1.1 200 OK", "user\n")
        );
        assert_eq!(r.header("connection"), None);
    }
    let r = request(&mut conn, "/health").await.unwrap();
    assert_eq!(r.body, "ok\n");
    // Request sizes: from Content-Length, and counted for a chunked upload (3 + 4 bytes).
    for (upload, size) in [
        (
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            "5\n",
        ),
        (
            "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            "7\n",
        ),
    ] {
        let r = send(&mut conn, upload).await.unwrap();
        assert_eq!(r.body, size, "{upload:?}");
    }
    let r = request(&mut conn, "/nowhere").await.unwrap();
    assert!(r.status.starts_with("HTTP/1.1 404"), "{}", r.status);

    // The standalone /metrics server reads the same store.
    let mut scrape = connect(metrics_addr).await;
    let m = request(&mut scrape, "/metrics").await.unwrap();
    assert!(m.status.starts_with("HTTP/1.1 200"), "{}", m.status);
    assert!(
        m.body.contains(
            r#"gunicorn_worker_requests_total{endpoint="/users/{id}",method="GET",status="200",worker_id="0"} 2"#
        ),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            r#"gunicorn_worker_requests_total{endpoint="<unmatched>",method="GET",status="404",worker_id="0"} 1"#
        ),
        "{}",
        m.body
    );
    assert!(!m.body.contains(r#"endpoint="/health""#), "{}", m.body);
    assert!(
        m.body.contains(
            r#"gunicorn_worker_request_size_bytes_sum{endpoint="/upload",method="POST",status="200",worker_id="0"} 12"#
        ),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("gunicorn_worker_memory_bytes{"),
        "{}",
        m.body
    );

    // A request in flight when the graceful stop comes, longer than ACCEPT_SETTLE.
    let slow = tokio::spawn(async move {
        let mut c = connect(addr).await;
        request(&mut c, "/slow").await
    });
    in_flight(dir.path(), "/slow").await;
    let stopped_at = Instant::now();
    assert!(shutdown.stop(StopReason::Term));

    // While settling, an open keep-alive connection is still answered, with `Connection:
    // close`.
    let r = request(&mut conn, "/users/9").await.unwrap();
    assert_eq!(r.body, "user\n");
    assert_eq!(r.header("connection"), Some("close"));

    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.body, "slept\n");
    assert_eq!(r.header("connection"), Some("close"));

    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    // Not before the settle time: connections were only asked to finish then.
    assert!(stopped_at.elapsed() >= gpe_core::worker::shutdown::ACCEPT_SETTLE);

    let t = text(dir.path());
    assert_stop_recorded(&t, "term", "stopping");
    assert!(
        t.contains(r#"gunicorn_worker_restart_total{reason="quit",worker_id="0"} 0"#)
            || !t.contains(r#"reason="quit""#),
        "{t}"
    );
    assert!(
        t.contains(
            r#"gunicorn_worker_requests_total{endpoint="/slow",method="GET",status="200",worker_id="0"} 1"#
        ),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_stop_ends_serve_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let worker = standalone(dir.path());
    assert_eq!(worker.metrics_addr(), None);
    let addr = tcp_addr(&worker);
    let shutdown = worker.shutdown().clone();
    let serving = tokio::spawn(worker.serve(app()));

    let forever = tokio::spawn(async move {
        let mut c = connect(addr).await;
        request(&mut c, "/forever").await
    });
    in_flight(dir.path(), "/forever").await;
    let stopped_at = Instant::now();
    shutdown.stop(StopReason::Quit);
    tokio::time::timeout(Duration::from_secs(2), serving)
        .await
        .expect("serve returns at once on a fast stop")
        .unwrap()
        .unwrap();
    assert!(stopped_at.elapsed() < gpe_core::worker::shutdown::ACCEPT_SETTLE);
    forever.abort();

    let t = text(dir.path());
    // Fast from the start: recorded once, as quit.
    assert_stop_recorded(&t, "quit", "quitting");
    assert!(!t.contains(r#"{reason="term",worker_id="0"} 1"#), "{t}");
}

#[tokio::test(flavor = "current_thread")]
async fn bad_input_is_an_error() {
    assert!(matches!(
        Worker::builder().bind("nowhere"),
        Err(BuildError::InvalidBind(a)) if a == "nowhere"
    ));
    assert!(matches!(
        Worker::builder().sample_interval(Duration::ZERO),
        Err(BuildError::ZeroInterval)
    ));
    // A taken port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Worker::builder()
        .bind(&taken.local_addr().unwrap().to_string())
        .unwrap()
        .store(gpe_core::Store::open(dir.path()).unwrap())
        .no_metrics_server()
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::Bind { .. }), "{err}");
}

#[test]
fn serving_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let worker = Worker::builder()
            .bind(&format!("unix:{}", sock.display()))
            .unwrap()
            .store(gpe_core::Store::open(dir.path()).unwrap())
            .no_metrics_server()
            .build()
            .unwrap();
        assert_eq!(worker.local_addrs(), [LocalAddr::Unix(Some(sock.clone()))]);
        let shutdown = worker.shutdown().clone();
        let serving = tokio::spawn(worker.serve(app()));
        let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        s.write_all(b"GET /users/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("user\n"), "{out}");
        shutdown.stop(StopReason::Term);
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    });
}

/// A client that hangs up while its request is in the handler is counted apart: status `499`
/// (nginx's "client closed request") and `client_disconnects_total`, never as a 200 or a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_request_is_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let worker = standalone(dir.path());
    let addr = tcp_addr(&worker);
    let shutdown = worker.shutdown().clone();
    let serving = tokio::spawn(worker.serve(app()));

    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    in_flight(dir.path(), "/forever").await;
    drop(conn); // the client goes away mid-request

    let aborted = r#"gunicorn_worker_requests_total{endpoint="/forever",method="GET",status="499",worker_id="0"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(dir.path()).contains(aborted) {
        assert!(
            Instant::now() < deadline,
            "the hang-up was never recorded: {}",
            text(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = text(dir.path());
    assert!(
        t.contains(r#"gunicorn_worker_client_disconnects_total{endpoint="/forever",method="GET",worker_id="0"} 1"#),
        "{t}"
    );
    assert!(!t.contains("gunicorn_worker_failed_requests_total{"), "{t}");
    let statuses: std::collections::BTreeSet<&str> = t
        .split(r#"endpoint="/forever",method="GET",status=""#)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(statuses, ["499"].into(), "{t}");
    assert!(
        t.contains(r#"gunicorn_worker_requests_in_flight{endpoint="/forever",method="GET",worker_id="0"} 0"#),
        "{t}"
    );

    shutdown.stop(StopReason::Quit);
    serving.await.unwrap().unwrap();
}

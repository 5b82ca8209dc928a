//! The layer in an axum stack: exact counts, bounded cardinality, failures, body-drop timing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use gpe_tower::{MetricsLayer, RequestInfo, RequestMetrics};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

mod common;
#[path = "../../gpe-core/tests/shared/request_metrics.rs"]
mod request_metrics;

use request_metrics::{fixture, series_count, slow_body_fixture, sum, tenant_fixture, TENANTS};

fn app(metrics: RequestMetrics) -> Router {
    common::scenario_routes()
        .route("/", get(|| async { "hello" }))
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .route(
            "/slow-body",
            get(|| async {
                Response::new(Body::new(Delayed::new(vec![
                    (Duration::ZERO, Bytes::from_static(b"first")),
                    (Duration::from_millis(300), Bytes::from_static(b"second")),
                ])))
            }),
        )
        .layer(MetricsLayer::new(metrics))
}

/// A body sending its chunks after the given delays.
struct Delayed {
    chunks: VecDeque<(Duration, Bytes)>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Delayed {
    fn new(chunks: Vec<(Duration, Bytes)>) -> Self {
        Delayed {
            chunks: chunks.into(),
            sleep: None,
        }
    }
}

impl http_body::Body for Delayed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let Some((delay, _)) = self.chunks.front().cloned() else {
            return Poll::Ready(None);
        };
        if self.sleep.is_none() {
            self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
        }
        if self.sleep.as_mut().unwrap().as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let (_, chunk) = self.chunks.pop_front().unwrap();
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

async fn get_body(app: &Router, method: &str, uri: &str) -> (StatusCode, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

#[tokio::test]
async fn counts_add_up_exactly() {
    let f = fixture(RequestMetrics::builder().exclude_path("/health"));
    let app = app(f.metrics.clone());
    for i in 0..200 {
        let (uri, method) = match i % 4 {
            0 => ("/".to_owned(), "GET"),
            1 => (format!("/users/{i}"), "GET"),
            2 => (format!("/users/{i}"), "POST"),
            _ => (format!("/nowhere/{i}"), "GET"),
        };
        get_body(&app, method, &uri).await;
    }
    for _ in 0..10 {
        get_body(&app, "GET", "/health").await;
    }
    f.assert_mixed_requests_counted();
    assert_eq!(
        f.sum("gunicorn_worker_request_duration_seconds_count", &[]),
        200.0
    );
    assert_eq!(f.requests(&[("endpoint", "/health")]), 0.0);
    assert_eq!(f.sum("gunicorn_worker_failed_requests_total", &[]), 0.0);
}

#[tokio::test]
async fn random_url_scan_stays_bounded() {
    let f = fixture(RequestMetrics::builder().max_series(20).unwrap());
    let app = app(f.metrics.clone());
    for i in 0..2000 {
        get_body(&app, "GET", &format!("/scan/{i}/{}", i * 7919)).await;
    }
    // Made-up methods share `OTHER`.
    for i in 0..50 {
        get_body(&app, &format!("X{i}"), "/").await;
    }
    let text = f.text();
    let series = series_count(&text, "gunicorn_worker_requests_total");
    assert!(series <= 3, "{text}");
    assert_eq!(sum(&text, "gunicorn_worker_requests_total", &[]), 2050.0);

    // A hook that returns raw paths is still capped: the rest goes to `<overflow>`.
    let f = fixture(RequestMetrics::builder().max_series(20).unwrap());
    let app = Router::new().fallback(|| async { "any" }).layer(
        MetricsLayer::new(f.metrics.clone())
            .endpoint_label(|r: &RequestInfo<'_>| Some(r.path.to_owned())),
    );
    for i in 0..500 {
        get_body(&app, "GET", &format!("/raw/{i}")).await;
    }
    let text = f.text();
    let series = series_count(&text, "gunicorn_worker_requests_total");
    assert!(series <= 21, "{series} series");
    assert_eq!(f.metrics.series_count(), 20);
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_requests_total",
            &[("endpoint", "<overflow>")]
        ),
        480.0
    );
    assert_eq!(sum(&text, "gunicorn_worker_requests_total", &[]), 500.0);
}

#[tokio::test]
async fn server_errors_and_panics_are_counted() {
    let f = fixture(RequestMetrics::builder());
    let app = app(f.metrics.clone());
    for _ in 0..3 {
        assert_eq!(
            get_body(&app, "GET", "/fail").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get_body(&app, "GET", "/panic").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(f.failed("status_5xx"), 3.0);
    assert_eq!(f.failed("panic"), 2.0);
    assert_eq!(
        f.sum(
            "gunicorn_worker_error_handling_total",
            &[("endpoint", "/panic"), ("status", "500")]
        ),
        2.0
    );
    assert_eq!(
        f.requests(&[("endpoint", "/panic"), ("status", "500")]),
        2.0
    );
    assert_eq!(f.requests(&[]), 5.0);
}

#[tokio::test]
async fn service_errors_are_counted() {
    let f = fixture(RequestMetrics::builder());
    let svc = tower::ServiceBuilder::new()
        .layer(MetricsLayer::new(f.metrics.clone()))
        .service_fn(|_req: Request<Body>| async {
            Err::<Response<Body>, _>(std::io::Error::other("backend down"))
        });
    let err = svc
        .oneshot(Request::get("/x").body(Body::empty()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "backend down");
    assert_eq!(
        f.sum(
            "gunicorn_worker_failed_requests_total",
            &[("error_type", "service_error"), ("status", "none")]
        ),
        1.0
    );
    assert_eq!(f.requests(&[("status", "none")]), 1.0);
    assert_eq!(f.sum("gunicorn_worker_client_disconnects_total", &[]), 0.0);
}

#[tokio::test]
async fn duration_ends_with_the_body_and_early_drops_count() {
    let f = slow_body_fixture();
    let app = app(f.metrics.clone());

    // Read to the end: the duration covers the 300 ms between the chunks.
    let started = Instant::now();
    let res = app
        .clone()
        .oneshot(Request::get("/slow-body").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let head_after = started.elapsed();
    assert!(head_after < Duration::from_millis(250), "{head_after:?}");
    assert_eq!(f.in_flight(&[]), 1.0);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"firstsecond");
    f.assert_slow_body_recorded("/slow-body");

    // Drop the body after its first chunk: a client disconnect, recorded at the drop.
    let res = app
        .clone()
        .oneshot(Request::get("/slow-body").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
    assert_eq!(f.in_flight(&[]), 1.0);
    drop(body);
    f.assert_body_drop_recorded("/slow-body");
    assert_eq!(
        f.requests(&[("endpoint", "/slow-body"), ("status", "200")]),
        2.0
    );

    // Drop the response future before the response: status 499, a disconnect too.
    let svc = tower::ServiceBuilder::new()
        .layer(MetricsLayer::new(f.metrics.clone()))
        .service_fn(|_req: Request<Body>| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
    let fut = svc.oneshot(Request::get("/hang").body(Body::empty()).unwrap());
    assert!(tokio::time::timeout(Duration::from_millis(20), fut)
        .await
        .is_err());
    assert_eq!(f.requests(&[("status", "499")]), 1.0);
    assert_eq!(f.sum("gunicorn_worker_client_disconnects_total", &[]), 2.0);
}

#[test]
fn exposition_parses_with_python_prometheus_client() {
    let f = fixture(RequestMetrics::builder());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = app(f.metrics.clone());
        get_body(&app, "GET", "/users/1").await;
        get_body(&app, "GET", "/panic").await;
        get_body(&app, "GET", "/nope").await;
    });
    let text = f.text();
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
total = 0
names = set()
for fam in text_string_to_metric_families(sys.stdin.read()):
    names.add(fam.name)
    if fam.name == "gunicorn_worker_requests":
        total += sum(s.value for s in fam.samples if s.name.endswith("_total"))
print(int(total), " ".join(sorted(names)))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        });
    let out = match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
        Ok(out) => panic!("python failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            eprintln!("skipping: python3 not available ({e})");
            return;
        }
    };
    let mut parts = out.split_whitespace();
    assert_eq!(parts.next(), Some("3"), "{out}");
    let names: Vec<&str> = parts.collect();
    for n in [
        "gunicorn_worker_requests",
        "gunicorn_worker_request_duration_seconds",
        "gunicorn_worker_request_size_bytes",
        "gunicorn_worker_response_size_bytes",
        "gunicorn_worker_requests_in_flight",
        "gunicorn_worker_failed_requests",
        "gunicorn_worker_error_handling",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[tokio::test]
async fn prefix_exclusions_buckets_and_request_sizes_go_through_the_service() {
    let f = fixture(
        RequestMetrics::builder()
            .prefix("myapp_")
            .unwrap()
            .duration_buckets(vec![0.25, 2.5])
            .unwrap()
            .size_buckets(vec![4.0, 64.0])
            .unwrap()
            .exclude_path("/health")
            .exclude_path("/static/*"),
    );
    let app = app(f.metrics.clone()).route("/static/{*file}", get(|| async { "css" }));
    for uri in [
        "/",
        "/health",
        "/static/a.css",
        "/static/deep/b.js",
        "/users/3",
    ] {
        let (status, _) = get_body(&app, "GET", uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    // A 10-byte body with a Content-Length.
    let req = Request::builder()
        .method("POST")
        .uri("/users/3")
        .header("content-length", "10")
        .body(Body::from("0123456789"))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let _ = res.into_body().collect().await.unwrap();

    let text = f.text();
    assert!(
        !text.contains("gunicorn_worker_"),
        "the default prefix is gone: {text}"
    );
    // Only /, GET /users/{id} and POST /users/{id}: /health and /static/* were excluded.
    assert_eq!(f.sum("myapp_requests_total", &[]), 3.0, "{text}");
    assert_eq!(
        f.sum("myapp_requests_total", &[("endpoint", "/users/{id}")]),
        2.0
    );
    assert!(
        !text.contains("/static") && !text.contains("/health"),
        "{text}"
    );
    // The custom buckets (and no default one).
    for le in ["0.25", "2.5", "+Inf"] {
        assert_eq!(
            f.sum(
                "myapp_request_duration_seconds_bucket",
                &[("endpoint", "/"), ("le", le)]
            ),
            1.0,
            "no le={le} bucket: {text}"
        );
    }
    assert!(!text.contains("le=\"0.005\""), "{text}");
    // Request sizes: the POST's 10 bytes land in the 64-byte bucket, the empty GETs in the 4.
    let post = [("method", "POST")];
    assert_eq!(f.sum("myapp_request_size_bytes_sum", &post), 10.0, "{text}");
    assert_eq!(
        f.sum(
            "myapp_request_size_bytes_bucket",
            &[("method", "POST"), ("le", "4")]
        ),
        0.0
    );
    assert_eq!(
        f.sum(
            "myapp_request_size_bytes_bucket",
            &[("method", "POST"), ("le", "64")]
        ),
        1.0
    );
    assert_eq!(f.sum("myapp_request_size_bytes_count", &[]), 3.0);
}

/// Labels computed from the request (a tenant header) are recorded and bounded by the cap.
#[tokio::test]
async fn request_labels_from_headers_are_bounded() {
    let f = tenant_fixture();
    let layer = MetricsLayer::new(f.metrics.clone()).request_labels(|_req, headers| {
        let tenant = headers.get("x-tenant").and_then(|v| v.to_str().ok());
        vec![tenant.unwrap_or("none").to_owned()]
    });
    let app = Router::new()
        .route("/users/{id}", get(|| async { "hi" }))
        .layer(layer);
    for tenant in TENANTS {
        let req = Request::get("/users/7")
            .header("x-tenant", tenant)
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    f.assert_tenants_bounded();
}

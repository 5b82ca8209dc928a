//! The middleware in an actix-web app: exact counts, bounded cardinality, failures, body drops.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpResponse};
use bytes::Bytes;
use gpe_actix::{ActixMetrics, RequestInfo, RequestMetrics};

#[path = "../../gpe-core/tests/shared/request_metrics.rs"]
mod request_metrics;

use request_metrics::{fixture, series_count, slow_body_fixture, tenant_fixture, TENANTS};

#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken")
    }
}

impl actix_web::ResponseError for Broken {}

async fn panics() -> HttpResponse {
    if std::hint::black_box(true) {
        panic!("boom");
    }
    HttpResponse::Ok().finish()
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { "hello" }))
        .route("/users/{id}", web::get().to(|| async { "user" }))
        .route("/users/{id}", web::post().to(|| async { "made" }))
        .route(
            "/fail",
            web::get().to(|| async { HttpResponse::ServiceUnavailable().body("down") }),
        )
        .route(
            "/error",
            web::get().to(|| async { Err::<HttpResponse, _>(Broken) }),
        )
        .route("/panic", web::get().to(panics))
        .route(
            "/stream",
            web::get().to(|| async {
                let chunks = futures_like_stream();
                HttpResponse::Ok().streaming(chunks)
            }),
        )
        .route("/health", web::get().to(|| async { "ok" }))
        .route(
            "/upload",
            web::post().to(|body: Bytes| async move { format!("{}", body.len()) }),
        );
}

/// Two chunks, the second after 300 ms.
fn futures_like_stream(
) -> impl futures_core::Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    Chunks {
        step: 0,
        sleep: None,
    }
}

struct Chunks {
    step: u8,
    sleep: Option<std::pin::Pin<Box<actix_web::rt::time::Sleep>>>,
}

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        match self.step {
            0 => {
                self.step = 1;
                Poll::Ready(Some(Ok(Bytes::from_static(b"first"))))
            }
            1 => {
                let sleep = self.sleep.get_or_insert_with(|| {
                    Box::pin(actix_web::rt::time::sleep(Duration::from_millis(300)))
                });
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.step = 2;
                Poll::Ready(Some(Ok(Bytes::from_static(b"second"))))
            }
            _ => Poll::Ready(None),
        }
    }
}

macro_rules! app {
    ($mw:expr) => {
        test::init_service(App::new().wrap($mw).configure(routes)).await
    };
}

#[actix_web::test]
async fn counts_add_up_exactly() {
    let f = fixture(RequestMetrics::builder().exclude_path("/health"));
    let app = app!(ActixMetrics::new(f.metrics.clone()));
    for i in 0..200 {
        let req = match i % 4 {
            0 => test::TestRequest::get().uri("/"),
            1 => test::TestRequest::get().uri(&format!("/users/{i}")),
            2 => test::TestRequest::post().uri(&format!("/users/{i}")),
            _ => test::TestRequest::get().uri(&format!("/nowhere/{i}")),
        };
        let res = test::call_service(&app, req.to_request()).await;
        test::read_body(res).await;
    }
    for _ in 0..10 {
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    f.assert_mixed_requests_counted();
    assert_eq!(f.sum("gunicorn_worker_client_disconnects_total", &[]), 0.0);
}

#[actix_web::test]
async fn random_url_scan_stays_bounded() {
    let f = fixture(RequestMetrics::builder().max_series(20).unwrap());
    let app = app!(ActixMetrics::new(f.metrics.clone()));
    for i in 0..1000 {
        let req = test::TestRequest::get()
            .uri(&format!("/scan/{i}"))
            .to_request();
        test::read_body(test::call_service(&app, req).await).await;
    }
    let text = f.text();
    let series = series_count(&text, "gunicorn_worker_requests_total");
    assert_eq!(series, 1, "{text}");

    let f = fixture(RequestMetrics::builder().max_series(20).unwrap());
    let app = app!(ActixMetrics::new(f.metrics.clone())
        .endpoint_label(|r: &RequestInfo<'_>| Some(r.path.to_owned())));
    for i in 0..300 {
        let req = test::TestRequest::get()
            .uri(&format!("/raw/{i}"))
            .to_request();
        test::read_body(test::call_service(&app, req).await).await;
    }
    assert_eq!(f.metrics.series_count(), 20);
    assert_eq!(f.requests(&[("endpoint", "<overflow>")]), 280.0);
}

#[actix_web::test]
async fn server_errors_handler_errors_and_panics_are_counted() {
    // By default a panic has no routed request to read the pattern from.
    errors_and_panics(false, "").await;
    errors_and_panics(true, "/panic").await;
}

async fn errors_and_panics(route_first: bool, panic_endpoint: &str) {
    let f = fixture(RequestMetrics::builder());
    let mw = ActixMetrics::new(f.metrics.clone());
    let app = app!(if route_first {
        mw.in_flight_by_endpoint()
    } else {
        mw
    });
    for (uri, status) in [
        ("/fail", 503),
        ("/fail", 503),
        ("/error", 500),
        ("/panic", 500),
        ("/panic", 500),
    ] {
        // A real server renders an `Err` as its error response; do the same here.
        let got = match app
            .call(test::TestRequest::get().uri(uri).to_request())
            .await
        {
            Ok(res) => {
                let got = res.status().as_u16();
                test::read_body(res).await;
                got
            }
            Err(e) => e.error_response().status().as_u16(),
        };
        assert_eq!(got, status, "{uri}");
    }
    assert_eq!(f.failed("status_5xx"), 2.0);
    assert_eq!(f.failed("service_error"), 1.0);
    assert_eq!(f.failed("panic"), 2.0);
    assert_eq!(f.sum("gunicorn_worker_error_handling_total", &[]), 5.0);
    assert_eq!(
        f.requests(&[("endpoint", panic_endpoint), ("status", "500")]),
        2.0
    );
    assert_eq!(
        f.sum(
            "gunicorn_worker_failed_requests_total",
            &[("endpoint", panic_endpoint), ("error_type", "panic")]
        ),
        2.0
    );
    // Returned 5xx responses and handler errors keep their route either way.
    assert_eq!(f.requests(&[("endpoint", "/fail"), ("status", "503")]), 2.0);
    assert_eq!(
        f.sum(
            "gunicorn_worker_failed_requests_total",
            &[("endpoint", "/error"), ("error_type", "service_error")]
        ),
        1.0
    );
    assert_eq!(f.requests(&[]), 5.0);
}

#[actix_web::test]
async fn duration_ends_with_the_body_and_early_drops_count() {
    let f = slow_body_fixture();
    let app = app!(ActixMetrics::new(f.metrics.clone()));
    let res = test::call_service(&app, test::TestRequest::get().uri("/stream").to_request()).await;
    // Before routing, the in-flight gauge knows the method only.
    assert_eq!(f.in_flight(&[("endpoint", ""), ("method", "GET")]), 1.0);
    assert_eq!(&test::read_body(res).await[..], b"firstsecond");
    f.assert_slow_body_recorded("/stream");

    // Take the first chunk, then drop the body: a client disconnect.
    let res = test::call_service(&app, test::TestRequest::get().uri("/stream").to_request()).await;
    let mut body = Box::pin(res.into_body());
    let first = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await;
    assert_eq!(first.unwrap().unwrap(), Bytes::from_static(b"first"));
    drop(body);
    f.assert_body_drop_recorded("/stream");
    assert_eq!(f.requests(&[("endpoint", "/stream")]), 2.0);
}

#[actix_web::test]
async fn in_flight_by_endpoint_labels_the_gauge_with_the_pattern() {
    let f = fixture(RequestMetrics::builder());
    let app = app!(ActixMetrics::new(f.metrics.clone()).in_flight_by_endpoint());
    let res = test::call_service(&app, test::TestRequest::get().uri("/stream").to_request()).await;
    assert_eq!(
        f.in_flight(&[("endpoint", "/stream"), ("method", "GET")]),
        1.0
    );
    assert_eq!(&test::read_body(res).await[..], b"firstsecond");
    assert_eq!(f.in_flight(&[]), 0.0);
    for i in 0..10 {
        let req = test::TestRequest::get()
            .uri(&format!("/users/{i}"))
            .to_request();
        test::read_body(test::call_service(&app, req).await).await;
    }
    assert_eq!(
        f.requests(&[("endpoint", "/users/{id}"), ("status", "200")]),
        10.0
    );
}

/// A request body in chunks, without Content-Length (as a chunked upload arrives).
struct Upload(std::collections::VecDeque<Bytes>);

impl futures_core::Stream for Upload {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[actix_web::test]
async fn request_size_counts_bodies_without_content_length() {
    let f = fixture(RequestMetrics::builder());
    let app = app!(ActixMetrics::new(f.metrics.clone()));
    // With Content-Length: the header's value.
    let req = test::TestRequest::post()
        .uri("/upload")
        .set_payload(vec![b'x'; 100])
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(&test::read_body(res).await[..], b"100");
    // Without: the bytes the handler read.
    let chunks = [10, 20, 30].map(|n| Bytes::from(vec![b'y'; n]));
    let req = test::TestRequest::post().uri("/upload").to_request();
    assert!(!actix_web::HttpMessage::headers(&req).contains_key("content-length"));
    let stream: std::pin::Pin<Box<dyn futures_core::Stream<Item = _>>> =
        Box::pin(Upload(chunks.into_iter().collect()));
    let (req, _) = req.replace_payload(actix_web::dev::Payload::from(stream));
    let res = test::call_service(&app, req).await;
    assert_eq!(&test::read_body(res).await[..], b"60");
    let size = |what: &str| {
        f.sum(
            &format!("gunicorn_worker_request_size_bytes_{what}"),
            &[("endpoint", "/upload")],
        )
    };
    assert_eq!(size("sum"), 160.0);
    assert_eq!(size("count"), 2.0);
    // A bodyless GET is not wrapped and records 0.
    let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    test::read_body(res).await;
    assert_eq!(
        f.sum(
            "gunicorn_worker_request_size_bytes_sum",
            &[("endpoint", "/")]
        ),
        0.0
    );
}

/// Labels computed from the request (a tenant header) are recorded under the resource pattern
/// and bounded by the cap.
#[actix_web::test]
async fn request_labels_from_headers_are_bounded() {
    let f = tenant_fixture();
    let mw = ActixMetrics::new(f.metrics.clone()).request_labels(|req| {
        let tenant = req.headers().get("x-tenant").and_then(|v| v.to_str().ok());
        vec![tenant.unwrap_or("none").to_owned()]
    });
    let app = test::init_service(
        App::new()
            .wrap(mw)
            .route("/users/{id}", web::get().to(|| async { "hi" })),
    )
    .await;
    for tenant in TENANTS {
        let req = test::TestRequest::get()
            .uri("/users/7")
            .insert_header(("x-tenant", tenant))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(test::read_body(res).await, "hi");
    }
    f.assert_tenants_bounded();
}

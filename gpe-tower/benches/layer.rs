//! Per-request cost of the gpe-tower layer: the same tower service called bare and wrapped in
//! [`MetricsLayer`], in the same run (request in, response head, body polled to its end, all
//! dropped). Run with `cargo bench -p gpe-tower --bench layer`. The access log cases write
//! gunicorn's default (combined) format to a file in a temp dir.

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use gpe_core::http::access::{AccessLog, AccessLogFormat};
use gpe_tower::{MetricsLayer, RequestMetrics, RouteTemplate};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{Empty, Full};
use tower::{Layer, Service, ServiceExt};

/// Poll a future that is ready at once (the handlers here never wait).
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the benchmark's services never wait"),
    }
}

/// Poll a body to its end, as the server does; returns the bytes seen.
fn drain<B: Body<Data = Bytes>>(body: B) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = pin!(body);
    let mut n = 0;
    while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        n += frame.data_ref().map_or(0, Bytes::len);
    }
    n
}

fn request() -> Request<Empty<Bytes>> {
    let mut req = Request::get("/users/42").body(Empty::new()).unwrap();
    req.extensions_mut().insert(RouteTemplate("/users/{id}"));
    req
}

fn layer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = gpe_core::Store::open(dir.path()).unwrap();
    let metrics = RequestMetrics::builder().build(&store).unwrap();
    let handler = tower::service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"hello, world\n",
        ))))
    });
    let mut bare = handler;
    let mut layered = MetricsLayer::new(metrics).layer(handler);
    // One label of the user's own, from a header (`RequestMetricsBuilder::label`).
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = gpe_core::Store::open(dir2.path()).unwrap();
    let labelled = RequestMetrics::builder()
        .label("tenant")
        .unwrap()
        .build(&store2)
        .unwrap();
    let mut with_label = MetricsLayer::new(labelled)
        .request_labels(|_req, headers| {
            let tenant = headers.get("x-tenant").and_then(|v| v.to_str().ok());
            vec![tenant.unwrap_or("none").to_owned()]
        })
        .layer(handler);
    let tenant_request = || {
        let mut req = request();
        req.headers_mut()
            .insert("x-tenant", http::HeaderValue::from_static("acme"));
        req
    };

    // The access log on: gunicorn's default format, appended to a file.
    let dir3 = tempfile::tempdir().unwrap();
    let store3 = gpe_core::Store::open(dir3.path()).unwrap();
    let logged = RequestMetrics::builder().build(&store3).unwrap();
    let log = AccessLog::open(dir3.path().join("access.log"), AccessLogFormat::default()).unwrap();
    let mut with_log = MetricsLayer::new(logged).access_log(log).layer(handler);
    let peer: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
    // What a browser-like client sends, and the client address `serve` adds.
    let logged_request = || {
        let mut req = request();
        req.headers_mut().insert(
            "user-agent",
            http::HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
        );
        req.headers_mut().insert(
            "referer",
            http::HeaderValue::from_static("https://example.com/start"),
        );
        req.extensions_mut().insert(peer);
        req
    };

    // Without this release's native buckets and exemplars (the request path before them), and
    // a request that carries a sampled trace (its exemplar is written).
    let dir4 = tempfile::tempdir().unwrap();
    let store4 = gpe_core::Store::open(dir4.path()).unwrap();
    let plain = RequestMetrics::builder()
        .duration_native(None)
        .exemplars(gpe_core::exemplar::TraceSource::Off)
        .build(&store4)
        .unwrap();
    let mut without_native = MetricsLayer::new(plain).layer(handler);
    let traced_request = || {
        let mut req = request();
        req.headers_mut().insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        req
    };

    let mut g = c.benchmark_group("tower_request");
    g.bench_function("bare", |b| {
        b.iter(|| {
            let svc = now(bare.ready()).unwrap();
            let res = now(svc.call(black_box(request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.bench_function("with_gpe_layer", |b| {
        b.iter(|| {
            let svc = now(layered.ready()).unwrap();
            let res = now(svc.call(black_box(request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.bench_function("with_gpe_layer_no_native_no_exemplars", |b| {
        b.iter(|| {
            let svc = now(without_native.ready()).unwrap();
            let res = now(svc.call(black_box(request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.bench_function("with_gpe_layer_traceparent", |b| {
        b.iter(|| {
            let svc = now(layered.ready()).unwrap();
            let res = now(svc.call(black_box(traced_request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.bench_function("with_gpe_layer_and_a_request_label", |b| {
        b.iter(|| {
            let svc = now(with_label.ready()).unwrap();
            let res = now(svc.call(black_box(tenant_request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.bench_function("with_gpe_layer_access_log_off", |b| {
        b.iter(|| {
            let svc = now(layered.ready()).unwrap();
            let res = now(svc.call(black_box(logged_request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.bench_function("with_gpe_layer_access_log_on", |b| {
        b.iter(|| {
            let svc = now(with_log.ready()).unwrap();
            let res = now(svc.call(black_box(logged_request()))).unwrap();
            black_box(drain(res.into_body()))
        })
    });
    g.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);

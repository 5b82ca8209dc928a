use super::*;
use crate::store::Store;

fn text(dir: &std::path::Path) -> String {
    crate::expose::encode_text(&crate::collect::MultiProcessCollector::new(dir).gather()).unwrap()
}

/// A builder for worker "1" with `labels` of its own.
fn with_labels(labels: &[&str]) -> RequestMetricsBuilder {
    labels
        .iter()
        .fold(RequestMetrics::builder().worker_id("1"), |b, l| {
            b.label(*l).unwrap()
        })
}

fn finish(mut t: RequestTracker, status: u16) {
    t.set_status(status);
    t.complete();
}

#[test]
fn own_labels_are_bounded_by_the_series_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = with_labels(&["tenant"])
        .max_series(2)
        .unwrap()
        .build(&store)
        .unwrap();
    assert_eq!(metrics.own_labels(), 1);
    for tenant in ["a", "b", "c", "d", "a"] {
        finish(metrics.start_labelled("GET", "/x", &[tenant]), 200);
    }
    let t = text(dir.path());
    let series = |tenant: &str| {
        format!(
            r#"gunicorn_worker_requests_total{{endpoint="/x",method="GET",status="200",tenant="{tenant}",worker_id="1"}}"#
        )
    };
    assert!(t.contains(&format!("{} 2", series("a"))), "{t}");
    assert!(t.contains(&format!("{} 1", series("b"))), "{t}");
    assert!(!t.contains(&series("c")), "{t}");
    // Past the cap, the endpoint and the label both say so.
    assert!(
        t.contains(r#"gunicorn_worker_requests_total{endpoint="<overflow>",method="GET",status="200",tenant="<overflow>",worker_id="1"} 2"#),
        "{t}"
    );
    // And gpe counts what the cap turned away, for an alert.
    assert!(
        t.contains(r#"gpe_series_capped_total{family="gunicorn_worker_requests_total"} 2"#),
        "{t}"
    );
}

#[test]
fn an_unrouted_request_gets_its_labels_with_its_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = with_labels(&["tenant", "version"]).build(&store).unwrap();
    let mut t = metrics.start_unrouted_labelled("POST", &["acme", "v2"]);
    t.set_endpoint("/orders");
    finish(t, 503);
    let t = text(dir.path());
    assert!(
        t.contains(r#"gunicorn_worker_failed_requests_total{endpoint="/orders",error_type="status_5xx",method="POST",status="503",tenant="acme",version="v2",worker_id="1"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"gunicorn_worker_requests_in_flight{endpoint="",method="POST",tenant="",version="",worker_id="1"} 0"#),
        "{t}"
    );
}

#[test]
fn label_names_are_checked() {
    let b = || RequestMetrics::builder();
    for bad in ["", "1x", "a-b", "__x", "status", "endpoint", "le"] {
        assert!(
            matches!(b().label(bad), Err(RequestMetricsError::InvalidLabel(n)) if n == bad),
            "{bad:?}"
        );
    }
    assert!(b().label("tenant").unwrap().label("tenant").is_err());
}

#[test]
fn grpc_calls_are_labelled_by_their_grpc_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = with_labels(&[]).build(&store).unwrap();
    let call = |code: Option<GrpcCode>, complete: bool| {
        let mut t = metrics.start("POST", "/greet.Greeter/SayHello");
        t.set_grpc();
        t.set_status(200); // the head: gRPC answers 200 whatever happens
        if let Some(code) = code {
            t.set_grpc_status(code);
        }
        if complete {
            t.complete();
        }
    };
    call(Some(GrpcCode::Ok), true);
    call(Some(GrpcCode::Ok), true);
    call(Some(GrpcCode::InvalidArgument), true);
    call(Some(GrpcCode::Internal), true);
    call(None, false); // the client cancelled before the status
    call(Some(GrpcCode::Unimplemented), true);
    let t = text(dir.path());
    let series = |family: &str, labels: &str, v: u32| {
        let line = format!("gunicorn_worker_{family}{{{labels},worker_id=\"1\"}} {v}");
        assert!(t.contains(&line), "no {line} in\n{t}");
    };
    let call_labels = |status: &str| {
        format!(r#"endpoint="/greet.Greeter/SayHello",method="POST",status="{status}""#)
    };
    series("requests_total", &call_labels("OK"), 2);
    series("requests_total", &call_labels("INVALID_ARGUMENT"), 1);
    series("requests_total", &call_labels("INTERNAL"), 1);
    series("requests_total", &call_labels("CANCELLED"), 1);
    // Made-up method names make no series of their own.
    series(
        "requests_total",
        r#"endpoint="<unmatched>",method="POST",status="UNIMPLEMENTED""#,
        1,
    );
    assert!(!t.contains(r#"status="200""#), "{t}");
    // Only the server's faults are failures.
    series(
        "failed_requests_total",
        r#"endpoint="/greet.Greeter/SayHello",error_type="grpc_server_error",method="POST",status="INTERNAL""#,
        1,
    );
    assert_eq!(
        t.matches("gunicorn_worker_failed_requests_total{").count(),
        2,
        "{t}"
    );
    series(
        "client_disconnects_total",
        r#"endpoint="/greet.Greeter/SayHello",method="POST""#,
        1,
    );
}

#[test]
fn a_thread_remembers_each_instance_s_series_apart() {
    // Two instances, one endpoint name, one thread: each request lands in its own store,
    // however the per-thread cache of recent series was filled.
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (
        Store::open(d1.path()).unwrap(),
        Store::open(d2.path()).unwrap(),
    );
    let m1 = with_labels(&[]).build(&s1).unwrap();
    let m2 = with_labels(&[]).build(&s2).unwrap();
    for _ in 0..3 {
        finish(m1.start("GET", "/same"), 200);
        finish(m2.start("GET", "/same"), 200);
        finish(m2.start("GET", "/same"), 200);
    }
    // More endpoints than the cache holds, then the first again.
    for e in ["/a", "/b", "/c", "/d", "/e", "/same"] {
        finish(m1.start("GET", e), 200);
    }
    let line = |n| {
        format!(
            r#"gunicorn_worker_requests_total{{endpoint="/same",method="GET",status="200",worker_id="1"}} {n}"#
        )
    };
    assert!(text(d1.path()).contains(&line(4)), "{}", text(d1.path()));
    assert!(text(d2.path()).contains(&line(6)), "{}", text(d2.path()));
}

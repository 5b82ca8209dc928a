//! The access log written by `RequestTracker`s: the status rules of the metrics (499 for a
//! client that left, `-` for an error without a response, a gRPC call's HTTP 200), and lines
//! kept whole when several writers (separate opens of one file, as separate processes have)
//! append at once.

use std::time::Duration;

use gpe_core::http::access::{AccessLog, AccessLogFormat, RequestHead};
use gpe_core::http::grpc::GrpcCode;
use gpe_core::http::{FailureKind, RequestMetrics};

fn head(path: &str) -> RequestHead<'_> {
    RequestHead {
        remote: Some([127, 0, 0, 1].into()),
        method: "GET",
        path,
        query: None,
        protocol: "HTTP/1.1",
    }
}

#[test]
fn trackers_write_their_line_with_the_metrics_status_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = gpe_core::Store::open(dir.path()).unwrap();
    let metrics = RequestMetrics::builder().build(&store).unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path, AccessLogFormat::parse("%(U)s %(s)s %(b)s").unwrap()).unwrap();
    let start = |p: &str| {
        let mut t = metrics.start("GET", p);
        t.log_access(log.begin(&head(p), |_| None));
        t
    };

    let mut ok = start("/ok");
    ok.set_status(200);
    ok.add_response_bytes(5);
    ok.complete();
    drop(ok);
    drop(start("/left")); // the client went away before the response
    let mut error = start("/error");
    error.fail(FailureKind::ServiceError);
    error.complete();
    drop(error);
    let mut call = start("/pkg.Svc/Call");
    call.set_grpc();
    call.set_status(200);
    call.set_grpc_status(GrpcCode::NotFound);
    call.complete();
    drop(call);
    let mut streaming = start("/stream");
    streaming.set_status(200);
    streaming.add_response_bytes(3);
    drop(streaming); // dropped mid-body: the status sent, the bytes sent

    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "/ok 200 5\n/left 499 0\n/error - -\n/pkg.Svc/Call 200 0\n/stream 200 3\n"
    );
}

#[test]
fn concurrent_writers_keep_lines_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    // A long line (a 3000-byte header) makes a torn or interleaved write visible.
    let format = AccessLogFormat::parse("%(U)s %({x-pad}i)s end").unwrap();
    let pad = "p".repeat(3000);
    std::thread::scope(|s| {
        for w in 0..4 {
            // Its own open file description, as each worker process has.
            let log = AccessLog::open(&path, format.clone()).unwrap();
            let pad = pad.as_bytes();
            s.spawn(move || {
                for n in 0..500 {
                    let p = format!("/w{w}/{n}");
                    log.begin(&head(&p), |_| Some(pad))
                        .finish(Some(200), 0, Duration::ZERO);
                }
            });
        }
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let (p, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, format!("{pad} end"), "a torn line for {p}");
        assert!(seen.insert(p.to_owned()), "{p} twice");
    }
    assert_eq!(seen.len(), 2000);
}

#[test]
fn reopen_follows_a_rotated_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path, AccessLogFormat::parse("%(U)s").unwrap()).unwrap();
    log.begin(&head("/one"), |_| None)
        .finish(Some(200), 0, Duration::ZERO);
    std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
    log.begin(&head("/two"), |_| None)
        .finish(Some(200), 0, Duration::ZERO);
    log.reopen().unwrap();
    log.begin(&head("/three"), |_| None)
        .finish(Some(200), 0, Duration::ZERO);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("access.log.1")).unwrap(),
        "/one\n/two\n"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "/three\n");
}

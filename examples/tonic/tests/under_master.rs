//! example-tonic as workers of a real gpe-master, called by a real gRPC client (tonic's, over
//! h2c): every call is recorded under its gRPC method and status, and recycling workers
//! (`--max-requests`) under a gRPC load loses no call.

#[path = "../../support/tests_common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::exposition::sum;
use common::{eventually, get, serve, Served};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod greeter {
    tonic::include_proto!("greeter");
}

use greeter::greeter_client::GreeterClient;
use greeter::{HelloReply, HelloRequest};

const BIN: &str = env!("CARGO_BIN_EXE_example-tonic");
const METHOD: &str = "/greeter.Greeter/SayHello";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A channel: one HTTP/2 connection (reconnected when the server closes it).
async fn channel(port: u16) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect")
}

fn hello(name: &str, delay_ms: u32) -> Request<HelloRequest> {
    Request::new(HelloRequest {
        name: name.to_owned(),
        delay_ms,
    })
}

/// `SayHello` on `client`: the gRPC code it ended with.
async fn say(client: &mut GreeterClient<Channel>, name: &str) -> Code {
    match client.say_hello(hello(name, 0)).await {
        Ok(reply) => {
            assert_eq!(reply.into_inner().message, format!("hello {name}"));
            Code::Ok
        }
        Err(status) => status.code(),
    }
}

/// A method the server does not have, called with tonic's generic client.
async fn call_unknown_method(channel: Channel) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/greeter.Greeter/NoSuchMethod");
    let answer: Result<tonic::Response<HelloReply>, _> = grpc
        .unary(hello("x", 0), path, tonic_prost::ProstCodec::default())
        .await;
    answer.expect_err("no such method").code()
}

fn requests(text: &str, endpoint: &str, status: &str) -> f64 {
    sum(
        text,
        "gunicorn_worker_requests_total",
        &[("endpoint", endpoint), ("status", status)],
    )
}

#[test]
fn calls_are_recorded_by_grpc_method_and_status() {
    let Served {
        mut master,
        port,
        metrics_port,
        dir: _dir,
    } = serve(BIN, 2, &["--log-level", "warning"]);
    let (channels, ok_per_channel) = (4, 25);
    runtime().block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for c in 0..channels {
            // A channel per task: separate connections, which the workers share.
            let channel = channel(port).await;
            calls.spawn(async move {
                let mut client = GreeterClient::new(channel.clone());
                for i in 0..ok_per_channel {
                    assert_eq!(say(&mut client, &format!("c{c}-{i}")).await, Code::Ok);
                }
                assert_eq!(say(&mut client, "").await, Code::InvalidArgument);
                if c % 2 == 0 {
                    assert_eq!(say(&mut client, "fail").await, Code::Internal);
                }
                assert_eq!(call_unknown_method(channel).await, Code::Unimplemented);
                // A call the client gives up on: the worker sees the stream reset.
                let late = tokio::time::timeout(
                    Duration::from_millis(200),
                    client.say_hello(hello("late", 5_000)),
                )
                .await;
                assert!(late.is_err(), "the call should still be running: {late:?}");
            });
        }
        while let Some(done) = calls.join_next().await {
            done.expect("a client task failed");
        }
    });

    let ok = f64::from(channels * ok_per_channel);
    let n = f64::from(channels);
    let text = eventually("every call in /metrics", Duration::from_secs(20), || {
        let (_, text) = get(metrics_port, "/metrics").ok()?;
        (requests(&text, METHOD, "CANCELLED") >= n && requests(&text, METHOD, "OK") >= ok)
            .then_some(text)
    });
    assert_eq!(requests(&text, METHOD, "OK"), ok, "{text}");
    assert_eq!(requests(&text, METHOD, "INVALID_ARGUMENT"), n, "{text}");
    let half = f64::from(channels / 2); // the "fail" calls: every other channel
    assert_eq!(requests(&text, METHOD, "INTERNAL"), half, "{text}");
    assert_eq!(requests(&text, METHOD, "CANCELLED"), n, "{text}");
    // Made-up method names share one series.
    assert_eq!(requests(&text, "<unmatched>", "UNIMPLEMENTED"), n, "{text}");
    assert_eq!(
        sum(&text, "gunicorn_worker_requests_total", &[]),
        f64::from(channels * ok_per_channel + channels * 3 + channels / 2),
        "{text}"
    );
    assert!(
        !text.contains(r#"status="200""#),
        "no HTTP status for gRPC calls:\n{text}"
    );
    // The server's faults are failures, the client's are not.
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_failed_requests_total",
            &[("error_type", "grpc_server_error")]
        ),
        half + n,
        "{text}"
    );
    assert_eq!(
        sum(&text, "gunicorn_worker_failed_requests_total", &[]),
        half + n,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_client_disconnects_total",
            &[("endpoint", METHOD)]
        ),
        n,
        "{text}"
    );
    let took = master.stop("TERM", Duration::from_secs(15));
    assert!(took < Duration::from_secs(10), "TERM took {took:?}");
}

#[test]
fn recycling_workers_under_grpc_load_loses_no_call() {
    let Served {
        mut master,
        port,
        metrics_port,
        dir: _dir,
    } = serve(BIN, 2, &["--max-requests", "20", "--log-level", "warning"]);
    // Callers on 4 connections until the master has replaced workers 3 times. A retiring worker
    // tells its clients to go elsewhere (GOAWAY) and finishes what they sent: every call
    // succeeds, whichever worker it reached.
    let stop = Arc::new(AtomicBool::new(false));
    let callers = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                let mut calls = tokio::task::JoinSet::new();
                for c in 0..4 {
                    let mut client = GreeterClient::new(channel(port).await);
                    let stop = stop.clone();
                    calls.spawn(async move {
                        let mut n = 0u32;
                        // Bounded: 5,000 calls per connection at most.
                        while !stop.load(Ordering::Relaxed) && n < 5_000 {
                            assert_eq!(say(&mut client, &format!("c{c}-{n}")).await, Code::Ok);
                            n += 1;
                        }
                        n
                    });
                }
                let mut total = 0;
                while let Some(done) = calls.join_next().await {
                    total += done.expect("a call failed");
                }
                total
            })
        })
    };
    let retired = || {
        let (_, text) = get(metrics_port, "/metrics").ok()?;
        let retired = sum(
            &text,
            "gunicorn_master_worker_exits_total",
            &[("reason", "max_requests")],
        );
        (retired >= 3.0).then_some(())
    };
    let waited = std::panic::catch_unwind(|| {
        eventually(
            "3 workers replaced for max-requests",
            Duration::from_secs(30),
            retired,
        );
    });
    stop.store(true, Ordering::Relaxed);
    let total = f64::from(callers.join().expect("a caller failed"));
    if let Err(e) = waited {
        std::panic::resume_unwind(e);
    }
    let text = eventually("every call in /metrics", Duration::from_secs(20), || {
        let (_, text) = get(metrics_port, "/metrics").ok()?;
        (requests(&text, METHOD, "OK") >= total).then_some(text)
    });
    assert_eq!(requests(&text, METHOD, "OK"), total, "{text}");
    assert_eq!(
        sum(&text, "gunicorn_worker_requests_total", &[]),
        total,
        "{text}"
    );
    let took = master.stop("QUIT", Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(3),
        "QUIT is a fast stop: {took:?}"
    );
}

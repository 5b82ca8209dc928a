//! A tonic gRPC service served by `gpe_tower::serve`, standalone or as a gpe-master worker.
//! Requests are recorded per gRPC method (`endpoint="/greeter.Greeter/SayHello"`) and gRPC
//! status (`status="OK"`, `"INVALID_ARGUMENT"`, …): see `gpe_core::http::grpc`.
//!
//! Run with:
//!
//! ```sh
//! # Standalone: gRPC (h2c) on 127.0.0.1:50051, its own /metrics on 127.0.0.1:9091.
//! cargo run -p example-tonic -- --bind 127.0.0.1:50051
//!
//! # Under gpe-master: 4 workers share the master's listener; the master serves /metrics.
//! cargo build --release -p gpe-master -p example-tonic
//! PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) target/release/gpe-master --workers 4 \
//!     --bind 127.0.0.1:50051 target/release/example-tonic
//! ```
//!
//! `greeter.Greeter/SayHello` answers `hello NAME`; an empty name is `INVALID_ARGUMENT`, the name
//! `fail` is `INTERNAL`, and `delay_ms` makes it wait first (at most 10 s).

use std::time::Duration;

use clap::Parser;
use gpe_core::worker::host::Exit;
use gpe_core::worker::BindAddr;
use gpe_tower::serve::Worker;
use gpe_tower::BuildError;
use tonic::{Request, Response, Status};
use tracing_subscriber::EnvFilter;

/// The code generated from `proto/greeter.proto` (by `build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod greeter {
    tonic::include_proto!("greeter");
}

use greeter::greeter_server::{Greeter, GreeterServer};
use greeter::{HelloReply, HelloRequest};

/// An example gRPC service: run it under gpe-master, or standalone with --bind.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen standalone (ignored under gpe-master, whose listeners are served).
    #[arg(short, long, value_name = "HOST:PORT|unix:PATH")]
    bind: Option<BindAddr>,
}

/// The service.
#[derive(Debug, Default)]
struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let HelloRequest { name, delay_ms } = request.into_inner();
        tokio::time::sleep(Duration::from_millis(delay_ms.min(10_000).into())).await;
        match name.as_str() {
            "" => Err(Status::invalid_argument("name is empty")),
            "fail" => Err(Status::internal("failing on purpose")),
            _ => Ok(Response::new(HelloReply {
                message: format!("hello {name}"),
            })),
        }
    }
}

/// Exit 0 after a stop, 3 when the worker cannot start (gpe-master then stops rather than
/// respawning it), 1 when serving fails.
#[tokio::main]
async fn main() -> Exit {
    serve().await.into()
}

async fn serve() -> Result<(), BuildError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut worker = Worker::builder();
    if let Some(bind) = args.bind {
        worker = worker.bind_addr(bind);
    }
    // tonic's routes as an axum router: gpe serves it over HTTP/2 (h2c) and HTTP/1.1.
    let routes = tonic::service::Routes::new(GreeterServer::new(Hello));
    worker.build()?.serve(routes.into_axum_router()).await
}

//! Compile-time `Send`/`Sync` guarantees of the public types (tokio `tests/async_send_sync.rs` is
//! the model): handles users share across threads and tasks are `Send + Sync`, error types are
//! `Send + Sync + 'static` (so they fit `Box<dyn Error + Send + Sync>` and `anyhow`).
//!
//! A type losing one of these bounds fails to compile this file: that is the test.

fn assert_send_sync<T: Send + Sync>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn metric_handles() {
    use gpe_core::*;
    assert_send_sync::<Store>();
    assert_send_sync::<Counter>();
    assert_send_sync::<CounterVec>();
    assert_send_sync::<Gauge>();
    assert_send_sync::<GaugeVec>();
    assert_send_sync::<Histogram>();
    assert_send_sync::<HistogramVec>();
    assert_send_sync::<GaugeMode>();
}

#[test]
fn collection() {
    use gpe_core::*;
    assert_send_sync::<MultiProcessCollector>();
    assert_send_sync::<LivePids>();
    assert_send_sync::<Liveness>();
    assert_send_sync::<compact::CompactReport>();
    assert_send_sync::<exposition::Encoded>();
    assert_send_sync::<exposition::Format>();
    assert_send_sync::<adopt::Adopter>();
    assert_send_sync::<adopt::AdoptGuard>();
}

#[test]
fn worker_side() {
    use gpe_core::worker::*;
    assert_send_sync::<WorkerContext>();
    assert_send_sync::<Heartbeat>();
    assert_send_sync::<Listener>();
    assert_send_sync::<gpe_core::expose::config::Config>();
}

#[test]
fn errors() {
    assert_error::<gpe_core::Error>();
    assert_error::<gpe_core::expose::ExpositionError>();
    assert_error::<gpe_core::expose::config::ConfigError>();
    assert_error::<gpe_core::worker::WorkerError>();
}

#[cfg(feature = "server")]
#[test]
fn server() {
    use gpe_core::expose::server::*;
    assert_send_sync::<ServerConfig>();
    assert_send_sync::<ServerHandle>();
    assert_send_sync::<MetricsServer>();
    assert_error::<ServerError>();
}

#[cfg(feature = "runtime")]
#[test]
fn runtime() {
    use gpe_core::runtime::*;
    assert_send_sync::<JobRecorder>();
    assert_send_sync::<Options>();
    assert_send_sync::<Connection>();
}

#[cfg(feature = "redis")]
#[test]
fn redis() {
    use gpe_core::redis::*;
    assert_send_sync::<RedisCollector>();
    assert_send_sync::<RedisSync>();
    assert_send_sync::<SyncHandle>();
    assert_send_sync::<RedisExporter>();
    assert_send_sync::<RedisConfig>();
    assert_send_sync::<ProcessId>();
    assert_send_sync::<FlushReport>();
    assert_error::<RedisError>();
}

#[test]
fn access_log() {
    use gpe_core::http::access::*;
    assert_send_sync::<AccessLog>();
    assert_send_sync::<AccessLogFormat>();
    assert_send_sync::<AccessEntry>();
    assert_error::<AccessLogError>();
}

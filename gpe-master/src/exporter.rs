//! `gpe-master exporter`: no workers, only the cluster-wide `/metrics` from Redis.
//!
//! ```sh
//! REDIS_URL=redis://10.0.0.5:6379 gpe-master exporter --metrics-bind 0.0.0.0:9092 --host-label
//! ```
//!
//! Every host's master syncs its workers' values to Redis (`REDIS_ENABLED=true`); the exporter
//! adds them up (or labels them by `host`), and folds hosts whose heartbeat went stale. Any number
//! of exporters can share one Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// gpe-master exporter: serve the aggregate of every host's metrics from Redis.
///
/// Redis is configured as for the master (REDIS_URL, or REDIS_HOST/PORT/DB/PASSWORD, and
/// REDIS_KEY_PREFIX, REDIS_TTL_SECONDS); REDIS_ENABLED is implied. The /metrics server takes the
/// PROMETHEUS_* variables (TLS, basic auth) as the master's does.
#[derive(Debug, Parser)]
#[command(name = "gpe-master exporter", version)]
struct ExporterCli {
    /// Where to serve /metrics (default: PROMETHEUS_BIND_ADDRESS:PROMETHEUS_METRICS_PORT).
    #[arg(long, value_name = "ADDRESS")]
    metrics_bind: Option<SocketAddr>,

    /// Label every series with the `host` it comes from instead of summing across hosts.
    #[arg(long)]
    host_label: bool,

    /// Log level: debug, info, warning, error, critical.
    #[arg(long, default_value = "info", value_parser = ["debug", "info", "warning", "error", "critical"])]
    log_level: String,

    /// Log to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    error_logfile: Option<PathBuf>,
}

/// Run the exporter until TERM, INT or QUIT; returns the exit code.
pub(crate) fn run() -> anyhow::Result<i32> {
    let cli = ExporterCli::parse_from(crate::argv().iter().skip(1));
    let _log = crate::logging::init_logging_with(
        &cli.log_level,
        cli.error_logfile.as_deref(),
        crate::cli::LogFormat::Gunicorn,
    )?;
    let redis = gpe_core::redis::RedisConfig::from_env().context("Redis configuration")?;
    let server_name = redis.server();
    let exporter = gpe_core::redis::RedisExporter::new(redis)
        .context("Redis exporter")?
        .with_host_label(cli.host_label);
    let config = gpe_core::expose::config::Config::from_env().context("metrics configuration")?;
    let mut server_config = gpe_core::expose::server::ServerConfig::from_config(&config);
    if let Some(addr) = cli.metrics_bind {
        server_config = server_config.addr(addr);
    }
    let server = gpe_core::expose::server::MetricsServer::bind(
        server_config,
        Arc::new(move || exporter.scrape()),
    )
    .context("metrics server (set --metrics-bind or PROMETHEUS_METRICS_PORT)")?
    .spawn_thread()?;
    let signals = crate::signals::Signals::install().context("installing signal handlers")?;
    tracing::info!(
        redis = %server_name,
        "Serving the cluster's metrics from Redis at http://{}/metrics",
        server.local_addr()
    );
    loop {
        for (sig, name) in signals.take() {
            if [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT].contains(&sig) {
                tracing::info!("Handling signal: {name}; shutting down");
                server.shutdown();
                return Ok(0);
            }
        }
        signals.wait(Duration::from_secs(1), None);
    }
}

//! Deployment files for a gpe service, kept next to a test that checks them against the demo.
//!
//! - `grafana/gpe-dashboard.json`: request rate, latency percentiles, errors, in-flight, worker
//!   memory/CPU/uptime/state, restarts and master signals (import it in Grafana and pick the
//!   Prometheus data source).
//! - `prometheus/prometheus.yml`: scrape the master's `/metrics` (one target per host).
//! - `systemd/gpe-app.socket` + `systemd/gpe-app.service`: socket activation; systemd owns the
//!   listening socket and gpe-master takes it as `--bind fd://3`.
//!
//! Run with: `cargo test -p example-deploy` (the live check needs `gpe-master` and
//! `example-axum` built in the same target directory and the `prometheus` binary; it is skipped
//! with a message otherwise).

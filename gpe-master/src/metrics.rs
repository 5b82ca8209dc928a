//! The master's own metrics (`gunicorn_master_*`) and the host's `/metrics` endpoint.

use std::sync::Arc;

use gpe_core::{LivePids, Liveness, MultiProcessCollector};
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::MasterError;

/// The `reason` values of `gunicorn_master_worker_restart_total`: `hup`, one per worker replaced
/// by a reload; `chld`, one per worker respawned after an exit the master did not ask for (crash,
/// killed, max_requests, timeout; the precise cause is `gunicorn_master_worker_exits_total`).
pub(crate) const RESTART_REASONS: [&str; 2] = ["hup", "chld"];

/// Counters and gauges of the master, in an in-process registry merged into the host's scrape.
#[derive(Debug, Clone)]
pub(crate) struct MasterMetrics {
    pub(crate) registry: Registry,
    pub(crate) signals: IntCounterVec,
    pub(crate) restarts: IntCounterVec,
    pub(crate) exits: IntCounterVec,
    pub(crate) spawns: IntCounter,
    pub(crate) reloads: IntCounter,
    pub(crate) workers: IntGauge,
    /// gpe's own: the workers configured (`--workers`, TTIN/TTOU) and those up among them.
    pub(crate) workers_desired: IntGauge,
    pub(crate) workers_up: IntGauge,
    pub(crate) memory: IntGauge,
    pub(crate) cpu_seconds: Gauge,
    pub(crate) worker_memory: GaugeVec,
    pub(crate) worker_cpu: GaugeVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    m: T,
) -> Result<T, MasterError> {
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl MasterMetrics {
    pub(crate) fn new() -> Result<MasterMetrics, MasterError> {
        let r = Registry::new();
        let m = MasterMetrics {
            signals: reg(&r, IntCounterVec::new(Opts::new("gunicorn_master_signals_total", "Signals received by the master, by signal. The kernel merges signals of one kind sent before the master handles the first (chld above all: one delivery may announce several exits, which gunicorn_master_worker_exits_total counts)."), &["signal"])?)?,
            restarts: reg(&r, IntCounterVec::new(Opts::new("gunicorn_master_worker_restart_total", "Workers replaced by the master: hup (by a reload), chld (respawned after an exit the master did not ask for; the cause is in gunicorn_master_worker_exits_total)."), &["reason"])?)?,
            exits: reg(&r, IntCounterVec::new(Opts::new("gunicorn_master_worker_exits_total", "Worker exits, by reason."), &["reason"])?)?,
            spawns: reg(&r, IntCounter::new("gunicorn_master_worker_spawns_total", "Workers started by the master.")?)?,
            reloads: reg(&r, IntCounter::new("gunicorn_master_reloads_total", "Reloads (HUP) performed.")?)?,
            workers: reg(&r, IntGauge::new("gunicorn_master_workers", "Live worker processes.")?)?,
            workers_desired: reg(&r, IntGauge::new("gpe_master_workers_desired", "Workers the master is configured to run (--workers, changed by TTIN/TTOU and a HUP).")?)?,
            workers_up: reg(&r, IntGauge::new("gpe_master_workers_up", "Configured workers that are up: said READY=1, or have lived a second (what /ready checks).")?)?,
            memory: reg(&r, IntGauge::new("gunicorn_master_memory_bytes", "Resident memory of the master.")?)?,
            cpu_seconds: reg(&r, Gauge::new("gunicorn_master_cpu_seconds", "CPU time used by the master (user + system), in seconds.")?)?,
            worker_memory: reg(&r, GaugeVec::new(Opts::new("gunicorn_master_worker_memory_bytes", "Resident memory of each live worker, read by the master from /proc."), &["worker_id", "pid"])?)?,
            worker_cpu: reg(&r, GaugeVec::new(Opts::new("gunicorn_master_worker_cpu_percent", "CPU use of each live worker since the previous sample, read by the master from /proc."), &["worker_id", "pid"])?)?,
            registry: r,
        };
        // The restart reasons (a subset of the Python exporter's), present from the start so a
        // rate over them is 0 rather than absent. The exporter's other values (ttin, ttou, usr1,
        // usr2, int) counted signals, not restarts: those are gunicorn_master_signals_total.
        for reason in RESTART_REASONS {
            m.restarts.with_label_values(&[reason]);
        }
        // The exit reasons too: an alert on a rate of crashes or timeouts sees 0 before the first.
        for reason in crate::exit::ExitReason::LABELS {
            m.exits.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// The whole host's families: every worker's files plus the master's registry.
    pub(crate) fn source(
        &self,
        dir: &std::path::Path,
        live: LivePids,
    ) -> gpe_core::expose::server::Source {
        let collector = MultiProcessCollector::new(dir)
            .with_liveness(Liveness::Pids(live))
            .with_registry(self.registry.clone())
            .with_self_metrics();
        Arc::new(move || collector.scrape())
    }
}

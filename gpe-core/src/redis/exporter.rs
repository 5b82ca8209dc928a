//! The cluster-wide exporter: the Redis collector plus the sweep of stale processes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::proto::MetricFamily;

use super::{sync, RedisCollector, RedisConfig, RedisError};

/// What `gpe-master exporter` serves: the aggregate of every host from Redis.
///
/// On each scrape (at most every TTL/4) it first folds the processes whose heartbeat is older than
/// the TTL into the archive, so a host that vanished without its master folding its workers does
/// not keep its series forever. Any number of exporters can share one Redis: a `SET NX PX` lock
/// lets one sweep at a time, and the fold script itself only folds a process that is still
/// registered and still stale, so no process is ever folded (counted) twice.
///
/// ```no_run
/// use gpe_core::redis::{RedisConfig, RedisExporter};
///
/// # fn main() -> Result<(), gpe_core::redis::RedisError> {
/// let exporter = RedisExporter::new(RedisConfig::from_env()?)?.with_host_label(true);
/// let text = gpe_core::expose::encode_text(&exporter.gather());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisExporter {
    collector: RedisCollector,
    next_sweep: Mutex<Instant>,
}

impl RedisExporter {
    /// An exporter over the Redis of `config`. Does not connect.
    ///
    /// # Errors
    /// As [`RedisCollector::new`].
    pub fn new(config: RedisConfig) -> Result<Self, RedisError> {
        Ok(RedisExporter {
            collector: RedisCollector::new(config)?,
            next_sweep: Mutex::new(Instant::now()),
        })
    }

    /// Give every series a `host` label instead of summing across hosts.
    #[must_use]
    pub fn with_host_label(mut self, on: bool) -> Self {
        self.collector = self.collector.with_host_label(on);
        self
    }

    /// The collector used for scrapes.
    pub fn collector(&self) -> &RedisCollector {
        &self.collector
    }

    /// Fold every process whose heartbeat is older than the TTL now (unless another exporter or
    /// sync holds the sweep lock). Returns the folded processes' members.
    ///
    /// # Errors
    /// [`RedisError::Unavailable`], [`RedisError::Connection`] or [`RedisError::Timeout`] when
    /// Redis cannot be reached.
    pub fn sweep_now(&self) -> Result<Vec<String>, RedisError> {
        let Some(ttl) = self.collector.config.ttl else {
            return Ok(Vec::new());
        };
        let pool = self.collector.pool.clone();
        let keys = self.collector.keys.clone();
        let budget =
            self.collector.config.connect_timeout + self.collector.config.response_timeout * 2;
        self.collector.runner.run(
            async move {
                let mut conn = pool.get().await?;
                let swept = sync::sweep(&mut conn, &keys, ttl).await;
                if swept.is_err() {
                    conn.discard();
                }
                swept
            },
            budget,
        )
    }

    /// Sweep if due, then read and merge: one scrape. Never fails (see
    /// [`RedisCollector::gather`]).
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.scrape().families
    }

    /// [`gather`](RedisExporter::gather) with the native histograms' buckets (see
    /// [`RedisCollector::scrape`]): what `gpe-master exporter` serves.
    pub fn scrape(&self) -> crate::expose::Scrape {
        self.sweep_if_due();
        self.collector.scrape()
    }

    fn sweep_if_due(&self) {
        if let Some(ttl) = self.collector.config.ttl {
            let due = {
                let mut next = self.next_sweep.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if now >= *next {
                    *next = now + (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    true
                } else {
                    false
                }
            };
            if due {
                if let Err(e) = self.sweep_now() {
                    tracing::debug!(error = %e, "sweep of stale processes skipped");
                }
            }
        }
    }
}

impl prometheus::core::Collector for RedisExporter {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gather()
    }
}

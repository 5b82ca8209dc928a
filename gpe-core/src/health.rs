//! gpe's own health, as metrics under the `gpe_` prefix: how the collector, compaction and the
//! Redis sync of this process are doing. They live in a process-local registry ([`registry`]),
//! which gpe-master's `/metrics` and a standalone worker's `/metrics` expose beside the
//! application's metrics. They are few and of low cardinality, and nothing on the request path
//! writes them: they are updated once per scrape, compaction or sync.
//!
//! | family | type | what |
//! |---|---|---|
//! | `gpe_scrape_duration_seconds` | histogram | time to read and merge every process's files |
//! | `gpe_collector_files_read` | gauge | files read by the last scrape |
//! | `gpe_collector_files_skipped_total` | counter | files (or samples) skipped, by `reason`: `unreadable`, `corrupt`, `unknown_key` |
//! | `gpe_collector_series` | gauge | samples exposed by the last scrape |
//! | `gpe_compaction_runs_total` | counter | compactions that folded something |
//! | `gpe_compaction_files_folded_total` | counter | dead processes' files folded into the archive |
//! | `gpe_compaction_archive_bytes` | gauge | size of the archive files after the last compaction |
//! | `gpe_redis_up` | gauge | 1 while the last sync to Redis succeeded, 0 after a failure |
//! | `gpe_redis_last_success_timestamp_seconds` | gauge | when a sync last succeeded (Unix time) |
//! | `gpe_redis_sync_failures_total` | counter | failed syncs, by `kind`: `timeout`, `connection`, `script`, `other` |
//! | `gpe_redis_sync_duration_seconds` | histogram | time of one successful sync |
//! | `gpe_redis_sync_commands` | gauge | Redis commands the last sync sent |
//!
//! The series refused by a request-metrics series cap are counted by every worker in the store,
//! so that they add up across processes: `gpe_series_capped_total{family}` (see
//! [`RequestMetricsBuilder::max_series`](crate::http::RequestMetricsBuilder::max_series)).
//!
//! ```
//! let text = gpe_core::expose::encode_text(&gpe_core::health::registry().gather())?;
//! assert!(text.contains("gpe_collector_files_read"));
//! # Ok::<(), gpe_core::expose::ExpositionError>(())
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The name of the multiprocess counter of series refused by a series cap.
pub const SERIES_CAPPED: &str = "gpe_series_capped_total";

/// The self-metrics of this process.
#[derive(Debug)]
pub(crate) struct Health {
    registry: Registry,
    pub(crate) scrape_duration: Histogram,
    pub(crate) files_read: IntGauge,
    pub(crate) files_skipped: IntCounterVec,
    pub(crate) series: IntGauge,
    pub(crate) compaction_runs: IntCounter,
    pub(crate) files_folded: IntCounter,
    pub(crate) archive_bytes: IntGauge,
    /// Registered once this process syncs to Redis: a host without Redis has no `gpe_redis_up`
    /// at 0 to alert on.
    redis: OnceLock<RedisHealth>,
}

/// The Redis sync's self-metrics.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct RedisHealth {
    up: IntGauge,
    last_success: Gauge,
    failures: IntCounterVec,
    sync_duration: Histogram,
    commands: IntGauge,
}

/// Why the collector skipped a file or a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// The file could not be read.
    Unreadable,
    /// The file's bytes are not a metrics file (too short, a bad length).
    Corrupt,
    /// A sample's key could not be decoded.
    UnknownKey,
}

impl Skipped {
    const ALL: [Skipped; 3] = [Skipped::Unreadable, Skipped::Corrupt, Skipped::UnknownKey];

    fn as_str(self) -> &'static str {
        match self {
            Skipped::Unreadable => "unreadable",
            Skipped::Corrupt => "corrupt",
            Skipped::UnknownKey => "unknown_key",
        }
    }
}

/// Buckets of the durations of a scrape or a sync, in seconds.
const FAST_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The `kind` values of `gpe_redis_sync_failures_total`.
const REDIS_FAILURE_KINDS: [&str; 4] = ["timeout", "connection", "script", "other"];

impl Health {
    fn new() -> Result<Health, prometheus::Error> {
        let registry = Registry::new();
        let fast = FAST_BUCKETS.to_vec();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let health = Health {
            scrape_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "gpe_scrape_duration_seconds",
                    "Time to read and merge every process's metrics files for one scrape."
                )
                .buckets(fast.clone())
            )?),
            files_read: reg!(IntGauge::new(
                "gpe_collector_files_read",
                "Metrics files read by the last scrape."
            )?),
            files_skipped: reg!(IntCounterVec::new(
                Opts::new(
                    "gpe_collector_files_skipped_total",
                    "Metrics files (or samples) the collector skipped, by reason."
                ),
                &["reason"]
            )?),
            series: reg!(IntGauge::new(
                "gpe_collector_series",
                "Samples exposed by the last scrape."
            )?),
            compaction_runs: reg!(IntCounter::new(
                "gpe_compaction_runs_total",
                "Compactions that folded dead processes' files into the archive."
            )?),
            files_folded: reg!(IntCounter::new(
                "gpe_compaction_files_folded_total",
                "Dead processes' metrics files folded into the archive."
            )?),
            archive_bytes: reg!(IntGauge::new(
                "gpe_compaction_archive_bytes",
                "Size of the archive files after the last compaction."
            )?),
            redis: OnceLock::new(),
            registry,
        };
        // Every label value from the start, at 0: a rate() has a series to work on before the
        // first failure.
        for s in Skipped::ALL {
            health.files_skipped.with_label_values(&[s.as_str()]);
        }
        Ok(health)
    }

    /// The Redis sync's self-metrics, registered on first use.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn redis(&self) -> &RedisHealth {
        self.redis.get_or_init(|| {
            RedisHealth::new(&self.registry).expect("gpe's Redis self-metrics register")
        })
    }

    /// A file or sample was skipped.
    pub(crate) fn skipped(&self, why: Skipped) {
        self.files_skipped.with_label_values(&[why.as_str()]).inc();
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl RedisHealth {
    fn new(registry: &Registry) -> Result<RedisHealth, prometheus::Error> {
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let health = RedisHealth {
            up: reg!(IntGauge::new(
                "gpe_redis_up",
                "1 while the last sync to Redis succeeded, 0 after a failure."
            )?),
            last_success: reg!(Gauge::new(
                "gpe_redis_last_success_timestamp_seconds",
                "When a sync to Redis last succeeded (Unix time)."
            )?),
            failures: reg!(IntCounterVec::new(
                Opts::new(
                    "gpe_redis_sync_failures_total",
                    "Syncs to Redis that failed, by kind."
                ),
                &["kind"]
            )?),
            sync_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "gpe_redis_sync_duration_seconds",
                    "Time of one successful sync to Redis."
                )
                .buckets(FAST_BUCKETS.to_vec())
            )?),
            commands: reg!(IntGauge::new(
                "gpe_redis_sync_commands",
                "Redis commands the last sync sent."
            )?),
        };
        for k in REDIS_FAILURE_KINDS {
            health.failures.with_label_values(&[k]);
        }
        Ok(health)
    }

    /// A sync to Redis succeeded after `took`, sending `commands` commands.
    pub(crate) fn synced(&self, took: Duration, commands: usize) {
        self.up.set(1);
        self.sync_duration.observe(took.as_secs_f64());
        self.commands
            .set(i64::try_from(commands).unwrap_or(i64::MAX));
        self.last_success.set(crate::clock::unix_seconds());
    }

    /// A sync to Redis failed (`kind`: one of [`REDIS_FAILURE_KINDS`]).
    pub(crate) fn failed(&self, kind: &str) {
        self.up.set(0);
        self.failures.with_label_values(&[kind]).inc();
    }
}

/// This process's self-metrics, created on first use.
pub(crate) fn get() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    // The names are fixed and valid: registering them cannot fail.
    HEALTH.get_or_init(|| Health::new().expect("gpe's self-metrics register"))
}

/// The registry of this process's self-metrics (see the [module docs](self)), for a `/metrics`
/// server to expose: `MultiProcessCollector::with_registry` takes it, or add its families to
/// another registry's.
pub fn registry() -> &'static Registry {
    &get().registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_from_the_start() {
        let text = crate::expose::encode_text(&registry().gather()).unwrap();
        for family in [
            "gpe_scrape_duration_seconds",
            "gpe_collector_files_read",
            "gpe_collector_files_skipped_total{reason=\"corrupt\"}",
            "gpe_collector_series",
            "gpe_compaction_runs_total",
            "gpe_compaction_files_folded_total",
            "gpe_compaction_archive_bytes",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
        assert!(
            !text.contains("gpe_redis"),
            "no Redis families before a sync"
        );
        get().redis();
        let text = crate::expose::encode_text(&registry().gather()).unwrap();
        for family in [
            "gpe_redis_up",
            "gpe_redis_last_success_timestamp_seconds",
            "gpe_redis_sync_failures_total{kind=\"timeout\"}",
            "gpe_redis_sync_duration_seconds",
            "gpe_redis_sync_commands",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
    }
}

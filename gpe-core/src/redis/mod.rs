//! Redis: the distributed store (feature `redis`).
//!
//! Every process keeps writing its values to its own memory-mapped files (the request path never
//! talks to Redis). A [`RedisSync`], run by the master for every process of its host (or by a
//! standalone process for itself), reads those files on a timer and writes **absolute** values to
//! Redis, so a write can be repeated or lost without changing the totals:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:heartbeat` | ZSET | member `{host}:{pid}:{start}` per process (`.{epoch}` appended after a re-registration), score = Redis time of its last sync |
//! | `{prefix}:proc:{member}` | HASH | one per process (`member` as in the heartbeat): field = `{kind}\t{series key}` (the kind, a tab, the JSON key of the `.db` file), value = the process's value |
//! | `{prefix}:archive:{kind}` | HASH | field = `{host}\t{series key}`, value = folded values of dead processes of that host |
//! | `{prefix}:folded` | ZSET | processes folded because their heartbeat went stale (so they are never counted twice) |
//! | `{prefix}:lock:sweep` | STRING | `SET NX PX` lock: one sweeper of stale processes at a time |
//!
//! `kind` is `counter`, `histogram`, `summary`, `gauge_{mode}` or `native`; it never contains a
//! tab, so a field of a process hash is split at its first tab whatever the series key holds.
//! Values of the most-recent gauge modes are stored as `"{value} {timestamp}"`.
//!
//! Native histograms ([`native`](crate::native)) are synced as their `native_<pid>.ndb` entries
//! are: one field per populated bucket and one for the zero bucket (the schema in every key),
//! each value the bucket's count as a decimal integer (the `u64` of the file, never an `f64`).
//! The fold adds counts digit string to digit string, so archives stay exact past a Lua
//! double's 2^53, and the [`RedisCollector`] merges the buckets of every host and archive as the
//! file collector merges a directory's (coarsest schema, widest zero bucket, smallest bucket
//! limit). **Exemplars are not synced**: `exemplar_<pid>.ndb` files stay on their host, and are
//! exposed by that host's own `/metrics` only (a cluster-wide scrape has none). The prefix may contain `:`: keys
//! are never parsed, only built from the heartbeat members. Keys of any other shape under the
//! prefix (such as the earlier one-hash-per-kind `{prefix}:proc:{member}:{kind}`) are foreign:
//! never read, never touched; fields of a process hash without a known kind are skipped.
//!
//! One sync is one script for all the processes that changed (or whose heartbeat is due): per
//! process a `ZADD XX CH` (refreshes the heartbeat and tells that it is registered) and one `HSET`
//! of all its changed fields (one more per 1,000 fields), plus one `TIME` per sync. A process that
//! is not registered yet (new, folded as stale, or lost by a Redis restart) costs two `ZSCORE`s
//! and a `ZADD` more.
//!
//! When a process dies (the caller's [`Liveness`](crate::Liveness) says so, or its file is gone),
//! or its heartbeat is older than the TTL, a Lua script atomically folds its counters, histograms
//! (classic and native) and `min`/`max`/`sum`/`mostrecent` gauges into the per-kind archives and deletes its hash
//! (`all` and `live*` gauges are dropped), so totals stay monotonic and the key count is bounded
//! by the living processes.
//!
//! A [`RedisCollector`] reads it all back (two round trips whatever the number of processes) and
//! merges with the file collector's rules ([`RedisCollector::scrape`]: families and native
//! buckets); a [`RedisExporter`] adds the periodic sweep of stale
//! processes for a cluster-wide `/metrics`.
//!
//! Redis is one server (`REDIS_URL`, [`RedisConfig::new`]) or the master a set of Redis Sentinels
//! name (`REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`, [`RedisConfig::sentinel`]), followed on
//! failover. Redis Cluster is not supported: every script touches several keys, which Cluster only
//! allows within one hash slot.
//!
//! Redis being down never fails or blocks the caller: the sync logs one warning per outage, retries
//! with capped exponential backoff, and converges to exactly the local totals after recovery.
//!
//! ```no_run
//! use gpe_core::redis::{RedisConfig, RedisSync, SyncSource};
//! use gpe_core::{LivePids, Liveness};
//!
//! # fn main() -> Result<(), gpe_core::redis::RedisError> {
//! let config = RedisConfig::from_env()?;
//! let live = LivePids::new();
//! let sync = RedisSync::new(
//!     config,
//!     SyncSource::dir("/run/gpe", Liveness::Pids(live.clone())),
//! )?
//! .spawn()?;
//! // ... after reaping a worker:
//! let _ = sync.flush_now(); // its last values reach Redis before compaction removes its files
//! sync.shutdown();
//! # Ok(())
//! # }
//! ```

mod collector;
mod config;
mod exporter;
mod keys;
mod lua;
mod outage;
mod pool;
mod runner;
mod sync;

pub use collector::RedisCollector;
pub use config::{RedisConfig, DEFAULT_INTERVAL, DEFAULT_PREFIX, DEFAULT_TTL};
pub use exporter::RedisExporter;
pub use keys::ProcessId;
pub use sync::{FlushReport, RedisSync, SyncHandle, SyncSource};

/// Errors of the Redis backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// An environment variable has a value that cannot be used.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value (never a password: those are reported as `"***"`).
        value: String,
        /// What was expected.
        reason: &'static str,
    },

    /// A configuration value given through the builder cannot be used.
    #[error("invalid Redis configuration: {0}")]
    InvalidConfig(&'static str),

    /// `REDIS_URL` (or the URL given) is not a valid `redis://` / `rediss://` URL.
    #[error("invalid Redis URL (credentials hidden): {0}")]
    InvalidUrl(#[source] redis::RedisError),

    /// The connection settings were refused when setting up the pool (credentials hidden).
    #[error("cannot set up Redis connections: {0}")]
    PoolConfig(#[source] redis::RedisError),

    /// The connection pool could not be built.
    #[error("cannot build the Redis connection pool: {0}")]
    Pool(#[from] deadpool_redis::BuildError),

    /// Redis refused the connection or answered with an error.
    #[error("Redis is unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),

    /// No connection could be had from the pool in time (Redis down, or every connection busy).
    #[error("Redis is unavailable: no connection: {0}")]
    Connection(#[from] deadpool_redis::PoolError),

    /// Redis did not answer within the connect and response timeouts.
    #[error("Redis is unavailable: no answer within {0:?}")]
    Timeout(std::time::Duration),

    /// Redis was found down recently: the next try waits for the retry backoff.
    #[error("Redis is down; waiting for the next retry (values are kept)")]
    Backoff,

    /// The background thread could not be started or has stopped.
    #[error("the Redis sync thread is not running: {0}")]
    Thread(&'static str),

    /// Reading the metrics directory failed.
    #[error(transparent)]
    Store(#[from] crate::error::Error),
}

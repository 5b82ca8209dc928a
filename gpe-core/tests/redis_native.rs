//! Native histograms through Redis against a real `redis-server`: processes of two hosts at
//! different schemas synced, read back by the Redis collector exactly as the file collector
//! merges the same files (live, after a stale fold and re-registration, and once every process is
//! folded into the archive); counts past a double's 2^53 added exactly by the fold; exemplars
//! not synced.
#![cfg(feature = "redis")]

mod common;
#[path = "shared/observations.rs"]
mod observations;
mod redis_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use gpe_core::exemplar::TraceContext;
use gpe_core::expose::Scrape;
use gpe_core::native::{NativeBuckets, NativeOpts};
use gpe_core::redis::{RedisCollector, RedisConfig, RedisExporter, SyncHandle};
use gpe_core::{Histogram, HistogramVec, LivePids, Liveness, MultiProcessCollector, Store};
use observations::values;
use prometheus::HistogramOpts;
use redis_support::*;

const PREFIX: &str = "gpe:native";

/// The test settings with an hour between syncs (only `flush_now` writes) and no TTL (no sweep
/// but the test's own).
fn config(server: &RedisServer, host: &str) -> RedisConfig {
    test_config(server, PREFIX, host, Duration::from_secs(3600))
        .with_ttl(None)
        .unwrap()
}

/// One process's `latency_seconds` with native buckets of `opts`.
struct Proc {
    _store: Store,
    vec: HistogramVec,
}

impl Proc {
    fn new(dir: &Path, pid: u32, opts: NativeOpts) -> Proc {
        let store = Store::open_as(dir, pid).unwrap();
        let vec = HistogramVec::with_native(
            HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.001, 0.01, 0.1, 1.0]),
            opts,
            &["route"],
            &store,
        )
        .unwrap();
        Proc { _store: store, vec }
    }

    fn route(&self, route: &str) -> Histogram {
        self.vec.with_label_values(&[route]).unwrap()
    }

    /// Observe `count` values of stream `seed` on `route`.
    fn observe(&self, route: &str, seed: u64, count: usize) -> usize {
        let h = self.route(route);
        for v in values(seed, count) {
            h.observe(v);
        }
        count
    }
}

/// What the file collector makes of the files of every directory in `dirs` (copied into one
/// directory: distinct pids, so distinct names), without compaction.
fn file_scrape(dirs: &[&Path]) -> Scrape {
    let all = tempfile::tempdir().unwrap();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, all.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    MultiProcessCollector::new(all.path())
        .with_liveness(Liveness::Pids(LivePids::new()))
        .with_auto_compact(false)
        .scrape()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// The classic samples of a scrape: bucket counts exactly, and the sums (added up in another
/// order by each collector) to 1e-9.
fn assert_same_classic(redis: &Scrape, files: &Scrape) {
    let (r, f) = (samples(&redis.families), samples(&files.families));
    assert_eq!(
        r.keys().collect::<Vec<_>>(),
        f.keys().collect::<Vec<_>>(),
        "the same classic samples"
    );
    for (k, want) in &f {
        let got = r[k];
        if k.0.ends_with("_sum") {
            assert!(
                (got - want).abs() <= 1e-9 * want.abs(),
                "{k:?}: {got} vs {want}"
            );
        } else {
            assert_eq!(got, *want, "{k:?}");
        }
    }
}

/// The Redis collector's scrape has exactly the native buckets (and classic samples) of the
/// file collector over the same files.
fn assert_redis_equals_files(collector: &RedisCollector, dirs: &[&Path], what: &str) -> Scrape {
    let redis = collector.try_scrape().expect("redis readable");
    let files = file_scrape(dirs);
    assert!(
        !files.native.is_empty(),
        "{what}: native buckets in the files"
    );
    assert_eq!(redis.native, files.native, "{what}: native buckets");
    assert_same_classic(&redis, &files);
    assert!(
        redis.exemplars.is_empty(),
        "{what}: exemplars stay on their host"
    );
    redis
}

/// Every `(field, value)` of the hashes matching `pattern`.
fn hash_fields(server: &RedisServer, pattern: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in server.keys(pattern) {
        let Resp::Array(flat) = server.cmd(&["HGETALL", &key]) else {
            panic!("HGETALL {key}")
        };
        for kv in flat.chunks(2) {
            out.push((kv[0].text().unwrap(), kv[1].text().unwrap()));
        }
    }
    out
}

/// The sum of the counts of `fields` (native bucket and zero-bucket entries), which must all be
/// decimal integers.
fn native_total<'a>(fields: impl IntoIterator<Item = &'a (String, String)>) -> u64 {
    fields
        .into_iter()
        .map(|(f, v)| {
            assert!(
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                "{f}: {v} is not an integer"
            );
            v.parse::<u64>().unwrap()
        })
        .sum()
}

fn flush(sync: &SyncHandle) -> gpe_core::redis::FlushReport {
    sync.flush_now().expect("flushed")
}

#[test]
fn native_buckets_through_redis_equal_the_file_collectors_live_and_archived() {
    let server = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dirs = [dir_a.path(), dir_b.path()];
    let mut observed = 0;
    // host-a: two processes at schema 3 (one with a wider zero bucket), one at schema 1.
    let a1 = Proc::new(dir_a.path(), 931_001, NativeOpts::new(3).unwrap());
    let a2 = Proc::new(
        dir_a.path(),
        931_002,
        NativeOpts::new(3).unwrap().zero_threshold(1e-3).unwrap(),
    );
    let a3 = Proc::new(dir_a.path(), 931_003, NativeOpts::new(1).unwrap());
    for (n, p) in [&a1, &a2, &a3].into_iter().enumerate() {
        observed += p.observe("/", n as u64, 4_000);
        observed += p.observe("/api", 10 + n as u64, 4_000);
    }
    // An exemplar beside the buckets: its file is not synced.
    a1.route("/").observe_with_exemplar(
        0.25,
        &TraceContext {
            trace_id: [7; 16],
            span_id: [8; 8],
        },
    );
    observed += 1;
    // host-b: one process at schema 2 with a bucket limit of 40, on "/api" only.
    let b1 = Proc::new(
        dir_b.path(),
        932_001,
        NativeOpts::new(2).unwrap().max_buckets(40),
    );
    observed += b1.observe("/api", 20, 6_000);

    let (live_a, live_b) = (LivePids::new(), LivePids::new());
    live_a.replace([931_001, 931_002, 931_003]);
    live_b.replace([932_001]);
    let sync_a = spawn_sync(
        config(&server, "host-a"),
        dir_a.path(),
        Liveness::Pids(live_a.clone()),
    );
    let sync_b = spawn_sync(
        config(&server, "host-b"),
        dir_b.path(),
        Liveness::Pids(live_b.clone()),
    );
    // (The sync's first tick may have written already: only the result matters.)
    flush(&sync_a);
    flush(&sync_b);

    // The counts travel as integers; exemplars are not synced.
    let fields = hash_fields(&server, &format!("{PREFIX}:proc:*"));
    assert!(fields.iter().any(|(f, _)| f.starts_with("native\t")));
    assert!(
        !fields.iter().any(|(f, _)| f.starts_with("exemplar")),
        "exemplars synced: {fields:?}"
    );
    assert_eq!(
        native_total(fields.iter().filter(|(f, _)| f.starts_with("native\t"))),
        observed as u64
    );

    let collector = RedisCollector::new(config(&server, "reader")).unwrap();
    let scrape = assert_redis_equals_files(&collector, &dirs, "live");
    let root = scrape
        .native
        .get("latency_seconds", &labels(&[("route", "/")]))
        .unwrap();
    assert_eq!(root.schema, 1, "the coarsest schema wins");
    assert_eq!(root.zero_threshold, 1e-3, "the widest zero bucket wins");
    assert_eq!(root.count(), 12_001.0);
    let api = scrape
        .native
        .get("latency_seconds", &labels(&[("route", "/api")]))
        .unwrap();
    assert!(
        api.bucket_count() <= 40,
        "host-b's limit applies to the merge"
    );
    assert_eq!(api.count(), 18_000.0);

    // Per host: each host's series are its own directory's.
    let per_host = RedisCollector::new(config(&server, "reader"))
        .unwrap()
        .with_host_label(true)
        .try_scrape()
        .unwrap();
    for (host, dir, route) in [
        ("host-a", dir_a.path(), "/"),
        ("host-a", dir_a.path(), "/api"),
        ("host-b", dir_b.path(), "/api"),
    ] {
        let files = file_scrape(&[dir]);
        assert_eq!(
            per_host.native.get(
                "latency_seconds",
                &labels(&[("host", host), ("route", route)])
            ),
            files
                .native
                .get("latency_seconds", &labels(&[("route", route)])),
            "{host} {route}"
        );
    }
    assert_eq!(per_host.native.len(), 3);

    // 931_002 goes quiet and is folded as stale; it comes back with more and is re-registered
    // with only what it gained (its counts less the folded ones, as integers).
    let member = format!("host-a:{}:0", 931_002);
    server.cmd(&["ZADD", &format!("{PREFIX}:heartbeat"), "0", &member]);
    let exporter = RedisExporter::new(
        config(&server, "exporter")
            .with_ttl(Some(Duration::from_secs(60)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(exporter.sweep_now().unwrap(), vec![member.clone()]);
    assert_redis_equals_files(&collector, &dirs, "after a stale fold");
    observed += a2.observe("/", 30, 2_500);
    observed += a2.observe("/api", 31, 2_500);
    flush(&sync_a);
    assert_eq!(
        server.keys(&format!("{PREFIX}:proc:{member}.1")).len(),
        1,
        "re-registered under a new epoch"
    );
    assert_redis_equals_files(&collector, &dirs, "re-registered");
    // What the exporter serves is the same scrape.
    assert_eq!(exporter.scrape().native, file_scrape(&dirs).native);

    // More everywhere, then every process dies: folded into the archive, still the same.
    observed += a1.observe("/", 40, 3_000);
    observed += a3.observe("/api", 41, 3_000);
    observed += b1.observe("/api", 42, 3_000);
    flush(&sync_a);
    flush(&sync_b);
    assert_redis_equals_files(&collector, &dirs, "more observations");
    live_a.replace([]);
    live_b.replace([]);
    assert_eq!(flush(&sync_a).folded, 3);
    assert_eq!(flush(&sync_b).folded, 1);
    assert!(server.keys(&format!("{PREFIX}:proc:*")).is_empty());
    let archived = hash_fields(&server, &format!("{PREFIX}:archive:native"));
    assert!(!archived.is_empty());
    assert_eq!(native_total(&archived), observed as u64);
    let scrape = assert_redis_equals_files(&collector, &dirs, "archived");
    let total: f64 = ["/", "/api"]
        .iter()
        .map(|r| {
            scrape
                .native
                .get("latency_seconds", &labels(&[("route", r)]))
                .unwrap()
                .count()
        })
        .sum();
    assert_eq!(total, observed as f64);
    sync_a.shutdown().unwrap();
    sync_b.shutdown().unwrap();
}

/// A native entry's series key, as the store writes it.
fn bucket_key(index: i32) -> String {
    format!(
        r#"["latency_seconds", "latency_seconds_positive", {{"__index": "{index}", "__schema": "0"}}, ""]"#
    )
}

const ZERO_KEY: &str = r#"["latency_seconds", "latency_seconds_zero", {"__max_buckets": "0", "__schema": "0", "__threshold": "0.0"}, "Latency."]"#;

#[test]
fn the_archive_adds_native_counts_exactly_past_two_to_the_53() {
    let server = RedisServer::start();
    let hb = format!("{PREFIX}:heartbeat");
    let big = (1u64 << 53) + 1; // a double rounds 2 * big to 2^54
    let max = u64::MAX.to_string();
    for pid in 1..=3 {
        let member = format!("h:{pid}:1");
        let key = format!("{PREFIX}:proc:{member}");
        server.cmd(&[
            "HSET",
            &key,
            &format!("native\t{}", bucket_key(1)),
            &big.to_string(),
            &format!("native\t{}", bucket_key(2)),
            &max,
            &format!("native\t{ZERO_KEY}"),
            "1",
            // Not a count: skipped, never folded.
            &format!("native\t{}", bucket_key(3)),
            "1.5",
        ]);
        server.cmd(&["ZADD", &hb, "0", &member]);
    }
    let exporter = RedisExporter::new(
        config(&server, "exporter")
            .with_ttl(Some(Duration::from_secs(60)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(exporter.sweep_now().unwrap().len(), 3);
    let archive: BTreeMap<String, String> =
        hash_fields(&server, &format!("{PREFIX}:archive:native"))
            .into_iter()
            .collect();
    let field = |k: &str| format!("h\t{k}");
    assert_eq!(
        archive[&field(&bucket_key(1))],
        (3 * u128::from(big)).to_string()
    );
    assert_eq!(
        archive[&field(&bucket_key(2))],
        (3 * u128::from(u64::MAX)).to_string()
    );
    assert_eq!(archive[&field(ZERO_KEY)], "3");
    assert!(!archive.contains_key(&field(&bucket_key(3))));

    // Read back as counts (a sum past u64::MAX saturates; the exposition's counts are f64s).
    let scrape = exporter.scrape();
    let got = scrape.native.get("latency_seconds", &[]).unwrap();
    let mut want = NativeBuckets::new(0, 0.0);
    want.positive.insert(1, (3 * big) as f64);
    want.positive.insert(2, u64::MAX as f64);
    want.zero_count = 3.0;
    assert_eq!(got, &want);
}

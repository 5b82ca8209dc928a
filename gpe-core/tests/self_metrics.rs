//! gpe's own health metrics (`gpe_*`, `gpe_core::health`) against real files and a real
//! `redis-server`: what the collector read and skipped, compaction, the Redis sync going up and
//! down. One test per concern, in one process of its own, since the self-metrics are the
//! process's: each test reads them before and after, so they may run concurrently.
#![cfg(feature = "redis")]

mod common;
mod redis_support;

use std::time::Duration;

use gpe_core::{Counter, Liveness, MultiProcessCollector, Store};
use redis_support::*;

/// The value of the sample `series` (name and labels, exactly as exposed) in gpe's registry.
fn value(series: &str) -> f64 {
    let text = gpe_core::expose::encode_text(&gpe_core::health::registry().gather()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn the_collector_reports_what_it_read_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_as(dir.path(), std::process::id()).unwrap();
    Counter::new("hits", "Hits.", &store).unwrap().inc_by(3.0);
    // Two files another process would have left: one cut short, one not a metrics file.
    std::fs::write(dir.path().join("counter_999991.db"), [1u8, 2, 3]).unwrap();
    std::fs::write(dir.path().join("counter_999992.db"), vec![0xffu8; 8192]).unwrap();
    let collector = MultiProcessCollector::new(dir.path())
        .with_auto_compact(false)
        .with_self_metrics();
    let corrupt = r#"gpe_collector_files_skipped_total{reason="corrupt"}"#;
    let before = value(corrupt);
    let families = collector.gather();
    assert!(value(corrupt) >= before + 2.0);
    // The collector's own families come with the scrape.
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    for name in [
        "gpe_scrape_duration_seconds",
        "gpe_collector_files_read",
        "gpe_collector_series",
        "hits_total",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let scrapes = "gpe_scrape_duration_seconds_count";
    let before = value(scrapes);
    collector.gather();
    assert!(value(scrapes) > before);
}

#[test]
fn compaction_reports_the_files_it_folded() {
    let dir = tempfile::tempdir().unwrap();
    // Three dead processes' counters.
    for pid in [999_981, 999_982, 999_983] {
        let store = Store::open_as(dir.path(), pid).unwrap();
        Counter::new("hits", "Hits.", &store).unwrap().inc();
    }
    let (runs, folded) = (
        value("gpe_compaction_runs_total"),
        value("gpe_compaction_files_folded_total"),
    );
    let report = MultiProcessCollector::new(dir.path())
        .with_liveness(Liveness::Pids(gpe_core::LivePids::new()))
        .compact()
        .unwrap();
    assert_eq!(report.folded, 3);
    assert!(value("gpe_compaction_runs_total") > runs);
    assert!(value("gpe_compaction_files_folded_total") >= folded + 3.0);
    assert!(value("gpe_compaction_archive_bytes") > 0.0);
}

#[test]
fn the_redis_sync_reports_up_and_down() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = fake_process(dir.path(), std::process::id(), 5.0, 1.0);
    let sync = spawn_sync(
        test_config(&server, "selfm", "h1", Duration::from_secs(3600)),
        dir.path(),
        Liveness::PidCheck,
    );
    let report = sync.flush_now().expect("a sync while Redis is up");
    assert!(report.commands >= 1, "{report:?}");
    assert_eq!(value("gpe_redis_up"), 1.0);
    // The last sync's commands (an idle one that follows sends none).
    assert!(value("gpe_redis_sync_commands") <= report.commands as f64);
    assert!(value("gpe_redis_sync_duration_seconds_count") >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - value("gpe_redis_last_success_timestamp_seconds")).abs() < 60.0);

    // Redis goes away: the next sync fails, and says so.
    let failures = r#"gpe_redis_sync_failures_total{kind="connection"}"#;
    let timeouts = r#"gpe_redis_sync_failures_total{kind="timeout"}"#;
    let before = value(failures) + value(timeouts);
    server.kill();
    // (A sync with nothing new to send does not need Redis: give it something.)
    Counter::new("hits", "Hits.", &store).unwrap().inc();
    assert!(sync.flush_now().is_err());
    assert_eq!(value("gpe_redis_up"), 0.0);
    assert!(value(failures) + value(timeouts) > before);
    drop(sync);
}

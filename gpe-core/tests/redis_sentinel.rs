//! The Redis sync and collector through a real Redis Sentinel (`redis-server --sentinel`)
//! monitoring a private `redis-server`, and the Sentinel configuration errors.
#![cfg(feature = "redis")]

mod common;
mod redis_support;

use common::*;
use gpe_core::redis::{RedisCollector, RedisConfig};
use gpe_core::{LivePids, Liveness};
use redis_support::*;

/// The settings of `REDIS_*` variables `vars`, read through the getter entry point.
fn from_vars(vars: &[(&str, &str)]) -> Result<RedisConfig, gpe_core::redis::RedisError> {
    RedisConfig::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

#[test]
fn sync_and_collector_through_a_sentinel() {
    let data = RedisServer::start();
    let sentinel = SentinelServer::start(data.port, "mymaster");
    let dir = tempfile::tempdir().unwrap();
    let _a = fake_process(dir.path(), 4001, 5.0, 2.0);
    let _b = fake_process(dir.path(), 4002, 7.0, 9.0);
    let live = LivePids::new();
    live.insert(4001);
    live.insert(4002);

    // Through the environment entry point: an unreachable REDIS_HOST is ignored, REDIS_DB
    // applies to the master the sentinel names.
    let sentinels = format!("127.0.0.1:1,{}", sentinel.addr());
    let cfg = from_vars(&[
        ("REDIS_ENABLED", "true"),
        ("REDIS_HOST", "192.0.2.1"),
        ("REDIS_DB", "3"),
        ("REDIS_SENTINELS", &sentinels),
        ("REDIS_SENTINEL_MASTER", "mymaster"),
        ("REDIS_KEY_PREFIX", "gpe:sentinel"),
        ("REDIS_SYNC_INTERVAL", "3600"),
        (gpe_core::worker::env::HOST_ID, "host-s"),
    ])
    .unwrap();
    assert_eq!(
        cfg.server(),
        format!(
            "sentinel mymaster via 127.0.0.1:1,{} (db 3)",
            sentinel.addr()
        )
    );
    let sync = spawn_sync(cfg.clone(), dir.path(), Liveness::Pids(live));
    let report = sync.flush_now().unwrap();
    assert_eq!(report.processes, 2, "{report:?}");

    // The builder: the same master, the same database.
    let built = RedisConfig::new("redis://ignored:1/3")
        .unwrap()
        .with_sentinel(&[&sentinel.addr()], "mymaster")
        .unwrap()
        .with_prefix("gpe:sentinel")
        .unwrap();
    for config in [cfg, built] {
        let s = samples(&RedisCollector::new(config).unwrap().try_gather().unwrap());
        assert_eq!(value(&s, "hits_total", &[]), Some(12.0));
        assert_eq!(value(&s, "peak", &[]), Some(9.0));
    }
    // Everything went to database 3: nothing in database 0.
    assert!(data.keys("gpe:sentinel:*").is_empty());
    sync.shutdown().unwrap();
}

#[test]
fn sentinel_builder_rejects_what_cannot_be_used() {
    assert!(RedisConfig::sentinel(&[], "mymaster").is_err());
    assert!(RedisConfig::sentinel(&["127.0.0.1:26379"], "").is_err());
    assert!(RedisConfig::sentinel(&["127.0.0.1:26379"], "my master").is_err());
    assert!(RedisConfig::sentinel(&["127.0.0.1"], "mymaster").is_err());
    assert!(RedisConfig::sentinel(&["::1:26379"], "mymaster").is_err());
    let c = RedisConfig::sentinel(&["[::1]:26379", "redis://s2:26380"], "m").unwrap();
    assert_eq!(c.server(), "sentinel m via [::1]:26379,s2:26380 (db 0)");
}

#[test]
fn sentinel_env_errors_name_the_variable() {
    // The variables, and what the error must name.
    let cases: [(&[(&str, &str)], &[&str]); 3] = [
        (
            &[("REDIS_SENTINELS", "127.0.0.1:26379")],
            &["REDIS_SENTINEL_MASTER"],
        ),
        (
            &[
                ("REDIS_SENTINELS", "127.0.0.1:26379,nope"),
                ("REDIS_SENTINEL_MASTER", "mymaster"),
            ],
            &["REDIS_SENTINELS", "nope"],
        ),
        (
            &[
                ("REDIS_SENTINELS", "127.0.0.1:26379"),
                ("REDIS_SENTINEL_MASTER", "my master"),
            ],
            &["REDIS_SENTINEL_MASTER"],
        ),
    ];
    for (vars, named) in cases {
        let e = from_vars(vars).unwrap_err().to_string();
        for n in named {
            assert!(e.contains(n), "{vars:?}: {e}");
        }
    }
    // Without REDIS_SENTINELS the master name is not needed (nor read).
    let c = from_vars(&[("REDIS_SENTINEL_MASTER", "mymaster")]).unwrap();
    assert_eq!(c.server(), "127.0.0.1:6379/0");
}

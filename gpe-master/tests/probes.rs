//! The master's probes: `/ready` says 200 only while every configured worker is up, `/health`
//! answers without the credentials `/metrics` needs.

mod common;

use std::time::Duration;

use common::{http_get, Master, Options};
use nix::sys::signal::Signal;

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn ready_follows_the_workers_and_probes_need_no_credentials() {
    let mut m = Master::start(Options::workers(0).env("PROMETHEUS_BASIC_AUTH", "prom:s3cret"));
    let get = |m: &Master, path: &str| {
        http_get(m.metrics_addr, path, Duration::from_secs(5)).unwrap_or_default()
    };
    // No worker configured: alive, not ready, and it says why.
    m.wait_for("/health", |m| {
        (status(&get(m, "/health")) == 200).then_some(())
    });
    let ready = get(&m, "/ready");
    assert_eq!(status(&ready), 503, "{ready}");
    assert!(ready.contains("0 of 0 workers up"), "{ready}");
    assert_eq!(
        status(&get(&m, "/metrics")),
        401,
        "/metrics keeps its credentials"
    );
    // Workers asked for one at a time (the kernel merges signals sent together): ready once
    // every one asked for is up, which `/ready` reports with the count.
    for n in 1..=2 {
        m.signal(Signal::SIGTTIN);
        m.wait_for(&format!("ready with {n} workers"), |m| {
            let r = get(m, "/ready");
            (status(&r) == 200 && m.workers().len() == n).then_some(())
        });
    }
    // A worker killed: not ready until its replacement is up.
    let victim = m.workers()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    m.wait_for("ready again with a replacement", |m| {
        let pids = m.workers();
        (status(&get(m, "/ready")) == 200 && pids.len() == 2 && !pids.contains(&victim))
            .then_some(())
    });
    m.stop(Signal::SIGTERM, Duration::from_secs(20));
}

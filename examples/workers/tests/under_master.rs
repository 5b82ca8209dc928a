//! The three worker examples under a real `gpe-master --workers 3`: jobs are driven from outside,
//! the aggregated counts (read from the store directory by gpe-core's collector) must be exact, and
//! a panicking handler is counted while its worker survives.
//!
//! Needs `target/*/gpe-master` next to this test's binary (`.ci/test` builds every binary first).

use std::path::Path;
use std::time::Duration;

use gpe_core::{Liveness, MultiProcessCollector};

mod common;

use common::{eventually, request, Start};

fn totals(dir: &Path) -> (f64, f64, f64) {
    let families = MultiProcessCollector::new(dir)
        .with_liveness(Liveness::PidCheck)
        .gather();
    let sum = |name: &str, filter: &dyn Fn(&gpe_core::prometheus::proto::Metric) -> bool| -> f64 {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| filter(m))
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    let error_is = |t: &'static str| {
        move |m: &gpe_core::prometheus::proto::Metric| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "error_type" && l.value() == t)
        }
    };
    (
        sum("gunicorn_worker_requests_total", &|_| true),
        sum("gunicorn_worker_failed_requests_total", &error_is("panic")),
        sum(
            "gunicorn_worker_failed_requests_total",
            &error_is("LineError"),
        ),
    )
}

fn line_protocol(worker: &str) {
    let master = Start::new(worker).spawn();
    let port = master.port;
    let first = eventually("a worker answering", Duration::from_secs(30), || {
        request(port, "warm")
    });
    assert!(first.starts_with("WARM "), "{first}");
    let mut pids = std::collections::BTreeSet::new();
    let n = 60;
    for i in 0..n {
        let reply = request(port, &format!("job{i}")).expect("a reply");
        assert!(reply.starts_with(&format!("JOB{i} ")), "{reply}");
        pids.insert(reply.trim().rsplit(' ').next().unwrap().to_owned());
    }
    assert_eq!(request(port, "fail").as_deref(), Some("ERR\n"));
    assert_eq!(
        request(port, "panic"),
        None,
        "a panicking handler drops the connection"
    );
    // The worker survived: requests keep being answered, by workers that were there before.
    for i in 0..20 {
        let reply = request(port, &format!("after{i}")).expect("a reply after the panic");
        pids.insert(reply.trim().rsplit(' ').next().unwrap().to_owned());
    }
    assert!(pids.len() <= 3, "workers were replaced: {pids:?}");
    // warm + n + fail + panic + 20 after.
    let expected = (1 + n + 1 + 1 + 20) as f64;
    let mut last = (0.0, 0.0, 0.0);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually("exact totals", Duration::from_secs(10), || {
            last = totals(master.metrics_dir.path());
            (last == (expected, 1.0, 1.0)).then_some(())
        })
    }));
    assert!(
        got.is_ok(),
        "totals (requests, panics, LineError failures) = {last:?}, expected ({expected}, 1, 1)"
    );
}

#[test]
fn sync_worker_under_master() {
    line_protocol(env!("CARGO_BIN_EXE_sync-worker"));
}

#[test]
fn threaded_worker_under_master() {
    line_protocol(env!("CARGO_BIN_EXE_threaded-worker"));
}

#[test]
fn queue_worker_under_master() {
    let spool = tempfile::tempdir().unwrap();
    let master = Start {
        env: &[("QUEUE_DIR", spool.path())],
        ..Start::new(env!("CARGO_BIN_EXE_queue-worker"))
    }
    .spawn();
    let n = 40;
    for i in 0..n {
        std::fs::write(
            spool.path().join(format!("{i}.job.tmp")),
            format!("job {i}"),
        )
        .unwrap();
        std::fs::rename(
            spool.path().join(format!("{i}.job.tmp")),
            spool.path().join(format!("{i}.job")),
        )
        .unwrap();
    }
    std::fs::write(spool.path().join("p.job.tmp"), "panic").unwrap();
    std::fs::rename(spool.path().join("p.job.tmp"), spool.path().join("p.job")).unwrap();
    eventually("every job done", Duration::from_secs(60), || {
        let done = std::fs::read_dir(spool.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "done"))
            .count();
        (done == n).then_some(())
    });
    for i in 0..n {
        let out = std::fs::read_to_string(spool.path().join(format!("{i}.done"))).unwrap();
        assert_eq!(out, format!("JOB {i}"));
    }
    let expected = (n + 1) as f64;
    eventually("exact totals", Duration::from_secs(10), || {
        let (requests, panics, _) = totals(master.metrics_dir.path());
        (requests == expected && panics == 1.0).then_some(())
    });
}

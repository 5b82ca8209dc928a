//! The three worker examples under a real `gpe-master --workers 3`: jobs are driven from outside,
//! the aggregated counts (read from the store directory by gpe-core's collector) must be exact, and
//! a panicking handler is counted while its worker survives.
//!
//! Needs `target/*/gpe-master` next to this test's binary (`.ci/test` builds every binary first).

use std::time::Duration;

mod common;

use common::{
    by_error_type, counter, eventually, put_job, reply_pid, request, settles_to, spool_master,
    worker_tests, Master, Start,
};

/// (requests, panics, `LineError` failures) counted in the master's store.
fn totals(master: &Master) -> (f64, f64, f64) {
    let f = master.families();
    let failed = "gunicorn_worker_failed_requests_total";
    (
        counter(&f, "gunicorn_worker_requests_total", &[]),
        by_error_type(&f, failed, "panic"),
        by_error_type(&f, failed, "LineError"),
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
        pids.insert(reply_pid(&reply));
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
        pids.insert(reply_pid(&reply));
    }
    assert!(pids.len() <= 3, "workers were replaced: {pids:?}");
    // warm + n + fail + panic + 20 after.
    let expected = (1 + n + 1 + 1 + 20) as f64;
    settles_to(
        "totals (requests, panics, LineError failures)",
        (expected, 1.0, 1.0),
        || totals(&master),
    );
}

worker_tests!(line_protocol:
    sync_worker_under_master => env!("CARGO_BIN_EXE_sync-worker"),
    threaded_worker_under_master => env!("CARGO_BIN_EXE_threaded-worker"),
);

#[test]
fn queue_worker_under_master() {
    let (spool, master) = spool_master(env!("CARGO_BIN_EXE_queue-worker"), &[]);
    let n = 40;
    for i in 0..n {
        put_job(spool.path(), &i.to_string(), &format!("job {i}"));
    }
    put_job(spool.path(), "p", "panic");
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
    settles_to("(requests, panics)", (expected, 1.0), || {
        let (requests, panics, _) = totals(&master);
        (requests, panics)
    });
}

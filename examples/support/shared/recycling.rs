//! Recycling under load, as 2 workers of a real gpe-master (each example's `tests/recycling.rs`
//! calls this with its own binary). A test binary of its own: it measures stretches without a
//! completed request, which other tests running beside it on 2 cores would blur.
//!
//! Needs `gpe-master` built in the same target directory (`.ci/test` builds every binary first).

use std::time::Duration;

use super::common::exposition::sum;
use super::common::{eventually, get, serve, Served};

/// Recycling under load never leaves nobody accepting. `--max-requests 25` without jitter, so
/// both workers reach their limit at about the same moment (the worst case), and 4 clients
/// that open a connection per request: the longest stretch in which no request completes stays
/// under 200 ms. (Before workers asked the master for their replacement and served on until it
/// was up, every retirement left its share of the accept queue unserved for over a second.)
/// Then a TERM to the idle master ends it without waiting for `ACCEPT_SETTLE`: idle workers
/// exit at once.
pub(crate) fn recycling_under_load_keeps_accepting(bin: &str) {
    let Served {
        mut master,
        port,
        metrics_port,
        dir: _dir,
    } = serve(bin, 2, &["--max-requests", "25", "--log-level", "warning"]);
    eventually("the app", Duration::from_secs(30), || get(port, "/").ok());

    let (total, threads) = (1500, 4);
    let done = std::sync::Mutex::new(Vec::with_capacity(total));
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(60);
    std::thread::scope(|s| {
        for t in 0..threads {
            let done = &done;
            s.spawn(move || {
                let mut i = t;
                while i < total {
                    assert!(std::time::Instant::now() < deadline, "load took over 60 s");
                    let (status, _) = get(port, "/").expect("request failed");
                    assert_eq!(status, 200);
                    done.lock().unwrap().push(std::time::Instant::now());
                    i += threads;
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_unstable();
    let mut gaps: Vec<Duration> = std::iter::once(started)
        .chain(done.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    gaps.sort_unstable_by(|a, b| b.cmp(a));
    // A retiring worker serves on while its replacement boots (tens of requests at this pace):
    // 1500 requests make at least 6 retirements.
    let waiting = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = get(metrics_port, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let exits = sum(
            &text,
            "gunicorn_master_worker_exits_total",
            &[("reason", "max_requests")],
        );
        if exits >= 6.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < waiting,
            "only {exits} max-requests exits after {total} requests: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Each retirement was a handover: the replacement came first (a `chld` restart each).
    assert!(
        sum(
            &text,
            "gunicorn_master_worker_restart_total",
            &[("reason", "chld")]
        ) >= 6.0,
        "{text}"
    );
    assert!(
        gaps[0] < Duration::from_millis(200),
        "no request completed for {:?} during recycling; longest stretches: {:?}",
        gaps[0],
        &gaps[..5.min(gaps.len())]
    );

    let took = master.stop("TERM", Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(1), // gpe_core::worker::shutdown::ACCEPT_SETTLE
        "idle workers stop at once on TERM, not after ACCEPT_SETTLE: {took:?}"
    );
}

/// This test as a `#[test]` function of the including test binary, for the example binary
/// `$bin`; the binary includes this file as its root module `shared`.
macro_rules! tests {
    ($bin:expr) => {
        #[test]
        fn recycling_under_load_keeps_accepting() {
            $crate::shared::recycling_under_load_keeps_accepting($bin);
        }
    };
}
pub(crate) use tests;

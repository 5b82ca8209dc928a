//! The shutdown future against real signals raised in this process (its own test binary, so no
//! other test shares the process): USR1 changes nothing, max-requests and TERM stop gracefully,
//! QUIT fast, and the settle and deadline moments come in order.
#![cfg(feature = "server")]

use std::time::{Duration, Instant};

use gpe_core::worker::shutdown::{Shutdown, StopReason, ACCEPT_SETTLE};
use gpe_core::worker::WorkerContext;
use nix::sys::signal::{raise, Signal};

/// Whether `f` resolves within `within`.
async fn resolves(f: impl std::future::Future<Output = ()>, within: Duration) -> bool {
    tokio::time::timeout(within, f).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_max_requests_drive_the_stop() {
    // Set before any thread reads the environment (this binary has this one test).
    std::env::set_var(gpe_core::worker::env::MAX_REQUESTS, "3");
    std::env::set_var(gpe_core::worker::env::GRACEFUL_TIMEOUT, "1");
    let ctx = WorkerContext::from_env().expect("worker environment");

    // max-requests: the third request asks for a graceful stop; USR1 does nothing.
    let sd = Shutdown::install(&ctx).expect("signal handlers");
    raise(Signal::SIGUSR1).expect("raise USR1");
    sd.count_request();
    sd.count_request();
    assert!(
        !resolves(sd.graceful(), Duration::from_millis(200)).await,
        "no stop after USR1 and 2 of 3 requests"
    );
    assert_eq!(sd.reason(), None);
    sd.count_request();
    let asked = Instant::now();
    assert!(resolves(sd.graceful(), Duration::from_secs(5)).await);
    assert_eq!(sd.reason(), Some(StopReason::MaxRequests));
    assert!(resolves(sd.settled(), Duration::from_secs(5)).await);
    assert!(
        asked.elapsed() >= ACCEPT_SETTLE,
        "settled before ACCEPT_SETTLE"
    );
    assert!(!resolves(sd.fast(), Duration::from_millis(100)).await);
    assert!(resolves(sd.deadline(), Duration::from_secs(5)).await);
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "deadline before the graceful timeout"
    );

    // TERM: graceful; then QUIT makes it fast.
    let sd = Shutdown::install(&ctx).expect("signal handlers");
    raise(Signal::SIGTERM).expect("raise TERM");
    assert!(resolves(sd.graceful(), Duration::from_secs(5)).await);
    assert_eq!(sd.reason(), Some(StopReason::Term));
    assert!(!resolves(sd.fast(), Duration::from_millis(200)).await);
    raise(Signal::SIGQUIT).expect("raise QUIT");
    assert!(resolves(sd.fast(), Duration::from_secs(5)).await);
    assert_eq!(sd.reason(), Some(StopReason::Quit));
    // A slower reason never undoes a fast stop.
    assert!(!sd.stop(StopReason::Term));
    assert_eq!(sd.reason(), Some(StopReason::Quit));
}

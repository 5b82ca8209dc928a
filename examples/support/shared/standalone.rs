//! The standalone tests every example service passes (each example's `tests/standalone.rs`
//! calls these with its own binary): serves the app and its own /metrics; the numbers add up;
//! TERM drains in-flight requests, QUIT exits at once; a unix socket bind works.

use std::process::Command;
use std::time::{Duration, Instant};

use super::common::exposition::sum;
use super::common::{eventually, free_port, get, python_requests_total, Proc};

fn start(bin: &str, dir: &std::path::Path) -> (Proc, u16, u16) {
    let (port, metrics_port) = (free_port(), free_port());
    let p = Proc::spawn(
        Command::new(bin)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_METRICS_PORT", metrics_port.to_string())
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove(gpe_core::worker::env::WORKER_ID),
    );
    eventually("the app", Duration::from_secs(20), || {
        get(port, "/health").ok()
    });
    (p, port, metrics_port)
}

pub(crate) fn serves_and_counts_exactly(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, port, metrics_port) = start(bin, dir.path());
    let mut sent = 0;
    for i in 0..20 {
        assert_eq!(get(port, "/").unwrap().0, 200);
        assert_eq!(get(port, &format!("/users/{i}")).unwrap().0, 200);
        assert_eq!(
            get(port, &format!("/random/{i}/{}", i * 31)).unwrap().0,
            404
        );
        sent += 3;
    }
    for _ in 0..3 {
        assert_eq!(get(port, "/fail").unwrap().0, 503);
        assert_eq!(get(port, "/panic").unwrap().0, 500);
        sent += 2;
    }
    let text = eventually("all requests in /metrics", Duration::from_secs(10), || {
        let (status, text) = get(metrics_port, "/metrics").ok()?;
        (status == 200 && sum(&text, "gunicorn_worker_requests_total", &[]) >= f64::from(sent))
            .then_some(text)
    });
    assert_eq!(
        sum(&text, "gunicorn_worker_requests_total", &[]),
        f64::from(sent)
    );
    if let Some(total) = python_requests_total(&text) {
        assert_eq!(total, f64::from(sent));
    }
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_requests_total",
            &[("endpoint", "/users/{id}")]
        ),
        20.0
    );
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_requests_total",
            &[("endpoint", "<unmatched>")]
        ),
        20.0
    );
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_failed_requests_total",
            &[("error_type", "panic")]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &text,
            "gunicorn_worker_failed_requests_total",
            &[("error_type", "status_5xx")]
        ),
        3.0
    );
    assert!(text.contains("gunicorn_worker_memory_bytes{"), "{text}");

    p.stop("TERM", Duration::from_secs(15));
}

/// `in_flight_endpoint` is the in-flight gauge's `endpoint` label of the slow request (empty for
/// gpe-actix, whose gauge is by method only).
pub(crate) fn term_drains_in_flight_requests_and_quit_does_not(
    bin: &str,
    in_flight_endpoint: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, port, _) = start(bin, dir.path());
    let slow = std::thread::spawn(move || get(port, "/slow?ms=800"));
    eventually(
        "the slow request in flight",
        Duration::from_secs(10),
        || {
            let text = gpe_core::expose::encode_text(
                &gpe_core::MultiProcessCollector::new(dir.path()).gather(),
            )
            .ok()?;
            (sum(
                &text,
                "gunicorn_worker_requests_in_flight",
                &[("endpoint", in_flight_endpoint), ("method", "GET")],
            ) == 1.0)
                .then_some(())
        },
    );
    p.signal("TERM");
    let (status, body) = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!((status, body.as_str()), (200, "slept 800 ms\n"));
    assert!(p
        .wait_exit(Duration::from_secs(15))
        .expect("exit")
        .success());

    let dir = tempfile::tempdir().unwrap();
    let (mut p, port, _) = start(bin, dir.path());
    let slow = std::thread::spawn(move || get(port, "/slow?ms=8000"));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    p.signal("QUIT");
    p.wait_exit(Duration::from_secs(5))
        .expect("fast exit after QUIT");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(slow.join().unwrap().is_err(), "the connection is cut");
}

pub(crate) fn serves_on_a_unix_socket(bin: &str) {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut p = Proc::spawn(
        Command::new(bin)
            .arg("--bind")
            .arg(format!("unix:{}", sock.display()))
            .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_METRICS_PORT", free_port().to_string())
            .env_remove("LISTEN_FDS")
            .env_remove(gpe_core::worker::env::WORKER_ID),
    );
    let reply = eventually("the unix socket", Duration::from_secs(20), || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).ok()?;
        s.write_all(b"GET /users/9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    });
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("user 9\n"), "{reply}");
    p.stop("TERM", Duration::from_secs(15));
}

/// A worker that cannot start exits 3, gunicorn's boot error, on which gpe-master stops instead
/// of respawning it, and says which setting to fix.
pub(crate) fn a_bad_setting_is_a_boot_error(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["--bind", "127.0.0.1:0"])
        .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
        .env("PROMETHEUS_METRICS_PORT", "99999")
        .env_remove("LISTEN_FDS")
        .env_remove(gpe_core::worker::env::WORKER_ID)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(r#"PROMETHEUS_METRICS_PORT="99999" is invalid"#),
        "{stderr}"
    );
}

/// These tests as `#[test]` functions of the including test binary, for the example binary
/// `$bin` whose slow request's in-flight `endpoint` label is `$in_flight_endpoint` (see
/// [`term_drains_in_flight_requests_and_quit_does_not`]); the binary includes this file as its
/// root module `shared`.
macro_rules! tests {
    ($bin:expr, $in_flight_endpoint:expr) => {
        #[test]
        fn serves_and_counts_exactly() {
            $crate::shared::serves_and_counts_exactly($bin);
        }

        #[test]
        fn term_drains_in_flight_requests_and_quit_does_not() {
            $crate::shared::term_drains_in_flight_requests_and_quit_does_not(
                $bin,
                $in_flight_endpoint,
            );
        }

        #[test]
        fn serves_on_a_unix_socket() {
            $crate::shared::serves_on_a_unix_socket($bin);
        }

        #[test]
        fn a_bad_setting_is_a_boot_error() {
            $crate::shared::a_bad_setting_is_a_boot_error($bin);
        }
    };
}
pub(crate) use tests;

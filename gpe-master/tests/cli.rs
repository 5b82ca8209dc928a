//! The command line of the real `gpe-master`: bad flags, a missing worker binary,
//! `--check-config`, and `GUNICORN_CMD_ARGS`.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, run_master, worker_bin, Master, Options};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An unknown flag is a usage error: exit 2, and stderr names the flag.
#[test]
fn unknown_flag_exits_2_naming_it() {
    let worker = worker_bin();
    let worker = worker.to_str().expect("utf-8 path");
    for args in [
        vec!["--no-such-flag", worker],
        vec!["--workers", "2", "--no-such-flag", worker],
    ] {
        let out = run_master(&args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--no-such-flag"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Booting worker"), "{args:?}: {stderr}");
    }
}

/// Flags after the worker binary belong to the worker, not to the master.
#[test]
fn flags_after_the_worker_binary_are_the_workers() {
    let port = free_port().to_string();
    let bind = format!("127.0.0.1:{port}");
    let worker = worker_bin();
    let worker = worker.to_str().expect("utf-8 path");
    let out = run_master(
        &[
            "--check-config",
            "--bind",
            &bind,
            worker,
            "--workers",
            "7",
            "--its-own",
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("1 worker(s)"), "{stdout}");
}

/// A worker binary that does not exist: a clear error at once, before any fork.
#[test]
fn missing_worker_binary_fails_fast_without_forking() {
    for (program, says) in [
        (
            "/nonexistent/dir/worker",
            "worker binary /nonexistent/dir/worker not found",
        ),
        ("gpe-no-such-worker-binary", "not found in PATH"),
    ] {
        let bind = format!("127.0.0.1:{}", free_port());
        let started = Instant::now();
        let out = run_master(&["--bind", &bind, "--no-metrics", program], &[]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{program}: {stderr}");
        assert_ne!(out.status.code(), Some(2), "not a usage error: {stderr}");
        assert!(stderr.contains(says), "{program}: {stderr}");
        assert!(!stderr.contains("Booting worker"), "{program}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{program}: took {:?}",
            started.elapsed()
        );
    }
}

/// `--check-config`: exit 0 with a summary, and no worker is started.
#[test]
fn check_config_exits_0_without_workers() {
    let bind = format!("127.0.0.1:{}", free_port());
    let worker = worker_bin();
    let worker = worker.to_str().expect("utf-8 path");
    let out = run_master(
        &["--check-config", "--workers", "3", "--bind", &bind, worker],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("configuration OK: 3 worker(s)") && stdout.contains(&bind),
        "{stdout}"
    );
    assert!(!stderr.contains("Booting worker"), "{stderr}");

    // A configuration error is reported by --check-config too.
    let out = run_master(&["--check-config", "--bind", "nonsense", worker], &[]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("nonsense"),
        "{}",
        text(&out.stderr)
    );
}

/// `GUNICORN_CMD_ARGS="--workers 2"` is honoured; the command line overrides it (as in gunicorn).
#[test]
fn gunicorn_cmd_args_is_honoured() {
    let mut m = Master::start(Options::default_workers().env("GUNICORN_CMD_ARGS", "--workers 2"));
    let pids = m.wait_workers(2);
    assert_eq!(m.answering_pids(2), pids);
    drop(m);

    let bind = format!("127.0.0.1:{}", free_port());
    let worker = worker_bin();
    let worker = worker.to_str().expect("utf-8 path");
    let out = run_master(
        &["--check-config", "--workers", "3", "--bind", &bind, worker],
        &[("GUNICORN_CMD_ARGS", "--workers 2")],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("3 worker(s)"),
        "the command line wins: {stdout}"
    );

    // A --bind on the command line replaces GUNICORN_CMD_ARGS's binds; without one they are used.
    let env_bind = format!("127.0.0.1:{}", free_port());
    let env = [(
        "GUNICORN_CMD_ARGS",
        format!("--bind {env_bind} --workers 2"),
    )];
    let env = [(env[0].0, env[0].1.as_str())];
    let out = run_master(&["--check-config", "--bind", &bind, worker], &env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("on {bind}\n")) && stdout.contains("2 worker(s)"),
        "only the command line's bind: {stdout}"
    );
    let out = run_master(&["--check-config", worker], &env);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("on {env_bind}\n")),
        "the environment's bind: {stdout}"
    );

    // Unbalanced quoting in GUNICORN_CMD_ARGS is a usage error naming the variable.
    let out = run_master(
        &["--check-config", worker],
        &[("GUNICORN_CMD_ARGS", "--name 'x")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("GUNICORN_CMD_ARGS"));
}

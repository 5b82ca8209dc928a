//! The command line of the real `gpe-master`: bad flags and bad flag values, a missing or
//! non-executable worker binary, `--check-config`, and `GUNICORN_CMD_ARGS`.

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

/// A bad flag value is a usage error too (as gunicorn's argparse): exit 2, stderr names the flag
/// and the value, nothing is started. Checked with and without `--check-config`.
#[test]
fn invalid_flag_values_exit_2_naming_the_flag() {
    let worker = worker_bin();
    let worker = worker.to_str().expect("utf-8 path");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").expect("writing a file");
    let file = file.to_str().expect("utf-8 path");
    let bind = format!("127.0.0.1:{}", free_port());
    let cases: [(&[&str], &str); 13] = [
        (
            &["--access-logformat", "%(h)s %(nope)s"],
            "--access-logformat",
        ),
        (&["--bind", "127.0.0.1/8000"], "--bind"),
        (&["--bind", "127.0.0.1:http"], "--bind"),
        (&["--bind", "127.0.0.1:70000"], "--bind"),
        (&["--bind", "::1:8000"], "--bind"),
        (&["--bind", "unix:"], "--bind"),
        (&["--bind", "fd://1"], "--bind"),
        (&["--user", "gpe-no-such-user"], "--user"),
        (&["--group", "gpe-no-such-group"], "--group"),
        (
            &["--worker-tmp-dir", "/nonexistent/gpe-dir"],
            "--worker-tmp-dir",
        ),
        (&["--worker-tmp-dir", file], "--worker-tmp-dir"),
        (&["--umask", "999"], "--umask"),
        (&["--metrics-bind", "nowhere"], "--metrics-bind"),
    ];
    for (flag_args, flag) in cases {
        for check in [false, true] {
            let mut args: Vec<&str> = vec!["--no-metrics"];
            if check {
                args.push("--check-config");
            }
            if flag != "--bind" {
                args.extend(["--bind", &bind]);
            }
            args.extend(flag_args);
            args.push(worker);
            let out = run_master(&args, &[]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(flag), "{args:?}: {stderr}");
            assert!(
                stderr.contains(flag_args[1]),
                "{args:?}: names the value: {stderr}"
            );
            assert!(!stderr.contains("Booting worker"), "{args:?}: {stderr}");
            assert!(
                text(&out.stdout).is_empty(),
                "{args:?}: {}",
                text(&out.stdout)
            );
        }
    }
}

/// A worker binary that exists but is not executable: a clear error naming it, before any fork
/// or bind (not a usage error).
#[test]
fn non_executable_worker_binary_fails_fast() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let program = tmp.path().join("not-executable");
    std::fs::write(&program, "#!/bin/sh\nexit 0\n").expect("writing the script");
    let program = program.to_str().expect("utf-8 path");
    // The port is taken: were it bound before the check, the error would be about the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bind = taken.local_addr().expect("addr").to_string();
    let out = run_master(&["--bind", &bind, "--no-metrics", program], &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_ne!(out.status.code(), Some(2), "not a usage error: {stderr}");
    assert!(
        stderr.contains(&format!("worker binary {program} is not executable")),
        "{stderr}"
    );
    assert!(!stderr.contains("Booting worker"), "{stderr}");
    assert!(
        !stderr.contains("cannot bind"),
        "checked before binding: {stderr}"
    );
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
    let out = run_master(&["--check-config", "--bind", "127.0.0.1/8000", worker], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("127.0.0.1/8000"),
        "{}",
        text(&out.stderr)
    );
}

/// `--check-config` does not bind (gunicorn loads the app without binding): it succeeds while
/// another server holds the TCP port and the unix socket path it is given, and leaves them alone.
#[test]
fn check_config_does_not_bind() {
    let worker = worker_bin();
    let worker = worker.to_str().expect("utf-8 path");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bind = taken.local_addr().expect("addr").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock = tmp.path().join("taken.sock");
    let unix = std::os::unix::net::UnixListener::bind(&sock).expect("bind unix");
    let unix_bind = format!("unix:{}", sock.display());
    let out = run_master(
        &[
            "--check-config",
            "--bind",
            &bind,
            "--bind",
            &unix_bind,
            worker,
        ],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(!stderr.contains("Listening at"), "nothing bound: {stderr}");
    // The other server's sockets still work: the port still accepts, the socket file is its own.
    let _c = std::net::TcpStream::connect(&bind).expect("the port is still served");
    assert!(taken.accept().is_ok());
    let _u = std::os::unix::net::UnixStream::connect(&sock).expect("the socket is still served");
    assert!(unix.accept().is_ok());
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

//! A gunicorn deployment moved over as it is: `gunicorn.conf.py` (run by python3, with
//! expressions), gpe's TOML, `./gunicorn.conf.py` found by default, the order command line >
//! `GUNICORN_CMD_ARGS` > file, worker-side gunicorn flags accepted with a warning, typos refused
//! with a suggestion, `--print-config`, and HUP re-reading an edited file.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{master_command, run_master, worker_bin, Master, Options, PATIENCE};
use nix::sys::signal::Signal;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `gpe-master ARGS` run to completion in `dir` (where a `./gunicorn.conf.py` may wait).
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = master_command(dir);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning gpe-master");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("try_wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "gpe-master {args:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The value of `name = …` in `--print-config`'s TOML.
fn setting(printed: &str, name: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no {name} in\n{printed}"))
        .to_owned()
}

fn python_available() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const CONF_PY: &str = r#"
import multiprocessing, os
workers = multiprocessing.cpu_count() * 0 + 3
bind = ["127.0.0.1:18001", "unix:" + os.path.join("/tmp", "gpe-conf-test.sock")]
timeout = 20 * 3
max_requests = 1000
raw_env = ["GREETING=hello"]
threads = 4          # gunicorn's gthread workers: not applicable, warned
def post_fork(server, worker):
    pass
helper = "not a setting: a Python file's own business"
"#;

#[test]
fn a_gunicorn_conf_py_with_expressions_is_read() {
    assert!(
        python_available(),
        "python3 is needed (.ci/deps installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gunicorn.conf.py"), CONF_PY).unwrap();
    let worker = worker_bin();
    let worker = worker.to_str().unwrap();
    // Found in the working directory, as gunicorn does.
    let out = run_in(dir.path(), &["--print-config", worker], &[]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(setting(&printed, "workers"), "3");
    assert_eq!(setting(&printed, "timeout"), "60");
    assert_eq!(setting(&printed, "max_requests"), "1000");
    assert_eq!(
        setting(&printed, "bind"),
        r#"["127.0.0.1:18001", "unix:/tmp/gpe-conf-test.sock"]"#
    );
    assert_eq!(setting(&printed, "raw_env"), r#"["GREETING=hello"]"#);
    assert!(printed.contains("# ignored: threads"), "{printed}");
    assert!(printed.contains("# ignored: post_fork"), "{printed}");

    // The order is gunicorn's: command line > GUNICORN_CMD_ARGS > file.
    let env = [("GUNICORN_CMD_ARGS", "--workers 5 --timeout 9")];
    let out = run_in(dir.path(), &["--print-config", worker], &env);
    let printed = text(&out.stdout);
    assert_eq!(setting(&printed, "workers"), "5", "{printed}");
    assert_eq!(setting(&printed, "timeout"), "9", "{printed}");
    let out = run_in(dir.path(), &["--print-config", "-w", "2", worker], &env);
    let printed = text(&out.stdout);
    assert_eq!(setting(&printed, "workers"), "2", "{printed}");
    assert_eq!(setting(&printed, "timeout"), "9", "{printed}");
    assert_eq!(setting(&printed, "max_requests"), "1000", "{printed}");
    // A --bind replaces the file's binds whole.
    let out = run_in(
        dir.path(),
        &["--print-config", "-b", "127.0.0.1:18002", worker],
        &[],
    );
    assert_eq!(
        setting(&text(&out.stdout), "bind"),
        r#"["127.0.0.1:18002"]"#
    );

    // --print-config's output is a TOML config file that gives the same settings back.
    let toml = dir.path().join("printed.toml");
    let out = run_in(dir.path(), &["--print-config", worker], &[]);
    std::fs::write(&toml, &out.stdout).unwrap();
    let other = tempfile::tempdir().unwrap(); // no gunicorn.conf.py there
    let again = run_in(
        other.path(),
        &["--print-config", "-c", toml.to_str().unwrap()],
        &[],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    let (a, b) = (text(&out.stdout), text(&again.stdout));
    for name in [
        "workers",
        "bind",
        "timeout",
        "max_requests",
        "raw_env",
        "command",
    ] {
        assert_eq!(setting(&a, name), setting(&b, name), "{name}");
    }
}

#[test]
fn config_errors_name_the_file_and_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker_bin();
    let worker = worker.to_str().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let cases = [
        (
            file("typo.toml", "wokers = 3\n"),
            "unknown setting `wokers`",
        ),
        (file("bad.toml", "workers = \n"), "not valid TOML"),
        (
            file("value.toml", "workers = [1, 2]\n"),
            "setting `workers`",
        ),
        (
            file("broken.py", "workers = 1 +\n"),
            "python3 could not run it",
        ),
        (
            file("raises.py", "raise SystemExit('no config for you')\n"),
            "no config for you",
        ),
    ];
    for (path, want) in &cases {
        let out = run_master(&["-c", path, worker], &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert!(stderr.contains(want), "{path}: {stderr}");
        assert!(stderr.contains(path.as_str()), "names the file: {stderr}");
        assert!(!stderr.contains("Booting worker"), "{stderr}");
    }
    // No python3: the error says what is needed (PATH without it).
    let conf = file("needs-python.py", "workers = 2\n");
    let empty = tempfile::tempdir().unwrap();
    let out = run_master(
        &["-c", &conf, worker],
        &[("PATH", empty.path().to_str().unwrap())],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs python3"), "{stderr}");
    assert!(stderr.contains("TOML"), "says the alternative: {stderr}");
}

#[test]
fn worker_side_gunicorn_flags_start_with_one_warning_and_typos_fail() {
    let mut m = Master::start(Options::workers(1).env(
        "GUNICORN_CMD_ARGS",
        "-k gthread --threads 4 --keep-alive 5 --preload --statsd-host localhost:8125 --log-level INFO --access-logformat '%(h)s'",
    ));
    let log = m.wait_for("the warning", |m| {
        let log = m.log();
        log.contains("Booting worker").then_some(log)
    });
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("Ignoring")).collect();
    assert_eq!(warnings.len(), 2, "{log}");
    for flag in [
        "-k/--worker-class",
        "--threads",
        "--keep-alive",
        "--preload",
    ] {
        assert!(warnings[0].contains(flag), "{flag}: {log}");
    }
    assert!(warnings[1].contains("--statsd-host"), "{log}");
    // gunicorn's line format, which log parsers and alerts key on.
    let booting = log
        .lines()
        .find(|l| l.contains("Booting worker with pid: "))
        .unwrap();
    assert_gunicorn_line(booting, "INFO");
    assert_gunicorn_line(warnings[0], "WARNING");
    m.stop(Signal::SIGTERM, Duration::from_secs(20));
    let log = m.log();
    let last = log
        .lines()
        .find(|l| l.contains("Shutting down: Master"))
        .expect(&log);
    assert_gunicorn_line(last, "INFO");

    let worker = worker_bin();
    let worker = worker.to_str().unwrap();
    let out = run_master(&["--wokers", "2", worker], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'--workers'"),
        "suggests the flag: {stderr}"
    );
}

/// `[2026-12-01 10:00:00 +0000] [1234] [LEVEL] message`, as gunicorn's `glogging.py` writes.
fn assert_gunicorn_line(line: &str, level: &str) {
    let b = line.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let ok = line.len() > 30
        && b[0] == b'['
        && digits(1..5)
        && b[5] == b'-'
        && digits(6..8)
        && b[8] == b'-'
        && digits(9..11)
        && b[11] == b' '
        && digits(12..14)
        && b[14] == b':'
        && digits(15..17)
        && b[17] == b':'
        && digits(18..20)
        && b[20] == b' '
        && matches!(b[21], b'+' | b'-')
        && digits(22..26)
        && &line[26..29] == "] [";
    assert!(ok, "not gunicorn's time stamp: {line:?}");
    let rest = &line[29..];
    let (pid, rest) = rest.split_once("] [").expect(line);
    assert!(pid.parse::<u32>().is_ok(), "{line:?}");
    let (lvl, message) = rest.split_once("] ").expect(line);
    assert_eq!(lvl, level, "{line:?}");
    assert!(!message.is_empty(), "{line:?}");
}

#[test]
fn a_toml_file_can_name_the_worker_binary() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gpe.toml");
    let worker = worker_bin();
    std::fs::write(
        &conf,
        format!(
            "workers = 2\ncommand = [{:?}, \"--its-flag\"]\n",
            worker.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = run_master(&["--print-config", "-c", conf.to_str().unwrap()], &[]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        setting(&printed, "command"),
        format!("[{:?}, \"--its-flag\"]", worker.to_str().unwrap())
    );
    // Without either, the error says where to name it.
    let out = run_master(&["--workers", "2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`command` in the config file"));
}

#[test]
fn hup_rereads_an_edited_config_file() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("gpe.toml");
    std::fs::write(&conf, "workers = 1\nloglevel = \"warning\"\n").unwrap();
    // Options::default_workers passes no --workers: the file's count is used.
    let mut m = Master::start(
        Options::default_workers()
            .arg("-c")
            .arg(conf.to_str().unwrap())
            .arg("--name")
            .arg("conf-test"),
    );
    m.wait_workers(1);
    // gunicorn's process title (and HUP below re-reads the arguments it overwrote).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", m.pid())).unwrap();
    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert_eq!(shown.trim_end(), "gpe-master: master [conf-test]");
    std::fs::write(&conf, "workers = 3\ntimeout = 40\n").unwrap();
    assert!(!m.log().contains("Booting worker"), "at warning level");
    m.signal(Signal::SIGHUP);
    // Three workers, all with the new timeout (given through the contract): the old one gone.
    m.wait_for("3 workers with the new timeout", |m| {
        let pids = m.workers();
        (pids.len() == 3
            && pids.iter().all(|p| {
                common::environ(*p, gpe_core::worker::env::TIMEOUT).as_deref() == Some("40")
            }))
        .then_some(())
    });
    // The log level changed with the file.
    m.wait_for("the new workers' boot lines", |m| {
        (m.log().matches("Booting worker").count() == 3).then_some(())
    });
    // A setting HUP cannot apply is named.
    std::fs::write(&conf, "workers = 3\nbacklog = 64\n").unwrap();
    m.signal(Signal::SIGHUP);
    m.wait_for("the warning", |m| {
        m.log()
            .contains("backlog changed; these apply at the next start")
            .then_some(())
    });
    // A broken edit keeps the running settings.
    std::fs::write(&conf, "workers = [\n").unwrap();
    m.signal(Signal::SIGHUP);
    m.wait_for("the error", |m| {
        m.log().contains("keeping the current ones").then_some(())
    });
    m.wait_workers(3);
    m.stop(Signal::SIGTERM, Duration::from_secs(20));
}

#[test]
fn hup_rebinds_when_the_addresses_change() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("gpe.toml");
    let (p1, p2) = (common::free_port(), common::free_port());
    let a1: std::net::SocketAddr = ([127, 0, 0, 1], p1).into();
    let a2: std::net::SocketAddr = ([127, 0, 0, 1], p2).into();
    std::fs::write(&conf, format!("workers = 1\nbind = [\"{a1}\"]\n")).unwrap();
    let mut m = Master::spawn_with(
        Options::default_workers()
            .arg("-c")
            .arg(conf.to_str().unwrap()),
        common::Launch::binds(&[], Some(a1)),
    );
    m.wait_workers(1);
    let answers = |a| common::http_get(a, "/", Duration::from_secs(5)).is_ok();
    assert!(answers(a1), "{}", m.log());
    assert!(!answers(a2));

    // An address added: both answer (the kept one was never closed).
    std::fs::write(&conf, format!("workers = 1\nbind = [\"{a1}\", \"{a2}\"]\n")).unwrap();
    m.signal(Signal::SIGHUP);
    m.wait_for("the new address", |_| answers(a2).then_some(()));
    assert!(answers(a1));

    // An address removed: closed once the old workers are gone.
    std::fs::write(&conf, format!("workers = 1\nbind = [\"{a2}\"]\n")).unwrap();
    m.signal(Signal::SIGHUP);
    m.wait_for("the removed address to refuse", |_| {
        std::net::TcpStream::connect_timeout(&a1, Duration::from_secs(1))
            .is_err()
            .then_some(())
    });
    assert!(answers(a2), "{}", m.log());
    let log = m.log();
    assert!(log.contains(&format!("Listening at: {a2}")), "{log}");
    assert!(log.contains(&format!("Closing listener: {a1}")), "{log}");
    m.stop(Signal::SIGTERM, Duration::from_secs(20));
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let mut m = Master::start(Options::workers(1).arg("--log-format").arg("json"));
    m.wait_workers(1);
    m.stop(Signal::SIGTERM, Duration::from_secs(20));
    let log = m.log();
    // The master's lines (workers write their own format to the same stderr).
    let objects: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let messages: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["message"].as_str())
        .collect();
    for want in [
        "Booting worker with pid: ",
        "Listening at: ",
        "Shutting down: Master",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(want)),
            "no {want:?} in {messages:?}\n{log}"
        );
    }
    assert!(objects
        .iter()
        .all(|o| o["level"].is_string() && o["timestamp"].is_string()));
}

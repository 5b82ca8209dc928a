//! Options of the real `gpe-master` that shape how workers are started and how the pool behaves:
//! several binds (IPv4, IPv6, unix), `fd://N`, `--backlog` and `--reuse-port`, USR1 reopening
//! `--error-logfile`, `--max-requests`, `--umask` and `--worker-tmp-dir`, `--user`/`--group`,
//! the signal counters, and the pacing of respawns (a worker dying within a second of its spawn is
//! backed off whatever its exit; one that lived longer is replaced at once).

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{environ, http_get, pid_in, running, unix_get, Master, Options, PATIENCE};
use gpe_core::worker::env;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The value of `key` in the environment of `pid` (`/proc/PID/environ`).
/// The fields of the line `key:` of `/proc/PID/status` (e.g. `Uid` -> real, effective, saved, fs).
fn status_field(pid: i32, key: &str) -> Option<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let prefix = format!("{key}:");
    status.lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
    })
}

/// The state letter of `pid` (`R`, `S`, `T`, ...) from `/proc/PID/stat`.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = stat.rfind(')')?;
    stat[i + 1..].trim_start().chars().next()
}

/// Where `/proc/PID/fd/FD` points (`socket:[N]`, `/dir/file (deleted)`, ...).
fn fd_target(pid: i32, fd: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}

/// The mode of a worker's heartbeat file (fd 4: after the one listener), seen through `/proc`.
fn heartbeat_mode(pid: i32) -> Option<u32> {
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/4")).ok()?;
    Some(meta.permissions().mode() & 0o777)
}

/// The pid in `answer` (a `GET /` sent over `what`), which must be a 200 from one of `workers`.
fn answered_by(workers: &[i32], what: &str, answer: std::io::Result<String>) -> i32 {
    let answer = answer.unwrap_or_else(|e| panic!("GET / over {what}: {e}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer:?}");
    let pid = pid_in(&answer).unwrap_or_else(|| panic!("{what}: no pid in {answer:?}"));
    assert!(
        workers.contains(&pid),
        "{what}: answered by pid {pid}, not one of the workers {workers:?}"
    );
    pid
}

/// `LISTEN_FDNAMES` as the master spells it: each `--bind` with `:` written `%3A`, joined by `:`.
fn fdnames(binds: &[String]) -> String {
    binds
        .iter()
        .map(|b| b.replace(':', "%3A"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `--bind 127.0.0.1:P1 --bind [::1]:P2 --bind unix:PATH`: each worker gets the three sockets as
/// fds 3, 4, 5 with their names in `LISTEN_FDNAMES`, requests over each are answered by a worker,
/// and the socket file is removed when the master exits on TERM. (The IPv6 bind is left out, with
/// a message, only when this machine cannot bind `::1`.)
#[test]
fn tcp4_tcp6_and_unix_binds_are_all_served() {
    let v6: Option<SocketAddr> = match TcpListener::bind("[::1]:0").and_then(|l| l.local_addr()) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("skipping the [::1] bind: this machine cannot bind ::1 ({e})");
            None
        }
    };
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("s.sock");
    let unix_bind = format!("unix:{}", sock.display());
    let mut opts = Options::workers(2);
    if let Some(a) = v6 {
        opts = opts.arg("--bind").arg(&a.to_string());
    }
    let mut m = Master::start(opts.arg("--bind").arg(&unix_bind));
    let workers = m.wait_workers(2);

    let mut binds = vec![m.addr.to_string()];
    binds.extend(v6.map(|a| a.to_string()));
    binds.push(unix_bind);
    let n = binds.len() as i32;
    for &pid in &workers {
        assert_eq!(environ(pid, "LISTEN_FDS"), Some(n.to_string()), "pid {pid}");
        assert_eq!(
            environ(pid, "LISTEN_PID"),
            Some(pid.to_string()),
            "pid {pid}"
        );
        assert_eq!(
            environ(pid, "LISTEN_FDNAMES"),
            Some(fdnames(&binds)),
            "pid {pid}"
        );
        assert_eq!(
            environ(pid, env::HEARTBEAT_FD),
            Some((3 + n).to_string()),
            "the heartbeat fd follows the listeners (pid {pid})"
        );
        for fd in 3..3 + n {
            let target = fd_target(pid, fd).unwrap_or_default();
            assert!(
                target.to_string_lossy().starts_with("socket:"),
                "fd {fd} of worker {pid} is {target:?}, not a socket"
            );
        }
    }
    assert!(
        std::fs::symlink_metadata(&sock).is_ok_and(|md| md.file_type().is_socket()),
        "{} is a socket while the master runs",
        sock.display()
    );

    let t = Duration::from_secs(10);
    answered_by(&workers, "127.0.0.1", http_get(m.addr, "/", t));
    if let Some(a) = v6 {
        answered_by(&workers, "[::1]", http_get(a, "/", t));
    }
    // Every bind reaches every worker: both answer over the unix socket (and over TCP).
    let mut over_unix = std::collections::BTreeSet::new();
    m.wait_for("both workers to answer over the unix socket", |_| {
        over_unix.insert(answered_by(&workers, "unix socket", unix_get(&sock, t)));
        (over_unix.len() == 2).then_some(())
    });

    m.stop(Signal::SIGTERM, PATIENCE);
    assert!(
        !sock.exists(),
        "the unix socket {} is removed at exit",
        sock.display()
    );
}

/// `--bind unix:PATH` where PATH is a stale socket file (its server is gone): the master removes
/// it and serves there, as gunicorn does. Where PATH is a regular file or a directory, the master
/// refuses to start (exit 1, the error names the path) and leaves it untouched.
#[test]
fn unix_bind_replaces_only_a_stale_socket() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a socket"));
    assert!(
        std::fs::symlink_metadata(&stale).is_ok_and(|m| m.file_type().is_socket()),
        "the stale socket file stays after its listener is closed"
    );
    let mut m = Master::start(
        Options::workers(1)
            .arg("--bind")
            .arg(&format!("unix:{}", stale.display())),
    );
    let workers = m.wait_workers(1);
    answered_by(
        &workers,
        "the replaced stale socket",
        unix_get(&stale, PATIENCE),
    );
    drop(m);

    let file = tmp.path().join("data.txt");
    std::fs::write(&file, "precious").expect("writing a file");
    let dir = tmp.path().join("a-dir");
    std::fs::create_dir(&dir).expect("mkdir");
    for path in [&file, &dir] {
        let bind = format!("unix:{}", path.display());
        let out = common::run_master(
            &["--no-metrics", "--bind", &bind, "/bin/sleep", "1000"],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bind}: {stderr}");
        assert!(
            stderr.contains(&format!("{} exists and is not a socket", path.display())),
            "{bind}: {stderr}"
        );
        assert!(!stderr.contains("Booting worker"), "{bind}: {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&file).expect("the file is still there"),
        "precious"
    );
    assert!(dir.is_dir(), "the directory is still there");
}

/// `--bind fd://N`: a listening socket the master inherited at fd N (here: the test's own, with
/// close-on-exec cleared so a plain spawn passes it on) is served by every worker, named
/// `fd://N` in `LISTEN_FDNAMES`, once the test has closed its own copy.
#[test]
fn fd_bind_serves_an_inherited_listener() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};

    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let fd = listener.as_raw_fd();
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())).expect("clearing FD_CLOEXEC");
    let bind = format!("fd://{fd}");
    let mut m = Master::spawn(Options::workers(2).arg("--bind").arg(&bind));
    // Inherited by the master now: processes that other tests spawn need not get it too.
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("setting FD_CLOEXEC");
    let workers = m.wait_workers(2);
    drop(listener);

    for &pid in &workers {
        assert_eq!(
            environ(pid, "LISTEN_FDS").as_deref(),
            Some("2"),
            "pid {pid}"
        );
        assert_eq!(
            environ(pid, "LISTEN_FDNAMES"),
            Some(fdnames(&[m.addr.to_string(), bind.clone()])),
            "pid {pid}"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    m.wait_for("both workers to answer on the inherited listener", |_| {
        let answer = http_get(addr, "/", Duration::from_secs(10));
        seen.insert(answered_by(&workers, &bind, answer));
        (seen.len() == 2).then_some(())
    });
    assert!(
        m.log().contains(&format!("Listening at: {bind}")),
        "{}",
        m.log()
    );
}

/// Stop the worker `pid` (SIGSTOP) and wait until it is stopped, so it accepts nothing.
fn freeze(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
    common::eventually(
        PATIENCE,
        "the worker to be stopped",
        || (state(pid) == Some('T')).then_some(()),
        || format!("state of {pid}: {:?}", state(pid)),
    );
}

/// Connections the kernel completes on `addr` while nobody accepts, up to `max` (it stops at the
/// first that does not complete within `timeout`: the accept queue is full). They are returned
/// open, so they keep their place in the queue.
fn queued_connections(addr: SocketAddr, max: usize, timeout: Duration) -> Vec<TcpStream> {
    let mut held = Vec::new();
    while held.len() < max {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    held
}

/// A socket with SO_REUSEPORT bound (and listening) on `addr`, as a second server would.
fn bind_reuse_port(addr: SocketAddr) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let SocketAddr::V4(v4) = addr else {
        panic!("an IPv4 address expected, got {addr}")
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(*v4.ip(), v4.port())),
    )?;
    listen(&fd, Backlog::new(1)?)?;
    Ok(fd)
}

/// `--backlog 2`: with the only worker stopped, the kernel completes no more than backlog + 1
/// connections on the listener (with the default backlog it completes all 8 tried); and
/// `--reuse-port` sets SO_REUSEPORT: another SO_REUSEPORT socket can bind the same port, which
/// fails with EADDRINUSE against a master without the flag.
#[test]
fn backlog_and_reuse_port_are_applied_to_the_listeners() {
    let mut small = Master::start(
        Options::workers(1)
            .arg("--timeout")
            .arg("0")
            .arg("--backlog")
            .arg("2")
            .arg("--reuse-port"),
    );
    let mut plain = Master::start(Options::workers(1).arg("--timeout").arg("0"));
    let small_worker = small.wait_workers(1)[0];
    let plain_worker = plain.wait_workers(1)[0];

    freeze(small_worker);
    let held = queued_connections(small.addr, 8, Duration::from_millis(500));
    assert!(
        (1..=3).contains(&held.len()),
        "--backlog 2: {} connections completed with nobody accepting (at most 3 expected)",
        held.len()
    );
    drop(held);
    freeze(plain_worker);
    let held = queued_connections(plain.addr, 8, Duration::from_secs(5));
    assert_eq!(
        held.len(),
        8,
        "default backlog (2048): every connection completes while nobody accepts"
    );
    drop(held);
    for pid in [small_worker, plain_worker] {
        kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
    }

    match bind_reuse_port(small.addr) {
        Ok(fd) => drop(fd),
        Err(e) => panic!(
            "--reuse-port: a second SO_REUSEPORT socket cannot bind {}: {e}",
            small.addr
        ),
    }
    match bind_reuse_port(plain.addr) {
        Err(nix::errno::Errno::EADDRINUSE) => {}
        other => panic!(
            "without --reuse-port, binding {} again must fail with EADDRINUSE: {other:?}",
            plain.addr
        ),
    }
    // Both pools still serve after the stop/continue.
    assert_eq!(small.answering_pid().expect("GET / (small)"), small_worker);
    assert_eq!(plain.answering_pid().expect("GET / (plain)"), plain_worker);
}

/// USR1 (logrotate): after the error log is renamed away, USR1 makes the master create a new one
/// at the configured path, and later lines (TTIN's) go there, not to the renamed file; the signal
/// is counted. The workers get USR1 too, and survive it.
#[test]
fn usr1_reopens_the_error_log() {
    let mut m = Master::start(
        Options::workers(2)
            .arg("--error-logfile")
            .arg("error.log")
            .arg("--timeout")
            .arg("0"),
    );
    let before = m.wait_workers(2);
    let log = m.dir.path().join("error.log");
    let rotated = m.dir.path().join("error.log.1");
    m.wait_for("the error log to show both workers booting", |_| {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.matches("Booting worker with pid").count() == 2).then_some(())
    });
    std::fs::rename(&log, &rotated).expect("rotating the error log");

    m.signal(Signal::SIGUSR1);
    m.wait_for("a new error log after USR1", |_| log.exists().then_some(()));
    m.wait_sample("gunicorn_master_signals_total{signal=\"usr1\"}", 1.0);

    m.signal(Signal::SIGTTIN);
    m.wait_for("TTIN logged in the new error log", |_| {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("Handling signal: ttin") && text.contains("Booting worker with pid"))
            .then_some(())
    });
    let old = std::fs::read_to_string(&rotated).expect("reading the rotated log");
    assert!(
        old.contains("Handling signal: usr1"),
        "the rotated log got the lines up to USR1:\n{old}"
    );
    assert!(
        !old.contains("Handling signal: ttin"),
        "nothing is written to the rotated log after USR1:\n{old}"
    );
    let workers = m.wait_workers(3);
    assert_eq!(
        m.sample("gunicorn_master_signals_total{signal=\"usr1\"}"),
        Some(1.0)
    );

    // The master forwarded USR1 to the workers before it handled TTIN (signals are acted on in
    // order); the example handles USR1, so the workers it had are still the ones serving.
    for pid in &before {
        assert!(
            running(*pid) && workers.contains(pid),
            "worker {pid} died of USR1; workers now {workers:?}"
        );
    }
    assert_eq!(
        m.sample("gunicorn_master_worker_exits_total{reason=\"crash\"}")
            .unwrap_or(0.0),
        0.0
    );
}

/// `--max-requests 5 --max-requests-jitter 0`: workers get `GPE_MAX_REQUESTS=5`; over 20
/// requests none fails, no worker answers more than 5, each worker that answered 5 exited and was
/// replaced, counted as exit reason `max_requests` and restart reason `chld`, never as a crash.
#[test]
fn max_requests_replaces_workers_gracefully() {
    let mut m = Master::start(
        Options::workers(2)
            .arg("--max-requests")
            .arg("5")
            .arg("--max-requests-jitter")
            .arg("0"),
    );
    for pid in m.wait_workers(2) {
        assert_eq!(
            environ(pid, env::MAX_REQUESTS).as_deref(),
            Some("5"),
            "pid {pid}"
        );
    }
    let mut served: BTreeMap<i32, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for _ in 0..20 {
        match m.get("/") {
            Ok(r) if r.starts_with("HTTP/1.1 200") => match pid_in(&r) {
                Some(pid) => *served.entry(pid).or_default() += 1,
                None => failures.push(r),
            },
            Ok(r) => failures.push(r),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "requests failed: {failures:?}\n{}",
        m.log()
    );
    assert!(
        served.values().all(|n| *n <= 5),
        "a worker answered more than --max-requests 5: {served:?}"
    );
    let done: Vec<i32> = served
        .iter()
        .filter(|(_, n)| **n == 5)
        .map(|(p, _)| *p)
        .collect();
    // At most two workers are still running, with at most 4 requests each: >= 12 / 5 retired.
    assert!(done.len() >= 3, "20 requests over workers of 5: {served:?}");
    let retired = done.len() as f64;
    m.wait_sample(
        "gunicorn_master_worker_exits_total{reason=\"max_requests\"}",
        retired,
    );
    m.wait_sample(
        "gunicorn_master_worker_restart_total{reason=\"chld\"}",
        retired,
    );
    m.wait_sample("gunicorn_master_worker_spawns_total", 2.0 + retired);
    let now = m.wait_workers(2);
    assert!(
        done.iter().all(|p| !running(*p) && !now.contains(p)),
        "retired workers {done:?} are gone; running {now:?}"
    );
    assert_eq!(
        m.sample("gunicorn_master_worker_exits_total{reason=\"crash\"}"),
        Some(0.0),
        "no worker crashed"
    );
}

/// `--umask 077 --worker-tmp-dir DIR`: the worker's heartbeat file is an unlinked file of DIR
/// (`/proc/PID/fd/4`), DIR is left empty, and the worker and the master keep the umask they were
/// started with (as in gunicorn, `--umask` is the unix sockets' only: see tests/binds.rs).
#[test]
fn umask_and_worker_tmp_dir_reach_the_worker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Master::start(
        Options::workers(1)
            .arg("--umask")
            .arg("077")
            .arg("--worker-tmp-dir")
            .arg(tmp.path().to_str().expect("utf-8 tempdir")),
    );
    let pid = m.wait_workers(1)[0];
    assert_eq!(environ(pid, env::HEARTBEAT_FD).as_deref(), Some("4"));
    let heartbeat = fd_target(pid, 4).expect("fd 4 of the worker");
    assert!(
        heartbeat.starts_with(tmp.path()),
        "the heartbeat file {} is in --worker-tmp-dir {}",
        heartbeat.display(),
        tmp.path().display()
    );
    assert!(
        heartbeat.to_string_lossy().ends_with(" (deleted)"),
        "the heartbeat file is unlinked: {}",
        heartbeat.display()
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("listing the tmp dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "nothing left in --worker-tmp-dir: {left:?}"
    );
    let ours = status_field(std::process::id() as i32, "Umask");
    assert!(ours.is_some(), "our own umask in /proc/self/status");
    for (who, p) in [("worker", pid), ("master", m.pid())] {
        assert_eq!(
            status_field(p, "Umask"),
            ours,
            "umask of the {who} (pid {p})"
        );
    }
    assert_eq!(m.answering_pid().expect("GET /"), pid);
}

/// `--user nobody --group nogroup` (as root): workers run with that uid and gid and no
/// supplementary groups, serve on the sockets the root master bound, and can heartbeat (their
/// heartbeat file is theirs, as gunicorn chowns it), while the master stays root.
#[test]
fn user_and_group_apply_to_workers() {
    let Some((user, group)) = common::nobody_and_nogroup("--user/--group") else {
        return;
    };
    let (uid, gid) = (user.uid.to_string(), group.gid.to_string());
    let mut m = Master::start(
        Options::workers(2)
            .arg("--user")
            .arg("nobody")
            .arg("--group")
            .arg("nogroup")
            .arg("--timeout")
            .arg("10"),
    );
    let workers = m.wait_workers(2);
    for &pid in &workers {
        assert_eq!(
            status_field(pid, "Uid"),
            Some(vec![uid.clone(); 4]),
            "real, effective, saved and fs uid of worker {pid}"
        );
        assert_eq!(
            status_field(pid, "Gid"),
            Some(vec![gid.clone(); 4]),
            "real, effective, saved and fs gid of worker {pid}"
        );
        assert_eq!(
            status_field(pid, "Groups"),
            Some(vec![]),
            "no supplementary groups left from root (worker {pid})"
        );
    }
    assert_eq!(
        status_field(m.pid(), "Uid").and_then(|f| f.first().cloned()),
        Some("0".to_owned()),
        "the master stays root"
    );
    assert_eq!(m.answering_pids(2), workers, "both workers serve");
    // The example toggles its heartbeat file's mode 0600/0400 by fchmod, which only the file's
    // owner may do: 0400 means the worker could heartbeat.
    m.wait_for("both workers to heartbeat", |_| {
        workers
            .iter()
            .all(|pid| heartbeat_mode(*pid) == Some(0o400))
            .then_some(())
    });
}

/// `--user nobody --initgroups` (as root): workers get nobody's groups from the group database
/// (initgroups(3), as gunicorn's flag), where without it they have none.
#[test]
fn initgroups_gives_workers_the_users_groups() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping --initgroups: the test does not run as root");
        return;
    }
    let Some(user) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        eprintln!("skipping --initgroups: no user `nobody` here");
        return;
    };
    let name = std::ffi::CString::new(user.name.clone()).unwrap();
    let mut want: Vec<String> = nix::unistd::getgrouplist(&name, user.gid)
        .unwrap()
        .into_iter()
        .map(|g| g.to_string())
        .collect();
    want.sort();
    want.dedup();
    assert!(!want.is_empty(), "getgrouplist includes the primary group");
    let mut m = Master::start(
        Options::workers(1)
            .arg("--user")
            .arg("nobody")
            .arg("--initgroups"),
    );
    let pid = m.wait_workers(1)[0];
    let mut groups = status_field(pid, "Groups").expect("Groups");
    groups.sort();
    assert_eq!(groups, want, "worker {pid}'s supplementary groups");
    assert_eq!(
        status_field(pid, "Uid").and_then(|f| f.first().cloned()),
        Some(user.uid.to_string())
    );
    assert!(m.answering_pid().is_ok(), "{}", m.log());
}

/// TTIN, TTIN, TTOU: `gunicorn_master_signals_total` says exactly ttin 2 and ttou 1 (and no other
/// signal but CHLD), and `gunicorn_master_workers` matches the running workers after each.
#[test]
fn signal_counters_and_worker_gauge_are_exact() {
    let mut m = Master::start(Options::workers(2));
    m.wait_workers(2);
    let steps = [
        (Signal::SIGTTIN, 3, (1.0, 0.0)),
        (Signal::SIGTTIN, 4, (2.0, 0.0)),
        (Signal::SIGTTOU, 3, (2.0, 1.0)),
    ];
    for (sig, workers, (ttin, ttou)) in steps {
        m.signal(sig);
        m.wait_for(&format!("{sig} counted"), |m| {
            let text = m.metrics().ok()?;
            let count = |s: &str| {
                common::sample(
                    &text,
                    &format!("gunicorn_master_signals_total{{signal=\"{s}\"}}"),
                )
                .unwrap_or(0.0)
            };
            (count("ttin") == ttin && count("ttou") == ttou).then_some(())
        });
        let pids = m.wait_workers(workers);
        assert_eq!(
            m.sample("gunicorn_master_workers"),
            Some(m.workers().len() as f64),
            "after {sig}: gauge vs running workers {pids:?}"
        );
    }
    // The TTOU'd worker's exit is a CHLD; nothing else was sent.
    m.wait_for("the CHLD of the stopped worker", |m| {
        (m.sample("gunicorn_master_signals_total{signal=\"chld\"}")? >= 1.0).then_some(())
    });
    let text = m.metrics().expect("scrape");
    let counted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gunicorn_master_signals_total{"))
        .collect();
    for name in ["hup", "term", "int", "quit", "usr1", "usr2", "winch"] {
        let series = format!("gunicorn_master_signals_total{{signal=\"{name}\"}}");
        assert!(
            common::sample(&text, &series).unwrap_or(0.0) == 0.0,
            "{name} was never sent: {counted:?}"
        );
    }
    assert_eq!(
        common::sample(&text, "gunicorn_master_signals_total{signal=\"ttin\"}"),
        Some(2.0),
        "{counted:?}"
    );
    assert_eq!(
        common::sample(&text, "gunicorn_master_signals_total{signal=\"ttou\"}"),
        Some(1.0),
        "{counted:?}"
    );
    assert_eq!(common::sample(&text, "gunicorn_master_workers"), Some(3.0));
}

/// A master of one worker, a shell script exiting `code` at once, once the master has spawned it
/// three times (`what` names that wait); with the script's dir and when the master started.
fn master_of_a_worker_exiting(code: u8, what: &str) -> (tempfile::TempDir, Master, Instant) {
    let bin = tempfile::tempdir().expect("tempdir");
    let script = bin.path().join(format!("exit-{code}"));
    std::fs::write(&script, format!("#!/bin/sh\nexit {code}\n")).expect("writing the script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut m = Master::start(Options::workers(1).worker_binary(&script));
    let started = Instant::now();
    m.wait_for(what, |m| {
        (m.sample("gunicorn_master_worker_spawns_total")? >= 3.0).then_some(())
    });
    (bin, m, started)
}

/// The master keeps running until `end`: an observation window (a measurement, not
/// synchronisation).
fn keeps_running_until(m: &mut Master, end: Instant) {
    while Instant::now() < end {
        assert!(m.try_exit().is_none(), "the master exited:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` spawns of a worker that exits at once: as many exits with `reason`, or one fewer (the last
/// one may still be running).
fn assert_an_exit_per_spawn(m: &Master, reason: &str, n: f64) {
    let exits = m
        .sample(&format!(
            "gunicorn_master_worker_exits_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0);
    assert!(
        exits >= n - 1.0 && exits <= n,
        "{exits} exits ({reason}) for {n} spawns"
    );
}

/// A worker that exits 1 at once, forever: the master keeps retrying but backs off (100 ms
/// doubling, so at most 5 spawns in the first 3 s and never a storm), counts each as a crash,
/// keeps running, and still stops with exit 0 on TERM.
#[test]
fn crash_loop_is_backed_off() {
    // It does retry: a second and third spawn come (and quickly: the first retry is 100 ms
    // after the crash, the second 200 ms after the next).
    let (_bin, mut m, started) =
        master_of_a_worker_exiting(1, "the master to retry the crashing worker");
    let third = started.elapsed();
    keeps_running_until(&mut m, started + Duration::from_secs(3));
    let n = m
        .sample("gunicorn_master_worker_spawns_total")
        .expect("spawn counter");
    let elapsed = started.elapsed();
    let booted = m.log().matches("Booting worker with pid").count();
    // 100 + 200 + 400 + 800 ms of backoff: spawns at ~0, 0.1, 0.3, 0.7, 1.5 s (then 3.1 s).
    // An unthrottled loop would spawn hundreds of times.
    assert!(
        (3.0..=6.0).contains(&n),
        "{n} spawns in {elapsed:?} of a crash loop (backoff: 5 expected)\n{}",
        m.log()
    );
    assert!(
        third < Duration::from_millis(1500),
        "the third spawn came {third:?} after the start: the backoff starts at 100 ms\n{}",
        m.log()
    );
    assert!(
        booted as f64 >= n,
        "{booted} 'Booting worker' lines for {n} spawns"
    );
    assert_an_exit_per_spawn(&m, "crash", n);
    assert!(!m.log().contains("Worker failed to boot"), "{}", m.log());

    // TERM during the crash loop.
    m.stop(Signal::SIGTERM, PATIENCE);
}

/// A worker that exits 0 at once, forever (not a crash: exit reason `max_requests`): it is
/// backed off like a crash loop, because it died within a second of its spawn.
#[test]
fn quick_clean_exits_are_backed_off() {
    let (_bin, mut m, started) =
        master_of_a_worker_exiting(0, "the master to retry the exiting worker");
    keeps_running_until(&mut m, started + Duration::from_secs(3));
    let n = m
        .sample("gunicorn_master_worker_spawns_total")
        .expect("spawn counter");
    // Spawns at ~0, 0.1, 0.3, 0.7, 1.5 s (then 3.1 s); unthrottled it would be hundreds.
    assert!(
        (3.0..=6.0).contains(&n),
        "{n} spawns in {:?} of a worker exiting 0 at once (backoff: 5 expected)\n{}",
        started.elapsed(),
        m.log()
    );
    assert_an_exit_per_spawn(&m, "max_requests", n);
    assert!(
        m.log().contains("after its start: next spawn in"),
        "{}",
        m.log()
    );
    m.stop(Signal::SIGTERM, PATIENCE);
}

/// A worker that crashes now and then, each time after more than a second of life, is replaced
/// at once every time: the backoff of a respawn loop (which would reach 1.6 s by the fifth crash)
/// does not build up.
#[test]
fn occasional_crashes_are_respawned_at_once() {
    let mut m = Master::start(Options::workers(1));
    let mut current = m.wait_workers(1)[0];
    for round in 1..=5 {
        let seen = Instant::now();
        // Older than the master's one-second threshold (a bounded wait is the point here).
        std::thread::sleep(Duration::from_millis(1200).saturating_sub(seen.elapsed()));
        let answer = m.get("/exit?code=1").expect("GET /exit");
        assert!(answer.contains("exiting 1"), "{answer}");
        let crashed = Instant::now();
        let next = m.wait_for(&format!("replacement {round}"), |m| {
            m.workers().into_iter().find(|p| *p != current)
        });
        let took = crashed.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "crash {round}: the replacement came {took:?} later\n{}",
            m.log()
        );
        current = next;
    }
    m.wait_sample("gunicorn_master_worker_exits_total{reason=\"crash\"}", 5.0);
    assert!(!m.log().contains("next spawn in"), "{}", m.log());
}

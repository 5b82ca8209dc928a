//! gpe-master under systemd's protocols, with the test in systemd's place: a test-owned
//! `NOTIFY_SOCKET` receives the readiness messages in order, and a master started with
//! `LISTEN_PID`/`LISTEN_FDS` (socket activation) serves on the inherited socket.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{children, Launch, Master, Options, Reaper, PATIENCE};
use nix::sys::signal::Signal;

/// systemd's end of `NOTIFY_SOCKET`: a datagram socket in a temp dir.
struct Systemd {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Systemd {
    fn new() -> Systemd {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        Systemd {
            socket,
            path,
            _dir: dir,
        }
    }

    fn addr(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }

    /// The next message, which must have the line `line` (`what` names the wait).
    fn next_with(&self, what: &str, line: &str) -> String {
        let message = self.next(what);
        assert!(has(&message, line), "{what}: {message:?}");
        message
    }

    /// The next message, within `PATIENCE` (panics with `what` otherwise).
    fn next(&self, what: &str) -> String {
        self.socket
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({what}) within {PATIENCE:?}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Nothing arrives within `quiet`.
    fn nothing_within(&self, quiet: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(quiet)).expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

fn has(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

/// READY=1 only once both workers are up; HUP gives RELOADING=1 then READY=1 once the new
/// workers are; TERM gives STOPPING=1. Nothing else, in that order.
#[test]
fn ready_reloading_ready_stopping_in_order() {
    let systemd = Systemd::new();
    let mut m = Master::spawn(Options::workers(2).env("NOTIFY_SOCKET", systemd.addr()));
    let ready = systemd.next_with("READY=1 at start", "READY=1");
    assert!(has(&ready, &format!("MAINPID={}", m.pid())), "{ready:?}");
    // Up means serving: both workers answer by now.
    assert_eq!(children(m.pid()).len(), 2, "{}", m.log());
    assert!(m.get("/").is_ok(), "{}", m.log());

    let before: Vec<i32> = m.workers();
    m.signal(Signal::SIGHUP);
    let reloading = systemd.next_with("RELOADING=1 on HUP", "RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    systemd.next_with("READY=1 after the reload", "READY=1");
    let now = m.workers();
    assert!(
        now.iter().filter(|p| !before.contains(p)).count() >= 2,
        "two new workers by the second READY=1: {before:?} then {now:?}"
    );

    m.signal(Signal::SIGTERM);
    systemd.next_with("STOPPING=1 on TERM", "STOPPING=1");
    assert!(m.wait_exit(PATIENCE).success(), "{}", m.log());
    assert_eq!(systemd.nothing_within(Duration::from_millis(200)), None);
}

/// A master started as systemd starts one for a `.socket` unit: the listening socket at fd 3,
/// `LISTEN_PID` its own pid, `LISTEN_FDS=1`. It serves there and binds nothing else.
#[test]
fn socket_activation_serves_on_the_inherited_socket() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())).expect("clearing FD_CLOEXEC");
    let fd = listener.as_raw_fd();
    // As systemd: the socket at fd 3, and LISTEN_PID set to the pid that execs the master.
    let to_fd3 = if fd == 3 {
        String::new()
    } else {
        format!("exec 3<&{fd} {fd}<&-; ")
    };
    let script =
        format!("{to_fd3}LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec \"$0\" \"$@\"");
    let mut launch = Launch::binds(&[], Some(addr));
    launch.script = Some(script);
    let mut m = Master::spawn_with(Options::workers(2), launch);
    // Inherited by the master now: processes that other tests spawn need not get it too.
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("setting FD_CLOEXEC");
    m.wait_workers(2);
    drop(listener);
    let deadline = Instant::now() + PATIENCE;
    let answer = loop {
        match m.get("/") {
            Ok(a) => break a,
            Err(e) if Instant::now() >= deadline => panic!("GET / on fd 3: {e}\n{}", m.log()),
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    };
    assert!(answer.contains("200"), "{answer}\n{}", m.log());
    let log = m.log();
    assert!(log.contains("socket activation"), "{log}");
    assert!(
        !log.contains("127.0.0.1:8000"),
        "--bind's default is not bound under socket activation:\n{log}"
    );
}

/// USR2 under a `Type=notify` unit: the new master says nothing while the old one is the unit's
/// main process; TERM to the old master hands the unit over (`MAINPID=<new>`) instead of
/// `STOPPING=1`, and the promoted master confirms with `MAINPID=` and `READY=1`.
#[test]
fn usr2_hands_the_unit_over_with_mainpid() {
    let systemd = Systemd::new();
    let mut old = Master::start(Options::workers(1).env("NOTIFY_SOCKET", systemd.addr()));
    systemd.next_with("READY=1 at start", "READY=1");
    let new = old.upgrade();
    let _reaper = Reaper(new);
    assert_eq!(
        systemd.nothing_within(Duration::from_millis(300)),
        None,
        "an unpromoted master is silent"
    );
    old.signal(Signal::SIGTERM);
    let handover = systemd.next_with("MAINPID= from the old master", &format!("MAINPID={new}"));
    assert!(!has(&handover, "STOPPING=1"), "{handover:?}");
    assert!(old.wait_exit(PATIENCE).success(), "{}", old.log());
    systemd.next_with(
        "MAINPID= from the promoted master",
        &format!("MAINPID={new}"),
    );
    let ready = systemd.next("READY=1 from the promoted master");
    assert!(has(&ready, "READY=1"), "{ready:?}\n{}", old.log());
}

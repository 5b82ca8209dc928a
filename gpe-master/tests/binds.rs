//! `--bind` as gunicorn spells and binds it: `tcp://`, `:PORT`, hostnames over IPv4, `unix://`
//! relative paths, dual-stack `[::]`, `fd://` of a socket that is only bound, the retries of a
//! busy port, unix sockets under `--umask` and `--user`/`--group`, and a rollback after USR2 that
//! leaves the old master's unix socket alone. The real binary, real sockets and signals.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{free_port, http_get, running, unix_get, Launch, Master, Options, PATIENCE};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn ok(answer: std::io::Result<String>) -> bool {
    answer.is_ok_and(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
}

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// The permission bits of `path` (which must be a socket).
fn socket_mode(path: &Path) -> u32 {
    let meta = std::fs::symlink_metadata(path).expect("the socket file exists");
    assert!(
        meta.file_type().is_socket(),
        "{} is a socket",
        path.display()
    );
    meta.permissions().mode() & 0o777
}

/// `tcp://127.0.0.1:P1`, `:P2` (every IPv4 interface), `localhost:P3` (IPv4) and
/// `unix://rel.sock` (relative to the master's directory, not `//rel.sock`) are all served.
#[test]
fn gunicorn_spellings_are_bound_and_served() {
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let (b1, b2, b3) = (
        format!("tcp://127.0.0.1:{p1}"),
        format!(":{p2}"),
        format!("localhost:{p3}"),
    );
    let mut m = Master::start_with(
        Options::workers(1),
        Launch::binds(&[&b1, &b2, &b3, "unix://rel.sock"], Some(loopback(p1))),
    );
    m.wait_workers(1);
    let sock = m.dir.path().join("rel.sock");
    for addr in [loopback(p1), loopback(p2), loopback(p3)] {
        m.wait_for(&format!("GET / on {addr}"), |_| {
            ok(http_get(addr, "/", T)).then_some(())
        });
    }
    assert!(ok(unix_get(&sock, T)), "GET / over unix://rel.sock");
    assert!(
        !Path::new("//rel.sock").exists(),
        "unix://rel.sock is a relative path"
    );
    let log = m.log();
    for b in [&b1, &b2, &b3, "unix://rel.sock"] {
        assert!(log.contains(&format!("Listening at: {b} (")), "{b}\n{log}");
    }
    m.stop(Signal::SIGTERM, PATIENCE);
    assert!(!sock.exists(), "the socket file is removed at exit");
}

/// `[::]:P` is dual-stack (IPV6_V6ONLY left at the system default, as gunicorn): an IPv4 client
/// reaches it through 127.0.0.1.
#[test]
fn ipv6_any_also_takes_ipv4_clients() {
    let port = match TcpListener::bind("[::]:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("skipping: this machine has no IPv6 ({e})");
            return;
        }
    };
    let bind = format!("[::]:{port}");
    let mut m = Master::start_with(
        Options::workers(1),
        Launch::binds(&[&bind], Some(loopback(port))),
    );
    m.wait_workers(1);
    assert!(ok(m.get("/")), "GET / over 127.0.0.1:{port}");
    assert!(ok(http_get(
        ([0u16, 0, 0, 0, 0, 0, 0, 1], port).into(),
        "/",
        T
    )));
}

/// A master told to bind a port another socket holds: the holder, the address, the master.
fn master_on_a_busy_port() -> (TcpListener, String, Master) {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr");
    let bind = addr.to_string();
    let m = Master::spawn_with(Options::workers(1), Launch::binds(&[&bind], Some(addr)));
    (holder, bind, m)
}

/// A port held by another socket: the master logs a retry each second, and serves as soon as
/// the port is released (here: after its first failed attempt).
#[test]
fn a_busy_port_is_retried_until_it_is_free() {
    let (holder, bind, mut m) = master_on_a_busy_port();
    m.wait_for("the first retry to be logged", |m| {
        m.log()
            .contains("retrying in 1s (attempt 1 of 5)")
            .then_some(())
    });
    drop(holder);
    m.wait_workers(1);
    assert!(ok(m.get("/")));
    let log = m.log();
    assert!(log.contains(&format!("cannot bind {bind}")), "{log}");
}

/// A port held throughout: 5 attempts, then exit 1 naming the address.
#[test]
fn a_port_busy_for_good_fails_after_five_attempts() {
    let (holder, bind, mut m) = master_on_a_busy_port();
    let status = m.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(1), "{}", m.log());
    let log = m.log();
    assert_eq!(log.matches("retrying in 1s").count(), 4, "{log}");
    assert!(log.contains("attempt 4 of 5"), "{log}");
    assert!(log.contains(&format!("error: cannot bind {bind}")), "{log}");
    drop(holder);
}

/// Unix sockets are created under `--umask`: by default 0 (mode 0777, whatever the umask the
/// master runs with), `-m 0o27` gives 0750 and `-m 022` (octal, as gunicorn reads it) 0755.
#[test]
fn unix_sockets_follow_umask() {
    for (args, want) in [
        (&[][..], 0o777),
        (&["--umask", "0o27"][..], 0o750),
        (&["-m", "022"][..], 0o755),
        (&["-m", "18"][..], 0o755),
    ] {
        let mut opts = Options::workers(1);
        for a in args {
            opts = opts.arg(a);
        }
        let mut launch = Launch::binds(&["unix:s.sock"], None);
        // The master's own umask is 077: only --umask decides the socket's mode.
        launch.script = Some("umask 077; exec \"$0\" \"$@\"".to_owned());
        let mut m = Master::start_with(opts, launch);
        m.wait_workers(1);
        let sock = m.dir.path().join("s.sock");
        assert_eq!(
            socket_mode(&sock),
            want,
            "{args:?}: mode {:o}",
            socket_mode(&sock)
        );
        assert!(ok(unix_get(&sock, T)), "{args:?}: GET / over the socket");
    }
}

/// `--user nobody --group nogroup` (as root): the socket belongs to them, so workers (and a
/// proxy in that group) may use it.
#[test]
fn unix_sockets_belong_to_user_and_group() {
    let Some((user, group)) = common::nobody_and_nogroup("unix sockets of --user/--group") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The workers (nobody) need to reach their files: the temp dir is 0700.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut launch = Launch::binds(&["unix:s.sock"], None);
    launch.dir = Some(dir);
    let mut m = Master::start_with(
        Options::workers(1)
            .arg("--user")
            .arg("nobody")
            .arg("--group")
            .arg("nogroup"),
        launch,
    );
    m.wait_workers(1);
    let meta = std::fs::symlink_metadata(m.dir.path().join("s.sock")).expect("socket");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (user.uid.as_raw(), group.gid.as_raw())
    );
    assert!(ok(unix_get(&m.dir.path().join("s.sock"), T)));
}

/// `fd://N` of a socket that is bound but not listening: the master calls listen() on it (as
/// gunicorn does), and the workers serve it.
#[test]
fn fd_bind_of_a_bound_socket_is_made_listening() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };

    let sock = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(sock.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind");
    let port = getsockname::<SockaddrIn>(sock.as_raw_fd())
        .expect("getsockname")
        .port();
    fcntl(&sock, FcntlArg::F_SETFD(FdFlag::empty())).expect("clearing FD_CLOEXEC");
    let bind = format!("fd://{}", sock.as_raw_fd());
    let mut m = Master::spawn_with(
        Options::workers(1),
        Launch::binds(&[&bind], Some(loopback(port))),
    );
    // Inherited by the master now: processes that other tests spawn need not get it too.
    fcntl(&sock, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("setting FD_CLOEXEC");
    m.wait_workers(1);
    drop(sock);
    assert!(ok(m.get("/")), "GET / on the fd:// socket\n{}", m.log());
}

/// USR2, then TERM to the new master before it is promoted (the documented rollback): the old
/// master's unix socket stays in place and is still served by it.
#[test]
fn rollback_keeps_the_old_masters_unix_socket() {
    let mut old = Master::start_with(Options::workers(1), Launch::binds(&["unix:s.sock"], None));
    old.wait_workers(1);
    let sock = old.dir.path().join("s.sock");
    let two = old.dir.path().join("gpe-master.pid.2");
    let new = old.upgrade();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), Signal::SIGTERM).expect("TERM");
    old.wait_for("the old master to reap the new one", |m| {
        (!running(new)
            && m.log()
                .contains(&format!("The new master (pid {new}) exited")))
        .then_some(())
    });
    assert_eq!(socket_mode(&sock), 0o777, "the socket file is still there");
    assert!(ok(unix_get(&sock, T)), "the old master still serves it");
    assert!(!two.exists(), "the new master removed its pidfile");
}

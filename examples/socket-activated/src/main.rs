//! A plain HTTP/1.1 server that takes its listeners from systemd socket activation.
//!
//! It knows nothing of gpe: it reads `LISTEN_FDS`/`LISTEN_PID` (fds from 3) and `LISTEN_FDNAMES`
//! like any socket-activated service, so it runs unchanged under systemd or under `gpe-master`. It
//! also honours the optional parts of the gpe-master contract that need only the standard library:
//! `GPE_MAX_REQUESTS`, `GPE_GRACEFUL_TIMEOUT`, `GPE_MASTER_PID` (exit when the master is gone) and
//! `GPE_HEARTBEAT_FD` (touch the file with `fchmod`, the form the standard library can do: the
//! master reads the ctime it changes by the wall clock, where gpe-core workers set the file's
//! times to the monotonic clock, which no wall-clock step can fool).
//!
//! Run with:
//!
//! ```text
//! cargo build -p gpe-master -p example-socket-activated
//! target/debug/gpe-master --workers 2 --bind 127.0.0.1:8000 target/debug/example-socket-activated
//! curl http://127.0.0.1:8000/            # "hello from pid 1234"
//! curl 'http://127.0.0.1:8000/sleep?ms=500'
//! ```
//!
//! or standalone (binds `$BIND`, default `127.0.0.1:8000`):
//! `cargo run -p example-socket-activated`.
//!
//! Routes: `GET /` answers with the pid; `GET /sleep?ms=N` answers after N ms (to watch a graceful
//! stop finish in-flight work); `GET /stall` stops the heartbeat (to watch the master's
//! `--timeout` kill a stuck worker); `GET /exit?code=N` exits at once with code N.
//!
//! Signals: TERM stops accepting, finishes in-flight requests (for up to `GPE_GRACEFUL_TIMEOUT`
//! seconds) and exits 0; QUIT and INT exit at once. The `EXAMPLE_BOOT_EXIT` variable makes the
//! process exit with that code before serving (a boot error, as gunicorn's exit code 3).
//!
//! Test knobs (to misbehave on purpose, for gpe-master's tests): `EXAMPLE_IGNORE_SIGNALS`, a
//! comma-separated subset of `term,quit,int`, makes the worker catch and ignore those signals (a
//! worker that hangs on stop); `EXAMPLE_NO_HEARTBEAT=1` makes it never touch its heartbeat file.

#![allow(clippy::exit)] // exit codes are what this example demonstrates (boot errors, /exit)

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod sys;

/// One inherited or bound listener.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted connection.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
        }
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The listeners systemd (or gpe-master) passed us, or one bound to `$BIND` when there are none.
fn listeners() -> std::io::Result<Vec<Listener>> {
    let for_us = env_u64("LISTEN_PID") == Some(u64::from(std::process::id()));
    let count = if for_us {
        env_u64("LISTEN_FDS").unwrap_or(0)
    } else {
        0
    };
    if count > 0 {
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let names: Vec<&str> = names.split(':').collect();
        let mut out = Vec::new();
        for i in 0..count as usize {
            let fd = 3 + i as i32;
            let unix = names.get(i).is_some_and(|n| n.starts_with("unix"));
            out.push(sys::adopt_listener(fd, unix)?);
        }
        return Ok(out);
    }
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8000".to_owned());
    Ok(vec![match addr.strip_prefix("unix:") {
        Some(path) => Listener::Unix(UnixListener::bind(path)?),
        None => Listener::Tcp(TcpListener::bind(&addr)?),
    }])
}

struct State {
    served: AtomicU64,
    in_flight: AtomicUsize,
    stalled: AtomicBool,
    stop: AtomicBool,
}

fn respond(conn: &mut dyn Write, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn query(target: &str, key: &str) -> Option<u64> {
    let (_, q) = target.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Serve one request (the connection is closed after it).
fn handle(conn: Conn, state: &State) -> std::io::Result<()> {
    let (reader, mut writer): (Box<dyn std::io::Read>, Box<dyn Write>) = match conn {
        Conn::Tcp(s) => {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
        Conn::Unix(s) => {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
    };
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let pid = std::process::id();
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/") => respond(&mut writer, "200 OK", &format!("hello from pid {pid}\n")),
        ("GET", "/sleep") => {
            let ms = query(target, "ms").unwrap_or(1000).min(600_000);
            std::thread::sleep(Duration::from_millis(ms));
            respond(
                &mut writer,
                "200 OK",
                &format!("slept {ms} ms in pid {pid}\n"),
            )
        }
        ("GET", "/stall") => {
            state.stalled.store(true, Ordering::SeqCst);
            respond(
                &mut writer,
                "200 OK",
                &format!("heartbeat stopped in pid {pid}\n"),
            )
        }
        ("GET", "/exit") => {
            let code = query(target, "code").unwrap_or(1) as i32;
            let _ = respond(&mut writer, "200 OK", &format!("exiting {code}\n"));
            std::process::exit(code)
        }
        _ => respond(&mut writer, "404 Not Found", "not found\n"),
    }
}

fn main() -> std::io::Result<()> {
    if let Some(code) = env_u64("EXAMPLE_BOOT_EXIT") {
        eprintln!(
            "[{}] boot error requested: exiting {code}",
            std::process::id()
        );
        std::process::exit(code as i32);
    }
    let term = Arc::new(AtomicBool::new(false));
    let quick = Arc::new(AtomicBool::new(false));
    // Caught but acted on by nobody: what EXAMPLE_IGNORE_SIGNALS lists.
    let ignored = Arc::new(AtomicBool::new(false));
    let ignore = std::env::var("EXAMPLE_IGNORE_SIGNALS").unwrap_or_default();
    let ignore: Vec<&str> = ignore.split(',').map(str::trim).collect();
    for (sig, name, flag) in [
        (signal_hook::consts::SIGTERM, "term", &term),
        (signal_hook::consts::SIGQUIT, "quit", &quick),
        (signal_hook::consts::SIGINT, "int", &quick),
    ] {
        let flag = if ignore.contains(&name) {
            &ignored
        } else {
            flag
        };
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    // USR1 (forwarded by the master to reopen logs): this server logs to stderr only; it must
    // merely not die of it.
    signal_hook::flag::register(
        signal_hook::consts::SIGUSR1,
        Arc::new(AtomicBool::new(false)),
    )?;

    let listeners = listeners()?;
    for l in &listeners {
        l.set_nonblocking()?;
    }
    let heartbeat = env_u64("GPE_HEARTBEAT_FD")
        .filter(|_| env_u64("EXAMPLE_NO_HEARTBEAT") != Some(1))
        .and_then(|fd| sys::adopt_file(fd as i32));
    let max_requests = env_u64("GPE_MAX_REQUESTS").unwrap_or(0);
    let graceful = Duration::from_secs(env_u64("GPE_GRACEFUL_TIMEOUT").unwrap_or(30));
    let master = env_u64("GPE_MASTER_PID").map(|p| p as u32);
    let state = Arc::new(State {
        served: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        stalled: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    eprintln!(
        "[{}] serving on {} listener(s)",
        std::process::id(),
        listeners.len()
    );

    let mut toggle = false;
    let mut last_beat = Instant::now() - Duration::from_secs(3600);
    loop {
        if quick.load(Ordering::SeqCst) {
            eprintln!("[{}] quick exit", std::process::id());
            std::process::exit(0);
        }
        if term.load(Ordering::SeqCst) || state.stop.load(Ordering::SeqCst) {
            break;
        }
        if master.is_some_and(|m| std::os::unix::process::parent_id() != m) {
            eprintln!("[{}] parent changed: exiting", std::process::id());
            break;
        }
        if let Some(file) = &heartbeat {
            if !state.stalled.load(Ordering::SeqCst)
                && last_beat.elapsed() >= Duration::from_millis(200)
            {
                toggle = !toggle;
                // fchmod: changes the file's ctime, which the master watches.
                let _ = file.set_permissions(std::fs::Permissions::from_mode(if toggle {
                    0o600
                } else {
                    0o400
                }));
                last_beat = Instant::now();
            }
        }
        let mut accepted = false;
        for l in &listeners {
            match l.accept() {
                Ok(conn) => {
                    accepted = true;
                    let n = state.served.fetch_add(1, Ordering::SeqCst) + 1;
                    if max_requests > 0 && n >= max_requests {
                        // Serve this one, then leave gracefully (the master starts a new worker).
                        state.stop.store(true, Ordering::SeqCst);
                    }
                    state.in_flight.fetch_add(1, Ordering::SeqCst);
                    let st = Arc::clone(&state);
                    std::thread::spawn(move || {
                        let _ = handle(conn, &st);
                        st.in_flight.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("[{}] accept: {e}", std::process::id()),
            }
        }
        if !accepted {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Graceful: no more accepts; let in-flight requests finish.
    drop(listeners);
    let deadline = Instant::now() + graceful;
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        if quick.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("[{}] Worker exiting", std::process::id());
    Ok(())
}

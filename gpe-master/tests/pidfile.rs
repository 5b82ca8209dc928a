//! The pidfile as gunicorn ≥ 19.6 keeps it (`pidfile.py`, `Arbiter.reexec`): a lock against a
//! second master, written atomically with mode 0644, removed only while it holds our pid, kept by
//! the old master across USR2 (the new one writes `<pidfile>.2` until it is promoted); and the
//! USR2 re-exec of the program as typed, from the start directory, so a `current -> releases/N`
//! symlink switched before USR2 starts the new release. The real binary, real signals.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{
    children, dot2, eventually, free_port, read_pid, stop_new_master, Launch, Master, Options,
    Reaper, PATIENCE,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A pid that is not running (a child that has exited and been reaped).
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("/bin/true")
        .spawn()
        .expect("spawning /bin/true");
    let pid = child.id() as i32;
    child.wait().expect("waiting for /bin/true");
    pid
}

/// A pidfile naming a live process (this test): the master refuses to start, exit 1, with
/// gunicorn's message naming the pid and the file, and leaves the file alone.
#[test]
fn a_live_pidfile_refuses_a_second_master() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("app.pid");
    let me = std::process::id();
    std::fs::write(&pidfile, format!("{me}\n")).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let worker = common::worker_bin();
    let out = common::run_master(
        &[
            "--no-metrics",
            "--bind",
            &bind,
            "--pid",
            pidfile.to_str().unwrap(),
            worker.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!(
        "Already running on PID {me} (or pid file '{}' is stale)",
        pidfile.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!stderr.contains("Listening at"), "nothing bound: {stderr}");
    assert_eq!(read_pid(&pidfile), Some(me as i32), "the file is untouched");
}

/// A stale pidfile (its pid is dead) is replaced; the file is mode 0644 even under umask 077;
/// the master removes it at exit.
#[test]
fn a_stale_pidfile_is_replaced_with_mode_0644() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("gpe-master.pid");
    std::fs::write(&pidfile, format!("{}\n", dead_pid())).unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let mut launch = Launch::binds(&[&bind], None);
    launch.dir = Some(dir);
    launch.script = Some("umask 077; exec \"$0\" \"$@\"".to_owned());
    let mut m = Master::start_with(Options::workers(1), launch);
    let mode = std::fs::metadata(&m.pidfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "pidfile mode {mode:o}");
    let leftovers: Vec<_> = std::fs::read_dir(m.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".gpe-pid"))
        .collect();
    assert!(leftovers.is_empty(), "no temp file left: {leftovers:?}");
    m.stop(Signal::SIGTERM, PATIENCE);
    assert!(!m.pidfile.exists(), "removed at exit");
}

/// A pidfile that no longer holds the master's pid (another process took it) is left alone at
/// exit: one master never deletes another's pidfile.
#[test]
fn a_pidfile_that_is_not_ours_is_kept_at_exit() {
    let mut m = Master::start(Options::workers(1));
    let other = format!("{}\n", std::process::id());
    std::fs::write(&m.pidfile, &other).unwrap();
    m.stop(Signal::SIGTERM, PATIENCE);
    assert_eq!(std::fs::read_to_string(&m.pidfile).ok(), Some(other));
}

/// USR2: the old master keeps `<pidfile>`, the new one writes `<pidfile>.2` (no `.oldbin`); once
/// the old master is gone, the new one moves to `<pidfile>`.
#[test]
fn usr2_keeps_the_pidfile_and_promotes_dot2() {
    let mut old = Master::start(Options::workers(1));
    let old_pid = old.pid();
    let pidfile = old.pidfile.clone();
    let new = old.usr2();
    let _reaper = Reaper(new);
    assert_ne!(new, old_pid);
    assert_eq!(read_pid(&pidfile), Some(old_pid), "the old master keeps it");
    let oldbin = std::fs::read_dir(old.dir.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("oldbin"));
    assert!(!oldbin, "no .oldbin file");
    old.wait_for("the new master's worker", |_| {
        (children(new).len() == 1).then_some(())
    });
    old.stop(Signal::SIGTERM, PATIENCE);
    eventually(
        PATIENCE,
        "the new master promoted to <pidfile>",
        || (read_pid(&pidfile) == Some(new) && !dot2(&pidfile).exists()).then_some(()),
        || old.log(),
    );
    let mode = std::fs::metadata(&pidfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    stop_new_master(new, || old.log());
    assert!(!pidfile.exists(), "the promoted master removes <pidfile>");
}

/// The new master dies (SIGKILL, so it cleans nothing) before its promotion: the old master
/// removes the `<pidfile>.2` it left and writes `<pidfile>` again if it is gone.
#[test]
fn old_master_keeps_the_pidfile_when_the_new_one_dies() {
    let mut old = Master::start(Options::workers(1));
    let pidfile = old.pidfile.clone();
    let new = old.usr2();
    let _reaper = Reaper(new);
    std::fs::remove_file(&pidfile).unwrap();
    kill(Pid::from_raw(new), Signal::SIGKILL).unwrap();
    let old_pid = old.pid();
    old.wait_for("<pidfile> rewritten and <pidfile>.2 removed", |_| {
        (read_pid(&pidfile) == Some(old_pid) && !dot2(&pidfile).exists()).then_some(())
    });
    assert!(old.get("/").is_ok(), "the old master still serves");
}

/// `current -> releases/a`, the master started as `./gpe-master` from `current` (`$PWD` keeps
/// the symlink): after `current` is switched to `releases/b`, USR2 runs releases/b's binary, in
/// releases/b.
#[test]
fn usr2_follows_a_switched_release_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    for release in ["a", "b"] {
        let d = root.join("releases").join(release);
        std::fs::create_dir_all(&d).unwrap();
        let to = d.join("gpe-master");
        // A hard link is a distinct path for /proc/PID/exe; a copy where links cannot be made.
        if std::fs::hard_link(common::master_bin(), &to).is_err() {
            std::fs::copy(common::master_bin(), &to).unwrap();
        }
    }
    let current = root.join("current");
    std::os::unix::fs::symlink("releases/a", &current).unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let mut launch = Launch::binds(&[&bind], None);
    launch.dir = Some(dir);
    launch.script = Some("exec ./gpe-master \"$@\"".to_owned());
    launch.cwd = Some(current.clone());
    let mut old = Master::start_with(Options::workers(1), launch);
    let exe = |pid: i32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let release = |r: &str| root.join("releases").join(r).canonicalize().unwrap();
    assert_eq!(exe(old.pid()), Some(release("a").join("gpe-master")));

    let next = root.join("next");
    std::os::unix::fs::symlink("releases/b", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    let new = old.usr2();
    let _reaper = Reaper(new);
    assert_eq!(
        exe(new),
        Some(release("b").join("gpe-master")),
        "{}",
        old.log()
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{new}/cwd")).ok(),
        Some(release("b")),
        "the new master runs in the start directory, followed again"
    );
}

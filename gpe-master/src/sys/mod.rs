//! The one module of gpe-master where `unsafe` is allowed: owning new descriptors and the
//! descriptor shuffle between `fork` and `exec` of a worker. Every block carries a
//! `// SAFETY:` comment; the rest of the crate goes through these safe functions (and nix).
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::unistd::Pid;

/// Own a descriptor that a syscall just returned to us (e.g. `fcntl(F_DUPFD_CLOEXEC)`).
pub(crate) fn own_new_fd(raw: RawFd) -> Option<OwnedFd> {
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` was just created by a successful syscall of this thread and nothing else
    // holds it, so this `OwnedFd` is its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The identity a worker runs as (`--user`, `--group`, `--initgroups`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    /// The supplementary groups to set (before the gid and uid), if they change.
    pub(crate) groups: Option<Vec<u32>>,
}

/// What a process started by the master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// A worker: it gets `LISTEN_PID=<its own pid>` (set between fork and exec, without a
    /// shell), its [`Credentials`], and `PR_SET_PDEATHSIG(SIGTERM)`, so that if the master dies
    /// it stops gracefully: its requests in flight finish, as gunicorn's workers finish theirs
    /// when their parent changes.
    Worker(Credentials),
    /// A new master (USR2): meant to outlive this one; no parent-death signal.
    Master,
}

/// The program, arguments and environment of a worker, as C strings laid out before the fork:
/// the child only writes its pid into the `LISTEN_PID=` entry and calls `execve`.
struct ExecImage {
    program: CString,
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    /// `LISTEN_PID=` followed by room for the digits and the NUL.
    listen_pid: Box<[u8; LISTEN_PID_ENTRY]>,
    envp: Vec<*const libc::c_char>,
    credentials: Credentials,
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const LISTEN_PID_ENTRY: usize = LISTEN_PID_PREFIX.len() + 21;

// SAFETY: the raw pointers point only into buffers owned by the same `ExecImage` (heap
// allocations that do not move when the struct does); they are dereferenced only by `execve`
// in the forked child, where no other thread exists.
unsafe impl Send for ExecImage {}
// SAFETY: as for `Send`: shared references never dereference the pointers.
unsafe impl Sync for ExecImage {}

fn c_string(s: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::other("a NUL byte in an argument"))
}

impl ExecImage {
    /// `cmd`'s program and arguments, and this process's environment with `cmd`'s changes,
    /// without `LISTEN_PID` (the child writes its own).
    fn of(cmd: &Command, credentials: Credentials) -> std::io::Result<ExecImage> {
        let program = c_string(cmd.get_program())?;
        let args: Vec<CString> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(c_string)
            .collect::<Result<_, _>>()?;
        let mut vars: std::collections::BTreeMap<OsString, OsString> =
            std::env::vars_os().collect();
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => vars.insert(k.to_owned(), v.to_owned()),
                None => vars.remove(k),
            };
        }
        vars.remove(std::ffi::OsStr::new(gpe_core::worker::env::LISTEN_PID));
        let env: Vec<CString> = vars
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                c_string(&kv)
            })
            .collect::<Result<_, _>>()?;
        let mut listen_pid = Box::new([0u8; LISTEN_PID_ENTRY]);
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        let argv = args
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = env
            .iter()
            .map(|e| e.as_ptr())
            .chain([listen_pid.as_ptr().cast(), std::ptr::null()])
            .collect();
        Ok(ExecImage {
            program,
            _args: args,
            argv,
            _env: env,
            listen_pid,
            envp,
            credentials,
        })
    }

    /// In the child: write `pid` into the `LISTEN_PID=` entry (no allocation).
    fn set_listen_pid(&mut self, pid: libc::pid_t) {
        let mut digits = [0u8; 20];
        let mut n = pid.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
            if n == 0 {
                break;
            }
        }
        let at = LISTEN_PID_PREFIX.len();
        for i in 0..len {
            self.listen_pid[at + i] = digits[len - 1 - i];
        }
        self.listen_pid[at + len] = 0;
    }
}

/// Spawn `cmd` with `fds` placed at descriptors `3, 4, ...` (not close-on-exec), as a
/// [`Role`]. Every descriptor in `fds` must be numbered above `3 + fds.len()` so the shuffle
/// never overwrites one it still needs (the caller dups them high).
pub(crate) fn spawn_with_fds(
    mut cmd: Command,
    fds: &[OwnedFd],
    master: Pid,
    role: Role,
) -> std::io::Result<Child> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let limit = 3 + raw.len() as RawFd;
    if raw.iter().any(|&fd| fd < limit) {
        return Err(std::io::Error::other(
            "descriptors to pass must be numbered high",
        ));
    }
    let master = master.as_raw();
    let mut image = match role {
        Role::Worker(credentials) => Some(ExecImage::of(&cmd, credentials)?),
        Role::Master => None,
    };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed. It only calls dup2, setgroups, setgid, setuid, prctl, getppid, getpid,
    // execve and _exit (all async-signal-safe), reads and writes the `image` buffers allocated
    // before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                // dup2 leaves the new descriptor without FD_CLOEXEC, so it survives exec.
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let Some(image) = image.as_mut() else {
                return Ok(());
            };
            // Groups, then gid, then uid (after it, neither can change); before the
            // parent-death signal, which a change of uid would reset.
            let creds = &image.credentials;
            if let Some(groups) = &creds.groups {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(gid) = creds.gid {
                if libc::setgid(gid) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(uid) = creds.uid {
                if libc::setuid(uid) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The master may have died between fork and prctl: then no signal would come.
            if libc::getppid() != master {
                libc::_exit(1);
            }
            image.set_listen_pid(libc::getpid());
            libc::execve(
                image.program.as_ptr(),
                image.argv.as_ptr(),
                image.envp.as_ptr(),
            );
            // execve returns only on failure: std reports this error to the parent.
            Err(std::io::Error::last_os_error())
        });
    }
    cmd.spawn()
}

/// Install a handler for `sig` that writes the one byte `tag` to `queue` and does nothing else
/// (gunicorn's handlers only enqueue the signal and wake the loop). `queue` is the non-blocking
/// write end of the master's signal queue, whose buffer holds far more signals than can be
/// pending; were it ever full, the byte would be dropped rather than block the handler.
pub(crate) fn register_queue_handler(sig: i32, tag: u8, queue: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the handler only calls write(2) (async-signal-safe) on a descriptor the closure
    // owns for the life of the process: no lock, no allocation, no panic path (the result is
    // ignored); signal-hook-registry saves and restores errno around it.
    unsafe {
        signal_hook::low_level::register(sig, move || {
            let _ = nix::unistd::write(&queue, &[tag]);
        })?;
    }
    Ok(())
}

/// Show `title` as this process's command line in `ps` (gunicorn's setproctitle): the argv
/// area the kernel reports in `/proc/self/cmdline` is overwritten in place, so the title is cut
/// to the length of the original command line. Read the arguments before ([`crate::argv`]):
/// std reads them from that area.
pub(crate) fn set_proc_title(title: &str) -> std::io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || std::io::Error::other("unexpected /proc/self/stat");
    // The fields after the command name (field 2, in parentheses, may hold anything): field 3
    // onwards; arg_start and arg_end are fields 48 and 49 (proc(5)).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(bad)?
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> std::io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(bad)
    };
    let (start, end) = (field(48)?, field(49)?);
    if start == 0 || end <= start {
        return Err(bad());
    }
    let len = end - start;
    // SAFETY: [start, end) is this process's argument strings, on the initial stack the kernel
    // mapped readable and writable for it, and alive for the whole process. No Rust reference
    // points into it: std reads it through raw pointers, only when `std::env::args*` is called
    // (gpe-master reads its arguments once, before, through `crate::argv`), and nothing else in
    // this process writes there.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    let n = title.len().min(len - 1);
    area[..n].copy_from_slice(&title.as_bytes()[..n]);
    area[n..].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &ExecImage, i: usize) -> String {
        // SAFETY: the pointers of a fresh image point into its own NUL-terminated buffers.
        unsafe { std::ffi::CStr::from_ptr(image.envp[i]) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn the_image_carries_the_environment_and_our_own_listen_pid() {
        let mut cmd = Command::new("/opt/app/worker");
        cmd.arg("--flag")
            .env(gpe_core::worker::env::WORKER_ID, "7")
            .env("LISTEN_PID", "1")
            .env_remove("HOME");
        let mut image = ExecImage::of(&cmd, Credentials::default()).unwrap();
        assert_eq!(image.program.to_str().unwrap(), "/opt/app/worker");
        assert_eq!(image.argv.len(), 3, "program, one argument, NULL");
        assert!(image.argv[2].is_null() && image.envp.last().unwrap().is_null());
        let n = image.envp.len() - 1;
        let env: Vec<String> = (0..n).map(|i| entry(&image, i)).collect();
        let id = format!("{}=7", gpe_core::worker::env::WORKER_ID);
        assert!(env.contains(&id), "{env:?}");
        assert!(!env.iter().any(|e| e.starts_with("HOME=")), "{env:?}");
        assert_eq!(
            env.iter().filter(|e| e.starts_with("LISTEN_PID=")).count(),
            1,
            "{env:?}"
        );
        for pid in [1, 42, 4_194_304, libc::pid_t::MAX] {
            image.set_listen_pid(pid);
            assert_eq!(entry(&image, n - 1), format!("LISTEN_PID={pid}"));
        }
    }
}

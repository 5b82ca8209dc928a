//! Starting a worker: its descriptors, environment (the contract, `gpe_core::worker::env`) and identity.

use super::*;

impl Arbiter {
    pub(super) fn try_spawn(&mut self) -> Result<i32, MasterError> {
        self.age += 1;
        let age = self.age;
        let slot = self.free_slot();
        let s = &self.settings;
        let n = self.listeners.len();
        let spawn_err =
            |e: std::io::Error| MasterError::Spawn(s.program.to_string_lossy().into_owned(), e);
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(n + 1);
        let high = 3 + n as i32 + 64;
        for l in &self.listeners {
            fds.push(dup_high(l.fd.as_fd(), high).map_err(spawn_err)?);
        }
        let heartbeat = tempfile::tempfile_in(&s.worker_tmp_dir).map_err(spawn_err)?;
        if s.uid.is_some() || s.gid.is_some() {
            // As gunicorn's WorkerTmp: a worker running as --user/--group must own its heartbeat
            // file, or its fchmod fails (EPERM) and it can never heartbeat.
            nix::unistd::fchown(
                &heartbeat,
                s.uid.map(nix::unistd::Uid::from_raw),
                s.gid.map(nix::unistd::Gid::from_raw),
            )
            .map_err(|e| spawn_err(e.into()))?;
        }
        // No shell: LISTEN_PID is written between fork and exec (see `sys::spawn_with_fds`), so
        // distroless and scratch images without /bin/sh can run workers.
        let mut cmd = Command::new(&s.program);
        cmd.args(&s.args);
        cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
        let heartbeat_fd = if s.timeout.is_zero() {
            None
        } else {
            fds.push(dup_high(heartbeat.as_fd(), high).map_err(spawn_err)?);
            Some(3 + n as i32)
        };
        let worker_env = WorkerEnv {
            fd_names: self.listeners.iter().map(|l| l.name.clone()).collect(),
            worker_id: slot,
            master_pid: std::process::id(),
            timeout: s.timeout,
            graceful_timeout: s.graceful_timeout,
            max_requests: if s.max_requests == 0 {
                0
            } else {
                s.max_requests + jitter(s.max_requests_jitter)
            },
            heartbeat_fd,
            notify_socket: self.notices.as_ref().map(|n| n.addr().to_owned()),
            multiproc_dir: s.metrics_dir.clone(),
        };
        for (name, value) in worker_env.vars() {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        for var in crate::reexec::VARS {
            cmd.env_remove(var);
        }
        let child = crate::sys::spawn_with_fds(
            cmd,
            &fds,
            nix::unistd::getpid(),
            crate::sys::Role::Worker(crate::sys::Credentials {
                uid: s.uid,
                gid: s.gid,
                groups: s.groups.clone(),
            }),
        )
        .map_err(spawn_err)?;
        drop(fds);
        let pid = child.id() as i32;
        self.live.insert(pid as u32);
        self.metrics.spawns.inc();
        self.workers.insert(
            pid,
            Worker {
                age,
                slot,
                spawned_at: Instant::now(),
                spawned_stamp: Stamp::of(&heartbeat),
                heartbeat,
                aborted_at: None,
                killed_after_abort: None,
                stopping: None,
                stop_deadline: None,
                killed_at_deadline: false,
                replaced_for: None,
                last_cpu: None,
                ready: false,
                retiring: false,
            },
        );
        Ok(pid)
    }
}

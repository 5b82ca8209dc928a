//! USR2: starting a new master, and this one's promotion.

use super::*;

impl Arbiter {
    /// USR2: start a new master that inherits the listeners (gunicorn's binary upgrade).
    pub(super) fn reexec(&mut self) {
        if let Some(pid) = self.reexec_pid {
            tracing::warn!("USR2 ignored: a new master (pid {pid}) is already running");
            return;
        }
        if let Some(old) = self.upgrade.old_master {
            tracing::warn!(
                "USR2 ignored: this master is not promoted yet (old master pid {old} still runs)"
            );
            return;
        }
        let s = &self.settings;
        let exe = crate::reexec::program_path(&s.argv0, &s.start_dir).unwrap_or_else(|| {
            tracing::warn!(
                "USR2: {:?} names no executable (from {}): re-executing {}",
                s.argv0,
                s.start_dir.display(),
                s.exe.display()
            );
            s.exe.clone()
        });
        match crate::reexec::spawn_new_master(
            &exe,
            &s.argv0,
            &s.argv,
            &s.start_dir,
            &self.listeners,
            self.upgrade.metrics_fd.as_ref(),
        ) {
            Ok(child) => {
                let pid = child.id() as i32;
                tracing::info!("Re-executing {}: new master pid {pid}; send TERM to this one (pid {}) once it serves", exe.display(), std::process::id());
                self.reexec_pid = Some(pid);
            }
            Err(e) => tracing::error!(error = %e, "USR2: cannot start a new master"),
        }
    }

    /// A re-exec'd master takes over the pidfile once the old master is gone.
    pub(super) fn check_promotion(&mut self) {
        let Some(old) = self.upgrade.old_master else {
            return;
        };
        if nix::unistd::getppid().as_raw() != old {
            tracing::info!("Master promoted: the old master (pid {old}) is gone");
            self.upgrade.old_master = None;
            if let Some(p) = &mut self.upgrade.pidfile {
                p.promote(old);
            }
            // The old master handed the unit over (MAINPID) before it exited; confirm, and
            // say ready once the workers are up.
            self.systemd.main_pid(std::process::id() as i32);
            self.readiness_due = true;
        }
    }
}

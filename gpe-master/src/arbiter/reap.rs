//! Reaping exited workers: why each exited, what replaces it, and folding their files.

use super::*;

impl Arbiter {
    /// Reap every exited child; record why it exited.
    pub(super) fn reap(&mut self) {
        let mut reaped = false;
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let (pid, code, sig) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, sig, _) => (pid, None, Some(sig)),
                _ => continue,
            };
            if Some(pid.as_raw()) == self.reexec_pid {
                tracing::warn!("The new master (pid {pid}) exited; this one keeps serving");
                self.reexec_pid = None;
                if let Some(p) = &mut self.upgrade.pidfile {
                    p.reclaim(pid.as_raw());
                }
                continue;
            }
            let Some(w) = self.workers.remove(&pid.as_raw()) else {
                continue;
            };
            reaped = true;
            self.live.remove(pid.as_raw() as u32);
            self.metrics
                .worker_memory
                .remove_label_values(&[&w.slot.to_string(), &pid.as_raw().to_string()])
                .ok();
            self.metrics
                .worker_cpu
                .remove_label_values(&[&w.slot.to_string(), &pid.as_raw().to_string()])
                .ok();
            let status = match (code, sig) {
                (Some(c), _) => Status::Exited(c),
                (_, Some(sig)) => Status::Signaled(sig),
                (None, None) => continue,
            };
            let exit = classify(
                status,
                Known {
                    told_to_stop: w.stopping.is_some(),
                    retiring: w.retiring,
                    aborted: w.aborted_at.is_some(),
                    killed_at_deadline: w.killed_at_deadline,
                },
            );
            match exit {
                ExitReason::BootError(c) => {
                    let what = if c == 3 {
                        "Worker failed to boot"
                    } else {
                        "App failed to load"
                    };
                    self.halt = Some((c, format!("{what} (worker pid {pid} exited with {c}): stopping instead of respawning. Check the worker's own error output above.")));
                }
                ExitReason::Killed => {
                    tracing::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
                }
                // gunicorn's words, which log alerts key on.
                _ => match status {
                    Status::Exited(c) if c != 0 => {
                        tracing::error!("Worker (pid:{pid}) exited with code {c}.");
                    }
                    Status::Signaled(sig) => {
                        tracing::error!("Worker (pid:{pid}) was sent {}!", sig.as_str());
                    }
                    Status::Exited(_) => {}
                },
            }
            let reason = exit.label();
            tracing::info!(reason, "Worker exiting (pid: {pid})");
            self.metrics.exits.with_label_values(&[reason]).inc();
            match (w.stopping, w.replaced_for) {
                // Its replacement was started when it asked for one.
                _ if w.retiring => {}
                // Unasked (crash, killed, max_requests, timeout): the replacement, when it is
                // spawned, counts as a `chld` restart (the Python exporter's reason for the
                // SIGCHLD that announces such an exit).
                (None, _) if !matches!(exit, ExitReason::BootError(_)) => {
                    self.respawn_due += 1;
                    // A clean exit with --max-requests set, by a worker that booted (it
                    // heartbeated; without a heartbeat channel there is nothing to tell), is
                    // gunicorn's recycling, not a crash loop: respawned at once however fast the
                    // requests came, and the backoff is left as it is.
                    let booted = self.settings.timeout.is_zero()
                        || last_beat(Stamp::of(&w.heartbeat), w.spawned_stamp) != Beat::Never;
                    let recycled =
                        exit == ExitReason::MaxRequests && self.settings.max_requests > 0 && booted;
                    if !recycled {
                        self.pace_respawn(pid.as_raw(), w.spawned_at.elapsed());
                    }
                }
                // Replaced by a reload (its successor already runs).
                (Some(_), Some(why)) => {
                    self.metrics.restarts.with_label_values(&[why]).inc();
                }
                _ => {}
            }
        }
        if reaped {
            self.metrics.workers.set(self.live_count() as i64);
            if let Some(sync) = &self.redis {
                // The dead workers' last values reach Redis (or the sync's memory, during an
                // outage) before compaction removes their files.
                if let Err(e) = sync.flush_now() {
                    tracing::debug!(error = %e, "Redis flush after reaping deferred");
                }
            }
            self.compaction_due
                .get_or_insert(self.last_compaction + COMPACT_EVERY);
        }
    }

    /// Fold dead workers' files into the archive, once [`COMPACT_EVERY`] has passed since the
    /// last time: workers recycled many times a second cost one compaction a second, not one
    /// each. Until then the collector reads their files as they are (nothing is lost or counted
    /// twice: compaction and scrapes share a lock).
    pub(super) fn compact_if_due(&mut self) {
        if self.compaction_due.is_none_or(|due| Instant::now() < due) {
            return;
        }
        self.compaction_due = None;
        self.last_compaction = Instant::now();
        // Liveness by pid check, not by our child table: during a USR2 upgrade the other
        // master's workers write into the same directory and must not be folded.
        let collector = gpe_core::MultiProcessCollector::new(&self.settings.metrics_dir)
            .with_liveness(gpe_core::Liveness::PidCheck);
        if let Err(e) = collector.compact() {
            tracing::warn!(error = %e, "compaction of dead workers' metrics failed");
        }
    }

    /// After an unasked exit: back off if the worker died within [`MIN_LIFETIME`] of its spawn
    /// (doubling once per round of respawns: workers failing together count once), else reset.
    pub(super) fn pace_respawn(&mut self, pid: i32, lived: Duration) {
        let now = Instant::now();
        if lived >= MIN_LIFETIME {
            self.respawn_backoff = Duration::ZERO;
            self.next_spawn = now;
            return;
        }
        if now < self.next_spawn {
            return; // already waiting: this one is respawned in the same round
        }
        self.respawn_backoff = (self.respawn_backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.next_spawn = now + self.respawn_backoff;
        tracing::warn!(
            "Worker (pid:{pid}) exited {} ms after its start: next spawn in {} ms",
            lived.as_millis(),
            self.respawn_backoff.as_millis()
        );
    }
}

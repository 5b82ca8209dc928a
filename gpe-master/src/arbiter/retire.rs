//! What workers tell the master (`READY=1`, a max-requests retirement), the hand-over of a retiring
//! worker to its replacement, and systemd's readiness.

use super::*;

impl Arbiter {
    /// Act on what the workers said (`READY=1`, a max-requests retirement).
    pub(super) fn read_notices(&mut self) {
        let Some(notices) = &self.notices else {
            return;
        };
        for (pid, notice) in notices.take() {
            let Some(w) = self.workers.get_mut(&pid) else {
                tracing::debug!(pid, ?notice, "notice from a process that is not our worker");
                continue;
            };
            match notice {
                Notice::Ready => w.ready = true,
                Notice::Retire if w.stopping.is_none() && !w.retiring => {
                    tracing::info!(
                        "Worker (pid:{pid}) reached --max-requests: booting its replacement"
                    );
                    w.retiring = true;
                    // Its replacement, spawned by `manage_workers`, is a `chld` restart as it
                    // was when the master learnt of the exit only.
                    self.respawn_due += 1;
                }
                Notice::Retire => {}
            }
        }
    }

    /// `READY=1` to systemd once every configured worker is up.
    pub(super) fn announce_ready(&mut self) {
        if !self.readiness_due || self.live_count() < self.num_workers as usize {
            return;
        }
        if self
            .workers
            .values()
            .filter(|w| w.counts())
            .all(Worker::is_up)
        {
            self.readiness_due = false;
            tracing::debug!("{} worker(s) up: ready", self.live_count());
            self.systemd.ready(self.live_count());
        }
    }

    /// Workers that asked for a replacement are sent TERM once the workers that are up, with
    /// the retiring ones still serving, exceed the configured count: capacity never drops below
    /// it while replacements boot. The oldest retiring worker goes first.
    pub(super) fn hand_over(&mut self) {
        let mut waiting: Vec<(u64, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retiring && w.stopping.is_none())
            .map(|(pid, w)| (w.age, *pid))
            .collect();
        if waiting.is_empty() {
            return;
        }
        let up = self
            .workers
            .values()
            .filter(|w| w.stopping.is_none() && !w.retiring && w.is_up())
            .count();
        let spare = (up + waiting.len()).saturating_sub(self.num_workers as usize);
        waiting.sort_unstable();
        let graceful = self.settings.graceful_timeout;
        for (_, pid) in waiting.into_iter().take(spare) {
            if let Some(w) = self.workers.get_mut(&pid) {
                tracing::info!("Worker (pid:{pid}) replaced for --max-requests: stopping it");
                w.retire(pid, Stop::Graceful, graceful);
            }
        }
    }
}

//! Watching live workers: heartbeat timeouts, overdue stops, and `/proc` samples.

use super::*;
use gpe_core::worker::procfs::{self, ProcStat};

impl Arbiter {
    /// Heartbeat timeouts: ABRT, then KILL on the next pass.
    pub(super) fn murder_workers(&mut self) {
        if self.settings.timeout.is_zero() {
            return;
        }
        let (mono, wall) = (monotonic_now(), SystemTime::now());
        for (pid, w) in &mut self.workers {
            if w.stopping.is_some() {
                continue;
            }
            let beat = last_beat(Stamp::of(&w.heartbeat), w.spawned_stamp);
            // None: never heartbeated, a plain socket-activated binary, not supervised.
            let Some(silent) = silence(beat, mono, wall) else {
                continue;
            };
            if silent <= self.settings.timeout {
                continue;
            }
            match w.aborted_at {
                None => {
                    tracing::error!("WORKER TIMEOUT (pid:{pid})");
                    w.aborted_at = Some(Instant::now());
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGABRT);
                }
                Some(at) if at.elapsed() > Duration::from_secs(1) => {
                    if w.killed_after_abort.is_none() {
                        tracing::error!("Worker (pid:{pid}) survived SIGABRT; sending SIGKILL");
                        w.killed_after_abort = Some(Instant::now());
                    }
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                }
                Some(_) => {}
            }
        }
    }

    pub(super) fn sample(&mut self) {
        if let Some(ProcStat {
            rss_bytes: rss,
            cpu_seconds: cpu,
            ..
        }) = procfs::stat(std::process::id())
        {
            self.metrics.memory.set(rss as i64);
            if cpu >= self.master_cpu {
                self.metrics.cpu_seconds.set(cpu);
                self.master_cpu = cpu;
            }
        }
        for (pid, w) in &mut self.workers {
            let Some(ProcStat {
                rss_bytes: rss,
                cpu_seconds: cpu,
                ..
            }) = procfs::stat(*pid as u32)
            else {
                continue;
            };
            let labels = [w.slot.to_string(), pid.to_string()];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            self.metrics
                .worker_memory
                .with_label_values(&labels)
                .set(rss as f64);
            let now = Instant::now();
            if let Some((at, before)) = w.last_cpu {
                let dt = now.duration_since(at).as_secs_f64();
                if dt > 0.0 {
                    self.metrics
                        .worker_cpu
                        .with_label_values(&labels)
                        .set(((cpu - before) / dt * 100.0).max(0.0));
                }
            }
            w.last_cpu = Some((now, cpu));
        }
    }

    /// Workers told to stop that outlived `--graceful-timeout`: SIGKILL (gunicorn kills what is
    /// left after the graceful timeout; here that holds for every retiring worker, not only at
    /// exit, so a worker that ignores TERM cannot linger after a HUP, TTOU or WINCH).
    pub(super) fn kill_overdue(&mut self) {
        let now = Instant::now();
        for (pid, w) in &mut self.workers {
            if w.killed_at_deadline || w.stop_deadline.is_none_or(|d| now < d) {
                continue;
            }
            tracing::warn!(
                "Worker (pid:{pid}) did not exit within --graceful-timeout {}s of being told to stop; sending SIGKILL",
                self.settings.graceful_timeout.as_secs()
            );
            w.killed_at_deadline = true;
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}

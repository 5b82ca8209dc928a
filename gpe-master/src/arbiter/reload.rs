//! HUP: the settings re-read (see [`crate::reconfigure`]), new workers started with them, the
//! listeners changed when the addresses did, the old workers retired.

use super::*;

impl Arbiter {
    /// HUP: new workers first, then the old ones are stopped gracefully.
    pub(super) fn reload(&mut self) {
        self.metrics.reloads.inc();
        // gunicorn ≥ 24 reopens its log files on HUP too (logrotate setups that send HUP).
        (self.on_usr1.0)();
        if self.upgrade.old_master.is_none() {
            self.systemd.reloading();
            self.readiness_due = true;
        }
        // As gunicorn: the settings are read again, and apply to the workers the reload starts.
        if let Some(new) = self.reconfigure.as_mut().and_then(|r| (r.0)()) {
            self.apply(new);
        }
        // As gunicorn: a reload starts the configured number of workers (undoing TTIN/TTOU/WINCH).
        self.num_workers = self.settings.workers;
        let old: Vec<i32> = self.workers.keys().copied().collect();
        // Marked first: the new workers take the old ones' slots.
        for w in self.workers.values_mut() {
            w.replaced_for = Some("hup");
        }
        for _ in 0..self.num_workers {
            self.spawn_worker();
        }
        let graceful = self.settings.graceful_timeout;
        for pid in old {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.retire(pid, Stop::Graceful, graceful);
            }
        }
    }

    /// Take the re-read settings of a HUP (logging what changed).
    fn apply(&mut self, new: crate::reconfigure::Reconfigured) {
        self.rebind(&new.binds);
        let s = &mut self.settings;
        let old = crate::reconfigure::Reconfigured {
            workers: s.workers,
            timeout: s.timeout,
            graceful_timeout: s.graceful_timeout,
            max_requests: s.max_requests,
            max_requests_jitter: s.max_requests_jitter,
            env: s.env.clone(),
            program: s.program.clone(),
            args: s.args.clone(),
            binds: new.binds.clone(),
        };
        if old == new {
            return;
        }
        tracing::info!(
            workers = new.workers,
            timeout = new.timeout.as_secs(),
            graceful_timeout = new.graceful_timeout.as_secs(),
            max_requests = new.max_requests,
            "Reload: new settings for the new workers"
        );
        s.workers = new.workers;
        s.timeout = new.timeout;
        s.graceful_timeout = new.graceful_timeout;
        s.max_requests = new.max_requests;
        s.max_requests_jitter = new.max_requests_jitter;
        s.env = new.env;
        s.program = new.program;
        s.args = new.args;
    }

    /// As gunicorn's reload: when the addresses changed, listen on the new list (an address
    /// that stays keeps its socket, so no connection is refused there), close the others once
    /// no new worker needs them (the retiring workers keep their own copies until they exit).
    /// A bind that fails keeps the current listeners.
    fn rebind(&mut self, binds: &[String]) {
        let current: Vec<String> = self.listeners.iter().map(|l| l.name.clone()).collect();
        if current == binds {
            return;
        }
        let Some(options) = self.settings.rebind else {
            tracing::warn!(
                "Reload: bind changed, but the sockets are systemd's: change the .socket unit"
            );
            return;
        };
        let specs = match crate::bind::parse_all(binds) {
            Ok(specs) => specs,
            Err(e) => {
                tracing::error!("Reload: keeping the current listeners: {e}");
                return;
            }
        };
        let mut old = std::mem::take(&mut self.listeners);
        let mut next = Vec::with_capacity(specs.len());
        for (text, spec) in &specs {
            if let Some(i) = old.iter().position(|l| l.name == *text) {
                next.push(old.remove(i));
                continue;
            }
            match crate::bind::bind_one(spec, text, &options) {
                Ok(bound) => {
                    tracing::info!("Listening at: {text} ({})", std::process::id());
                    next.push(bound);
                }
                Err(e) => {
                    tracing::error!("Reload: keeping the current listeners: {e}");
                    // Put the kept ones back in their order; the new ones close.
                    old.extend(next.into_iter().filter(|l| current.contains(&l.name)));
                    old.sort_by_key(|l| current.iter().position(|c| *c == l.name));
                    self.listeners = old;
                    return;
                }
            }
        }
        for l in &old {
            tracing::info!("Closing listener: {}", l.name);
        }
        self.listeners = next;
    }
}

//! [`Outage`]: what the Redis paths do while Redis is down: log once per outage, and back off
//! exponentially (capped) between attempts.

use std::time::{Duration, Instant};

use super::RedisError;

/// Logs once per outage, and computes the capped exponential backoff.
#[derive(Debug)]
pub(crate) struct Outage {
    what: &'static str,
    down_since: Option<Instant>,
    backoff: Duration,
    next_try: Option<Instant>,
    min: Duration,
    max: Duration,
}

impl Outage {
    pub(crate) fn new(what: &'static str, min: Duration, max: Duration) -> Self {
        Outage {
            what,
            down_since: None,
            backoff: min,
            next_try: None,
            min,
            max,
        }
    }

    /// Whether an attempt is due now (always while up).
    pub(crate) fn may_try(&self) -> bool {
        self.next_try.is_none_or(|t| Instant::now() >= t)
    }

    pub(crate) fn failed(&mut self, server: &str, error: &RedisError) {
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.backoff = self.min;
            tracing::warn!(
                %server, %error, what = self.what,
                "Redis is unavailable; metrics stay in the local files and /metrics keeps serving them; retrying with backoff (logged once per outage)"
            );
        } else {
            tracing::debug!(%server, %error, what = self.what, "Redis still unavailable");
            self.backoff = (self.backoff * 2).min(self.max);
        }
        self.next_try = Some(Instant::now() + self.backoff);
    }

    /// Record a success; returns true when it ends an outage.
    pub(crate) fn succeeded(&mut self, server: &str) -> bool {
        self.next_try = None;
        match self.down_since.take() {
            Some(since) => {
                tracing::info!(%server, what = self.what, down_for = ?since.elapsed(), "Redis is reachable again");
                true
            }
            None => false,
        }
    }
}

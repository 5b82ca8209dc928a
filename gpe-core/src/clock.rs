//! The clock that times jobs and requests: the CPU's time-stamp counter where it is invariant,
//! through `quanta` (two reads cost about half of two `Instant::now()` calls; see
//! `BENCHMARKS.md`), else the monotonic clock.
//!
//! The counter must first be calibrated against the monotonic clock, and quanta's calibration is
//! a busy loop of milliseconds (bounded at 200 ms, longer on a loaded machine). A worker recycled
//! by `--max-requests` every second would spend more on that loop than the counter ever saves,
//! so a process times with the monotonic clock first; the first reading past
//! [`CALIBRATION_DELAY`] starts the calibration on a thread of its own: only processes that live
//! long calibrate and use the counter (short-lived ones do not even start the thread). A [`Stamp`]
//! says which clock read it, so a request that spans the switch is timed correctly.
//!
//! ```
//! let clock = gpe_core::clock::Clock::new();
//! let start = clock.now();
//! std::thread::sleep(std::time::Duration::from_millis(2));
//! assert!(clock.elapsed(start) >= std::time::Duration::from_millis(1));
//! ```

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Local civil time (`localtime_r`: `TZ`, else `/etc/localtime`), for log time stamps as
/// gunicorn writes them (the access log's `%(t)s`, gpe-master's log lines).
pub use crate::sys::time::{local_time, LocalTime};

/// How long a process times with the monotonic clock before it calibrates the time-stamp counter.
pub const CALIBRATION_DELAY: Duration = Duration::from_secs(10);

/// The tag of a [`Stamp`] read from the monotonic clock (the counter's raw readings stay far
/// below: 2^63 ticks are decades at any clock rate).
const MONOTONIC: u64 = 1 << 63;

/// A point in time read from a [`Clock`]; only meaningful to the clocks of the same process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

/// The process's clocks: the monotonic clock's origin, and the counter once calibrated.
struct Clocks {
    origin: Instant,
    counter: OnceLock<quanta::Clock>,
    calibrating: std::sync::Once,
}

fn clocks() -> &'static Clocks {
    static CLOCKS: OnceLock<Clocks> = OnceLock::new();
    CLOCKS.get_or_init(|| Clocks {
        origin: Instant::now(),
        counter: OnceLock::new(),
        calibrating: std::sync::Once::new(),
    })
}

impl Clocks {
    /// The monotonic clock's reading, in nanoseconds since the origin; past
    /// [`CALIBRATION_DELAY`], starts the counter's calibration (once).
    #[inline]
    fn monotonic(&self) -> u64 {
        let nanos = self.origin.elapsed().as_nanos() as u64;
        if nanos > CALIBRATION_DELAY.as_nanos() as u64 {
            self.calibrating.call_once(|| {
                let spawned = std::thread::Builder::new()
                    .name("gpe-clock".to_owned())
                    .spawn(|| {
                        let _ = clocks().counter.set(quanta::Clock::new());
                    });
                if let Err(e) = spawned {
                    tracing::debug!(error = %e, "no counter calibration: timing with the monotonic clock");
                }
            });
        }
        nanos
    }
}

/// Reads [`Stamp`]s and measures the time since one. Cheap to create and to clone.
#[derive(Debug, Clone, Copy)]
pub struct Clock(());

impl Clock {
    /// A clock (the process's clocks start with the first).
    pub fn new() -> Self {
        clocks();
        Clock(())
    }

    /// Now: the counter's raw reading, unscaled, or the monotonic clock's before calibration.
    #[inline]
    pub fn now(&self) -> Stamp {
        let c = clocks();
        match c.counter.get() {
            Some(counter) => Stamp(counter.raw() & !MONOTONIC),
            None => Stamp(MONOTONIC | c.monotonic()),
        }
    }

    /// The time since `start` (zero if the clock reads earlier than `start`).
    #[inline]
    pub fn elapsed(&self, start: Stamp) -> Duration {
        let c = clocks();
        if start.0 & MONOTONIC != 0 {
            let now = c.monotonic();
            return Duration::from_nanos(now.saturating_sub(start.0 & !MONOTONIC));
        }
        match c.counter.get() {
            Some(counter) => Duration::from_nanos(counter.delta_as_nanos(start.0, counter.raw())),
            None => Duration::ZERO, // unreachable: a counter stamp implies a counter
        }
    }

    /// Whether the time-stamp counter is in use (calibrated) in this process.
    pub fn counter_in_use() -> bool {
        clocks().counter.get().is_some()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The wall clock in seconds since the Unix epoch (0 before it): what a `mostrecent` gauge's
/// timestamp, an exemplar's time and the health families' "last success" carry.
pub(crate) fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monotonic_stamp_is_timed_across_the_switch_to_the_counter() {
        let clock = Clock::new();
        let before = clock.now();
        assert_ne!(before.0 & MONOTONIC, 0, "no counter before the delay");
        std::thread::sleep(Duration::from_millis(3));
        // Calibrate now, as the background thread would later.
        let _ = clocks().counter.set(quanta::Clock::new());
        let after = clock.now();
        assert_eq!(after.0 & MONOTONIC, 0, "the counter once calibrated");
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.elapsed(before) >= Duration::from_millis(5));
        let by_counter = clock.elapsed(after);
        assert!(
            by_counter >= Duration::from_millis(1) && by_counter < Duration::from_secs(5),
            "{by_counter:?}"
        );
    }
}

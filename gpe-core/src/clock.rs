//! The clock that times jobs and requests: the CPU's time-stamp counter where it is invariant,
//! through `quanta` (two reads cost about half of two `Instant::now()` calls; see
//! `BENCHMARKS.md`), else the monotonic clock.
//!
//! The first clock of a process calibrates the counter against the monotonic clock (a loop that
//! quanta bounds at 200 ms); later ones reuse that calibration.
//!
//! ```
//! let clock = gpe_core::clock::Clock::new();
//! let start = clock.now();
//! std::thread::sleep(std::time::Duration::from_millis(2));
//! assert!(clock.elapsed(start) >= std::time::Duration::from_millis(1));
//! ```

use std::time::Duration;

/// A point in time read from a [`Clock`]; only meaningful to the clock that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

/// Reads [`Stamp`]s and measures the time since one.
#[derive(Debug, Clone)]
pub struct Clock(quanta::Clock);

impl Clock {
    /// A clock (the first in a process calibrates the counter).
    pub fn new() -> Self {
        Clock(quanta::Clock::new())
    }

    /// Now: the counter's raw reading, unscaled.
    #[inline]
    pub fn now(&self) -> Stamp {
        Stamp(self.0.raw())
    }

    /// The time since `start` (zero if the counter reads earlier than `start`).
    #[inline]
    pub fn elapsed(&self, start: Stamp) -> Duration {
        Duration::from_nanos(self.0.delta_as_nanos(start.0, self.0.raw()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

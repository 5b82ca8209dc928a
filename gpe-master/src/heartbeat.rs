//! Reading a worker's heartbeat file (`GPE_HEARTBEAT_FD`), as gunicorn 22+'s
//! `murder_workers`: the worker sets the file's times to the monotonic clock
//! (`futimens(mono, mono)`, gunicorn's `os.utime`), and the master compares the mtime with its
//! own monotonic clock. A step of the wall clock (NTP, a resumed VM) therefore kills no live
//! worker and hides no hung one.
//!
//! Workers that beat by `fchmod` (std-only workers such as `example-socket-activated`, and any
//! built against an older gpe-core) change only the ctime; the master still understands them (a
//! wall-clock comparison, as before). A file whose times have
//! not changed since the spawn was never beaten: a plain socket-activated binary, not
//! supervised.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

/// A heartbeat file's times (seconds, nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The times of `file` now (zeros if it cannot be read).
    pub(crate) fn of(file: &File) -> Stamp {
        file.metadata()
            .map(|m| Stamp {
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            })
            .unwrap_or_default()
    }
}

/// The last heartbeat, as the file tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Never beaten since the spawn.
    Never,
    /// At this reading of the monotonic clock.
    Monotonic(Duration),
    /// An older worker's `fchmod`: at this wall-clock time.
    WallClock(SystemTime),
}

fn duration((secs, nanos): (i64, i64)) -> Duration {
    Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
}

/// The last beat, from the file's times `now` and at the spawn.
pub(crate) fn last_beat(now: Stamp, spawned: Stamp) -> Beat {
    if now.mtime != spawned.mtime {
        Beat::Monotonic(duration(now.mtime))
    } else if now.ctime != spawned.ctime {
        Beat::WallClock(SystemTime::UNIX_EPOCH + duration(now.ctime))
    } else {
        Beat::Never
    }
}

/// How long the worker has been silent, given the clocks' readings now; `None` if it never beat.
pub(crate) fn silence(
    beat: Beat,
    monotonic_now: Duration,
    wall_now: SystemTime,
) -> Option<Duration> {
    match beat {
        Beat::Never => None,
        Beat::Monotonic(at) => Some(monotonic_now.saturating_sub(at)),
        Beat::WallClock(at) => Some(wall_now.duration_since(at).unwrap_or_default()),
    }
}

/// The monotonic clock now, on the scale workers write (`CLOCK_MONOTONIC`).
pub(crate) fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| duration((t.tv_sec(), t.tv_nsec())))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAWNED: Stamp = Stamp {
        mtime: (1_764_000_000, 0),
        ctime: (1_764_000_000, 0),
    };

    #[test]
    fn a_monotonic_beat_ignores_the_wall_clock() {
        // The worker beat at monotonic 100 s (utime also moves the ctime).
        let now = Stamp {
            mtime: (100, 0),
            ctime: (1_764_000_050, 0),
        };
        let beat = last_beat(now, SPAWNED);
        assert_eq!(beat, Beat::Monotonic(Duration::from_secs(100)));
        let mono = Duration::from_secs(105);
        for wall in [
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_055),
            // The wall clock stepped an hour forward, then a day back: no difference.
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_003_655),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_763_913_655),
        ] {
            assert_eq!(silence(beat, mono, wall), Some(Duration::from_secs(5)));
        }
    }

    #[test]
    fn an_fchmod_beat_is_read_from_the_ctime() {
        let now = Stamp {
            mtime: SPAWNED.mtime,
            ctime: (1_764_000_030, 500_000_000),
        };
        let beat = last_beat(now, SPAWNED);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_040);
        assert_eq!(
            silence(beat, Duration::ZERO, wall),
            Some(Duration::from_millis(9_500))
        );
    }

    #[test]
    fn an_untouched_file_never_beat() {
        assert_eq!(last_beat(SPAWNED, SPAWNED), Beat::Never);
        assert_eq!(
            silence(Beat::Never, Duration::from_secs(1), SystemTime::now()),
            None
        );
    }

    #[test]
    fn a_real_file_beaten_like_a_worker() {
        let file = tempfile::tempfile().unwrap();
        let spawned = Stamp::of(&file);
        let now = nix::sys::time::TimeSpec::from(monotonic_now());
        nix::sys::stat::futimens(&file, &now, &now).unwrap();
        let Beat::Monotonic(at) = last_beat(Stamp::of(&file), spawned) else {
            panic!("not read as a monotonic beat");
        };
        assert!(
            silence(Beat::Monotonic(at), monotonic_now(), SystemTime::now()).unwrap()
                < Duration::from_secs(5)
        );
    }
}

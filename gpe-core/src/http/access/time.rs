//! The `%(t)s` timestamp: gunicorn's `time.strftime('[%d/%b/%Y:%H:%M:%S %z]')`, in the local
//! time zone (the C library's `localtime_r`, in gpe-core's `sys` module), made once per
//! second per thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys::time::{local_time, LocalTime};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `[02/Dec/2026:10:00:00 +0000]`.
pub(super) type Clf = [u8; 28];

/// Now, as `%(t)s`.
pub(super) fn clf_now() -> Clf {
    thread_local!(static LAST: Cell<(i64, Clf)> = const { Cell::new((i64::MIN, [0; 28])) });
    let secs = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX) - 1,
    };
    LAST.with(|last| {
        let (at, text) = last.get();
        if at == secs {
            return text;
        }
        let text = clf(&local_time(secs).unwrap_or_else(|| utc(secs)));
        last.set((secs, text));
        text
    })
}

/// `t` as `[%d/%b/%Y:%H:%M:%S %z]`.
pub(super) fn clf(t: &LocalTime) -> Clf {
    let mut out = *b"[00/Jan/0000:00:00:00 +0000]";
    let two = |out: &mut Clf, at: usize, v: u32| {
        out[at] = b'0' + (v / 10 % 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 1, t.day.into());
    out[4..7].copy_from_slice(MONTHS[usize::from(t.month.clamp(1, 12) - 1)]);
    let year = t.year.clamp(0, 9999) as u32;
    two(&mut out, 8, year / 100);
    two(&mut out, 10, year % 100);
    two(&mut out, 13, t.hour.into());
    two(&mut out, 16, t.minute.into());
    two(&mut out, 19, t.second.into());
    if t.offset < 0 {
        out[22] = b'-';
    }
    let offset = t.offset.unsigned_abs() / 60;
    two(&mut out, 23, (offset / 60).min(99));
    two(&mut out, 25, offset % 60);
    out
}

/// `secs` in UTC, where the C library cannot convert it (civil from days, Howard Hinnant's
/// algorithm).
pub(super) fn utc(secs: i64) -> LocalTime {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    LocalTime {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: month as u8,
        day: day as u8,
        hour: (rem / 3600) as u8,
        minute: (rem / 60 % 60) as u8,
        second: (rem % 60) as u8,
        offset: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorns_strftime_shape() {
        let t = LocalTime {
            year: 2026,
            month: 12,
            day: 2,
            hour: 10,
            minute: 0,
            second: 7,
            offset: 0,
        };
        assert_eq!(&clf(&t), b"[02/Dec/2026:10:00:07 +0000]");
        let t = LocalTime {
            offset: -(3 * 3600 + 30 * 60),
            month: 1,
            ..t
        };
        assert_eq!(&clf(&t), b"[02/Jan/2026:10:00:07 -0330]");
        let t = LocalTime {
            offset: 5 * 3600 + 45 * 60,
            ..t
        };
        assert_eq!(&clf(&t), b"[02/Jan/2026:10:00:07 +0545]");
    }

    #[test]
    fn utc_civil_dates() {
        assert_eq!(&clf(&utc(0)), b"[01/Jan/1970:00:00:00 +0000]");
        // 2026-12-02T10:00:00Z
        assert_eq!(&clf(&utc(1_796_205_600)), b"[02/Dec/2026:10:00:00 +0000]");
        // A leap day.
        assert_eq!(&clf(&utc(951_782_400)), b"[29/Feb/2000:00:00:00 +0000]");
        assert_eq!(&clf(&utc(-1)), b"[31/Dec/1969:23:59:59 +0000]");
    }
}

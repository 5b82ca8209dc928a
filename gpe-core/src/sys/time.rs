//! Local civil time (`localtime_r`), for the access log's `%(t)s`: gunicorn writes its
//! timestamps in the process's local time zone (`TZ`, else `/etc/localtime`), with its offset.

/// A moment in local civil time (see [`local_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalTime {
    /// The year (2026).
    pub year: i32,
    /// 1 to 12.
    pub month: u8,
    /// 1 to 31.
    pub day: u8,
    /// 0 to 23.
    pub hour: u8,
    /// 0 to 59.
    pub minute: u8,
    /// 0 to 60 (60 for a leap second, where the C library reports one).
    pub second: u8,
    /// Seconds east of UTC.
    pub offset: i32,
}

/// `unix_secs` (seconds since the epoch) in the local time zone; `None` when the C library
/// cannot convert it.
pub fn local_time(unix_secs: i64) -> Option<LocalTime> {
    let t = nix::libc::time_t::try_from(unix_secs).ok()?;
    // SAFETY: `tm` is plain data: integers and, on glibc and musl, a `tm_zone` pointer, for
    // which null is a valid value; an all-zero `tm` is a valid one.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call (`t` is read, `tm` written, both live on this
    // stack frame); `localtime_r` is the reentrant variant, which keeps no pointer to either and
    // writes only into `tm`.
    let converted = unsafe { nix::libc::localtime_r(&t, &mut tm) };
    if converted.is_null() {
        return None;
    }
    let small = |v: nix::libc::c_int| u8::try_from(v).ok();
    Some(LocalTime {
        year: tm.tm_year.checked_add(1900)?,
        month: small(tm.tm_mon + 1)?,
        day: small(tm.tm_mday)?,
        hour: small(tm.tm_hour)?,
        minute: small(tm.tm_min)?,
        // 60 for a leap second, where the C library reports one.
        second: small(tm.tm_sec)?,
        offset: i32::try_from(tm.tm_gmtoff).ok()?,
    })
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_converts_with_an_offset_that_adds_up() {
        let t = local_time(86_400 * 365).expect("converts");
        // Whatever the zone, local time minus the offset is the UTC moment: 1971-01-01T00:00:00.
        let local_secs = i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
        let utc_secs = local_secs - i64::from(t.offset);
        let day_shift = match (t.year, t.month, t.day) {
            (1971, 1, 1) => 0,
            (1970, 12, 31) => -86_400,
            (1971, 1, 2) => 86_400,
            other => panic!("unexpected date {other:?}"),
        };
        assert_eq!((utc_secs + day_shift).rem_euclid(86_400), 0);
    }
}

//! The master's log lines in gunicorn's format, so that log parsers and alerts keyed on them keep
//! working: `[2026-12-01 10:00:00 +0000] [1234] [INFO] Booting worker with pid: 1235` (gunicorn's
//! `glogging.py`: local time with its offset, the master's pid, gunicorn's level names), then the
//! event's fields as `key=value`.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// gunicorn's line format (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gunicorn;

/// gunicorn's name of a level.
pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// `[%Y-%m-%d %H:%M:%S %z]` of `unix_secs`, in local time.
pub(crate) fn timestamp(unix_secs: i64) -> String {
    let Some(t) = gpe_core::clock::local_time(unix_secs) else {
        // Not expected on Linux: the C library converts every time a clock can give.
        return format!("[unix time {unix_secs}]");
    };
    let (y, mo, d, h, mi, s, off) = (t.year, t.month, t.day, t.hour, t.minute, t.second, t.offset);
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs() / 60;
    format!(
        "[{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} {sign}{:02}{:02}]",
        off / 60,
        off % 60
    )
}

impl<S, N> FormatEvent<S, N> for Gunicorn
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        write!(
            writer,
            "{} [{}] [{}] ",
            timestamp(now),
            std::process::id(),
            level_name(*event.metadata().level())
        )?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_gunicorns() {
        let t = timestamp(1_764_583_200); // 2025-12-01 10:00:00 UTC
                                          // `[YYYY-MM-DD HH:MM:SS ±HHMM]`, whatever the machine's zone.
        assert_eq!(t.len(), "[2025-12-01 10:00:00 +0000]".len(), "{t}");
        assert!(
            t.starts_with("[2025-12-0") || t.starts_with("[2025-11-30"),
            "{t}"
        );
        assert!(matches!(&t[21..22], "+" | "-"), "{t}");
    }

    #[test]
    fn levels_are_gunicorns() {
        assert_eq!(level_name(Level::WARN), "WARNING");
        assert_eq!(level_name(Level::INFO), "INFO");
    }
}

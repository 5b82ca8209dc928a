//! Key names and process identities.
//!
//! Keys are only ever *built* (from the prefix and a heartbeat member), never split, so a prefix
//! or a host id may contain `:`.

use std::fmt;

use crate::store::dbfile::Kind;
use crate::store::GaugeMode;

/// The identity of one process in Redis: host, pid and process start time.
///
/// Spelled `{host}:{pid}:{start}` in the heartbeat set (with `.{epoch}` after `start` when the
/// same process had to be re-registered after a stale fold). Parsed from the right, so the host
/// may contain `:`.
///
/// ```
/// use gpe_core::redis::ProcessId;
///
/// let id = ProcessId::new("pod:a", 42, 1234);
/// assert_eq!(id.to_string(), "pod:a:42:1234");
/// assert_eq!(ProcessId::parse("pod:a:42:1234"), Some(id));
/// assert_eq!(ProcessId::parse("nope"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    host: String,
    pid: u32,
    start: u64,
    epoch: u32,
}

impl ProcessId {
    /// The identity of `pid` on `host`, started at `start` (clock ticks since boot, field 22 of
    /// `/proc/{pid}/stat`; any number that differs between two processes with the same pid).
    pub fn new(host: &str, pid: u32, start: u64) -> Self {
        ProcessId {
            host: host.to_owned(),
            pid,
            start,
            epoch: 0,
        }
    }

    /// Parse a heartbeat member.
    pub fn parse(member: &str) -> Option<Self> {
        let mut parts = member.rsplitn(3, ':');
        let start_part = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next().filter(|h| !h.is_empty())?;
        let (start, epoch) = match start_part.split_once('.') {
            Some((s, e)) => (s.parse().ok()?, e.parse().ok()?),
            None => (start_part.parse().ok()?, 0),
        };
        Some(ProcessId {
            host: host.to_owned(),
            pid,
            start,
            epoch,
        })
    }

    /// The host (or container) identity.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process start time.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The same process, re-registered under a new member after a stale fold.
    pub(crate) fn next_epoch(&self) -> Self {
        ProcessId {
            epoch: self.epoch + 1,
            ..self.clone()
        }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.host, self.pid, self.start)?;
        if self.epoch > 0 {
            write!(f, ".{}", self.epoch)?;
        }
        Ok(())
    }
}

/// Every kind a process can have a hash for (every kind synced), in a fixed order. Not
/// [`Kind::Exemplar`]: exemplars stay on their host.
pub(crate) fn all_kinds() -> Vec<Kind> {
    let mut v = vec![Kind::Counter, Kind::Histogram, Kind::Summary];
    v.extend(GaugeMode::ALL_MODES.into_iter().map(Kind::Gauge));
    v.push(Kind::Native);
    v
}

/// Whether files of `kind` are synced to Redis.
pub(crate) fn synced(kind: Kind) -> bool {
    !matches!(kind, Kind::Exemplar)
}

/// Separates the kind from the series key in a field of a process hash (`{kind}\t{series key}`).
/// Kinds never contain it, so a field is split at its first separator whatever the series key
/// holds (JSON keys escape tabs anyway).
pub(crate) const SEP: char = '\t';

/// The field of a process hash holding series `series` of `kind`: `{kind}\t{series}`.
pub(crate) fn field(kind_prefix: &str, series: &str) -> String {
    let mut f = String::with_capacity(kind_prefix.len() + 1 + series.len());
    f.push_str(kind_prefix);
    f.push(SEP);
    f.push_str(series);
    f
}

/// Every kind with its name, to split fields of process hashes.
#[derive(Debug)]
pub(crate) struct KindNames(Vec<(String, Kind)>);

impl KindNames {
    pub(crate) fn new() -> Self {
        KindNames(all_kinds().into_iter().map(|k| (k.prefix(), k)).collect())
    }

    /// Split a process-hash field into its kind and series key. `None` when there is no
    /// separator or the kind is unknown (garbage, or a foreign field).
    pub(crate) fn split<'a>(&self, field: &'a [u8]) -> Option<(Kind, &'a [u8])> {
        let sep = field.iter().position(|&b| b == SEP as u8)?;
        let (name, series) = (&field[..sep], &field[sep + 1..]);
        let kind = self
            .0
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|&(_, k)| k)?;
        Some((kind, series))
    }
}

/// Whether a kind's values are stored as `"{value} {timestamp}"`.
pub(crate) fn has_timestamp(kind: Kind) -> bool {
    matches!(kind, Kind::Gauge(m) if m.is_most_recent())
}

/// Whether a kind's values add up across processes (so a re-registered process sends only
/// what it gained since its stale fold).
pub(crate) fn additive(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Counter
            | Kind::Histogram
            | Kind::Summary
            | Kind::Native
            | Kind::Gauge(GaugeMode::Sum)
    )
}

/// `value` less `base` (what a stale fold already moved to the archive), both as read from the
/// files: for [`Kind::Native`] the value words hold `u64` counts, subtracted as integers.
pub(crate) fn minus(kind: Kind, value: f64, base: f64) -> f64 {
    if kind == Kind::Native {
        f64::from_bits(value.to_bits().saturating_sub(base.to_bits()))
    } else {
        value - base
    }
}

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn heartbeat(&self) -> String {
        format!("{}:heartbeat", self.prefix)
    }

    pub(crate) fn folded(&self) -> String {
        format!("{}:folded", self.prefix)
    }

    pub(crate) fn sweep_lock(&self) -> String {
        format!("{}:lock:sweep", self.prefix)
    }
}

/// Format a value as Redis stores it: the shortest string that parses back to the same `f64`,
/// or for [`Kind::Native`] (whose value word holds a `u64` count, as in the files) the count's
/// decimal digits, which the fold script adds as digit strings: exact at any size.
pub(crate) fn fmt_value(kind: Kind, value: f64, ts: f64) -> String {
    if kind == Kind::Native {
        value.to_bits().to_string()
    } else if has_timestamp(kind) {
        format!("{value} {ts}")
    } else {
        format!("{value}")
    }
}

/// Parse a stored value (ours, or Lua's `%.17g`). `None` for garbage. A [`Kind::Native`] count
/// (decimal digits only) comes back in the value word as the files hold it (`u64` bits; a sum
/// past `u64::MAX` saturates).
pub(crate) fn parse_value(kind: Kind, raw: &[u8]) -> Option<(f64, f64)> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    if kind == Kind::Native {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let count = s.parse::<u64>().unwrap_or(u64::MAX);
        return Some((f64::from_bits(count), 0.0));
    }
    let num = |t: &str| -> Option<f64> {
        match t {
            "-nan" | "nan" | "NaN" => Some(f64::NAN),
            _ => t.parse().ok(),
        }
    };
    if has_timestamp(kind) {
        let (v, ts) = s.split_once(' ')?;
        Some((num(v)?, num(ts)?))
    } else {
        Some((num(s)?, 0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_with_colons_and_epochs() {
        let id = ProcessId::new("a:b:c", 7, 99).next_epoch();
        assert_eq!(id.to_string(), "a:b:c:7:99.1");
        assert_eq!(ProcessId::parse("a:b:c:7:99.1"), Some(id));
        for bad in ["", ":1:2", "h:x:2", "h:1:y", "h:1", "h:1:2.z"] {
            assert_eq!(ProcessId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_split_at_the_first_separator() {
        let names = KindNames::new();
        for kind in all_kinds() {
            let f = field(&kind.prefix(), "[\"a\", \"a\", {\"x\": \"1\\t2\"}, \"\"]");
            assert_eq!(
                names.split(f.as_bytes()),
                Some((kind, &f.as_bytes()[kind.prefix().len() + 1..]))
            );
            assert!(!kind.prefix().contains(SEP));
        }
        // A raw tab inside the series key stays in the series key.
        assert_eq!(
            names.split(b"counter\tx\ty"),
            Some((Kind::Counter, &b"x\ty"[..]))
        );
        for bad in [
            &b"counter"[..],
            b"",
            b"\tx",
            b"gauge_nope\tx",
            b"Counter\tx",
        ] {
            assert_eq!(names.split(bad), None);
        }
    }

    #[test]
    fn values_round_trip() {
        let mr = Kind::Gauge(GaugeMode::MostRecent);
        for v in [0.0, 0.1, 1e300, -3.5, 1.0 / 3.0, f64::INFINITY] {
            let s = fmt_value(Kind::Counter, v, 0.0);
            assert_eq!(parse_value(Kind::Counter, s.as_bytes()), Some((v, 0.0)));
            let s = fmt_value(mr, v, 1.7e9 + 0.123);
            assert_eq!(parse_value(mr, s.as_bytes()), Some((v, 1.7e9 + 0.123)));
        }
        assert_eq!(parse_value(Kind::Counter, b"1e+20"), Some((1e20, 0.0)));
        assert_eq!(
            parse_value(Kind::Counter, b"0.10000000000000001"),
            Some((0.1, 0.0))
        );
        assert_eq!(parse_value(Kind::Counter, b"garbage"), None);
        assert_eq!(parse_value(mr, b"1"), None);
        assert_eq!(parse_value(Kind::Counter, &[0xff, 0xfe]), None);
    }

    #[test]
    fn native_counts_round_trip_as_integers() {
        let n = Kind::Native;
        for c in [0u64, 1, 4096, (1 << 53) + 1, u64::MAX] {
            let word = f64::from_bits(c);
            let s = fmt_value(n, word, 0.0);
            assert_eq!(s, c.to_string());
            let (back, ts) = parse_value(n, s.as_bytes()).unwrap();
            assert_eq!((back.to_bits(), ts), (c, 0.0));
        }
        // The fold's digit-string sums may pass u64::MAX: saturated, not garbage.
        let (big, _) = parse_value(n, b"99999999999999999999999").unwrap();
        assert_eq!(big.to_bits(), u64::MAX);
        for bad in [&b""[..], b"1.5", b"-1", b"+1", b"1e3", b"nan", b"x"] {
            assert_eq!(parse_value(n, bad), None, "{bad:?}");
        }
        let word = |c: u64| f64::from_bits(c);
        assert_eq!(minus(n, word(10), word(3)).to_bits(), 7);
        assert_eq!(minus(n, word(3), word(10)).to_bits(), 0);
        assert_eq!(minus(Kind::Counter, 10.0, 3.0), 7.0);
    }
}

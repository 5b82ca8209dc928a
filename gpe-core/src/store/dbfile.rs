//! The `.db` file format (Python `prometheus_client` `mmap_dict.py`) and file names.
//!
//! Reading and writing whole files here is plain safe code; the live shared-memory side is in
//! `sys::mmap`.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::GaugeMode;

/// Where entries start: `used: i32` then 4 bytes of padding.
pub(crate) const HEADER: usize = 8;
/// Size of a new file, as Python.
pub(crate) const INITIAL_SIZE: usize = 1 << 16;

/// One entry of a file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: f64,
    pub(crate) timestamp: f64,
}

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Corrupt {
    TooShort(usize),
    BadUsed { used: i64, len: usize },
    BadEntry { at: usize, reason: &'static str },
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corrupt::TooShort(n) => write!(f, "file is {n} bytes, shorter than the 8-byte header"),
            Corrupt::BadUsed { used, len } => {
                write!(
                    f,
                    "header says {used} bytes are used but the file has {len}"
                )
            }
            Corrupt::BadEntry { at, reason } => write!(f, "bad entry at byte {at}: {reason}"),
        }
    }
}

/// Bytes an entry with a key of `key_len` bytes takes: length, padded key, value, timestamp.
pub(crate) fn entry_len(key_len: usize) -> usize {
    4 + padded_key_len(key_len) + 16
}

/// Python's padding: `n + (8 - (n + 4) % 8)` (a full 8 bytes when already aligned).
pub(crate) fn padded_key_len(key_len: usize) -> usize {
    key_len + (8 - (key_len + 4) % 8)
}

/// Serialise one entry (key, padding with spaces, value, timestamp) into `out`.
pub(crate) fn write_entry(out: &mut Vec<u8>, key: &str, value: f64, timestamp: f64) {
    let n = key.len();
    out.extend_from_slice(&(n as i32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.resize(out.len() + padded_key_len(n) - n, b' ');
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
}

/// A whole file's bytes for `entries`, padded to at least [`INITIAL_SIZE`].
pub(crate) fn encode_file(entries: &[Entry]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    for e in entries {
        write_entry(&mut out, &e.key, e.value, e.timestamp);
    }
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_le_bytes());
    if out.len() < INITIAL_SIZE {
        out.resize(INITIAL_SIZE, 0);
    }
    out
}

/// An entry borrowed from a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RawEntry<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: f64,
    pub(crate) timestamp: f64,
}

impl RawEntry<'_> {
    pub(crate) fn to_owned_entry(self) -> Entry {
        Entry {
            key: self.key.to_owned(),
            value: self.value,
            timestamp: self.timestamp,
        }
    }
}

/// An entry borrowed from a file's bytes, its key not yet checked to be UTF-8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RawBytes<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) value: f64,
    pub(crate) timestamp: f64,
    /// Where the entry starts, for [`Corrupt::BadEntry`].
    pub(crate) at: usize,
}

impl<'a> RawBytes<'a> {
    /// The key as text, or why the file is corrupt.
    pub(crate) fn key_str(&self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.key).map_err(|_| Corrupt::BadEntry {
            at: self.at,
            reason: "key is not UTF-8",
        })
    }
}

/// Parse a file's bytes. Never panics, whatever the bytes.
pub(crate) fn parse(data: &[u8]) -> Result<Vec<RawEntry<'_>>, Corrupt> {
    parse_bytes(data)?
        .into_iter()
        .map(|e| {
            Ok(RawEntry {
                key: e.key_str()?,
                value: e.value,
                timestamp: e.timestamp,
            })
        })
        .collect()
}

/// [`parse`], leaving the keys' UTF-8 check to the caller ([`RawBytes::key_str`]): a scrape
/// compares most keys with the ones it read last time, and checks only the others.
pub(crate) fn parse_bytes(data: &[u8]) -> Result<Vec<RawBytes<'_>>, Corrupt> {
    if data.len() < HEADER {
        return Err(Corrupt::TooShort(data.len()));
    }
    let used = i32::from_le_bytes([data[0], data[1], data[2], data[3]]) as i64;
    if used == 0 {
        // A file created but never written to (Python initialises `used` lazily).
        return Ok(Vec::new());
    }
    if used < HEADER as i64 || used as usize > data.len() {
        return Err(Corrupt::BadUsed {
            used,
            len: data.len(),
        });
    }
    let used = used as usize;
    let mut entries = Vec::new();
    let mut pos = HEADER;
    while pos < used {
        let at = pos;
        let bad = |reason| Corrupt::BadEntry { at, reason };
        if pos + 4 > used {
            return Err(bad("length runs past the used size"));
        }
        let n = i32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        if n <= 0 {
            return Err(bad("key length is not positive"));
        }
        let n = n as usize;
        let end = pos
            .checked_add(entry_len(n))
            .ok_or_else(|| bad("key length overflows"))?;
        if end > used {
            return Err(bad("entry runs past the used size"));
        }
        let key = &data[pos + 4..pos + 4 + n];
        let vpos = pos + 4 + padded_key_len(n);
        let value = f64::from_le_bytes(data[vpos..vpos + 8].try_into().map_err(|_| bad("value"))?);
        let timestamp = f64::from_le_bytes(
            data[vpos + 8..vpos + 16]
                .try_into()
                .map_err(|_| bad("value"))?,
        );
        entries.push(RawBytes {
            key,
            value,
            timestamp,
            at,
        });
        pos = end;
    }
    Ok(entries)
}

/// Read the used part of a file into `buf` (Python's `read_all_values_from_file`).
pub(crate) fn read_used(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    buf.clear();
    let mut head = [0u8; 8];
    let n = read_full(&mut f, &mut head)?;
    buf.extend_from_slice(&head[..n]);
    if n < 8 {
        return Ok(());
    }
    let used = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if used > 8 {
        let want = used as usize - 8;
        (&mut f).take(want as u64).read_to_end(buf)?;
    }
    Ok(())
}

fn read_full(f: &mut File, out: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < out.len() {
        match f.read(&mut out[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What kind of values a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Counter,
    Histogram,
    Summary,
    Gauge(GaugeMode),
    /// Native histogram buckets (`native_<pid>.ndb`: Python does not read them).
    Native,
    /// Exemplars (`exemplar_<pid>.ndb`).
    Exemplar,
}

impl Kind {
    /// The file name prefix: `counter`, `histogram`, `summary`, `gauge_{mode}`.
    pub(crate) fn prefix(self) -> String {
        match self {
            Kind::Counter => "counter".to_owned(),
            Kind::Histogram => "histogram".to_owned(),
            Kind::Summary => "summary".to_owned(),
            Kind::Gauge(m) => format!("gauge_{m}"),
            Kind::Native => "native".to_owned(),
            Kind::Exemplar => "exemplar".to_owned(),
        }
    }

    /// The file name extension: `db`, or `ndb` for the kinds Python must not read (its
    /// collector reads `*.db` and would not know their samples).
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Kind::Native | Kind::Exemplar => "ndb",
            _ => "db",
        }
    }
}

/// Whose values a file holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Pid(u32),
    /// Compacted values of dead processes.
    Archive,
    /// Anything else Python would also read (`counter_foo.db`).
    Other(String),
}

impl Owner {
    fn parse(owner: &str) -> Owner {
        match owner {
            "archive" => Owner::Archive,
            o => match o.parse::<u32>() {
                Ok(pid) => Owner::Pid(pid),
                Err(_) => Owner::Other(o.to_owned()),
            },
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Pid(p) => write!(f, "{p}"),
            Owner::Archive => f.write_str("archive"),
            Owner::Other(s) => f.write_str(s),
        }
    }
}

/// A parsed file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FileName {
    pub(crate) kind: Kind,
    pub(crate) owner: Owner,
}

impl FileName {
    pub(crate) fn new(kind: Kind, owner: Owner) -> Self {
        FileName { kind, owner }
    }

    pub(crate) fn file_name(&self) -> String {
        format!(
            "{}_{}.{}",
            self.kind.prefix(),
            self.owner,
            self.kind.extension()
        )
    }

    /// Parse `counter_123.db`, `gauge_livesum_123.db`, `histogram_archive.db`,
    /// `native_123.ndb`.
    pub(crate) fn parse(path: &Path) -> Option<FileName> {
        let name = path.file_name()?.to_str()?;
        if let Some(rest) = name.strip_suffix(".ndb") {
            let (kind, owner) = match rest.split_once('_')? {
                ("native", owner) => (Kind::Native, owner),
                ("exemplar", owner) => (Kind::Exemplar, owner),
                _ => return None,
            };
            return Some(FileName::new(kind, Owner::parse(owner)));
        }
        let name = name.strip_suffix(".db")?;
        let (typ, rest) = name.split_once('_')?;
        let (kind, owner) = match typ {
            "counter" => (Kind::Counter, rest),
            "histogram" => (Kind::Histogram, rest),
            "summary" => (Kind::Summary, rest),
            "gauge" => {
                let (mode, owner) = rest.split_once('_')?;
                (Kind::Gauge(mode.parse().ok()?), owner)
            }
            _ => return None,
        };
        Some(FileName {
            kind,
            owner: Owner::parse(owner),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_matches_python() {
        assert_eq!(padded_key_len(4), 12); // (4+4)%8 == 0 -> a full 8 bytes of padding
        assert_eq!(padded_key_len(3), 4);
        assert_eq!(padded_key_len(5), 12);
        for n in 1..64 {
            assert_eq!((4 + padded_key_len(n)) % 8, 0);
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let entries = vec![
            Entry {
                key: "k1".into(),
                value: 1.5,
                timestamp: 0.0,
            },
            Entry {
                key: "longer key".into(),
                value: -2.0,
                timestamp: 3.0,
            },
        ];
        let bytes = encode_file(&entries);
        let parsed: Vec<Entry> = parse(&bytes)
            .unwrap()
            .into_iter()
            .map(RawEntry::to_owned_entry)
            .collect();
        assert_eq!(parsed, entries);
        assert!(parse(&[]).is_err());
        assert!(parse(&bytes[..20]).is_err());
        let mut bad = bytes.clone();
        bad[8] = 0xff;
        bad[9] = 0xff;
        assert!(parse(&bad).is_err());
        // Any bytes at all: no panic.
        let mut x: u64 = 1;
        for _ in 0..2000 {
            let mut junk = bytes.clone();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % 200;
                junk[i] = (x >> 32) as u8;
            }
            let _ = parse(&junk);
        }
    }

    #[test]
    fn file_names() {
        let f = FileName::parse(Path::new("/d/gauge_livesum_42.db")).unwrap();
        assert_eq!(f.kind, Kind::Gauge(GaugeMode::LiveSum));
        assert_eq!(f.owner, Owner::Pid(42));
        assert_eq!(f.file_name(), "gauge_livesum_42.db");
        let f = FileName::parse(Path::new("counter_archive.db")).unwrap();
        assert_eq!(f.owner, Owner::Archive);
        assert!(FileName::parse(Path::new("counter_1.db.tmp")).is_none());
        assert!(FileName::parse(Path::new("gauge_bogus_1.db")).is_none());
        assert!(FileName::parse(Path::new("foo_1.db")).is_none());
        let f = FileName::parse(Path::new("native_7.ndb")).unwrap();
        assert_eq!((f.kind, &f.owner), (Kind::Native, &Owner::Pid(7)));
        assert_eq!(f.file_name(), "native_7.ndb");
        assert!(FileName::parse(Path::new("native_7.db")).is_none());
        assert!(FileName::parse(Path::new("native_7.ndb.tmp")).is_none());
    }
}

//! Compaction: folding dead processes' files into archive files.
//!
//! Every process that ever lived leaves files; without compaction, pid churn (max-requests
//! restarts, crashes) makes every scrape slower and the directory larger without bound. Compaction
//! merges a dead process's counters, histograms and `min`/`max`/`sum`/`mostrecent` gauges into
//! `{kind}_archive.db` (same format, so Python reads it too) and removes its files; `live*` gauges
//! and `all` gauges of dead processes are removed (they describe a process that no longer
//! exists).
//!
//! Scrapes hold a shared `flock` on `DIR/.gpe.lock` while they read; compaction holds it
//! exclusively while it replaces the archive and removes the folded files, so no scrape sees a
//! value twice or misses it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;
use crate::merge::{Merged, Rule};
use crate::store::dbfile::{self, Entry, FileName, Kind, Owner};
use crate::store::GaugeMode;

/// The name of the lock file in a store directory.
pub const LOCK_FILE: &str = ".gpe.lock";

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Files whose values were merged into an archive.
    pub folded: usize,
    /// Files removed without merging (`live*` and `all` gauges of dead processes).
    pub dropped: usize,
}

/// A held `flock` on the directory's lock file (none when the directory is read-only to us).
#[derive(Debug)]
pub(crate) struct DirLock(#[allow(dead_code)] Option<Flock<File>>);

impl DirLock {
    fn open(dir: &Path) -> Option<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .or_else(|_| File::open(dir.join(LOCK_FILE)))
            .ok()
    }

    /// A shared lock, waiting for a running compaction.
    pub(crate) fn shared(dir: &Path) -> DirLock {
        DirLock(Self::open(dir).and_then(|f| Flock::lock(f, FlockArg::LockShared).ok()))
    }

    /// The exclusive lock; `None` when `wait` is false and someone holds it.
    fn exclusive(dir: &Path, wait: bool) -> Result<Option<DirLock>, Error> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(file, arg) {
            Ok(l) => Ok(Some(DirLock(Some(l)))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
            Err((_, e)) => Err(Error::io("locking", &path, e.into())),
        }
    }
}

/// Fold dead processes' files of `dir`. Returns `None` if `wait` is false and the lock is busy.
pub(crate) fn compact(
    dir: &Path,
    is_live: impl Fn(u32) -> bool,
    wait: bool,
) -> Result<Option<CompactReport>, Error> {
    let own = std::process::id();
    let dead = |dir: &Path| -> Result<Vec<(PathBuf, FileName)>, Error> {
        let listing = std::fs::read_dir(dir).map_err(|e| Error::io("listing directory", dir, e))?;
        Ok(listing
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let name = FileName::parse(&path)?;
                match name.owner {
                    Owner::Pid(pid) if pid != own && !is_live(pid) => Some((path, name)),
                    _ => None,
                }
            })
            .collect())
    };
    // Cheap check first, so scrapes of a healthy directory never take the exclusive lock.
    if dead(dir)?.is_empty() {
        return Ok(Some(CompactReport::default()));
    }
    let Some(_lock) = DirLock::exclusive(dir, wait)? else {
        return Ok(None);
    };
    let mut report = CompactReport::default();
    let mut groups: BTreeMap<Kind, Vec<PathBuf>> = BTreeMap::new();
    for (path, name) in dead(dir)? {
        match name.kind {
            // A dead process's exemplars are dropped: they are samples of recent requests, and
            // the living processes write newer ones.
            Kind::Exemplar => {
                remove(&path);
                report.dropped += 1;
            }
            Kind::Gauge(mode) if mode.is_live() || mode == GaugeMode::All => {
                remove(&path);
                report.dropped += 1;
            }
            kind => groups.entry(kind).or_default().push(path),
        }
    }
    for (kind, paths) in groups {
        let archive = dir.join(FileName::new(kind, Owner::Archive).file_name());
        let mut merged: Vec<Entry> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add = |entries: Vec<dbfile::RawEntry<'_>>| {
            for e in entries {
                match index.get(e.key) {
                    Some(&i) => combine(kind, &mut merged[i], e.value, e.timestamp),
                    None => {
                        index.insert(e.key.to_owned(), merged.len());
                        merged.push(e.to_owned_entry());
                    }
                }
            }
        };
        match std::fs::read(&archive) {
            Ok(bytes) => match dbfile::parse(&bytes) {
                Ok(entries) => add(entries),
                Err(why) => {
                    let aside = archive.with_extension("db.corrupt");
                    tracing::error!(file = %archive.display(), %why, moved_to = %aside.display(), "archive is corrupt; moving it aside and starting a new one");
                    let _ = std::fs::rename(&archive, &aside);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("reading archive", &archive, e)),
        }
        let mut folded = Vec::new();
        for path in paths {
            match std::fs::read(&path) {
                Ok(bytes) => match dbfile::parse(&bytes) {
                    Ok(entries) => {
                        add(entries);
                        folded.push(path);
                    }
                    Err(why) => {
                        let aside = path.with_extension("db.corrupt");
                        tracing::warn!(file = %path.display(), %why, moved_to = %aside.display(), "dead process's metrics file is corrupt; moving it aside");
                        let _ = std::fs::rename(&path, &aside);
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("reading metrics file", &path, e)),
            }
        }
        let tmp = archive.with_extension("db.tmp");
        let bytes = dbfile::encode_file(&merged);
        // Written beside and renamed over: other processes see the old archive or the new one,
        // never half of one. No fsync: the directory's contents only matter while this boot's
        // processes run (the master empties it at start), and an fsync can block for seconds on
        // a busy disk — in the master's loop, that stalled reaping and respawning.
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            std::fs::rename(&tmp, &archive)
        };
        write().map_err(|e| Error::io("writing archive", &archive, e))?;
        for path in &folded {
            remove(path);
        }
        report.folded += folded.len();
    }
    tracing::debug!(dir = %dir.display(), folded = report.folded, dropped = report.dropped, "compacted dead processes' metrics");
    let health = crate::health::get();
    health.compaction_runs.inc();
    health.files_folded.inc_by(report.folded as u64);
    health
        .archive_bytes
        .set(i64::try_from(archive_size(dir)).unwrap_or(i64::MAX));
    Ok(Some(report))
}

/// The size of every archive file in `dir`, in bytes.
fn archive_size(dir: &Path) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    listing
        .flatten()
        .filter(|e| FileName::parse(&e.path()).is_some_and(|n| matches!(n.owner, Owner::Archive)))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Fold another process's value of an entry into `into`, by the Python rules of `kind`.
fn combine(kind: Kind, into: &mut Entry, value: f64, ts: f64) {
    let mut merged = Merged::new(into.value, into.timestamp);
    merged.add(Rule::of(kind), value, ts);
    (into.value, into.timestamp) = (merged.value, merged.timestamp);
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove compacted metrics file");
        }
    }
}

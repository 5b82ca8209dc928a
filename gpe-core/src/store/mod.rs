//! The per-process value store: one memory-mapped file per metric kind in the store directory.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::error::Error;
use crate::sys::mmap::{Region, Slot};
use dbfile::{FileName, Kind, Owner};

pub(crate) mod dbfile;
pub(crate) mod key;
mod mode;
mod series;

pub use mode::GaugeMode;
pub(crate) use series::SeriesId;

/// A process's view of a multiprocess directory: where its metric values live.
///
/// There is one store per directory per process; [`Store::open`] on a directory that is already
/// open returns the same store. Cloning is cheap.
///
/// ```
/// # fn main() -> Result<(), gpe_core::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// assert_eq!(store.pid(), std::process::id());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    pid: u32,
    files: Mutex<HashMap<Kind, DbFile>>,
    /// Metric shapes registered through this store: name -> signature.
    registered: Mutex<HashMap<String, String>>,
}

#[derive(Debug)]
struct DbFile {
    path: PathBuf,
    file: File,
    region: Arc<Region>,
    used: usize,
    index: HashMap<String, usize>,
}

fn open_stores() -> &'static Mutex<HashMap<(PathBuf, u32), Weak<Inner>>> {
    static STORES: OnceLock<Mutex<HashMap<(PathBuf, u32), Weak<Inner>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

impl Store {
    /// Open (creating it if needed) the store directory `dir` for this process.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, Error> {
        Store::open_as(dir, std::process::id())
    }

    /// Open the store as if this process had pid `pid`. Only for benchmarks and tests that need
    /// the files of many processes from one: a real process must use [`Store::open`].
    #[doc(hidden)]
    pub fn open_as(dir: impl AsRef<Path>, pid: u32) -> Result<Store, Error> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io("resolving directory", dir, e))?;
        let mut stores = open_stores().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = stores.get(&(dir.clone(), pid)).and_then(Weak::upgrade) {
            return Ok(Store { inner });
        }
        stores.retain(|_, w| w.strong_count() > 0);
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            pid,
            files: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        });
        stores.insert((dir, pid), Arc::downgrade(&inner));
        tracing::debug!(dir = %inner.dir.display(), pid, "opened metrics store");
        Ok(Store { inner })
    }

    /// The store for `PROMETHEUS_MULTIPROC_DIR` (or gpe's default directory), opened once.
    ///
    /// # Errors
    /// When the configuration is invalid or the directory cannot be created.
    pub fn from_env() -> Result<Store, Error> {
        let config = crate::expose::config::Config::from_env()?;
        Store::open(config.multiproc_dir())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The pid whose files this store writes.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Record that metric `name` has the shape `signature`; a second registration with another
    /// shape is an error (the same shape is fine: handles then share slots).
    pub(crate) fn register(&self, name: &str, signature: String) -> Result<(), Error> {
        let mut reg = self
            .inner
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match reg.get(name) {
            Some(existing) if *existing != signature => Err(Error::Conflict(name.to_owned())),
            Some(_) => Ok(()),
            None => {
                reg.insert(name.to_owned(), signature);
                Ok(())
            }
        }
    }

    /// The slot of series `key` in the file of `kind`, created (value 0) if new.
    pub(crate) fn slot(&self, kind: Kind, key: &str) -> Result<Slot, Error> {
        let mut files = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
        let file = match files.entry(kind) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let name = FileName::new(kind, Owner::Pid(self.inner.pid)).file_name();
                v.insert(DbFile::open(self.inner.dir.join(name))?)
            }
        };
        file.slot(key)
    }
}

impl DbFile {
    /// A new file at `path`, sized and with its header written before it appears there (made
    /// beside it as `*.db.tmp`, which no collector reads, then renamed): a collector listing the
    /// directory never sees it empty or half-made.
    fn create(path: &Path) -> Result<File, Error> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("creating metrics file", &tmp, e))?;
        file.set_len(dbfile::INITIAL_SIZE as u64)
            .map_err(|e| Error::io("sizing metrics file", &tmp, e))?;
        let mut header = [0u8; dbfile::HEADER];
        header[..4].copy_from_slice(&(dbfile::HEADER as u32).to_ne_bytes());
        std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)
            .map_err(|e| Error::io("writing metrics file header", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("naming metrics file", path, e))?;
        Ok(file)
    }

    fn open(path: PathBuf) -> Result<DbFile, Error> {
        let (file, fresh) = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => (file, false), // left by an earlier process with our pid
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (DbFile::create(&path)?, true),
            Err(e) => return Err(Error::io("opening metrics file", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", &path, e))?
            .len() as usize;
        if len < dbfile::INITIAL_SIZE {
            file.set_len(dbfile::INITIAL_SIZE as u64)
                .map_err(|e| Error::io("sizing metrics file", &path, e))?;
        }
        let region = Region::map(&file).map_err(|e| Error::io("mapping metrics file", &path, e))?;
        let mut index = HashMap::new();
        let mut used = region.used();
        if fresh {
            // Made by `create`, header included: nothing to read back.
        } else if used == 0 {
            used = dbfile::HEADER;
            region.publish_used(used);
        } else {
            // A file left by an earlier process with our pid: keep its series, as Python does.
            let bytes =
                std::fs::read(&path).map_err(|e| Error::io("reading metrics file", &path, e))?;
            match dbfile::parse(&bytes) {
                Ok(entries) => {
                    let mut pos = dbfile::HEADER;
                    for e in entries {
                        let value_at = pos + 4 + dbfile::padded_key_len(e.key.len());
                        pos += dbfile::entry_len(e.key.len());
                        index.insert(e.key.to_owned(), value_at);
                    }
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), %why, "existing metrics file is corrupt; starting it afresh");
                    used = dbfile::HEADER;
                    region.publish_used(used);
                }
            }
        }
        Ok(DbFile {
            path,
            file,
            region,
            used,
            index,
        })
    }

    fn slot(&mut self, key: &str) -> Result<Slot, Error> {
        if let Some(&at) = self.index.get(key) {
            return self.slot_at(at);
        }
        let mut entry = Vec::with_capacity(dbfile::entry_len(key.len()));
        dbfile::write_entry(&mut entry, key, 0.0, 0.0);
        let end = self.used + entry.len();
        if end > i32::MAX as usize {
            return Err(Error::FileFull(self.path.clone()));
        }
        if end > self.region.len() {
            let mut cap = self.region.len().max(dbfile::INITIAL_SIZE);
            while cap < end {
                cap *= 2;
            }
            let cap = cap.min(i32::MAX as usize);
            self.file
                .set_len(cap as u64)
                .map_err(|e| Error::io("growing metrics file", &self.path, e))?;
            self.region = Region::map(&self.file)
                .map_err(|e| Error::io("mapping metrics file", &self.path, e))?;
            tracing::debug!(file = %self.path.display(), bytes = cap, "grew metrics file");
        }
        if !self.region.write_unpublished(self.used, &entry) {
            return Err(Error::FileFull(self.path.clone()));
        }
        let value_at = self.used + 4 + dbfile::padded_key_len(key.len());
        self.used = end;
        self.region.publish_used(end);
        self.index.insert(key.to_owned(), value_at);
        self.slot_at(value_at)
    }

    fn slot_at(&self, at: usize) -> Result<Slot, Error> {
        self.region
            .slot(at)
            .ok_or_else(|| Error::FileFull(self.path.clone()))
    }
}

/// Prepare a store directory for a fresh server start: create it, and remove the `.db` (and
/// gpe's `.ndb`) files a previous run left (their counts would otherwise be added to the new run's).
///
/// # Errors
/// When the directory cannot be created or a file cannot be removed.
pub fn prepare_dir(dir: impl AsRef<Path>) -> Result<(), Error> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing directory", dir, e))?;
    let mut removed = 0usize;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ours = [".db", ".db.tmp", ".ndb", ".ndb.tmp"];
        if ours.iter().any(|end| name.ends_with(end)) {
            std::fs::remove_file(&path).map_err(|e| Error::io("removing stale file", &path, e))?;
            removed += 1;
        }
    }
    tracing::info!(dir = %dir.display(), removed, "prepared metrics directory");
    Ok(())
}

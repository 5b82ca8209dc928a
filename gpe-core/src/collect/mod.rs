//! The collector: every process's files merged into one exposition.

use crate::health::Skipped;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use prometheus::proto::{self, MetricFamily, MetricType};

use crate::error::Error;
use crate::exemplar::ExemplarSet;
use crate::merge::{self, label_key, Buckets, Merged, Rule, Summary};
use crate::native::{self, NativeSet};
use crate::store::dbfile::{self, FileName, Kind, Owner};
use crate::store::key;
use compact::{CompactReport, DirLock};

pub mod compact;

/// A set of living pids, shared with whoever knows them (the master updates it from its child
/// table). Cloning shares the set.
///
/// ```
/// let live = gpe_core::LivePids::new();
/// live.insert(42);
/// assert!(live.contains(42));
/// live.replace([7, 8]);
/// assert!(!live.contains(42));
/// ```
#[derive(Debug, Clone, Default)]
pub struct LivePids(Arc<RwLock<HashSet<u32>>>);

impl LivePids {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mark `pid` alive.
    pub fn insert(&self, pid: u32) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
    }

    /// Mark `pid` dead.
    pub fn remove(&self, pid: u32) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// Replace the whole set.
    pub fn replace(&self, pids: impl IntoIterator<Item = u32>) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.clear();
        set.extend(pids);
    }

    /// Whether `pid` is in the set.
    pub fn contains(&self, pid: u32) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&pid)
    }
}

/// How the collector decides which processes are alive.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Liveness {
    /// Ask the kernel (`kill(pid, 0)`). Right when no master tells us; a zombie counts as alive.
    #[default]
    PidCheck,
    /// Exactly these pids (and the collecting process itself) are alive.
    Pids(LivePids),
}

impl Liveness {
    /// Whether `pid` is alive.
    pub fn is_live(&self, pid: u32) -> bool {
        if pid == std::process::id() {
            return true;
        }
        match self {
            Liveness::PidCheck => pid_alive(pid),
            Liveness::Pids(set) => set.contains(pid),
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// A decoded series key, cached across scrapes.
#[derive(Debug)]
struct Decoded {
    metric: String,
    sample: String,
    labels: Vec<(String, String)>,
    /// For `_bucket` samples: the labels without `le`, and `le` parsed.
    le: Option<(Vec<(String, String)>, f64)>,
    help: String,
    /// For the entries of native histogram files: which bucket (or the zero bucket) it is;
    /// `labels` are then the series' labels, without the store's.
    native: Option<native::Part>,
    /// For the entries of exemplar files: which of an exemplar's four entries it is; `labels`
    /// are then the decorated sample's (a bucket's include `le`).
    exemplar: Option<usize>,
    /// Interned identity of the series this sample belongs to: (sample, labels) for scalars,
    /// (metric, labels without `le`) for histogram buckets and sums. Samples of different
    /// processes with the same id are merged.
    group: u32,
}

/// Decoded keys and interned series identities, kept across scrapes.
#[derive(Debug, Default)]
struct KeyCache {
    raw: HashMap<Box<str>, Option<Arc<Decoded>>>,
    groups: HashMap<(String, Vec<(String, String)>), u32>,
    /// Per file, the keys in file order as last seen: files are append-only, so the i-th entry
    /// is almost always the same key as last scrape, checked with one comparison, no hashing.
    by_file: HashMap<PathBuf, Vec<(Box<str>, Option<Arc<Decoded>>)>>,
}

impl KeyCache {
    fn len(&self) -> usize {
        self.raw.len()
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.groups.clear();
        self.by_file.clear();
    }

    fn get_or_decode(&mut self, raw: &str) -> Option<Arc<Decoded>> {
        if let Some(d) = self.raw.get(raw) {
            return d.clone();
        }
        let d = decode(raw, &mut self.groups);
        self.raw.insert(raw.into(), d.clone());
        d
    }
}
const KEY_CACHE_LIMIT: usize = 1 << 20;

/// Merges the `.db` files of every process in a directory (plus, optionally, an in-process
/// `prometheus::Registry`) into one set of metric families.
///
/// Counters and histograms are summed across processes; gauges are combined by their
/// [`GaugeMode`](crate::GaugeMode). Files of processes that died are folded into archive files ("compaction") so that
/// the number of files stays bounded by the living processes while counters never go down.
///
/// ```
/// use gpe_core::{Counter, MultiProcessCollector, Store};
/// # fn main() -> Result<(), gpe_core::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path())?;
/// Counter::new("hits_total", "Hits.", &store)?.inc_by(5.0);
/// let families = MultiProcessCollector::new(dir.path()).gather();
/// assert_eq!(families[0].name(), "hits_total");
/// assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 5.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MultiProcessCollector {
    dir: PathBuf,
    liveness: Liveness,
    registry: Option<prometheus::Registry>,
    self_metrics: bool,
    auto_compact: bool,
    cache: Mutex<KeyCache>,
}

impl MultiProcessCollector {
    /// A collector over `dir`, with pid-check liveness and compaction at scrape time.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MultiProcessCollector {
            dir: dir.into(),
            liveness: Liveness::PidCheck,
            registry: None,
            self_metrics: false,
            auto_compact: true,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    /// Use `liveness` to tell living processes from dead ones.
    #[must_use]
    pub fn with_liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    /// Also expose the metrics of this in-process registry (merged by family name, never twice).
    #[must_use]
    pub fn with_registry(mut self, registry: prometheus::Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Also expose gpe's own health metrics ([`crate::health`]): how this process's scrapes,
    /// compactions and Redis syncs are doing. gpe-master's and a standalone worker's `/metrics`
    /// do.
    #[must_use]
    pub fn with_self_metrics(mut self) -> Self {
        self.self_metrics = true;
        self
    }

    /// Whether a scrape first folds dead processes' files into the archive (default `true`).
    #[must_use]
    pub fn with_auto_compact(mut self, on: bool) -> Self {
        self.auto_compact = on;
        self
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The liveness in use.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Fold the files of dead processes into the archive now, waiting for running scrapes.
    ///
    /// # Errors
    /// When the directory cannot be listed or the archive cannot be written. Unreadable files
    /// are skipped with a warning, not an error.
    pub fn compact(&self) -> Result<CompactReport, Error> {
        compact::compact(&self.dir, |pid| self.liveness.is_live(pid), true)
            .map(Option::unwrap_or_default)
    }

    /// Read every file and merge: the families of one scrape, sorted by name.
    ///
    /// Never fails: a file that cannot be read is skipped with a warning naming it.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.scrape().families
    }

    /// [`gather`](Self::gather), with the native buckets of the histograms that have them
    /// (see [`native`]): what the `/metrics` server exposes.
    pub fn scrape(&self) -> crate::expose::Scrape {
        let started = std::time::Instant::now();
        if self.auto_compact {
            if let Err(e) = compact::compact(&self.dir, |pid| self.liveness.is_live(pid), false) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "compaction failed; scraping without it");
            }
        }
        let (mut families, natives, exemplars) = match self.read_files() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the metrics directory");
                Read::default()
            }
        };
        if let Some(registry) = &self.registry {
            for mf in registry.gather() {
                merge_family(&mut families, mf);
            }
        }
        let health = crate::health::get();
        let series: usize = families.values().map(|f| f.get_metric().len()).sum();
        health.series.set(i64::try_from(series).unwrap_or(i64::MAX));
        health
            .scrape_duration
            .observe(started.elapsed().as_secs_f64());
        if self.self_metrics {
            for mf in crate::health::registry().gather() {
                merge_family(&mut families, mf);
            }
        }
        let families = families
            .into_values()
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        crate::expose::Scrape::new(families, natives).with_exemplars(exemplars)
    }

    fn read_files(&self) -> Result<Read, Error> {
        let _lock = DirLock::shared(&self.dir);
        let mut files = Vec::new();
        let listing = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io("listing directory", &self.dir, e))?;
        for entry in listing.flatten() {
            let path = entry.path();
            if let Some(name) = FileName::parse(&path) {
                files.push((path, name));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));

        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > KEY_CACHE_LIMIT {
            cache.clear();
        }
        // Phase 1: every sample of every readable file, keys decoded (once, then cached).
        let mut samples: Vec<Sample> = Vec::new();
        let mut buf = Vec::new();
        let health = crate::health::get();
        let mut read = 0i64;
        for (path, name) in &files {
            if let (Kind::Gauge(mode), Owner::Pid(pid)) = (name.kind, &name.owner) {
                if mode.is_live() && !self.liveness.is_live(*pid) {
                    continue;
                }
            }
            if let Err(e) = dbfile::read_used(path, &mut buf) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable metrics file");
                    health.skipped(Skipped::Unreadable);
                }
                continue;
            }
            let entries = match dbfile::parse_bytes(&buf) {
                Ok(entries) => entries,
                Err(why) => {
                    tracing::warn!(file = %path.display(), %why, "skipping corrupt metrics file");
                    health.skipped(Skipped::Corrupt);
                    continue;
                }
            };
            let owner: Arc<str> = name.owner.to_string().into();
            let mut order = cache.by_file.remove(path).unwrap_or_default();
            order.truncate(entries.len());
            let first = samples.len();
            let mut corrupt = None;
            for (i, e) in entries.iter().enumerate() {
                let decoded = match order.get(i) {
                    // The key read at this place last time (checked then): most keys, most scrapes.
                    Some((k, d)) if k.as_bytes() == e.key => d.clone(),
                    _ => {
                        let key = match e.key_str() {
                            Ok(key) => key,
                            Err(why) => {
                                corrupt = Some(why);
                                break;
                            }
                        };
                        let known = cache.raw.contains_key(key);
                        let d = cache.get_or_decode(key);
                        if d.is_none() && !known {
                            tracing::warn!(file = %path.display(), key, "skipping a sample with an unreadable key");
                            health.skipped(Skipped::UnknownKey);
                        }
                        if i < order.len() {
                            order[i] = (key.into(), d.clone());
                        } else {
                            order.push((key.into(), d.clone()));
                        }
                        d
                    }
                };
                if let Some(d) = decoded {
                    samples.push((name.kind, Arc::clone(&owner), d, e.value, e.timestamp));
                }
            }
            cache.by_file.insert(path.clone(), order);
            if let Some(why) = corrupt {
                // As if the file had not parsed: none of its samples.
                samples.truncate(first);
                tracing::warn!(file = %path.display(), %why, "skipping corrupt metrics file");
                health.skipped(Skipped::Corrupt);
                continue;
            }
            read += 1;
        }
        health.files_read.set(read);
        let present: HashSet<&PathBuf> = files.iter().map(|(p, _)| p).collect();
        cache.by_file.retain(|p, _| present.contains(p));
        drop(cache);
        Ok(accumulate(&samples))
    }
}

impl prometheus::core::Collector for MultiProcessCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gather()
    }
}

fn decode(
    raw: &str,
    groups: &mut HashMap<(String, Vec<(String, String)>), u32>,
) -> Option<Arc<Decoded>> {
    let mut k = key::decode(raw)?;
    // gpe's own files (`.ndb`) mark their keys with labels of the store's.
    let native = if k.labels.contains_key(native::labels::SCHEMA) {
        Some(native::Part::take(&k.metric, &k.sample, &mut k.labels)?)
    } else {
        None
    };
    let exemplar = match k.labels.remove(crate::exemplar::PART) {
        Some(part) => Some(part.parse::<usize>().ok().filter(|p| *p < 4)?),
        None => None,
    };
    let labels: Vec<(String, String)> = k.labels.into_iter().collect();
    let (group, le) = if native.is_some() {
        // A native histogram's bucket: in the group of its histogram series.
        (
            merge::histogram_group(groups, &k.metric, labels.clone()),
            None,
        )
    } else if exemplar.is_some() {
        // One of the four entries of an exemplar: grouped by the sample it decorates.
        (
            merge::exemplar_group(groups, &k.sample, labels.clone()),
            None,
        )
    } else {
        let g = merge::sample_group(groups, &k.metric, &k.sample, &labels);
        let le = match g.le {
            Some(le) => Some((
                labels.iter().filter(|(n, _)| n != "le").cloned().collect(),
                le,
            )),
            // A bucket without a numeric `le` is skipped.
            None if k.sample.ends_with("_bucket") => return None,
            None => None,
        };
        (g.group, le)
    };
    Some(Arc::new(Decoded {
        metric: k.metric,
        sample: k.sample,
        labels,
        le,
        help: k.help,
        native,
        exemplar,
        group,
    }))
}

#[derive(Debug)]
struct FamAcc<'a> {
    kind: Kind,
    help: &'a str,
    /// (group, pid for the per-process gauge modes) -> (a representative sample, value)
    scalars: HashMap<(u32, Option<&'a str>), (&'a Decoded, Merged)>,
    /// group -> (a representative sample, buckets and sum)
    hists: HashMap<u32, (&'a Decoded, Buckets)>,
}

type Sample = (Kind, Arc<str>, Arc<Decoded>, f64, f64);

/// One native histogram series being merged (a file's count is a `u64` in the value word: see
/// [`Rule::Counts`]).
type NativeAcc<'a> = (&'a Decoded, native::NativeMerge);

/// One process's exemplar being read: its four entries as they come.
type ExemplarAcc<'a> = (&'a Decoded, [(f64, f64); 4]);

/// What the files of one scrape hold: families by name, native buckets and exemplars.
type Read = (BTreeMap<String, MetricFamily>, NativeSet, ExemplarSet);

fn accumulate(samples: &[Sample]) -> Read {
    let mut fams: HashMap<&str, FamAcc<'_>> = HashMap::new();
    let mut natives: HashMap<u32, NativeAcc<'_>> = HashMap::new();
    let mut exemplars: HashMap<(&str, u32), ExemplarAcc<'_>> = HashMap::new();
    for (kind, owner, d, value, ts) in samples {
        if let Some(part) = d.exemplar {
            let (_, parts) = exemplars
                .entry((&**owner, d.group))
                .or_insert_with(|| (d, [(0.0, 0.0); 4]));
            parts[part] = (*value, *ts);
            continue;
        }
        if let Some(part) = &d.native {
            let (_, merge) = natives
                .entry(d.group)
                .or_insert_with(|| (d, native::NativeMerge::default()));
            merge.add(part, value.to_bits());
            continue;
        }
        if matches!(kind, Kind::Native | Kind::Exemplar) {
            continue; // a key without the store's labels: not ours to read
        }
        let fam = match fams.entry(d.metric.as_str()) {
            MapEntry::Occupied(o) => o.into_mut(),
            MapEntry::Vacant(v) => v.insert(FamAcc {
                kind: *kind,
                help: &d.help,
                scalars: HashMap::new(),
                hists: HashMap::new(),
            }),
        };
        if !merge::same_type(fam.kind, *kind) {
            tracing::warn!(metric = %d.metric, "metric written with two different types; ignoring the second");
            continue;
        }
        if *kind == Kind::Histogram {
            let h = &mut fam
                .hists
                .entry(d.group)
                .or_insert_with(|| (d, Buckets::default()))
                .1;
            if let Some((_, le)) = &d.le {
                h.add_bucket(*le, *value);
            } else if d.sample.ends_with("_sum") {
                h.add_sum(*value);
            }
            continue;
        }
        let pid = match kind {
            Kind::Gauge(mode) if mode.per_process() => Some(&**owner),
            _ => None,
        };
        match fam.scalars.entry((d.group, pid)) {
            MapEntry::Vacant(v) => {
                v.insert((d, Merged::new(*value, *ts)));
            }
            MapEntry::Occupied(mut o) => o.get_mut().1.add(Rule::of(*kind), *value, *ts),
        }
    }
    let mut out = BTreeMap::new();
    for (metric, fam) in fams {
        let mf = build_family(metric, fam);
        out.insert(mf.name().to_owned(), mf);
    }
    let mut set = NativeSet::default();
    for (d, merge) in natives.into_values() {
        set.insert(&d.metric, d.labels.clone(), merge.finish());
    }
    let mut exemplar_set = ExemplarSet::default();
    for (d, parts) in exemplars.into_values() {
        let Some(e) = crate::exemplar::assemble(parts) else {
            continue;
        };
        // A bucket's exemplar belongs to the histogram family; a counter's to `<name>_total`.
        let (family, le) = match d.sample.strip_suffix("_bucket") {
            Some(m) if m == d.metric => (d.metric.as_str(), Some(())),
            _ => (d.sample.as_str(), None),
        };
        let mut labels = d.labels.clone();
        let le = match le {
            Some(()) => {
                let Some(at) = labels.iter().position(|(n, _)| n == "le") else {
                    continue;
                };
                let Ok(le) = labels.remove(at).1.parse::<f64>() else {
                    continue;
                };
                Some(le)
            }
            None => None,
        };
        exemplar_set.insert(family, labels, le, e);
    }
    (out, set, exemplar_set)
}

/// A series with `labels`, plus `pid` when given, sorted by name.
fn series(labels: &[(String, String)], pid: Option<&str>) -> proto::Metric {
    let mut v: Vec<(&str, &str)> = labels
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    if let Some(pid) = pid {
        v.push(("pid", pid));
        v.sort_unstable();
    }
    merge::series(&v)
}

fn build_family(metric: &str, fam: FamAcc<'_>) -> MetricFamily {
    let mut mf = merge::family(metric, fam.help, fam.kind);
    let mut metrics = Vec::new();
    match fam.kind {
        Kind::Counter | Kind::Gauge(_) => {
            for ((_, pid), (d, acc)) in fam.scalars {
                if merge::counted(fam.kind, &d.sample) {
                    metrics.push(merge::with_value(
                        series(&d.labels, pid),
                        fam.kind,
                        acc.value,
                    ));
                }
            }
        }
        Kind::Summary => {
            let mut by_labels: BTreeMap<Vec<(String, String)>, Summary> = BTreeMap::new();
            for (d, acc) in fam.scalars.into_values() {
                by_labels
                    .entry(d.labels.clone())
                    .or_default()
                    .add(&d.sample, acc.value);
            }
            for (labels, summary) in by_labels {
                let mut m = series(&labels, None);
                m.set_summary(summary.into_proto());
                metrics.push(m);
            }
        }
        // Native buckets are not families of their own (see `accumulate`).
        Kind::Native | Kind::Exemplar => {}
        Kind::Histogram => {
            for (d, h) in fam.hists.into_values() {
                let labels = match &d.le {
                    Some((rest, _)) => rest,
                    None => &d.labels,
                };
                let mut m = series(labels, None);
                m.set_histogram(h.into_proto());
                metrics.push(m);
            }
        }
    }
    merge::finish(&mut mf, metrics);
    mf
}

/// Add `mf` to `families`, merging with a family of the same name and type: a series whose
/// label set the family already has is folded into it (counters and histograms summed, a gauge
/// takes the registry's value), so no family and no series is emitted twice.
fn merge_family(families: &mut BTreeMap<String, MetricFamily>, mut mf: MetricFamily) {
    match families.entry(mf.name().to_owned()) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(mf);
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            let kind = mf.get_field_type();
            if o.get().get_field_type() != kind {
                tracing::warn!(metric = mf.name(), "a registry metric has the name of a multiprocess metric of another type; dropping it");
                return;
            }
            let target = o.get_mut().mut_metric();
            let mut index: HashMap<Vec<(String, String)>, usize> = target
                .iter()
                .enumerate()
                .map(|(i, m)| (label_key(m), i))
                .collect();
            for m in mf.take_metric() {
                let key = label_key(&m);
                match index.get(&key) {
                    Some(&i) => fold_series(&mut target[i], m, kind),
                    None => {
                        index.insert(key, target.len());
                        target.push(m);
                    }
                }
            }
            target.sort_by_cached_key(label_key);
        }
    }
}

/// Fold the registry's series `m` into the multiprocess series `into` (same name, labels, type).
fn fold_series(into: &mut proto::Metric, m: proto::Metric, kind: MetricType) {
    match kind {
        MetricType::COUNTER => {
            let mut c = proto::Counter::default();
            c.set_value(into.get_counter().get_value() + m.get_counter().get_value());
            into.set_counter(c);
        }
        MetricType::HISTOGRAM => {
            let (a, b) = (into.get_histogram(), m.get_histogram());
            let same_bounds = a.get_bucket().len() == b.get_bucket().len()
                && a.get_bucket()
                    .iter()
                    .zip(b.get_bucket())
                    .all(|(x, y)| x.upper_bound() == y.upper_bound());
            if !same_bounds {
                tracing::warn!("a registry histogram has the name and labels of a multiprocess one with other buckets; keeping the multiprocess one");
                return;
            }
            let mut h = proto::Histogram::default();
            h.set_sample_count(a.get_sample_count() + b.get_sample_count());
            h.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
            h.set_bucket(
                a.get_bucket()
                    .iter()
                    .zip(b.get_bucket())
                    .map(|(x, y)| {
                        let mut bucket = proto::Bucket::default();
                        bucket.set_upper_bound(x.upper_bound());
                        bucket.set_cumulative_count(x.cumulative_count() + y.cumulative_count());
                        bucket
                    })
                    .collect(),
            );
            into.set_histogram(h);
        }
        // A gauge, summary or untyped value is one reading: the in-process registry's is current.
        _ => *into = m,
    }
}

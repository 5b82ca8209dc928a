//! The collector over Redis: every host's processes and archives, merged like the file collector.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::redis::Value;
use prometheus::proto::{self, MetricFamily};

use super::keys::{self, Keys, ProcessId};
use super::outage::Outage;
use super::pool::Pool;
use super::runner::Runner;
use super::{lua, RedisConfig, RedisError};
use crate::expose::Scrape;
use crate::merge::{self, Buckets, Merged, Rule, Summary};
use crate::native::{self, NativeMerge, NativeSet};
use crate::store::dbfile::Kind;
use crate::store::key;

/// A `prometheus::core::Collector` over the values every sync wrote to Redis.
///
/// One Lua script reads the heartbeat set, every process's hash and the archives atomically (one
/// round trip whatever the number of processes). Counters and histograms are summed, gauges
/// combined by mode, `live*` gauges counted only for processes whose heartbeat is within the live
/// window, and `all`/`liveall` gauges get `pid` and `host` labels. Native histogram buckets are
/// merged exactly as the file collector merges them (coarsest schema, widest zero bucket, the
/// smallest bucket limit): [`scrape`](RedisCollector::scrape) returns them beside the families.
/// With [`with_host_label`](RedisCollector::with_host_label) every series gets a `host` label
/// instead of being summed across hosts.
///
/// Redis being down gives an empty scrape and one warning per outage; bad data (wrong key types,
/// unparsable values or keys) is skipped with a warning.
///
/// ```no_run
/// use gpe_core::redis::{RedisCollector, RedisConfig};
///
/// # fn main() -> Result<(), gpe_core::redis::RedisError> {
/// let collector = RedisCollector::new(RedisConfig::new("redis://127.0.0.1:6379")?)?
///     .with_host_label(true);
/// let registry = prometheus::Registry::new();
/// registry.register(Box::new(collector)).unwrap();
/// let families = registry.gather();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCollector {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) pool: Pool,
    pub(crate) runner: Runner,
    host_label: bool,
    outage: Mutex<Outage>,
    cache: Mutex<KeyCache>,
}

#[derive(Debug)]
struct Decoded {
    metric: String,
    sample: String,
    /// Sorted by name.
    labels: Labels,
    /// For `_bucket` samples: `le` parsed.
    le: Option<f64>,
    /// `{metric}_sum` (a histogram's sum when the kind is histogram).
    hist_sum: bool,
    help: String,
    /// For a native histogram's entries: which bucket (or the zero bucket) it is; `labels` are
    /// then the series' labels, without the store's.
    native: Option<native::Part>,
    /// Interned identity of the series: (sample, labels), or (metric, labels without `le`) for
    /// a histogram's buckets and sum (and native buckets).
    group: u32,
}

const CACHE_LIMIT: usize = 1 << 20;

impl RedisCollector {
    /// A collector over the Redis of `config` (its prefix and live window). Does not connect.
    ///
    /// # Errors
    /// [`RedisError::Pool`], [`RedisError::PoolConfig`] or [`RedisError::Thread`] when the pool or its thread cannot be
    /// started.
    pub fn new(config: RedisConfig) -> Result<Self, RedisError> {
        Ok(RedisCollector {
            keys: Keys::new(&config.prefix),
            pool: config.pool()?,
            runner: Runner::spawn("gpe-redis-collector")?,
            host_label: false,
            outage: Mutex::new(Outage::new("collector", Duration::ZERO, Duration::ZERO)),
            cache: Mutex::new(KeyCache::default()),
            config,
        })
    }

    /// Give every series a `host` label (default: sum across hosts; `all` gauges always have
    /// `pid` and `host` labels).
    #[must_use]
    pub fn with_host_label(mut self, on: bool) -> Self {
        self.host_label = on;
        self
    }

    /// Read Redis and merge: the families of one scrape, sorted by name. Never fails: when Redis
    /// is unavailable the result is empty (and a warning is logged once per outage).
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.scrape().families
    }

    /// [`gather`](RedisCollector::gather), with the native buckets of the histograms that have
    /// them (see [`crate::native`]): what a `/metrics` server exposes. Exemplars stay on
    /// their host (they are not synced), so the scrape has none. Never fails, as `gather`.
    pub fn scrape(&self) -> Scrape {
        self.try_scrape().unwrap_or_default()
    }

    /// As [`gather`](RedisCollector::gather), but telling when Redis could not be read.
    ///
    /// # Errors
    /// As [`try_scrape`](RedisCollector::try_scrape).
    pub fn try_gather(&self) -> Result<Vec<MetricFamily>, RedisError> {
        self.try_scrape().map(|s| s.families)
    }

    /// As [`scrape`](RedisCollector::scrape), but telling when Redis could not be read.
    ///
    /// # Errors
    /// [`RedisError::Timeout`] when Redis does not answer in time, [`RedisError::Unavailable`] or
    /// [`RedisError::Connection`] when it refuses the read.
    pub fn try_scrape(&self) -> Result<Scrape, RedisError> {
        let pool = self.pool.clone();
        let hb = self.keys.heartbeat();
        let prefix = self.keys.prefix().to_owned();
        let budget = self.config.connect_timeout + self.config.response_timeout;
        let raw = self.runner.run(
            async move {
                let mut conn = pool.get().await?;
                let v = lua::read()
                    .key(hb)
                    .arg(prefix)
                    .invoke_async::<Value>(&mut *conn)
                    .await;
                if v.is_err() {
                    conn.discard();
                }
                Ok(v?)
            },
            budget,
        );
        let server = self.config.server();
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match raw {
            Ok(v) => {
                outage.succeeded(&server);
                drop(outage);
                Ok(self.merge(&v))
            }
            Err(e) => {
                outage.failed(&server, &e);
                Err(e)
            }
        }
    }

    fn merge(&self, v: &Value) -> Scrape {
        let top = arr(v);
        let [now, members, procs, archives] = top else {
            tracing::warn!("unexpected reply from the Redis read script; empty scrape");
            return Scrape::default();
        };
        let now = text(now).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let window = self.config.live_window.as_secs_f64();
        let kinds = keys::all_kinds();
        let names = kind_names();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.raw.len() > CACHE_LIMIT {
            *cache = KeyCache::default();
        }
        let mut acc = Acc::default();
        let members = arr(members);
        let procs = arr(procs);
        for (i, pair) in members.chunks(2).enumerate() {
            let [m, score] = pair else { continue };
            let Some(member) = text(m) else { continue };
            let Some(id) = ProcessId::parse(member) else {
                tracing::warn!(prefix = %self.keys.prefix(), %member, "skipping a heartbeat member that is not host:pid:start");
                continue;
            };
            let score = text(score)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            let live = now - score <= window;
            let host = cache.host(id.host());
            let Some(flat) = procs.get(i) else {
                continue;
            };
            for kv in arr(flat).chunks(2) {
                let [f, val] = kv else { continue };
                let Some((kind, k)) = bytes(f).and_then(|f| names.split(f)) else {
                    tracing::warn!(prefix = %self.keys.prefix(), process = %id, "skipping a field that is not kind<TAB>key");
                    continue;
                };
                if let Kind::Gauge(mode) = kind {
                    if mode.is_live() && !live {
                        continue;
                    }
                }
                self.add(&mut acc, &mut cache, kind, Some(id.pid()), &host, k, val);
            }
        }
        for (kind, flat) in kinds.iter().zip(arr(archives)) {
            for kv in arr(flat).chunks(2) {
                let [k, val] = kv else { continue };
                let Some((host, series)) = text(k).and_then(|s| s.split_once('\t')) else {
                    tracing::warn!(kind = %kind.prefix(), "skipping an archive field that is not host<TAB>key");
                    continue;
                };
                let host = cache.host(host);
                self.add(
                    &mut acc,
                    &mut cache,
                    *kind,
                    None,
                    &host,
                    series.as_bytes(),
                    val,
                );
            }
        }
        drop(cache);
        acc.build()
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        acc: &mut Acc,
        cache: &mut KeyCache,
        kind: Kind,
        pid: Option<u32>,
        host: &Arc<str>,
        k: &[u8],
        val: &Value,
    ) {
        let Ok(raw) = std::str::from_utf8(k) else {
            tracing::warn!("skipping a series key that is not UTF-8");
            return;
        };
        let Some(d) = cache.get_or_decode(raw) else {
            return;
        };
        let Some((value, ts)) = bytes(val).and_then(|b| keys::parse_value(kind, b)) else {
            tracing::warn!(key = raw, kind = %kind.prefix(), "skipping an unparsable value");
            return;
        };
        let extra = match kind {
            Kind::Gauge(mode) if mode.per_process() => {
                let Some(pid) = pid else { return };
                (Some(Arc::clone(host)), Some(pid))
            }
            _ => (self.host_label.then(|| Arc::clone(host)), None),
        };
        match (&d.native, kind) {
            // The value word holds the count (see `keys::parse_value`), as in the files.
            (Some(part), Kind::Native) => acc.add_native(&d, part, extra.0, value.to_bits()),
            (None, Kind::Native) => {} // a key without the store's labels: not ours to read
            (Some(_), _) => {
                tracing::warn!(key = raw, kind = %kind.prefix(), "skipping a native histogram key stored as another kind");
            }
            (None, _) => acc.add(kind, &d, extra, value, ts),
        }
    }
}

/// The kind names, to split the fields of process hashes (built once).
fn kind_names() -> &'static keys::KindNames {
    static NAMES: std::sync::OnceLock<keys::KindNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(keys::KindNames::new)
}

/// Decoded keys and interned series identities, kept across scrapes.
#[derive(Debug, Default)]
struct KeyCache {
    raw: HashMap<Box<str>, Option<Arc<Decoded>>>,
    groups: HashMap<(String, Labels), u32>,
    hosts: HashMap<String, Arc<str>>,
}

impl KeyCache {
    fn get_or_decode(&mut self, raw: &str) -> Option<Arc<Decoded>> {
        if let Some(d) = self.raw.get(raw) {
            return d.clone();
        }
        let d = decode(raw, &mut self.groups);
        if d.is_none() {
            tracing::warn!(key = raw, "skipping a series with an unreadable key");
        }
        self.raw.insert(raw.into(), d.clone());
        d
    }

    fn host(&mut self, host: &str) -> Arc<str> {
        if let Some(h) = self.hosts.get(host) {
            return Arc::clone(h);
        }
        let h: Arc<str> = host.into();
        self.hosts.insert(host.to_owned(), Arc::clone(&h));
        h
    }
}

fn decode(raw: &str, groups: &mut HashMap<(String, Labels), u32>) -> Option<Arc<Decoded>> {
    let mut k = key::decode(raw)?;
    // A native histogram's entries carry the store's labels (as in the file collector).
    if k.labels.contains_key(native::labels::SCHEMA) {
        let part = native::Part::take(&k.metric, &k.sample, &mut k.labels)?;
        let labels: Labels = k.labels.into_iter().collect();
        return Some(Arc::new(Decoded {
            group: merge::histogram_group(groups, &k.metric, labels.clone()),
            metric: k.metric,
            sample: k.sample,
            labels,
            le: None,
            hist_sum: false,
            help: k.help,
            native: Some(part),
        }));
    }
    let labels: Labels = k.labels.into_iter().collect();
    let g = merge::sample_group(groups, &k.metric, &k.sample, &labels);
    Some(Arc::new(Decoded {
        metric: k.metric,
        sample: k.sample,
        labels,
        le: g.le,
        hist_sum: g.hist_sum,
        help: k.help,
        native: None,
        group: g.group,
    }))
}

impl prometheus::core::Collector for RedisCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gather()
    }
}

fn arr(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

type Labels = Vec<(String, String)>;
/// The `host` and `pid` labels a sample gets, if any.
type Extra = (Option<Arc<str>>, Option<u32>);

#[derive(Debug)]
struct Fam {
    kind: Kind,
    help: String,
    /// (group, extra labels) -> (a representative sample, value)
    scalars: HashMap<(u32, Extra), (Arc<Decoded>, Merged)>,
    /// (group, host) -> (a representative sample, buckets and sum)
    hists: HashMap<(u32, Option<Arc<str>>), (Arc<Decoded>, Buckets)>,
}

#[derive(Debug, Default)]
struct Acc {
    fams: HashMap<String, Fam>,
    /// (group, host) -> (a representative entry, the native buckets being merged)
    natives: HashMap<(u32, Option<Arc<str>>), (Arc<Decoded>, NativeMerge)>,
}

impl Acc {
    fn add_native(
        &mut self,
        d: &Arc<Decoded>,
        part: &native::Part,
        host: Option<Arc<str>>,
        count: u64,
    ) {
        self.natives
            .entry((d.group, host))
            .or_insert_with(|| (Arc::clone(d), NativeMerge::default()))
            .1
            .add(part, count);
    }

    fn add(&mut self, kind: Kind, d: &Arc<Decoded>, extra: Extra, value: f64, ts: f64) {
        let fam = match self.fams.get_mut(&d.metric) {
            Some(f) => f,
            None => self.fams.entry(d.metric.clone()).or_insert_with(|| Fam {
                kind,
                help: d.help.clone(),
                scalars: HashMap::new(),
                hists: HashMap::new(),
            }),
        };
        if !merge::same_type(fam.kind, kind) {
            tracing::warn!(metric = %d.metric, "metric written with two different types; ignoring the second");
            return;
        }
        if kind == Kind::Histogram {
            let le = if d.sample.ends_with("_bucket") {
                let Some(le) = d.le else {
                    tracing::warn!(metric = %d.metric, "skipping a bucket without a numeric `le`");
                    return;
                };
                Some(le)
            } else if d.hist_sum {
                None
            } else {
                return;
            };
            let h = &mut fam
                .hists
                .entry((d.group, extra.0))
                .or_insert_with(|| (Arc::clone(d), Buckets::default()))
                .1;
            match le {
                Some(le) => h.add_bucket(le, value),
                None => h.add_sum(value),
            }
            return;
        }
        match fam.scalars.entry((d.group, extra)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((Arc::clone(d), Merged::new(value, ts)));
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                o.get_mut().1.add(Rule::of(kind), value, ts);
            }
        }
    }

    fn build(self) -> Scrape {
        let mut set = NativeSet::default();
        for ((_, host), (d, merged)) in self.natives {
            let labels = sorted_labels(&d.labels, host.as_deref(), None, false)
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            set.insert(&d.metric, labels, merged.finish());
        }
        let mut out = Vec::new();
        for (metric, fam) in self.fams {
            let mut mf = merge::family(&metric, &fam.help, fam.kind);
            let mut metrics = Vec::new();
            match fam.kind {
                Kind::Counter | Kind::Gauge(_) => {
                    for ((_, extra), (d, v)) in fam.scalars {
                        if merge::counted(fam.kind, &d.sample) {
                            let m = metric_with(&d.labels, &extra, false);
                            metrics.push(merge::with_value(m, fam.kind, v.value));
                        }
                    }
                }
                Kind::Summary => {
                    let mut by: BTreeMap<(Labels, Option<Arc<str>>), Summary> = BTreeMap::new();
                    for ((_, extra), (d, v)) in fam.scalars {
                        by.entry((d.labels.clone(), extra.0))
                            .or_default()
                            .add(&d.sample, v.value);
                    }
                    for ((labels, host), summary) in by {
                        let mut m = metric_with(&labels, &(host, None), false);
                        m.set_summary(summary.into_proto());
                        metrics.push(m);
                    }
                }
                // Native buckets are not families of their own (see `accumulate`).
                Kind::Native | Kind::Exemplar => {}
                Kind::Histogram => {
                    for ((_, host), (d, buckets)) in fam.hists {
                        let mut m = metric_with(&d.labels, &(host, None), true);
                        m.set_histogram(buckets.into_proto());
                        metrics.push(m);
                    }
                }
            }
            if !metrics.is_empty() {
                merge::finish(&mut mf, metrics);
                out.push(mf);
            }
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Scrape::new(out, set)
    }
}

/// `labels` (without `le` when `drop_le`), plus `host` and `pid` labels when given (replacing
/// labels of the same name), sorted by name: a series' labels as the families have them.
fn sorted_labels<'a>(
    labels: &'a Labels,
    host: Option<&'a str>,
    pid: Option<&'a str>,
    drop_le: bool,
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = labels
        .iter()
        .filter(|(n, _)| {
            let replaced = (drop_le && n == "le")
                || (host.is_some() && n == "host")
                || (pid.is_some() && n == "pid");
            !replaced
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Some(h) = host {
        all.push(("host", h));
    }
    if let Some(p) = pid {
        all.push(("pid", p));
    }
    all.sort_unstable();
    all
}

/// A metric with `labels` (without `le` when `drop_le`), plus the `host`/`pid` labels of `extra`
/// (replacing labels of the same name), sorted by name.
fn metric_with(labels: &Labels, extra: &Extra, drop_le: bool) -> proto::Metric {
    let (host, pid) = extra;
    let pid = pid.map(|p| p.to_string());
    merge::series(&sorted_labels(
        labels,
        host.as_deref(),
        pid.as_deref(),
        drop_le,
    ))
}

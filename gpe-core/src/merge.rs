//! The rules of Python `prometheus_client`'s multiprocess mode for adding up one series across
//! processes, in one place. The file collector ([`collect`](crate::collect)), compaction of dead
//! processes' files ([`collect::compact`](crate::collect::compact)) and the Redis collector
//! ([`redis`](crate::redis), feature `redis`) all merge through here, so a value means the same
//! thing whichever path it took to `/metrics`.
//!
//! | what | rule |
//! |---|---|
//! | counters, histogram buckets and sums, summaries | [`Rule::Sum`] |
//! | gauges `min` / `livemin` | [`Rule::Min`] |
//! | gauges `max` / `livemax` | [`Rule::Max`] |
//! | gauges `sum` / `livesum` | [`Rule::Sum`] |
//! | gauges `mostrecent` / `livemostrecent` | [`Rule::MostRecent`]: the value with the latest timestamp |
//! | gauges `all` / `liveall` | [`Rule::Last`]: one series per process (a `pid` label), nothing to add up |
//!
//! The `live*` modes differ from the others only in which processes count (the living ones),
//! which the collectors decide before merging.
//!
//! ```
//! use gpe_core::merge::{Merged, Rule};
//! use gpe_core::GaugeMode;
//!
//! // Three workers' values of one `max` gauge.
//! let rule = Rule::for_gauge(GaugeMode::Max);
//! let mut merged = Merged::new(3.0, 0.0);
//! merged.add(rule, 7.0, 0.0);
//! merged.add(rule, 5.0, 0.0);
//! assert_eq!(merged.value, 7.0);
//!
//! // `mostrecent`: the value written last wins, whatever the order the files are read in.
//! let mut merged = Merged::new(1.0, 100.0);
//! merged.add(Rule::MostRecent, 2.0, 300.0);
//! merged.add(Rule::MostRecent, 3.0, 200.0);
//! assert_eq!((merged.value, merged.timestamp), (2.0, 300.0));
//! ```

use prometheus::proto::{self, MetricFamily, MetricType};

use crate::store::dbfile::Kind;
use crate::store::GaugeMode;

/// How the values of one series from several processes combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// Added up.
    Sum,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// The one with the latest timestamp.
    MostRecent,
    /// Series kept apart per process: a second value of the same series replaces the first.
    Last,
    /// Added up as whole counts: the value word holds a `u64`, not an `f64` (gpe's native
    /// histogram files, which Python does not read; see [`native`](crate::native)).
    Counts,
}

impl Rule {
    /// The rule of a gauge written in `mode`.
    pub fn for_gauge(mode: GaugeMode) -> Rule {
        match mode.combining() {
            GaugeMode::Min => Rule::Min,
            GaugeMode::Max => Rule::Max,
            GaugeMode::Sum => Rule::Sum,
            GaugeMode::MostRecent => Rule::MostRecent,
            _ => Rule::Last,
        }
    }

    /// The rule of the values of a file (or Redis hash) of `kind`.
    pub(crate) fn of(kind: Kind) -> Rule {
        match kind {
            Kind::Gauge(mode) => Rule::for_gauge(mode),
            Kind::Counter | Kind::Histogram | Kind::Summary => Rule::Sum,
            Kind::Native => Rule::Counts,
            // Exemplars are not added up: the collector keeps the newest (see `exemplar`).
            Kind::Exemplar => Rule::MostRecent,
        }
    }
}

/// One series' value, merged so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Merged {
    /// The value.
    pub value: f64,
    /// The timestamp of the value ([`Rule::MostRecent`]; 0 for the other rules).
    pub timestamp: f64,
}

impl Merged {
    /// The first value seen of a series.
    pub fn new(value: f64, timestamp: f64) -> Merged {
        Merged { value, timestamp }
    }

    /// Merge another process's `value` (written at `timestamp`) in by `rule`.
    #[inline]
    pub fn add(&mut self, rule: Rule, value: f64, timestamp: f64) {
        match rule {
            Rule::Sum => self.value += value,
            Rule::Min => self.value = self.value.min(value),
            Rule::Max => self.value = self.value.max(value),
            Rule::MostRecent => {
                if timestamp > self.timestamp {
                    *self = Merged::new(value, timestamp);
                }
            }
            Rule::Last => *self = Merged::new(value, timestamp),
            Rule::Counts => {
                let sum = self.value.to_bits().wrapping_add(value.to_bits());
                self.value = f64::from_bits(sum);
            }
        }
    }
}

/// The number of the group a series belongs to (the series of one sample, or the buckets and
/// sum of one histogram), given the first time its key is seen: merging then hashes a `u32`.
fn group_number<K: std::hash::Hash + Eq>(
    groups: &mut std::collections::HashMap<K, u32>,
    key: K,
) -> u32 {
    let next = u32::try_from(groups.len()).unwrap_or(u32::MAX);
    *groups.entry(key).or_insert(next)
}

/// Where one decoded sample merges (both collectors decode their keys through here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SampleGroup {
    /// The number of its group ([`group_number`]): a histogram's buckets and sum
    /// (`{metric}_bucket` with a numeric `le`, `{metric}_sum`) share the group of
    /// (metric, labels without `le`); any other sample is in the group of (sample, labels).
    pub(crate) group: u32,
    /// A `_bucket` sample's `le`, parsed; `None` for other samples and for a bucket without a
    /// numeric one.
    pub(crate) le: Option<f64>,
    /// The sample is `{metric}_sum` (a histogram's sum when the metric is a histogram).
    pub(crate) hist_sum: bool,
}

/// The [`SampleGroup`] of the sample `sample` of `metric` with `labels`, numbered in `groups`.
pub(crate) fn sample_group(
    groups: &mut std::collections::HashMap<(String, Vec<(String, String)>), u32>,
    metric: &str,
    sample: &str,
    labels: &[(String, String)],
) -> SampleGroup {
    let le = if sample.ends_with("_bucket") {
        labels
            .iter()
            .find(|(n, _)| n == "le")
            .and_then(|(_, v)| v.parse::<f64>().ok())
    } else {
        None
    };
    let hist_sum = sample.strip_suffix("_sum") == Some(metric);
    let group = if le.is_some() || hist_sum {
        let rest = labels.iter().filter(|(n, _)| n != "le").cloned().collect();
        histogram_group(groups, metric, rest)
    } else {
        group_number(groups, (sample.to_owned(), labels.to_vec()))
    };
    SampleGroup {
        group,
        le,
        hist_sum,
    }
}

/// The group of the exemplar of sample `sample` with `labels` (a bucket's include `le`).
pub(crate) fn exemplar_group(
    groups: &mut std::collections::HashMap<(String, Vec<(String, String)>), u32>,
    sample: &str,
    labels: Vec<(String, String)>,
) -> u32 {
    group_number(groups, (format!("{sample}\0x"), labels))
}

/// The group of histogram `metric`'s series with `labels` (without `le`): its classic buckets,
/// its sum and its native buckets.
pub(crate) fn histogram_group(
    groups: &mut std::collections::HashMap<(String, Vec<(String, String)>), u32>,
    metric: &str,
    labels: Vec<(String, String)>,
) -> u32 {
    group_number(groups, (format!("{metric}\0h"), labels))
}

/// Whether values written as `b` can merge into a family first seen as `a`: the same type, and
/// for gauges the same rule (a gauge written as `max` by one process and `livemax` by another
/// merges; one written as `max` and `sum` does not).
pub(crate) fn same_type(a: Kind, b: Kind) -> bool {
    match (a, b) {
        (Kind::Gauge(a), Kind::Gauge(b)) => a.combining() == b.combining(),
        (a, b) => a == b,
    }
}

/// One histogram series being merged: the count of each bucket (not cumulative, as the files
/// keep them) and the sum.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets {
    counts: Vec<(f64, f64)>,
    sum: f64,
}

impl Buckets {
    /// Add `count` observations to the bucket with upper bound `le`.
    pub(crate) fn add_bucket(&mut self, le: f64, count: f64) {
        match self.counts.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => self.counts.push((le, count)),
        }
    }

    /// Add to the sum of the observations.
    pub(crate) fn add_sum(&mut self, sum: f64) {
        self.sum += sum;
    }

    /// The exposition form: cumulative buckets by bound, `+Inf` implied by the sample count.
    pub(crate) fn into_proto(mut self) -> proto::Histogram {
        self.counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut cumulative = 0.0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (le, count) in &self.counts {
            cumulative += count;
            if le.is_infinite() && *le > 0.0 {
                continue;
            }
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*le);
            b.set_cumulative_count(cumulative as u64);
            buckets.push(b);
        }
        let mut h = proto::Histogram::default();
        h.set_sample_count(cumulative as u64);
        h.set_sample_sum(self.sum);
        h.set_bucket(buckets);
        h
    }
}

/// One summary series being merged: its count and sum (gpe keeps no quantiles, as Python's
/// multiprocess mode).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    count: f64,
    sum: f64,
}

impl Summary {
    /// Add the value of a `_count` or `_sum` sample (other samples are not kept).
    pub(crate) fn add(&mut self, sample: &str, value: f64) {
        if sample.ends_with("_count") {
            self.count += value;
        } else if sample.ends_with("_sum") {
            self.sum += value;
        }
    }

    /// The exposition form.
    pub(crate) fn into_proto(self) -> proto::Summary {
        let mut s = proto::Summary::default();
        s.set_sample_count(self.count as u64);
        s.set_sample_sum(self.sum);
        s
    }
}

/// An empty family for `metric` of `kind`: counters are exposed as `{metric}_total`.
pub(crate) fn family(metric: &str, help: &str, kind: Kind) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_help(help.to_owned());
    let (name, ty) = match kind {
        Kind::Counter => (format!("{metric}_total"), MetricType::COUNTER),
        Kind::Gauge(_) => (metric.to_owned(), MetricType::GAUGE),
        Kind::Summary => (metric.to_owned(), MetricType::SUMMARY),
        Kind::Histogram | Kind::Native | Kind::Exemplar => {
            (metric.to_owned(), MetricType::HISTOGRAM)
        }
    };
    mf.set_name(name);
    mf.set_field_type(ty);
    mf
}

/// A series with `labels` (already sorted by name).
pub(crate) fn series(labels: &[(&str, &str)]) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(n, v)| {
                let mut p = proto::LabelPair::default();
                p.set_name((*n).to_owned());
                p.set_value((*v).to_owned());
                p
            })
            .collect(),
    );
    m
}

/// A counter or gauge series `m` (by `kind`) with its merged `value`.
pub(crate) fn with_value(mut m: proto::Metric, kind: Kind, value: f64) -> proto::Metric {
    if kind == Kind::Counter {
        let mut c = proto::Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

/// Whether a counter's sample is kept: its `_total` (not `_created` and the like, which gpe
/// does not keep in files).
pub(crate) fn counted(kind: Kind, sample: &str) -> bool {
    kind != Kind::Counter || sample.ends_with("_total")
}

/// The labels of a series, as a sort and lookup key.
pub(crate) fn label_key(m: &proto::Metric) -> Vec<(String, String)> {
    m.get_label()
        .iter()
        .map(|l| (l.name().to_owned(), l.value().to_owned()))
        .collect()
}

/// Put `metrics` into `mf`, sorted by their labels.
pub(crate) fn finish(mf: &mut MetricFamily, mut metrics: Vec<proto::Metric>) {
    metrics.sort_by_cached_key(label_key);
    mf.set_metric(metrics);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_python_modes() {
        for (mode, rule) in [
            (GaugeMode::Min, Rule::Min),
            (GaugeMode::LiveMin, Rule::Min),
            (GaugeMode::Max, Rule::Max),
            (GaugeMode::LiveMax, Rule::Max),
            (GaugeMode::Sum, Rule::Sum),
            (GaugeMode::LiveSum, Rule::Sum),
            (GaugeMode::MostRecent, Rule::MostRecent),
            (GaugeMode::LiveMostRecent, Rule::MostRecent),
            (GaugeMode::All, Rule::Last),
            (GaugeMode::LiveAll, Rule::Last),
        ] {
            assert_eq!(Rule::for_gauge(mode), rule, "{mode}");
        }
        for kind in [Kind::Counter, Kind::Histogram, Kind::Summary] {
            assert_eq!(Rule::of(kind), Rule::Sum);
        }
    }

    #[test]
    fn merging_values() {
        let merge = |rule, values: &[(f64, f64)]| {
            let mut m = Merged::new(values[0].0, values[0].1);
            for (v, ts) in &values[1..] {
                m.add(rule, *v, *ts);
            }
            (m.value, m.timestamp)
        };
        let values = [(2.0, 10.0), (-1.0, 30.0), (5.0, 20.0)];
        assert_eq!(merge(Rule::Sum, &values).0, 6.0);
        assert_eq!(merge(Rule::Min, &values).0, -1.0);
        assert_eq!(merge(Rule::Max, &values).0, 5.0);
        assert_eq!(merge(Rule::MostRecent, &values), (-1.0, 30.0));
        assert_eq!(merge(Rule::Last, &values), (5.0, 20.0));
    }

    #[test]
    fn buckets_become_cumulative_with_inf_implied() {
        let mut b = Buckets::default();
        b.add_bucket(f64::INFINITY, 1.0);
        b.add_bucket(0.5, 2.0);
        b.add_bucket(0.1, 3.0);
        b.add_bucket(0.5, 1.0);
        b.add_sum(4.5);
        let h = b.into_proto();
        let got: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(got, [(0.1, 3), (0.5, 6)]);
        assert_eq!(h.get_sample_count(), 7);
        assert_eq!(h.get_sample_sum(), 4.5);
    }

    #[test]
    fn families_are_named_as_python_exposes_them() {
        assert_eq!(family("jobs", "h", Kind::Counter).name(), "jobs_total");
        let g = family("temp", "h", Kind::Gauge(GaugeMode::Max));
        assert_eq!((g.name(), g.get_field_type()), ("temp", MetricType::GAUGE));
    }

    #[test]
    fn a_histograms_buckets_and_sum_share_a_group() {
        let mut groups = std::collections::HashMap::new();
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut group = |sample: &str, pairs: &[(&str, &str)]| {
            sample_group(&mut groups, "h", sample, &labels(pairs))
        };
        let bucket = group("h_bucket", &[("a", "1"), ("le", "0.5")]);
        assert_eq!((bucket.le, bucket.hist_sum), (Some(0.5), false));
        let inf = group("h_bucket", &[("a", "1"), ("le", "+Inf")]);
        let sum = group("h_sum", &[("a", "1")]);
        assert!(sum.hist_sum);
        assert_eq!((inf.group, sum.group), (bucket.group, bucket.group));
        assert_ne!(group("h_sum", &[("a", "2")]).group, bucket.group);
        let count = group("h_count", &[("a", "1")]);
        assert_eq!((count.le, count.hist_sum), (None, false));
        assert_ne!(count.group, bucket.group);
        let no_le = group("h_bucket", &[("a", "1"), ("le", "x")]);
        assert_eq!(no_le.le, None);
        assert_ne!(no_le.group, bucket.group);
    }
}

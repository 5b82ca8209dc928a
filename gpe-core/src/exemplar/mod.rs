//! Exemplars: the trace of one request, kept beside the bucket (and the counter) it was counted
//! in, so a dashboard can jump from a latency spike to a trace of it.
//!
//! A process writes an exemplar into its store like any value (crash-safe shared memory, see
//! the `slot` module's sequence lock), one per histogram bucket and per counter series; each
//! new one replaces the last. The collector keeps the newest of every process for each bucket,
//! and the OpenMetrics and protobuf expositions show them (the Prometheus text format has no
//! exemplars).
//!
//! ```
//! use gpe_core::exemplar::TraceContext;
//! use prometheus::HistogramOpts;
//!
//! # fn main() -> Result<(), gpe_core::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = gpe_core::Store::open(dir.path())?;
//! let h = gpe_core::Histogram::with_opts(
//!     HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.1, 1.0]),
//!     &store,
//! )?;
//! let trace = TraceContext::from_traceparent(
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//! ).unwrap();
//! h.observe_with_exemplar(0.25, &trace);
//!
//! let scrape = gpe_core::MultiProcessCollector::new(dir.path()).scrape();
//! let text = gpe_core::expose::encode_openmetrics_scrape(&scrape)?;
//! assert!(text.contains(
//!     "latency_seconds_bucket{le=\"1.0\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.25 "
//! ));
//! # Ok(())
//! # }
//! ```

mod slot;
mod trace;

use slot::ExemplarSlot;
pub(crate) use slot::{assemble, PART};
pub use trace::{Headers, TraceContext, TraceSource};

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::store::SeriesId;

/// The exemplars of one series (a counter's one, or a histogram's one per bucket), their
/// entries made in the store on first use: a series that never sees a trace costs nothing in
/// the file.
#[derive(Debug)]
pub(crate) struct LazyExemplars {
    id: Arc<SeriesId>,
    sample: String,
    help: String,
    /// For a histogram, each bucket's `le` (`+Inf` last); empty for a counter.
    bounds: Arc<[String]>,
    cells: OnceLock<Box<[OnceLock<ExemplarSlot>]>>,
}

impl LazyExemplars {
    /// The exemplars of sample `sample` of series `id`: one per bucket of `bounds` (each
    /// bucket's `le`), or one when `bounds` is empty (a counter).
    pub(crate) fn new(
        id: Arc<SeriesId>,
        sample: &str,
        help: &str,
        bounds: Arc<[String]>,
    ) -> LazyExemplars {
        LazyExemplars {
            id,
            sample: sample.to_owned(),
            help: help.to_owned(),
            bounds,
            cells: OnceLock::new(),
        }
    }

    /// Record an exemplar in bucket `bucket` (0 for a counter), taken at `now` (seconds since
    /// the epoch, [`unix_seconds`](crate::clock::unix_seconds)).
    pub(crate) fn record(&self, bucket: usize, trace: &TraceContext, value: f64, now: f64) {
        let cells = self.cells.get_or_init(|| {
            (0..self.bounds.len().max(1))
                .map(|_| OnceLock::new())
                .collect()
        });
        let Some(cell) = cells.get(bucket) else {
            return;
        };
        let slot = match cell.get() {
            Some(slot) => slot,
            None => match self.make(bucket) {
                Some(slot) => cell.get_or_init(|| slot),
                None => return,
            },
        };
        slot.record(trace, value, now);
    }

    #[cold]
    fn make(&self, bucket: usize) -> Option<ExemplarSlot> {
        let le = self.bounds.get(bucket).map(|le| ("le", le.as_str()));
        let extra: Vec<(&str, &str)> = le.into_iter().collect();
        ExemplarSlot::new(&self.id, &self.sample, &extra, &self.help)
    }

    /// This process's exemplar of bucket `bucket`.
    pub(crate) fn get(&self, bucket: usize) -> Option<Exemplar> {
        self.cells.get()?.get(bucket)?.get()?.get()
    }
}

/// One exemplar: the trace, the value observed (or added), and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    /// The request's trace.
    pub trace: TraceContext,
    /// The observed value (a histogram) or the increment (a counter).
    pub value: f64,
    /// When, in seconds since the epoch.
    pub timestamp: f64,
}

/// The exemplars of one scrape, by family, series (labels sorted by name, without `le`) and
/// bucket (`le`; `None` for a counter).
///
/// ```
/// use gpe_core::exemplar::{Exemplar, ExemplarSet, TraceContext};
///
/// let trace = TraceContext { trace_id: [1; 16], span_id: [2; 8] };
/// let mut set = ExemplarSet::default();
/// set.insert("jobs_total", vec![], None, Exemplar { trace, value: 1.0, timestamp: 10.0 });
/// // Another process's older one does not replace it.
/// set.insert("jobs_total", vec![], None, Exemplar { trace, value: 5.0, timestamp: 9.0 });
/// assert_eq!(set.get("jobs_total", &[], None).unwrap().value, 1.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExemplarSet {
    by_family: HashMap<String, HashMap<Vec<(String, String)>, Vec<(Option<f64>, Exemplar)>>>,
}

impl ExemplarSet {
    /// Add `exemplar` for bucket `le` of series `labels` of `family`, unless a newer one is
    /// there already.
    pub fn insert(
        &mut self,
        family: &str,
        labels: Vec<(String, String)>,
        le: Option<f64>,
        exemplar: Exemplar,
    ) {
        let series = self
            .by_family
            .entry(family.to_owned())
            .or_default()
            .entry(labels)
            .or_default();
        match series.iter_mut().find(|(b, _)| *b == le) {
            Some((_, e)) if e.timestamp >= exemplar.timestamp => {}
            Some((_, e)) => *e = exemplar,
            None => series.push((le, exemplar)),
        }
    }

    /// The exemplar of bucket `le` (`None`: a counter) of series `labels` of `family`.
    pub fn get(
        &self,
        family: &str,
        labels: &[(String, String)],
        le: Option<f64>,
    ) -> Option<&Exemplar> {
        self.series(family, labels)
            .iter()
            .find(|(b, _)| *b == le)
            .map(|(_, e)| e)
    }

    /// Every exemplar of series `labels` of `family`, with its bucket.
    pub fn series(&self, family: &str, labels: &[(String, String)]) -> &[(Option<f64>, Exemplar)] {
        self.by_family
            .get(family)
            .and_then(|f| f.get(labels))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `family` has exemplars.
    pub fn has_family(&self, family: &str) -> bool {
        self.by_family.contains_key(family)
    }

    /// How many exemplars there are.
    pub fn len(&self) -> usize {
        self.by_family
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_family.is_empty()
    }
}

//! Counters.

use std::sync::Arc;

use super::vec::{Children, Def};
use crate::error::Error;
use crate::exemplar::LazyExemplars;
use crate::store::dbfile::Kind;
use crate::store::key;
use crate::store::{SeriesId, Store};
use crate::sys::mmap::Slot;

/// A monotonically increasing value in the multiprocess store.
///
/// Every update is one atomic operation on shared memory.
///
/// ```
/// # fn main() -> Result<(), gpe_core::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let c = gpe_core::Counter::new("jobs_total", "Jobs done.", &store)?;
/// c.inc();
/// c.inc_by(2.0);
/// assert_eq!(c.get(), 3.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Counter {
    slot: Slot,
    exemplar: Arc<LazyExemplars>,
}

impl Counter {
    /// A counter without labels.
    ///
    /// # Errors
    /// When the name or help is invalid, or the store's file cannot be written.
    pub fn new(name: &str, help: &str, store: &Store) -> Result<Counter, Error> {
        Counter::with_opts(prometheus::Opts::new(name, help), store)
    }

    /// A counter from `prometheus::Opts` (namespace, subsystem and constant labels honoured).
    ///
    /// # Errors
    /// When the options are invalid, or the store's file cannot be written.
    pub fn with_opts(opts: prometheus::Opts, store: &Store) -> Result<Counter, Error> {
        CounterVec::new(opts, &[], store)?.with_label_values(&[])
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.slot.add(1.0);
    }

    /// Add `v`. Negative or NaN amounts are ignored (a counter never goes down).
    #[inline]
    pub fn inc_by(&self, v: f64) {
        if v >= 0.0 {
            self.slot.add(v);
        }
    }

    /// Add `v` (ignored unless `v >= 0`) and keep `trace` as this series' exemplar (see
    /// [`exemplar`](crate::exemplar)).
    pub fn inc_by_with_exemplar(&self, v: f64, trace: &crate::exemplar::TraceContext) {
        self.inc_by_with_exemplar_at(v, trace, crate::clock::unix_seconds());
    }

    /// [`inc_by_with_exemplar`](Self::inc_by_with_exemplar) at `now` (seconds since the
    /// epoch): one clock read for all of a request's exemplars.
    pub(crate) fn inc_by_with_exemplar_at(
        &self,
        v: f64,
        trace: &crate::exemplar::TraceContext,
        now: f64,
    ) {
        if v >= 0.0 {
            self.slot.add(v);
            self.exemplar.record(0, trace, v, now);
        }
    }

    /// This process's exemplar.
    pub fn exemplar(&self) -> Option<crate::exemplar::Exemplar> {
        self.exemplar.get(0)
    }

    /// This process's value.
    pub fn get(&self) -> f64 {
        self.slot.get()
    }

    /// Set this process's absolute value (used when adopting another registry's counters).
    pub(crate) fn set_absolute(&self, v: f64) {
        self.slot.set(v);
    }
}

/// A counter with labels.
#[derive(Debug, Clone)]
pub struct CounterVec {
    inner: Arc<VecInner>,
}

#[derive(Debug)]
struct VecInner {
    def: Def,
    base: String,
    sample: String,
    store: Store,
    children: Children<Counter>,
}

impl CounterVec {
    /// A counter family with the given label names.
    ///
    /// A name ending in `_total` is stored as Python stores it: metric `name` without the suffix,
    /// sample `name_total`; it is exposed as `name_total` either way.
    ///
    /// # Errors
    /// Invalid metric or label names, or a name already registered with another shape.
    pub fn new(
        opts: prometheus::Opts,
        label_names: &[&str],
        store: &Store,
    ) -> Result<CounterVec, Error> {
        let def = Def::new(&opts, label_names, &[])?;
        let base = def
            .name
            .strip_suffix("_total")
            .unwrap_or(&def.name)
            .to_owned();
        let sample = format!("{base}_total");
        store.register(&sample, def.signature("counter"))?;
        Ok(CounterVec {
            inner: Arc::new(VecInner {
                def,
                base,
                sample,
                store: store.clone(),
                children: Children::new(),
            }),
        })
    }

    /// The counter for `values` (one per label name, in order), created at 0 if new.
    ///
    /// # Errors
    /// When the number of values differs from the number of label names.
    pub fn with_label_values(&self, values: &[&str]) -> Result<Counter, Error> {
        let i = &self.inner;
        i.children.get_or_try_insert(values, || {
            let labels = i.def.labels(values)?;
            let k = key::encode(&i.base, &i.sample, labels.iter().copied(), &i.def.help);
            Ok(Counter {
                slot: i.store.slot(Kind::Counter, &k)?,
                exemplar: Arc::new(LazyExemplars::new(
                    SeriesId::new(&i.store, &i.base, &labels),
                    &i.sample,
                    &i.def.help,
                    Arc::from([]),
                )),
            })
        })
    }

    /// How many label combinations exist in this process.
    pub fn series_count(&self) -> usize {
        self.inner.children.len()
    }
}

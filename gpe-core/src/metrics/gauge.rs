//! Gauges.

use std::sync::Arc;

use super::vec::{Children, Def};
use crate::error::Error;
use crate::store::dbfile::Kind;
use crate::store::key;
use crate::store::{GaugeMode, Store};
use crate::sys::mmap::Slot;

/// A value that goes up and down, combined across processes by its [`GaugeMode`].
///
/// ```
/// use gpe_core::{Gauge, GaugeMode, Store};
/// # fn main() -> Result<(), gpe_core::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path())?;
/// let in_flight = Gauge::new("in_flight", "Requests in flight.", GaugeMode::LiveSum, &store)?;
/// in_flight.inc();
/// in_flight.dec();
/// assert_eq!(in_flight.get(), 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Gauge {
    slot: Slot,
    mode: GaugeMode,
}

impl Gauge {
    /// A gauge without labels.
    ///
    /// # Errors
    /// When the name or help is invalid, or the store's file cannot be written.
    pub fn new(name: &str, help: &str, mode: GaugeMode, store: &Store) -> Result<Gauge, Error> {
        Gauge::with_opts(prometheus::Opts::new(name, help), mode, store)
    }

    /// A gauge from `prometheus::Opts`.
    ///
    /// # Errors
    /// When the options are invalid, or the store's file cannot be written.
    pub fn with_opts(
        opts: prometheus::Opts,
        mode: GaugeMode,
        store: &Store,
    ) -> Result<Gauge, Error> {
        GaugeVec::new(opts, &[], mode, store)?.with_label_values(&[])
    }

    /// Set the value (with a timestamp in the most-recent modes).
    #[inline]
    pub fn set(&self, v: f64) {
        if self.mode.is_most_recent() {
            self.slot
                .set_with_timestamp(v, crate::clock::unix_seconds());
        } else {
            self.slot.set(v);
        }
    }

    /// Add `v` (may be negative). In the most-recent modes this also stamps the time.
    #[inline]
    pub fn add(&self, v: f64) {
        // One CAS loop on the value, then the stamp on its own: two threads adding at once both
        // count (a read-then-set here lost one of them).
        self.slot.add(v);
        if self.mode.is_most_recent() {
            self.slot.set_timestamp(crate::clock::unix_seconds());
        }
    }

    /// Subtract `v`.
    #[inline]
    pub fn sub(&self, v: f64) {
        self.add(-v);
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtract one.
    #[inline]
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// Set to the current Unix time in seconds.
    pub fn set_to_current_time(&self) {
        self.set(crate::clock::unix_seconds());
    }

    /// This process's value.
    pub fn get(&self) -> f64 {
        self.slot.get()
    }

    /// The mode.
    pub fn mode(&self) -> GaugeMode {
        self.mode
    }
}

/// A gauge with labels.
#[derive(Debug, Clone)]
pub struct GaugeVec {
    inner: Arc<VecInner>,
}

#[derive(Debug)]
struct VecInner {
    def: Def,
    mode: GaugeMode,
    store: Store,
    children: Children<Gauge>,
}

impl GaugeVec {
    /// A gauge family. The label name `pid` is reserved (the collector adds it in the `all`
    /// modes).
    ///
    /// # Errors
    /// Invalid metric or label names, or a name already registered with another shape.
    pub fn new(
        opts: prometheus::Opts,
        label_names: &[&str],
        mode: GaugeMode,
        store: &Store,
    ) -> Result<GaugeVec, Error> {
        let def = Def::new(&opts, label_names, &["pid"])?;
        store.register(&def.name, def.signature(&format!("gauge_{mode}")))?;
        Ok(GaugeVec {
            inner: Arc::new(VecInner {
                def,
                mode,
                store: store.clone(),
                children: Children::new(),
            }),
        })
    }

    /// The gauge for `values`, created at 0 if new.
    ///
    /// # Errors
    /// When the number of values differs from the number of label names.
    pub fn with_label_values(&self, values: &[&str]) -> Result<Gauge, Error> {
        let i = &self.inner;
        i.children.get_or_try_insert(values, || {
            let labels = i.def.labels(values)?;
            let k = key::encode(&i.def.name, &i.def.name, labels, &i.def.help);
            Ok(Gauge {
                slot: i.store.slot(Kind::Gauge(i.mode), &k)?,
                mode: i.mode,
            })
        })
    }

    /// How many label combinations exist in this process.
    pub fn series_count(&self) -> usize {
        self.inner.children.len()
    }
}

//! Adoption: snapshot an in-process `prometheus::Registry` into the multiprocess store.
//!
//! Existing instrumentation written against the `prometheus` crate (for example in a library)
//! keeps working: an [`Adopter`] copies the registry's counters, gauges and histograms into this
//! process's files, as absolute values, every interval. Summaries are not supported in
//! multiprocess mode (as in Python) and are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::{MetricFamily, MetricType};

use super::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec};
use crate::error::Error;
use crate::store::{GaugeMode, Store};

/// Copies a registry's values into the store.
///
/// ```
/// use gpe_core::metrics::adopt::Adopter;
/// # fn main() -> Result<(), gpe_core::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let registry = prometheus::Registry::new();
/// let c = prometheus::IntCounter::new("legacy_total", "Legacy.").unwrap();
/// registry.register(Box::new(c.clone())).unwrap();
/// c.inc_by(3);
///
/// let adopter = Adopter::new(registry, &store);
/// adopter.snapshot();
/// let families = gpe_core::MultiProcessCollector::new(dir.path()).gather();
/// assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 3.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Adopter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: prometheus::Registry,
    store: Store,
    gauge_mode: GaugeMode,
    handles: Mutex<HashMap<String, Handle>>,
}

#[derive(Debug)]
enum Handle {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
    Skipped,
}

impl Adopter {
    /// Adopt `registry` (use `prometheus::default_registry().clone()` for the default one).
    pub fn new(registry: prometheus::Registry, store: &Store) -> Adopter {
        Adopter::with_gauge_mode(registry, store, GaugeMode::LiveAll)
    }

    /// As [`Adopter::new`], with the mode adopted gauges are combined by (default `liveall`).
    pub fn with_gauge_mode(
        registry: prometheus::Registry,
        store: &Store,
        mode: GaugeMode,
    ) -> Adopter {
        Adopter {
            inner: Arc::new(Inner {
                registry,
                store: store.clone(),
                gauge_mode: mode,
                handles: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Copy the registry's current values into the store. Problems are logged, never fatal.
    pub fn snapshot(&self) {
        let families = self.inner.registry.gather();
        let mut handles = self.inner.handles.lock().unwrap_or_else(|p| p.into_inner());
        for mf in &families {
            if let Err(e) = self.adopt_family(&mut handles, mf) {
                tracing::warn!(metric = mf.name(), error = %e, "cannot adopt metric");
                handles.insert(mf.name().to_owned(), Handle::Skipped);
            }
        }
    }

    fn adopt_family(
        &self,
        handles: &mut HashMap<String, Handle>,
        mf: &MetricFamily,
    ) -> Result<(), Error> {
        let Some(first) = mf.get_metric().first() else {
            return Ok(());
        };
        let label_names: Vec<String> = first
            .get_label()
            .iter()
            .map(|l| l.name().to_owned())
            .collect();
        let names: Vec<&str> = label_names.iter().map(String::as_str).collect();
        if !handles.contains_key(mf.name()) {
            let opts = prometheus::Opts::new(mf.name(), mf.help());
            let handle = match mf.get_field_type() {
                MetricType::COUNTER => {
                    Handle::Counter(CounterVec::new(opts, &names, &self.inner.store)?)
                }
                MetricType::GAUGE => Handle::Gauge(GaugeVec::new(
                    opts,
                    &names,
                    self.inner.gauge_mode,
                    &self.inner.store,
                )?),
                MetricType::HISTOGRAM => {
                    let bounds: Vec<f64> = first
                        .get_histogram()
                        .get_bucket()
                        .iter()
                        .map(|b| b.upper_bound())
                        .collect();
                    let hopts =
                        prometheus::HistogramOpts::new(mf.name(), mf.help()).buckets(bounds);
                    Handle::Histogram(HistogramVec::new(hopts, &names, &self.inner.store)?)
                }
                _ => {
                    tracing::debug!(
                        metric = mf.name(),
                        "summaries and untyped metrics are not adopted"
                    );
                    Handle::Skipped
                }
            };
            handles.insert(mf.name().to_owned(), handle);
        }
        let Some(handle) = handles.get(mf.name()) else {
            return Ok(());
        };
        for m in mf.get_metric() {
            let values: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
            match handle {
                Handle::Counter(v) => {
                    let c: Counter = v.with_label_values(&values)?;
                    c.set_absolute(m.get_counter().get_value());
                }
                Handle::Gauge(v) => {
                    let g: Gauge = v.with_label_values(&values)?;
                    g.set(m.get_gauge().get_value());
                }
                Handle::Histogram(v) => {
                    let h: Histogram = v.with_label_values(&values)?;
                    let hist = m.get_histogram();
                    let mut prev = 0u64;
                    let mut counts: Vec<f64> = hist
                        .get_bucket()
                        .iter()
                        .map(|b| {
                            let c = b.cumulative_count().saturating_sub(prev);
                            prev = b.cumulative_count();
                            c as f64
                        })
                        .collect();
                    counts.push(hist.get_sample_count().saturating_sub(prev) as f64);
                    h.set_absolute(&counts, hist.get_sample_sum());
                }
                Handle::Skipped => {}
            }
        }
        Ok(())
    }

    /// Snapshot every `interval` on a background thread until the returned guard is dropped.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(&self, interval: Duration) -> Result<AdoptGuard, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let adopter = self.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("gpe-adopt".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    adopter.snapshot();
                    std::thread::park_timeout(interval);
                }
                adopter.snapshot();
            })
            .map_err(|e| Error::io("spawning adoption thread", "gpe-adopt", e))?;
        Ok(AdoptGuard {
            stop,
            thread: Some(thread),
        })
    }
}

/// Stops the adoption thread (after a last snapshot) when dropped.
#[derive(Debug)]
pub struct AdoptGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AdoptGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

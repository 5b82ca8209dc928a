//! Histograms.

use std::sync::Arc;

use super::vec::{Children, Def};
use crate::error::Error;
use crate::exemplar::LazyExemplars;
use crate::native::{NativeBuckets, NativeOpts, NativeSeries};
use crate::store::dbfile::Kind;
use crate::store::key;
use crate::store::{SeriesId, Store};
use crate::sys::mmap::Slot;

/// Observations counted in buckets, summed across processes.
///
/// The file holds one non-cumulative count per bucket plus the sum, as Python does; an
/// observation is two atomic additions.
///
/// ```
/// use prometheus::HistogramOpts;
/// # fn main() -> Result<(), gpe_core::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = gpe_core::Store::open(dir.path())?;
/// let h = gpe_core::Histogram::with_opts(
///     HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.1, 1.0]),
///     &store,
/// )?;
/// h.observe(0.5);
/// assert_eq!(h.get_sample_count(), 1);
/// assert_eq!(h.get_sample_sum(), 0.5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Series>,
}

#[derive(Debug)]
struct Series {
    /// The first bucket's bound and slot, copied here so that an observation that falls in it
    /// (the common case of request durations and sizes) reads one cache line of this struct
    /// instead of three (bounds, slots, struct) before the shared-memory writes.
    first_upper: f64,
    first: Slot,
    sum: Slot,
    upper: Arc<[f64]>,
    /// One per bound, then +Inf.
    buckets: Box<[Slot]>,
    /// The native buckets, for a histogram made [`with_native`](HistogramVec::with_native).
    native: Option<NativeSeries>,
    exemplars: LazyExemplars,
}

impl Histogram {
    /// A histogram without labels.
    ///
    /// # Errors
    /// When the options or buckets are invalid, or the store's file cannot be written.
    pub fn with_opts(opts: prometheus::HistogramOpts, store: &Store) -> Result<Histogram, Error> {
        HistogramVec::new(opts, &[], store)?.with_label_values(&[])
    }

    /// Record `v`. NaN is ignored.
    #[inline]
    pub fn observe(&self, v: f64) {
        self.observe_in_bucket(v);
    }

    /// Record `v` and keep `trace` as the exemplar of the bucket it falls in (see
    /// [`exemplar`](crate::exemplar)): the classic bucket's, and with it the native
    /// histogram's. NaN is ignored.
    pub fn observe_with_exemplar(&self, v: f64, trace: &crate::exemplar::TraceContext) {
        self.observe_with_exemplar_at(v, trace, crate::clock::unix_seconds());
    }

    /// [`observe_with_exemplar`](Self::observe_with_exemplar) at `now` (seconds since the
    /// epoch): one clock read for all of a request's exemplars.
    pub(crate) fn observe_with_exemplar_at(
        &self,
        v: f64,
        trace: &crate::exemplar::TraceContext,
        now: f64,
    ) {
        if let Some(bucket) = self.observe_in_bucket(v) {
            self.inner.exemplars.record(bucket, trace, v, now);
        }
    }

    /// This process's exemplar of classic bucket `bucket` (0 is the first bound, `+Inf` last).
    pub fn exemplar(&self, bucket: usize) -> Option<crate::exemplar::Exemplar> {
        self.inner.exemplars.get(bucket)
    }

    /// Record `v`; the index of its classic bucket.
    #[inline]
    fn observe_in_bucket(&self, v: f64) -> Option<usize> {
        if v.is_nan() {
            return None;
        }
        let s = &self.inner;
        let bucket = if v <= s.first_upper {
            s.first.add(1.0);
            0
        } else {
            let i = s
                .upper
                .iter()
                .position(|&b| v <= b)
                .unwrap_or(s.upper.len());
            s.buckets[i].add(1.0);
            i
        };
        // Adding 0 leaves the sum as it is (a bodyless request's size): save the atomic add.
        if v != 0.0 {
            s.sum.add(v);
        }
        if let Some(native) = &s.native {
            native.observe(v);
        }
        Some(bucket)
    }

    /// This process's native buckets, for a histogram made
    /// [`with_native`](HistogramVec::with_native).
    pub fn native_buckets(&self) -> Option<NativeBuckets> {
        self.inner.native.as_ref().map(NativeSeries::snapshot)
    }

    /// This process's observation count.
    pub fn get_sample_count(&self) -> u64 {
        self.inner.buckets.iter().map(Slot::get).sum::<f64>() as u64
    }

    /// This process's sum of observations.
    pub fn get_sample_sum(&self) -> f64 {
        self.inner.sum.get()
    }

    /// Overwrite this process's per-bucket counts (non-cumulative, +Inf last) and sum.
    pub(crate) fn set_absolute(&self, counts: &[f64], sum: f64) {
        for (slot, c) in self.inner.buckets.iter().zip(counts) {
            slot.set(*c);
        }
        self.inner.sum.set(sum);
    }
}

/// A histogram with labels.
#[derive(Debug, Clone)]
pub struct HistogramVec {
    inner: Arc<VecInner>,
}

#[derive(Debug)]
struct VecInner {
    def: Def,
    upper: Arc<[f64]>,
    bounds: Arc<[String]>,
    native: Option<NativeOpts>,
    store: Store,
    children: Children<Histogram>,
}

impl HistogramVec {
    /// A histogram family. Buckets must be strictly increasing finite numbers; `+Inf` is added.
    /// The label name `le` is reserved.
    ///
    /// # Errors
    /// Invalid names or buckets, or a name already registered with another shape.
    pub fn new(
        opts: prometheus::HistogramOpts,
        label_names: &[&str],
        store: &Store,
    ) -> Result<HistogramVec, Error> {
        HistogramVec::make(opts, None, label_names, store)
    }

    /// A histogram family with native buckets beside its classic ones (see
    /// [`native`](crate::native)). With no classic buckets in `opts` (an empty `buckets`), the
    /// classic part is the `+Inf` bucket alone, as client_golang exposes a native-only histogram
    /// in the text formats.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_native(
        opts: prometheus::HistogramOpts,
        native: NativeOpts,
        label_names: &[&str],
        store: &Store,
    ) -> Result<HistogramVec, Error> {
        HistogramVec::make(opts, Some(native), label_names, store)
    }

    fn make(
        opts: prometheus::HistogramOpts,
        native: Option<NativeOpts>,
        label_names: &[&str],
        store: &Store,
    ) -> Result<HistogramVec, Error> {
        let def = Def::new(&opts.common_opts, label_names, &["le"])?;
        let mut buckets = opts.buckets.clone();
        if buckets.last() == Some(&f64::INFINITY) {
            buckets.pop();
        }
        let valid =
            buckets.iter().all(|b| b.is_finite()) && buckets.windows(2).all(|w| w[0] < w[1]);
        if !valid {
            return Err(Error::InvalidBuckets {
                metric: def.name,
                buckets: opts.buckets,
            });
        }
        let shape = match &native {
            Some(n) => format!("histogram{buckets:?}{}", n.signature()),
            None => format!("histogram{buckets:?}"),
        };
        store.register(&def.name, def.signature(&shape))?;
        let mut bounds: Vec<String> = buckets
            .iter()
            .map(|b| key::float_to_go_string(*b))
            .collect();
        bounds.push("+Inf".to_owned());
        Ok(HistogramVec {
            inner: Arc::new(VecInner {
                def,
                upper: buckets.into(),
                bounds: bounds.into(),
                native,
                store: store.clone(),
                children: Children::new(),
            }),
        })
    }

    /// The histogram for `values`, created (all buckets at 0) if new.
    ///
    /// # Errors
    /// When the number of values differs from the number of label names.
    pub fn with_label_values(&self, values: &[&str]) -> Result<Histogram, Error> {
        let i = &self.inner;
        i.children.get_or_try_insert(values, || {
            let labels = i.def.labels(values)?;
            let name = &i.def.name;
            let bucket_sample = format!("{name}_bucket");
            let mut buckets = Vec::with_capacity(i.bounds.len());
            for le in i.bounds.iter() {
                let with_le = labels.iter().copied().chain([("le", le.as_str())]);
                let k = key::encode(name, &bucket_sample, with_le, &i.def.help);
                buckets.push(i.store.slot(Kind::Histogram, &k)?);
            }
            let k = key::encode(
                name,
                &format!("{name}_sum"),
                labels.iter().copied(),
                &i.def.help,
            );
            let sum = i.store.slot(Kind::Histogram, &k)?;
            let id = SeriesId::new(&i.store, name, &labels);
            let native = match i.native {
                Some(opts) => Some(NativeSeries::new(Arc::clone(&id), &i.def.help, opts)?),
                None => None,
            };
            Ok(Histogram {
                inner: Arc::new(Series {
                    // With no bounds, every observation is in +Inf: the fast path never applies.
                    first_upper: i.upper.first().copied().unwrap_or(f64::NEG_INFINITY),
                    first: buckets[0].clone(),
                    sum,
                    upper: Arc::clone(&i.upper),
                    buckets: buckets.into(),
                    native,
                    exemplars: LazyExemplars::new(
                        id,
                        &bucket_sample,
                        &i.def.help,
                        Arc::clone(&i.bounds),
                    ),
                }),
            })
        })
    }

    /// The bucket upper bounds (without `+Inf`).
    pub fn buckets(&self) -> &[f64] {
        &self.inner.upper
    }

    /// How many label combinations exist in this process.
    pub fn series_count(&self) -> usize {
        self.inner.children.len()
    }
}

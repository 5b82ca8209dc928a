//! Native histograms: Prometheus's sparse histograms with exponential buckets, kept per
//! process in the shared-memory store and merged exactly across processes.
//!
//! A native histogram is a classic [`Histogram`](crate::Histogram) with sparse buckets beside its
//! classic ones: the count and sum are the classic ones (an observation adds one more atomic
//! operation, on its native bucket), the text formats keep showing the classic buckets, and a
//! Prometheus that asks for the protobuf format (started with
//! `--enable-feature=native-histograms`) gets the native buckets too.
//!
//! ```
//! use gpe_core::native::NativeOpts;
//! use prometheus::HistogramOpts;
//!
//! # fn main() -> Result<(), gpe_core::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = gpe_core::Store::open(dir.path())?;
//! let latency = gpe_core::HistogramVec::with_native(
//!     HistogramOpts::new("latency_seconds", "Latency."),
//!     NativeOpts::new(3)?, // 8 buckets per power of two: each about 9 % wide
//!     &["route"],
//!     &store,
//! )?;
//! latency.with_label_values(&["/"])?.observe(0.042);
//! # Ok(())
//! # }
//! ```
//!
//! # In the store
//!
//! The native buckets live in `native_<pid>.ndb`, in the `.db` format but under a name Python
//! `prometheus_client` does not read (it would not know the samples), one entry per populated
//! bucket:
//!
//! | sample | extra labels | value |
//! |---|---|---|
//! | `<name>_positive` / `<name>_negative` (help left out) | `__schema`, `__index` | the bucket's count |
//! | `<name>_zero` | `__schema`, `__threshold`, `__max_buckets` | the zero bucket's count |
//!
//! A count is a `u64` in the value word (one `fetch_add` per observation, where an `f64`
//! needs a compare-and-swap loop), which only gpe reads: another reason the file is not `*.db`.
//!
//! The schema is in every key, so files written at different schemas (another build, an
//! archive) still merge exactly: the collector folds finer buckets into the coarsest schema seen.

mod buckets;
mod merge;
pub(crate) mod schema;
mod set;
mod table;

pub use buckets::NativeBuckets;
pub(crate) use merge::NativeMerge;
pub use schema::{MAX_SCHEMA, MIN_SCHEMA};
pub use set::NativeSet;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Error;
use crate::store::dbfile::Kind;
use crate::store::{key, SeriesId};
use crate::sys::mmap::Slot;
use table::Table;

/// client_golang's default zero bucket half-width, 2^-128.
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// The default limit on populated buckets before the resolution is halved (client_golang leaves
/// it to the user; 160 is the figure its documentation suggests).
pub const DEFAULT_MAX_BUCKETS: u32 = 160;

/// The native part of a histogram: its schema, zero bucket and bucket limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NativeOpts {
    schema: i8,
    zero_threshold: f64,
    max_buckets: u32,
}

impl Default for NativeOpts {
    fn default() -> Self {
        NativeOpts::DEFAULT
    }
}

impl NativeOpts {
    /// Schema 3 (each bucket about 9 % wider than the one before), client_golang's zero bucket,
    /// at most [`DEFAULT_MAX_BUCKETS`] buckets.
    pub const DEFAULT: NativeOpts = NativeOpts {
        schema: 3,
        zero_threshold: DEFAULT_ZERO_THRESHOLD,
        max_buckets: DEFAULT_MAX_BUCKETS,
    };

    /// Buckets at `schema` (from [`MIN_SCHEMA`] to [`MAX_SCHEMA`]): each power of two is split
    /// into `2^schema` buckets, so each bucket is `2^(2^-schema)` times as wide as the one
    /// before (schema 3: 1.09, about the 10 % resolution client_golang's
    /// `NativeHistogramBucketFactor: 1.1` gives).
    ///
    /// # Errors
    /// [`Error::InvalidNative`] for a schema outside -4..=8.
    pub fn new(schema: i8) -> Result<NativeOpts, Error> {
        if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
            return Err(Error::InvalidNative(format!(
                "schema {schema} is outside {MIN_SCHEMA}..={MAX_SCHEMA}"
            )));
        }
        Ok(NativeOpts {
            schema,
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            max_buckets: DEFAULT_MAX_BUCKETS,
        })
    }

    /// Observations with `|v| <= threshold` count in the zero bucket (default
    /// [`DEFAULT_ZERO_THRESHOLD`]).
    ///
    /// # Errors
    /// [`Error::InvalidNative`] unless `threshold` is finite and not negative.
    pub fn zero_threshold(mut self, threshold: f64) -> Result<NativeOpts, Error> {
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(Error::InvalidNative(format!(
                "zero threshold {threshold} is not a finite number >= 0"
            )));
        }
        self.zero_threshold = threshold;
        Ok(self)
    }

    /// At most `max` populated buckets are exposed: past it the collector halves the
    /// resolution until they fit (0: no limit). Default [`DEFAULT_MAX_BUCKETS`].
    pub fn max_buckets(mut self, max: u32) -> NativeOpts {
        self.max_buckets = max;
        self
    }

    /// The schema.
    pub fn schema(&self) -> i8 {
        self.schema
    }

    /// Part of a histogram's registered shape: two registrations must agree on it.
    pub(crate) fn signature(&self) -> String {
        format!(
            "native({},{},{})",
            self.schema, self.zero_threshold, self.max_buckets
        )
    }
}

/// The labels the store adds to a native histogram's keys.
pub(crate) mod labels {
    pub(crate) const SCHEMA: &str = "__schema";
    pub(crate) const INDEX: &str = "__index";
    pub(crate) const THRESHOLD: &str = "__threshold";
    pub(crate) const MAX_BUCKETS: &str = "__max_buckets";
}

/// One process's native buckets of one series.
#[derive(Debug)]
pub(crate) struct NativeSeries {
    opts: NativeOpts,
    /// For a positive schema, where in a power of two a value falls.
    lookup: Option<&'static schema::Lookup>,
    zero: Slot,
    positive: Table,
    negative: Table,
    id: Arc<SeriesId>,
}

impl NativeSeries {
    /// The native part of histogram series `id`; its zero bucket is made now, so that the
    /// series (with its schema and zero threshold) exists before its first observation.
    pub(crate) fn new(
        id: Arc<SeriesId>,
        help: &str,
        opts: NativeOpts,
    ) -> Result<NativeSeries, Error> {
        let schema = opts.schema.to_string();
        let threshold = key::float_to_go_string(opts.zero_threshold);
        let max = opts.max_buckets.to_string();
        let zero = id.try_slot(
            Kind::Native,
            &format!("{}_zero", id.metric()),
            &[
                (labels::SCHEMA, schema.as_str()),
                (labels::THRESHOLD, threshold.as_str()),
                (labels::MAX_BUCKETS, max.as_str()),
            ],
            help,
        )?;
        Ok(NativeSeries {
            lookup: (opts.schema > 0).then(|| schema::lookup(opts.schema)),
            zero,
            positive: Table::new(opts.schema),
            negative: Table::new(opts.schema),
            id,
            opts,
        })
    }

    /// Count `v` (not NaN) in its bucket: one atomic addition once the bucket exists.
    #[inline]
    pub(crate) fn observe(&self, v: f64) {
        let a = v.abs();
        if a <= self.opts.zero_threshold {
            self.zero.inc_count();
            return;
        }
        let i = schema::index(a, self.opts.schema, self.lookup);
        if v > 0.0 {
            self.positive.inc(i, |i| self.bucket_slot(true, i));
        } else {
            self.negative.inc(i, |i| self.bucket_slot(false, i));
        }
    }

    #[cold]
    fn bucket_slot(&self, positive: bool, index: i32) -> Option<Slot> {
        let side = if positive { "positive" } else { "negative" };
        let schema = self.opts.schema.to_string();
        let index = index.to_string();
        self.id.slot(
            Kind::Native,
            &format!("{}_{side}", self.id.metric()),
            &[
                (labels::SCHEMA, schema.as_str()),
                (labels::INDEX, index.as_str()),
            ],
            // The help is the classic part's (and the zero bucket's): each bucket's key leaves
            // it out, which makes the file smaller and every scrape's reading of it cheaper.
            "",
        )
    }

    /// This process's buckets.
    pub(crate) fn snapshot(&self) -> NativeBuckets {
        let mut out = NativeBuckets::new(self.opts.schema, self.opts.zero_threshold);
        out.zero_count = self.zero.count() as f64;
        let collect = |t: &Table| t.counts().into_iter().collect::<BTreeMap<i32, f64>>();
        out.positive = collect(&self.positive);
        out.negative = collect(&self.negative);
        out
    }
}

/// What one entry of a `native_*.ndb` file is, read back from its decoded key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Part {
    Bucket {
        positive: bool,
        schema: i8,
        index: i32,
    },
    Zero {
        schema: i8,
        threshold: f64,
        max_buckets: u32,
    },
}

impl Part {
    /// Take the store's labels out of a decoded key's `labels`, returning what the entry is, or
    /// `None` for a key that is not a native histogram's.
    pub(crate) fn take(
        metric: &str,
        sample: &str,
        labels: &mut BTreeMap<String, String>,
    ) -> Option<Part> {
        let suffix = sample.strip_prefix(metric)?.strip_prefix('_')?;
        let schema: i8 = labels.remove(labels::SCHEMA)?.parse().ok()?;
        if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
            return None;
        }
        match suffix {
            "positive" | "negative" => Some(Part::Bucket {
                positive: suffix == "positive",
                schema,
                index: labels.remove(labels::INDEX)?.parse().ok()?,
            }),
            "zero" => {
                let threshold: f64 = labels.remove(labels::THRESHOLD)?.parse().ok()?;
                let max_buckets = labels.remove(labels::MAX_BUCKETS)?.parse().ok()?;
                (threshold.is_finite() && threshold >= 0.0).then_some(Part::Zero {
                    schema,
                    threshold,
                    max_buckets,
                })
            }
            _ => None,
        }
    }
}

//! A native histogram's buckets merged across processes, and the rules that keep the merge
//! exact: buckets at a finer schema are folded into the coarsest schema seen, the widest zero
//! bucket wins, and the bucket limit lowers the resolution (client_golang's rule).

use std::collections::BTreeMap;

use super::schema::{self, MIN_SCHEMA};

/// The sparse buckets of one native histogram series, merged across processes.
///
/// Counts are per bucket (not cumulative). `positive` and `negative` map a bucket index at
/// [`schema`](Self::schema) to its count; values with `|v| <= zero_threshold` are in
/// `zero_count`.
///
/// ```
/// use gpe_core::native::NativeBuckets;
///
/// // One process observed at schema 3, another (an older build) at schema 2.
/// let mut merged = NativeBuckets::new(3, 1e-9);
/// merged.add_bucket(true, 3, 8, 5.0); // (2^(7/8), 2]
/// merged.add_bucket(true, 2, 4, 1.0); // (2^(3/4), 2]
/// merged.finish(160);
/// assert_eq!(merged.schema, 2);
/// assert_eq!(merged.positive.get(&4), Some(&6.0));
/// assert_eq!(merged.count(), 6.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NativeBuckets {
    /// The schema of the indices in `positive` and `negative`.
    pub schema: i8,
    /// The zero bucket's half-width.
    pub zero_threshold: f64,
    /// Observations with `|v| <= zero_threshold`.
    pub zero_count: f64,
    /// Counts of the buckets of positive observations, by index.
    pub positive: BTreeMap<i32, f64>,
    /// Counts of the buckets of negative observations, by the index of `|v|`.
    pub negative: BTreeMap<i32, f64>,
}

impl NativeBuckets {
    /// No observations yet.
    pub fn new(schema: i8, zero_threshold: f64) -> NativeBuckets {
        NativeBuckets {
            schema,
            zero_threshold,
            zero_count: 0.0,
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
        }
    }

    /// The number of observations.
    pub fn count(&self) -> f64 {
        self.zero_count + self.positive.values().sum::<f64>() + self.negative.values().sum::<f64>()
    }

    /// The number of populated buckets (not counting the zero bucket).
    pub fn bucket_count(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    /// Add `count` to bucket `index` of `schema` (positive or negative observations). A bucket
    /// of a coarser schema than the one held so far lowers the whole histogram to it.
    pub fn add_bucket(&mut self, positive: bool, schema: i8, index: i32, count: f64) {
        if schema < self.schema {
            self.reduce_to(schema);
        }
        let index = schema::reduce(index, schema, self.schema);
        let side = if positive {
            &mut self.positive
        } else {
            &mut self.negative
        };
        *side.entry(index).or_insert(0.0) += count;
    }

    /// Add `count` observations of a zero bucket `threshold` wide. The widest zero bucket wins
    /// (applied by [`finish`](Self::finish)).
    pub fn add_zero(&mut self, threshold: f64, count: f64) {
        self.zero_threshold = self.zero_threshold.max(threshold);
        self.zero_count += count;
    }

    /// Merge another series in (another process's, or an archive's).
    pub fn merge(&mut self, other: &NativeBuckets) {
        self.add_zero(other.zero_threshold, other.zero_count);
        for (&i, &c) in &other.positive {
            self.add_bucket(true, other.schema, i, c);
        }
        for (&i, &c) in &other.negative {
            self.add_bucket(false, other.schema, i, c);
        }
    }

    /// Lower the resolution to `schema` (no change if it is already as coarse).
    pub fn reduce_to(&mut self, schema: i8) {
        if schema >= self.schema {
            return;
        }
        let from = self.schema;
        for side in [&mut self.positive, &mut self.negative] {
            let old = std::mem::take(side);
            for (i, c) in old {
                *side.entry(schema::reduce(i, from, schema)).or_insert(0.0) += c;
            }
        }
        self.schema = schema;
    }

    /// Make the merge ready to expose: buckets that lie wholly inside the (widest) zero bucket
    /// move into it, empty buckets go, and while more than `max_buckets` buckets are populated
    /// the resolution is halved, as client_golang does when a histogram outgrows
    /// `NativeHistogramMaxBucketNumber` (down to schema -4; 0 means no limit).
    pub fn finish(&mut self, max_buckets: usize) {
        let threshold = self.zero_threshold;
        let schema = self.schema;
        let mut moved = 0.0;
        for side in [&mut self.positive, &mut self.negative] {
            side.retain(|&i, c| {
                if schema::upper_bound(i, schema) <= threshold {
                    moved += *c;
                    false
                } else {
                    *c != 0.0
                }
            });
        }
        self.zero_count += moved;
        while max_buckets > 0 && self.bucket_count() > max_buckets && self.schema > MIN_SCHEMA {
            self.reduce_to(self.schema - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_limit_halves_the_resolution_until_it_fits() {
        let mut h = NativeBuckets::new(3, 0.0);
        for i in 0..40 {
            h.add_bucket(true, 3, i, 1.0);
        }
        h.finish(10);
        assert!(h.bucket_count() <= 10);
        // 40 buckets at schema 3, 21 at 2, 11 at 1, 6 at 0.
        assert_eq!(h.schema, 0);
        assert_eq!(h.count(), 40.0);
    }

    #[test]
    fn a_wider_zero_bucket_swallows_the_buckets_inside_it() {
        let mut h = NativeBuckets::new(0, 1e-9);
        h.add_bucket(true, 0, -3, 2.0); // (1/16, 1/8]
        h.add_bucket(true, 0, 1, 1.0); // (1, 2]
        h.add_bucket(false, 0, -4, 4.0);
        h.add_zero(0.2, 1.0);
        h.finish(0);
        assert_eq!(h.zero_count, 7.0);
        assert_eq!(h.positive.len(), 1);
        assert!(h.negative.is_empty());
        assert_eq!(h.count(), 8.0);
    }

    #[test]
    fn merging_is_order_independent() {
        let mut a = NativeBuckets::new(3, 1e-9);
        a.add_bucket(true, 3, 5, 1.0);
        a.add_bucket(false, 3, -2, 2.0);
        let mut b = NativeBuckets::new(1, 1e-6);
        b.add_bucket(true, 1, 2, 3.0);
        b.add_zero(1e-6, 4.0);
        let mut ab = a.clone();
        ab.merge(&b);
        ab.finish(160);
        let mut ba = b.clone();
        ba.merge(&a);
        ba.finish(160);
        assert_eq!(ab, ba);
        assert_eq!(ab.schema, 1);
        assert_eq!(ab.count(), 10.0);
    }
}

//! One native histogram series merged from its store entries, wherever they were read (the
//! files of a directory, or the hashes a Redis sync wrote): the part both collectors share.

use super::{NativeBuckets, Part, DEFAULT_MAX_BUCKETS, MAX_SCHEMA};

/// The entries of one series (every process's and archive's) being merged: the buckets, folded
/// into the coarsest schema seen, and the smallest bucket limit any zero-bucket entry asked for.
#[derive(Debug, Clone)]
pub(crate) struct NativeMerge {
    buckets: NativeBuckets,
    /// `None` until a zero bucket's entry is seen; `u32::MAX` for "no limit" (0 in the key).
    limit: Option<u32>,
}

impl Default for NativeMerge {
    fn default() -> Self {
        NativeMerge {
            buckets: NativeBuckets::new(MAX_SCHEMA, 0.0),
            limit: None,
        }
    }
}

impl NativeMerge {
    /// Add one entry: `count` observations of the bucket (or zero bucket) `part`.
    pub(crate) fn add(&mut self, part: &Part, count: u64) {
        // Exact while the merged count of a bucket stays below 2^53.
        let count = count as f64;
        match *part {
            Part::Bucket {
                positive,
                schema,
                index,
            } => self.buckets.add_bucket(positive, schema, index, count),
            Part::Zero {
                schema,
                threshold,
                max_buckets,
            } => {
                self.buckets.reduce_to(schema);
                self.buckets.add_zero(threshold, count);
                let max = if max_buckets == 0 {
                    u32::MAX
                } else {
                    max_buckets
                };
                self.limit = Some(self.limit.map_or(max, |l| l.min(max)));
            }
        }
    }

    /// The merged buckets, ready to expose ([`NativeBuckets::finish`] with the smallest limit
    /// seen; [`DEFAULT_MAX_BUCKETS`] when no zero bucket was).
    pub(crate) fn finish(self) -> NativeBuckets {
        let limit = self
            .limit
            .map_or(DEFAULT_MAX_BUCKETS, |l| if l == u32::MAX { 0 } else { l });
        let mut buckets = self.buckets;
        buckets.finish(limit as usize);
        buckets
    }
}

//! The native buckets of one scrape, found by family and series.

use std::collections::HashMap;

use super::NativeBuckets;

/// The native buckets of one scrape, by histogram family and series (labels sorted by name, as
/// the collector's families have them). The text formats ignore them; the protobuf exposition
/// puts them beside the classic buckets of the same series.
///
/// ```
/// use gpe_core::native::{NativeBuckets, NativeSet};
///
/// let mut set = NativeSet::default();
/// let labels = vec![("route".to_owned(), "/".to_owned())];
/// set.insert("latency_seconds", labels.clone(), NativeBuckets::new(3, 0.0));
/// assert!(set.get("latency_seconds", &labels).is_some());
/// assert_eq!(set.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeSet {
    by_family: HashMap<String, HashMap<Vec<(String, String)>, NativeBuckets>>,
}

impl NativeSet {
    /// Put the buckets of series `labels` of `family`.
    pub fn insert(&mut self, family: &str, labels: Vec<(String, String)>, buckets: NativeBuckets) {
        self.by_family
            .entry(family.to_owned())
            .or_default()
            .insert(labels, buckets);
    }

    /// The buckets of series `labels` of `family`.
    pub fn get(&self, family: &str, labels: &[(String, String)]) -> Option<&NativeBuckets> {
        self.by_family.get(family)?.get(labels)
    }

    /// Whether `family` has native buckets.
    pub fn has_family(&self, family: &str) -> bool {
        self.by_family.contains_key(family)
    }

    /// How many series have native buckets.
    pub fn len(&self) -> usize {
        self.by_family.values().map(HashMap::len).sum()
    }

    /// Whether no series has native buckets.
    pub fn is_empty(&self) -> bool {
        self.by_family.is_empty()
    }
}

//! A series' identity, for the slots made the first time they are needed (a native
//! histogram's buckets, exemplars): the store, the metric and the labels, kept once per series
//! and shared by everything that makes such slots for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::dbfile::Kind;
use super::{key, Store};
use crate::error::Error;
use crate::sys::mmap::Slot;

/// One series: where its slots are made, and the name and labels of their keys.
#[derive(Debug)]
pub(crate) struct SeriesId {
    store: Store,
    metric: String,
    labels: Vec<(String, String)>,
}

impl SeriesId {
    pub(crate) fn new(store: &Store, metric: &str, labels: &[(&str, &str)]) -> Arc<SeriesId> {
        Arc::new(SeriesId {
            store: store.clone(),
            metric: metric.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    /// The metric's name.
    pub(crate) fn metric(&self) -> &str {
        &self.metric
    }

    /// The slot of sample `sample` of this series with the `extra` labels, in the file of
    /// `kind`.
    pub(crate) fn try_slot(
        &self,
        kind: Kind,
        sample: &str,
        extra: &[(&str, &str)],
        help: &str,
    ) -> Result<Slot, Error> {
        let labels = self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let k = key::encode(
            &self.metric,
            sample,
            labels.chain(extra.iter().copied()),
            help,
        );
        self.store.slot(kind, &k)
    }

    /// [`try_slot`](Self::try_slot) on an observation's path: `None` (logged once per process)
    /// when the store cannot make the slot; what needed it is then lost rather than the request
    /// failing.
    #[cold]
    pub(crate) fn slot(
        &self,
        kind: Kind,
        sample: &str,
        extra: &[(&str, &str)],
        help: &str,
    ) -> Option<Slot> {
        match self.try_slot(kind, sample, extra, help) {
            Ok(slot) => Some(slot),
            Err(e) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, kind = %kind.prefix(), "cannot store a native histogram bucket or an exemplar; what needs it is dropped");
                }
                None
            }
        }
    }
}

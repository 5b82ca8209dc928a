//! Shared machinery of the metric types: definitions, validation and labelled vectors.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::fast::RandomState;
use std::sync::RwLock;

use crate::error::{Error, Rejection};

/// A validated metric definition: full name, help, constant labels and label names.
#[derive(Debug, Clone)]
pub(crate) struct Def {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) const_labels: Vec<(String, String)>,
    pub(crate) label_names: Vec<String>,
}

impl Def {
    /// Validate `opts` plus `label_names` with the `prometheus` crate's own rules, plus the
    /// reserved `__` prefix of label names (as Python `prometheus_client` and client_golang).
    pub(crate) fn new(
        opts: &prometheus::Opts,
        label_names: &[&str],
        reserved: &[&str],
    ) -> Result<Def, Error> {
        let name = opts.fq_name();
        let desc = prometheus::core::Desc::new(
            name.clone(),
            opts.help.clone(),
            label_names.iter().map(|s| (*s).to_owned()).collect(),
            opts.const_labels.clone(),
        )
        .map_err(|e| Error::InvalidMetric {
            metric: name.clone(),
            reason: Rejection::Prometheus(e),
        })?;
        for l in label_names
            .iter()
            .copied()
            .chain(opts.const_labels.keys().map(String::as_str))
        {
            if l.starts_with("__") {
                return Err(Error::InvalidMetric {
                    metric: name,
                    reason: Rejection::ReservedPrefix(l.to_owned()),
                });
            }
            if reserved.contains(&l) {
                return Err(Error::InvalidMetric {
                    metric: name,
                    reason: Rejection::ReservedLabel(l.to_owned()),
                });
            }
        }
        let mut const_labels: Vec<(String, String)> = opts
            .const_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        const_labels.sort();
        Ok(Def {
            name,
            help: desc.help,
            const_labels,
            label_names: label_names.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// The label pairs of the series with `values` (constant labels included).
    pub(crate) fn labels<'a>(
        &'a self,
        values: &'a [&'a str],
    ) -> Result<Vec<(&'a str, &'a str)>, Error> {
        if values.len() != self.label_names.len() {
            return Err(Error::LabelCount {
                metric: self.name.clone(),
                expected: self.label_names.len(),
                names: self.label_names.join(", "),
                got: values.len(),
            });
        }
        Ok(self
            .const_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(
                self.label_names
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().copied()),
            )
            .collect())
    }

    /// A string identifying the shape, for conflict detection.
    pub(crate) fn signature(&self, kind: &str) -> String {
        format!(
            "{kind}|{}|{:?}|{:?}",
            self.help, self.label_names, self.const_labels
        )
    }
}

/// Children of a labelled vector, found without allocating once they exist.
///
/// Label values can come from clients (methods, paths), so the hash is seeded per vector
/// (foldhash's `RandomState`), not a fixed function an attacker could collide.
#[derive(Debug)]
pub(crate) struct Children<T> {
    hasher: RandomState,
    map: RwLock<HashMap<u64, Vec<(Box<[String]>, T)>>>,
}

impl<T: Clone> Children<T> {
    pub(crate) fn new() -> Self {
        Children {
            hasher: RandomState::default(),
            map: RwLock::new(HashMap::new()),
        }
    }

    fn hash(&self, values: &[&str]) -> u64 {
        let mut h = self.hasher.build_hasher();
        values.len().hash(&mut h);
        for v in values {
            v.hash(&mut h);
        }
        h.finish()
    }

    /// The child for `values`, made by `make` if new.
    pub(crate) fn get_or_try_insert(
        &self,
        values: &[&str],
        make: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let h = self.hash(values);
        let same =
            |k: &[String]| k.len() == values.len() && k.iter().zip(values).all(|(a, b)| a == b);
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = map.get(&h).and_then(|b| b.iter().find(|(k, _)| same(k))) {
                return Ok(found.1.clone());
            }
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let bucket = map.entry(h).or_default();
        if let Some(found) = bucket.iter().find(|(k, _)| same(k)) {
            return Ok(found.1.clone());
        }
        let child = make()?;
        bucket.push((
            values.iter().map(|s| (*s).to_owned()).collect(),
            child.clone(),
        ));
        Ok(child)
    }

    /// How many children exist.
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }
}

//! Getting the merged metrics out: the Prometheus text format 0.0.4 and OpenMetrics 1.0 (negotiated
//! from `Accept`, gzip when `Accept-Encoding` allows it), the exporter's configuration from the
//! Python exporter's environment variables ([`config`]), and the `/metrics` server ([`server`],
//! feature `server`).

pub mod config;
pub mod protobuf;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
mod text;

pub use text::{
    encode, encode_openmetrics, encode_openmetrics_scrape, encode_text, negotiate, Encoded,
    ExpositionError, Format, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE,
};

use prometheus::proto::MetricFamily;

use crate::exemplar::ExemplarSet;
use crate::native::NativeSet;

/// What one scrape exposes: the metric families, and the native buckets of the histograms that
/// have them (only the protobuf format shows those).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Scrape {
    /// The families.
    pub families: Vec<MetricFamily>,
    /// The native buckets, by family and series.
    pub native: NativeSet,
    /// The exemplars, by family, series and bucket (only OpenMetrics and protobuf show them).
    pub exemplars: ExemplarSet,
}

impl Scrape {
    /// A scrape of `families` with native buckets.
    pub fn new(families: Vec<MetricFamily>, native: NativeSet) -> Scrape {
        Scrape {
            families,
            native,
            exemplars: ExemplarSet::default(),
        }
    }

    /// This scrape with `exemplars`.
    pub fn with_exemplars(mut self, exemplars: ExemplarSet) -> Scrape {
        self.exemplars = exemplars;
        self
    }

    /// Encode for a scraper: the format from `accept`, gzip if `accept_encoding` allows it.
    ///
    /// # Errors
    /// When encoding or compressing fails.
    pub fn encode(
        &self,
        accept: Option<&str>,
        accept_encoding: Option<&str>,
    ) -> Result<Encoded, ExpositionError> {
        text::encode_scrape(self, accept, accept_encoding)
    }
}

impl From<Vec<MetricFamily>> for Scrape {
    fn from(families: Vec<MetricFamily>) -> Scrape {
        Scrape::new(families, NativeSet::default())
    }
}

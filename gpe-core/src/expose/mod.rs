//! Getting the merged metrics out: the Prometheus text format 0.0.4 and OpenMetrics 1.0 (negotiated
//! from `Accept`, gzip when `Accept-Encoding` allows it), the exporter's configuration from the
//! Python exporter's environment variables ([`config`]), and the `/metrics` server ([`server`],
//! feature `server`).

pub mod config;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
mod text;

pub use text::{
    encode, encode_openmetrics, encode_text, negotiate, Encoded, ExpositionError, Format,
    OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE,
};

//! Prometheus's protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages, the one format that carries native histograms. Prometheus asks for it (first in
//! its `Accept`) when started with `--enable-feature=native-histograms`.
//!
//! The messages are client_model's `metrics.proto`, generated with prost ([`client_model`]).
//!
//! ```
//! use gpe_core::expose::{protobuf, Scrape};
//! use prost::Message;
//!
//! let registry = prometheus::Registry::new();
//! let c = prometheus::IntCounter::new("jobs_total", "Jobs.").unwrap();
//! registry.register(Box::new(c.clone())).unwrap();
//! c.inc();
//! let body = protobuf::encode(&Scrape::from(registry.gather()));
//! let mf = protobuf::client_model::MetricFamily::decode_length_delimited(&body[..]).unwrap();
//! assert_eq!(mf.name(), "jobs_total");
//! assert_eq!(mf.metric[0].counter.as_ref().unwrap().value(), 1.0);
//! ```

#[rustfmt::skip]
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod client_model;

use std::collections::BTreeMap;

use prometheus::proto::{self, MetricType};
use prost::Message;

use super::Scrape;
use crate::exemplar::{Exemplar, ExemplarSet};
use crate::native::{NativeBuckets, NativeSet};
use client_model as pb;

/// Content type of the delimited protobuf format.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Every family of `scrape` as one length-delimited message each, native buckets included.
pub fn encode(scrape: &Scrape) -> Vec<u8> {
    encode_families(&scrape.families, &scrape.native, &scrape.exemplars)
}

pub(super) fn encode_families(
    families: &[proto::MetricFamily],
    native: &NativeSet,
    exemplars: &ExemplarSet,
) -> Vec<u8> {
    let mut out = Vec::new();
    for mf in super::text::dedup(families) {
        let message = family(&mf, native, exemplars);
        // Writing into a Vec cannot fail.
        let _ = message.encode_length_delimited(&mut out);
    }
    out
}

fn family(
    mf: &proto::MetricFamily,
    native: &NativeSet,
    exemplars: &ExemplarSet,
) -> pb::MetricFamily {
    let kind = match mf.get_field_type() {
        MetricType::COUNTER => pb::MetricType::Counter,
        MetricType::GAUGE => pb::MetricType::Gauge,
        MetricType::SUMMARY => pb::MetricType::Summary,
        MetricType::HISTOGRAM => pb::MetricType::Histogram,
        MetricType::UNTYPED => pb::MetricType::Untyped,
    };
    let natives = native.has_family(mf.name());
    let with_exemplars = exemplars.has_family(mf.name());
    pb::MetricFamily {
        name: Some(mf.name().to_owned()),
        help: Some(mf.help().to_owned()),
        r#type: Some(kind as i32),
        metric: mf
            .get_metric()
            .iter()
            .map(|m| {
                let mut out = metric(m, kind);
                if natives || with_exemplars {
                    let labels: Vec<(String, String)> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_owned(), l.value().to_owned()))
                        .collect();
                    let native = native.get(mf.name(), &labels);
                    let found = exemplars.series(mf.name(), &labels);
                    add_exemplars(&mut out, found, native.is_some());
                    if let (Some(h), Some(n)) = (out.histogram.as_mut(), native) {
                        add_native(h, n);
                    }
                }
                out
            })
            .collect(),
        unit: None,
    }
}

fn metric(m: &proto::Metric, kind: pb::MetricType) -> pb::Metric {
    let mut out = pb::Metric {
        label: m
            .get_label()
            .iter()
            .map(|l| pb::LabelPair {
                name: Some(l.name().to_owned()),
                value: Some(l.value().to_owned()),
            })
            .collect(),
        timestamp_ms: (m.timestamp_ms() != 0).then(|| m.timestamp_ms()),
        ..pb::Metric::default()
    };
    match kind {
        pb::MetricType::Counter => {
            out.counter = Some(pb::Counter {
                value: Some(m.get_counter().get_value()),
                ..pb::Counter::default()
            });
        }
        pb::MetricType::Gauge => {
            out.gauge = Some(pb::Gauge {
                value: Some(m.get_gauge().get_value()),
            });
        }
        pb::MetricType::Untyped => {
            // The `prometheus` crate deprecates its untyped accessors, yet still produces them.
            #[allow(deprecated)]
            let value = m.get_untyped().get_value();
            out.untyped = Some(pb::Untyped { value: Some(value) });
        }
        pb::MetricType::Summary => {
            let s = m.get_summary();
            out.summary = Some(pb::Summary {
                sample_count: Some(s.sample_count()),
                sample_sum: Some(s.sample_sum()),
                quantile: s
                    .get_quantile()
                    .iter()
                    .map(|q| pb::Quantile {
                        quantile: Some(q.quantile()),
                        value: Some(q.value()),
                    })
                    .collect(),
                created_timestamp: None,
            });
        }
        pb::MetricType::Histogram | pb::MetricType::GaugeHistogram => {
            let h = m.get_histogram();
            out.histogram = Some(pb::Histogram {
                sample_count: Some(h.get_sample_count()),
                sample_sum: Some(h.get_sample_sum()),
                bucket: h
                    .get_bucket()
                    .iter()
                    .map(|b| pb::Bucket {
                        cumulative_count: Some(b.cumulative_count()),
                        upper_bound: Some(b.upper_bound()),
                        ..pb::Bucket::default()
                    })
                    .collect(),
                ..pb::Histogram::default()
            });
        }
    }
    out
}

/// An exemplar as client_model has it: `trace_id` and `span_id` labels, value, timestamp.
fn exemplar(e: &Exemplar) -> pb::Exemplar {
    let label = |name: &str, value: String| pb::LabelPair {
        name: Some(name.to_owned()),
        value: Some(value),
    };
    let seconds = e.timestamp.floor();
    pb::Exemplar {
        label: vec![
            label("trace_id", e.trace.trace_id_hex()),
            label("span_id", e.trace.span_id_hex()),
        ],
        value: Some(e.value),
        timestamp: Some(prost_types::Timestamp {
            seconds: seconds as i64,
            nanos: ((e.timestamp - seconds) * 1e9) as i32,
        }),
    }
}

/// Put a series' exemplars where client_model wants them: a counter's on the counter, a
/// histogram's on its classic buckets (an explicit `+Inf` bucket for the exemplar of `+Inf`)
/// and, for a native histogram, all of them in its `exemplars` too.
fn add_exemplars(m: &mut pb::Metric, found: &[(Option<f64>, Exemplar)], native: bool) {
    if found.is_empty() {
        return;
    }
    if let Some(c) = m.counter.as_mut() {
        c.exemplar = found
            .iter()
            .find(|(le, _)| le.is_none())
            .map(|(_, e)| exemplar(e));
    }
    let Some(h) = m.histogram.as_mut() else {
        return;
    };
    for b in &mut h.bucket {
        b.exemplar = found
            .iter()
            .find(|(le, _)| *le == Some(b.upper_bound()))
            .map(|(_, e)| exemplar(e));
    }
    if let Some((_, e)) = found.iter().find(|(le, _)| *le == Some(f64::INFINITY)) {
        h.bucket.push(pb::Bucket {
            cumulative_count: h.sample_count,
            upper_bound: Some(f64::INFINITY),
            exemplar: Some(exemplar(e)),
            ..pb::Bucket::default()
        });
    }
    if native {
        h.exemplars = found.iter().map(|(_, e)| exemplar(e)).collect();
    }
}

/// Put the native buckets beside the classic ones. The count is the larger of the two reads
/// (the classic and native files are read one after the other while workers observe), so it is
/// never below the buckets' total, which Prometheus checks.
fn add_native(h: &mut pb::Histogram, n: &NativeBuckets) {
    let count = n.count().round() as u64;
    h.sample_count = Some(h.sample_count().max(count));
    h.schema = Some(i32::from(n.schema));
    h.zero_threshold = Some(n.zero_threshold);
    h.zero_count = Some(n.zero_count.round() as u64);
    (h.negative_span, h.negative_delta) = spans(&n.negative);
    (h.positive_span, h.positive_delta) = spans(&n.positive);
    if h.positive_span.is_empty() && h.negative_span.is_empty() {
        // A no-op span: a native histogram with no observations yet is still one.
        h.positive_span.push(pb::BucketSpan {
            offset: Some(0),
            length: Some(0),
        });
    }
}

/// Buckets (index -> count) as spans of consecutive indices and count deltas.
fn spans(buckets: &BTreeMap<i32, f64>) -> (Vec<pb::BucketSpan>, Vec<i64>) {
    let mut spans: Vec<pb::BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let mut next: Option<i32> = None; // the index right after the last bucket
    let mut last = 0i64;
    for (&i, &c) in buckets {
        match (next, spans.last_mut()) {
            (Some(n), Some(span)) if n == i => span.length = Some(span.length() + 1),
            _ => spans.push(pb::BucketSpan {
                offset: Some(next.map_or(i, |n| i - n)),
                length: Some(1),
            }),
        }
        let c = c.round() as i64;
        deltas.push(c - last);
        last = c;
        next = Some(i + 1);
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_become_spans_and_deltas() {
        let b: BTreeMap<i32, f64> = [(-2, 3.0), (-1, 5.0), (0, 5.0), (4, 1.0), (5, 2.0)].into();
        let (spans, deltas) = spans(&b);
        let spans: Vec<(i32, u32)> = spans.iter().map(|s| (s.offset(), s.length())).collect();
        assert_eq!(spans, [(-2, 3), (3, 2)]);
        assert_eq!(deltas, [3, 2, 0, -4, 1]);
        assert_eq!(super::spans(&BTreeMap::new()), (vec![], vec![]));
    }
}

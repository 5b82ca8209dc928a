//! Exposition: Prometheus text format 0.0.4 and OpenMetrics 1.0, negotiated from `Accept`, gzip
//! when `Accept-Encoding` allows it. A family name is never emitted twice.
//!
//! ```
//! use gpe_core::expose::{negotiate, Format};
//! assert_eq!(negotiate(None), Format::Text);
//! assert_eq!(negotiate(Some("application/openmetrics-text; version=1.0.0")), Format::OpenMetrics);
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use prometheus::proto::{MetricFamily, MetricType};

use super::{protobuf, Scrape};
use crate::exemplar::{Exemplar, ExemplarSet};
use crate::native::NativeSet;

/// Content type of the text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encoding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpositionError {
    /// The `prometheus` text encoder refused a family.
    #[error("text encoding failed: {0}")]
    Encode(#[source] prometheus::Error),
    /// Compressing failed.
    #[error("gzip failed: {0}")]
    Gzip(#[from] std::io::Error),
}

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
    /// Prometheus's delimited protobuf (`io.prometheus.client.MetricFamily`), the format of
    /// native histograms.
    Protobuf,
}

/// An encoded scrape body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Encoded {
    /// `Content-Type` to send.
    pub content_type: &'static str,
    /// `Content-Encoding` to send, if compressed.
    pub content_encoding: Option<&'static str>,
    /// The body.
    pub body: Vec<u8>,
}

/// The q-value of `media` in an `Accept`-style header (0 when absent).
fn quality(header: &str, media: &str) -> f32 {
    header
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';').map(str::trim);
            let m = it.next()?;
            if !m.eq_ignore_ascii_case(media) {
                return None;
            }
            let q = it
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(q)
        })
        .fold(0.0, f32::max)
}

/// The q-value of the delimited `MetricFamily` protobuf in `header` (0 when absent, or when it
/// names another message or encoding).
fn protobuf_quality(header: &str) -> f32 {
    header
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';').map(str::trim);
            if !it
                .next()?
                .eq_ignore_ascii_case("application/vnd.google.protobuf")
            {
                return None;
            }
            let mut q = 1.0;
            for p in it {
                let (k, v) = p.split_once('=')?;
                match k.trim() {
                    "proto" if v.trim() != "io.prometheus.client.MetricFamily" => return None,
                    "encoding" if v.trim() != "delimited" => return None,
                    "q" => q = v.trim().parse::<f32>().ok()?,
                    _ => {}
                }
            }
            Some(q)
        })
        .fold(0.0, f32::max)
}

/// The format the scraper prefers: protobuf or OpenMetrics when it lists them with a q-value not
/// lower than text/plain's (protobuf first on a tie), else text.
///
/// ```
/// use gpe_core::expose::{negotiate, Format};
/// // What Prometheus sends with `--enable-feature=native-histograms`.
/// let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
///               encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.7,\
///               text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
/// assert_eq!(negotiate(Some(accept)), Format::Protobuf);
/// ```
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let text = quality(accept, "text/plain").max(quality(accept, "*/*") * 0.999);
    let om = quality(accept, "application/openmetrics-text");
    let pb = protobuf_quality(accept);
    if pb > 0.0 && pb >= om && pb >= text {
        Format::Protobuf
    } else if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Merge families of one name (and type), drop empty and nameless ones, sort by name.
pub(super) fn dedup(families: &[MetricFamily]) -> Vec<MetricFamily> {
    let mut by_name: BTreeMap<&str, MetricFamily> = BTreeMap::new();
    for mf in families.iter().filter(|f| !f.get_metric().is_empty()) {
        if mf.name().is_empty() {
            // Only a corrupt or foreign file has a key without a metric name; the `prometheus`
            // encoder would fail the whole scrape over it.
            tracing::warn!("skipping a metric family without a name");
            continue;
        }
        match by_name.get_mut(mf.name()) {
            None => {
                by_name.insert(mf.name(), mf.clone());
            }
            Some(existing) if existing.get_field_type() == mf.get_field_type() => {
                existing
                    .mut_metric()
                    .extend(mf.get_metric().iter().cloned());
            }
            Some(_) => {
                tracing::warn!(
                    metric = mf.name(),
                    "two families with one name and different types; keeping the first"
                );
            }
        }
    }
    by_name.into_values().collect()
}

/// Prometheus text format 0.0.4.
///
/// # Errors
/// When the `prometheus` encoder rejects a family.
pub fn encode_text(families: &[MetricFamily]) -> Result<String, ExpositionError> {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    for mf in dedup(families) {
        if mf.get_field_type() == MetricType::UNTYPED {
            untyped_text(&mf, &mut out);
            continue;
        }
        encoder
            .encode_utf8(std::slice::from_ref(&mf), &mut out)
            .map_err(ExpositionError::Encode)?;
    }
    Ok(out)
}

/// An untyped family in the text format, which has them: the `prometheus` encoder panics on
/// them (`unimplemented!`), and a registry given to the collector may well hold one.
fn untyped_text(mf: &MetricFamily, out: &mut String) {
    if !mf.help().is_empty() {
        let _ = write!(out, "# HELP {} ", mf.name());
        for c in mf.help().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "# TYPE {} untyped", mf.name());
    for m in mf.get_metric() {
        let labels = labels_of(m);
        // The `prometheus` crate deprecates its untyped accessors, yet still produces them.
        #[allow(deprecated)]
        let mut value = m.get_untyped().get_value().to_string();
        if m.timestamp_ms() != 0 {
            let _ = write!(value, " {}", m.timestamp_ms());
        }
        sample(out, mf.name(), &labels, &value);
    }
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// The label pairs of a series, to be extended (`le`, `quantile`) and written.
fn labels_of(m: &prometheus::proto::Metric) -> Vec<(&str, String)> {
    m.get_label()
        .iter()
        .map(|l| (l.name(), l.value().to_owned()))
        .collect()
}

/// The `_count` and `_sum` samples of a histogram or summary.
fn count_and_sum(out: &mut String, base: &str, labels: &[(&str, String)], count: u64, sum: f64) {
    sample(out, &format!("{base}_count"), labels, &count.to_string());
    sample(out, &format!("{base}_sum"), labels, &float(sum));
}

fn sample(out: &mut String, name: &str, labels: &[(&str, String)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// OpenMetrics 1.0.0 text (ends with `# EOF`).
///
/// # Errors
/// Never at present; the `Result` leaves room for validation.
pub fn encode_openmetrics(families: &[MetricFamily]) -> Result<String, ExpositionError> {
    openmetrics(families, &ExemplarSet::default())
}

/// OpenMetrics 1.0.0 text of a [`Scrape`], with its exemplars.
///
/// # Errors
/// As [`encode_openmetrics`].
pub fn encode_openmetrics_scrape(scrape: &Scrape) -> Result<String, ExpositionError> {
    openmetrics(&scrape.families, &scrape.exemplars)
}

/// `value`, followed by `exemplar` in OpenMetrics' syntax when there is one.
fn with_exemplar(mut value: String, exemplar: Option<&Exemplar>) -> String {
    if let Some(e) = exemplar {
        let _ = write!(
            value,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}",
            e.trace.trace_id_hex(),
            e.trace.span_id_hex(),
            float(e.value),
            float(e.timestamp)
        );
    }
    value
}

fn openmetrics(
    families: &[MetricFamily],
    exemplars: &ExemplarSet,
) -> Result<String, ExpositionError> {
    let mut out = String::new();
    for mf in dedup(families) {
        let with_exemplars = exemplars.has_family(mf.name());
        let (typ, base) = match mf.get_field_type() {
            MetricType::COUNTER => (
                "counter",
                mf.name().strip_suffix("_total").unwrap_or(mf.name()),
            ),
            MetricType::GAUGE => ("gauge", mf.name()),
            MetricType::HISTOGRAM => ("histogram", mf.name()),
            MetricType::SUMMARY => ("summary", mf.name()),
            MetricType::UNTYPED => ("unknown", mf.name()),
        };
        let _ = write!(out, "# TYPE {base} {typ}\n# HELP {base} ");
        escape_help(mf.help(), &mut out);
        out.push('\n');
        for m in mf.get_metric() {
            let labels = labels_of(m);
            let owned: Vec<(String, String)> = if with_exemplars {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            let exemplar = |le: Option<f64>| exemplars.get(mf.name(), &owned, le);
            match mf.get_field_type() {
                MetricType::COUNTER => sample(
                    &mut out,
                    &format!("{base}_total"),
                    &labels,
                    &with_exemplar(float(m.get_counter().get_value()), exemplar(None)),
                ),
                MetricType::GAUGE => {
                    sample(&mut out, base, &labels, &float(m.get_gauge().get_value()))
                }
                // The `prometheus` crate deprecates its untyped accessors, yet still produces them.
                #[allow(deprecated)]
                MetricType::UNTYPED => {
                    sample(&mut out, base, &labels, &float(m.get_untyped().get_value()))
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let bucket = format!("{base}_bucket");
                    for b in h.get_bucket() {
                        let mut l = labels.clone();
                        l.push(("le", crate::store::key::float_to_go_string(b.upper_bound())));
                        let value = b.cumulative_count().to_string();
                        let value = with_exemplar(value, exemplar(Some(b.upper_bound())));
                        sample(&mut out, &bucket, &l, &value);
                    }
                    let mut l = labels.clone();
                    l.push(("le", "+Inf".to_owned()));
                    let value = h.get_sample_count().to_string();
                    let value = with_exemplar(value, exemplar(Some(f64::INFINITY)));
                    sample(&mut out, &bucket, &l, &value);
                    count_and_sum(
                        &mut out,
                        base,
                        &labels,
                        h.get_sample_count(),
                        h.get_sample_sum(),
                    );
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        let mut l = labels.clone();
                        l.push(("quantile", float(q.quantile())));
                        sample(&mut out, base, &l, &float(q.value()));
                    }
                    count_and_sum(&mut out, base, &labels, s.sample_count(), s.sample_sum());
                }
            }
        }
    }
    out.push_str("# EOF\n");
    Ok(out)
}

/// Encode for a scraper: format from `accept`, gzip if `accept_encoding` allows it.
///
/// # Errors
/// When encoding or compressing fails.
pub fn encode(
    families: &[MetricFamily],
    accept: Option<&str>,
    accept_encoding: Option<&str>,
) -> Result<Encoded, ExpositionError> {
    let none = (NativeSet::default(), ExemplarSet::default());
    encode_parts(families, &none.0, &none.1, accept, accept_encoding)
}

/// [`Scrape::encode`]: [`encode`] with the native buckets for the protobuf format.
pub(super) fn encode_scrape(
    scrape: &Scrape,
    accept: Option<&str>,
    accept_encoding: Option<&str>,
) -> Result<Encoded, ExpositionError> {
    let Scrape {
        families,
        native,
        exemplars,
    } = scrape;
    encode_parts(families, native, exemplars, accept, accept_encoding)
}

fn encode_parts(
    families: &[MetricFamily],
    native: &NativeSet,
    exemplars: &ExemplarSet,
    accept: Option<&str>,
    accept_encoding: Option<&str>,
) -> Result<Encoded, ExpositionError> {
    let (content_type, text) = match negotiate(accept) {
        Format::OpenMetrics => (
            OPENMETRICS_CONTENT_TYPE,
            openmetrics(families, exemplars)?.into_bytes(),
        ),
        Format::Text => (TEXT_CONTENT_TYPE, encode_text(families)?.into_bytes()),
        Format::Protobuf => (
            protobuf::PROTOBUF_CONTENT_TYPE,
            protobuf::encode_families(families, native, exemplars),
        ),
    };
    let gzip = accept_encoding.is_some_and(|h| quality(h, "gzip") > 0.0);
    if !gzip {
        return Ok(Encoded {
            content_type,
            content_encoding: None,
            body: text,
        });
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&text)?;
    Ok(Encoded {
        content_type,
        content_encoding: Some("gzip"),
        body: enc.finish()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(Some("text/plain")), Format::Text);
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.2,text/plain")),
            Format::Text
        );
        assert_eq!(negotiate(Some("*/*")), Format::Text);
    }

    #[test]
    fn untyped_families_are_encoded_not_a_panic() {
        let mut mf = MetricFamily::default();
        mf.set_name("u".to_owned());
        mf.set_help("Back\\slash\nnewline \"q\".".to_owned());
        mf.set_field_type(MetricType::UNTYPED);
        let mut m = prometheus::proto::Metric::default();
        let mut l = prometheus::proto::LabelPair::default();
        l.set_name("a".to_owned());
        l.set_value("x\"\n\\".to_owned());
        m.set_label(vec![l]);
        #[allow(deprecated)]
        {
            let mut u = prometheus::proto::Untyped::default();
            u.set_value(1.5);
            m.set_untyped(u);
        }
        mf.set_metric(vec![m]);
        let mut c = MetricFamily::default();
        c.set_name("c_total".to_owned());
        c.set_help("C.".to_owned());
        c.set_field_type(MetricType::COUNTER);
        c.set_metric(vec![prometheus::proto::Metric::default()]);
        assert_eq!(
            encode_text(&[mf, c]).unwrap(),
            concat!(
                "# HELP c_total C.\n",
                "# TYPE c_total counter\n",
                "c_total 0\n",
                "# HELP u Back\\\\slash\\nnewline \"q\".\n",
                "# TYPE u untyped\n",
                "u{a=\"x\\\"\\n\\\\\"} 1.5\n",
            )
        );
    }

    #[test]
    fn gzip_only_when_accepted() {
        let e = encode(&[], None, Some("gzip, deflate")).unwrap();
        assert_eq!(e.content_encoding, Some("gzip"));
        let e = encode(&[], None, Some("gzip;q=0, identity")).unwrap();
        assert_eq!(e.content_encoding, None);
    }
}

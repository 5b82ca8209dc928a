//! Native histograms across processes: exact merges, the bucket limit, compaction, the protobuf
//! exposition decoded by prost, and the directory still read by Python `prometheus_client` and
//! promtool.

mod common;
#[path = "shared/observations.rs"]
mod observations;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use gpe_core::expose::protobuf::client_model as pb;
use gpe_core::expose::Scrape;
use gpe_core::native::{NativeBuckets, NativeOpts};
use gpe_core::{HistogramVec, LivePids, Liveness, MultiProcessCollector, Store};
use observations::values;
use prometheus::HistogramOpts;
use prost::Message;

const PROTOBUF: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

/// The bucket of `v` at `schema`, from the definition (bucket i holds (2^((i-1)/2^s), 2^(i/2^s)]),
/// not from gpe's code: the smallest i with v <= 2^(i / 2^schema).
fn reference_index(v: f64, schema: i8) -> i32 {
    let scale = 2f64.powi(i32::from(schema));
    let mut i = (v.log2() * scale).ceil() as i32;
    // Guard the float rounding of log2 at the edges.
    while v > (f64::from(i) / scale).exp2() {
        i += 1;
    }
    while v <= (f64::from(i - 1) / scale).exp2() {
        i -= 1;
    }
    i
}

fn reference(all: &[f64], schema: i8, threshold: f64) -> NativeBuckets {
    let mut b = NativeBuckets::new(schema, threshold);
    for &v in all {
        if v.abs() <= threshold {
            b.zero_count += 1.0;
        } else {
            let side = if v > 0.0 {
                &mut b.positive
            } else {
                &mut b.negative
            };
            *side.entry(reference_index(v.abs(), schema)).or_insert(0.0) += 1.0;
        }
    }
    b
}

fn latency(store: &Store, opts: NativeOpts) -> HistogramVec {
    HistogramVec::with_native(
        HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.001, 0.01, 0.1, 1.0]),
        opts,
        &["route"],
        store,
    )
    .unwrap()
}

fn route() -> Vec<(String, String)> {
    vec![("route".to_owned(), "/".to_owned())]
}

/// Four processes' observations, written through four stores as four pids.
fn write_processes(dir: &Path, schema_of: impl Fn(u32) -> i8) -> Vec<f64> {
    let mut all = Vec::new();
    for n in 0..4u32 {
        let store = Store::open_as(dir, 900_000 + n).unwrap();
        let h = latency(&store, NativeOpts::new(schema_of(n)).unwrap())
            .with_label_values(&["/"])
            .unwrap();
        for v in values(u64::from(n), 3_000) {
            h.observe(v);
            all.push(v);
        }
    }
    all
}

#[test]
fn native_buckets_add_up_exactly_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_processes(dir.path(), |_| 3);
    let scrape = MultiProcessCollector::new(dir.path()).scrape();
    let got = scrape.native.get("latency_seconds", &route()).unwrap();
    let mut want = reference(&all, 3, gpe_core::native::DEFAULT_ZERO_THRESHOLD);
    want.finish(0);
    assert_eq!(got, &want);
    assert_eq!(got.count(), 12_000.0);
    // The classic part counted the same observations.
    let classic = &scrape.families[0].get_metric()[0];
    assert_eq!(classic.get_histogram().get_sample_count(), 12_000);
}

#[test]
fn processes_at_different_schemas_merge_at_the_coarsest() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_processes(dir.path(), |n| if n == 2 { 1 } else { 4 });
    let scrape = MultiProcessCollector::new(dir.path()).scrape();
    let got = scrape.native.get("latency_seconds", &route()).unwrap();
    let mut want = reference(&all, 1, gpe_core::native::DEFAULT_ZERO_THRESHOLD);
    want.finish(0);
    assert_eq!(got, &want);
}

#[test]
fn the_bucket_limit_halves_the_resolution_until_the_buckets_fit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_as(dir.path(), 900_100).unwrap();
    let h = latency(&store, NativeOpts::new(8).unwrap().max_buckets(20))
        .with_label_values(&["/"])
        .unwrap();
    let all = values(7, 5_000);
    for &v in &all {
        h.observe(v);
    }
    let scrape = MultiProcessCollector::new(dir.path()).scrape();
    let got = scrape.native.get("latency_seconds", &route()).unwrap();
    assert!(got.bucket_count() <= 20, "{} buckets", got.bucket_count());
    // The resolution it settled at is the finest at which the buckets fit.
    let finer = reference(
        &all,
        got.schema + 1,
        gpe_core::native::DEFAULT_ZERO_THRESHOLD,
    );
    assert!(finer.bucket_count() > 20);
    let mut want = reference(&all, got.schema, gpe_core::native::DEFAULT_ZERO_THRESHOLD);
    want.finish(0);
    assert_eq!(got, &want);
}

#[test]
fn dead_processes_native_buckets_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let all = write_processes(dir.path(), |_| 3);
    let collector = MultiProcessCollector::new(dir.path())
        .with_liveness(Liveness::Pids(LivePids::new()))
        .with_auto_compact(false);
    let before = collector.scrape().native;
    let report = collector.compact().unwrap();
    assert!(report.folded >= 8, "{report:?}"); // 4 histogram + 4 native files
    assert!(dir.path().join("native_archive.ndb").exists());
    assert!(!dir.path().join("native_900000.ndb").exists());
    let after = collector.scrape().native;
    assert_eq!(before, after);
    assert_eq!(
        after.get("latency_seconds", &route()).unwrap().count(),
        all.len() as f64
    );
    // A fresh start removes them with the `.db` files.
    gpe_core::prepare_dir(dir.path()).unwrap();
    assert!(!dir.path().join("native_archive.ndb").exists());
}

/// The buckets of a decoded protobuf histogram side: (spans, deltas) back to index -> count.
fn unspan(spans: &[pb::BucketSpan], deltas: &[i64]) -> BTreeMap<i32, f64> {
    let mut out = BTreeMap::new();
    let (mut index, mut count, mut d) = (0i32, 0i64, deltas.iter());
    for (n, span) in spans.iter().enumerate() {
        index = if n == 0 {
            span.offset()
        } else {
            index + span.offset()
        };
        for _ in 0..span.length() {
            count += d.next().expect("a delta per bucket");
            out.insert(index, count as f64);
            index += 1;
        }
    }
    assert!(d.next().is_none(), "more deltas than buckets");
    out
}

fn decode_all(mut body: &[u8]) -> Vec<pb::MetricFamily> {
    let mut out = Vec::new();
    while !body.is_empty() {
        out.push(pb::MetricFamily::decode_length_delimited(&mut body).unwrap());
    }
    out
}

#[test]
fn the_protobuf_exposition_carries_classic_and_native_buckets() {
    let dir = tempfile::tempdir().unwrap();
    write_processes(dir.path(), |_| 3);
    let store = Store::open_as(dir.path(), 900_200).unwrap();
    gpe_core::CounterVec::new(prometheus::Opts::new("jobs", "Jobs."), &[], &store)
        .unwrap()
        .with_label_values(&[])
        .unwrap()
        .inc_by(3.0);
    let scrape: Scrape = MultiProcessCollector::new(dir.path()).scrape();
    let encoded = scrape.encode(Some(PROTOBUF), None).unwrap();
    assert!(encoded
        .content_type
        .starts_with("application/vnd.google.protobuf"));
    let families = decode_all(&encoded.body);
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["jobs_total", "latency_seconds"]);
    assert_eq!(families[0].metric[0].counter.as_ref().unwrap().value(), 3.0);

    let h = families[1].metric[0].histogram.as_ref().unwrap();
    let native = scrape.native.get("latency_seconds", &route()).unwrap();
    assert_eq!(h.schema(), 3);
    assert_eq!(h.zero_threshold(), native.zero_threshold);
    assert_eq!(h.zero_count(), native.zero_count as u64);
    assert_eq!(unspan(&h.positive_span, &h.positive_delta), native.positive);
    assert_eq!(unspan(&h.negative_span, &h.negative_delta), native.negative);
    assert_eq!(h.sample_count(), 12_000);
    // The classic buckets are still there, cumulative (+Inf is the count), for servers without
    // native histograms.
    let classic: Vec<(f64, u64)> = h
        .bucket
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    let bounds: Vec<f64> = classic.iter().map(|b| b.0).collect();
    assert_eq!(bounds, [0.001, 0.01, 0.1, 1.0]);
    assert!(classic.windows(2).all(|w| w[0].1 <= w[1].1));
    assert!(classic[3].1 < 12_000);
    // The text formats keep the classic buckets alone, and stay valid.
    let text = scrape.encode(None, None).unwrap();
    let text = String::from_utf8(text.body).unwrap();
    assert!(
        !text.contains("__schema") && !text.contains("_positive"),
        "{text}"
    );
    common::promtool_check(&text);
}

#[test]
fn python_prometheus_client_still_reads_the_directory() {
    common::require_python();
    let dir = tempfile::tempdir().unwrap();
    write_processes(dir.path(), |_| 3);
    let script = r#"
import json, os
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
r = CollectorRegistry()
MultiProcessCollector(r, os.environ["PROMETHEUS_MULTIPROC_DIR"])
out = {}
for fam in r.collect():
    for s in fam.samples:
        if s.name == "latency_seconds_count":
            out["count"] = s.value
        if "__schema" in s.labels or s.name.endswith(("_positive", "_negative", "_zero")):
            out["leaked"] = s.name
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Python's collector failed on a directory with native files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, serde_json::json!({"count": 12000.0}));
}

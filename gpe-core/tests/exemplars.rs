//! Exemplars across processes: the newest per bucket wins, the request-metrics engine takes them
//! from `traceparent`, and OpenMetrics (checked by Python `prometheus_client`'s parser) and
//! protobuf carry them.

mod common;

use gpe_core::exemplar::{TraceContext, TraceSource};
use gpe_core::expose::protobuf::client_model as pb;
use gpe_core::http::RequestMetrics;
use gpe_core::{CounterVec, HistogramVec, MultiProcessCollector, Store};
use prometheus::{HistogramOpts, Opts};
use prost::Message;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";
const PROTOBUF: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

fn trace(n: u8) -> TraceContext {
    TraceContext {
        trace_id: [n; 16],
        span_id: [n.wrapping_add(1); 8],
    }
}

fn hex(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

fn traceparent(n: u8) -> String {
    format!(
        "00-{}-{}-01",
        hex(n),
        format!("{:02x}", n.wrapping_add(1)).repeat(8)
    )
}

#[test]
fn the_newest_exemplar_of_each_bucket_wins_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let histogram = |pid| {
        let store = Store::open_as(dir.path(), pid).unwrap();
        HistogramVec::new(
            HistogramOpts::new("latency_seconds", "Latency.").buckets(vec![0.1, 1.0]),
            &["route"],
            &store,
        )
        .unwrap()
        .with_label_values(&["/"])
        .unwrap()
    };
    let (a, b) = (histogram(910_001), histogram(910_002));
    a.observe_with_exemplar(0.05, &trace(1)); // bucket 0.1
    a.observe_with_exemplar(0.5, &trace(2)); // bucket 1.0, older
    std::thread::sleep(std::time::Duration::from_millis(5)); // distinct timestamps
    b.observe_with_exemplar(0.7, &trace(3)); // bucket 1.0, newer: wins
    b.observe_with_exemplar(3.0, &trace(4)); // +Inf
    a.observe(0.06); // no exemplar: the bucket keeps trace 1

    // The two "processes" are pids of no process: no compaction (it drops dead processes'
    // exemplars).
    let scrape = MultiProcessCollector::new(dir.path())
        .with_auto_compact(false)
        .scrape();
    let labels = vec![("route".to_owned(), "/".to_owned())];
    let get = |le| {
        scrape
            .exemplars
            .get("latency_seconds", &labels, Some(le))
            .unwrap()
    };
    assert_eq!((get(0.1).trace, get(0.1).value), (trace(1), 0.05));
    assert_eq!((get(1.0).trace, get(1.0).value), (trace(3), 0.7));
    assert_eq!(get(f64::INFINITY).trace, trace(4));
    assert_eq!(scrape.exemplars.len(), 3);

    let om = String::from_utf8(scrape.encode(Some(OPENMETRICS), None).unwrap().body).unwrap();
    let line = om
        .lines()
        .find(|l| l.starts_with("latency_seconds_bucket{route=\"/\",le=\"1.0\"}"))
        .unwrap_or_else(|| panic!("no 1.0 bucket in:\n{om}"));
    assert!(
        line.starts_with(&format!(
            "latency_seconds_bucket{{route=\"/\",le=\"1.0\"}} 4 # {{trace_id=\"{}\",span_id=\"{}\"}} 0.7 ",
            hex(3),
            format!("{:02x}", 4).repeat(8)
        )),
        "{line}"
    );
    // Python's OpenMetrics parser (strict about exemplar syntax) reads the whole exposition.
    let parsed = common::python_parse("openmetrics", &om);
    assert!(parsed.contains("latency_seconds_bucket"), "{parsed}");

    // Once both processes are dead, compaction drops their exemplars (and keeps the counts).
    let after = MultiProcessCollector::new(dir.path()).scrape();
    assert!(after.exemplars.is_empty(), "{:?}", after.exemplars);
    assert!(!dir.path().join("exemplar_910001.ndb").exists());
    assert_eq!(
        after.families[0].get_metric()[0]
            .get_histogram()
            .get_sample_count(),
        5
    );
}

#[test]
fn request_metrics_leave_the_trace_of_a_sampled_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = RequestMetrics::builder()
        .worker_id("w")
        .build(&store)
        .unwrap();
    let request = |headers: &http::HeaderMap, status| {
        let mut t = metrics.start("GET", "/orders");
        t.trace_from(headers);
        t.set_status(status);
        t.complete();
    };
    let mut sampled = http::HeaderMap::new();
    sampled.insert("traceparent", traceparent(7).parse().unwrap());
    let mut unsampled = http::HeaderMap::new();
    unsampled.insert(
        "traceparent",
        traceparent(8).replace("-01", "-00").parse().unwrap(),
    );
    request(&sampled, 200);
    request(&unsampled, 200); // not sampled: no exemplar, the first stays
    request(&http::HeaderMap::new(), 200);

    let scrape = MultiProcessCollector::new(dir.path()).scrape();
    let labels: Vec<(String, String)> = [
        ("endpoint", "/orders"),
        ("method", "GET"),
        ("status", "200"),
        ("worker_id", "w"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let counter = scrape
        .exemplars
        .get("gunicorn_worker_requests_total", &labels, None)
        .expect("an exemplar on the requests counter");
    assert_eq!((counter.trace, counter.value), (trace(7), 1.0));
    let duration = scrape
        .exemplars
        .series("gunicorn_worker_request_duration_seconds", &labels);
    assert_eq!(duration.len(), 1, "{duration:?}");
    assert_eq!(duration[0].1.trace, trace(7));
    assert_eq!(duration[0].0, Some(0.1)); // the first classic bucket

    // Protobuf: on the counter, on the classic bucket, and in the native histogram's list.
    let body = scrape.encode(Some(PROTOBUF), None).unwrap().body;
    let mut rest = &body[..];
    let mut families = Vec::new();
    while !rest.is_empty() {
        families.push(pb::MetricFamily::decode_length_delimited(&mut rest).unwrap());
    }
    let family = |name: &str| families.iter().find(|f| f.name() == name).unwrap();
    let trace_label = |e: &pb::Exemplar| {
        e.label
            .iter()
            .find(|l| l.name() == "trace_id")
            .map(|l| l.value().to_owned())
    };
    let c = family("gunicorn_worker_requests_total").metric[0]
        .counter
        .as_ref()
        .unwrap();
    assert_eq!(c.value(), 3.0);
    assert_eq!(trace_label(c.exemplar.as_ref().unwrap()), Some(hex(7)));
    let h = family("gunicorn_worker_request_duration_seconds").metric[0]
        .histogram
        .as_ref()
        .unwrap();
    let first = h.bucket.first().unwrap();
    assert_eq!(first.upper_bound(), 0.1);
    assert_eq!(trace_label(first.exemplar.as_ref().unwrap()), Some(hex(7)));
    assert_eq!(h.exemplars.len(), 1);
    assert!(
        h.exemplars[0].timestamp.is_some(),
        "native exemplars need a timestamp"
    );
    assert!(h.schema.is_some(), "the duration histogram is native too");
}

#[test]
fn exemplars_can_be_turned_off_and_taken_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", traceparent(9).parse().unwrap());
    headers.insert("x-trace", traceparent(5).parse().unwrap());

    let off = RequestMetrics::builder()
        .prefix("off_")
        .unwrap()
        .exemplars(TraceSource::Off)
        .build(&store)
        .unwrap();
    let custom = RequestMetrics::builder()
        .prefix("custom_")
        .unwrap()
        .exemplars(TraceSource::Custom(std::sync::Arc::new(|h| {
            TraceContext::from_traceparent(h.header("x-trace")?)
        })))
        .build(&store)
        .unwrap();
    for m in [&off, &custom] {
        let mut t = m.start("GET", "/");
        t.trace_from(&headers);
        t.set_status(200);
        t.complete();
    }
    let scrape = MultiProcessCollector::new(dir.path()).scrape();
    assert!(!scrape.exemplars.has_family("off_requests_total"));
    // The custom source's header, not `traceparent`: one on the counter, one on the bucket.
    assert_eq!(scrape.exemplars.len(), 2);
    for family in ["custom_requests_total", "custom_request_duration_seconds"] {
        assert!(scrape.exemplars.has_family(family), "{family}");
    }
    let labels: Vec<(String, String)> = [("endpoint", "/"), ("method", "GET"), ("status", "200")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain([("worker_id".to_owned(), custom.worker_id().to_owned())])
        .collect();
    let e = scrape
        .exemplars
        .get("custom_requests_total", &labels, None)
        .unwrap();
    assert_eq!(e.trace, trace(5));
}

#[test]
fn a_counter_keeps_its_newest_exemplar() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let c = CounterVec::new(Opts::new("jobs", "Jobs."), &[], &store)
        .unwrap()
        .with_label_values(&[])
        .unwrap();
    c.inc_by_with_exemplar(2.0, &trace(1));
    c.inc_by_with_exemplar(3.0, &trace(2));
    c.inc_by_with_exemplar(-1.0, &trace(3)); // ignored, as inc_by
    assert_eq!(c.get(), 5.0);
    let e = c.exemplar().unwrap();
    assert_eq!((e.trace, e.value), (trace(2), 3.0));
    // Python's collector reads the directory: exemplar files are not `*.db`.
    common::require_python();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os\nfrom prometheus_client import CollectorRegistry, generate_latest\nfrom prometheus_client.multiprocess import MultiProcessCollector\nr = CollectorRegistry()\nMultiProcessCollector(r, os.environ['PROMETHEUS_MULTIPROC_DIR'])\nprint(generate_latest(r).decode())",
        ])
        .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("jobs_total 5.0"), "{text}");
    assert!(!text.contains("__exemplar"), "{text}");
}

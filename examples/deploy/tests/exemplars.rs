//! Exemplars against the real thing: the demo (gpe-master + 4 example-axum workers) scraped at
//! once by two Prometheus (Debian's 2.42) with `--enable-feature=exemplar-storage`: one
//! without native histograms, which negotiates OpenMetrics, and one with
//! `--enable-feature=exemplar-storage,native-histograms`, which negotiates protobuf.
//!
//! 200 requests carry a sampled W3C `traceparent` (trace ids of this run, remembered), with a
//! latency mix over `/` and `/slow?ms=…` that reaches the classic buckets 0.1, 0.5, 1 and 2.5;
//! 30 more carry an unsampled one (flags `00`) and 30 none. Every exemplar that comes back, from
//! `/api/v1/query_exemplars` of either Prometheus or from the master's OpenMetrics exposition
//! (read by Python prometheus_client's OpenMetrics parser), must be of a trace sent sampled,
//! with the span id sent with it, on the series of the endpoint it was sent to, stamped between
//! that request's start and the end of the run; a bucket's value within the bucket, and within
//! the time the request took seen by the client (at least the time it slept, at most its round
//! trip); a counter's value 1. The OpenMetrics Prometheus must hold every exemplar the master
//! exposes once the load is done, on classic buckets and counters.
//!
//! What 2.42 does with protobuf exemplars (observed; asserted only where it stores them):
//! - Counter exemplars (`Counter.exemplar`): stored, exactly as from OpenMetrics. Asserted as
//!   above, including that it holds every counter exemplar the master exposes.
//! - Classic bucket exemplars (`Bucket.exemplar`): none. With native histograms on, 2.42 ingests
//!   a histogram that has native buckets as the native histogram only (no `_bucket` series:
//!   `scrape_classic_histograms` came in 2.45), so there is no classic series to hold them.
//! - Native histogram: one exemplar per scrape, taken from the classic buckets: the one of the
//!   lowest bucket that carries an exemplar, not the newest; `Histogram.exemplars` (which gpe
//!   also fills) is not read by 2.42. A run gives 23-24 native exemplars over the 8 series,
//!   their values in the bucket 0.1 (`/`) or 0.5 (`/slow`) (in one run of a dozen, one in
//!   (0.5, 1]: a `/slow` series whose first exemplar was such a request), while the OpenMetrics
//!   Prometheus stores 11-15 exemplars on the bucket 1 and 5-7 on 2.5 from the same scrapes.
//!   Asserted like any exemplar (sent, sampled, span, time, value within the request's round
//!   trip), not which bucket it comes from.

mod harness;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{
    classic_bucket, distinct_ports, http_get, master_counts, now_unix, poll, scraped_after,
    send_requests, shuffle, Demo, Prometheus, Request, Sent, CLASSIC_BOUNDS, DURATION, REQUESTS,
};

const WORKERS: usize = 4;

// The requests with a sampled traceparent, by latency (classic bucket).
/// `/`: (0, 0.1].
const FAST: usize = 120;
/// `/slow?ms=150..=400`: (0.1, 0.5].
const MID: usize = 40;
/// `/slow?ms=600..=800`: (0.5, 1].
const SLOW: usize = 30;
/// `/slow?ms=1100..=1400`: (1, 2.5].
const SLOWER: usize = 10;
/// Requests with a sampled traceparent.
const SAMPLED: usize = FAST + MID + SLOW + SLOWER;
/// Requests with an unsampled traceparent (flags `00`): 2 in 3 to `/users/{id}`, the rest to `/`.
const UNSAMPLED: usize = 30;
/// Requests without a traceparent: as the unsampled ones.
const UNTRACED: usize = 30;
/// Requests in all.
const N: usize = SAMPLED + UNSAMPLED + UNTRACED;
/// The classic buckets (`le`) the mix must leave exemplars on.
const EXPECTED_LES: [f64; 4] = [0.1, 0.5, 1.0, 2.5];
/// Prometheus keeps an exemplar's timestamp to the millisecond (cut, not rounded).
const MS: f64 = 0.001;

/// One request of the run.
#[derive(Debug)]
struct Planned {
    path: String,
    /// Its `endpoint` label.
    endpoint: &'static str,
    sleep_ms: u64,
    /// Trace id, span id, sampled.
    trace: Option<(String, String, bool)>,
}

/// xorshift64: ids of this run.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// A trace id (32 hex digits) and span id (16), never all zero.
    fn trace(&mut self) -> (String, String) {
        (
            format!("{:016x}{:016x}", self.next(), self.next()),
            format!("{:016x}", self.next()),
        )
    }
}

fn plan(seed: u64) -> Vec<Planned> {
    let mut ids = Ids(seed | 1);
    let mut out = Vec::new();
    let mut sampled = |path: String, endpoint, sleep_ms, out: &mut Vec<Planned>| {
        out.push(Planned {
            path,
            endpoint,
            sleep_ms,
            trace: Some({
                let (t, s) = ids.trace();
                (t, s, true)
            }),
        });
    };
    for _ in 0..FAST {
        sampled("/".to_owned(), "/", 0, &mut out);
    }
    let slow = (0..MID)
        .map(|j| 150 + (j as u64 * 53) % 251)
        .chain((0..SLOW).map(|j| 600 + (j as u64 * 41) % 201))
        .chain((0..SLOWER).map(|j| 1100 + (j as u64 * 37) % 301));
    for ms in slow {
        sampled(format!("/slow?ms={ms}"), "/slow", ms, &mut out);
    }
    for (n, sampled) in [(UNSAMPLED, Some(false)), (UNTRACED, None)] {
        for j in 0..n {
            let (path, endpoint) = if j % 3 == 2 {
                ("/".to_owned(), "/")
            } else {
                (format!("/users/{j}"), "/users/{id}")
            };
            out.push(Planned {
                path,
                endpoint,
                sleep_ms: 0,
                trace: sampled.map(|s| {
                    let (t, sp) = ids.trace();
                    (t, sp, s)
                }),
            });
        }
    }
    assert_eq!(out.len(), N);
    out
}

/// What an exemplar is on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum On {
    /// A classic bucket of the duration histogram, by its `le`.
    Bucket(f64),
    /// The native histogram (protobuf Prometheus): no bucket.
    Native,
    /// The request counter.
    Counter,
}

/// One exemplar as it came back, from a Prometheus or the exposition.
#[derive(Debug, Clone)]
struct Found {
    /// The series' labels, without `__name__`, `instance`, `job` and `le`.
    series: BTreeMap<String, String>,
    on: On,
    trace_id: String,
    span_id: String,
    value: f64,
    timestamp: f64,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {:?} {{trace_id={:?}, span_id={:?}}} {} @{:.3}",
            self.on, self.series, self.trace_id, self.span_id, self.value, self.timestamp
        )
    }
}

/// Which bucket a series with labels `labels` of sample `name` is, if it is one of gpe's
/// request metrics.
fn on_of(name: &str, labels: &BTreeMap<String, String>) -> Result<On, String> {
    if name == REQUESTS {
        Ok(On::Counter)
    } else if name == DURATION {
        Ok(On::Native)
    } else if name == format!("{DURATION}_bucket") {
        let le = labels.get("le").ok_or("a bucket without le")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().map_err(|e| format!("le {le:?}: {e}"))?
        };
        Ok(On::Bucket(le))
    } else {
        Err(format!(
            "an exemplar on {name}, expected only {DURATION} or {REQUESTS}"
        ))
    }
}

fn series_key(mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    for l in ["__name__", "instance", "job", "le"] {
        labels.remove(l);
    }
    labels
}

/// The exemplars of `expr` in `prom` since `start`.
fn stored(prom: &Prometheus, expr: &str, start: f64) -> Result<Vec<Found>, String> {
    let data = prom.query_exemplars(expr, start, now_unix() + 1.0)?;
    let mut out = Vec::new();
    for s in &data {
        let bad = |what: &str| {
            format!(
                "{} Prometheus, exemplars of `{expr}`: {what}: {s}",
                prom.name
            )
        };
        let labels: BTreeMap<String, String> =
            serde_json::from_value(s["seriesLabels"].clone()).map_err(|e| bad(&e.to_string()))?;
        let name = labels.get("__name__").cloned().unwrap_or_default();
        let on = on_of(&name, &labels).map_err(|e| bad(&e))?;
        let series = series_key(labels);
        for e in s["exemplars"]
            .as_array()
            .ok_or_else(|| bad("no exemplars"))?
        {
            let label = |l: &str| e["labels"][l].as_str().unwrap_or_default().to_owned();
            out.push(Found {
                series: series.clone(),
                on,
                trace_id: label("trace_id"),
                span_id: label("span_id"),
                value: e["value"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("an exemplar value"))?,
                timestamp: e["timestamp"]
                    .as_f64()
                    .ok_or_else(|| bad("an exemplar timestamp"))?,
            });
        }
    }
    Ok(out)
}

/// The exemplars of an OpenMetrics exposition, as Python prometheus_client's OpenMetrics parser
/// reads it (which also checks the whole exposition's syntax).
fn python_exemplars(text: &str) -> Vec<Found> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.exemplar is not None:
            e = s.exemplar
            # Numbers as Python's shortest round-trip strings, for Rust's exact parse (serde_json
            # may read a float 1 ulp off).
            out.append([s.name, s.labels, e.labels, repr(float(e.value)),
                        None if e.timestamp is None else repr(float(e.timestamp))])
print(json.dumps(out))
"#;
    let out = harness::common::python_with_input(script, text)
        .expect("python3 (with prometheus_client 0.26: `bash .ci/deps` installs it)");
    assert!(
        out.status.success(),
        "prometheus_client's OpenMetrics parser: expected the master's exposition to parse, got \
         {}: {}\nexposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.iter()
        .map(|r| {
            let name = r[0].as_str().unwrap();
            let labels: BTreeMap<String, String> = serde_json::from_value(r[1].clone()).unwrap();
            let on = on_of(name, &labels).unwrap_or_else(|e| panic!("exposition: {e}: {r}"));
            Found {
                series: series_key(labels),
                on,
                trace_id: r[2]["trace_id"].as_str().unwrap_or_default().to_owned(),
                span_id: r[2]["span_id"].as_str().unwrap_or_default().to_owned(),
                value: r[3].as_str().and_then(|v| v.parse().ok()).unwrap(),
                timestamp: r[4]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("exposition: expected exemplars with a timestamp, got {r}")
                    }),
            }
        })
        .collect()
}

/// The run: what was sent, and when it was over.
struct Run<'a> {
    planned: &'a [Planned],
    sent: &'a [Sent],
    by_trace: HashMap<&'a str, usize>,
    start: f64,
    end: f64,
}

impl Run<'_> {
    /// What is wrong with exemplar `e`, if anything.
    fn check(&self, e: &Found) -> Result<(), String> {
        let Some(&i) = self.by_trace.get(e.trace_id.as_str()) else {
            return Err(format!("trace id {:?} was not sent", e.trace_id));
        };
        let (p, sent) = (&self.planned[i], &self.sent[i]);
        let (_, span, sampled) = p.trace.as_ref().unwrap();
        if !sampled {
            return Err(format!(
                "trace id {:?} was sent unsampled (flags 00, GET {}): expected no exemplar",
                e.trace_id, p.path
            ));
        }
        if e.span_id != *span {
            return Err(format!(
                "expected span id {span:?} (sent with that trace, GET {}), got {:?}",
                p.path, e.span_id
            ));
        }
        let endpoint = e.series.get("endpoint").map(String::as_str);
        if endpoint != Some(p.endpoint) {
            return Err(format!(
                "expected the series of endpoint {:?} (GET {}), got {endpoint:?}",
                p.endpoint, p.path
            ));
        }
        if !(e.timestamp >= sent.at - MS && e.timestamp <= self.end) {
            return Err(format!(
                "expected a timestamp between the request's start {:.3} and the run's end {:.3} \
                 (run from {:.3}), got {:.3}",
                sent.at, self.end, self.start, e.timestamp
            ));
        }
        match e.on {
            On::Counter if e.value != 1.0 => {
                Err(format!("a counter's exemplar: expected 1, got {}", e.value))
            }
            On::Counter => Ok(()),
            On::Bucket(_) | On::Native => {
                let (slept, round_trip) = (p.sleep_ms as f64 / 1000.0, sent.elapsed.as_secs_f64());
                if !(e.value >= slept && e.value <= round_trip) {
                    return Err(format!(
                        "expected a duration between the {slept} s slept and the {round_trip:.6} \
                         s round trip (GET {}), got {}",
                        p.path, e.value
                    ));
                }
                let On::Bucket(le) = e.on else {
                    return Ok(());
                };
                let lower = CLASSIC_BOUNDS
                    .iter()
                    .copied()
                    .take_while(|b| *b < le)
                    .last()
                    .unwrap_or(0.0);
                if e.value > lower && e.value <= le {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a value in its bucket ({lower}, {le}], got {}",
                        e.value
                    ))
                }
            }
        }
    }

    /// Panic listing every exemplar of `found` (from `source`) that fails [`Run::check`].
    fn check_all(&self, source: &str, found: &[Found]) {
        let errors: Vec<String> = found
            .iter()
            .filter_map(|e| self.check(e).err().map(|why| format!("  {e}: {why}")))
            .collect();
        assert!(
            errors.is_empty(),
            "{source}: {} of {} exemplars wrong:\n{}",
            errors.len(),
            found.len(),
            errors[..errors.len().min(20)].join("\n")
        );
    }
}

/// The exposition's exemplars of `which` that are not in `found` (same series, bucket, trace,
/// span and value).
fn missing<'a>(
    exposed: &'a [Found],
    found: &[Found],
    which: impl Fn(On) -> bool,
) -> Vec<&'a Found> {
    exposed
        .iter()
        .filter(|x| which(x.on))
        .filter(|x| {
            !found.iter().any(|f| {
                f.series == x.series
                    && f.on == x.on
                    && f.trace_id == x.trace_id
                    && f.span_id == x.span_id
                    && f.value == x.value
            })
        })
        .collect()
}

fn list(found: &[&Found]) -> String {
    found
        .iter()
        .take(20)
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn exemplars_reach_prometheus() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let [port, metrics_port, om_port, pb_port] = distinct_ports();
    let _demo = Demo::start(dir.path(), WORKERS, port, metrics_port);
    let om = Prometheus::start(
        "openmetrics",
        dir.path(),
        om_port,
        metrics_port,
        &["exemplar-storage"],
    );
    let pb = Prometheus::start(
        "protobuf",
        dir.path(),
        pb_port,
        metrics_port,
        &["exemplar-storage", "native-histograms"],
    );
    let both = [&om, &pb];
    scraped_after(&both, 0.0);

    // The run's own ids: nothing from another run can pass for them.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut planned = plan(seed);
    shuffle(&mut planned, seed | 1);
    let requests: Vec<Request> = planned
        .iter()
        .map(|p| Request {
            path: p.path.clone(),
            headers: p
                .trace
                .iter()
                .map(|(t, s, sampled)| {
                    let flags = if *sampled { "01" } else { "00" };
                    ("traceparent".to_owned(), format!("00-{t}-{s}-{flags}"))
                })
                .collect(),
        })
        .collect();
    let by_trace: HashMap<&str, usize> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((p.trace.as_ref()?.0.as_str(), i)))
        .collect();
    assert_eq!(by_trace.len(), SAMPLED + UNSAMPLED, "distinct trace ids");

    let start = now_unix();
    let load_started = Instant::now();
    let sent = send_requests(port, &requests, 16);
    let load_time = load_started.elapsed();
    // Every request recorded: the run is over.
    master_counts(metrics_port, N);
    let run = Run {
        planned: &planned,
        sent: &sent,
        by_trace,
        start,
        end: now_unix(),
    };

    // The master's OpenMetrics exposition, as Python's parser reads it.
    let accept = "application/openmetrics-text; version=1.0.0";
    let r = http_get(metrics_port, "/metrics", Some(accept)).unwrap();
    let content_type = r.header("content-type").unwrap_or_default().to_owned();
    assert!(
        r.status == 200 && content_type.starts_with("application/openmetrics-text"),
        "Accept: {accept}: expected a 200 of application/openmetrics-text, got {} \
         {content_type:?}: {}",
        r.status,
        r.text()
    );
    let exposed = python_exemplars(&r.text());
    run.check_all("the master's OpenMetrics exposition", &exposed);
    let exposed_buckets = exposed
        .iter()
        .filter(|e| matches!(e.on, On::Bucket(_)))
        .count();
    let exposed_counters = exposed.iter().filter(|e| e.on == On::Counter).count();
    assert!(
        exposed_buckets > 0 && exposed_counters > 0,
        "the master's OpenMetrics exposition: expected exemplars on {DURATION}_bucket and \
         {REQUESTS}, got {exposed_buckets} and {exposed_counters}:\n{}",
        r.text()
    );
    let les: Vec<f64> = EXPECTED_LES
        .into_iter()
        .filter(|le| !exposed.iter().any(|e| e.on == On::Bucket(*le)))
        .collect();
    assert!(
        les.is_empty(),
        "the master's OpenMetrics exposition: expected exemplars on the buckets le \
         {EXPECTED_LES:?}, none on {les:?}:\n{}",
        r.text()
    );

    // The OpenMetrics Prometheus: once it has scraped after the run, it holds every exemplar the
    // master exposes (and those of earlier scrapes).
    scraped_after(&both, run.end);
    let since = start - 1.0;
    let bucket_expr = format!("{DURATION}_bucket");
    let (om_buckets, om_counters) = poll(
        "the OpenMetrics Prometheus to hold the master's exemplars",
        Duration::from_secs(15),
        || {
            let buckets = stored(&om, &bucket_expr, since)?;
            let counters = stored(&om, REQUESTS, since)?;
            let all: Vec<Found> = buckets.iter().chain(&counters).cloned().collect();
            let gone = missing(&exposed, &all, |_| true);
            if gone.is_empty() && !buckets.is_empty() && !counters.is_empty() {
                Ok((buckets, counters))
            } else {
                Err(format!(
                    "expected every exemplar the master exposes ({}), got {} on buckets and {} \
                     on counters; missing {}:\n{}",
                    exposed.len(),
                    buckets.len(),
                    counters.len(),
                    gone.len(),
                    list(&gone)
                ))
            }
        },
    );
    run.check_all("the OpenMetrics Prometheus, bucket exemplars", &om_buckets);
    run.check_all(
        "the OpenMetrics Prometheus, counter exemplars",
        &om_counters,
    );

    // The protobuf Prometheus: counter exemplars as from OpenMetrics; the native histogram's
    // (one per scrape, from the classic buckets) whatever bucket they come from; no classic
    // series (see the top of this file).
    let (pb_native, pb_counters) = poll(
        "the protobuf Prometheus to hold the master's counter exemplars",
        Duration::from_secs(15),
        || {
            let native = stored(&pb, DURATION, since)?;
            let counters = stored(&pb, REQUESTS, since)?;
            let gone = missing(&exposed, &counters, |on| on == On::Counter);
            if gone.is_empty() && !native.is_empty() {
                Ok((native, counters))
            } else {
                Err(format!(
                    "expected every counter exemplar the master exposes ({exposed_counters}) \
                     and native histogram exemplars, got {} on counters and {} native; missing \
                     {}:\n{}",
                    counters.len(),
                    native.len(),
                    gone.len(),
                    list(&gone)
                ))
            }
        },
    );
    run.check_all(
        "the protobuf Prometheus, native histogram exemplars",
        &pb_native,
    );
    run.check_all("the protobuf Prometheus, counter exemplars", &pb_counters);
    let pb_buckets = stored(&pb, &bucket_expr, since).unwrap_or_else(|e| panic!("{e}"));

    for p in both {
        p.target_healthy()
            .unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail()));
    }

    // Figures.
    let traces = |f: &[Found]| {
        f.iter()
            .map(|e| e.trace_id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut per_le: BTreeMap<String, usize> = BTreeMap::new();
    for e in &om_buckets {
        if let On::Bucket(le) = e.on {
            *per_le.entry(le.to_string()).or_default() += 1;
        }
    }
    // The classic bucket of each native exemplar's value: 2.42 takes the lowest bucket's.
    let mut native_per_le: BTreeMap<String, usize> = BTreeMap::new();
    for e in &pb_native {
        *native_per_le
            .entry(classic_bucket(e.value).1.to_string())
            .or_default() += 1;
    }
    // Which exposed bucket each native series' newest exemplar is.
    let mut native_from: BTreeMap<String, usize> = BTreeMap::new();
    let mut newest: HashMap<&BTreeMap<String, String>, &Found> = HashMap::new();
    for e in &pb_native {
        let n = newest.entry(&e.series).or_insert(e);
        if e.timestamp > n.timestamp {
            *n = e;
        }
    }
    for e in newest.values() {
        let from = exposed
            .iter()
            .find(|x| x.series == e.series && x.trace_id == e.trace_id)
            .map_or("an earlier scrape's".to_owned(), |x| format!("{:?}", x.on));
        *native_from.entry(from).or_default() += 1;
    }
    eprintln!(
        "N = {N} ({SAMPLED} sampled: {FAST}/{MID}/{SLOW}/{SLOWER} fast/mid/slow/slower; \
         {UNSAMPLED} unsampled, {UNTRACED} without traceparent), load {load_time:.1?}; \
         exposition: {} exemplars ({exposed_buckets} bucket, {exposed_counters} counter); \
         OpenMetrics Prometheus: {} bucket exemplars ({} traces; per le {per_le:?}), {} counter \
         exemplars ({} traces); protobuf Prometheus: {} native histogram exemplars ({} traces; \
         per classic bucket of their values {native_per_le:?}; newest per series from \
         {native_from:?}), {} counter exemplars ({} traces), {} classic \
         bucket exemplars; test {:.1?}",
        exposed.len(),
        om_buckets.len(),
        traces(&om_buckets),
        om_counters.len(),
        traces(&om_counters),
        pb_native.len(),
        traces(&pb_native),
        pb_counters.len(),
        traces(&pb_counters),
        pb_buckets.len(),
        started.elapsed()
    );
}

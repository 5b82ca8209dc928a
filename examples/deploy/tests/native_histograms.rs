//! Native histograms against the real thing: the demo (gpe-master + 4 example-axum workers)
//! scraped at once by two Prometheus (Debian's 2.42): one with
//! `--enable-feature=native-histograms`, which negotiates the delimited protobuf format and
//! stores `gunicorn_worker_request_duration_seconds` as a native histogram, and one without,
//! which scrapes text and stores the classic buckets. A known number of requests with a known
//! latency mix: both must count every one of them, and their 0.99 quantiles must fall in the
//! classic bucket the mix predicts.

mod harness;

use std::time::Instant;

use harness::common::exposition::{label_values, series_count, sum};
use harness::{
    classic_bucket, distinct_ports, http_get, master_counts, now_unix, scraped_after, send_all,
    shuffle, Demo, Prometheus, CLASSIC_BOUNDS, DURATION,
};

const FAMILY: &str = DURATION;
const WORKERS: usize = 4;

// The latency mix. Every request is counted in N, the warm-up's included (`/health`, the only
// route the app does not record, is used only before anything is counted).
/// Requests in all.
const N: usize = 2_000;
/// `/slow?ms=150..=400`: the classic bucket (0.1, 0.5].
const MID: usize = 100;
/// `/slow?ms=600..=800`: the classic bucket (0.5, 1].
const SLOW: usize = 100;
/// `/` and, in the warm-up, `/slow?ms=0`: the classic bucket (0, 0.1].
const FAST: usize = N - MID - SLOW;
// So 1,900 requests take at most 0.5 s, and the 0.99 quantile (rank 1,980) is the 80th of the
// 100 slow ones (~0.76 s): in the classic bucket (0.5, 1], 80 requests above its lower edge and
// nothing above its upper edge. rate()'s extrapolation skews buckets against each other by a few
// per mille here, far from moving the rank across an edge.
/// The classic bucket both quantiles must fall in.
const EXPECTED_BUCKET: (f64, f64) = (0.5, 1.0);
/// How many requests a loaded machine may delay by 100 ms or more (one classic bucket up),
/// for the per-bucket counts; the quantile margins above are far wider.
const DELAYED: f64 = 10.0;

fn mid_ms(j: usize) -> usize {
    150 + (j * 53) % 251
}

fn slow_ms(j: usize) -> usize {
    600 + (j * 41) % 201
}

/// The family names of a delimited stream of `MetricFamily` messages, decoded by prost with
/// client_model's types; `None` when the stream does not decode.
fn family_names(mut b: &[u8]) -> Option<Vec<String>> {
    use prost::Message;
    let mut names = Vec::new();
    while !b.is_empty() {
        let mf =
            gpe_core::expose::protobuf::client_model::MetricFamily::decode_length_delimited(&mut b)
                .ok()?;
        names.push(mf.name().to_owned());
    }
    Some(names)
}

#[test]
fn native_and_classic_prometheus_agree_on_the_demo() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let [port, metrics_port, native_port, classic_port] = distinct_ports();
    let _demo = Demo::start(dir.path(), WORKERS, port, metrics_port);

    let native = Prometheus::start(
        "native",
        dir.path(),
        native_port,
        metrics_port,
        &["native-histograms"],
    );
    let classic = Prometheus::start("classic", dir.path(), classic_port, metrics_port, &[]);
    let both = [&native, &classic];
    scraped_after(&both, 0.0);

    // Warm-up: fast requests until every (worker, endpoint) series exists, and then a scrape of
    // them by both Prometheus. rate() counts only what a series gains after its first sample:
    // the measured traffic must not create series.
    let mut sent = 0;
    let mut rounds = 0;
    loop {
        let batch: Vec<String> = (0..8)
            .map(|i| if i % 2 == 0 { "/" } else { "/slow?ms=0" }.to_owned())
            .collect();
        sent += send_all(port, &batch, batch.len());
        rounds += 1;
        let text = master_counts(metrics_port, sent);
        let series = series_count(&text, "gunicorn_worker_requests_total");
        if series == 2 * WORKERS {
            break;
        }
        assert!(
            rounds < 20,
            "after {sent} requests, {series} series of gunicorn_worker_requests_total rather \
             than 2 endpoints x {WORKERS} workers (does every worker get connections?):\n{text}"
        );
    }
    assert!(sent < FAST / 4, "{sent} warm-up requests");
    scraped_after(&both, now_unix());

    // The measured traffic: the rest of the fast requests, and the slow ones, shuffled.
    let mut sleeps: Vec<usize> = vec![0; sent];
    let mut paths: Vec<String> = Vec::new();
    for _ in sent..FAST {
        paths.push("/".to_owned());
        sleeps.push(0);
    }
    for ms in (0..MID).map(mid_ms).chain((0..SLOW).map(slow_ms)) {
        paths.push(format!("/slow?ms={ms}"));
        sleeps.push(ms);
    }
    shuffle(&mut paths, 0x9E37_79B9_7F4A_7C15);
    let load_started = Instant::now();
    let answered = send_all(port, &paths, 24);
    let load_time = load_started.elapsed();
    assert_eq!(answered, paths.len(), "requests answered 200");
    assert_eq!(sent + answered, N);
    // The workers recorded them all (in the master's own text exposition), all of them served
    // some.
    let text = master_counts(metrics_port, N);
    let per_worker: Vec<(String, f64)> = {
        let mut ids: Vec<&str> = label_values(&text, "gunicorn_worker_requests_total", "worker_id")
            .into_iter()
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| {
                let n = sum(
                    &text,
                    "gunicorn_worker_requests_total",
                    &[("worker_id", id)],
                );
                (id.to_owned(), n)
            })
            .collect()
    };
    assert!(
        per_worker.len() == WORKERS && per_worker.iter().all(|(_, n)| *n > 0.0),
        "requests per worker: {per_worker:?}"
    );

    // The master's own negotiation: protobuf when asked for as Prometheus asks, text otherwise.
    let accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
    let pb = http_get(metrics_port, "/metrics", Some(accept)).unwrap();
    let content_type = pb.header("content-type").unwrap_or_default().to_owned();
    assert!(
        pb.status == 200 && content_type.starts_with("application/vnd.google.protobuf"),
        "Accept: {accept}: expected a 200 of application/vnd.google.protobuf, got {} {content_type:?}: {:?}",
        pb.status,
        pb.text()
    );
    let names = family_names(&pb.body).unwrap_or_else(|| {
        panic!(
            "the protobuf body is not a delimited stream of MetricFamily: {:?}",
            pb.body
        )
    });
    assert!(
        names.iter().any(|n| n == FAMILY),
        "no {FAMILY} family in the protobuf exposition: {names:?}"
    );
    let text = http_get(metrics_port, "/metrics", None).unwrap();
    let content_type = text.header("content-type").unwrap_or_default();
    assert!(
        text.status == 200 && content_type.starts_with("text/plain"),
        "no Accept: expected a 200 of text/plain, got {} {content_type:?}",
        text.status
    );

    // Every Prometheus has it all once it has scraped after this.
    scraped_after(&both, now_unix());

    // The native Prometheus stores the family as a native histogram; the classic one as the
    // classic series only.
    let stored = native.query(FAMILY);
    assert!(
        !stored.is_empty()
            && stored
                .iter()
                .all(|s| s.get("histogram").is_some() && s.get("value").is_none()),
        "native Prometheus, query `{FAMILY}`: expected native histograms (a `histogram` field), \
         got {}",
        serde_json::Value::from(stored)
    );
    let stored = classic.query(FAMILY);
    assert!(
        stored.is_empty(),
        "classic Prometheus, query `{FAMILY}`: expected nothing (text has no native histogram), \
         got {}",
        serde_json::Value::from(stored)
    );
    let classic_series = classic.query(&format!("{FAMILY}_bucket"));
    assert!(
        classic_series.len() == 2 * WORKERS * (CLASSIC_BOUNDS.len() + 1),
        "classic Prometheus, query `{FAMILY}_bucket`: expected 2 endpoints x {WORKERS} workers x \
         {} buckets, got {}",
        CLASSIC_BOUNDS.len() + 1,
        serde_json::Value::from(classic_series)
    );

    // Counts: exact, in both.
    let expr = format!("histogram_count(sum({FAMILY}))");
    let native_count = native.value(&expr);
    assert!(
        native_count == N as f64,
        "native Prometheus, `{expr}`: expected {N}, got {native_count}; per series: {}",
        serde_json::Value::from(native.query(&format!("histogram_count({FAMILY})")))
    );
    let expr = format!("sum({FAMILY}_count)");
    let classic_count = classic.value(&expr);
    assert!(
        classic_count == N as f64,
        "classic Prometheus, `{expr}`: expected {N}, got {classic_count}; per series: {}",
        serde_json::Value::from(classic.query(&format!("{FAMILY}_count")))
    );

    // Sums: the same observations; at least the time slept.
    let expr = format!("histogram_sum(sum({FAMILY}))");
    let native_sum = native.value(&expr);
    let classic_expr = format!("sum({FAMILY}_sum)");
    let classic_sum = classic.value(&classic_expr);
    let slept = sleeps.iter().sum::<usize>() as f64 / 1000.0;
    assert!(
        (native_sum - classic_sum).abs() <= 1e-9 * classic_sum && native_sum >= slept,
        "native `{expr}` = {native_sum}, classic `{classic_expr}` = {classic_sum}: expected \
         equal, and at least the {slept} s slept"
    );

    // Classic buckets, as the mix has them (a request held up 100 ms by a loaded machine moves up
    // a bucket: at most DELAYED of them).
    let expr = format!("sum by (le) ({FAMILY}_bucket)");
    let result = classic.query(&expr);
    // Compared as numbers: OpenMetrics writes `le="1.0"`, text `le="1"`.
    let le = |bound: &str| -> f64 {
        let bound: f64 = bound.parse().unwrap();
        result
            .iter()
            .find(|s| {
                s["metric"]["le"]
                    .as_str()
                    .and_then(|l| l.parse::<f64>().ok())
                    == Some(bound)
            })
            .and_then(|s| s["value"][1].as_str()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "classic Prometheus, `{expr}`: no le=\"{bound}\" in {}",
                    serde_json::Value::from(result.clone())
                )
            })
    };
    let (le_01, le_05, le_1, le_inf) = (le("0.1"), le("0.5"), le("1"), le("+Inf"));
    for (bound, got, expected) in [
        ("0.1", le_01, FAST),
        ("0.5", le_05, FAST + MID),
        ("1", le_1, N),
        ("+Inf", le_inf, N),
    ] {
        let expected = expected as f64;
        assert!(
            got <= expected && got >= expected - DELAYED && le_inf == N as f64,
            "classic Prometheus, `{expr}`, le=\"{bound}\": expected {expected} (at most \
             {DELAYED} fewer), got {got}: {}",
            serde_json::Value::from(result.clone())
        );
    }
    // Native buckets: 0.5 and 1 are bucket boundaries of every schema >= 0, so the native
    // histogram splits exactly where the classic one does.
    let expr = format!("sum({FAMILY})");
    let result = native.query(&expr);
    let hist = &result[0]["histogram"][1];
    let buckets: Vec<(f64, f64, f64)> = hist["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("native Prometheus, `{expr}`: no buckets in {hist}"))
        .iter()
        .map(|b| {
            let f = |i: usize| b[i].as_str().and_then(|s| s.parse().ok()).unwrap();
            (f(1), f(2), f(3))
        })
        .collect();
    let up_to = |bound: f64| -> f64 {
        buckets
            .iter()
            .map(|&(lo, hi, n)| {
                assert!(
                    hi <= bound || lo >= bound,
                    "native Prometheus, `{expr}`: bucket ({lo}, {hi}] straddles {bound}: {hist}"
                );
                if hi <= bound {
                    n
                } else {
                    0.0
                }
            })
            .sum()
    };
    let (native_05, native_1) = (up_to(0.5), up_to(1.0));
    assert!(
        native_05 == le_05 && native_1 == le_1,
        "observations <= 0.5 s and <= 1 s: native {native_05}, {native_1}, classic {le_05}, \
         {le_1}; expected equal. Native `{expr}`: {hist}"
    );

    // The 0.99 quantile: both in the predicted classic bucket, so the native one within the
    // classic bucket resolution of the classic one. Over the measured traffic (rate), as a
    // dashboard has it, and over everything (the counters themselves, no extrapolation).
    let truth = {
        let mut s = sleeps.clone();
        s.sort_unstable();
        s[(N * 99).div_ceil(100) - 1] as f64 / 1000.0
    };
    let mut figures = Vec::new();
    for (what, native_expr, classic_expr) in [
        (
            "rate[1m]",
            format!("histogram_quantile(0.99, sum(rate({FAMILY}[1m])))"),
            format!("histogram_quantile(0.99, sum by (le) (rate({FAMILY}_bucket[1m])))"),
        ),
        (
            "counters",
            format!("histogram_quantile(0.99, sum({FAMILY}))"),
            format!("histogram_quantile(0.99, sum by (le) ({FAMILY}_bucket))"),
        ),
    ] {
        let native_q = native.value(&native_expr);
        let classic_q = classic.value(&classic_expr);
        let bucket = classic_bucket(classic_q);
        assert!(
            bucket == EXPECTED_BUCKET,
            "classic Prometheus, `{classic_expr}`: expected a quantile in {EXPECTED_BUCKET:?}, \
             got {classic_q} (classic buckets le 0.1/0.5/1: {le_01}/{le_05}/{le_1} of {le_inf})"
        );
        assert!(
            native_q > bucket.0 && native_q <= bucket.1,
            "native Prometheus, `{native_expr}`: expected a quantile in the classic bucket \
             {bucket:?} of the classic one ({classic_q}), got {native_q}. Native `sum({FAMILY})`: \
             {hist}"
        );
        // Native buckets are ~9 % wide (schema 3): far closer to the truth than the classic.
        assert!(
            native_q > truth / 1.2 && native_q < truth * 1.2,
            "native Prometheus, `{native_expr}`: expected about {truth} s (the slept 0.99 \
             quantile), got {native_q}"
        );
        figures.push(format!(
            "{what}: native {native_q:.4}, classic {classic_q:.4}"
        ));
    }

    for p in both {
        p.target_healthy()
            .unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail()));
    }
    eprintln!(
        "N = {N} ({sent} warm-up; fast/mid/slow {FAST}/{MID}/{SLOW}), load {load_time:.1?}, \
         per worker {per_worker:?}; classic le 0.1/0.5/1/+Inf {le_01}/{le_05}/{le_1}/{le_inf}; \
         sum native {native_sum:.6} classic {classic_sum:.6} (slept {slept}); 0.99 quantile \
         (slept: {truth}) {}; bucket {EXPECTED_BUCKET:?}; {} native buckets; test {:.1?}",
        figures.join("; "),
        buckets.len(),
        started.elapsed()
    );
}

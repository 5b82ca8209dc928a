//! gpe-core's request-metrics engine over a private store, for the framework adapters' tests
//! (gpe-actix, gpe-tower), which include this file by path (`#[path = "..."] mod ...;`).
#![allow(dead_code, unreachable_pub)]

use gpe_core::http::{RequestMetrics, RequestMetricsBuilder};

#[path = "exposition.rs"]
mod exposition;
pub use exposition::{series_count, sum};

/// A [`RequestMetrics`] (worker "1") recording into a store in its own temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub metrics: RequestMetrics,
}

/// A fixture with the duration buckets `[0.25, 10]` that [`Fixture::assert_slow_body_recorded`]
/// reads.
pub fn slow_body_fixture() -> Fixture {
    fixture(
        RequestMetrics::builder()
            .duration_buckets(vec![0.25, 10.0])
            .unwrap(),
    )
}

/// The tenants the request-label tests send, in order (`x-tenant` header), against a fixture
/// from [`tenant_fixture`]: with a cap of 2, the last two go to the overflow series.
pub const TENANTS: [&str; 5] = ["acme", "initech", "acme", "umbrella", "hooli"];

/// A fixture whose families have a `tenant` label of their own, and a series cap of 2.
pub fn tenant_fixture() -> Fixture {
    fixture(
        RequestMetrics::builder()
            .label("tenant")
            .unwrap()
            .max_series(2)
            .unwrap(),
    )
}

/// `builder` built as worker "1" over a fresh store.
pub fn fixture(builder: RequestMetricsBuilder) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = gpe_core::Store::open(dir.path()).unwrap();
    let metrics = builder.worker_id("1").build(&store).unwrap();
    Fixture { dir, metrics }
}

impl Fixture {
    /// The text exposition of the store, as a scrape sees it.
    pub fn text(&self) -> String {
        let families = gpe_core::MultiProcessCollector::new(self.dir.path()).gather();
        gpe_core::expose::encode_text(&families).unwrap()
    }

    /// Sum of the samples of `name` whose labels include every `k="v"` of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum(&self.text(), name, labels)
    }

    /// Sum of `gunicorn_worker_requests_total` over the series with every `k="v"` of `labels`.
    pub fn requests(&self, labels: &[(&str, &str)]) -> f64 {
        self.sum("gunicorn_worker_requests_total", labels)
    }

    /// Sum of `gunicorn_worker_requests_in_flight` over the series with every `k="v"` of `labels`.
    pub fn in_flight(&self, labels: &[(&str, &str)]) -> f64 {
        self.sum("gunicorn_worker_requests_in_flight", labels)
    }

    /// Sum of `gunicorn_worker_failed_requests_total` with this `error_type`.
    pub fn failed(&self, error_type: &str) -> f64 {
        self.sum(
            "gunicorn_worker_failed_requests_total",
            &[("error_type", error_type)],
        )
    }

    /// After the 200 requests both adapters' `counts_add_up_exactly` send (in turn `GET /`,
    /// `GET /users/{i}`, `POST /users/{i}` and `GET /nowhere/{i}`, with `/health` excluded): each
    /// counted once under its route and status, the bodies' bytes summed, nothing in flight.
    pub fn assert_mixed_requests_counted(&self) {
        assert_eq!(self.requests(&[]), 200.0);
        assert_eq!(
            self.requests(&[
                ("endpoint", "/users/{id}"),
                ("method", "POST"),
                ("status", "200")
            ]),
            50.0
        );
        assert_eq!(
            self.requests(&[("endpoint", "<unmatched>"), ("status", "404")]),
            50.0
        );
        assert_eq!(self.in_flight(&[]), 0.0);
        // "hello" is 5 bytes, "user" 4, "made" 4; 404s have an empty body.
        assert_eq!(
            self.sum("gunicorn_worker_response_size_bytes_sum", &[]),
            650.0 // 50 × "hello" + 100 × "user"/"made"
        );
    }

    /// After the two-chunk body of `endpoint` ("first", then "second" 300 ms later) was read to
    /// its end, with duration buckets `[0.25, 10]`: nothing in flight, the duration (body
    /// included) in the 10 s bucket and not in the 0.25 s one, its 11 bytes counted.
    pub fn assert_slow_body_recorded(&self, endpoint: &str) {
        assert_eq!(self.in_flight(&[]), 0.0);
        let le = |b: &str| {
            self.sum(
                "gunicorn_worker_request_duration_seconds_bucket",
                &[("endpoint", endpoint), ("le", b)],
            )
        };
        assert_eq!(le("0.25"), 0.0);
        assert_eq!(le("10"), 1.0);
        assert_eq!(
            self.sum(
                "gunicorn_worker_response_size_bytes_sum",
                &[("endpoint", endpoint)]
            ),
            11.0
        );
    }

    /// After a response body of `endpoint` was dropped before its end: nothing in flight, one
    /// client disconnect counted for `endpoint`.
    pub fn assert_body_drop_recorded(&self, endpoint: &str) {
        assert_eq!(self.in_flight(&[]), 0.0);
        assert_eq!(
            self.sum(
                "gunicorn_worker_client_disconnects_total",
                &[("endpoint", endpoint)]
            ),
            1.0
        );
    }

    /// After [`TENANTS`] to `/users/{id}` on a [`tenant_fixture`]: the first two tenants have
    /// their series, the rest went to the overflow series, and every request was counted.
    pub fn assert_tenants_bounded(&self) {
        assert_eq!(
            self.requests(&[("tenant", "acme"), ("endpoint", "/users/{id}")]),
            2.0
        );
        assert_eq!(self.requests(&[("tenant", "initech")]), 1.0);
        assert_eq!(self.requests(&[("tenant", "umbrella")]), 0.0);
        assert_eq!(
            self.requests(&[("tenant", "<overflow>"), ("endpoint", "<overflow>")]),
            2.0
        );
        assert_eq!(self.requests(&[]), 5.0);
    }
}

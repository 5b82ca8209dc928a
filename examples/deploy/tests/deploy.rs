//! The deployment files are valid, and every dashboard query returns data against the demo
//! (gpe-master + 4 example-axum workers, scraped by a real Prometheus).

#[path = "../../support/tests_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, free_port, get, load, percent_encode, target_bin, Proc};

fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every `(panel title, expr, has data in the demo)` of the dashboard: panels described as
/// "Only when …" (Redis) have none in the demo, which runs without Redis.
fn dashboard_queries() -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(here("grafana/gpe-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap().to_owned();
        let in_demo = !p["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Only when"));
        // A row has no queries.
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                title.clone(),
                t["expr"].as_str().unwrap().to_owned(),
                in_demo,
            ));
        }
    }
    out
}

#[test]
fn files_are_valid() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 16);
    for family in [
        "gpe_scrape_duration_seconds_bucket",
        "gpe_collector_files_skipped_total",
        "gpe_master_workers_up",
        "gpe_series_capped_total",
        "gpe_redis_up",
        "gunicorn_worker_requests_total",
        "gunicorn_worker_request_duration_seconds_bucket",
        "gunicorn_worker_failed_requests_total",
        "gunicorn_worker_memory_bytes",
        "gunicorn_worker_cpu_percent",
        "gunicorn_master_worker_restart_total",
        "gunicorn_master_signals_total",
    ] {
        assert!(
            queries.iter().any(|(_, e, _)| e.contains(family)),
            "no panel uses {family}"
        );
    }
    // The scrape config (with its rule file), the alert rules, and their unit tests.
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(here("prometheus"))
            .output()
            .expect("promtool (`bash .ci/deps` installs Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let socket = std::fs::read_to_string(here("systemd/gpe-app.socket")).unwrap();
    assert!(socket.contains("ListenStream=127.0.0.1:8000"));
    let service = std::fs::read_to_string(here("systemd/gpe-app.service")).unwrap();
    // gunicorn's documented unit, only ExecStart changed: Type=notify, the socket from the
    // .socket unit (socket activation, no --bind).
    assert!(service.contains("Type=notify") && service.contains("Requires=gpe-app.socket"));
    let exec_start = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(!exec_start.contains("--bind"), "{exec_start}");
}

#[test]
fn every_dashboard_query_returns_data_against_the_demo() {
    let (Some(master), Some(app)) = (target_bin("gpe-master"), target_bin("example-axum")) else {
        panic!("gpe-master and example-axum must be built in this target directory: `cargo build --workspace --bins` (.ci/test does)");
    };
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "no prometheus binary: `bash .ci/deps` installs Debian's prometheus package"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let (port, metrics_port, prom_port) = (free_port(), free_port(), free_port());
    let master = Proc::spawn(
        Command::new(master)
            .args(["--workers", "4", "--bind", &format!("127.0.0.1:{port}")])
            .arg(app)
            .env("PROMETHEUS_MULTIPROC_DIR", &store)
            .env("PROMETHEUS_BIND_ADDRESS", "127.0.0.1")
            .env("PROMETHEUS_METRICS_PORT", metrics_port.to_string()),
    );
    eventually("the app", Duration::from_secs(30), || {
        get(port, "/health").ok()
    });

    // The committed scrape config, pointed at this run's master and scraping every second.
    let committed = std::fs::read_to_string(here("prometheus/prometheus.yml")).unwrap();
    assert!(committed.contains("127.0.0.1:9091") && committed.contains("scrape_interval: 5s"));
    let config = dir.path().join("prometheus.yml");
    // Its rule file beside it, as in a deployment.
    std::fs::copy(here("prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    std::fs::write(
        &config,
        committed
            .replace("127.0.0.1:9091", &format!("127.0.0.1:{metrics_port}"))
            .replace("interval: 5s", "interval: 1s"),
    )
    .unwrap();
    let _prometheus = Proc::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );

    // Traffic of every kind, spread over a few scrapes, with a HUP in the middle: a signal for
    // gunicorn_master_signals_total, replaced workers for both restart families.
    let started = Instant::now();
    let mut hupped = false;
    while started.elapsed() < Duration::from_secs(6) {
        if !hupped && started.elapsed() > Duration::from_secs(2) {
            master.signal("HUP");
            hupped = true;
        }
        load(
            port,
            &["/", "/users/1", "/slow?ms=20", "/fail", "/panic", "/nope"],
            60,
            4,
        );
        // A client that goes away before the response: a disconnect.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = s.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n");
        }
    }
    let query = |expr: &str| -> Option<usize> {
        let (status, body) = get(
            prom_port,
            &format!("/api/v1/query?query={}", percent_encode(expr)),
        )
        .ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(v["data"]["result"].as_array()?.len())
    };
    eventually(
        "Prometheus scraping the master",
        Duration::from_secs(30),
        || (query("up{job=\"gpe\"} == 1")? == 1).then_some(()),
    );
    // The alert rules loaded, and evaluated without errors against the demo's series.
    let rules = eventually("the alert rules", Duration::from_secs(30), || {
        // A body this large comes chunked: curl reads it (`.ci/deps` installs it).
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{prom_port}/api/v1/rules")])
            .output()
            .ok()?;
        let status = if out.status.success() { 200 } else { 0 };
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| r["health"] == "ok");
        (status == 200 && rules.len() == 6 && evaluated).then_some(rules)
    });
    // A healthy demo fires none of them (a pending GpeWorkersBelowConfigured right after the
    // HUP is allowed: it has a 5-minute `for`).
    for r in &rules {
        assert!(r["state"] != "firing", "{r}");
    }
    // Enough samples for rate() and the sampler's first values (every 5 s).
    let mut missing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (title, expr, in_demo) in dashboard_queries() {
        // `or vector(0)` lets a panel show 0 before the first event; here the data must be real.
        let expr = expr.trim_end_matches(" or vector(0)");
        loop {
            // A Redis panel: the query must be valid (Prometheus answers it), without data here.
            if query(expr).is_some_and(|n| n > 0 || !in_demo) {
                break;
            }
            if Instant::now() > deadline {
                missing.push(format!("{title}: {expr}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    assert!(
        missing.is_empty(),
        "queries without data:\n{}",
        missing.join("\n")
    );
}

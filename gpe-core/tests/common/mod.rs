//! Helpers shared by gpe-core's integration tests: child processes and sample maps.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpe_core::Store;
use prometheus::proto::{MetricFamily, MetricType};

pub type Labels = BTreeMap<String, String>;
pub type Samples = BTreeMap<(String, Labels), f64>;

/// The env var a re-executed test binary reads to know it is a child, and what to do.
pub const CHILD_ENV: &str = "TEST_CHILD_ROLE";

/// Re-run this test binary as a child process running the test `child_test` with `action`.
pub fn spawn_child(child_test: &str, dir: &Path, action: &str, stdin_piped: bool) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child_test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, action)
        .env("PROMETHEUS_MULTIPROC_DIR", dir)
        .stdin(if stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process")
}

/// The body of the `child` test of a binary: in a process [`spawn_child`] started, run `body` with
/// its action split at `:` and the store of its `PROMETHEUS_MULTIPROC_DIR`; in a normal test run,
/// nothing.
pub fn run_child(body: impl FnOnce(&[&str], &Store)) {
    let Ok(action) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::env::var("PROMETHEUS_MULTIPROC_DIR").unwrap();
    let store = Store::open(&dir).unwrap();
    let parts: Vec<&str> = action.split(':').collect();
    body(&parts, &store);
}

/// One gauge `g_<mode>{k="v"}` per gauge mode in `store`, each set to `value`.
pub fn set_a_gauge_of_every_mode(store: &Store, value: f64) {
    for mode in gpe_core::GaugeMode::ALL_MODES {
        gpe_core::GaugeVec::new(
            prometheus::Opts::new(format!("g_{mode}"), "Gauge."),
            &["k"],
            mode,
            store,
        )
        .unwrap()
        .with_label_values(&["v"])
        .unwrap()
        .set(value);
    }
}

/// In a child: tell the parent, waiting in [`wait_ready`], that it is ready.
pub fn child_ready() {
    use std::io::Write;
    println!("gpe-child-ready");
    std::io::stdout().flush().unwrap();
}

/// In a child: block until the parent writes a line to its stdin or closes it.
pub fn child_wait_stdin() {
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

/// Run `n` children doing `action` in `dir` at once, and wait until every one has exited
/// successfully.
pub fn run_children(n: usize, dir: &Path, action: &str) {
    let mut kids: Vec<_> = (0..n)
        .map(|_| spawn_child("child", dir, action, false))
        .collect();
    for k in &mut kids {
        wait_success(k);
    }
}

/// Wait for a line `ready` on the child's stdout.
pub fn wait_ready(child: &mut Child) {
    use std::io::BufRead;
    let out = child.stdout.as_mut().unwrap();
    let mut reader = std::io::BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before it was ready");
        if line.trim_end().ends_with("gpe-child-ready") {
            return;
        }
    }
}

pub fn wait_success(child: &mut Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// Flatten families into samples the way Python's exposition names them.
pub fn samples(families: &[MetricFamily]) -> Samples {
    let mut out = Samples::new();
    for mf in families {
        for m in mf.get_metric() {
            let labels: Labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            match mf.get_field_type() {
                MetricType::COUNTER => {
                    out.insert((mf.name().to_owned(), labels), m.get_counter().get_value());
                }
                MetricType::GAUGE => {
                    out.insert((mf.name().to_owned(), labels), m.get_gauge().get_value());
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let mut l = labels.clone();
                        l.insert("le".into(), fmt_le(b.upper_bound()));
                        out.insert(
                            (format!("{}_bucket", mf.name()), l),
                            b.cumulative_count() as f64,
                        );
                    }
                    let mut l = labels.clone();
                    l.insert("le".into(), "+Inf".into());
                    out.insert(
                        (format!("{}_bucket", mf.name()), l),
                        h.get_sample_count() as f64,
                    );
                    out.insert(
                        (format!("{}_count", mf.name()), labels.clone()),
                        h.get_sample_count() as f64,
                    );
                    out.insert((format!("{}_sum", mf.name()), labels), h.get_sample_sum());
                }
                _ => {}
            }
        }
    }
    out
}

/// A canonical spelling of a bucket bound, so Python's and ours compare equal.
pub fn fmt_le(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v:e}")
    }
}

pub fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let l: Labels = labels
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    s.get(&(name.to_owned(), l)).copied()
}

/// Poll `f` until it returns true or the deadline passes.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}

pub fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn require_python() {
    assert!(
        python_available(),
        "python3 with prometheus_client is required: run `bash .ci/deps` (pip install prometheus_client==0.26.0)"
    );
}

/// Parse an exposition with Python `prometheus_client`'s parser (`format`: `text` or
/// `openmetrics`); one `type|name{labels} value` line per sample, sorted. Panics with the parser's
/// error when it rejects the text.
pub fn python_parse(format: &str, body: &str) -> String {
    let script = r#"
import sys
fmt = sys.argv[1]
text = sys.stdin.read()
if fmt == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        labels = ",".join("%s=%r" % kv for kv in sorted(s.labels.items()))
        out.append("%s|%s{%s} %r" % (fam.type, s.name, labels, float(s.value)))
print("\n".join(sorted(out)))
"#;
    let out = run_with_input(
        Command::new("python3").args(["-c", script, format]),
        body,
        "python3 (installed by .ci/deps)",
    );
    assert!(
        out.status.success(),
        "prometheus_client could not parse the {format} exposition:\n{}\n---\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` (Debian's `prometheus` package, the reference linter of the text
/// format) must accept `text` and report nothing.
pub fn promtool_check(text: &str) {
    let out = run_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        text,
        "promtool (installed by .ci/deps)",
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n---\n{text}"
    );
}

/// Run `cmd` with `input` on its stdin, to its end; its output (`missing`: the panic message when
/// it cannot be started).
fn run_with_input(cmd: &mut Command, input: &str, missing: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(missing);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

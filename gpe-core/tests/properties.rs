//! Property tests (proptest): which metric and label names registration accepts, label values and
//! help texts surviving the store, the collector and both text encoders byte for byte, and the
//! `.db` readers (collector, compaction, a store reopening its own file) never panicking on
//! arbitrary bytes.
//!
//! Every case opens its store in a fresh temporary directory. Failing cases are persisted by
//! proptest in `proptest-regressions/`; keep those files in the tree (they are replayed first).

use std::collections::BTreeMap;
use std::path::Path;

use gpe_core::expose::{encode_openmetrics, encode_text};
use gpe_core::prometheus::proto::MetricFamily;
use gpe_core::prometheus::{HistogramOpts, Opts};
use gpe_core::{
    Counter, CounterVec, Error, GaugeMode, GaugeVec, HistogramVec, LivePids, Liveness,
    MultiProcessCollector, Store,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// Few cases (each one creates directories, maps files and scrapes); failures persisted in
/// `gpe-core/tests/proptest-regressions/properties.txt` (cargo runs tests from the package root).
fn config() -> Config {
    Config {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/properties.txt",
        ))),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Oracles and helpers.

/// `^[a-zA-Z_:][a-zA-Z0-9_:]*$`
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `^[a-zA-Z_][a-zA-Z0-9_]*$` and not starting with `__` (reserved by Prometheus; Python
/// `prometheus_client` and client_golang reject it too).
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Names: valid ones (also with a `__` prefix), the special cases in `fixed`, arbitrary unicode,
/// and valid ones with one odd character spliced in.
fn name_strategy(
    valid: &'static str,
    fixed: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let odd = prop::sample::select(vec![
        "", "0", "9", "-", ".", " ", "é", "\0", "\n", "\"", "\\", "{", "}", "=", ",", ":", "_",
        "__", "µ", "😀", "a",
    ]);
    prop_oneof![
        3 => valid,
        1 => valid.prop_map(|s| format!("__{s}")),
        2 => prop::sample::select(fixed).prop_map(str::to_owned),
        2 => any::<String>(),
        2 => (valid, any::<prop::sample::Index>(), odd).prop_map(|(s, at, odd)| {
            let at = at.index(s.len() + 1);
            // `valid` is ASCII, so every byte offset is a char boundary.
            format!("{}{odd}{}", &s[..at], &s[at..])
        }),
    ]
}

/// Metric names worth trying every run.
const METRIC_NAMES: &[&str] = &[
    "", "_", ":", "_total", "total", "a:b", "__name__", "le", "0abc", "a-b", "a.b", "é", " a",
    "a ", "a\n", "Ab_9:",
];

/// Label names worth trying every run (`le` and `pid` are reserved by histograms and gauges).
const LABEL_NAMES: &[&str] = &[
    "", "_", "__", "__name__", "le", "pid", "quantile", ":", "a:b", "0", "0a", "job", "a-b", "é",
    "LE", "Pid",
];

/// Arbitrary strings that hit the characters the formats escape (`\`, `"`, newline) often.
fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\\', '"', '\n', '\r', '\t', '\0', '\u{7}', '\u{7f}', 'n', '{', '}', ',', '=', ' ', '#',
        'é', '\u{2028}', '\u{feff}', '😀',
    ]);
    prop::collection::vec(prop_oneof![2 => any::<char>(), 1 => special], 0..max)
        .prop_map(String::from_iter)
}

/// A parsed sample line: name, labels in order, value.
type ParsedSample = (String, Vec<(String, String)>, String);

/// Parse one sample line of the text format (0.0.4 or OpenMetrics), unescaping label values
/// (`\\` -> `\`, `\"` -> `"`, `\n` -> newline; any other escape is an error).
fn parse_sample_line(line: &str) -> Result<ParsedSample, String> {
    let mut chars = line.chars().peekable();
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c == '{' || c == ' ' {
            break;
        }
        name.push(c);
        chars.next();
    }
    let mut labels = Vec::new();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            let mut label = String::new();
            loop {
                match chars.next() {
                    Some('=') => break,
                    Some(c) => label.push(c),
                    None => return Err(format!("unterminated label name in {line:?}")),
                }
            }
            if chars.next() != Some('"') {
                return Err(format!("label {label:?} has no opening quote in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?} in {line:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated label value in {line:?}")),
                }
            }
            labels.push((label, value));
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
    }
    if chars.next() != Some(' ') {
        return Err(format!("no space before the value in {line:?}"));
    }
    Ok((name, labels, chars.collect()))
}

/// Unescape a `# HELP` text: `\\` and `\n` (and, for OpenMetrics, `\"`).
fn unescape_help(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in help {s:?}")),
        }
    }
    Ok(out)
}

/// The lines of `text` that are samples (not comments, not empty).
fn sample_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn family<'a>(families: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    families.iter().find(|f| f.name() == name)
}

/// The value of the counter series of family `name` whose labels are exactly `labels`.
fn counter_value(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    family(families, name)?
        .get_metric()
        .iter()
        .find(|m| {
            let got: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            got == labels
        })
        .map(|m| m.get_counter().get_value())
}

// ---------------------------------------------------------------------------------------------
// Names.

proptest! {
    #![proptest_config(config())]

    /// A metric name is accepted exactly when it matches `^[a-zA-Z_:][a-zA-Z0-9_:]*$`, by every
    /// metric type; otherwise registration is `Err(InvalidMetric)`. An accepted counter name is
    /// exposed as itself (with `_total` added when missing).
    #[test]
    fn metric_names(name in name_strategy("[a-zA-Z_:][a-zA-Z0-9_:]{0,16}", METRIC_NAMES)) {
        let valid = is_metric_name(&name);
        let dir = tempdir();
        // One store per type: a counter `x` and a gauge `x_total` would rightly conflict.
        let stores: Vec<Store> = ["c", "g", "h"]
            .iter()
            .map(|sub| Store::open(dir.path().join(sub)).unwrap())
            .collect();

        let counter = CounterVec::new(Opts::new(name.clone(), "Help."), &[], &stores[0]);
        let gauge = GaugeVec::new(Opts::new(name.clone(), "Help."), &[], GaugeMode::Sum, &stores[1]);
        let histogram = HistogramVec::new(HistogramOpts::new(name.clone(), "Help."), &[], &stores[2]);
        for (what, ok, err) in [
            ("counter", counter.is_ok(), counter.as_ref().err()),
            ("gauge", gauge.is_ok(), gauge.as_ref().err()),
            ("histogram", histogram.is_ok(), histogram.as_ref().err()),
        ] {
            prop_assert_eq!(ok, valid, "{} name {:?}: {:?}", what, name, err);
            if let Some(e) = err {
                prop_assert!(matches!(e, Error::InvalidMetric { .. }), "{} {:?}: {:?}", what, name, e);
            }
        }

        if let Ok(counter) = counter {
            counter.with_label_values(&[]).unwrap().inc();
            let families = MultiProcessCollector::new(stores[0].dir()).gather();
            let exposed = if name.ends_with("_total") { name.clone() } else { format!("{name}_total") };
            prop_assert_eq!(counter_value(&families, &exposed, &[]), Some(1.0), "{:?}", families);
            let text = encode_text(&families).unwrap();
            prop_assert_eq!(sample_lines(&text), vec![format!("{exposed} 1")]);
        }
    }

    /// A label name (variable or constant) is accepted exactly when it matches
    /// `^[a-zA-Z_][a-zA-Z0-9_]*$`, does not start with `__`, and is not reserved by the metric type (`le` for histograms,
    /// `pid` for gauges); otherwise registration is `Err(InvalidMetric)`. Accepted names are
    /// exposed unchanged.
    #[test]
    fn label_names(label in name_strategy("[a-zA-Z_][a-zA-Z0-9_]{0,12}", LABEL_NAMES)) {
        let valid = is_label_name(&label);
        let dir = tempdir();
        let store = Store::open(dir.path()).unwrap();
        let labels = [label.as_str()];

        let counter = CounterVec::new(Opts::new("c_total", "Help."), &labels, &store);
        let constant = CounterVec::new(
            Opts::new("k_total", "Help.").const_label(label.clone(), "v"),
            &[],
            &store,
        );
        let gauge = GaugeVec::new(Opts::new("g", "Help."), &labels, GaugeMode::Sum, &store);
        let histogram = HistogramVec::new(HistogramOpts::new("h", "Help."), &labels, &store);
        for (what, ok, expected, err) in [
            ("counter", counter.is_ok(), valid, counter.as_ref().err()),
            ("const label", constant.is_ok(), valid, constant.as_ref().err()),
            ("gauge", gauge.is_ok(), valid && label != "pid", gauge.as_ref().err()),
            ("histogram", histogram.is_ok(), valid && label != "le", histogram.as_ref().err()),
        ] {
            prop_assert_eq!(ok, expected, "{} label {:?}: {:?}", what, label, err);
            if let Some(e) = err {
                prop_assert!(matches!(e, Error::InvalidMetric { .. }), "{} {:?}: {:?}", what, label, e);
            }
        }

        if let (Ok(counter), Ok(constant)) = (counter, constant) {
            counter.with_label_values(&["x"]).unwrap().inc();
            constant.with_label_values(&[]).unwrap().inc_by(2.0);
            let families = MultiProcessCollector::new(dir.path()).gather();
            prop_assert_eq!(counter_value(&families, "c_total", &[(label.as_str(), "x")]), Some(1.0));
            prop_assert_eq!(counter_value(&families, "k_total", &[(label.as_str(), "v")]), Some(2.0));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label values and help texts.

proptest! {
    #![proptest_config(config())]

    /// Arbitrary label values and help texts (any unicode, `\`, `"`, newlines, control
    /// characters) come back unchanged: from the collector's families, and from both text
    /// formats after unescaping (also for an untyped family in the text format). Each output has
    /// exactly one sample line, so no raw newline ever breaks a line.
    #[test]
    fn label_values_and_help_round_trip(
        a in tricky_string(24),
        b in tricky_string(8),
        help in tricky_string(16).prop_filter("help must not be empty", |h| !h.is_empty()),
    ) {
        let dir = tempdir();
        let store = Store::open(dir.path()).unwrap();
        let c = CounterVec::new(Opts::new("values_total", help.clone()), &["a", "b"], &store).unwrap();
        c.with_label_values(&[&a, &b]).unwrap().inc_by(2.0);
        // Looking the series up again finds the same slot, not a second series.
        c.with_label_values(&[&a, &b]).unwrap().inc();
        prop_assert_eq!(c.series_count(), 1);

        let families = MultiProcessCollector::new(dir.path()).gather();
        prop_assert_eq!(families.len(), 1);
        prop_assert_eq!(families[0].help(), help.as_str());
        prop_assert_eq!(counter_value(&families, "values_total", &[("a", &a), ("b", &b)]), Some(3.0));

        let want_labels = vec![("a".to_owned(), a.clone()), ("b".to_owned(), b.clone())];

        let text = encode_text(&families).unwrap();
        prop_assert!(text.ends_with('\n'));
        single_sample_round_trips(&text, false, "values_total", "values_total", &want_labels, &help)?;

        let om = encode_openmetrics(&families).unwrap();
        prop_assert!(om.ends_with("# EOF\n"));
        single_sample_round_trips(&om, true, "values", "values_total", &want_labels, &help)?;

        // The same through the text encoder's own path for untyped families (an in-process
        // registry given to the collector can hold them).
        let text = encode_text(&[untyped_family("u", &help, &want_labels, 3.0)]).unwrap();
        prop_assert!(text.contains("\n# TYPE u untyped\n"), "{:?}", text);
        single_sample_round_trips(&text, false, "u", "u", &want_labels, &help)?;
    }
}

/// `out`, a text exposition (OpenMetrics when `openmetrics`), has exactly one sample line,
/// `sample{labels} 3` with the label values unescaped back to `labels`, and the `# HELP` line of
/// `family` unescapes back to `help`.
fn single_sample_round_trips(
    out: &str,
    openmetrics: bool,
    family: &str,
    sample: &str,
    labels: &[(String, String)],
    help: &str,
) -> Result<(), TestCaseError> {
    let lines = sample_lines(out);
    prop_assert_eq!(lines.len(), 1, "{:?}", out);
    let (name, parsed, value) = parse_sample_line(lines[0]).map_err(TestCaseError::fail)?;
    prop_assert_eq!(name, sample);
    prop_assert_eq!(parsed.as_slice(), labels);
    prop_assert_eq!(value, "3");
    let help_prefix = format!("# HELP {family} ");
    let help_line = out
        .split('\n')
        .find_map(|l| l.strip_prefix(help_prefix.as_str()))
        .ok_or_else(|| TestCaseError::fail(format!("no HELP line in {out:?}")))?;
    prop_assert_eq!(
        unescape_help(help_line, openmetrics).map_err(TestCaseError::fail)?,
        help
    );
    Ok(())
}

/// An untyped family of one sample, as a registry's custom collector might produce.
fn untyped_family(name: &str, help: &str, labels: &[(String, String)], v: f64) -> MetricFamily {
    use gpe_core::prometheus::proto::{LabelPair, Metric, MetricType};
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name(k.clone());
                l.set_value(v.clone());
                l
            })
            .collect(),
    );
    #[allow(deprecated)]
    {
        let mut u = gpe_core::prometheus::proto::Untyped::default();
        u.set_value(v);
        m.set_untyped(u);
    }
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_owned());
    mf.set_help(help.to_owned());
    mf.set_field_type(MetricType::UNTYPED);
    mf.set_metric(vec![m]);
    mf
}

// ---------------------------------------------------------------------------------------------
// Corrupt `.db` files.

/// A pid no process can have (above `i32::MAX`): its files belong to a dead process unless a
/// `LivePids` says otherwise.
const GARBAGE_PID: u32 = 4_000_000_000;

/// The metric of the valid file; no generated key can name it.
const VALID: &str = "prop_valid";

/// One entry in the `.db` layout (Python `mmap_dict.py`): `i32` key length, the key padded with
/// spaces to 8-byte alignment, then value and timestamp as `f64`, all little-endian.
fn push_entry(out: &mut Vec<u8>, key: &[u8], value: f64, timestamp: f64) {
    let n = key.len();
    out.extend_from_slice(&(n as i32).to_le_bytes());
    out.extend_from_slice(key);
    let padded = n + (8 - (n + 4) % 8);
    out.resize(out.len() + padded - n, b' ');
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
}

/// A JSON string literal, escaped as Python's `json.dumps` would.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key: arbitrary text, or a well-formed gpe/Python key with odd contents (empty or invalid
/// metric names, `le` values that are not numbers, suffixes of other types).
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    let metric = prop_oneof![
        "[a-z]{1,3}".prop_map(|s| format!("g_{s}")),
        Just(String::new()),
        Just("1bad name".to_owned()),
        tricky_string(6),
    ];
    let suffix = prop::sample::select(vec!["", "_total", "_bucket", "_sum", "_count", "_created"]);
    let label = (
        prop::sample::select(vec!["le", "pid", "a", "", "quantile"]),
        prop_oneof![
            prop::sample::select(vec!["0.5", "+Inf", "-Inf", "NaN", "1e309", "x", ""])
                .prop_map(str::to_owned),
            tricky_string(6),
        ],
    );
    let structured = (
        metric,
        suffix,
        prop::collection::vec(label, 0..3),
        tricky_string(6),
    )
        .prop_map(|(metric, suffix, labels, help)| {
            let labels: BTreeMap<String, String> =
                labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{}: {}", json_str(k), json_str(v)))
                .collect();
            format!(
                "[{}, {}, {{{}}}, {}]",
                json_str(&metric),
                json_str(&format!("{metric}{suffix}")),
                labels.join(", "),
                json_str(&help)
            )
            .into_bytes()
        });
    prop_oneof![
        2 => structured,
        1 => any::<String>().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 1..40),
    ]
}

/// The bytes of a metrics file: pure garbage, a header with a bogus used length, or a
/// well-formed file, then possibly truncated, with its used length kept or not, or with a byte
/// flipped.
fn db_file_strategy() -> impl Strategy<Value = Vec<u8>> {
    let garbage = prop::collection::vec(any::<u8>(), 0..4096);
    let bogus_used = (
        prop_oneof![
            any::<i32>(),
            Just(0),
            Just(7),
            Just(8),
            Just(9),
            Just(16),
            Just(i32::MAX),
            Just(-8),
        ],
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(used, rest)| {
            let mut out = used.to_le_bytes().to_vec();
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&rest);
            out
        });
    let entry = (key_strategy(), any::<f64>(), any::<f64>());
    let wellformed = (
        prop::collection::vec(entry, 0..8),
        any::<prop::sample::Index>(),
        0u8..4,
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(entries, cut, how, at, byte)| {
            let mut out = vec![0u8; 8];
            for (key, value, ts) in &entries {
                push_entry(&mut out, key, *value, *ts);
            }
            let used = out.len() as i32;
            out[..4].copy_from_slice(&used.to_le_bytes());
            match how {
                // Intact, and padded as a writer leaves it.
                0 => out.resize(out.len().max(4096), 0),
                // Truncated: entries cut short, the header still claiming the full length.
                1 => out.truncate(cut.index(out.len() + 1)),
                // Truncated, the header rewritten to the cut: a partial entry below `used`.
                2 => {
                    let cut = cut.index(out.len() + 1).max(8);
                    out.truncate(cut);
                    out[..4].copy_from_slice(&(cut as i32).to_le_bytes());
                }
                // One byte flipped anywhere (lengths, keys, values).
                _ => {
                    let at = at.index(out.len());
                    out[at] ^= byte | 1;
                }
            }
            out
        });
    prop_oneof![
        1 => garbage,
        1 => bogus_used,
        3 => wellformed,
    ]
}

/// The file name prefixes a garbage file can take.
fn kind_strategy() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "counter",
        "counter",
        "counter",
        "histogram",
        "summary",
        "gauge_all",
        "gauge_max",
        "gauge_mostrecent",
        "gauge_livesum",
    ])
}

/// A directory holding one valid file (this process's `prop_valid_total{k="v"} 3`).
fn valid_dir() -> (tempfile::TempDir, Store) {
    let dir = tempdir();
    let store = Store::open(dir.path()).unwrap();
    CounterVec::new(Opts::new(VALID, "Valid."), &["k"], &store)
        .unwrap()
        .with_label_values(&["v"])
        .unwrap()
        .inc_by(3.0);
    (dir, store)
}

/// Scrape `dir` and check the valid sample is there, in the families and in both encodings
/// (whatever the garbage decodes to must not make an encoder fail the whole scrape).
fn scrape_has_valid_sample(dir: &Path, live: &[u32]) -> Result<(), TestCaseError> {
    let families = MultiProcessCollector::new(dir)
        .with_liveness(Liveness::Pids({
            let pids = LivePids::new();
            pids.replace(live.iter().copied());
            pids
        }))
        .gather();
    let got = counter_value(&families, &format!("{VALID}_total"), &[("k", "v")]);
    prop_assert_eq!(got, Some(3.0), "{:?}", families);
    let line = format!("\n{VALID}_total{{k=\"v\"}} 3\n");
    let text = encode_text(&families).map_err(|e| TestCaseError::fail(format!("text: {e}")))?;
    prop_assert!(text.contains(&line), "{:?}", text);
    let om = encode_openmetrics(&families).map_err(|e| TestCaseError::fail(format!("om: {e}")))?;
    prop_assert!(om.contains(&line), "{:?}", om);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// A corrupt file of another (living) process is read by the collector without a panic, and
    /// the valid file's sample is still exposed.
    #[test]
    fn corrupt_file_of_a_live_process(bytes in db_file_strategy(), kind in kind_strategy()) {
        let (dir, _store) = valid_dir();
        let garbage = dir.path().join(format!("{kind}_{GARBAGE_PID}.db"));
        std::fs::write(&garbage, &bytes).unwrap();
        scrape_has_valid_sample(dir.path(), &[GARBAGE_PID])?;
        // A second scrape (the collector caches decoded keys) sees the same.
        scrape_has_valid_sample(dir.path(), &[GARBAGE_PID])?;
    }

    /// A corrupt file of a dead process goes through compaction: it is folded into the archive
    /// (when it parses), moved aside (when it does not) or dropped (`live*`/`all` gauges), never
    /// left in place and never a panic; the valid sample survives, also on the next scrape,
    /// which reads the archive written from the garbage.
    #[test]
    fn corrupt_file_of_a_dead_process(bytes in db_file_strategy(), kind in kind_strategy()) {
        let (dir, _store) = valid_dir();
        let garbage = dir.path().join(format!("{kind}_{GARBAGE_PID}.db"));
        std::fs::write(&garbage, &bytes).unwrap();
        scrape_has_valid_sample(dir.path(), &[])?;
        prop_assert!(!garbage.exists(), "compaction left {}", garbage.display());
        scrape_has_valid_sample(dir.path(), &[])?;
    }

    /// A store that finds a corrupt file under its own pid (left by an earlier process with that
    /// pid) keeps it or starts it afresh, without a panic, and records new series correctly.
    #[test]
    fn store_reopens_a_corrupt_file(bytes in db_file_strategy()) {
        let (dir, _store) = valid_dir();
        std::fs::write(dir.path().join(format!("counter_{GARBAGE_PID}.db")), &bytes).unwrap();
        let store = Store::open_as(dir.path(), GARBAGE_PID).unwrap();
        let c = Counter::new("prop_adopted_total", "Adopted.", &store).unwrap();
        c.inc();
        c.inc();
        prop_assert_eq!(c.get(), 2.0);
        scrape_has_valid_sample(dir.path(), &[GARBAGE_PID])?;
        let families = MultiProcessCollector::new(dir.path())
            .with_liveness(Liveness::Pids({
                let pids = LivePids::new();
                pids.insert(GARBAGE_PID);
                pids
            }))
            .gather();
        prop_assert_eq!(counter_value(&families, "prop_adopted_total", &[]), Some(2.0));
    }
}

//! Reading a text exposition in tests. Shared by path (`#[path = "..."] mod exposition;`) with the
//! gpe-actix, gpe-tower and examples tests, which cannot import each other's test helpers.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;

/// Sum of the samples of `name` whose labels include every `k="v"` of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// How many series (sample lines with labels) of `name` the exposition has.
pub fn series_count(text: &str, name: &str) -> usize {
    let start = format!("{name}{{");
    text.lines().filter(|l| l.starts_with(&start)).count()
}

/// The values the label `label` takes over the series of `name`.
pub fn label_values<'a>(text: &'a str, name: &str, label: &str) -> HashSet<&'a str> {
    let start = format!("{name}{{");
    let key = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(&start))
        .filter_map(|l| l.split(key.as_str()).nth(1)?.split('"').next())
        .collect()
}

/// Assert that `text` holds the stop record of a standalone worker (worker id 0) in this
/// process: its restart counted once under `reason`, its state `state`.
pub fn assert_stop_recorded(text: &str, reason: &str, state: &str) {
    let restart = format!(r#"gunicorn_worker_restart_total{{reason="{reason}",worker_id="0"}} 1"#);
    assert!(text.contains(&restart), "no {restart} in\n{text}");
    let pid = std::process::id();
    let state = format!(r#"gunicorn_worker_state{{pid="{pid}",state="{state}",worker_id="0"}} 1"#);
    assert!(text.contains(&state), "no {state} in\n{text}");
}

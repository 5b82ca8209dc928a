//! Series keys, spelled exactly as Python `prometheus_client` spells them.
//!
//! A key is `json.dumps([metric_name, sample_name, labels, help], sort_keys=True)`: separators
//! `", "` and `": "`, non-ASCII escaped as `\uXXXX`. Spelling it identically means a Python and a
//! Rust process writing the same series produce the same key.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A decoded key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) metric: String,
    pub(crate) sample: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) help: String,
}

/// Encode a key. `labels` need not be sorted.
pub(crate) fn encode<'a>(
    metric: &str,
    sample: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    help: &str,
) -> String {
    let mut sorted: Vec<(&str, &str)> = labels.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = String::with_capacity(64 + help.len());
    out.push('[');
    push_str(&mut out, metric);
    out.push_str(", ");
    push_str(&mut out, sample);
    out.push_str(", {");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_str(&mut out, k);
        out.push_str(": ");
        push_str(&mut out, v);
    }
    out.push_str("}, ");
    push_str(&mut out, help);
    out.push(']');
    out
}

/// Append `s` as a JSON string the way Python's `json.dumps` (with `ensure_ascii`) writes it.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Decode a key written by gpe or by Python.
pub(crate) fn decode(raw: &str) -> Option<Key> {
    let (metric, sample, labels, help): (String, String, BTreeMap<String, String>, String) =
        serde_json::from_str(raw).ok()?;
    Some(Key {
        metric,
        sample,
        labels,
        help,
    })
}

/// Format a bucket bound as Python's `floatToGoString` does (`0.5`, `1.0`, `+Inf`, `1e+06`).
pub(crate) fn float_to_go_string(d: f64) -> String {
    if d == f64::INFINITY {
        return "+Inf".to_owned();
    }
    if d == f64::NEG_INFINITY {
        return "-Inf".to_owned();
    }
    if d.is_nan() {
        return "NaN".to_owned();
    }
    let s = python_repr(d);
    if let Some(dot) = s.find('.') {
        if d > 0.0 && dot > 6 {
            let digits: String = s[1..dot].chars().chain(s[dot + 1..].chars()).collect();
            let mantissa = format!("{}.{}", &s[..1], digits);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            return format!("{mantissa}e+0{}", dot - 1);
        }
    }
    s
}

/// Python's `repr(float)` for the values that appear as bucket bounds.
fn python_repr(d: f64) -> String {
    let abs = d.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Python switches to exponent notation outside [1e-4, 1e16): `1e-05`, `1e+16`.
        let s = format!("{d:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{d:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_like_python_json_dumps() {
        assert_eq!(
            encode("m", "m_total", [("b", "2"), ("a", "1")], "Help."),
            r#"["m", "m_total", {"a": "1", "b": "2"}, "Help."]"#
        );
        assert_eq!(encode("m", "m", [], ""), r#"["m", "m", {}, ""]"#);
        assert_eq!(
            encode("m", "m", [("p", "é\"\\\n\u{7f}😀")], ""),
            r#"["m", "m", {"p": "\u00e9\"\\\n\u007f\ud83d\ude00"}, ""]"#
        );
    }

    #[test]
    fn round_trips() {
        let raw = encode("m", "m_bucket", [("le", "0.5"), ("x", "ü")], "h\"");
        let key = decode(&raw).unwrap();
        assert_eq!(key.metric, "m");
        assert_eq!(key.sample, "m_bucket");
        assert_eq!(key.labels["x"], "ü");
        assert_eq!(key.help, "h\"");
        assert!(decode("[1, 2]").is_none());
        assert!(decode("garbage").is_none());
    }

    #[test]
    fn bucket_bounds_like_python() {
        for (v, s) in [
            (0.005, "0.005"),
            (0.1, "0.1"),
            (1.0, "1.0"),
            (2.5, "2.5"),
            (10.0, "10.0"),
            (1024.0, "1024.0"),
            (1_000_000.0, "1e+06"),
            (4_194_304.0, "4.194304e+06"),
            (1e-5, "1e-05"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(float_to_go_string(v), s, "{v}");
        }
    }
}

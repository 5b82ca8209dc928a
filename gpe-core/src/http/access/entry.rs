//! [`AccessEntry`]: what one request's line needs, captured at its start and finished when it
//! is recorded; and the rendering of a line.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::format::{escape_into, AccessLogFormat, Atom};
use super::time::clf_now;
use super::AccessLog;

/// The head of a request, as an adapter sees it at the start (see [`AccessLog::begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The client's address (`None` over a Unix-domain socket, or when the server does not
    /// say).
    pub remote: Option<IpAddr>,
    /// `GET`.
    pub method: &'a str,
    /// The path, as sent (`/users/7`).
    pub path: &'a str,
    /// The query, without its `?` (`None` without one).
    pub query: Option<&'a str>,
    /// `HTTP/1.1`.
    pub protocol: &'a str,
}

/// The request's part of one access log line, captured at its start (only what the format
/// needs); [`finish`](Self::finish) writes the line. Made by [`AccessLog::begin`]; adapters
/// hand it to their request's [`RequestTracker`](crate::http::RequestTracker)
/// ([`log_access`](crate::http::RequestTracker::log_access)), which finishes it after
/// recording the request's metrics.
#[derive(Debug)]
pub struct AccessEntry {
    log: AccessLog,
    captured: Captured,
}

/// The captured values of one request.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub(super) remote: Option<IpAddr>,
    pub(super) method: Cow<'static, str>,
    /// The path, then `?query` when there is one.
    pub(super) target: Box<str>,
    pub(super) path_len: usize,
    pub(super) protocol: Cow<'static, str>,
    /// Values of [`AccessLogFormat::request_headers`], in their order.
    pub(super) request_headers: Box<[Option<Box<[u8]>>]>,
    /// Values of [`AccessLogFormat::response_headers`], in their order (empty until captured).
    pub(super) response_headers: Box<[Option<Box<[u8]>>]>,
}

/// How a request ended, for its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ended {
    pub(super) status: Option<u16>,
    pub(super) bytes: u64,
    pub(super) elapsed: Duration,
}

fn static_or_owned(value: &str, known: &[&'static str]) -> Cow<'static, str> {
    match known.iter().find(|k| **k == value) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(value.to_owned()),
    }
}

impl Captured {
    /// What `format` needs of `head` and its headers.
    pub(super) fn capture<'h>(
        format: &AccessLogFormat,
        head: &RequestHead<'_>,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Captured {
        const METHODS: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        const PROTOCOLS: &[&str] = &["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/3.0", "HTTP/0.9"];
        let needs = &format.needs;
        let (target, path_len) = match (needs.path, needs.query, head.query) {
            (false, false, _) => (Box::default(), 0),
            (_, _, None) => (head.path.into(), head.path.len()),
            (_, _, Some(q)) => {
                let mut t = String::with_capacity(head.path.len() + 1 + q.len());
                t.push_str(head.path);
                t.push('?');
                t.push_str(q);
                (t.into(), head.path.len())
            }
        };
        Captured {
            remote: if needs.remote { head.remote } else { None },
            method: if needs.method {
                static_or_owned(head.method, METHODS)
            } else {
                Cow::Borrowed("")
            },
            target,
            path_len,
            protocol: if needs.protocol {
                static_or_owned(head.protocol, PROTOCOLS)
            } else {
                Cow::Borrowed("")
            },
            request_headers: format
                .request_headers
                .iter()
                .map(|name| header(name).map(Box::from))
                .collect(),
            response_headers: Box::default(),
        }
    }

    pub(super) fn capture_response<'h>(
        &mut self,
        format: &AccessLogFormat,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) {
        self.response_headers = format
            .response_headers
            .iter()
            .map(|name| header(name).map(Box::from))
            .collect();
    }

    fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    fn query(&self) -> &str {
        self.target.get(self.path_len + 1..).unwrap_or("")
    }
}

impl AccessEntry {
    pub(super) fn new(log: AccessLog, captured: Captured) -> AccessEntry {
        AccessEntry { log, captured }
    }

    /// Whether the format reads response headers (`%({Header}o)s`): then call
    /// [`capture_response_headers`](Self::capture_response_headers) with the response head.
    pub fn wants_response_headers(&self) -> bool {
        !self.log.format().response_headers.is_empty()
    }

    /// Copy the response headers the format reads, from `header` (a lookup by lower-case name).
    pub fn capture_response_headers<'h>(&mut self, header: impl Fn(&str) -> Option<&'h [u8]>) {
        self.captured.capture_response(self.log.format(), header);
    }

    /// Write the line: the response `status` (`None`: no response at all), the response body
    /// bytes sent and the request's duration. One `write` call per line (see [`AccessLog`]).
    pub fn finish(self, status: Option<u16>, bytes_sent: u64, elapsed: Duration) {
        let end = Ended {
            status,
            bytes: bytes_sent,
            elapsed,
        };
        self.log.write_with(|out, pid| {
            let time = if self.log.format().needs.time {
                clf_now()
            } else {
                [0; 28]
            };
            render(self.log.format(), &self.captured, &end, &time, pid, out);
        });
    }
}

/// Append the line of `c` ending as `end` to `out` (with its `\n`); `time` is the `%(t)s`
/// text.
pub(super) fn render(
    format: &AccessLogFormat,
    c: &Captured,
    end: &Ended,
    time: &[u8],
    pid: u32,
    out: &mut Vec<u8>,
) {
    let dash = |out: &mut Vec<u8>| out.push(b'-');
    let text = |out: &mut Vec<u8>, v: &str| {
        if v.is_empty() {
            out.push(b'-');
        } else {
            escape_into(out, v.as_bytes());
        }
    };
    let header = |out: &mut Vec<u8>, v: &Option<Box<[u8]>>| match v.as_deref() {
        Some(v) if !v.is_empty() => escape_into(out, v),
        _ => out.push(b'-'),
    };
    let number = |out: &mut Vec<u8>, n: u128| {
        let _ = write!(out, "{n}");
    };
    let e = end.elapsed;
    for atom in &*format.atoms {
        match atom {
            Atom::Literal(l) => out.extend_from_slice(l),
            Atom::Remote => match c.remote {
                Some(ip) => {
                    let _ = write!(out, "{ip}");
                }
                None => dash(out),
            },
            Atom::Ident => dash(out),
            Atom::User(i) => match c.request_headers[*i].as_deref().and_then(basic_user) {
                Some(user) if !user.is_empty() => escape_into(out, &user),
                _ => dash(out),
            },
            Atom::Time => out.extend_from_slice(time),
            Atom::RequestLine => {
                text(out, &c.method);
                out.push(b' ');
                text(out, &c.target);
                out.push(b' ');
                text(out, &c.protocol);
            }
            Atom::Method => text(out, &c.method),
            Atom::Path => text(out, c.path()),
            // Empty without a query, as gunicorn's QUERY_STRING.
            Atom::Query => escape_into(out, c.query().as_bytes()),
            Atom::Protocol => text(out, &c.protocol),
            Atom::Status => match end.status {
                Some(s) => number(out, s.into()),
                None => dash(out),
            },
            Atom::Bytes | Atom::BytesOrDash => match end.status {
                Some(_) => number(out, end.bytes.into()),
                None => dash(out),
            },
            Atom::Seconds => number(out, e.as_secs().into()),
            Atom::Millis => number(out, e.as_millis()),
            Atom::Micros => number(out, e.as_micros()),
            Atom::DecimalSeconds => {
                let _ = write!(out, "{}.{:06}", e.as_secs(), e.subsec_micros());
            }
            Atom::Pid => {
                let _ = write!(out, "<{pid}>");
            }
            Atom::RequestHeader(i) => header(out, &c.request_headers[*i]),
            Atom::ResponseHeader(i) => match c.response_headers.get(*i) {
                Some(v) => header(out, v),
                None => dash(out),
            },
        }
    }
    out.push(b'\n');
}

/// The user name of a `Basic` `Authorization` value, as gunicorn reads it (the text before the
/// first `:` of the decoded credentials).
pub(super) fn basic_user(authorization: &[u8]) -> Option<Vec<u8>> {
    let (scheme, credentials) = authorization.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64_decode(credentials.trim_ascii())?;
    let user_len = decoded.iter().position(|b| *b == b':')?;
    let mut user = decoded;
    user.truncate(user_len);
    Some(user)
}

/// Standard base64 with padding (what `Authorization: Basic` carries); `None` if malformed.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.chunks_exact(4);
    let last = chunks.len().saturating_sub(1);
    for (n, chunk) in chunks.enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && n != last) {
            return None;
        }
        let mut bits = 0u32;
        for &c in &chunk[..4 - pad] {
            bits = (bits << 6) | value(c)?;
        }
        bits <<= 6 * pad as u32;
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

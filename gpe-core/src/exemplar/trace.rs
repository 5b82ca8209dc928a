//! The trace a request belongs to: W3C Trace Context's `traceparent` header.

use std::fmt;

/// A trace id and span id, as an exemplar's labels (`trace_id`, `span_id`) carry them.
///
/// ```
/// use gpe_core::exemplar::TraceContext;
///
/// let t = TraceContext::from_traceparent(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
/// ).unwrap();
/// assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(t.span_id_hex(), "00f067aa0ba902b7");
/// // Not sampled, malformed or all-zero ids: no exemplar.
/// assert!(TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_none());
/// assert!(TraceContext::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The 16-byte trace id.
    pub trace_id: [u8; 16],
    /// The 8-byte id of the span (the request's parent span).
    pub span_id: [u8; 8],
}

impl TraceContext {
    /// Parse a `traceparent` header (`version-traceid-parentid-flags`, lowercase hex). Only a
    /// sampled trace (flag `01`) gives an exemplar, as OpenTelemetry's default `trace_based`
    /// exemplar filter: an exemplar should point at a trace the tracing backend kept.
    pub fn from_traceparent(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four fields; later versions may append more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?;
        let span_id: [u8; 8] = hex(span)?;
        let [flags]: [u8; 1] = hex(flags)?;
        let _: [u8; 1] = hex(version)?;
        let valid = trace_id != [0; 16] && span_id != [0; 8] && flags & 1 == 1;
        valid.then_some(TraceContext { trace_id, span_id })
    }

    /// The trace id in lowercase hex.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id in lowercase hex.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.trace_id_hex(), self.span_id_hex())
    }
}

/// Read access to a request's headers, whatever the framework's header map: what a
/// [`TraceSource`] reads the trace from.
pub trait Headers {
    /// The value of header `name` (lowercase), if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<&str>;

    /// The `traceparent` header: on every request's path, so a map may find it faster than
    /// by [`header`](Self::header).
    fn traceparent(&self) -> Option<&str> {
        self.header("traceparent")
    }
}

impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name)?.to_str().ok()
    }

    #[inline]
    fn traceparent(&self) -> Option<&str> {
        // A name made once: no parsing of the name on each request.
        static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
        if self.is_empty() {
            return None;
        }
        self.get(&TRACEPARENT)?.to_str().ok()
    }
}

/// Where request metrics take a request's trace from, for their exemplars.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TraceSource {
    /// No exemplars.
    Off,
    /// W3C Trace Context's `traceparent` header (sampled traces only).
    #[default]
    TraceParent,
    /// A function of the headers (another propagation format, or a tracing library's context).
    Custom(std::sync::Arc<dyn Fn(&dyn Headers) -> Option<TraceContext> + Send + Sync>),
}

impl TraceSource {
    /// The trace of a request with `headers`, if any.
    #[inline]
    pub fn trace(&self, headers: &dyn Headers) -> Option<TraceContext> {
        match self {
            TraceSource::Off => None,
            TraceSource::TraceParent => TraceContext::from_traceparent(headers.traceparent()?),
            TraceSource::Custom(f) => f(headers),
        }
    }
}

impl fmt::Debug for TraceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceSource::Off => f.write_str("Off"),
            TraceSource::TraceParent => f.write_str("TraceParent"),
            TraceSource::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_edge_cases() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceContext::from_traceparent(ok).is_some());
        assert!(TraceContext::from_traceparent(&format!(" {ok} ")).is_some());
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-é4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_none(), "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(TraceContext::from_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
        )
        .is_some());
    }
}

//! What the access log tests of both adapters and of the multi-process test share: one format
//! with most atoms, and a strict parser of its lines (no regex: every field checked in place).
#![allow(dead_code)]

/// The format the tests write: the combined format, then the pid, the duration and a request
/// and a response header.
pub(crate) const FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(p)s %(D)s %({x-request-id}i)s %({content-type}o)s"#;

/// An access log in `dir/access.log`, in [`FORMAT`].
pub(crate) fn log_in(dir: &std::path::Path) -> gpe_core::http::access::AccessLog {
    let format = gpe_core::http::access::AccessLogFormat::parse(FORMAT).unwrap();
    gpe_core::http::access::AccessLog::open(dir.join("access.log"), format).unwrap()
}

/// The request metrics of the app [`assert_scenario`] checks, over a store in `dir`: `/health`
/// excluded (so it is not logged either).
pub(crate) fn scenario_metrics(dir: &std::path::Path) -> gpe_core::http::RequestMetrics {
    let store = gpe_core::Store::open(dir).unwrap();
    gpe_core::http::RequestMetrics::builder()
        .exclude_path("/health")
        .build(&store)
        .unwrap()
}

/// One parsed line of [`FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) host: String,
    pub(crate) user: String,
    pub(crate) time: String,
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) protocol: String,
    pub(crate) status: String,
    pub(crate) bytes: String,
    pub(crate) referer: String,
    pub(crate) agent: String,
    pub(crate) pid: u32,
    pub(crate) micros: u64,
    pub(crate) request_id: String,
    pub(crate) content_type: String,
}

struct Cursor<'a> {
    rest: &'a str,
    line: &'a str,
}

impl<'a> Cursor<'a> {
    fn fail(&self, what: &str) -> String {
        format!("{what} at {:?} in {:?}", self.rest, self.line)
    }

    /// A field up to the next space (or the end).
    fn token(&mut self) -> Result<&'a str, String> {
        let end = self.rest.find(' ').unwrap_or(self.rest.len());
        let (t, rest) = self.rest.split_at(end);
        if t.is_empty() {
            return Err(self.fail("empty field"));
        }
        self.rest = rest;
        Ok(t)
    }

    /// A `"`-quoted field, `\"` and `\\` inside; returned unescaped.
    fn quoted(&mut self) -> Result<String, String> {
        let mut chars = self
            .rest
            .strip_prefix('"')
            .ok_or_else(|| self.fail("no opening quote"))?
            .char_indices();
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 2..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    _ => return Err(self.fail("bad escape")),
                },
                c if c.is_control() => return Err(self.fail("a control character")),
                c => out.push(c),
            }
        }
        Err(self.fail("no closing quote"))
    }

    fn space(&mut self) -> Result<(), String> {
        self.rest = self
            .rest
            .strip_prefix(' ')
            .ok_or_else(|| self.fail("no space"))?;
        Ok(())
    }
}

/// `[02/Dec/2026:10:00:00 +0000]`, checked character by character.
fn check_time(t: &str) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 28
        && b[0] == b'['
        && digits(1..3)
        && b[3] == b'/'
        && MONTHS.contains(&&t[4..7])
        && b[7] == b'/'
        && digits(8..12)
        && b[12] == b':'
        && digits(13..15)
        && b[15] == b':'
        && digits(16..18)
        && b[18] == b':'
        && digits(19..21)
        && b[21] == b' '
        && (b[22] == b'+' || b[22] == b'-')
        && digits(23..27)
        && b[27] == b']';
    if ok {
        Ok(())
    } else {
        Err(format!("bad %(t)s {t:?}"))
    }
}

/// Parse one line of [`FORMAT`] (without its `\n`).
pub(crate) fn parse(line: &str) -> Result<Line, String> {
    let mut c = Cursor { rest: line, line };
    let host = c.token()?.to_owned();
    c.space()?;
    if c.token()? != "-" {
        return Err(c.fail("%(l)s is not -"));
    }
    c.space()?;
    let user = c.token()?.to_owned();
    c.space()?;
    let time = {
        let t = c.rest.get(..28).ok_or_else(|| c.fail("short time"))?;
        check_time(t)?;
        c.rest = &c.rest[28..];
        t.to_owned()
    };
    c.space()?;
    let request = c.quoted()?;
    let mut parts = request.splitn(3, ' ');
    let (method, target, protocol) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(p)) if !p.contains(' ') => {
            (m.to_owned(), t.to_owned(), p.to_owned())
        }
        _ => return Err(c.fail("a request line not of 3 parts")),
    };
    c.space()?;
    let status = c.token()?.to_owned();
    c.space()?;
    let bytes = c.token()?.to_owned();
    c.space()?;
    let referer = c.quoted()?;
    c.space()?;
    let agent = c.quoted()?;
    c.space()?;
    let pid = c
        .token()?
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| c.fail("bad %(p)s"))?;
    c.space()?;
    let micros = c.token()?.parse().map_err(|_| c.fail("bad %(D)s"))?;
    c.space()?;
    let request_id = c.token()?.to_owned();
    c.space()?;
    let content_type = c.rest.to_owned();
    if content_type.is_empty() || content_type.contains('\n') {
        return Err(c.fail("bad response header"));
    }
    Ok(Line {
        host,
        user,
        time,
        method,
        target,
        protocol,
        status,
        bytes,
        referer,
        agent,
        pid,
        micros,
        request_id,
        content_type,
    })
}

/// Every line of `text`, parsed; panics naming the first bad one.
pub(crate) fn parse_all(text: &str) -> Vec<Line> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial last line: {text:?}"
    );
    text.lines()
        .map(|l| parse(l).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Read `path` until it holds `n` lines or `deadline` passes; its lines, parsed.
pub(crate) fn wait_for_lines(
    path: &std::path::Path,
    n: usize,
    deadline: std::time::Duration,
) -> Vec<Line> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = text.ends_with('\n') || text.is_empty();
        if (complete && text.lines().count() >= n) || std::time::Instant::now() > until {
            return parse_all(&text);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The scenario both adapters' tests send (a GET with every request atom from 192.0.2.7 as
/// alice, a POST with none, a 503, a 404, an excluded /health, then `tail` lines): one line per
/// request, in order, with every field where it belongs. Returns the lines.
pub(crate) fn assert_scenario(text: &str, tail: &[(&str, &str, &str, &str)]) -> Vec<Line> {
    let lines = parse_all(text);
    let summary: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.method.as_str(),
                l.target.as_str(),
                l.status.as_str(),
                l.bytes.as_str(),
            )
        })
        .collect();
    let mut want = vec![
        ("GET", "/users/7?full=1&x=%22", "200", "4"),
        ("POST", "/users/8", "200", "4"),
        ("GET", "/fail", "503", "4"),
        ("GET", "/nope", "404", "0"),
    ];
    want.extend_from_slice(tail);
    assert_eq!(
        summary, want,
        "one line per request, none for the excluded /health:\n{text}"
    );
    let first = &lines[0];
    assert_eq!(first.host, "192.0.2.7");
    assert_eq!(first.user, "alice");
    assert_eq!(first.protocol, "HTTP/1.1");
    assert_eq!(first.referer, "http://example.com/");
    assert_eq!(
        first.agent, "curl/8 \"quoted\"",
        "escaped in the file, read back"
    );
    assert!(text.contains(r#""curl/8 \"quoted\"""#), "{text}");
    assert_eq!(first.pid, std::process::id());
    assert_eq!(first.request_id, "r-1");
    assert_eq!(first.content_type, "text/plain; charset=utf-8");
    let post = &lines[1];
    assert_eq!((post.host.as_str(), post.user.as_str()), ("-", "-"));
    assert_eq!((post.referer.as_str(), post.agent.as_str()), ("-", "-"));
    assert_eq!(post.request_id, "-");
    lines
}

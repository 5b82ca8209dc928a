//! [`AccessLogFormat`]: gunicorn's `--access-logformat`, compiled once into a list of atoms.

use std::fmt;

use super::AccessLogError;

/// gunicorn's default `--access-logformat` (Apache's combined format).
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Atom {
    /// Text copied as it is (`%%` already turned into `%`); also an environment variable's
    /// value, read when the format was parsed.
    Literal(Box<[u8]>),
    /// `h`: the client's IP address.
    Remote,
    /// `l`: always `-`.
    Ident,
    /// `u`: the user of a Basic `Authorization` (request header `index`).
    User(usize),
    /// `t`: `[02/Dec/2026:10:00:00 +0000]`.
    Time,
    /// `r`: `GET /p?q HTTP/1.1`.
    RequestLine,
    /// `m`.
    Method,
    /// `U`.
    Path,
    /// `q`.
    Query,
    /// `H`.
    Protocol,
    /// `s`.
    Status,
    /// `B`: response body bytes.
    Bytes,
    /// `b`: as `B` (gunicorn prints `0` for an empty body), `-` without a response.
    BytesOrDash,
    /// `T`: whole seconds.
    Seconds,
    /// `M`: milliseconds.
    Millis,
    /// `D`: microseconds.
    Micros,
    /// `L`: `%d.%06d` seconds.
    DecimalSeconds,
    /// `p`: `<pid>`.
    Pid,
    /// `f`, `a`, `{Header}i`: request header `index` of [`AccessLogFormat::request_headers`].
    RequestHeader(usize),
    /// `{Header}o`: response header `index` of [`AccessLogFormat::response_headers`].
    ResponseHeader(usize),
}

/// What a format needs captured at the start of a request (only that is copied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Needs {
    pub(super) remote: bool,
    pub(super) method: bool,
    pub(super) path: bool,
    pub(super) query: bool,
    pub(super) protocol: bool,
    pub(super) time: bool,
}

/// A compiled gunicorn access log format (`--access-logformat`).
///
/// | atom | value |
/// |---|---|
/// | `%(h)s` | the client's IP address (`-` over a Unix-domain socket, whose peers have none) |
/// | `%(l)s` | `-` |
/// | `%(u)s` | the user name of a `Basic` `Authorization` header, else `-` |
/// | `%(t)s` | when the request was logged, in local time: `[02/Dec/2026:10:00:00 +0000]` |
/// | `%(r)s` | the request line: `GET /path?query HTTP/1.1` |
/// | `%(m)s`, `%(U)s`, `%(q)s`, `%(H)s` | method, path, query (empty without one, as gunicorn), protocol |
/// | `%(s)s` | the response status (`499` if the client left before it; `-` without a response) |
/// | `%(B)s`, `%(b)s` | the response body bytes sent (`-` without a response) |
/// | `%(f)s`, `%(a)s` | the `Referer` and `User-Agent` request headers |
/// | `%(T)s`, `%(M)s`, `%(D)s`, `%(L)s` | the duration: whole seconds, milliseconds, microseconds, `%d.%06d` seconds |
/// | `%(p)s` | `<pid>` |
/// | `%({Header}i)s`, `%({Header}o)s` | a request or response header (case-insensitive name) |
/// | `%({VAR}e)s` | an environment variable of the worker, read once when the format is parsed |
///
/// A missing value is `-`; `%%` is a literal `%`; `%(x)d` is accepted for the numeric atoms
/// (`s`, `B`, `T`, `M`, `D`), as Python's `%` operator does.
///
/// Differences from gunicorn, on purpose:
/// - an unknown atom is an error at start (gunicorn prints `-` for it, so a typo goes unseen);
/// - request-derived values (the request line, headers, the user) and environment values are
///   escaped as Apache escapes them: `"` as `\"`, `\` as `\\`, control characters (and the
///   bytes of a value that is not UTF-8) as `\xHH`, so one request is always one line that a
///   parser can split (gunicorn escapes only `"`);
/// - `{VAR}e` reads the worker's environment (gunicorn's reads the WSGI environ, which holds
///   the request's CGI variables too); the name is matched exactly, then case-insensitively.
///
/// ```
/// use gpe_core::http::access::AccessLogFormat;
///
/// let format = AccessLogFormat::parse(r#"%(h)s "%(r)s" %(s)s %(D)s %({x-request-id}i)s"#)?;
/// assert_eq!(format.request_headers(), ["x-request-id"]);
/// assert_eq!(format.to_string(), r#"%(h)s "%(r)s" %(s)s %(D)s %({x-request-id}i)s"#);
///
/// let err = AccessLogFormat::parse("%(h)s %(z)s").unwrap_err();
/// assert!(err.to_string().contains("unknown atom `%(z)s`"), "{err}");
/// # Ok::<(), gpe_core::http::access::AccessLogError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogFormat {
    source: Box<str>,
    pub(super) atoms: Box<[Atom]>,
    pub(super) needs: Needs,
    /// Lower-case names of the request headers to capture.
    pub(super) request_headers: Box<[Box<str>]>,
    /// Lower-case names of the response headers to capture.
    pub(super) response_headers: Box<[Box<str>]>,
}

impl Default for AccessLogFormat {
    /// gunicorn's default, [`DEFAULT_FORMAT`].
    fn default() -> Self {
        AccessLogFormat::parse(DEFAULT_FORMAT).expect("the default format parses")
    }
}

impl fmt::Display for AccessLogFormat {
    /// The format as it was given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for AccessLogFormat {
    type Err = AccessLogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccessLogFormat::parse(s)
    }
}

/// Index of `name` in `names`, added if missing.
fn index_of(names: &mut Vec<Box<str>>, name: &str) -> usize {
    let name = name.to_ascii_lowercase();
    match names.iter().position(|n| **n == *name) {
        Some(i) => i,
        None => {
            names.push(name.into());
            names.len() - 1
        }
    }
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl AccessLogFormat {
    /// Compile `format`, gunicorn's `--access-logformat` syntax (see the table above).
    ///
    /// # Errors
    /// [`AccessLogError::UnknownAtom`] for an atom gunicorn does not have (or a `{...}` atom
    /// whose name is not a header or variable name), [`AccessLogError::Syntax`] for a `%` that
    /// starts neither `%(name)s` nor `%%`.
    pub fn parse(format: &str) -> Result<AccessLogFormat, AccessLogError> {
        let syntax = |at: usize, what: &'static str| AccessLogError::Syntax {
            format: format.to_owned(),
            at,
            what,
        };
        let mut atoms: Vec<Atom> = Vec::new();
        let mut literal: Vec<u8> = Vec::new();
        let mut needs = Needs::default();
        let mut request_headers: Vec<Box<str>> = Vec::new();
        let mut response_headers: Vec<Box<str>> = Vec::new();
        let bytes = format.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'%' {
                literal.push(bytes[i]);
                i += 1;
                continue;
            }
            match bytes.get(i + 1) {
                Some(b'%') => {
                    literal.push(b'%');
                    i += 2;
                    continue;
                }
                Some(b'(') => {}
                Some(_) => return Err(syntax(i, "`%` not followed by `(name)s` or `%`")),
                None => return Err(syntax(i, "a `%` at the end")),
            }
            let open = i;
            let name_start = i + 2;
            let close = format[name_start..]
                .find(')')
                .map(|n| name_start + n)
                .ok_or_else(|| syntax(open, "an unclosed `%(`"))?;
            let name = &format[name_start..close];
            let conversion = bytes.get(close + 1).copied();
            let unknown = || AccessLogError::UnknownAtom {
                format: format.to_owned(),
                atom: name.to_owned(),
                at: open,
            };
            let atom = match name {
                "h" => {
                    needs.remote = true;
                    Atom::Remote
                }
                "l" => Atom::Ident,
                "u" => Atom::User(index_of(&mut request_headers, "authorization")),
                "t" => {
                    needs.time = true;
                    Atom::Time
                }
                "r" => {
                    needs.method = true;
                    needs.path = true;
                    needs.query = true;
                    needs.protocol = true;
                    Atom::RequestLine
                }
                "m" => {
                    needs.method = true;
                    Atom::Method
                }
                "U" => {
                    needs.path = true;
                    Atom::Path
                }
                "q" => {
                    needs.query = true;
                    Atom::Query
                }
                "H" => {
                    needs.protocol = true;
                    Atom::Protocol
                }
                "s" => Atom::Status,
                "B" => Atom::Bytes,
                "b" => Atom::BytesOrDash,
                "f" => Atom::RequestHeader(index_of(&mut request_headers, "referer")),
                "a" => Atom::RequestHeader(index_of(&mut request_headers, "user-agent")),
                "T" => Atom::Seconds,
                "M" => Atom::Millis,
                "D" => Atom::Micros,
                "L" => Atom::DecimalSeconds,
                "p" => Atom::Pid,
                braced if braced.starts_with('{') => {
                    let (key, kind) = braced[1..].rsplit_once('}').ok_or_else(unknown)?;
                    match kind {
                        "i" if is_header_name(key) => {
                            Atom::RequestHeader(index_of(&mut request_headers, key))
                        }
                        "o" if is_header_name(key) => {
                            Atom::ResponseHeader(index_of(&mut response_headers, key))
                        }
                        "e" if !key.is_empty() && !key.contains('=') && !key.contains('\0') => {
                            Atom::Literal(env_value(key).into())
                        }
                        _ => return Err(unknown()),
                    }
                }
                _ => return Err(unknown()),
            };
            let numeric = matches!(
                atom,
                Atom::Status | Atom::Bytes | Atom::Seconds | Atom::Millis | Atom::Micros
            );
            match conversion {
                Some(b's') => {}
                Some(b'd') if numeric => {}
                Some(b'd') => {
                    return Err(syntax(
                        close + 1,
                        "`d` after an atom that is not a number (use `s`)",
                    ))
                }
                _ => return Err(syntax(close + 1, "an atom not followed by `s`")),
            }
            match atom {
                Atom::Literal(value) => literal.extend_from_slice(&value),
                atom => {
                    if !literal.is_empty() {
                        atoms.push(Atom::Literal(std::mem::take(&mut literal).into()));
                    }
                    atoms.push(atom);
                }
            }
            i = close + 2;
        }
        if !literal.is_empty() {
            atoms.push(Atom::Literal(literal.into()));
        }
        Ok(AccessLogFormat {
            source: format.into(),
            atoms: atoms.into(),
            needs,
            request_headers: request_headers.into(),
            response_headers: response_headers.into(),
        })
    }

    /// The request headers the format reads (lower case, in the order first used): only these
    /// are copied at the start of a request.
    pub fn request_headers(&self) -> Vec<&str> {
        self.request_headers.iter().map(|h| &**h).collect()
    }

    /// The response headers the format reads (lower case).
    pub fn response_headers(&self) -> Vec<&str> {
        self.response_headers.iter().map(|h| &**h).collect()
    }
}

/// The escaped value of environment variable `key` (exact name first, then any case), `-`
/// when unset.
fn env_value(key: &str) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let value = std::env::var_os(key).or_else(|| {
        std::env::vars_os()
            .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(key.as_bytes()))
            .map(|(_, v)| v)
    });
    let mut out = Vec::new();
    match value {
        Some(v) if !v.is_empty() => escape_into(&mut out, v.as_bytes()),
        _ => out.push(b'-'),
    }
    out
}

/// Append `value` escaped as Apache escapes log values: `"` and `\` behind a `\`, control
/// characters as `\xHH`, and, in a value that is not UTF-8, every byte above 0x7f as `\xHH`
/// too. One line stays one line.
pub(super) fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    let utf8 = std::str::from_utf8(value).is_ok();
    for &b in value {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x00..=0x1f | 0x7f => hex_escape(out, b),
            0x80.. if !utf8 => hex_escape(out, b),
            _ => out.push(b),
        }
    }
}

fn hex_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]);
}

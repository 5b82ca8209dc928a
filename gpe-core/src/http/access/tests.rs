//! The format parser, the rendering of every atom and the escaping: pure, no I/O.

use std::time::Duration;

use super::entry::{basic_user, render, Captured, Ended};
use super::format::Atom;
use super::{AccessLogError, AccessLogFormat, RequestHead, DEFAULT_FORMAT};

const TIME: &[u8] = b"[02/Dec/2026:10:00:00 +0000]";

fn head() -> RequestHead<'static> {
    RequestHead {
        remote: Some([10, 1, 2, 3].into()),
        method: "GET",
        path: "/p",
        query: Some("q=1"),
        protocol: "HTTP/1.1",
    }
}

/// The request headers of the tests.
fn header(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "referer" => b"http://example.com/",
        "user-agent" => b"curl/8.5",
        // alice:secret
        "authorization" => b"Basic YWxpY2U6c2VjcmV0",
        "x-request-id" => b"abc-123",
        "x-evil" => b"a\"b\\c\nd\x1be",
        "x-latin1" => b"caf\xe9",
        "x-utf8" => "café".as_bytes(),
        "x-empty" => b"",
        _ => return None,
    })
}

fn line(format: &str, head: &RequestHead<'_>, end: Ended) -> String {
    let format = AccessLogFormat::parse(format).unwrap();
    let mut captured = Captured::capture(&format, head, header);
    captured.capture_response(&format, |name| {
        (name == "content-type").then_some(&b"text/plain"[..])
    });
    let mut out = Vec::new();
    render(&format, &captured, &end, TIME, 4242, &mut out);
    String::from_utf8(out).unwrap()
}

fn ok(bytes: u64, elapsed: Duration) -> Ended {
    Ended {
        status: Some(200),
        bytes,
        elapsed,
    }
}

#[test]
fn the_default_format_is_apaches_combined() {
    assert_eq!(
        line(DEFAULT_FORMAT, &head(), ok(512, Duration::ZERO)),
        "10.1.2.3 - alice [02/Dec/2026:10:00:00 +0000] \"GET /p?q=1 HTTP/1.1\" 200 512 \
         \"http://example.com/\" \"curl/8.5\"\n"
    );
    assert_eq!(AccessLogFormat::default().to_string(), DEFAULT_FORMAT);
}

#[test]
fn every_atom() {
    let elapsed = Duration::from_micros(2_345_678);
    let cases = [
        ("%(h)s", "10.1.2.3"),
        ("%(l)s", "-"),
        ("%(u)s", "alice"),
        ("%(t)s", "[02/Dec/2026:10:00:00 +0000]"),
        ("%(r)s", "GET /p?q=1 HTTP/1.1"),
        ("%(m)s", "GET"),
        ("%(U)s", "/p"),
        ("%(q)s", "q=1"),
        ("%(H)s", "HTTP/1.1"),
        ("%(s)s", "200"),
        ("%(s)d", "200"),
        ("%(B)s", "512"),
        ("%(b)s", "512"),
        ("%(f)s", "http://example.com/"),
        ("%(a)s", "curl/8.5"),
        ("%(T)s", "2"),
        ("%(M)s", "2345"),
        ("%(D)s", "2345678"),
        ("%(D)d", "2345678"),
        ("%(L)s", "2.345678"),
        ("%(p)s", "<4242>"),
        ("%({X-Request-Id}i)s", "abc-123"),
        ("%({x-missing}i)s", "-"),
        ("%({x-empty}i)s", "-"),
        ("%({Content-Type}o)s", "text/plain"),
        ("%({x-missing}o)s", "-"),
        ("%%", "%"),
        ("100%% %(s)s", "100% 200"),
        ("", ""),
    ];
    for (format, want) in cases {
        assert_eq!(
            line(format, &head(), ok(512, elapsed)),
            format!("{want}\n"),
            "format {format:?}"
        );
    }
}

#[test]
fn environment_variables_are_read_when_parsed() {
    // Set by cargo for every test binary: no need to change the environment.
    let want = std::env::var("CARGO_PKG_NAME").unwrap();
    assert_eq!(
        line("%({CARGO_PKG_NAME}e)s", &head(), ok(0, Duration::ZERO)),
        format!("{want}\n")
    );
    assert_eq!(
        line("%({cargo_pkg_name}e)s", &head(), ok(0, Duration::ZERO)),
        format!("{want}\n"),
        "then any case"
    );
    assert_eq!(
        line(
            "%({SURELY_UNSET_ACCESS_LOG_TEST_VARIABLE}e)s",
            &head(),
            ok(0, Duration::ZERO)
        ),
        "-\n"
    );
    let format = AccessLogFormat::parse("x %({CARGO_PKG_NAME}e)s y").unwrap();
    assert_eq!(
        *format.atoms,
        [Atom::Literal(format!("x {want} y").into_bytes().into())]
    );
}

#[test]
fn missing_values_are_dashes() {
    let bare = RequestHead {
        remote: None,
        method: "GET",
        path: "/",
        query: None,
        protocol: "HTTP/1.0",
    };
    assert_eq!(
        line(
            r#"%(h)s %(u)s "%(r)s" [%(q)s] %(s)s %(b)s %(B)s"#,
            &bare,
            ok(0, Duration::ZERO)
        ),
        "- alice \"GET / HTTP/1.0\" [] 200 0 0\n",
        "an empty body is 0, as gunicorn; an empty query is empty, as gunicorn's QUERY_STRING"
    );
    let no_response = Ended {
        status: None,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    assert_eq!(line("%(s)s %(b)s %(B)s", &bare, no_response), "- - -\n");
}

#[test]
fn header_values_are_escaped_to_one_line() {
    assert_eq!(
        line(r#""%({x-evil}i)s""#, &head(), ok(0, Duration::ZERO)),
        "\"a\\\"b\\\\c\\x0ad\\x1be\"\n"
    );
    assert_eq!(
        line(
            "%({x-latin1}i)s %({x-utf8}i)s",
            &head(),
            ok(0, Duration::ZERO)
        ),
        "caf\\xe9 café\n",
        "bytes of a value that is not UTF-8 are escaped, UTF-8 is kept"
    );
    let quoted = RequestHead {
        path: "/a\"b",
        query: Some("x=\u{7f}"),
        ..head()
    };
    assert_eq!(
        line("%(r)s", &quoted, ok(0, Duration::ZERO)),
        "GET /a\\\"b?x=\\x7f HTTP/1.1\n"
    );
}

#[test]
fn only_what_the_format_reads_is_captured() {
    let format = AccessLogFormat::parse("%(s)s %({X-Request-Id}i)s").unwrap();
    let captured = Captured::capture(&format, &head(), header);
    assert_eq!(captured.remote, None);
    assert_eq!(&*captured.target, "");
    assert_eq!(captured.method, "");
    assert_eq!(format.request_headers(), ["x-request-id"]);
    assert_eq!(
        captured
            .request_headers
            .iter()
            .map(Option::as_deref)
            .collect::<Vec<_>>(),
        [Some(&b"abc-123"[..])]
    );
    let twice = AccessLogFormat::parse("%(a)s %({User-Agent}i)s %(u)s %(u)s").unwrap();
    assert_eq!(twice.request_headers(), ["user-agent", "authorization"]);
}

#[test]
fn basic_auth_users() {
    assert_eq!(
        basic_user(b"Basic YWxpY2U6c2VjcmV0").as_deref(),
        Some(&b"alice"[..])
    );
    assert_eq!(
        basic_user(b"basic  Ym9iOg== ").as_deref(),
        Some(&b"bob"[..])
    );
    // "a:b:c": the user is before the first colon.
    assert_eq!(basic_user(b"BASIC YTpiOmM=").as_deref(), Some(&b"a"[..]));
    assert_eq!(basic_user(b"Bearer YWxpY2U6c2VjcmV0"), None);
    assert_eq!(basic_user(b"Basic !!!!"), None);
    assert_eq!(basic_user(b"Basic YWxpY2U"), None, "unpadded");
    assert_eq!(basic_user(b"Basic YWxpY2U="), None, "no colon");
    assert_eq!(basic_user(b"Basic"), None);
}

#[test]
fn unknown_atoms_are_errors_naming_them() {
    for (format, atom, at) in [
        ("%(h)s %(z)s", "z", 6),
        ("%(host)s", "host", 0),
        ("%({}i)s", "{}i", 0),
        ("%({x y}i)s", "{x y}i", 0),
        ("%({X-A}x)s", "{X-A}x", 0),
        ("%({X-A)s", "{X-A", 0),
        ("%({}e)s", "{}e", 0),
    ] {
        match AccessLogFormat::parse(format) {
            Err(AccessLogError::UnknownAtom {
                atom: a, at: pos, ..
            }) => {
                assert_eq!((a.as_str(), pos), (atom, at), "{format:?}");
            }
            other => panic!("{format:?}: {other:?}"),
        }
    }
    let err = AccessLogFormat::parse("%(h)s %(z)s")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown atom `%(z)s` at byte 6"), "{err}");
}

#[test]
fn syntax_errors_say_what_to_write() {
    for (format, at) in [
        ("%s", 0),
        ("abc %", 4),
        ("%(h", 0),
        ("%(h)", 4),
        ("%(h)x", 4),
        ("%(h)d", 4),
    ] {
        match AccessLogFormat::parse(format) {
            Err(e @ AccessLogError::Syntax { at: pos, .. }) => {
                assert_eq!(pos, at, "{format:?}");
                assert!(e.to_string().contains("`%(name)s`"), "{e}");
            }
            other => panic!("{format:?}: {other:?}"),
        }
    }
}

#[test]
fn the_environment_names_the_variable_at_fault() {
    use crate::worker::env;
    let lookup = |file: &'static str, format: &'static str| {
        move |name: &str| match name {
            n if n == env::ACCESS_LOGFILE => Some(file.into()),
            n if n == env::ACCESS_LOGFORMAT => Some(format.into()),
            _ => None,
        }
    };
    assert!(super::AccessLog::from_lookup(lookup("", "%(h)s"))
        .unwrap()
        .is_none());
    let stdout = super::AccessLog::from_lookup(lookup("-", ""))
        .unwrap()
        .unwrap();
    assert_eq!(stdout.path(), None);
    assert_eq!(stdout.format().to_string(), DEFAULT_FORMAT);
    let err = super::AccessLog::from_lookup(lookup("-", "%(nope)s")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", env::ACCESS_LOGFORMAT)),
        "{err}"
    );
    let err = super::AccessLog::from_lookup(lookup("/nonexistent-dir/a.log", "")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot open", env::ACCESS_LOGFILE)),
        "{err}"
    );
}

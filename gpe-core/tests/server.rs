//! The `/metrics` server over real sockets: what it serves parses with independent parsers
//! (Python `prometheus_client`, `promtool check metrics`), TLS with a test CA, client
//! certificates enforced, basic auth, garbage and slow clients.
#![cfg(feature = "server")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpe_core::expose::config::{BasicAuth, TlsFiles};
use gpe_core::expose::server::{MetricsServer, ServerConfig, ServerHandle};
use gpe_core::{CounterVec, GaugeMode, GaugeVec, HistogramVec, MultiProcessCollector, Store};
use prometheus::{HistogramOpts, Opts};

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A store with every metric type and labels that need escaping.
fn populated_store(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    let requests = CounterVec::new(
        Opts::new("gunicorn_worker_requests_total", "Total requests."),
        &["method", "endpoint"],
        &store,
    )
    .unwrap();
    requests
        .with_label_values(&["GET", "/users/{id}"])
        .unwrap()
        .inc_by(3.0);
    requests
        .with_label_values(&["POST", "quote\" back\\slash \n newline ü"])
        .unwrap()
        .inc();
    let mem = GaugeVec::new(
        Opts::new("gunicorn_worker_memory_bytes", "Resident memory."),
        &["worker_id"],
        GaugeMode::LiveAll,
        &store,
    )
    .unwrap();
    mem.with_label_values(&["1"]).unwrap().set(1.5e6);
    let latency = HistogramVec::new(
        HistogramOpts::new("gunicorn_worker_request_duration_seconds", "Latency.")
            .buckets(vec![0.01, 0.1, 1.0]),
        &["endpoint"],
        &store,
    )
    .unwrap();
    for v in [0.005, 0.05, 0.5, 5.0] {
        latency.with_label_values(&["/"]).unwrap().observe(v);
    }
    store
}

fn serve(dir: &Path, config: ServerConfig) -> ServerHandle {
    let collector = MultiProcessCollector::new(dir);
    MetricsServer::bind(config, Arc::new(move || collector.scrape()))
        .unwrap()
        .spawn_thread()
        .unwrap()
}

/// One raw HTTP/1.1 exchange; returns the whole response (head and body) as bytes.
fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    split(&raw(addr, req.as_bytes()))
}

fn split(response: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn exposition_parses_with_python_and_promtool() {
    common::require_python();
    let dir = tempfile::tempdir().unwrap();
    let _store = populated_store(dir.path());
    let server = serve(dir.path(), ServerConfig::new(localhost()));
    let addr = server.local_addr();

    let (status, head, text) = get(addr, "/metrics", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let parsed = common::python_parse("text", &text);
    assert!(
        parsed.contains(
            "counter|gunicorn_worker_requests_total{endpoint='/users/{id}',method='GET'} 3.0"
        ),
        "{parsed}"
    );
    assert!(
        parsed.contains(r#"endpoint='quote" back\\slash \n newline ü',method='POST'} 1.0"#),
        "escaped labels must survive: {parsed}"
    );
    assert!(
        parsed
            .contains("histogram|gunicorn_worker_request_duration_seconds_count{endpoint='/'} 4.0"),
        "{parsed}"
    );
    assert!(
        parsed.contains(
            "histogram|gunicorn_worker_request_duration_seconds_bucket{endpoint='/',le='+Inf'} 4.0"
        ),
        "{parsed}"
    );
    assert!(
        parsed.contains("gauge|gunicorn_worker_memory_bytes{pid="),
        "{parsed}"
    );

    let (status, head, om) = get(
        addr,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0\r\n",
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let parsed_om = common::python_parse("openmetrics", &om);
    assert!(
        parsed_om.contains(
            "counter|gunicorn_worker_requests_total{endpoint='/users/{id}',method='GET'} 3.0"
        ),
        "{parsed_om}"
    );

    common::promtool_check(&text);
}

#[test]
fn gzip_when_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let _store = populated_store(dir.path());
    let server = serve(dir.path(), ServerConfig::new(localhost()));
    let req =
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept-Encoding: gzip\r\n\r\n";
    let response = raw(server.local_addr(), req);
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..at]).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&response[at + 4..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.contains("gunicorn_worker_requests_total{endpoint=\"/users/{id}\",method=\"GET\"} 3"),
        "{text}"
    );
}

#[test]
fn paths_methods_garbage_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        ServerConfig::new(localhost()).header_timeout(Duration::from_millis(500)),
    );
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health", "").0, 200);
    assert_eq!(get(addr, "/nope", "").0, 404);
    let (status, head, _) = split(&raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );

    // Garbage gets 400 and the server keeps serving.
    let (status, _, _) = split(&raw(addr, b"\x16\x03\x01 this is not http\r\n\r\n"));
    assert_eq!(status, 400);
    // A request head larger than the limit is refused (431) instead of buffered.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (status, _, _) = split(&raw(addr, huge.as_bytes()));
    assert_eq!(status, 431);
    assert_eq!(get(addr, "/metrics", "").0, 200);

    // A client that connects and sends nothing is disconnected after the header timeout.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "an idle client was kept {:?}",
        start.elapsed()
    );
    assert_eq!(get(addr, "/health", "").0, 200);
}

#[test]
fn basic_auth_rejects_bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let _store = populated_store(dir.path());
    let auth = BasicAuth {
        user: "prom".into(),
        password: "s3cret".into(),
    };
    let server = serve(
        dir.path(),
        ServerConfig::new(localhost()).basic_auth(Some(auth)),
    );
    let addr = server.local_addr();
    let (status, head, _) = get(addr, "/metrics", "");
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    let with_credentials = |base64: &str| {
        get(
            addr,
            "/metrics",
            &format!("Authorization: Basic {base64}\r\n"),
        )
    };
    // prom:wrong, then prom:s3cre (a prefix of the password)
    for wrong in ["cHJvbTp3cm9uZw==", "cHJvbTpzM2NyZQ=="] {
        assert_eq!(with_credentials(wrong).0, 401, "{wrong}");
    }
    let (status, _, body) = with_credentials("cHJvbTpzM2NyZXQ=");
    assert_eq!(status, 200);
    assert!(body.contains("gunicorn_worker_requests_total"), "{body}");
}

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    client_cert: rcgen::Certificate,
    client_key: rcgen::KeyPair,
}

impl Pki {
    /// The server certificate and key, signed by the test CA.
    fn server_files(&self) -> TlsFiles {
        TlsFiles::new(
            self.dir.path().join("server.pem"),
            self.dir.path().join("server.key"),
        )
    }
}

/// A TLS `/metrics` server with `files`, serving a populated store (kept in the returned dir).
fn serve_tls(files: TlsFiles) -> (tempfile::TempDir, ServerHandle) {
    let metrics = tempfile::tempdir().unwrap();
    let _store = populated_store(metrics.path());
    let server = serve(
        metrics.path(),
        ServerConfig::new(localhost()).tls(Some(files)),
    );
    (metrics, server)
}

/// Why binding a TLS server with `files` fails.
fn tls_bind_error(files: TlsFiles) -> String {
    MetricsServer::bind(
        ServerConfig::new(localhost()).tls(Some(files)),
        Arc::new(gpe_core::expose::Scrape::default),
    )
    .unwrap_err()
    .to_string()
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        SanType,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gpe test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server_params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let mut client_params = CertificateParams::new(Vec::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "prometheus");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        dir,
        ca,
        client_cert,
        client_key,
    }
}

/// GET /metrics over TLS; `Err` when the handshake or the exchange fails.
fn tls_get(addr: SocketAddr, pki: &Pki, with_client_cert: bool) -> Result<String, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if with_client_cert {
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(pki.client_key.serialize_der());
        builder
            .with_client_auth_cert(vec![pki.client_cert.der().clone()], key.into())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    tls.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn tls_serves_with_a_test_certificate() {
    let pki = pki();
    let (_metrics, server) = serve_tls(pki.server_files());
    let response = tls_get(server.local_addr(), &pki, false).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("gunicorn_worker_requests_total"),
        "{response}"
    );
    // Plain HTTP on the TLS port gets no metrics.
    let (status_line, _) = {
        let r = raw(
            server.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let t = String::from_utf8_lossy(&r).into_owned();
        (t.lines().next().unwrap_or("").to_owned(), t)
    };
    assert!(!status_line.contains("200"), "{status_line}");
}

#[test]
fn required_client_certificate_is_enforced() {
    let pki = pki();
    let files = pki
        .server_files()
        .client_ca(pki.dir.path().join("ca.pem"), true);
    let (_metrics, server) = serve_tls(files);
    let without = tls_get(server.local_addr(), &pki, false);
    assert!(
        !matches!(&without, Ok(r) if r.starts_with("HTTP/1.1 200")),
        "a client without a certificate was served: {without:?}"
    );
    let with = tls_get(server.local_addr(), &pki, true).unwrap();
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
}

#[test]
fn bad_tls_files_are_errors_naming_the_file() {
    let pki = pki();
    let missing = pki.dir.path().join("nope.pem");
    let err = tls_bind_error(TlsFiles::new(&missing, pki.dir.path().join("server.key")));
    assert!(err.contains("nope.pem"), "{err}");
    // A certificate file given as the key.
    let err = tls_bind_error(TlsFiles::new(
        pki.dir.path().join("server.pem"),
        pki.dir.path().join("ca.pem"),
    ));
    assert!(err.contains("ca.pem"), "{err}");
    // Client auth required without a CA to check against.
    let mut files = pki.server_files();
    files.client_auth_required = true;
    let err = tls_bind_error(files);
    assert!(err.contains("PROMETHEUS_SSL_CLIENT_CAFILE"), "{err}");
}

/// GET `path` over TLS without a client certificate, with `headers`: the status.
fn tls_status(addr: SocketAddr, pki: &Pki, path: &str, headers: &str) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    split(&out).0
}

const CREDENTIALS: &str = "Authorization: Basic cHJvbTpzM2NyZXQ=\r\n"; // prom:s3cret

fn auth() -> Option<BasicAuth> {
    Some(BasicAuth {
        user: "prom".into(),
        password: "s3cret".into(),
    })
}

/// `/health` (liveness) and `/ready` answer a probe without credentials, even when `/metrics`
/// needs them, unless `probes_auth` says otherwise; over plain HTTP and TLS alike; `/ready`
/// says 503 and why while its check fails.
#[test]
fn probes_answer_without_credentials_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let _store = populated_store(dir.path());
    let serve_with = |config: ServerConfig, ready: Option<gpe_core::expose::server::Readiness>| {
        let collector = MultiProcessCollector::new(dir.path());
        let mut server = MetricsServer::bind(config, Arc::new(move || collector.scrape())).unwrap();
        if let Some(r) = ready {
            server = server.readiness(r);
        }
        server.spawn_thread().unwrap()
    };
    let status = |addr, path: &str, headers: &str| get(addr, path, headers).0;

    // No auth: every path as before, /ready with no check is 200.
    let open = serve_with(ServerConfig::new(localhost()), None);
    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(status(open.local_addr(), path, ""), 200, "{path}");
    }
    let (s, _, body) = get(open.local_addr(), "/ready", "");
    assert_eq!((s, body.as_str()), (200, "ready\n"));

    // Basic auth on /metrics; the probes stay open by default.
    let store_dir = dir.path().to_owned();
    let authed = serve_with(
        ServerConfig::new(localhost()).basic_auth(auth()),
        Some(gpe_core::expose::server::store_writable(&store_dir)),
    );
    let a = authed.local_addr();
    assert_eq!(status(a, "/metrics", ""), 401);
    assert_eq!(status(a, "/metrics", CREDENTIALS), 200);
    assert_eq!(status(a, "/health", ""), 200);
    assert_eq!(status(a, "/ready", ""), 200);
    assert_eq!(status(a, "/nothing", ""), 401, "only the probes are open");
    let (s, head, _) = {
        let r = raw(
            a,
            b"POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        split(&r)
    };
    assert_eq!(s, 405, "{head}");

    // Turned off: the probes need the credentials too.
    let closed = serve_with(
        ServerConfig::new(localhost())
            .basic_auth(auth())
            .probes_auth(true),
        None,
    );
    let c = closed.local_addr();
    assert_eq!(status(c, "/health", ""), 401);
    assert_eq!(status(c, "/ready", ""), 401);
    assert_eq!(status(c, "/health", CREDENTIALS), 200);

    // Not ready: 503, saying why (the store directory is gone).
    let gone = serve_with(
        ServerConfig::new(localhost()),
        Some(gpe_core::expose::server::store_writable(
            "/nonexistent/gpe-store",
        )),
    );
    let (s, _, body) = get(gone.local_addr(), "/ready", "");
    assert_eq!(s, 503, "{body}");
    assert!(
        body.contains("/nonexistent/gpe-store") && body.contains("not writable"),
        "{body}"
    );
    assert_eq!(
        status(gone.local_addr(), "/health", ""),
        200,
        "alive all the same"
    );

    // TLS with basic auth: the same answers.
    let pki = pki();
    let tls = serve_with(
        ServerConfig::new(localhost())
            .tls(Some(pki.server_files()))
            .basic_auth(auth()),
        None,
    );
    let t = tls.local_addr();
    assert_eq!(tls_status(t, &pki, "/health", ""), 200);
    assert_eq!(tls_status(t, &pki, "/ready", ""), 200);
    assert_eq!(tls_status(t, &pki, "/metrics", ""), 401);
    assert_eq!(tls_status(t, &pki, "/metrics", CREDENTIALS), 200);
}

/// Connections held open without a request (slowloris) do not keep a real scrape out: 300 of
/// them, over the default cap of 128, and 50 against a cap of 16; the scrape is answered within
/// a second each time.
#[test]
fn half_open_connections_do_not_starve_a_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let _store = populated_store(dir.path());
    for (cap, held) in [(None, 300), (Some(16), 50)] {
        let mut config = ServerConfig::new(localhost());
        if let Some(cap) = cap {
            config = config.max_connections(cap);
        }
        let server = serve(dir.path(), config);
        let addr = server.local_addr();
        // Each sends half a request head and then nothing.
        let mut idle: Vec<TcpStream> = (0..held)
            .filter_map(|_| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").ok()?;
                Some(s)
            })
            .collect();
        assert!(idle.len() >= held * 9 / 10, "only {} connected", idle.len());
        let started = Instant::now();
        let (status, _, body) = get(addr, "/metrics", "");
        let took = started.elapsed();
        assert_eq!(status, 200);
        assert!(body.contains("gunicorn_worker_requests_total"));
        assert!(
            took < Duration::from_secs(1),
            "a scrape behind {held} half-open connections took {took:?}"
        );
        // The server closed some of them to make room (reads see the end), and still serves.
        idle.truncate(0);
        assert_eq!(get(addr, "/health", "").0, 200);
    }
}

//! Answering one request: basic auth, the paths, the exposition.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{Readiness, Source};
use crate::expose::config::BasicAuth;

/// What every connection's requests are answered from.
pub(super) struct Shared {
    pub(super) source: Source,
    pub(super) auth: Option<Vec<u8>>,
    /// Whether `/health` and `/ready` need `auth` too.
    pub(super) probes_auth: bool,
    pub(super) readiness: Option<Readiness>,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/ready`: 200 while the readiness check passes (none set: always), 503 saying why not.
async fn ready(shared: &Shared) -> Response<Full<Bytes>> {
    let Some(check) = shared.readiness.clone() else {
        return text(StatusCode::OK, "ready\n");
    };
    // A check may touch the file system: off the reactor.
    match tokio::task::spawn_blocking(move || check()).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
        Ok(Err(why)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the readiness check panicked\n",
        ),
    }
}

pub(super) async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let probe = matches!(path, "/health" | "/ready");
    if let Some(expected) = shared
        .auth
        .as_ref()
        .filter(|_| !probe || shared.probes_auth)
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(header::HeaderValue::as_bytes);
        if !given.is_some_and(|g| constant_time_eq(g, expected)) {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"metrics\", charset=\"UTF-8\""),
            );
            return r;
        }
    }
    let head_or_get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "/metrics" if head_or_get => {}
        "/health" if head_or_get => return text(StatusCode::OK, "ok\n"),
        "/ready" if head_or_get => return ready(shared).await,
        "/metrics" | "/health" | "/ready" => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        _ => return text(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    }
    let header_str = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let accept = header_str(header::ACCEPT);
    let accept_encoding = header_str(header::ACCEPT_ENCODING);
    let source = Arc::clone(&shared.source);
    // Reading every process's files is blocking work: keep it off the reactor.
    let encoded = tokio::task::spawn_blocking(move || {
        source().encode(accept.as_deref(), accept_encoding.as_deref())
    })
    .await;
    match encoded {
        Ok(Ok(e)) => {
            let mut r = Response::new(Full::new(Bytes::from(e.body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(e.content_type),
            );
            if let Some(enc) = e.content_encoding {
                r.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static(enc),
                );
            }
            r.headers_mut().insert(
                header::VARY,
                header::HeaderValue::from_static("Accept, Accept-Encoding"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "metrics server: encoding failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed; see the server's log\n",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics server: collecting panicked");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting the metrics failed; see the server's log\n",
            )
        }
    }
}

/// The exact `Authorization` header value the credentials produce.
pub(super) fn expected_authorization(auth: &BasicAuth) -> Vec<u8> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", auth.user, auth.password));
    format!("Basic {token}").into_bytes()
}

/// Compare without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &y) in b.iter().enumerate() {
        let x = a.get(i).copied().unwrap_or(!y);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"Basic abc", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic abd", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic ab", b"Basic abc"));
        assert!(!constant_time_eq(b"Basic abcd", b"Basic abc"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn authorization_header() {
        let auth = BasicAuth {
            user: "prom".into(),
            password: "s3cret".into(),
        };
        assert_eq!(
            expected_authorization(&auth),
            b"Basic cHJvbTpzM2NyZXQ=".to_vec()
        );
    }
}

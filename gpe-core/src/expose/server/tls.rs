//! The server's TLS: certificates, key and client CA read from PEM files, into a rustls acceptor.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;

use super::ServerError;
use crate::expose::config::TlsFiles;

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> ServerError {
    ServerError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ServerError> {
    let pem = std::fs::read(path).map_err(|e| tls_error(path, e))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

pub(super) fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let certs = read_certs(&files.cert)?;
    let pem = std::fs::read(&files.key).map_err(|e| tls_error(&files.key, e))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| tls_error(&files.key, format!("not a PEM key file: {e}")))?
        .ok_or_else(|| tls_error(&files.key, "no PEM private key in the file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&files.cert, e))?;
    let builder = match &files.client_ca {
        None if files.client_auth_required => {
            return Err(tls_error(
                &files.cert,
                "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED is set but PROMETHEUS_SSL_CLIENT_CAFILE is not: set the CA that signs client certificates",
            ))
        }
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_auth_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| tls_error(ca, e))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&files.key, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

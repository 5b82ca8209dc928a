//! Configuration from the Python exporter's environment variables, parsed strictly.
//!
//! A bad value is a [`ConfigError`] naming the variable, the value and what is accepted. Unlike the
//! Python exporter, the default multiprocess directory works (it is used as given, and created by
//! [`Store::open`](crate::Store::open)), and the TLS client-certificate settings are enforced by the
//! server. Redis variables are parsed by `gpe_core::redis` (feature `redis`).
//!
//! ```
//! use gpe_core::expose::config::Config;
//! let config = Config::from_vars([
//!     ("PROMETHEUS_METRICS_PORT".to_owned(), "9100".to_owned()),
//!     ("PROMETHEUS_MULTIPROC_DIR".to_owned(), "/tmp/metrics".to_owned()),
//! ])
//! .unwrap();
//! assert_eq!(config.metrics_addr().port(), 9100);
//! assert_eq!(config.multiproc_dir(), std::path::Path::new("/tmp/metrics"));
//!
//! let err = Config::from_vars([("PROMETHEUS_METRICS_PORT".to_owned(), "99999".to_owned())]).unwrap_err();
//! assert!(err.to_string().contains("PROMETHEUS_METRICS_PORT=\"99999\""));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// A configuration variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?} is invalid: expected {expected}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value (passwords are never included).
    pub value: String,
    /// What is accepted.
    pub expected: &'static str,
}

/// TLS settings of the `/metrics` server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle clients' certificates are verified against.
    pub client_ca: Option<PathBuf>,
    /// Whether a client without a valid certificate is rejected.
    pub client_auth_required: bool,
}

impl TlsFiles {
    /// Serve with this certificate chain and key, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth_required: false,
        }
    }

    /// Verify client certificates against `ca`; with `required`, reject clients without one.
    #[must_use]
    pub fn client_ca(mut self, ca: impl Into<PathBuf>, required: bool) -> TlsFiles {
        self.client_ca = Some(ca.into());
        self.client_auth_required = required;
        self
    }
}

/// HTTP basic auth credentials (the password never appears in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// gpe's configuration from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    multiproc_dir: PathBuf,
    bind_address: IpAddr,
    port: u16,
    tls: Option<TlsFiles>,
    basic_auth: Option<BasicAuth>,
    probes_auth: bool,
}

/// Parse a boolean the same way everywhere: true/false, 1/0, yes/no, on/off (any case).
pub fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError {
            var,
            value: value.to_owned(),
            expected: "a boolean: true/false, 1/0, yes/no or on/off",
        }),
    }
}

/// gpe's default multiprocess directory: `$XDG_RUNTIME_DIR/gpe`, else `$TMPDIR/gpe-metrics-<uid>`.
pub fn default_multiproc_dir(vars: &HashMap<String, String>) -> PathBuf {
    match vars.get("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(run) => Path::new(run).join("gpe"),
        None => std::env::temp_dir().join(format!("gpe-metrics-{}", nix::unistd::getuid())),
    }
}

impl Config {
    /// Read the process environment.
    ///
    /// # Errors
    /// The first variable with an unusable value.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Read the given variables (for tests and embedding).
    ///
    /// # Errors
    /// The first variable with an unusable value.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let multiproc_dir = get(crate::worker::env::MULTIPROC_DIR)
            .or_else(|| get("prometheus_multiproc_dir"))
            .map(PathBuf::from)
            .unwrap_or_else(|| default_multiproc_dir(&vars));
        let bind_address = match get("PROMETHEUS_BIND_ADDRESS") {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(v) => v
                .trim_matches(['[', ']'])
                .parse()
                .map_err(|_| ConfigError {
                    var: "PROMETHEUS_BIND_ADDRESS",
                    value: v.to_owned(),
                    expected: "an IPv4 or IPv6 address such as 127.0.0.1, 0.0.0.0 or ::1",
                })?,
        };
        let port = match get("PROMETHEUS_METRICS_PORT") {
            None => 9091,
            Some(v) => v.trim().parse().map_err(|_| ConfigError {
                var: "PROMETHEUS_METRICS_PORT",
                value: v.to_owned(),
                expected: "a port number 0..=65535 (0: any free port)",
            })?,
        };
        let file = |var: &'static str| -> Result<Option<PathBuf>, ConfigError> {
            match get(var) {
                None => Ok(None),
                Some(v) if Path::new(v).is_file() => Ok(Some(PathBuf::from(v))),
                Some(v) => Err(ConfigError {
                    var,
                    value: v.to_owned(),
                    expected: "the path of an existing, readable PEM file",
                }),
            }
        };
        let cert = file("PROMETHEUS_SSL_CERTFILE")?;
        let key = file("PROMETHEUS_SSL_KEYFILE")?;
        let client_ca = file("PROMETHEUS_SSL_CLIENT_CAFILE")?;
        let client_auth_required = match get("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED") {
            None => false,
            Some(v) => parse_bool("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", v)?,
        };
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca,
                client_auth_required,
            }),
            (None, None) if client_ca.is_some() || client_auth_required => {
                return Err(ConfigError {
                    var: "PROMETHEUS_SSL_CLIENT_CAFILE",
                    value: get("PROMETHEUS_SSL_CLIENT_CAFILE").unwrap_or("").to_owned(),
                    expected: "to be used with PROMETHEUS_SSL_CERTFILE and PROMETHEUS_SSL_KEYFILE",
                })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError {
                    var: "PROMETHEUS_SSL_KEYFILE",
                    value: String::new(),
                    expected: "to be set too, since PROMETHEUS_SSL_CERTFILE is",
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    var: "PROMETHEUS_SSL_CERTFILE",
                    value: String::new(),
                    expected: "to be set too, since PROMETHEUS_SSL_KEYFILE is",
                })
            }
        };
        let basic_auth = match get("PROMETHEUS_BASIC_AUTH") {
            None => None,
            Some(v) => match v.split_once(':') {
                Some((user, password)) if !user.is_empty() => Some(BasicAuth {
                    user: user.to_owned(),
                    password: password.to_owned(),
                }),
                _ => {
                    return Err(ConfigError {
                        var: "PROMETHEUS_BASIC_AUTH",
                        value: "<redacted>".to_owned(),
                        expected: "user:password with a non-empty user",
                    })
                }
            },
        };
        let probes_auth = match get("PROMETHEUS_PROBES_AUTH") {
            None => false,
            Some(v) => parse_bool("PROMETHEUS_PROBES_AUTH", v)?,
        };
        Ok(Config {
            multiproc_dir,
            bind_address,
            port,
            tls,
            basic_auth,
            probes_auth,
        })
    }

    /// The store directory.
    pub fn multiproc_dir(&self) -> &Path {
        &self.multiproc_dir
    }

    /// Where the `/metrics` server listens.
    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port)
    }

    /// TLS files, when both certificate and key are set.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Basic auth credentials, when set.
    pub fn basic_auth(&self) -> Option<&BasicAuth> {
        self.basic_auth.as_ref()
    }

    /// Whether `/health` and `/ready` need the basic auth credentials too
    /// (`PROMETHEUS_PROBES_AUTH`; default false: probes of a load balancer or Kubernetes carry
    /// none).
    pub fn probes_auth(&self) -> bool {
        self.probes_auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn defaults() {
        let c = cfg(&[("XDG_RUNTIME_DIR", "/run/user/7")]).unwrap();
        assert_eq!(c.metrics_addr(), "127.0.0.1:9091".parse().unwrap());
        assert_eq!(c.multiproc_dir(), Path::new("/run/user/7/gpe"));
        assert!(c.tls().is_none() && c.basic_auth().is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value, needle) in [
            ("PROMETHEUS_METRICS_PORT", "99999", "0..=65535"),
            ("PROMETHEUS_METRICS_PORT", "http", "0..=65535"),
            ("PROMETHEUS_BIND_ADDRESS", "localhost:80", "IPv4 or IPv6"),
            ("PROMETHEUS_SSL_CERTFILE", "/nonexistent.pem", "existing"),
            ("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", "maybe", "boolean"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(var) && msg.contains(value) && msg.contains(needle),
                "{msg}"
            );
        }
    }

    #[test]
    fn booleans_and_ipv6() {
        for t in ["1", "true", "YES", "On"] {
            assert!(parse_bool("X", t).unwrap());
        }
        for f in ["0", "false", "no", "OFF"] {
            assert!(!parse_bool("X", f).unwrap());
        }
        let c = cfg(&[
            ("PROMETHEUS_BIND_ADDRESS", "::1"),
            ("PROMETHEUS_METRICS_PORT", "0"),
        ])
        .unwrap();
        assert_eq!(c.metrics_addr(), "[::1]:0".parse().unwrap());
    }

    #[test]
    fn password_is_never_shown() {
        let c = cfg(&[("PROMETHEUS_BASIC_AUTH", "admin:s3cret")]).unwrap();
        assert_eq!(c.basic_auth().unwrap().password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = cfg(&[("PROMETHEUS_BASIC_AUTH", ":s3cret")]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn tls_needs_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let e = cfg(&[("PROMETHEUS_SSL_CERTFILE", cert.to_str().unwrap())]).unwrap_err();
        assert_eq!(e.var, "PROMETHEUS_SSL_KEYFILE");
    }
}

//! [`ServerConfig`]: where the server listens, whom it serves, and its limits.

use std::net::SocketAddr;
use std::time::Duration;

use crate::expose::config::{BasicAuth, Config, ConfigError, TlsFiles};

/// How the server listens and whom it serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(super) addr: SocketAddr,
    pub(super) tls: Option<TlsFiles>,
    pub(super) basic_auth: Option<BasicAuth>,
    pub(super) max_header_bytes: usize,
    pub(super) header_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) probes_auth: bool,
}

impl ServerConfig {
    /// Plain HTTP on `addr`, no auth.
    pub fn new(addr: SocketAddr) -> ServerConfig {
        ServerConfig {
            addr,
            tls: None,
            basic_auth: None,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            max_connections: 128,
            probes_auth: false,
        }
    }

    /// Address, TLS and basic auth from a [`Config`].
    pub fn from_config(config: &Config) -> ServerConfig {
        let mut c = ServerConfig::new(config.metrics_addr());
        c.tls = config.tls().cloned();
        c.basic_auth = config.basic_auth().cloned();
        c.probes_auth = config.probes_auth();
        c
    }

    /// [`from_config`](Self::from_config) of [`Config::from_env`].
    ///
    /// # Errors
    /// When a variable has an invalid value.
    pub fn from_env() -> Result<ServerConfig, ConfigError> {
        Ok(ServerConfig::from_config(&Config::from_env()?))
    }

    /// Listen on `addr` instead.
    #[must_use]
    pub fn addr(mut self, addr: SocketAddr) -> ServerConfig {
        self.addr = addr;
        self
    }

    /// Serve over TLS.
    #[must_use]
    pub fn tls(mut self, tls: Option<TlsFiles>) -> ServerConfig {
        self.tls = tls;
        self
    }

    /// Whether the probes, `/health` and `/ready`, need the basic auth credentials too (default
    /// false: a load balancer's or Kubernetes' probe carries none, and they tell nothing about
    /// the metrics).
    #[must_use]
    pub fn probes_auth(mut self, required: bool) -> ServerConfig {
        self.probes_auth = required;
        self
    }

    /// Require these basic auth credentials (on `/metrics`; on the probes too with
    /// [`probes_auth`](Self::probes_auth)).
    #[must_use]
    pub fn basic_auth(mut self, auth: Option<BasicAuth>) -> ServerConfig {
        self.basic_auth = auth;
        self
    }

    /// Largest request head accepted (default 16 KiB); larger gets 431.
    #[must_use]
    pub fn max_header_bytes(mut self, bytes: usize) -> ServerConfig {
        self.max_header_bytes = bytes.max(8192);
        self
    }

    /// Time a client has to send the request head (and the TLS handshake), default 10 s.
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> ServerConfig {
        self.header_timeout = timeout;
        self
    }

    /// Connections served at once (default 128). At the cap, a new connection takes the slot of
    /// the connection idle the longest (connected and silent, or between keep-alive requests),
    /// which is closed; it waits only while every connection is inside a request.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> ServerConfig {
        self.max_connections = n.max(1);
        self
    }
}

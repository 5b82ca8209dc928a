//! Connection settings, from the environment or a builder.

use std::fmt;
use std::time::Duration;

use deadpool_redis::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::RedisError;

/// Default key prefix (`REDIS_KEY_PREFIX`), as the Python exporter's.
pub const DEFAULT_PREFIX: &str = "gunicorn";
/// Default heartbeat age after which a process is folded (`REDIS_TTL_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default sync period (`REDIS_SYNC_INTERVAL`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Where Redis is and how gpe uses it.
///
/// Built from the environment ([`RedisConfig::from_env`]), from a URL ([`RedisConfig::new`]) or
/// from Redis Sentinels ([`RedisConfig::sentinel`], [`RedisConfig::with_sentinel`]), and the
/// `with_*` setters. The password is never logged nor shown by `Debug`.
///
/// Redis Cluster is not supported: the sync, fold and sweep scripts each touch several keys (the
/// heartbeat set, the process hashes, the archives), which Cluster only allows when they all hash
/// to one slot; a single hash tag would put every key on one node anyway.
///
/// ```
/// use std::time::Duration;
/// use gpe_core::redis::RedisConfig;
///
/// # fn main() -> Result<(), gpe_core::redis::RedisError> {
/// let config = RedisConfig::new("redis://default:s3cr%40t@127.0.0.1:6380/2")?
///     .with_prefix("gunicorn:prod")?
///     .with_host_id("web-1")?
///     .with_interval(Duration::from_millis(500))?;
/// assert_eq!(config.prefix(), "gunicorn:prod");
/// assert!(!format!("{config:?}").contains("s3cr"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) enabled: bool,
    /// The server (direct), or only the data nodes' settings (db, credentials, TLS) when
    /// `sentinel` is set: the sentinels name the master's address.
    pub(crate) info: ConnectionInfo,
    pub(crate) sentinel: Option<Sentinel>,
    pub(crate) prefix: String,
    pub(crate) ttl: Option<Duration>,
    pub(crate) interval: Duration,
    pub(crate) host_id: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) pool_size: usize,
    pub(crate) live_window: Duration,
    pub(crate) max_backoff: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("enabled", &self.enabled)
            .field("server", &self.server())
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("interval", &self.interval)
            .field("host_id", &self.host_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("pool_size", &self.pool_size)
            .field("live_window", &self.live_window)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[user[:password]@]host[:port][/db]`, or
    /// `rediss://` for TLS), with every other setting at its default.
    ///
    /// # Errors
    /// [`RedisError::InvalidUrl`] when the URL cannot be parsed (the message never contains the
    /// password).
    pub fn new(url: &str) -> Result<Self, RedisError> {
        let info = url.into_connection_info().map_err(RedisError::InvalidUrl)?;
        Ok(Self::with_info(info))
    }

    fn with_info(info: ConnectionInfo) -> Self {
        RedisConfig {
            enabled: true,
            info,
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: Some(DEFAULT_TTL),
            interval: DEFAULT_INTERVAL,
            host_id: default_host_id(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            pool_size: 4,
            live_window: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            sentinel: None,
        }
    }

    /// Settings for the master named `master` that the Redis Sentinels at `sentinels` (each
    /// `host:port`, an IPv6 host in brackets, or a `redis://` / `rediss://` URL for sentinels
    /// that need a password or TLS) monitor. Connections go to the master the sentinels name at
    /// connection time, so a failover is followed. The data nodes use database 0 and no
    /// credentials: see [`RedisConfig::with_sentinel`] for others.
    ///
    /// ```
    /// use gpe_core::redis::RedisConfig;
    ///
    /// # fn main() -> Result<(), gpe_core::redis::RedisError> {
    /// let config = RedisConfig::sentinel(&["10.0.0.1:26379", "10.0.0.2:26379"], "mymaster")?;
    /// assert_eq!(
    ///     config.server(),
    ///     "sentinel mymaster via 10.0.0.1:26379,10.0.0.2:26379 (db 0)"
    /// );
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`RedisError::InvalidConfig`] when `sentinels` is empty or has an entry that is not
    /// `host:port` (or a URL), or when `master` is empty or contains whitespace.
    pub fn sentinel(sentinels: &[&str], master: &str) -> Result<Self, RedisError> {
        let info = "redis://127.0.0.1/0"
            .into_connection_info()
            .map_err(RedisError::InvalidUrl)?;
        Self::with_info(info).with_sentinel(sentinels, master)
    }

    /// Reach the data nodes through Redis Sentinels (see [`RedisConfig::sentinel`]): the host
    /// and port of this configuration are ignored, its database, user, password and TLS
    /// (`rediss://`, `#insecure`) apply to the master the sentinels name.
    ///
    /// The pool's wait and create timeouts and every sync's and scrape's time budget apply as
    /// for a direct server, but the data-node connections themselves use the `redis` crate's
    /// defaults (1 s connect, 500 ms response): deadpool-redis's Sentinel manager takes no
    /// connection settings.
    ///
    /// ```
    /// use gpe_core::redis::RedisConfig;
    ///
    /// # fn main() -> Result<(), gpe_core::redis::RedisError> {
    /// let config = RedisConfig::new("rediss://default:s3cr%40t@ignored/2")?
    ///     .with_sentinel(&["[::1]:26379"], "metrics")?;
    /// assert_eq!(config.server(), "sentinel metrics via [::1]:26379 (db 2)");
    /// assert!(!format!("{config:?}").contains("s3cr"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`RedisConfig::sentinel`].
    pub fn with_sentinel(mut self, sentinels: &[&str], master: &str) -> Result<Self, RedisError> {
        if master.is_empty() || master.chars().any(char::is_whitespace) {
            return Err(RedisError::InvalidConfig(
                "the Sentinel master name must be non-empty and contain no whitespace",
            ));
        }
        if sentinels.is_empty() {
            return Err(RedisError::InvalidConfig(
                "at least one Sentinel address is needed",
            ));
        }
        let nodes = sentinels
            .iter()
            .map(|s| parse_sentinel(s))
            .collect::<Option<Vec<_>>>()
            .ok_or(RedisError::InvalidConfig(
                "a Sentinel address must be host:port ([ipv6]:port) or a redis:// / rediss:// URL",
            ))?;
        self.sentinel = Some(Sentinel {
            nodes,
            master: master.to_owned(),
        });
        Ok(self)
    }

    /// Settings from the environment: `REDIS_ENABLED` (true/1/yes/on), `REDIS_URL` or
    /// `REDIS_HOST` (127.0.0.1) / `REDIS_PORT` (6379) / `REDIS_DB` (0), `REDIS_USERNAME`,
    /// `REDIS_PASSWORD` (overrides a URL's), `REDIS_SENTINELS` (comma-separated `host:port` of
    /// Redis Sentinels: then the master named `REDIS_SENTINEL_MASTER` is used, and only the
    /// database, credentials and TLS of the settings above), `REDIS_KEY_PREFIX` (`gunicorn`, a
    /// trailing `:` stripped), `REDIS_TTL_SECONDS` (300) / `REDIS_TTL_DISABLED`,
    /// `REDIS_SYNC_INTERVAL` (seconds, 1) and `GPE_HOST_ID` (else the hostname).
    ///
    /// # Errors
    /// [`RedisError::InvalidEnv`] naming the variable and its value when one cannot be used.
    pub fn from_env() -> Result<Self, RedisError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`RedisConfig::from_env`], reading variables through `get` (for tests and for
    /// configuration that is not in the process environment).
    ///
    /// ```
    /// use gpe_core::redis::{RedisConfig, RedisError};
    ///
    /// let env = |name: &str| match name {
    ///     "REDIS_ENABLED" => Some("yes".to_owned()),
    ///     "REDIS_PORT" => Some("63790".to_owned()),
    ///     "REDIS_KEY_PREFIX" => Some("app:".to_owned()),
    ///     _ => None,
    /// };
    /// let config = RedisConfig::from_lookup(env).unwrap();
    /// assert!(config.enabled());
    /// assert_eq!(config.prefix(), "app");
    /// assert_eq!(config.server(), "127.0.0.1:63790/0");
    ///
    /// let bad = |name: &str| (name == "REDIS_PORT").then(|| "http".to_owned());
    /// let err = RedisConfig::from_lookup(bad).unwrap_err();
    /// assert!(err.to_string().contains("REDIS_PORT=\"http\""), "{err}");
    /// ```
    ///
    /// # Errors
    /// As [`RedisConfig::from_env`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, RedisError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let enabled = match get("REDIS_ENABLED") {
            Some(v) => parse_bool("REDIS_ENABLED", &v)?,
            None => false,
        };
        let mut info = match get("REDIS_URL") {
            Some(url) => {
                url.as_str()
                    .into_connection_info()
                    .map_err(|_| RedisError::InvalidEnv {
                        var: "REDIS_URL",
                        value: redact_url(&url),
                        reason:
                            "expected redis://[user[:password]@]host[:port][/db] or rediss://...",
                    })?
            }
            None => {
                let host = get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
                let port: u16 = parse_num(&get, "REDIS_PORT", 6379, "expected a port number")?;
                let db: i64 = parse_num(&get, "REDIS_DB", 0, "expected a database number")?;
                if db < 0 {
                    return Err(RedisError::InvalidEnv {
                        var: "REDIS_DB",
                        value: db.to_string(),
                        reason: "expected a database number >= 0",
                    });
                }
                let host_part = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("redis://{host_part}:{port}/{db}")
                    .into_connection_info()
                    .map_err(|_| RedisError::InvalidEnv {
                        var: "REDIS_HOST",
                        value: host,
                        reason: "expected a host name or IP address",
                    })?
            }
        };
        if let Some(user) = get("REDIS_USERNAME") {
            let settings = info.redis_settings().clone().set_username(user);
            info = info.set_redis_settings(settings);
        }
        if let Some(password) = get("REDIS_PASSWORD") {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let mut config = Self::with_info(info);
        config.enabled = enabled;
        if let Some(list) = get("REDIS_SENTINELS") {
            let Some(master) = get("REDIS_SENTINEL_MASTER") else {
                return Err(RedisError::InvalidEnv {
                    var: "REDIS_SENTINEL_MASTER",
                    value: String::new(),
                    reason: "required when REDIS_SENTINELS is set: the name of the master the \
                             sentinels monitor",
                });
            };
            let sentinels: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if sentinels.is_empty() || sentinels.iter().any(|s| parse_sentinel(s).is_none()) {
                return Err(RedisError::InvalidEnv {
                    var: "REDIS_SENTINELS",
                    value: sentinels
                        .iter()
                        .map(|s| redact_url(s))
                        .collect::<Vec<_>>()
                        .join(","),
                    reason: "expected comma-separated host:port ([ipv6]:port) of Redis Sentinels",
                });
            }
            let master = master.trim();
            config =
                config
                    .with_sentinel(&sentinels, master)
                    .map_err(|_| RedisError::InvalidEnv {
                        var: "REDIS_SENTINEL_MASTER",
                        value: master.to_owned(),
                        reason: "expected a master name without whitespace",
                    })?;
        }
        if let Some(prefix) = get("REDIS_KEY_PREFIX") {
            config = config
                .with_prefix(&prefix)
                .map_err(|_| RedisError::InvalidEnv {
                    var: "REDIS_KEY_PREFIX",
                    value: prefix,
                    reason: "expected a non-empty prefix without whitespace",
                })?;
        }
        let ttl_disabled = match get("REDIS_TTL_DISABLED") {
            Some(v) => parse_bool("REDIS_TTL_DISABLED", &v)?,
            None => false,
        };
        let ttl: f64 = parse_num(&get, "REDIS_TTL_SECONDS", 300.0, "expected seconds")?;
        config.ttl = if ttl_disabled || ttl <= 0.0 {
            None
        } else {
            Some(secs("REDIS_TTL_SECONDS", ttl)?)
        };
        let interval: f64 = parse_num(&get, "REDIS_SYNC_INTERVAL", 1.0, "expected seconds")?;
        if interval <= 0.0 {
            return Err(RedisError::InvalidEnv {
                var: "REDIS_SYNC_INTERVAL",
                value: interval.to_string(),
                reason: "expected a positive number of seconds",
            });
        }
        config.interval = secs("REDIS_SYNC_INTERVAL", interval)?;
        config.live_window = default_live_window(config.interval, config.ttl);
        if let Some(id) = get(crate::worker::env::HOST_ID) {
            config = config
                .with_host_id(&id)
                .map_err(|_| RedisError::InvalidEnv {
                    var: crate::worker::env::HOST_ID,
                    value: id,
                    reason: "expected a non-empty identity without tabs or newlines",
                })?;
        }
        Ok(config)
    }

    /// Set the key prefix. A trailing `:` is stripped; the prefix may contain `:` elsewhere.
    ///
    /// # Errors
    /// [`RedisError::InvalidConfig`] when the prefix is empty or contains whitespace.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, RedisError> {
        let p = prefix.trim_end_matches(':');
        if p.is_empty() || p.chars().any(char::is_whitespace) {
            return Err(RedisError::InvalidConfig(
                "the key prefix must be non-empty and contain no whitespace",
            ));
        }
        self.prefix = p.to_owned();
        Ok(self)
    }

    /// Set the host (or container) identity that scopes this host's processes.
    ///
    /// # Errors
    /// [`RedisError::InvalidConfig`] when it is empty or contains a tab or newline.
    pub fn with_host_id(mut self, id: &str) -> Result<Self, RedisError> {
        if id.is_empty() || id.contains(['\t', '\n', '\r']) {
            return Err(RedisError::InvalidConfig(
                "the host id must be non-empty, without tabs or newlines",
            ));
        }
        self.host_id = id.to_owned();
        Ok(self)
    }

    /// Set the heartbeat age after which a process is folded into the archive (`None`: never
    /// by age, only when its syncing master says it died).
    ///
    /// # Errors
    /// [`RedisError::InvalidConfig`] for a zero TTL.
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Result<Self, RedisError> {
        if ttl == Some(Duration::ZERO) {
            return Err(RedisError::InvalidConfig("the TTL must be positive"));
        }
        self.ttl = ttl;
        self.live_window = default_live_window(self.interval, self.ttl);
        Ok(self)
    }

    /// Set the sync period.
    ///
    /// # Errors
    /// [`RedisError::InvalidConfig`] for a zero interval.
    pub fn with_interval(mut self, interval: Duration) -> Result<Self, RedisError> {
        if interval.is_zero() {
            return Err(RedisError::InvalidConfig(
                "the sync interval must be positive",
            ));
        }
        self.interval = interval;
        self.live_window = default_live_window(self.interval, self.ttl);
        Ok(self)
    }

    /// Set the connect and response timeouts (default 2 s each).
    ///
    /// # Errors
    /// [`RedisError::InvalidConfig`] for a zero timeout.
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        response: Duration,
    ) -> Result<Self, RedisError> {
        if connect.is_zero() || response.is_zero() {
            return Err(RedisError::InvalidConfig("timeouts must be positive"));
        }
        self.connect_timeout = connect;
        self.response_timeout = response;
        Ok(self)
    }

    /// Set how recent a heartbeat must be for a process to count as alive for the `live*`
    /// gauge modes (default: 10 intervals, at least 5 s, at most the TTL).
    #[must_use]
    pub fn with_live_window(mut self, window: Duration) -> Self {
        self.live_window = window;
        self
    }

    /// Set the longest wait between two reconnection attempts while Redis is down (default
    /// 30 s).
    #[must_use]
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(Duration::from_millis(10));
        self
    }

    /// Whether `REDIS_ENABLED` asked for Redis (always true for [`RedisConfig::new`]).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This host's identity.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The sync period.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The heartbeat age after which a process is folded, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// `host:port/db` of the server, or `sentinel {master} via {host:port},... (db {db})`,
    /// without credentials (safe to log).
    pub fn server(&self) -> String {
        let db = self.info.redis_settings().db();
        match &self.sentinel {
            None => format!("{}/{db}", self.info.addr()),
            Some(s) => {
                let via: Vec<String> = s.nodes.iter().map(sentinel_addr).collect();
                format!("sentinel {} via {} (db {db})", s.master, via.join(","))
            }
        }
    }
}

/// Where the sentinels are and which master they name.
#[derive(Clone)]
pub(crate) struct Sentinel {
    pub(crate) nodes: Vec<ConnectionInfo>,
    pub(crate) master: String,
}

/// `host:port` of a sentinel, an IPv6 host in brackets.
fn sentinel_addr(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. }
            if host.contains(':') =>
        {
            format!("[{host}]:{port}")
        }
        other => other.to_string(),
    }
}

/// One sentinel: `host:port`, `[ipv6]:port`, or a `redis://` / `rediss://` URL.
fn parse_sentinel(s: &str) -> Option<ConnectionInfo> {
    let s = s.trim();
    if s.contains("://") {
        return s.into_connection_info().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if host.is_empty() || (host.contains(':') && !bracketed) || host.contains(['/', '@', ' ']) {
        return None;
    }
    format!("redis://{s}").as_str().into_connection_info().ok()
}

fn default_live_window(interval: Duration, ttl: Option<Duration>) -> Duration {
    let w = (interval * 10).max(Duration::from_secs(5));
    match ttl {
        Some(t) => w.min(t),
        None => w,
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, RedisError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(RedisError::InvalidEnv {
            var,
            value: v.to_owned(),
            reason: "expected true/false, 1/0, yes/no or on/off",
        }),
    }
}

fn parse_num<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    reason: &'static str,
) -> Result<T, RedisError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| RedisError::InvalidEnv {
            var,
            value: v,
            reason,
        }),
    }
}

fn secs(var: &'static str, s: f64) -> Result<Duration, RedisError> {
    Duration::try_from_secs_f64(s).map_err(|_| RedisError::InvalidEnv {
        var,
        value: s.to_string(),
        reason: "expected a finite, positive number of seconds",
    })
}

/// `url` with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split_once(':').map_or("", |(u, _)| u);
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// `GPE_HOST_ID` is read by [`RedisConfig::from_env`]; this is the fallback: the hostname.
fn default_host_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.contains(['\t', '\n', '\r']))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = RedisConfig::from_lookup(env(&[])).unwrap();
        assert!(!c.enabled());
        assert_eq!(c.prefix(), "gunicorn");
        assert_eq!(c.ttl(), Some(DEFAULT_TTL));
        assert_eq!(c.interval(), DEFAULT_INTERVAL);
        assert_eq!(c.server(), "127.0.0.1:6379/0");
        let c = RedisConfig::from_lookup(env(&[
            ("REDIS_ENABLED", "on"),
            ("REDIS_HOST", "::1"),
            ("REDIS_PORT", "7000"),
            ("REDIS_DB", "3"),
            ("REDIS_PASSWORD", "p@ss:/word"),
            ("REDIS_TTL_DISABLED", "true"),
            ("REDIS_SYNC_INTERVAL", "0.25"),
            (crate::worker::env::HOST_ID, "pod-7"),
            ("REDIS_KEY_PREFIX", "gunicorn:prod:"),
        ]))
        .unwrap();
        assert!(c.enabled());
        assert_eq!(c.server(), "::1:7000/3");
        assert_eq!(c.ttl(), None);
        assert_eq!(c.interval(), Duration::from_millis(250));
        assert_eq!(c.host_id(), "pod-7");
        assert_eq!(c.prefix(), "gunicorn:prod");
        assert_eq!(c.info.redis_settings().password(), Some("p@ss:/word"));
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn sentinels_from_the_environment() {
        let c = RedisConfig::from_lookup(env(&[
            ("REDIS_SENTINELS", " 10.0.0.1:26379, [::1]:26380 ,"),
            ("REDIS_SENTINEL_MASTER", "metrics"),
            ("REDIS_URL", "rediss://u:pw@ignored:1/4"),
        ]))
        .unwrap();
        assert_eq!(
            c.server(),
            "sentinel metrics via 10.0.0.1:26379,[::1]:26380 (db 4)"
        );
        assert_eq!(c.info.redis_settings().password(), Some("pw"));
        assert!(c.pool().is_ok());
        let e = RedisConfig::from_lookup(env(&[("REDIS_SENTINELS", "h:1")])).unwrap_err();
        assert!(e.to_string().contains("REDIS_SENTINEL_MASTER"), "{e}");
        let e = RedisConfig::from_lookup(env(&[
            ("REDIS_SENTINELS", "redis://u:hunter2@h:1,h"),
            ("REDIS_SENTINEL_MASTER", "m"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("REDIS_SENTINELS"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn errors_name_the_variable_and_hide_passwords() {
        for (var, value) in [
            ("REDIS_ENABLED", "maybe"),
            ("REDIS_PORT", "99999"),
            ("REDIS_DB", "x"),
            ("REDIS_TTL_SECONDS", "soon"),
            ("REDIS_SYNC_INTERVAL", "0"),
            ("REDIS_KEY_PREFIX", "a b"),
        ] {
            let e = RedisConfig::from_lookup(|n| (n == var).then(|| value.to_owned())).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        let e = RedisConfig::from_lookup(|n| {
            (n == "REDIS_URL").then(|| "http://u:hunter2@h:1".to_owned())
        })
        .unwrap_err();
        assert!(e.to_string().contains("REDIS_URL"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

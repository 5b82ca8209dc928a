//! The connection pool: straight to one server, or to the master a set of Sentinels names.

use std::ops::{Deref, DerefMut};

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{AsyncConnectionConfig, ConnectionAddr};
use deadpool_redis::sentinel::{SentinelNodeConnectionInfo, SentinelServerType, TlsMode};
use deadpool_redis::{Manager, Runtime};

use super::{RedisConfig, RedisError};

/// A pool of connections to the Redis that gpe writes to and reads from. Cheap to clone (an
/// `Arc` inside).
#[derive(Clone)]
pub(crate) enum Pool {
    /// One server (`REDIS_URL` / `REDIS_HOST`...).
    Direct(deadpool_redis::Pool),
    /// The current master of a Sentinel-monitored group (`REDIS_SENTINELS`): asked to the
    /// sentinels for every new connection, so a failover is followed by the next connection.
    Sentinel(deadpool_redis::sentinel::Pool),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, status) = match self {
            Pool::Direct(p) => ("direct", p.status()),
            Pool::Sentinel(p) => ("sentinel", p.status()),
        };
        f.debug_struct("Pool")
            .field("kind", &kind)
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl Pool {
    /// A connection from the pool (a new one is made when none is idle), within the pool's
    /// wait and create timeouts.
    pub(crate) async fn get(&self) -> Result<Conn, RedisError> {
        match self {
            Pool::Direct(p) => Ok(Conn::Direct(p.get().await?)),
            Pool::Sentinel(p) => Ok(Conn::Sentinel(p.get().await?)),
        }
    }
}

/// A connection of a [`Pool`], back to the pool when dropped. Derefs to the multiplexed
/// connection, so `&mut *conn` runs commands and scripts.
pub(crate) enum Conn {
    Direct(deadpool_redis::Connection),
    Sentinel(deadpool_redis::sentinel::Connection),
}

impl Conn {
    /// Close this connection instead of returning it to the pool (after an error: it may be
    /// broken, or, after a Sentinel failover, connected to a server that is now a replica, which
    /// the pool's recycle `PING` would not notice).
    pub(crate) fn discard(self) {
        match self {
            Conn::Direct(c) => drop(deadpool_redis::Connection::take(c)),
            Conn::Sentinel(c) => drop(deadpool_redis::sentinel::Connection::take(c)),
        }
    }
}

impl Deref for Conn {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::Sentinel(c) => c,
        }
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        match self {
            Conn::Direct(c) => c,
            Conn::Sentinel(c) => c,
        }
    }
}

impl RedisConfig {
    /// A connection pool with this configuration's timeouts (through the sentinels, when
    /// configured). Connections are made lazily, so this succeeds while Redis is down.
    ///
    /// # Errors
    /// [`RedisError::Pool`] or [`RedisError::PoolConfig`] when the pool cannot be built (not for
    /// an unreachable server).
    pub(crate) fn pool(&self) -> Result<Pool, RedisError> {
        let mut config = deadpool_redis::PoolConfig::new(self.pool_size);
        config.timeouts = deadpool_redis::Timeouts {
            wait: Some(self.connect_timeout),
            create: Some(self.connect_timeout + self.response_timeout),
            recycle: Some(self.response_timeout),
        };
        if let Some(s) = &self.sentinel {
            let settings = self.info.redis_settings().clone();
            let tls_mode = match self.info.addr() {
                ConnectionAddr::TcpTls { insecure, .. } => Some(if *insecure {
                    TlsMode::Insecure
                } else {
                    TlsMode::Secure
                }),
                _ => None,
            };
            let node = SentinelNodeConnectionInfo {
                tls_mode,
                redis_connection_info: Some(settings.into()),
            };
            let manager = deadpool_redis::sentinel::Manager::new(
                s.nodes.clone(),
                s.master.clone(),
                Some(node),
                SentinelServerType::Master,
            )
            .map_err(RedisError::PoolConfig)?;
            return deadpool_redis::sentinel::Pool::builder(manager)
                .config(config)
                .runtime(Runtime::Tokio1)
                .build()
                .map(Pool::Sentinel)
                .map_err(RedisError::Pool);
        }
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let manager = Manager::new_with_config(self.info.clone(), conn_config)
            .map_err(RedisError::PoolConfig)?;
        deadpool_redis::Pool::builder(manager)
            .config(config)
            .runtime(Runtime::Tokio1)
            .build()
            .map(Pool::Direct)
            .map_err(RedisError::Pool)
    }
}

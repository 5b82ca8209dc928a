//! The connection pool: straight to one server, or to the master a set of Sentinels names.

use std::ops::{Deref, DerefMut};

use deadpool_redis::redis::aio::MultiplexedConnection;

use super::RedisError;

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

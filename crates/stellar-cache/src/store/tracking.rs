//! The tracking connection of a [`NearCache`]: one RESP3 connection per store with
//! `CLIENT TRACKING ON NOLOOP` (default mode), on which every read of the store is sent, so Redis
//! remembers the keys this node holds and pushes their invalidations on the same connection.
//!
//! The load script runs there too: its own write (`read_at`, the sliding TTL) pushes nothing to
//! this connection (`NOLOOP`), and its last call is a read (`PTTL`), which tracks the key again
//! after Redis dropped it for the write. So a node recording its reads neither invalidates its
//! own entry nor loses track of the key; its reply goes into the near cache like any other read,
//! and, standing in for the push its write did not send, moves the key's epoch so that replies
//! sent before it (with the older TTL or read time) are refused.
//! Writes go over the shared connection, so this node's own saves still reach it as pushes.
//!
//! The connection is opened on first use and again after a loss. A lost connection (the
//! library's disconnection notice, an I/O error or a timeout) drops the whole near cache, since
//! invalidations may have been lost with it. If it cannot be opened (a server refusing RESP3 or
//! `CLIENT TRACKING`), reads go to the shared connection uncached and the next attempt waits
//! [`RETRY_AFTER`]. One load at a time opens it; the loads that come meanwhile read uncached
//! rather than wait for it.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use stellar_bus::{RedisConnection, RedisPool, TransportError};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    near::NearCache,
    redis_read::{self, Read},
};

/// How long after a failed attempt to open the tracking connection the next one is made.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A tracking connection and the near-cache generation it serves.
#[derive(Clone)]
pub(crate) struct Tracked {
    pub(crate) conn: RedisConnection,
    pub(crate) generation: u64,
}

pub(crate) struct Tracking {
    pub(crate) near: Arc<NearCache>,
    current: RwLock<Option<Tracked>>,
    /// Held by the one caller connecting (the others read uncached meanwhile); holds when the
    /// last attempt failed.
    connecting: tokio::sync::Mutex<Option<Instant>>,
}

impl Tracking {
    pub(crate) fn new(near: NearCache) -> Self {
        Self {
            near: Arc::new(near),
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    /// The live tracking connection, opened if needed; `None` while it cannot be opened or
    /// another caller is opening it (so no load waits behind a connect: it reads uncached).
    pub(crate) async fn connection(&self, pool: &RedisPool) -> Option<Tracked> {
        if let Some(tracked) = self.live() {
            return Some(tracked);
        }
        let Ok(mut failed_at) = self.connecting.try_lock() else {
            return None;
        };
        if let Some(tracked) = self.live() {
            return Some(tracked);
        }
        if failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return None;
        }
        match self.connect(pool).await {
            Ok(tracked) => {
                debug!(
                    generation = tracked.generation,
                    "near cache tracking connection open"
                );
                *failed_at = None;
                *stellar_core::sync::write(&self.current) = Some(tracked.clone());
                Some(tracked)
            }
            Err(err) => {
                // Once per outage: the next attempts, one a second, say it at debug.
                if failed_at.is_none() {
                    warn!(error = %err, "near cache off: no tracking connection, retrying every 1 s");
                } else {
                    debug!(error = %err, "near cache still off: no tracking connection");
                }
                *failed_at = Some(Instant::now());
                None
            }
        }
    }

    /// The current connection, unless it was lost.
    fn live(&self) -> Option<Tracked> {
        let current = stellar_core::sync::read(&self.current);
        let tracked = current.as_ref()?;
        (tracked.generation == self.near.generation()).then(|| tracked.clone())
    }

    async fn connect(&self, pool: &RedisPool) -> Result<Tracked, TransportError> {
        let generation = self.near.generation();
        let near = self.near.clone();
        let mut conn = pool
            .push_connection(move |push| near.on_push(&push, generation))
            .await?;
        let timeout = pool.config().op_timeout;
        let tracking = redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("NOLOOP")
            .clone();
        pool.run_on(&mut conn, "CLIENT TRACKING", timeout, async |conn| {
            tracking.query_async::<()>(conn).await
        })
        .await?;
        Ok(Tracked { conn, generation })
    }

    /// Runs the read `f` of the Redis key `entry` on `tracked` and offers its reply to the near
    /// cache, which keeps it unless an invalidation of the key came in since just before it was
    /// sent.
    pub(crate) async fn read<F>(
        &self,
        pool: &RedisPool,
        mut tracked: Tracked,
        entry: &str,
        f: F,
    ) -> Result<Read, TransportError>
    where
        F: AsyncFnOnce(&mut RedisConnection) -> redis::RedisResult<Read>,
    {
        let ticket = self.near.ticket(entry, tracked.generation);
        let timeout = pool.config().op_timeout;
        match pool
            .run_on(&mut tracked.conn, "cache load", timeout, f)
            .await
        {
            Ok(read) => {
                let wrote = read.recorded_at_ms.is_some();
                self.near
                    .admit(entry, read.kept().as_ref(), read.pttl, wrote, ticket);
                Ok(read)
            }
            Err(err) => {
                self.failed(&tracked, &err);
                Err(err)
            }
        }
    }

    /// Handles a failed read on `tracked`: an error Redis sent (`WRONGTYPE`, `READONLY`…) is a
    /// reply like any other; an I/O, parse or timeout error means the connection is no longer
    /// trusted.
    fn failed(&self, tracked: &Tracked, err: &TransportError) {
        if !redis_read::answered(err) {
            debug!(error = %err, "near cache tracking connection lost");
            self.near.lost(tracked.generation);
        }
    }
}

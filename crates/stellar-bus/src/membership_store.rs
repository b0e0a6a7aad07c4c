//! Where membership records live: the narrow [`MembershipStore`] trait, with a Redis and an
//! in-memory implementation. A store keeps opaque records, their expiry and which run of a node
//! (its incarnation) wrote each; what a record says, and whether to trust it, is
//! [`Membership`](crate::Membership)'s business.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use stellar_core::{NodeId, sync, time::now_ms};
use tokio::time::Instant;

use crate::{RedisPool, TransportError, keys};

/// One stored membership record: opaque text written by [`Membership`](crate::Membership), and
/// when the store last saw it renewed (the store's clock, ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The node the record belongs to.
    pub id: NodeId,
    /// The record as [`Membership`](crate::Membership) wrote it.
    pub record: String,
    /// When it was last renewed.
    pub last_seen_ms: u64,
}

/// Every record that has not expired, and the store's clock when they were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRecords {
    /// The store's clock, ms since the Unix epoch (Redis `TIME` for Redis).
    pub now_ms: u64,
    /// The records.
    pub records: Vec<MemberRecord>,
}

/// Whether a heartbeat may overwrite a live record of the same id written by another run of
/// the node (another incarnation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Write only if the id is free or held by this incarnation.
    Own,
    /// As [`Claim::Own`], and also take over the record of this incarnation: a supervised
    /// handover from an old run to its replacement.
    Replacing(u64),
    /// Write whatever holds the id (its record did not verify, or is stale).
    Force,
}

/// What a heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// The record was written.
    Written {
        /// The store's clock when it was written, ms since the Unix epoch.
        now_ms: u64,
    },
    /// Nothing was written: another incarnation holds the id.
    Held {
        /// The store's clock, ms since the Unix epoch.
        now_ms: u64,
        /// The incarnation the store has for the holder (unverified).
        incarnation: u64,
        /// The holder's record, to verify.
        record: String,
    },
}

/// Where membership records live: Redis for a cluster, memory for one process.
#[async_trait]
pub trait MembershipStore: fmt::Debug + Send + Sync + 'static {
    /// Creates or renews `node`'s record for `ttl`, written by the run `incarnation`, unless
    /// `claim` forbids it.
    async fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        record: &str,
        ttl: Duration,
        claim: Claim,
    ) -> Result<Beat, TransportError>;
    /// Removes `node`'s record now if the run `incarnation` wrote it (or it is gone); false if
    /// another run holds it, which is left alone.
    async fn leave(&self, node: &NodeId, incarnation: u64) -> Result<bool, TransportError>;
    /// Removes `node`'s record if it is still exactly `record` (compare and delete); false if
    /// it changed or is gone.
    async fn remove_if(&self, node: &NodeId, record: &str) -> Result<bool, TransportError>;
    /// Every record that has not expired.
    async fn live(&self) -> Result<LiveRecords, TransportError>;
    /// Records that `node` holds `connection` (a client connection of the app), replacing any
    /// earlier holder.
    async fn hold_connection(&self, connection: &str, node: &NodeId) -> Result<(), TransportError>;
    /// Forgets `connection` if `node` holds it; false if it is absent or held by another node.
    async fn release_connection(
        &self,
        connection: &str,
        node: &NodeId,
    ) -> Result<bool, TransportError>;
    /// The node recorded as holding `connection`, live or not.
    async fn connection_holder(&self, connection: &str) -> Result<Option<NodeId>, TransportError>;
    /// Forgets every connection recorded as held by `node` (a new run of it holds none yet);
    /// how many.
    async fn forget_connections(&self, node: &NodeId) -> Result<u64, TransportError>;
}

/// A record in memory and when it expires.
#[derive(Debug, Clone)]
struct Stored {
    record: MemberRecord,
    incarnation: u64,
    expires: Instant,
}

/// Membership records in this process's memory, on the local clock.
#[derive(Debug, Clone, Default)]
pub struct MemoryMembershipStore {
    records: Arc<Mutex<HashMap<NodeId, Stored>>>,
    connections: Arc<Mutex<HashMap<String, NodeId>>>,
}

impl MemoryMembershipStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeId>> {
        // Each critical section is one map update: a poisoned lock is still consistent.
        sync::lock(&self.connections)
    }

    /// The live records, expired ones forgotten.
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Stored>> {
        // Each critical section is one map update: a poisoned lock is still consistent.
        let mut records = sync::lock(&self.records);
        let now = Instant::now();
        records.retain(|_, stored| stored.expires > now);
        records
    }
}

#[async_trait]
impl MembershipStore for MemoryMembershipStore {
    async fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        record: &str,
        ttl: Duration,
        claim: Claim,
    ) -> Result<Beat, TransportError> {
        let now_ms = now_ms();
        let mut records = self.records();
        if let Some(held) = records.get(node)
            && !may_write(claim, incarnation, held.incarnation)
        {
            return Ok(Beat::Held {
                now_ms,
                incarnation: held.incarnation,
                record: held.record.record.clone(),
            });
        }
        let stored = Stored {
            record: MemberRecord {
                id: node.clone(),
                record: record.to_owned(),
                last_seen_ms: now_ms,
            },
            incarnation,
            expires: Instant::now() + ttl,
        };
        records.insert(node.clone(), stored);
        Ok(Beat::Written { now_ms })
    }

    async fn leave(&self, node: &NodeId, incarnation: u64) -> Result<bool, TransportError> {
        let mut records = self.records();
        match records.get(node) {
            Some(held) if held.incarnation != incarnation => Ok(false),
            _ => {
                records.remove(node);
                Ok(true)
            }
        }
    }

    async fn remove_if(&self, node: &NodeId, record: &str) -> Result<bool, TransportError> {
        let mut records = self.records();
        let same = records
            .get(node)
            .is_some_and(|held| held.record.record == record);
        if same {
            records.remove(node);
        }
        Ok(same)
    }

    async fn live(&self) -> Result<LiveRecords, TransportError> {
        let records = self.records();
        Ok(LiveRecords {
            now_ms: now_ms(),
            records: records.values().map(|s| s.record.clone()).collect(),
        })
    }

    async fn hold_connection(&self, connection: &str, node: &NodeId) -> Result<(), TransportError> {
        self.connections()
            .insert(connection.to_owned(), node.clone());
        Ok(())
    }

    async fn release_connection(
        &self,
        connection: &str,
        node: &NodeId,
    ) -> Result<bool, TransportError> {
        let mut connections = self.connections();
        let held = connections.get(connection) == Some(node);
        if held {
            connections.remove(connection);
        }
        Ok(held)
    }

    async fn connection_holder(&self, connection: &str) -> Result<Option<NodeId>, TransportError> {
        Ok(self.connections().get(connection).cloned())
    }

    async fn forget_connections(&self, node: &NodeId) -> Result<u64, TransportError> {
        let mut connections = self.connections();
        let before = connections.len();
        connections.retain(|_, holder| holder != node);
        Ok((before - connections.len()) as u64)
    }
}

/// Whether a run `incarnation` may overwrite a live record written by the run `holder`; the
/// same rule as `lua/heartbeat.lua`.
fn may_write(claim: Claim, incarnation: u64, holder: u64) -> bool {
    match claim {
        Claim::Force => true,
        Claim::Own => holder == incarnation,
        Claim::Replacing(old) => holder == incarnation || holder == old,
    }
}

/// Membership records in Redis: a ZSET of ids scored by expiry and a HASH per node, both on Redis
/// time (see `lua/*.lua`), so node clocks do not matter.
#[derive(Debug, Clone)]
pub struct RedisMembershipStore {
    pool: RedisPool,
    scripts: Arc<Scripts>,
}

crate::lua_scripts!(
    "../lua/": heartbeat,
    live_nodes,
    leave,
    remove_if,
    release_connection,
    hold_connection,
    forget_connections,
);

impl RedisMembershipStore {
    /// A store on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            scripts: Arc::new(Scripts::load()),
        }
    }
}

fn unexpected_reply(op: &'static str) -> TransportError {
    TransportError::Backend {
        op,
        source: format!("unexpected reply from the {op} script").into(),
    }
}

#[async_trait]
impl MembershipStore for RedisMembershipStore {
    async fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        record: &str,
        ttl: Duration,
        claim: Claim,
    ) -> Result<Beat, TransportError> {
        const OP: &str = "membership heartbeat";
        let (key, ttl) = (keys::node(node), ttl.as_millis().to_string());
        let (mode, replaces) = match claim {
            Claim::Own => ("own", String::new()),
            Claim::Replacing(old) => ("own", old.to_string()),
            Claim::Force => ("force", String::new()),
        };
        let incarnation = incarnation.to_string();
        let args = [
            node.as_str(),
            record,
            ttl.as_str(),
            incarnation.as_str(),
            mode,
            replaces.as_str(),
        ];
        let reply: Vec<String> = self
            .pool
            .invoke(OP, &self.scripts.heartbeat, &[keys::nodes(), &key], &args)
            .await?;
        let number = |i: usize| reply.get(i).and_then(|n| n.parse::<u64>().ok());
        match (reply.first().map(String::as_str), number(1)) {
            (Some("1"), Some(now_ms)) => Ok(Beat::Written { now_ms }),
            (Some("0"), Some(now_ms)) => Ok(Beat::Held {
                now_ms,
                // A holder field that is not a number is not a valid run: 0 names none.
                incarnation: number(2).unwrap_or(0),
                record: reply.get(3).cloned().unwrap_or_default(),
            }),
            _ => Err(unexpected_reply(OP)),
        }
    }

    async fn leave(&self, node: &NodeId, incarnation: u64) -> Result<bool, TransportError> {
        let key = keys::node(node);
        let incarnation = incarnation.to_string();
        let removed: u64 = self
            .pool
            .invoke(
                "membership leave",
                &self.scripts.leave,
                &[keys::nodes(), &key],
                &[node.as_str(), incarnation.as_str()],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn remove_if(&self, node: &NodeId, record: &str) -> Result<bool, TransportError> {
        let key = keys::node(node);
        let removed: u64 = self
            .pool
            .invoke(
                "membership remove stale",
                &self.scripts.remove_if,
                &[keys::nodes(), &key],
                &[node.as_str(), record],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn live(&self) -> Result<LiveRecords, TransportError> {
        const OP: &str = "membership list";
        let flat: Vec<String> = self
            .pool
            .invoke(
                OP,
                &self.scripts.live_nodes,
                &[keys::nodes(), keys::node_prefix()],
                &[],
            )
            .await?;
        let Some((now_ms, flat)) = flat.split_first() else {
            return Err(unexpected_reply(OP));
        };
        let now_ms = now_ms.parse().map_err(|_| unexpected_reply(OP))?;
        let records = flat
            .chunks_exact(3)
            .filter_map(|triple| {
                let id = NodeId::new(triple[0].as_str()).ok()?;
                let last_seen_ms = triple[2].parse().ok()?;
                Some(MemberRecord {
                    id,
                    record: triple[1].clone(),
                    last_seen_ms,
                })
            })
            .collect();
        Ok(LiveRecords { now_ms, records })
    }

    async fn hold_connection(&self, connection: &str, node: &NodeId) -> Result<(), TransportError> {
        let index = keys::node_connections(node);
        self.pool
            .invoke::<u64>(
                "hold connection",
                &self.scripts.hold_connection,
                &[keys::connections(), &index],
                &[connection, node.as_str()],
            )
            .await
            .map(drop)
    }

    async fn forget_connections(&self, node: &NodeId) -> Result<u64, TransportError> {
        let index = keys::node_connections(node);
        self.pool
            .invoke(
                "forget connections",
                &self.scripts.forget_connections,
                &[keys::connections(), &index],
                &[node.as_str()],
            )
            .await
    }

    async fn release_connection(
        &self,
        connection: &str,
        node: &NodeId,
    ) -> Result<bool, TransportError> {
        let removed: u64 = self
            .pool
            .invoke(
                "release connection",
                &self.scripts.release_connection,
                &[keys::connections(), &keys::node_connections(node)],
                &[connection, node.as_str()],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn connection_holder(&self, connection: &str) -> Result<Option<NodeId>, TransportError> {
        let cmd = redis::cmd("HGET")
            .arg(keys::connections())
            .arg(connection)
            .clone();
        let holder: Option<String> = self.pool.query("HGET connection", &cmd).await?;
        Ok(holder.and_then(|id| NodeId::new(id).ok()))
    }
}

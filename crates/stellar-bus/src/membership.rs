//! Live membership: each node keeps a record with a short TTL, renewed by a heartbeat, and
//! removes it on a graceful stop.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stellar_core::{Api, NodeId};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{RedisPool, TransportError, envelope::Sealer, keys};

const HEARTBEAT_SCRIPT: &str = include_str!("../lua/heartbeat.lua");
const LIVE_NODES_SCRIPT: &str = include_str!("../lua/live_nodes.lua");
const LEAVE_SCRIPT: &str = include_str!("../lua/leave.lua");
const RELEASE_CONNECTION_SCRIPT: &str = include_str!("../lua/release_connection.lua");

/// One live node, as `stellar cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When its record was last renewed, in ms since the Unix epoch (the store's clock).
    pub last_seen_ms: u64,
    /// The Stellar version it runs.
    pub version: String,
}

impl NodeInfo {
    /// The record of the node `api`, seen now.
    pub fn of(api: &Api) -> Self {
        let started_at_ms = api
            .started_at()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            id: api.node_id().clone(),
            host: stellar_core::hostname(),
            pid: std::process::id(),
            started_at_ms,
            last_seen_ms: now_ms(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// One stored membership record: opaque text written by [`Membership`], and when the store last
/// saw it renewed (the store's clock, ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The node the record belongs to.
    pub id: NodeId,
    /// The record as [`Membership`] wrote it.
    pub record: String,
    /// When it was last renewed.
    pub last_seen_ms: u64,
}

/// Where membership records live: Redis for a cluster, memory for one process. A store keeps
/// records and their expiry; what a record says, and whether to trust it, is [`Membership`]'s
/// business.
#[async_trait]
pub trait MembershipStore: fmt::Debug + Send + Sync + 'static {
    /// Creates or renews `node`'s record for `ttl`.
    async fn heartbeat(
        &self,
        node: &NodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<(), TransportError>;
    /// Removes `node`'s record now.
    async fn leave(&self, node: &NodeId) -> Result<(), TransportError>;
    /// Every record that has not expired.
    async fn live(&self) -> Result<Vec<MemberRecord>, TransportError>;
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
}

/// Membership records in this process's memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryMembershipStore {
    records: Arc<Mutex<HashMap<NodeId, (MemberRecord, Instant)>>>,
    connections: Arc<Mutex<HashMap<String, NodeId>>>,
}

impl MemoryMembershipStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeId>> {
        // Each critical section is one map update: a poisoned lock is still consistent.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (MemberRecord, Instant)>> {
        // Each critical section is one map update: a poisoned lock is still consistent.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl MembershipStore for MemoryMembershipStore {
    async fn heartbeat(
        &self,
        node: &NodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<(), TransportError> {
        let record = MemberRecord {
            id: node.clone(),
            record: record.to_owned(),
            last_seen_ms: now_ms(),
        };
        self.records()
            .insert(node.clone(), (record, Instant::now() + ttl));
        Ok(())
    }

    async fn leave(&self, node: &NodeId) -> Result<(), TransportError> {
        self.records().remove(node);
        Ok(())
    }

    async fn live(&self) -> Result<Vec<MemberRecord>, TransportError> {
        let now = Instant::now();
        let mut records = self.records();
        records.retain(|_, (_, expires)| *expires > now);
        Ok(records.values().map(|(record, _)| record.clone()).collect())
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
}

/// Membership records in Redis: a ZSET of ids scored by expiry and a HASH per node, both on Redis
/// time (see `lua/*.lua`), so node clocks do not matter.
#[derive(Debug, Clone)]
pub struct RedisMembershipStore {
    pool: RedisPool,
    heartbeat: Arc<redis::Script>,
    live: Arc<redis::Script>,
    leave: Arc<redis::Script>,
    release_connection: Arc<redis::Script>,
}

impl RedisMembershipStore {
    /// A store on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            heartbeat: Arc::new(redis::Script::new(HEARTBEAT_SCRIPT)),
            live: Arc::new(redis::Script::new(LIVE_NODES_SCRIPT)),
            leave: Arc::new(redis::Script::new(LEAVE_SCRIPT)),
            release_connection: Arc::new(redis::Script::new(RELEASE_CONNECTION_SCRIPT)),
        }
    }
}

#[async_trait]
impl MembershipStore for RedisMembershipStore {
    async fn heartbeat(
        &self,
        node: &NodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<(), TransportError> {
        let (key, ttl) = (keys::node(node), ttl.as_millis().to_string());
        let args = [node.as_str(), record, ttl.as_str()];
        self.pool
            .invoke::<u64>(
                "membership heartbeat",
                &self.heartbeat,
                &[keys::nodes(), &key],
                &args,
            )
            .await
            .map(drop)
    }

    async fn leave(&self, node: &NodeId) -> Result<(), TransportError> {
        let key = keys::node(node);
        self.pool
            .invoke::<u64>(
                "membership leave",
                &self.leave,
                &[keys::nodes(), &key],
                &[node.as_str()],
            )
            .await
            .map(drop)
    }

    async fn live(&self) -> Result<Vec<MemberRecord>, TransportError> {
        let flat: Vec<String> = self
            .pool
            .invoke(
                "membership list",
                &self.live,
                &[keys::nodes()],
                &[keys::node_prefix()],
            )
            .await?;
        Ok(flat
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
            .collect())
    }

    async fn hold_connection(&self, connection: &str, node: &NodeId) -> Result<(), TransportError> {
        let cmd = redis::cmd("HSET")
            .arg(keys::connections())
            .arg(connection)
            .arg(node.as_str())
            .clone();
        self.pool
            .query::<u64>("HSET connection", &cmd)
            .await
            .map(drop)
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
                &self.release_connection,
                &[keys::connections()],
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

/// What [`Membership`] writes: the node's info and a tag signing it with the server token.
#[derive(Debug, Serialize, Deserialize)]
struct SignedRecord {
    info: NodeInfo,
    tag: String,
}

/// A node's view of the cluster's members. Cloning it is cheap.
///
/// Records are signed with the server token like bus messages: a process with another token can
/// write to the same Redis, but never shows up as a member, and `nodes()` skips its records.
#[derive(Debug, Clone)]
pub struct Membership {
    store: Arc<dyn MembershipStore>,
    sealer: Sealer,
}

const RECORD_CONTEXT: &str = "stellar membership record v1";

impl Membership {
    /// Membership over `store`, trusting records signed with `api`'s server token (or its
    /// previous one). Until [`Membership::join`], this node only reads.
    pub fn new(store: Arc<dyn MembershipStore>, api: &Api) -> Self {
        let config = api.config();
        let previous: Vec<_> = config.previous_server_token.iter().cloned().collect();
        Self {
            store,
            sealer: Sealer::new(&config.server_token, &previous),
        }
    }

    /// Every live node with a valid record, ordered by id.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, TransportError> {
        let mut nodes: Vec<NodeInfo> = self
            .store
            .live()
            .await?
            .into_iter()
            .filter_map(|stored| {
                let mut info = self.open(&stored)?;
                info.last_seen_ms = stored.last_seen_ms;
                Some(info)
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    fn seal(&self, info: &NodeInfo) -> String {
        let json = serde_json::to_vec(info).expect("NodeInfo serialises to JSON");
        let tag = self.sealer.sign_bytes(RECORD_CONTEXT, &json);
        let tag: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
        serde_json::to_string(&SignedRecord {
            info: info.clone(),
            tag,
        })
        .expect("records serialise to JSON")
    }

    /// The record's info if its tag verifies and it names the node it is stored under.
    fn open(&self, stored: &MemberRecord) -> Option<NodeInfo> {
        let record: SignedRecord = serde_json::from_str(&stored.record).ok()?;
        let tag: Vec<u8> = (0..record.tag.len())
            .step_by(2)
            .map(|i| {
                record
                    .tag
                    .get(i..i + 2)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            })
            .collect::<Option<_>>()?;
        let json = serde_json::to_vec(&record.info).ok()?;
        let valid =
            self.sealer.verify_bytes(RECORD_CONTEXT, &json, &tag) && record.info.id == stored.id;
        if !valid {
            debug!(member = %stored.id, "membership record with a bad signature skipped");
        }
        valid.then_some(record.info)
    }

    /// Registers the node `api` and keeps its record alive (every `heartbeat_interval`, for
    /// `heartbeat_ttl`) until the node stops, then removes it. Logs every member that joins or
    /// leaves, as every node sees it.
    ///
    /// # Errors
    ///
    /// Fails if the first heartbeat cannot be written: a node does not claim to be up when the
    /// others cannot see it.
    pub async fn join(&self, api: &Api) -> Result<(), TransportError> {
        self.beat(api).await?;
        let known: BTreeSet<NodeId> = self.nodes().await?.into_iter().map(|n| n.id).collect();
        info!(node_id = %api.node_id(), members = known.len(), "joined the cluster");
        api.spawn(heartbeat_loop(self.clone(), api.clone(), known));
        Ok(())
    }

    /// Records that the node `api` holds the client connection `connection`, so calls aimed at
    /// the connection ([`Membership::connection_holder`]) reach this node.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn hold_connection(&self, api: &Api, connection: &str) -> Result<(), TransportError> {
        self.store.hold_connection(connection, api.node_id()).await
    }

    /// Forgets `connection` if the node `api` holds it; false if another node does.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn release_connection(
        &self,
        api: &Api,
        connection: &str,
    ) -> Result<bool, TransportError> {
        self.store
            .release_connection(connection, api.node_id())
            .await
    }

    /// The live node holding `connection`; `None` if no node holds it or its holder is gone.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn connection_holder(
        &self,
        connection: &str,
    ) -> Result<Option<NodeId>, TransportError> {
        let Some(holder) = self.store.connection_holder(connection).await? else {
            return Ok(None);
        };
        let live = self.nodes().await?;
        Ok(live
            .into_iter()
            .any(|node| node.id == holder)
            .then_some(holder))
    }

    async fn beat(&self, api: &Api) -> Result<(), TransportError> {
        let record = self.seal(&NodeInfo::of(api));
        self.store
            .heartbeat(api.node_id(), &record, api.config().heartbeat_ttl)
            .await
    }
}

async fn heartbeat_loop(membership: Membership, api: Api, mut known: BTreeSet<NodeId>) {
    let cancel = api.cancellation_token();
    let config = api.config();
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let beat = membership.beat(&api).await;
        match (&beat, healthy) {
            (Err(err), true) => {
                warn!(node_id = %api.node_id(), error = %err, "membership heartbeat failed")
            }
            (Ok(()), false) => info!(node_id = %api.node_id(), "membership heartbeat restored"),
            _ => {}
        }
        healthy = beat.is_ok();
        let Ok(live) = membership.nodes().await else {
            continue;
        };
        let live: BTreeSet<NodeId> = live.into_iter().map(|n| n.id).collect();
        for joined in live.difference(&known) {
            info!(node_id = %api.node_id(), member = %joined, "member {joined} has joined the cluster");
        }
        for left in known.difference(&live) {
            info!(node_id = %api.node_id(), member = %left, "member {left} has left the cluster");
        }
        known = live;
    }
    match membership.store.leave(api.node_id()).await {
        Ok(()) => info!(node_id = %api.node_id(), "left the cluster"),
        Err(err) => {
            warn!(node_id = %api.node_id(), error = %err, "could not remove the membership record; it expires by itself")
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

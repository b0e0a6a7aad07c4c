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
use tracing::{info, warn};

use crate::{RedisPool, TransportError, keys};

const HEARTBEAT_SCRIPT: &str = include_str!("../lua/heartbeat.lua");
const LIVE_NODES_SCRIPT: &str = include_str!("../lua/live_nodes.lua");
const LEAVE_SCRIPT: &str = include_str!("../lua/leave.lua");

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

/// Where membership records live: Redis for a cluster, memory for one process.
#[async_trait]
pub trait MembershipStore: fmt::Debug + Send + Sync + 'static {
    /// Creates or renews `node`'s record for `ttl`.
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), TransportError>;
    /// Removes `node`'s record now.
    async fn leave(&self, node: &NodeId) -> Result<(), TransportError>;
    /// Every node whose record has not expired, ordered by id.
    async fn live(&self) -> Result<Vec<NodeInfo>, TransportError>;
}

/// Membership records in this process's memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryMembershipStore {
    records: Arc<Mutex<HashMap<NodeId, (NodeInfo, Instant)>>>,
}

impl MemoryMembershipStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (NodeInfo, Instant)>> {
        // Each critical section is one map update: a poisoned lock is still consistent.
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl MembershipStore for MemoryMembershipStore {
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), TransportError> {
        let record = NodeInfo {
            last_seen_ms: now_ms(),
            ..node.clone()
        };
        self.records()
            .insert(node.id.clone(), (record, Instant::now() + ttl));
        Ok(())
    }

    async fn leave(&self, node: &NodeId) -> Result<(), TransportError> {
        self.records().remove(node);
        Ok(())
    }

    async fn live(&self) -> Result<Vec<NodeInfo>, TransportError> {
        let now = Instant::now();
        let mut records = self.records();
        records.retain(|_, (_, expires)| *expires > now);
        let mut live: Vec<NodeInfo> = records.values().map(|(info, _)| info.clone()).collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
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
}

impl RedisMembershipStore {
    /// A store on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            heartbeat: Arc::new(redis::Script::new(HEARTBEAT_SCRIPT)),
            live: Arc::new(redis::Script::new(LIVE_NODES_SCRIPT)),
            leave: Arc::new(redis::Script::new(LEAVE_SCRIPT)),
        }
    }
}

#[async_trait]
impl MembershipStore for RedisMembershipStore {
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), TransportError> {
        let info = serde_json::to_string(node).expect("NodeInfo serialises to JSON");
        let timeout = self.pool.config().op_timeout;
        self.pool
            .run("membership heartbeat", timeout, async |conn| {
                let mut call = self.heartbeat.key(keys::nodes());
                call.key(keys::node(&node.id))
                    .arg(node.id.as_str())
                    .arg(info)
                    .arg(ttl.as_millis() as u64);
                call.invoke_async::<u64>(conn).await.map(drop)
            })
            .await
    }

    async fn leave(&self, node: &NodeId) -> Result<(), TransportError> {
        let timeout = self.pool.config().op_timeout;
        self.pool
            .run("membership leave", timeout, async |conn| {
                let mut call = self.leave.key(keys::nodes());
                call.key(keys::node(node)).arg(node.as_str());
                call.invoke_async::<u64>(conn).await.map(drop)
            })
            .await
    }

    async fn live(&self) -> Result<Vec<NodeInfo>, TransportError> {
        let timeout = self.pool.config().op_timeout;
        let flat: Vec<String> = self
            .pool
            .run("membership list", timeout, async |conn| {
                self.live
                    .key(keys::nodes())
                    .arg(keys::node_prefix())
                    .invoke_async(conn)
                    .await
            })
            .await?;
        let mut live = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            // A record another client wrote in another shape is skipped, not fatal.
            let Ok(mut info) = serde_json::from_str::<NodeInfo>(&pair[0]) else {
                warn!("unreadable membership record skipped");
                continue;
            };
            info.last_seen_ms = pair[1].parse().unwrap_or(info.last_seen_ms);
            live.push(info);
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

/// A node's view of the cluster's members. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct Membership {
    store: Arc<dyn MembershipStore>,
}

impl Membership {
    /// Membership over `store`. Until [`Membership::join`], this node only reads.
    pub fn new(store: Arc<dyn MembershipStore>) -> Self {
        Self { store }
    }

    /// Every live node, ordered by id.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, TransportError> {
        self.store.live().await
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
        let ttl = api.config().heartbeat_ttl;
        self.store.heartbeat(&NodeInfo::of(api), ttl).await?;
        let known: BTreeSet<NodeId> = self.nodes().await?.into_iter().map(|n| n.id).collect();
        info!(node_id = %api.node_id(), members = known.len(), "joined the cluster");
        api.spawn(heartbeat_loop(self.store.clone(), api.clone(), known));
        Ok(())
    }
}

async fn heartbeat_loop(store: Arc<dyn MembershipStore>, api: Api, mut known: BTreeSet<NodeId>) {
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
        let beat = store
            .heartbeat(&NodeInfo::of(&api), config.heartbeat_ttl)
            .await;
        match (&beat, healthy) {
            (Err(err), true) => {
                warn!(node_id = %api.node_id(), error = %err, "membership heartbeat failed")
            }
            (Ok(()), false) => info!(node_id = %api.node_id(), "membership heartbeat restored"),
            _ => {}
        }
        healthy = beat.is_ok();
        let Ok(live) = store.live().await else {
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
    match store.leave(api.node_id()).await {
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

//! Live membership: each node keeps a signed record with a short TTL, renewed by a heartbeat,
//! and removes it on a graceful stop. One id is held by one run of a node at a time.

use std::{
    collections::BTreeSet,
    ops::ControlFlow,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared, WeakShared},
};
use serde::{Deserialize, Serialize};
use stellar_core::{Api, Config, NodeId, ServerToken, sync, time::now_ms};
use tracing::{debug, error, info, warn};

use crate::{
    Error, Result, TransportError,
    envelope::Sealer,
    membership_store::{Beat, Claim, MemberRecord, MembershipStore},
    membership_view::{Lookup, MemberView},
};

/// How far past its signed `last_seen_ms + ttl_ms` a record is still believed: covers the
/// error of a node's estimate of the store's clock. A record older than that is stale, whatever
/// the store says about its expiry (someone with write access to Redis can replay an old record
/// with a far-future score).
pub const RECORD_SKEW: Duration = Duration::from_secs(1);

/// How many heartbeat intervals the local view of the members is served after a read (see
/// [`Membership::recent_incarnation`]). A joined node's heartbeat reads the members about once
/// an interval, a little later each time than the read's start the view's age counts from:
/// with one interval, the view went old for a moment every cycle and sent callers to read.
/// What a read would add within two intervals, the view learns otherwise: runs announce
/// themselves and their stop, a node it does not list is read for, and a call that goes
/// unanswered makes its node's entry old.
const VIEW_AGE_INTERVALS: u32 = 2;

/// A read of the members that callers of [`Membership::recent_incarnation`] share: its result,
/// an error included, is each one's.
type SharedRead = Shared<BoxFuture<'static, ReadResult>>;

/// One live node, as `stellar cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Which run of the node this is ([`Api::incarnation`]): a restart, or a replacement under
    /// the same id, has a new one.
    pub incarnation: u64,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When its record was last renewed, in ms since the Unix epoch, on the store's clock as the
    /// node estimated it when signing.
    pub last_seen_ms: u64,
    /// How long the record lives past `last_seen_ms` without renewal.
    pub ttl_ms: u64,
    /// The Stellar version it runs.
    pub version: String,
    /// The incarnation this run took the id over from in a supervised handover
    /// ([`Membership::join_replacing`]); `None` for a run that joined a free id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
}

impl NodeInfo {
    /// The record of the node `api`, seen now (local clock), living `ttl` without renewal.
    pub(crate) fn of(api: &Api, ttl: Duration) -> Self {
        let started_at_ms = stellar_core::time::epoch_ms(api.started_at());
        Self {
            id: api.node_id().clone(),
            incarnation: api.incarnation(),
            host: stellar_core::hostname(),
            pid: std::process::id(),
            started_at_ms,
            last_seen_ms: now_ms(),
            ttl_ms: ttl.as_millis() as u64,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            replaces: None,
        }
    }
}

/// Settings of a [`Membership`]: the tokens records are signed and verified with, and the
/// heartbeat. A node builds them from its configuration with `MembershipSettings::from(&config)`.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// The token this node signs its record with.
    pub server_token: ServerToken,
    /// Older tokens whose records are still trusted while a cluster rolls to a new one.
    pub previous_tokens: Vec<ServerToken>,
    /// How often a joined node renews its record.
    pub heartbeat_interval: Duration,
    /// How long a record lives without renewal: a node that dies unannounced drops out of the
    /// cluster after this long.
    pub heartbeat_ttl: Duration,
}

impl MembershipSettings {
    /// The default heartbeat (every second, records live 5 s), signing with `server_token`.
    pub fn new(server_token: ServerToken) -> Self {
        let defaults = Config::default();
        Self {
            server_token,
            previous_tokens: Vec::new(),
            heartbeat_interval: defaults.heartbeat_interval,
            heartbeat_ttl: defaults.heartbeat_ttl,
        }
    }
}

impl From<&Config> for MembershipSettings {
    /// The tokens and heartbeat of `config`.
    fn from(config: &Config) -> Self {
        Self {
            server_token: config.server_token.clone(),
            previous_tokens: config.previous_server_token.iter().cloned().collect(),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_ttl: config.heartbeat_ttl,
        }
    }
}

/// Counters of the membership records [`Membership::nodes`] refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipStats {
    /// Records that did not verify with an accepted token, or name another node than their key.
    pub bad_signature: u64,
    /// Verified records whose signed `last_seen_ms + ttl_ms` is more than [`RECORD_SKEW`] in
    /// the past on the store's clock: old records replayed into the store.
    pub stale: u64,
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
/// write to the same Redis, but never shows up as a member, and `nodes()` skips its records, as
/// it skips records whose signed freshness has run out (see [`RECORD_SKEW`]).
///
/// One id is held by one run of a node at a time: [`Membership::join`] refuses an id that a
/// live, verified record of another incarnation holds ([`Error::DuplicateNode`]), and
/// [`Membership::join_replacing`] is the supervised exception. A run whose record another run
/// took over in a supervised handover (the new record names this run in
/// [`NodeInfo::replaces`], or this run named the new holder) stops writing its record but keeps
/// watching the id: once the id is free again (the other run left, died or expired) it writes its
/// record again, so a failed handover never leaves a live run unlisted. A run taken over
/// *without* such a handover (another process started under the same id after this run's record
/// was deleted or expired, e.g. a stall past the TTL) logs an error and stops its node
/// ([`Api::stop`]): two live runs never share an id unnoticed. Its leave, like every leave,
/// leaves the other run's record alone.
///
/// Every read of the members ([`Membership::nodes`]) also refreshes a local view of which run
/// holds each node's record, which [`Membership::recent_incarnation`] serves while it is younger
/// than two heartbeat intervals: a joined node's heartbeat reads the members every interval, so
/// the hot path of RPC needs no read of its own. Runs that announce themselves or their stop on
/// the bus (RPC does, see `stellar-rpc`) correct the view at once
/// ([`Membership::note_incarnation`], [`Membership::note_stopped`]), and a caller that got no
/// reply from a run makes the view read again for its node ([`Membership::note_unanswered`]).
///
/// Records [`Membership::nodes`] finds stale, or that are not records at all, are removed from
/// the store (compare-and-delete, so a record renewed meanwhile stays). Records that are well
/// formed but signed with a token this node does not accept are left alone: they may belong to
/// nodes running with a rotated token.
#[derive(Debug, Clone)]
pub struct Membership {
    store: Arc<dyn MembershipStore>,
    sealer: Sealer,
    heartbeat_interval: Duration,
    heartbeat_ttl: Duration,
    /// This run of the node ([`Api::incarnation`]).
    incarnation: u64,
    /// The incarnation this run took the id over from ([`Membership::join_replacing`]); 0 for
    /// none (an incarnation is never 0).
    replaces: Arc<AtomicU64>,
    /// The store's clock minus the local clock, in ms, as last seen: records are signed on the
    /// store's clock, so node clocks that disagree do not make live records look stale.
    clock_offset_ms: Arc<AtomicI64>,
    stats: Arc<Counters>,
    /// Whether this run joined (its record was written at least once).
    joined: Arc<AtomicBool>,
    /// The members as last read and corrected since, shared by every clone.
    view: Arc<MemberView>,
    /// The read [`Membership::recent_incarnation`] has in flight, which callers that need a
    /// read join rather than queue behind: when the store is down or slow, each fails after one
    /// read's wait, not after one per caller ahead of it. Weak, so the read ends (dropped) once
    /// no caller waits for it.
    reading: Arc<std::sync::Mutex<Option<WeakShared<BoxFuture<'static, ReadResult>>>>>,
}

type ReadResult = Result<(), Arc<TransportError>>;

#[derive(Debug, Default)]
struct Counters {
    bad_signature: AtomicU64,
    stale: AtomicU64,
}

const RECORD_CONTEXT: &str = "stellar membership record v2";

/// What a record verified as.
enum Opened {
    Valid(NodeInfo),
    BadSignature,
    Stale,
}

impl Membership {
    /// Membership of the node `api` over `store`, trusting records signed with the tokens of
    /// `settings`. Until [`Membership::join`], this node only reads.
    pub fn new(store: Arc<dyn MembershipStore>, api: &Api, settings: MembershipSettings) -> Self {
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        api.metrics().snapshot(move |out| {
            let help = "Membership records this node refused when reading the members, by reason";
            for (reason, counter) in [
                ("bad_signature", &counters.bad_signature),
                ("stale", &counters.stale),
            ] {
                let value = counter.load(Ordering::Relaxed);
                out.counter(
                    "stellar_membership_records_refused",
                    help,
                    &[("reason", reason)],
                    value,
                );
            }
        });
        Self {
            store,
            sealer: Sealer::new(&settings.server_token, &settings.previous_tokens),
            heartbeat_interval: settings.heartbeat_interval,
            heartbeat_ttl: settings.heartbeat_ttl,
            incarnation: api.incarnation(),
            replaces: Arc::new(AtomicU64::new(0)),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
            stats,
            joined: Arc::new(AtomicBool::new(false)),
            view: Arc::new(MemberView::new(settings.heartbeat_ttl + RECORD_SKEW)),
            reading: Arc::default(),
        }
    }

    /// Whether this run joined the cluster ([`Membership::join`] or
    /// [`Membership::join_replacing`] succeeded), whether or not it still holds its record.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// This run of the node ([`Api::incarnation`]): what its record carries, and what a
    /// replacement passes to [`Membership::join_replacing`].
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The records [`Membership::nodes`] refused so far.
    pub fn stats(&self) -> MembershipStats {
        MembershipStats {
            bad_signature: self.stats.bad_signature.load(Ordering::Relaxed),
            stale: self.stats.stale.load(Ordering::Relaxed),
        }
    }

    /// Every live node with a valid, fresh record, ordered by id. Refreshes the local view of
    /// the members (see [`Membership::recent_incarnation`]).
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, TransportError> {
        let read_at = tokio::time::Instant::now();
        let live = self.store.live().await?;
        self.observe_store_clock(live.now_ms);
        let mut doomed: Vec<&MemberRecord> = Vec::new();
        let mut nodes: Vec<NodeInfo> = live
            .records
            .iter()
            .filter_map(|stored| match self.open(stored, live.now_ms) {
                Opened::Valid(info) => Some(info),
                Opened::BadSignature => {
                    self.stats.bad_signature.fetch_add(1, Ordering::Relaxed);
                    debug!(member = %stored.id, "membership record with a bad signature skipped");
                    // Not a record at all: nobody can ever verify it.
                    if serde_json::from_str::<SignedRecord>(&stored.record).is_err() {
                        doomed.push(stored);
                    }
                    None
                }
                Opened::Stale => {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    debug!(member = %stored.id, "stale membership record skipped");
                    doomed.push(stored);
                    None
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        self.view.refresh(read_at, &nodes);
        for stored in doomed {
            // Compare-and-delete: a record renewed since it was read is left alone. A failure
            // only means the record is skipped again next time.
            match self.store.remove_if(&stored.id, &stored.record).await {
                Ok(true) => {
                    info!(member = %stored.id, "removed a stale or unreadable membership record")
                }
                Ok(false) => {}
                Err(err) => {
                    debug!(member = %stored.id, error = %err, "could not remove a stale membership record")
                }
            }
        }
        Ok(nodes)
    }

    /// The run holding the record of the live node `node` (its incarnation), from the local
    /// view while it is younger than two heartbeat intervals: no read of the store. A node the
    /// view does not list is looked up with a read (it may have joined since), so `None` always
    /// comes from a read, as does the answer for a node whose last call went unanswered
    /// ([`Membership::note_unanswered`]). An older view is read again first. Callers that need a
    /// read while one is in flight join it and share its result, a failure included.
    ///
    /// The view lags the store by up to two heartbeat intervals, less where runs announce
    /// themselves and their stop ([`Membership::note_incarnation`],
    /// [`Membership::note_stopped`]): a run that died unannounced may still be listed.
    ///
    /// # Errors
    ///
    /// Fails if a read is needed and the store cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves the view as it was, or refreshed; a read nobody waits
    /// for any more is dropped.
    pub async fn recent_incarnation(&self, node: &NodeId) -> Result<Option<u64>, TransportError> {
        let max_age = self.heartbeat_interval * VIEW_AGE_INTERVALS;
        match self.view.lookup(node, max_age) {
            Lookup::Listed(incarnation) => Ok(Some(incarnation)),
            // An old view is read again; a node it does not list may have joined since.
            Lookup::Old | Lookup::Unlisted => {
                self.read_shared().await?;
                Ok(self.view.incarnation(node))
            }
        }
    }

    /// Reads the members, or joins the read another caller has in flight.
    async fn read_shared(&self) -> Result<(), TransportError> {
        let read = {
            // Never held across an await: one look at the slot and maybe one store.
            let mut reading = sync::lock(&self.reading);
            let in_flight = reading
                .as_ref()
                .and_then(WeakShared::upgrade)
                .filter(|read| read.peek().is_none());
            match in_flight {
                Some(read) => read,
                None => {
                    let read = self.start_read();
                    *reading = read.downgrade();
                    read
                }
            }
        };
        read.await.map_err(|err| TransportError::shared(&err))
    }

    fn start_read(&self) -> SharedRead {
        let membership = self.clone();
        async move { membership.nodes().await.map(|_| ()).map_err(Arc::new) }
            .boxed()
            .shared()
    }

    /// The run of `node` the local view lists, however old the view: no read.
    pub fn known_incarnation(&self, node: &NodeId) -> Option<u64> {
        self.view.incarnation(node)
    }

    /// Tells the local view that the run `incarnation` of `node` holds the node's record (it
    /// said so itself, in a message authenticated as coming from that run): the view lists it
    /// in place of the run it listed until a later read says otherwise. Never adds a node the
    /// view does not list, and never lists a run that said it stopped.
    pub fn note_incarnation(&self, node: &NodeId, incarnation: u64) {
        self.view.note_incarnation(node, incarnation);
    }

    /// Tells the local view that the run `incarnation` of `node` stopped (it said so itself):
    /// the view drops it if it lists that run, and leaves its record out of every read until it
    /// would have expired.
    pub fn note_stopped(&self, node: &NodeId, incarnation: u64) {
        self.view.note_stopped(node, incarnation);
    }

    /// Tells the local view that a call to the run `incarnation` of `node` went unanswered (the
    /// run may be dead, or another run may hold the node's record since an announcement this
    /// view missed): if the view still lists that run, the next
    /// [`Membership::recent_incarnation`] for `node` reads the store first.
    pub fn note_unanswered(&self, node: &NodeId, incarnation: u64) {
        self.view.note_unanswered(node, incarnation);
    }

    /// Every node the local view lists, however old the view, ordered by id: no read. What a
    /// caller falls back on when a read of the members fails.
    pub fn known_nodes(&self) -> Vec<NodeId> {
        self.view.nodes()
    }

    fn seal(&self, info: &NodeInfo) -> String {
        let json = serde_json::to_vec(info).expect("NodeInfo serialises to JSON");
        let tag = self.sealer.sign_bytes(RECORD_CONTEXT, &json);
        let tag = crate::signer::hex(&tag);
        serde_json::to_string(&SignedRecord {
            info: info.clone(),
            tag,
        })
        .expect("records serialise to JSON")
    }

    /// The record's info if its tag verifies, it names the node it is stored under, and its
    /// signed freshness has not run out at `now_ms` (the store's clock).
    fn open(&self, stored: &MemberRecord, now_ms: u64) -> Opened {
        let Some(info) = self.verify(stored) else {
            return Opened::BadSignature;
        };
        let skew = RECORD_SKEW.as_millis() as u64;
        let fresh_until = info
            .last_seen_ms
            .saturating_add(info.ttl_ms)
            .saturating_add(skew);
        if now_ms > fresh_until {
            return Opened::Stale;
        }
        Opened::Valid(info)
    }

    fn verify(&self, stored: &MemberRecord) -> Option<NodeInfo> {
        let record: SignedRecord = serde_json::from_str(&stored.record).ok()?;
        let tag = crate::signer::unhex(&record.tag)?;
        let json = serde_json::to_vec(&record.info).ok()?;
        let valid =
            self.sealer.verify_bytes(RECORD_CONTEXT, &json, &tag) && record.info.id == stored.id;
        valid.then_some(record.info)
    }

    /// Registers the node `api` and keeps its record alive (every `heartbeat_interval`, for
    /// `heartbeat_ttl`) until the node stops, then removes it. Logs every member that joins or
    /// leaves, as every node sees it.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateNode`] if another live run of a node holds this id (a verified, fresh
    /// record of another incarnation); [`Error::Membership`] if the first heartbeat cannot be
    /// written: a node does not claim to be up when the others cannot see it.
    pub async fn join(&self, api: &Api) -> Result<()> {
        self.join_with(api, Claim::Own).await
    }

    /// As [`Membership::join`], but also takes over the id from the run `old_incarnation`
    /// while it is still live: the supervised handover of a rolling restart, where the
    /// replacement starts under the old worker's id before the old worker stops. The old run
    /// then finds its record taken over, logs a warning and stops heartbeating, and its leave
    /// does not remove the new record. A record of any other incarnation is still refused.
    ///
    /// # Errors
    ///
    /// As [`Membership::join`].
    pub async fn join_replacing(&self, api: &Api, old_incarnation: u64) -> Result<()> {
        self.join_with(api, Claim::Replacing(old_incarnation)).await
    }

    async fn join_with(&self, api: &Api, claim: Claim) -> Result<()> {
        // Learn the store's clock first, so the very first record is signed on it.
        let known: BTreeSet<NodeId> = self
            .nodes()
            .await
            .map_err(Error::Membership)?
            .into_iter()
            .map(|n| n.id)
            .collect();
        if let Claim::Replacing(old) = claim {
            self.replaces.store(old, Ordering::Relaxed);
        }
        if let BeatResult::TakenOver { incarnation, .. } = self.beat(api, claim).await? {
            self.replaces.store(0, Ordering::Relaxed);
            return Err(Error::DuplicateNode {
                id: api.node_id().clone(),
                incarnation,
            });
        }
        if let Claim::Replacing(old) = claim {
            info!(node_id = %api.node_id(), replaced = old, "took over the id from an earlier run");
        }
        self.joined.store(true, Ordering::Relaxed);
        info!(node_id = %api.node_id(), incarnation = self.incarnation, members = known.len(), "joined the cluster");
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

    /// Forgets every connection recorded for this node id: call it at start-up, before serving
    /// any, so entries left by a run that died (SIGKILL) do not outlive it. How many.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn forget_connections(&self, api: &Api) -> Result<u64, TransportError> {
        self.store.forget_connections(api.node_id()).await
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

    /// Writes this run's record, as `claim` allows. A holder whose record does not verify or
    /// is stale is no live run: its record is overwritten.
    async fn beat(&self, api: &Api, claim: Claim) -> Result<BeatResult> {
        for claim in [claim, Claim::Force] {
            let record = self.seal(&self.info(api));
            let beat = self
                .store
                .heartbeat(
                    api.node_id(),
                    self.incarnation,
                    &record,
                    self.heartbeat_ttl,
                    claim,
                )
                .await
                .map_err(Error::Membership)?;
            let (now_ms, record) = match beat {
                Beat::Written { now_ms } => {
                    self.observe_store_clock(now_ms);
                    return Ok(BeatResult::Written);
                }
                Beat::Held { now_ms, record, .. } => (now_ms, record),
            };
            let stored = MemberRecord {
                id: api.node_id().clone(),
                record,
                last_seen_ms: now_ms,
            };
            if let Some(taken_over) = self.held_by_another_run(api, claim, &stored, now_ms) {
                return Ok(taken_over);
            }
        }
        Err(Error::Membership(TransportError::Backend {
            op: "membership heartbeat",
            source: "the store refused a forced heartbeat".into(),
        }))
    }

    /// Whether the record `stored` (found holding this id when a heartbeat did not write)
    /// belongs to another live run this run must not overwrite: `Some` with what that means,
    /// `None` (logged) when the next, forced, heartbeat may overwrite it.
    fn held_by_another_run(
        &self,
        api: &Api,
        claim: Claim,
        stored: &MemberRecord,
        now_ms: u64,
    ) -> Option<BeatResult> {
        let node_id = api.node_id();
        match self.open(stored, now_ms) {
            Opened::Valid(holder) if claim_allows(claim, self.incarnation, &holder) => {
                warn!(%node_id, "the membership record of this id does not match its holder; overwriting it");
            }
            Opened::Valid(holder) if is_gone(&holder) => {
                info!(%node_id, pid = holder.pid, incarnation = holder.incarnation, "the earlier run of this id is gone; taking over its record before it expires");
            }
            Opened::Valid(holder) => {
                let handover = holder.replaces == Some(self.incarnation)
                    || self.replaced() == Some(holder.incarnation);
                return Some(BeatResult::TakenOver {
                    incarnation: holder.incarnation,
                    handover,
                });
            }
            Opened::BadSignature | Opened::Stale => {
                warn!(%node_id, "the membership record of this id does not verify or is stale; overwriting it");
            }
        }
        None
    }

    /// The incarnation this run took the id over from, if it joined with
    /// [`Membership::join_replacing`].
    fn replaced(&self) -> Option<u64> {
        Some(self.replaces.load(Ordering::Relaxed)).filter(|old| *old != 0)
    }

    /// This run's info, its `last_seen_ms` on the store's clock as last observed.
    fn info(&self, api: &Api) -> NodeInfo {
        let mut info = NodeInfo::of(api, self.heartbeat_ttl);
        info.replaces = self.replaced();
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        info.last_seen_ms = info.last_seen_ms.saturating_add_signed(offset);
        info
    }

    fn observe_store_clock(&self, store_now_ms: u64) {
        let offset = store_now_ms as i64 - now_ms() as i64;
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
    }
}

/// Whether `claim` lets this run overwrite the record of `holder`.
fn claim_allows(claim: Claim, incarnation: u64, holder: &NodeInfo) -> bool {
    match claim {
        Claim::Force => true,
        Claim::Own => holder.incarnation == incarnation,
        Claim::Replacing(old) => holder.incarnation == incarnation || holder.incarnation == old,
    }
}

/// Whether the run `holder` is known to be dead: it ran on this host under a pid that no longer
/// exists (Linux `/proc`), as after a crash whose record has not expired yet, so a restart under
/// the same id (the supervisor's, or by hand) need not wait out the TTL. Elsewhere, or for
/// another host, nothing is known and the holder counts as live.
fn is_gone(holder: &NodeInfo) -> bool {
    cfg!(target_os = "linux")
        && holder.pid != std::process::id()
        && holder.host == stellar_core::hostname()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new("/proc")
            .join(holder.pid.to_string())
            .exists()
}

/// What writing this run's record came to.
enum BeatResult {
    Written,
    /// A live, verified run of another incarnation holds the id.
    TakenOver {
        incarnation: u64,
        /// The holder and this run are the two sides of a supervised handover: the holder's
        /// record names this run as the one it replaces, or this run replaced the holder.
        handover: bool,
    },
}

/// Renews this run's record every heartbeat interval until the node stops, logs the members
/// that come and go, then removes the record.
async fn heartbeat_loop(membership: Membership, api: Api, known: BTreeSet<NodeId>) {
    let cancel = api.cancellation_token();
    let mut tick = tokio::time::interval(membership.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = HeartbeatState {
        healthy: true,
        taken_over: None,
        known,
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let beat = membership.beat(&api, Claim::Own).await;
        if state.record(&membership, &api, beat).is_break() {
            break;
        }
        state.watch_members(&membership, &api).await;
    }
    membership.leave(&api).await;
}

/// What the heartbeat loop remembers between beats.
struct HeartbeatState {
    /// Whether the last heartbeat was written (failures are logged when they start and end).
    healthy: bool,
    /// The run holding this id after a supervised handover, while it does.
    taken_over: Option<u64>,
    /// The members seen at the last beat.
    known: BTreeSet<NodeId>,
}

impl HeartbeatState {
    /// Logs what one heartbeat came to; `Break` when this run must stop (its id was taken
    /// over without a handover), after asking the node to stop.
    fn record(
        &mut self,
        membership: &Membership,
        api: &Api,
        beat: Result<BeatResult>,
    ) -> ControlFlow<()> {
        let (node_id, incarnation) = (api.node_id(), membership.incarnation);
        match beat {
            Ok(BeatResult::TakenOver {
                incarnation: holder,
                handover: false,
            }) => {
                error!(%node_id, incarnation, taken_over_by = holder, "another run of this node holds its id without a supervised handover naming this run (a second process started under the same id, or this run stalled past its heartbeat TTL and lost its record); stopping this run so two live runs never share an id");
                api.stop();
                return ControlFlow::Break(());
            }
            Ok(BeatResult::TakenOver {
                incarnation: holder,
                handover: true,
            }) => {
                if self.taken_over != Some(holder) {
                    warn!(%node_id, incarnation, taken_over_by = holder, "another run of this node took over its id (supervised handover); this run stops writing its record and takes it back if the id becomes free");
                    self.taken_over = Some(holder);
                }
            }
            Ok(BeatResult::Written) => {
                if let Some(other) = self.taken_over.take() {
                    info!(%node_id, incarnation, other, "the run that took over this id left or is gone; this run holds the id again");
                }
            }
            Err(err) if self.healthy => {
                warn!(%node_id, error = %err, "membership heartbeat failed");
                self.healthy = false;
                return ControlFlow::Continue(());
            }
            Err(err) => {
                debug!(%node_id, error = %err, "membership heartbeat failed again");
                return ControlFlow::Continue(());
            }
        }
        if !self.healthy {
            info!(%node_id, "membership heartbeat restored");
            self.healthy = true;
        }
        ControlFlow::Continue(())
    }

    /// Lists the live members and logs each that joined or left since the last beat.
    async fn watch_members(&mut self, membership: &Membership, api: &Api) {
        let node_id = api.node_id();
        let live: BTreeSet<NodeId> = match membership.nodes().await {
            Ok(live) => live.into_iter().map(|n| n.id).collect(),
            Err(err) => {
                debug!(%node_id, error = %err, "could not list the cluster's members");
                return;
            }
        };
        for joined in live.difference(&self.known) {
            info!(%node_id, member = %joined, "member {joined} has joined the cluster");
        }
        for left in self.known.difference(&live) {
            info!(%node_id, member = %left, "member {left} has left the cluster");
        }
        self.known = live;
    }
}

impl Membership {
    /// Removes this run's record at the end of its heartbeat, unless another run holds it.
    async fn leave(&self, api: &Api) {
        let node_id = api.node_id();
        match self.store.leave(node_id, self.incarnation).await {
            Ok(true) => info!(%node_id, "left the cluster"),
            Ok(false) => {
                info!(%node_id, "left the cluster; another run of this node holds its record, left in place")
            }
            Err(err) => {
                warn!(%node_id, error = %err, "could not remove the membership record; it expires by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryMembershipStore;

    fn api(id: &str) -> Api {
        Api::new(Config {
            id: Some(NodeId::new(id).expect("valid id")),
            server_token: ServerToken::new("t"),
            heartbeat_interval: Duration::from_secs(60),
            heartbeat_ttl: Duration::from_secs(60),
            ..Config::default()
        })
    }

    fn settings(api: &Api) -> MembershipSettings {
        MembershipSettings::from(api.config())
    }

    /// Puts a live, validly signed record of a run of `id` with `pid` in `store`.
    async fn record_of_run(store: &Arc<dyn MembershipStore>, id: &str, pid: u32) -> u64 {
        let earlier = api(id);
        let membership = Membership::new(store.clone(), &earlier, settings(&earlier));
        let mut info = NodeInfo::of(&earlier, Duration::from_secs(60));
        info.pid = pid;
        let record = membership.seal(&info);
        let ttl = Duration::from_secs(60);
        store
            .heartbeat(
                earlier.node_id(),
                earlier.incarnation(),
                &record,
                ttl,
                Claim::Own,
            )
            .await
            .expect("write");
        earlier.incarnation()
    }

    #[tokio::test]
    async fn recent_incarnation_serves_the_view_and_reads_for_a_node_it_does_not_list() {
        let store: Arc<dyn MembershipStore> = Arc::new(MemoryMembershipStore::new());
        let client = api("client");
        let view = Membership::new(store.clone(), &client, settings(&client));
        let join = async |id: &str| {
            let member = api(id);
            Membership::new(store.clone(), &member, settings(&member))
                .join(&member)
                .await
                .expect("join");
            member
        };
        let (a, a_id) = (join("a").await, NodeId::new("a").expect("valid id"));
        let recent = view.recent_incarnation(&a_id).await.expect("read");
        assert_eq!(recent, Some(a.incarnation()), "a view never read is read");
        let b = join("b").await;
        let recent = view.recent_incarnation(b.node_id()).await.expect("read");
        assert_eq!(
            recent,
            Some(b.incarnation()),
            "a node the view lacks is read"
        );
        a.shutdown().await.expect("a leaves");
        let recent = view.recent_incarnation(&a_id).await.expect("view");
        assert_eq!(
            recent,
            Some(a.incarnation()),
            "served from the view, not read"
        );
        view.nodes().await.expect("read");
        assert_eq!(view.recent_incarnation(&a_id).await.expect("read"), None);
        assert_eq!(view.known_incarnation(b.node_id()), Some(b.incarnation()));
        b.shutdown().await.expect("b leaves");
    }

    /// A store whose reads of the members take `delay`, then fail while it is down; counts them.
    #[derive(Debug)]
    struct SlowStore {
        inner: MemoryMembershipStore,
        delay: Duration,
        down: AtomicBool,
        reads: AtomicU64,
    }

    impl SlowStore {
        fn reads(&self) -> u64 {
            self.reads.load(Ordering::Relaxed)
        }
    }

    #[async_trait::async_trait]
    impl MembershipStore for SlowStore {
        async fn heartbeat(
            &self,
            node: &NodeId,
            incarnation: u64,
            record: &str,
            ttl: Duration,
            claim: Claim,
        ) -> Result<Beat, TransportError> {
            let inner = &self.inner;
            inner.heartbeat(node, incarnation, record, ttl, claim).await
        }
        async fn leave(&self, node: &NodeId, incarnation: u64) -> Result<bool, TransportError> {
            self.inner.leave(node, incarnation).await
        }
        async fn remove_if(&self, node: &NodeId, record: &str) -> Result<bool, TransportError> {
            self.inner.remove_if(node, record).await
        }
        async fn live(&self) -> Result<crate::LiveRecords, TransportError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.delay).await;
            if self.down.load(Ordering::Relaxed) {
                return Err(TransportError::Timeout {
                    op: "test read",
                    after: self.delay,
                });
            }
            self.inner.live().await
        }
        async fn hold_connection(
            &self,
            connection: &str,
            node: &NodeId,
        ) -> Result<(), TransportError> {
            self.inner.hold_connection(connection, node).await
        }
        async fn release_connection(
            &self,
            connection: &str,
            node: &NodeId,
        ) -> Result<bool, TransportError> {
            self.inner.release_connection(connection, node).await
        }
        async fn connection_holder(
            &self,
            connection: &str,
        ) -> Result<Option<NodeId>, TransportError> {
            self.inner.connection_holder(connection).await
        }
        async fn forget_connections(&self, node: &NodeId) -> Result<u64, TransportError> {
            self.inner.forget_connections(node).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn callers_that_need_a_read_share_one_and_its_failure() {
        let store = Arc::new(SlowStore {
            inner: MemoryMembershipStore::new(),
            delay: Duration::from_secs(3),
            down: AtomicBool::new(true),
            reads: AtomicU64::new(0),
        });
        let client = api("client");
        let membership = Membership::new(store.clone(), &client, settings(&client));
        let a = NodeId::new("a").expect("valid id");
        let calls = (0..10).map(|_| membership.recent_incarnation(&a));
        let results = futures_util::future::join_all(calls).await;
        for result in &results {
            assert!(
                matches!(
                    result,
                    Err(TransportError::Timeout {
                        op: "test read",
                        ..
                    })
                ),
                "{result:?}"
            );
        }
        assert_eq!(store.reads(), 1, "the callers read one after another");
        // A caller that gives up leaves the read to those still waiting.
        let caller = || {
            let (membership, a) = (membership.clone(), a.clone());
            tokio::spawn(async move { membership.recent_incarnation(&a).await })
        };
        let first = caller();
        tokio::task::yield_now().await;
        let second = caller();
        tokio::task::yield_now().await;
        first.abort();
        assert!(second.await.expect("not aborted").is_err());
        assert_eq!(
            store.reads(),
            2,
            "a failure is not remembered, nor a read restarted"
        );
        // The store is back: the next read answers.
        store.down.store(false, Ordering::Relaxed);
        assert_eq!(membership.recent_incarnation(&a).await.expect("read"), None);
        assert_eq!(store.reads(), 3);
    }

    #[tokio::test]
    async fn a_crashed_run_on_this_host_does_not_hold_its_id() {
        let store: Arc<dyn MembershipStore> = Arc::new(MemoryMembershipStore::new());
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead_pid = child.id();
        child.wait().expect("reap");
        record_of_run(&store, "crashed", dead_pid).await;
        let restarted = api("crashed");
        let membership = Membership::new(store.clone(), &restarted, settings(&restarted));
        membership
            .join(&restarted)
            .await
            .expect("a restart takes over the crashed run's record");
        let nodes = membership.nodes().await.expect("list");
        assert_eq!(nodes[0].incarnation, restarted.incarnation());
        // A live pid on this host (this test's) still holds its id.
        let holder = record_of_run(&store, "alive", std::process::id()).await;
        let second = api("alive");
        let refused = Membership::new(store.clone(), &second, settings(&second))
            .join(&second)
            .await;
        assert!(
            matches!(refused, Err(Error::DuplicateNode { incarnation, .. }) if incarnation == holder),
            "{refused:?}"
        );
    }
}

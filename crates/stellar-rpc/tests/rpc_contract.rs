//! `do_cluster` on both backends: three nodes in one process, on memory or on a real Redis.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use stellar_bus::{
    Beat, Bus, BusSettings, Claim, LiveRecords, Membership, MembershipSettings, MembershipStore,
    MemoryMembershipStore, MemoryTransport, RedisConfig, RedisMembershipStore, RedisPool,
    RedisTransport, Transport, TransportError,
};
use stellar_core::{Api, CancellationToken, Config, NodeId, ServerToken};
use stellar_rpc::{Error, RemoteError, Rpc, RpcSettings, Target, Wait, builtins::NodeStatus};
use stellar_testkit::{BackendKind, eventually};

/// One cluster's shared backend.
struct Cluster {
    kind: BackendKind,
    /// What memory nodes share.
    transport: MemoryTransport,
    store: MemoryMembershipStore,
    /// Stops the Redis subscriber tasks when the case ends.
    cancel: CancellationToken,
}

impl From<BackendKind> for Cluster {
    fn from(kind: BackendKind) -> Self {
        Self {
            kind,
            transport: MemoryTransport::new(),
            store: MemoryMembershipStore::new(),
            cancel: CancellationToken::new(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Cluster {
    async fn backend(&self) -> (Arc<dyn Transport>, Arc<dyn MembershipStore>) {
        let Some(url) = self.kind.url() else {
            return (
                Arc::new(self.transport.clone()),
                Arc::new(self.store.clone()),
            );
        };
        let pool = RedisPool::connect(RedisConfig::new(url))
            .await
            .expect("redis");
        let transport = RedisTransport::connect(pool.clone(), self.cancel.clone())
            .await
            .expect("subscriber");
        (
            Arc::new(transport),
            Arc::new(RedisMembershipStore::new(pool)),
        )
    }

    /// A node that joined the cluster and serves calls.
    async fn node(&self, id: &str) -> (Api, Rpc) {
        let (transport, store) = self.backend().await;
        self.node_on(id, transport, store).await
    }

    /// A node that joined the cluster and serves calls, its records in `store`.
    async fn node_on(
        &self,
        id: &str,
        transport: Arc<dyn Transport>,
        store: Arc<dyn MembershipStore>,
    ) -> (Api, Rpc) {
        let api = Api::new(node_config(id));
        let bus = Bus::start(&api, transport, BusSettings::from(api.config()))
            .await
            .expect("bus");
        let membership = Membership::new(store, &api, MembershipSettings::from(api.config()));
        membership.join(&api).await.expect("join");
        let rpc = Rpc::new(bus, membership, RpcSettings::from(api.config()));
        rpc.serve();
        rpc.register("test.echo", |ctx, args: Value| async move {
            Ok(json!({ "from": ctx.api.node_id(), "args": args }))
        });
        rpc.register("test.fail", |_, _: Value| async move {
            Err::<Value, _>("it broke".into())
        });
        rpc.register("test.add", |_, (a, b): (i64, i64)| async move { Ok(a + b) });
        (api, rpc)
    }

    /// The supervised replacement of the run `old`: a run of the same id that takes the id over
    /// with `join_replacing` while `old` still runs and listens, then serves.
    async fn replacement(&self, old: &Api) -> (Api, Rpc) {
        let api = Api::new(old.config().clone());
        let (transport, store) = self.backend().await;
        let bus = Bus::start(&api, transport, BusSettings::from(api.config()))
            .await
            .expect("bus");
        let membership = Membership::new(store, &api, MembershipSettings::from(api.config()));
        membership
            .join_replacing(&api, old.incarnation())
            .await
            .expect("handover");
        let rpc = Rpc::new(bus, membership, RpcSettings::from(api.config()));
        rpc.serve();
        (api, rpc)
    }

    /// As [`Cluster::replacement`], but the replacement serves unannounced, as if every
    /// caller had missed its announcement (pub/sub is at most once).
    async fn unannounced_replacement(&self, old: &Api) -> (Api, Rpc) {
        let api = Api::new(old.config().clone());
        let (transport, store) = self.backend().await;
        let bus = Bus::start(&api, transport, BusSettings::from(api.config()))
            .await
            .expect("bus");
        let settings = MembershipSettings::from(api.config());
        Membership::new(store.clone(), &api, settings.clone())
            .join_replacing(&api, old.incarnation())
            .await
            .expect("handover");
        // A membership that did not join: `serve` announces nothing.
        let rpc = Rpc::new(
            bus,
            Membership::new(store, &api, settings),
            RpcSettings::from(api.config()),
        );
        rpc.serve();
        (api, rpc)
    }

    /// A run of the node `id` that holds its membership record but is not on the bus: it
    /// answers no call, as a run that died.
    async fn silent_member(&self, id: &str) -> Api {
        let api = Api::new(node_config(id));
        let (_, store) = self.backend().await;
        Membership::new(store, &api, MembershipSettings::from(api.config()))
            .join(&api)
            .await
            .expect("join");
        api
    }

    /// A caller that never joins (as a CLI client), whose view of the members stays recent for
    /// minutes once read: meanwhile, only what runs announce (and calls left unanswered)
    /// changes it.
    async fn client(&self, id: &str) -> (Api, Rpc) {
        let (transport, store) = self.backend().await;
        self.client_on(id, transport, store).await
    }

    /// A client whose membership reads `store`.
    async fn client_on(
        &self,
        id: &str,
        transport: Arc<dyn Transport>,
        store: Arc<dyn MembershipStore>,
    ) -> (Api, Rpc) {
        let api = Api::new(Config {
            id: Some(NodeId::new(id).expect("valid id")),
            server_token: ServerToken::new("t"),
            rpc_timeout: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_secs(60),
            ..Config::default()
        });
        let bus = Bus::start(&api, transport, BusSettings::from(api.config()))
            .await
            .expect("bus");
        let membership = Membership::new(store, &api, MembershipSettings::from(api.config()));
        let rpc = Rpc::new(bus, membership, RpcSettings::from(api.config()));
        (api, rpc)
    }

    async fn three(&self) -> Vec<(Api, Rpc)> {
        vec![
            self.node("n1").await,
            self.node("n2").await,
            self.node("n3").await,
        ]
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid id")
}

/// The configuration of a test node: fast heartbeat, short timeouts.
fn node_config(id: &str) -> Config {
    Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new("t"),
        rpc_timeout: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_ttl: Duration::from_millis(1000),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// How a [`FaultyStore`] answers reads of the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Pass,
    /// Fail at once, as a store that refuses connections.
    Fail,
    /// Never answer, as a store that hangs (without the pool's timeout).
    Hang,
}

/// A membership store whose reads of the members ([`MembershipStore::live`]) fail or hang on
/// demand; everything else passes through.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn MembershipStore>,
    reads: Mutex<Reads>,
}

impl FaultyStore {
    fn new(inner: Arc<dyn MembershipStore>, reads: Reads) -> Arc<Self> {
        Arc::new(Self {
            inner,
            reads: Mutex::new(reads),
        })
    }

    fn set(&self, reads: Reads) {
        *self.reads.lock().expect("lock") = reads;
    }
}

#[async_trait::async_trait]
impl MembershipStore for FaultyStore {
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
    async fn live(&self) -> Result<LiveRecords, TransportError> {
        let reads = *self.reads.lock().expect("lock");
        match reads {
            Reads::Pass => self.inner.live().await,
            Reads::Fail => Err(TransportError::Closed),
            Reads::Hang => std::future::pending().await,
        }
    }
    async fn hold_connection(&self, connection: &str, node: &NodeId) -> Result<(), TransportError> {
        self.inner.hold_connection(connection, node).await
    }
    async fn release_connection(
        &self,
        connection: &str,
        node: &NodeId,
    ) -> Result<bool, TransportError> {
        self.inner.release_connection(connection, node).await
    }
    async fn connection_holder(&self, connection: &str) -> Result<Option<NodeId>, TransportError> {
        self.inner.connection_holder(connection).await
    }
    async fn forget_connections(&self, node: &NodeId) -> Result<u64, TransportError> {
        self.inner.forget_connections(node).await
    }
}

/// Registers `test.count` on `rpc`: it records and returns the incarnation of `api`, the run
/// that ran it.
fn count_calls(calls: &Arc<std::sync::Mutex<Vec<u64>>>, rpc: &Rpc, api: &Api) {
    let (calls, incarnation) = (calls.clone(), api.incarnation());
    rpc.register("test.count", move |_, _: Value| {
        let calls = calls.clone();
        async move {
            calls.lock().expect("lock").push(incarnation);
            Ok(incarnation)
        }
    });
}

/// Waits until `caller`'s view of the members lists the run `incarnation` of `node` (`None`:
/// no run of it).
async fn view_shows(caller: &Rpc, node: &str, incarnation: Option<u64>) {
    let node = id(node);
    eventually("the caller's view follows the announcement", || {
        caller.membership().known_incarnation(&node) == incarnation
    })
    .await;
}

async fn wait_all_returns_one_reply_per_live_node_early(cluster: Cluster) {
    let nodes = cluster.three().await;
    let rpc = &nodes[0].1;
    let started = tokio::time::Instant::now();
    let replies = rpc
        .do_cluster(
            "api.ping",
            Value::Null,
            Target::All,
            Wait::All,
            Some(Duration::from_secs(10)),
        )
        .await
        .expect("call");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not return early: {:?}",
        started.elapsed()
    );
    let ids: Vec<&str> = replies.iter().map(|r| r.node_id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2", "n3"]);
    for reply in &replies {
        assert_eq!(
            reply.result.as_ref().expect("pong")["node_id"],
            json!(reply.node_id)
        );
    }
    assert_eq!(rpc.pending_calls(), 0);
}

async fn a_node_target_hits_exactly_that_node(cluster: Cluster) {
    let nodes = cluster.three().await;
    let rpc = &nodes[0].1;
    let value = rpc
        .call(&id("n2"), "test.echo", json!([1, "two"]))
        .await
        .expect("call");
    assert_eq!(value, json!({ "from": "n2", "args": [1, "two"] }));
    let replies = rpc
        .do_cluster(
            "test.add",
            json!([2, 3]),
            Target::Node(id("n3")),
            Wait::All,
            None,
        )
        .await
        .expect("call");
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].node_id.as_str(), "n3");
    assert_eq!(replies[0].result, Ok(json!(5)));
}

async fn first_reply_returns_as_soon_as_one_arrives(cluster: Cluster) {
    let nodes = cluster.three().await;
    let replies = nodes[1]
        .1
        .do_cluster("api.ping", Value::Null, Target::All, Wait::First, None)
        .await
        .expect("call");
    assert_eq!(replies.len(), 1);
    assert!(replies[0].result.is_ok());
    assert_eq!(nodes[1].1.pending_calls(), 0);
}

async fn errors_are_typed_and_distinct(cluster: Cluster) {
    let nodes = cluster.three().await;
    let rpc = &nodes[0].1;
    let missing = rpc
        .call(&id("n2"), "no.such", Value::Null)
        .await
        .expect_err("unknown method");
    assert!(
        matches!(&missing, Error::NoSuchMethod { node, method } if node.as_str() == "n2" && method == "no.such"),
        "{missing:?}"
    );
    let failed = rpc
        .call(&id("n3"), "test.fail", Value::Null)
        .await
        .expect_err("handler error");
    assert!(
        matches!(&failed, Error::Remote { message, .. } if message == "it broke"),
        "{failed:?}"
    );
    let bad_args = rpc
        .call(&id("n2"), "test.add", json!("not a pair"))
        .await
        .expect_err("bad args");
    assert!(
        matches!(bad_args, Error::InvalidArgs { .. }),
        "{bad_args:?}"
    );
    let unknown = rpc
        .call(&id("ghost"), "api.ping", Value::Null)
        .await
        .expect_err("no such node");
    assert!(matches!(unknown, Error::UnknownNode { .. }), "{unknown:?}");
    let all = rpc
        .do_cluster("no.such", Value::Null, Target::All, Wait::All, None)
        .await
        .expect("replies");
    assert!(
        all.iter()
            .all(|r| matches!(r.result, Err(RemoteError::NoSuchMethod { .. }))),
        "{all:?}"
    );
    assert_eq!(rpc.pending_calls(), 0);
}

async fn a_call_times_out_with_partial_results_when_a_node_is_silent(cluster: Cluster) {
    let nodes = cluster.three().await;
    // n3 answers test.slow only after the call's timeout.
    nodes[2].1.register("test.slow", |_, _: Value| async move {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        Ok(json!("late"))
    });
    for (_, rpc) in &nodes[..2] {
        rpc.register(
            "test.slow",
            |_, _: Value| async move { Ok(json!("prompt")) },
        );
    }
    let rpc = &nodes[0].1;
    let started = tokio::time::Instant::now();
    let replies = rpc
        .do_cluster(
            "test.slow",
            Value::Null,
            Target::All,
            Wait::All,
            Some(Duration::from_millis(500)),
        )
        .await
        .expect("partial");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1400),
        "{elapsed:?}"
    );
    let results: Vec<_> = replies
        .iter()
        .map(|r| (r.node_id.as_str(), r.result.clone()))
        .collect();
    assert_eq!(
        results,
        [
            ("n1", Ok(json!("prompt"))),
            ("n2", Ok(json!("prompt"))),
            ("n3", Err(RemoteError::Timeout { after_ms: 500 }))
        ]
    );
    let n3 = id("n3");
    let timeout = rpc.call(&n3, "test.slow", Value::Null);
    let timeout = tokio::time::timeout(Duration::from_secs(5), timeout)
        .await
        .expect("ends at its timeout");
    assert!(matches!(timeout, Err(Error::Timeout { .. })), "{timeout:?}");
    // The late replies arrive after their calls ended: ignored, nothing left pending.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(rpc.pending_calls(), 0);
}

async fn wait_none_returns_at_once_and_the_call_still_runs(cluster: Cluster) {
    let nodes = cluster.three().await;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    nodes[1].1.register("test.record", move |_, n: u32| {
        let sender = sender.clone();
        async move {
            sender.send(n)?;
            Ok(())
        }
    });
    let replies = nodes[0]
        .1
        .do_cluster(
            "test.record",
            json!(7),
            Target::Node(id("n2")),
            Wait::None,
            None,
        )
        .await
        .expect("sent");
    assert!(replies.is_empty());
    assert_eq!(nodes[0].1.pending_calls(), 0);
    let got = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .expect("ran");
    assert_eq!(got, Some(7));
}

async fn status_and_stop_are_built_in(cluster: Cluster) {
    let nodes = cluster.three().await;
    let rpc = &nodes[0].1;
    let status: NodeStatus = serde_json::from_value(
        rpc.call(&id("n2"), "api.status", Value::Null)
            .await
            .expect("status"),
    )
    .expect("shape");
    assert_eq!(status.node_id, "n2");
    assert_eq!(status.pid, std::process::id());
    assert!(status.bus.accepted > 0);
    let logged = rpc
        .call(
            &id("n2"),
            "api.log",
            json!({ "message": "hello from n1", "level": "warn" }),
        )
        .await
        .expect("log");
    assert_eq!(logged, json!(true));

    let stopping = rpc
        .call(&id("n3"), "api.stop", Value::Null)
        .await
        .expect("stop");
    assert_eq!(stopping, json!({ "stopping": true }));
    let n3 = &nodes[2].0;
    tokio::time::timeout(Duration::from_secs(5), n3.stop_requested())
        .await
        .expect("n3 stops");
    n3.shutdown().await.expect("clean stop");
    let live = rpc.membership().nodes().await.expect("list");
    let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"], "a stopped node leaves the membership");
}

async fn a_connection_target_reaches_the_node_holding_it(cluster: Cluster) {
    let nodes = cluster.three().await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    n2.1.membership()
        .hold_connection(&n2.0, "conn-42")
        .await
        .expect("hold");
    let replies =
        n1.1.do_cluster(
            "api.ping",
            Value::Null,
            Target::Connection("conn-42".into()),
            Wait::First,
            None,
        )
        .await
        .expect("call");
    assert_eq!(replies[0].node_id.as_str(), "n2");
    assert!(
        !n3.1
            .membership()
            .release_connection(&n3.0, "conn-42")
            .await
            .expect("release"),
        "n3 released n2's connection"
    );
    let unknown =
        n1.1.do_cluster(
            "api.ping",
            Value::Null,
            Target::Connection("conn-7".into()),
            Wait::First,
            None,
        )
        .await;
    assert!(
        matches!(unknown, Err(Error::UnknownConnection { .. })),
        "{unknown:?}"
    );
    // A holder that stops takes its connections with it.
    n2.0.shutdown().await.expect("n2 stops");
    let gone =
        n1.1.do_cluster(
            "api.ping",
            Value::Null,
            Target::Connection("conn-42".into()),
            Wait::First,
            None,
        )
        .await;
    assert!(
        matches!(gone, Err(Error::UnknownConnection { .. })),
        "{gone:?}"
    );
    n3.1.membership()
        .hold_connection(&n3.0, "conn-42")
        .await
        .expect("hold");
    assert!(
        n3.1.membership()
            .release_connection(&n3.0, "conn-42")
            .await
            .expect("release")
    );
}

async fn calls_dropped_by_their_caller_leave_nothing_pending(cluster: Cluster) {
    let nodes = cluster.three().await;
    nodes[1].1.register("test.hang", |_, _: Value| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(json!("never"))
    });
    let (rpc, n2) = (&nodes[0].1, id("n2"));
    for _ in 0..5 {
        let call = rpc.call(&n2, "test.hang", Value::Null);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), call)
                .await
                .is_err(),
            "the caller's own timeout ends the call"
        );
    }
    let all = rpc.do_cluster("test.hang", Value::Null, Target::All, Wait::All, None);
    tokio::select! {
        _ = all => panic!("a hanging call returned"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    assert_eq!(rpc.pending_calls(), 0, "dropped calls leaked their entries");
}

async fn methods_that_call_other_nodes_do_not_starve_on_the_handler_limit(cluster: Cluster) {
    let nodes = cluster.three().await;
    // Every outer call holds one of n2's 64 handler permits while it waits for n1's reply; the
    // replies must reach n2 past the outer calls still queued for a permit.
    let inner_rpc = nodes[1].1.clone();
    nodes[1].1.register("test.outer", move |_, n: u32| {
        let rpc = inner_rpc.clone();
        async move {
            // Long enough for every outer call to be queued at n2 before any reply.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let replies = rpc
                .do_cluster(
                    "test.add",
                    json!([n, 1]),
                    Target::Node(id("n1")),
                    Wait::First,
                    None,
                )
                .await?;
            let reply = replies.into_iter().next().ok_or("no reply")?;
            Ok(reply.result?)
        }
    });
    let (rpc, n2) = (&nodes[0].1, id("n2"));
    let calls = (0..80_u32).map(|n| rpc.call(&n2, "test.outer", json!(n)));
    let results = futures_util::future::join_all(calls).await;
    for (n, result) in results.into_iter().enumerate() {
        assert_eq!(result.expect("nested call answered"), json!(n + 1));
    }
    assert_eq!(nodes[1].1.pending_calls(), 0);
}

async fn a_direct_call_during_a_handover_runs_once_on_the_record_holder(cluster: Cluster) {
    let (caller_api, caller) = cluster.node("caller").await;
    let calls = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let (old_api, old) = cluster.node("worker-1").await;
    count_calls(&calls, &old, &old_api);
    // The caller knows the old run; the replacement joins under the same id while the old run
    // still runs and listens.
    caller
        .call(&id("worker-1"), "test.count", Value::Null)
        .await
        .expect("call");
    let (new_api, new) = cluster.replacement(&old_api).await;
    count_calls(&calls, &new, &new_api);
    // The replacement announces itself: from then on, the caller addresses it.
    view_shows(&caller, "worker-1", Some(new_api.incarnation())).await;
    for _ in 0..3 {
        let value = caller
            .call(&id("worker-1"), "test.count", Value::Null)
            .await
            .expect("call");
        assert_eq!(value, json!(new_api.incarnation()));
    }
    // The old run stops, as in a rolling restart: calls keep reaching the new one.
    old_api.shutdown().await.expect("old run stops");
    let value = caller
        .call(&id("worker-1"), "test.count", Value::Null)
        .await
        .expect("call after the old run stopped");
    assert_eq!(value, json!(new_api.incarnation()));
    // Late duplicates would arrive by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut expected = vec![old_api.incarnation()];
    expected.extend([new_api.incarnation(); 4]);
    assert_eq!(
        *calls.lock().expect("lock"),
        expected,
        "a direct request ran on both runs of the id"
    );
    for api in [new_api, caller_api] {
        api.shutdown().await.expect("stop");
    }
}

async fn a_stale_view_is_corrected_by_what_runs_announce(cluster: Cluster) {
    let calls = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let (old_api, old) = cluster.node("worker-1").await;
    count_calls(&calls, &old, &old_api);
    let (_client_api, client) = cluster.client("c1").await;
    let first = client
        .call(&id("worker-1"), "test.count", Value::Null)
        .await
        .expect("call");
    assert_eq!(first, json!(old_api.incarnation()));
    // The client's view is recent for a minute: nothing but the announcement corrects it.
    let (new_api, new) = cluster.replacement(&old_api).await;
    count_calls(&calls, &new, &new_api);
    view_shows(&client, "worker-1", Some(new_api.incarnation())).await;
    old_api.shutdown().await.expect("old run stops");
    let second = client
        .call(&id("worker-1"), "test.count", Value::Null)
        .await
        .expect("call");
    assert_eq!(second, json!(new_api.incarnation()));
    assert_eq!(
        client.membership().known_incarnation(&id("worker-1")),
        Some(new_api.incarnation()),
        "the old run's stop is not the node's"
    );
    // The new run stops too: the view drops it at once, and its record, whether or not its
    // leave has removed it yet, no longer counts.
    new_api.shutdown().await.expect("new run stops");
    view_shows(&client, "worker-1", None).await;
    let gone = client
        .call(&id("worker-1"), "test.count", Value::Null)
        .await;
    assert!(matches!(gone, Err(Error::UnknownNode { .. })), "{gone:?}");
    assert_eq!(
        *calls.lock().expect("lock"),
        [old_api.incarnation(), new_api.incarnation()]
    );
}

async fn announcements_speak_only_for_their_sender(cluster: Cluster) {
    let (worker_api, _worker) = cluster.node("worker-1").await;
    let (_client_api, client) = cluster.client("c1").await;
    client
        .call(&id("worker-1"), "api.ping", Value::Null)
        .await
        .expect("call");
    let incarnation = Some(worker_api.incarnation());
    assert_eq!(
        client.membership().known_incarnation(&id("worker-1")),
        incarnation
    );
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for notice in ["stellar.rpc.serving", "stellar.rpc.stopped"] {
        let received = received.clone();
        client.bus().subscribe_handler(notice, move |_| {
            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok(()) }
        });
    }
    // Another node cannot speak for worker-1, whatever its message says, nor add itself to a
    // view by announcing itself.
    let (_mallory_api, mallory) = cluster.node("mallory").await;
    let claim = json!({ "node": "worker-1", "incarnation": 42 });
    let serving = "stellar.rpc.serving";
    mallory
        .bus()
        .publish(serving, &claim)
        .await
        .expect("publish");
    let seen = |n| received.load(std::sync::atomic::Ordering::Relaxed) >= n;
    // mallory's own announcement and its claim.
    eventually("the announcements arrived", || seen(2)).await;
    assert_eq!(
        client.membership().known_incarnation(&id("worker-1")),
        incarnation
    );
    assert_eq!(client.membership().known_incarnation(&id("mallory")), None);
    let stopped = "stellar.rpc.stopped";
    mallory
        .bus()
        .publish(stopped, &claim)
        .await
        .expect("publish");
    // A process under worker-1's id without the token is not heard at all.
    let forger = Api::new(Config {
        server_token: ServerToken::new("not the token"),
        ..worker_api.config().clone()
    });
    let (transport, _) = cluster.backend().await;
    let forged = Bus::start(&forger, transport, BusSettings::from(forger.config()))
        .await
        .expect("bus");
    for notice in [serving, stopped] {
        forged.publish(notice, &claim).await.expect("publish");
    }
    eventually("the stop claim and the forged notices arrived", || {
        seen(3) && client.bus().stats().bad_signature >= 2
    })
    .await;
    assert_eq!(
        client.membership().known_incarnation(&id("worker-1")),
        incarnation
    );
    let value = client
        .call(&id("worker-1"), "api.ping", Value::Null)
        .await
        .expect("worker-1 is still called");
    assert_eq!(value["node_id"], json!("worker-1"));
}

async fn a_call_to_every_node_that_was_sent_returns_replies_when_the_members_cannot_be_read(
    cluster: Cluster,
) {
    let (transport, store) = cluster.backend().await;
    let faulty = FaultyStore::new(store, Reads::Pass);
    let caller = cluster.node_on("n1", transport, faulty.clone()).await;
    let _others = [cluster.node("n2").await, cluster.node("n3").await];
    eventually("the caller's heartbeat read every member", || {
        caller.1.membership().known_nodes() == [id("n1"), id("n2"), id("n3")]
    })
    .await;
    faulty.set(Reads::Fail);
    let replies = caller
        .1
        .call_all("api.ping", Value::Null)
        .await
        .expect("the request was sent: the call does not fail");
    let answered: Vec<(&str, bool)> = replies
        .iter()
        .map(|r| (r.node_id.as_str(), r.result.is_ok()))
        .collect();
    assert_eq!(answered, [("n1", true), ("n2", true), ("n3", true)]);
    // A caller that never read the members takes whoever answered in time.
    let (transport, store) = cluster.backend().await;
    let blind = FaultyStore::new(store, Reads::Fail);
    let (_client_api, client) = cluster.client_on("c1", transport, blind).await;
    let replies = client
        .call_all("api.ping", Value::Null)
        .await
        .expect("the request was sent: the call does not fail");
    let ids: Vec<&str> = replies.iter().map(|r| r.node_id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2", "n3"]);
    assert_eq!(client.pending_calls(), 0);
}

async fn one_node_calls_end_at_their_timeout_when_the_members_cannot_be_read(cluster: Cluster) {
    let _nodes = cluster.three().await;
    let (transport, store) = cluster.backend().await;
    let hanging = FaultyStore::new(store, Reads::Hang);
    let (_client_api, client) = cluster.client_on("c1", transport, hanging.clone()).await;
    let n2 = id("n2");
    let calls = (0..5).map(|_| {
        client.do_cluster(
            "api.ping",
            Value::Null,
            Target::Node(n2.clone()),
            Wait::First,
            Some(Duration::from_millis(300)),
        )
    });
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("every call ends at its timeout");
    for result in results {
        assert!(
            matches!(
                result,
                Err(Error::Membership(TransportError::Timeout { .. }))
            ),
            "{result:?}"
        );
    }
    assert_eq!(client.pending_calls(), 0);
    hanging.set(Reads::Pass);
    let value = client
        .call(&n2, "api.ping", Value::Null)
        .await
        .expect("the store is back");
    assert_eq!(value["node_id"], json!("n2"));
}

async fn a_call_left_unanswered_makes_the_next_one_read_the_members(cluster: Cluster) {
    let old = cluster.silent_member("worker-1").await;
    let (_client_api, client) = cluster.client("c1").await;
    client.membership().nodes().await.expect("read");
    assert_eq!(
        client.membership().known_incarnation(&id("worker-1")),
        Some(old.incarnation())
    );
    // The run the client knows answers nothing; its replacement, which the client has not
    // heard of, ignores requests for another run.
    let calls = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let (new_api, new) = cluster.unannounced_replacement(&old).await;
    count_calls(&calls, &new, &new_api);
    let unanswered = client
        .call(&id("worker-1"), "test.count", Value::Null)
        .await;
    assert!(
        matches!(unanswered, Err(Error::Timeout { .. })),
        "{unanswered:?}"
    );
    let value = client
        .call(&id("worker-1"), "test.count", Value::Null)
        .await
        .expect("the next call reads the members and reaches the holder");
    assert_eq!(value, json!(new_api.incarnation()));
    assert_eq!(*calls.lock().expect("lock"), [new_api.incarnation()]);
}

stellar_testkit::contract_cases!(
    wait_all_returns_one_reply_per_live_node_early,
    a_node_target_hits_exactly_that_node,
    first_reply_returns_as_soon_as_one_arrives,
    errors_are_typed_and_distinct,
    a_call_times_out_with_partial_results_when_a_node_is_silent,
    wait_none_returns_at_once_and_the_call_still_runs,
    status_and_stop_are_built_in,
    a_connection_target_reaches_the_node_holding_it,
    calls_dropped_by_their_caller_leave_nothing_pending,
    methods_that_call_other_nodes_do_not_starve_on_the_handler_limit,
    a_direct_call_during_a_handover_runs_once_on_the_record_holder,
    a_stale_view_is_corrected_by_what_runs_announce,
    announcements_speak_only_for_their_sender,
    a_call_to_every_node_that_was_sent_returns_replies_when_the_members_cannot_be_read,
    one_node_calls_end_at_their_timeout_when_the_members_cannot_be_read,
    a_call_left_unanswered_makes_the_next_one_read_the_members,
);

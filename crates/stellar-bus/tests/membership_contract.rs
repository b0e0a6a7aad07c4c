//! Membership on both stores: records appear, renew, expire, leave, and must be signed.

mod support;

use std::{sync::Arc, time::Duration};

use stellar_bus::{
    Beat, Claim, Error, Membership, MembershipSettings, MembershipStore, MemoryMembershipStore,
    NodeInfo, RECORD_SKEW, RedisMembershipStore,
};
use stellar_core::{Api, Config, NodeId, ServerToken};
use support::Backend;

async fn store(backend: &Backend) -> Arc<dyn MembershipStore> {
    match backend.redis_pool().await {
        Some(pool) => Arc::new(RedisMembershipStore::new(pool)),
        None => Arc::new(MemoryMembershipStore::new()),
    }
}

fn node_api(id: &str, token: &str, interval_ms: u64, ttl_ms: u64) -> Api {
    Api::new(Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new(token),
        heartbeat_interval: Duration::from_millis(interval_ms),
        heartbeat_ttl: Duration::from_millis(ttl_ms),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    })
}

/// The membership of the node `api` on `store`, with the settings of its config.
fn member_of(store: &Arc<dyn MembershipStore>, api: &Api) -> Membership {
    Membership::new(store.clone(), api, MembershipSettings::from(api.config()))
}

fn ids(nodes: &[NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

async fn store_records_expire_and_leave(backend: Backend) {
    let store = store(&backend).await;
    let (a, b) = (NodeId::new("a").expect("id"), NodeId::new("b").expect("id"));
    let short = Duration::from_millis(300);
    let beat = store
        .heartbeat(&b, 2, "record of b", short, Claim::Own)
        .await
        .expect("beat");
    assert!(
        matches!(beat, Beat::Written { now_ms } if now_ms > 0),
        "{beat:?}"
    );
    store
        .heartbeat(&a, 1, "record of a", Duration::from_secs(30), Claim::Own)
        .await
        .expect("beat");
    let mut live = store.live().await.expect("list");
    assert!(live.now_ms > 0);
    live.records.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        live.records
            .iter()
            .map(|r| r.record.as_str())
            .collect::<Vec<_>>(),
        ["record of a", "record of b"]
    );
    assert!(live.records[0].last_seen_ms > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = store.live().await.expect("list");
    assert_eq!(
        live.records
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["a"],
        "b's record expired"
    );
    store.leave(&a, 1).await.expect("leave");
    assert!(store.live().await.expect("list").records.is_empty());
}

async fn store_writes_and_leaves_compare_the_incarnation(backend: Backend) {
    let store = store(&backend).await;
    let id = NodeId::new("n").expect("id");
    let ttl = Duration::from_secs(30);
    store
        .heartbeat(&id, 1, "run 1", ttl, Claim::Own)
        .await
        .expect("beat");
    let held = store
        .heartbeat(&id, 2, "run 2", ttl, Claim::Own)
        .await
        .expect("beat");
    assert!(
        matches!(&held, Beat::Held { incarnation: 1, record, .. } if record == "run 1"),
        "{held:?}"
    );
    let refused = store
        .heartbeat(&id, 2, "run 2", ttl, Claim::Replacing(7))
        .await
        .expect("beat");
    assert!(matches!(refused, Beat::Held { .. }), "{refused:?}");
    let taken = store
        .heartbeat(&id, 2, "run 2", ttl, Claim::Replacing(1))
        .await
        .expect("beat");
    assert!(matches!(taken, Beat::Written { .. }), "{taken:?}");
    assert!(
        !store.leave(&id, 1).await.expect("leave"),
        "run 1 removed run 2's record"
    );
    let live = store.live().await.expect("list");
    assert_eq!(live.records.len(), 1);
    assert_eq!(live.records[0].record, "run 2");
    let forced = store
        .heartbeat(&id, 3, "run 3", ttl, Claim::Force)
        .await
        .expect("beat");
    assert!(matches!(forced, Beat::Written { .. }), "{forced:?}");
    assert!(store.leave(&id, 3).await.expect("leave"));
    assert!(store.live().await.expect("list").records.is_empty());
}

async fn joined_nodes_stay_listed_and_leave_when_they_stop(backend: Backend) {
    let store = store(&backend).await;
    let (a, b) = (node_api("a", "t", 50, 300), node_api("b", "t", 50, 300));
    let membership = member_of(&store, &a);
    membership.join(&a).await.expect("a joins");
    member_of(&store, &b).join(&b).await.expect("b joins");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let nodes = membership.nodes().await.expect("list");
    assert_eq!(
        ids(&nodes),
        ["a", "b"],
        "heartbeats keep records past their ttl"
    );
    assert_eq!(nodes[0].pid, std::process::id());
    assert!(nodes[0].started_at_ms > 0 && nodes[0].last_seen_ms >= nodes[0].started_at_ms);
    b.shutdown().await.expect("b stops");
    assert_eq!(
        ids(&membership.nodes().await.expect("list")),
        ["a"],
        "a graceful stop removes the record at once"
    );
    a.shutdown().await.expect("a stops");
    let after = membership.nodes().await.expect("list");
    assert!(after.is_empty(), "{after:?}");
}

async fn a_node_that_stops_beating_drops_out_within_the_ttl(backend: Backend) {
    let store = store(&backend).await;
    // Beats once, then not for a minute: to the others it looks dead after 300 ms.
    let stuck = node_api("stuck", "t", 60_000, 300);
    let membership = member_of(&store, &stuck);
    membership.join(&stuck).await.expect("join");
    assert_eq!(ids(&membership.nodes().await.expect("list")), ["stuck"]);
    let started = tokio::time::Instant::now();
    let mut listed = true;
    while listed && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        listed = !membership.nodes().await.expect("list").is_empty();
    }
    assert!(!listed, "the silent node is still listed");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "dropped out after {:?}",
        started.elapsed()
    );
    stuck.shutdown().await.expect("stops");
}

async fn records_signed_with_another_token_are_not_members(backend: Backend) {
    let store = store(&backend).await;
    let (ours, theirs) = (
        node_api("ours", "right", 50, 5000),
        node_api("theirs", "wrong", 50, 5000),
    );
    let membership = member_of(&store, &ours);
    membership.join(&ours).await.expect("join");
    member_of(&store, &theirs)
        .join(&theirs)
        .await
        .expect("join");
    store
        .heartbeat(
            &NodeId::new("forged").expect("id"),
            1,
            "{\"info\":{}}",
            Duration::from_secs(5),
            Claim::Force,
        )
        .await
        .expect("raw");
    assert_eq!(ids(&membership.nodes().await.expect("list")), ["ours"]);
    let their_view = member_of(&store, &theirs);
    assert_eq!(ids(&their_view.nodes().await.expect("list")), ["theirs"]);
    let rotated = node_api("rotated", "new", 50, 5000);
    let rolled = Api::new(Config {
        previous_server_token: Some(ServerToken::new("right")),
        ..rotated.config().clone()
    });
    assert_eq!(
        ids(&member_of(&store, &rolled).nodes().await.expect("list")),
        ["ours"]
    );
}

async fn a_replayed_old_record_is_not_a_member(backend: Backend) {
    let store = store(&backend).await;
    let observer = node_api("observer", "t", 50, 1000);
    let membership = member_of(&store, &observer);
    // A real record, signed with the cluster's token, captured from the store.
    let ghost = node_api("ghost", "t", 60_000, 300);
    member_of(&store, &ghost).join(&ghost).await.expect("join");
    let live = store.live().await.expect("list");
    let captured = live.records[0].record.clone();
    ghost.shutdown().await.expect("ghost stops");
    assert!(membership.nodes().await.expect("list").is_empty());
    tokio::time::sleep(Duration::from_millis(300) + RECORD_SKEW + Duration::from_millis(200)).await;
    // Someone with write access to the store puts it back with an expiry an hour away.
    store
        .heartbeat(
            ghost.node_id(),
            ghost.incarnation(),
            &captured,
            Duration::from_secs(3600),
            Claim::Force,
        )
        .await
        .expect("raw write");
    assert_eq!(store.live().await.expect("list").records.len(), 1);
    let nodes = membership.nodes().await.expect("list");
    assert!(nodes.is_empty(), "a replayed record is listed: {nodes:?}");
    assert_eq!(membership.stats().stale, 1, "{:?}", membership.stats());
    // The id is free for a new run, whatever the stale record says.
    let again = node_api("ghost", "t", 50, 1000);
    member_of(&store, &again)
        .join(&again)
        .await
        .expect("a new run joins over a stale record");
    assert_eq!(ids(&membership.nodes().await.expect("list")), ["ghost"]);
    again.shutdown().await.expect("stops");
}

async fn a_second_live_run_with_the_same_id_is_refused(backend: Backend) {
    let store = store(&backend).await;
    let (first, second) = (
        node_api("dup", "t", 50, 1000),
        node_api("dup", "t", 50, 1000),
    );
    member_of(&store, &first)
        .join(&first)
        .await
        .expect("the first run joins");
    let refused = member_of(&store, &second).join(&second).await;
    match &refused {
        Err(Error::DuplicateNode { id, incarnation }) => {
            assert_eq!(id.as_str(), "dup");
            assert_eq!(*incarnation, first.incarnation());
        }
        other => panic!("expected DuplicateNode, got {other:?}"),
    }
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("dup"), "{message}");
    // Another run's record that does not verify blocks nothing.
    let forged = node_api("forged-id", "t", 50, 1000);
    store
        .heartbeat(
            forged.node_id(),
            99,
            "garbage",
            Duration::from_secs(60),
            Claim::Force,
        )
        .await
        .expect("raw write");
    member_of(&store, &forged)
        .join(&forged)
        .await
        .expect("an unverified record does not hold the id");
    let nodes = member_of(&store, &first).nodes().await.expect("list");
    assert_eq!(ids(&nodes), ["dup", "forged-id"]);
    assert_eq!(nodes[0].incarnation, first.incarnation());
    forged.shutdown().await.expect("stops");
    first.shutdown().await.expect("stops");
}

async fn a_supervised_replacement_takes_over_and_the_old_run_leaves_it_alone(backend: Backend) {
    let store = store(&backend).await;
    let old = node_api("worker-1", "t", 50, 1000);
    let old_membership = member_of(&store, &old);
    old_membership.join(&old).await.expect("old joins");
    assert_eq!(old_membership.incarnation(), old.incarnation());
    let new = node_api("worker-1", "t", 50, 1000);
    let stranger = node_api("worker-1", "t", 50, 1000);
    assert!(matches!(
        member_of(&store, &stranger)
            .join_replacing(&stranger, new.incarnation())
            .await,
        Err(Error::DuplicateNode { .. })
    ));
    let membership = member_of(&store, &new);
    membership
        .join_replacing(&new, old.incarnation())
        .await
        .expect("the replacement takes over");
    let incarnations = || async {
        membership
            .nodes()
            .await
            .expect("list")
            .iter()
            .map(|n| (n.id.to_string(), n.incarnation))
            .collect::<Vec<_>>()
    };
    let expected = vec![("worker-1".to_owned(), new.incarnation())];
    // The old run keeps its heartbeat task for a few beats: it must not win the record back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(incarnations().await, expected);
    old.shutdown().await.expect("old stops");
    assert_eq!(
        incarnations().await,
        expected,
        "the old run's leave removed the replacement's record"
    );
    new.shutdown().await.expect("new stops");
    assert!(incarnations().await.is_empty());
}

/// A run killed with SIGKILL leaves its connections recorded; the next run under the same id
/// forgets them at start-up, and nothing of another node's.
async fn a_new_run_forgets_the_connections_of_its_dead_predecessor(backend: Backend) {
    let store = store(&backend).await;
    let (dead, other) = (
        NodeId::new("w1").expect("id"),
        NodeId::new("w2").expect("id"),
    );
    store.hold_connection("c1", &dead).await.expect("hold");
    store.hold_connection("c2", &dead).await.expect("hold");
    store.hold_connection("c3", &other).await.expect("hold");
    // c2 moved to the other node since (a reconnect): it is not the dead run's any more.
    store.hold_connection("c2", &other).await.expect("hold");
    assert_eq!(store.forget_connections(&dead).await.expect("forget"), 1);
    assert_eq!(store.connection_holder("c1").await.expect("holder"), None);
    for connection in ["c2", "c3"] {
        assert_eq!(
            store.connection_holder(connection).await.expect("holder"),
            Some(other.clone()),
            "{connection}"
        );
    }
    assert_eq!(store.forget_connections(&dead).await.expect("again"), 0);
}

/// Polls `membership` until `node` is listed with `incarnation`, at most `within`.
async fn listed_within(
    membership: &Membership,
    node: &str,
    incarnation: u64,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let nodes = membership.nodes().await.expect("list");
        if nodes
            .iter()
            .any(|n| n.id.as_str() == node && n.incarnation == incarnation)
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_failed_handover_gives_the_id_back_to_the_old_run(backend: Backend) {
    let store = store(&backend).await;
    let old = node_api("worker-1", "t", 50, 1000);
    let membership = member_of(&store, &old);
    membership.join(&old).await.expect("old joins");
    let new = node_api("worker-1", "t", 50, 1000);
    let new_membership = member_of(&store, &new);
    new_membership
        .join_replacing(&new, old.incarnation())
        .await
        .expect("the replacement takes over");
    let nodes = membership.nodes().await.expect("list");
    assert_eq!(nodes[0].incarnation, new.incarnation());
    assert_eq!(nodes[0].replaces, Some(old.incarnation()));
    // Several of the old run's beats see the takeover; it waits and does not stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(listed_within(&membership, "worker-1", new.incarnation(), Duration::ZERO).await);
    // The replacement fails before it is ready and leaves: the old run, still serving, is
    // listed again within a couple of heartbeats.
    new.shutdown().await.expect("the replacement stops");
    assert!(
        listed_within(
            &membership,
            "worker-1",
            old.incarnation(),
            Duration::from_millis(300)
        )
        .await,
        "the old run was not listed again: {:?}",
        membership.nodes().await
    );
    assert!(
        !old.cancellation_token().is_cancelled(),
        "the old run stopped"
    );
    // And keeps its record past the TTL.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(listed_within(&membership, "worker-1", old.incarnation(), Duration::ZERO).await);
    old.shutdown().await.expect("old stops");
    assert!(membership.nodes().await.expect("list").is_empty());
}

async fn a_run_taken_over_without_a_handover_stops(backend: Backend) {
    let store = store(&backend).await;
    let first = node_api("solo", "t", 200, 1000);
    let membership = member_of(&store, &first);
    membership.join(&first).await.expect("first joins");
    // Someone with write access to Redis deletes the record (or the run stalled past its TTL),
    // and another process joins under the same id.
    let second = node_api("solo", "t", 50, 1000);
    let mut attempts = 0;
    loop {
        // The first run's next beat may come in between: try again.
        store
            .leave(first.node_id(), first.incarnation())
            .await
            .expect("delete");
        match member_of(&store, &second).join(&second).await {
            Ok(()) => break,
            Err(Error::DuplicateNode { .. }) if attempts < 5 => attempts += 1,
            Err(err) => panic!("the id was free: {err:?}"),
        }
    }
    tokio::time::timeout(Duration::from_secs(2), first.stop_requested())
        .await
        .expect("the run taken over without a handover stopped its node");
    first.shutdown().await.expect("first stops");
    assert!(
        listed_within(&membership, "solo", second.incarnation(), Duration::ZERO).await,
        "the stopped run removed the newcomer's record"
    );
    assert!(!second.cancellation_token().is_cancelled());
    second.shutdown().await.expect("second stops");
}

async fn stale_and_unreadable_records_are_removed_from_the_store(backend: Backend) {
    let store = store(&backend).await;
    let observer = node_api("observer", "t", 50, 1000);
    let membership = member_of(&store, &observer);
    // A well-formed record signed with another token may be a node with a rotated token: kept.
    let other = node_api("other-token", "another", 60_000, 60_000);
    member_of(&store, &other).join(&other).await.expect("join");
    let ghost = node_api("ghost", "t", 60_000, 300);
    member_of(&store, &ghost).join(&ghost).await.expect("join");
    let captured = store
        .live()
        .await
        .expect("list")
        .records
        .into_iter()
        .find(|r| r.id.as_str() == "ghost")
        .expect("ghost's record")
        .record;
    ghost.shutdown().await.expect("ghost stops");
    tokio::time::sleep(Duration::from_millis(300) + RECORD_SKEW + Duration::from_millis(200)).await;
    let long = Duration::from_secs(3600);
    store
        .heartbeat(ghost.node_id(), 1, &captured, long, Claim::Force)
        .await
        .expect("replayed");
    let garbage = NodeId::new("garbage").expect("id");
    store
        .heartbeat(&garbage, 2, "not a record", long, Claim::Force)
        .await
        .expect("garbage");
    assert_eq!(store.live().await.expect("list").records.len(), 3);
    assert!(membership.nodes().await.expect("list").is_empty());
    let left: Vec<String> = store
        .live()
        .await
        .expect("list")
        .records
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(left, ["other-token"], "stale and unreadable records stay");
    // Counted once, not on every later listing.
    membership.nodes().await.expect("list");
    assert_eq!(membership.stats().stale, 1, "{:?}", membership.stats());
    other.shutdown().await.expect("stops");
}

stellar_testkit::contract_cases!(
    store_records_expire_and_leave,
    store_writes_and_leaves_compare_the_incarnation,
    a_replayed_old_record_is_not_a_member,
    a_second_live_run_with_the_same_id_is_refused,
    a_supervised_replacement_takes_over_and_the_old_run_leaves_it_alone,
    a_failed_handover_gives_the_id_back_to_the_old_run,
    a_run_taken_over_without_a_handover_stops,
    stale_and_unreadable_records_are_removed_from_the_store,
    joined_nodes_stay_listed_and_leave_when_they_stop,
    a_node_that_stops_beating_drops_out_within_the_ttl,
    records_signed_with_another_token_are_not_members,
    a_new_run_forgets_the_connections_of_its_dead_predecessor,
);

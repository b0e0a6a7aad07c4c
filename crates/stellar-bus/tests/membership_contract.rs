//! Membership on both stores: records appear, renew, expire, leave, and must be signed.

#[macro_use]
mod support;

use std::{sync::Arc, time::Duration};

use stellar_bus::{
    Membership, MembershipStore, MemoryMembershipStore, NodeInfo, RedisMembershipStore,
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

fn ids(nodes: &[NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

async fn store_records_expire_and_leave(backend: Backend) {
    let store = store(&backend).await;
    let (a, b) = (NodeId::new("a").expect("id"), NodeId::new("b").expect("id"));
    store
        .heartbeat(&b, "record of b", Duration::from_millis(300))
        .await
        .expect("beat");
    store
        .heartbeat(&a, "record of a", Duration::from_secs(30))
        .await
        .expect("beat");
    let mut live = store.live().await.expect("list");
    live.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        live.iter().map(|r| r.record.as_str()).collect::<Vec<_>>(),
        ["record of a", "record of b"]
    );
    assert!(live[0].last_seen_ms > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = store.live().await.expect("list");
    assert_eq!(
        live.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a"],
        "b's record expired"
    );
    store.leave(&a).await.expect("leave");
    assert!(store.live().await.expect("list").is_empty());
}

async fn joined_nodes_stay_listed_and_leave_when_they_stop(backend: Backend) {
    let store = store(&backend).await;
    let (a, b) = (node_api("a", "t", 50, 300), node_api("b", "t", 50, 300));
    let membership = Membership::new(store.clone(), &a);
    membership.join(&a).await.expect("a joins");
    Membership::new(store.clone(), &b)
        .join(&b)
        .await
        .expect("b joins");
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
    let membership = Membership::new(store.clone(), &stuck);
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
    let membership = Membership::new(store.clone(), &ours);
    membership.join(&ours).await.expect("join");
    Membership::new(store.clone(), &theirs)
        .join(&theirs)
        .await
        .expect("join");
    store
        .heartbeat(
            &NodeId::new("forged").expect("id"),
            "{\"info\":{}}",
            Duration::from_secs(5),
        )
        .await
        .expect("raw");
    assert_eq!(ids(&membership.nodes().await.expect("list")), ["ours"]);
    let their_view = Membership::new(store.clone(), &theirs);
    assert_eq!(ids(&their_view.nodes().await.expect("list")), ["theirs"]);
    let rotated = node_api("rotated", "new", 50, 5000);
    let rolled = Api::new(Config {
        previous_server_token: Some(ServerToken::new("right")),
        ..rotated.config().clone()
    });
    assert_eq!(
        ids(&Membership::new(store.clone(), &rolled)
            .nodes()
            .await
            .expect("list")),
        ["ours"]
    );
}

contract!(
    store_records_expire_and_leave,
    joined_nodes_stay_listed_and_leave_when_they_stop,
    a_node_that_stops_beating_drops_out_within_the_ttl,
    records_signed_with_another_token_are_not_members,
);

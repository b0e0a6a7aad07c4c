//! Membership on both stores: records appear, renew, expire and leave.

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

fn node_api(id: &str, interval_ms: u64, ttl_ms: u64) -> Api {
    Api::new(Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new("t"),
        heartbeat_interval: Duration::from_millis(interval_ms),
        heartbeat_ttl: Duration::from_millis(ttl_ms),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    })
}

fn ids(nodes: &[NodeInfo]) -> Vec<&str> {
    nodes.iter().map(|n| n.id.as_str()).collect()
}

async fn records_are_listed_until_they_expire_or_leave(backend: Backend) {
    let store = store(&backend).await;
    let (a, b) = (node_api("a", 1000, 1000), node_api("b", 1000, 1000));
    store
        .heartbeat(&NodeInfo::of(&b), Duration::from_millis(300))
        .await
        .expect("beat");
    store
        .heartbeat(&NodeInfo::of(&a), Duration::from_secs(30))
        .await
        .expect("beat");
    let live = store.live().await.expect("list");
    assert_eq!(ids(&live), ["a", "b"]);
    assert_eq!(live[0].pid, std::process::id());
    assert!(live[0].last_seen_ms > 0 && live[0].started_at_ms > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ids(&store.live().await.expect("list")),
        ["a"],
        "b's record expired"
    );
    store
        .leave(&NodeId::new("a").expect("id"))
        .await
        .expect("leave");
    assert!(store.live().await.expect("list").is_empty());
}

async fn joined_nodes_stay_listed_and_leave_when_they_stop(backend: Backend) {
    let store = store(&backend).await;
    let membership = Membership::new(store.clone());
    let (a, b) = (node_api("a", 50, 300), node_api("b", 50, 300));
    membership.join(&a).await.expect("a joins");
    Membership::new(store.clone())
        .join(&b)
        .await
        .expect("b joins");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        ids(&membership.nodes().await.expect("list")),
        ["a", "b"],
        "heartbeats keep records past their ttl"
    );
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
    let membership = Membership::new(store.clone());
    let crashed = node_api("crashed", 50, 300);
    // A heartbeat with no loop behind it: the node died right after.
    store
        .heartbeat(&NodeInfo::of(&crashed), crashed.config().heartbeat_ttl)
        .await
        .expect("beat");
    assert_eq!(ids(&membership.nodes().await.expect("list")), ["crashed"]);
    let started = tokio::time::Instant::now();
    let mut gone = false;
    while !gone && started.elapsed() < Duration::from_secs(5) {
        gone = membership.nodes().await.expect("list").is_empty();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

contract!(
    records_are_listed_until_they_expire_or_leave,
    joined_nodes_stay_listed_and_leave_when_they_stop,
    a_node_that_stops_beating_drops_out_within_the_ttl,
);

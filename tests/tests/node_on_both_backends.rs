//! A node's `Api` (stellar-core) and its transport (stellar-bus) together: the same code on the
//! embedded backend and on Redis, and one cancellation tree stopping both.

use std::{sync::Arc, time::Duration};

use stellar_bus::{MemoryTransport, RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, Config, NodeId, ServerToken};
use stellar_testkit::RedisServer;

fn config(id: &str, redis_url: Option<String>) -> Config {
    Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new("test-token"),
        redis_url,
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// What `stellar run` does: Redis when the config names one, memory otherwise.
async fn transport_for(api: &Api, memory: &MemoryTransport) -> Arc<dyn Transport> {
    match RedisConfig::from_config(api.config()) {
        Some(redis) => {
            api.config().check_shared_backend().expect("a real token");
            let pool = RedisPool::connect(redis).await.expect("redis answers");
            Arc::new(
                RedisTransport::connect(pool, api.cancellation_token())
                    .await
                    .expect("subscriber"),
            )
        }
        None => Arc::new(memory.clone()),
    }
}

async fn two_nodes_exchange_messages_then_stop(redis_url: Option<String>) {
    let memory = MemoryTransport::new();
    let (a, b) = (
        Api::new(config("node-a", redis_url.clone())),
        Api::new(config("node-b", redis_url)),
    );
    let (bus_a, bus_b) = (
        transport_for(&a, &memory).await,
        transport_for(&b, &memory).await,
    );
    let mut inbox_b = bus_b.subscribe("stellar:test").await.expect("subscribe");
    bus_a
        .publish("stellar:test", a.node_id().as_str().as_bytes().to_vec())
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), inbox_b.recv())
        .await
        .expect("in time");
    assert_eq!(got.as_deref(), Some(&b"node-a"[..]));

    a.set_ready();
    b.set_ready();
    a.shutdown().await.expect("a stops within its deadline");
    b.shutdown().await.expect("b stops within its deadline");
}

#[tokio::test]
async fn two_embedded_nodes_in_one_process_share_the_memory_backend() {
    two_nodes_exchange_messages_then_stop(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_redis_with_the_same_code() {
    let server = RedisServer::start();
    two_nodes_exchange_messages_then_stop(Some(server.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_api_ends_the_redis_subscriptions_it_owns() {
    let server = RedisServer::start();
    let api = Api::new(config("owner", Some(server.url())));
    let transport = transport_for(&api, &MemoryTransport::new()).await;
    let mut sub = transport
        .subscribe("stellar:owned")
        .await
        .expect("subscribe");
    api.shutdown().await.expect("clean stop");
    let end = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("ends promptly");
    assert_eq!(end, None, "the subscriber task outlived its node");
}

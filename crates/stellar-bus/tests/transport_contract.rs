//! One contract, two backends: every case runs against `MemoryTransport` and against
//! `RedisTransport` on a real `redis-server` started for that test.

mod support;

use std::{sync::Arc, time::Duration};

use stellar_bus::{MemoryTransport, Transport};
use stellar_testkit::ARRIVES_WITHIN;
use support::{Backend, assert_quiet, recv};

async fn delivers_in_publish_order_per_publisher(backend: Backend) {
    let (a, b, listener) = (
        backend.node().await,
        backend.node().await,
        backend.node().await,
    );
    let mut sub = listener.subscribe("orders").await.expect("subscribe");
    let publish = |node: Arc<dyn Transport>, tag: u8| async move {
        for seq in 0..500_u32 {
            let mut payload = vec![tag];
            payload.extend_from_slice(&seq.to_be_bytes());
            node.publish("orders", payload).await.expect("publish");
        }
    };
    tokio::join!(publish(a, b'a'), publish(b, b'b'));
    let mut next = [0_u32; 2];
    for _ in 0..1000 {
        let message = recv(&mut sub).await;
        let publisher = usize::from(message[0] - b'a');
        let seq = u32::from_be_bytes(message[1..5].try_into().expect("4 bytes"));
        assert_eq!(seq, next[publisher], "publisher {publisher} out of order");
        next[publisher] += 1;
    }
    assert_eq!(next, [500, 500]);
    assert_quiet(&mut sub).await;
}

async fn every_subscriber_gets_its_own_copy(backend: Backend) {
    let (publisher, other) = (backend.node().await, backend.node().await);
    let mut subs = Vec::new();
    for node in [&publisher, &publisher, &other, &other, &other] {
        subs.push(node.subscribe("fanout").await.expect("subscribe"));
    }
    for n in 0..50_u8 {
        publisher.publish("fanout", vec![n]).await.expect("publish");
    }
    for sub in &mut subs {
        for n in 0..50_u8 {
            assert_eq!(recv(sub).await, vec![n]);
        }
        assert_eq!(sub.dropped(), 0);
    }
}

async fn delivers_only_subscribed_channels_and_only_after_subscribe(backend: Backend) {
    let node = backend.node().await;
    node.publish("early", b"before".to_vec())
        .await
        .expect("publish with no subscriber");
    let mut early = node.subscribe("early").await.expect("subscribe");
    let mut other = node.subscribe("other").await.expect("subscribe");
    node.publish("early", b"after".to_vec())
        .await
        .expect("publish");
    assert_eq!(recv(&mut early).await, b"after");
    assert_quiet(&mut other).await;
    assert_quiet(&mut early).await;
}

async fn dropping_a_subscription_unsubscribes_only_it(backend: Backend) {
    let (publisher, node) = (backend.node().await, backend.node().await);
    let first = node.subscribe("leave").await.expect("subscribe");
    let mut second = node.subscribe("leave").await.expect("subscribe");
    drop(first);
    publisher
        .publish("leave", b"1".to_vec())
        .await
        .expect("publish");
    assert_eq!(recv(&mut second).await, b"1");
    drop(second);
    // A fresh subscription on the same channel works after the last one left.
    let mut again = node.subscribe("leave").await.expect("subscribe again");
    publisher
        .publish("leave", b"2".to_vec())
        .await
        .expect("publish");
    assert_eq!(recv(&mut again).await, b"2");
}

async fn large_and_binary_payloads_arrive_intact(backend: Backend) {
    let (publisher, node) = (backend.node().await, backend.node().await);
    let mut sub = node.subscribe("bytes").await.expect("subscribe");
    let large: Vec<u8> = (0..8 * 1024 * 1024_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let every_byte: Vec<u8> = (0..=255).collect();
    for payload in [large, Vec::new(), every_byte, b"\r\n$-1\r\n".to_vec()] {
        publisher
            .publish("bytes", payload.clone())
            .await
            .expect("publish");
        let got = recv(&mut sub).await;
        assert_eq!(got.len(), payload.len());
        assert!(
            got == payload,
            "payload of {} bytes changed in transit",
            payload.len()
        );
    }
}

async fn a_full_subscriber_drops_and_counts_without_blocking_others(backend: Backend) {
    let publisher = backend.node().await;
    // A node whose subscriptions buffer 16 messages. Memory capacity is per transport, so there
    // the slow node is a separate transport and gets its own copy of the burst.
    let (slow_node, separate) = match &backend {
        _ if backend.is_memory() => (
            Arc::new(MemoryTransport::with_capacity(16)) as Arc<dyn Transport>,
            true,
        ),
        _ => (backend.node_with_capacity(16).await, false),
    };
    let mut slow = slow_node.subscribe("burst").await.expect("subscribe");
    let mut fast = publisher.subscribe("burst").await.expect("subscribe");
    for n in 0..50_u8 {
        publisher.publish("burst", vec![n]).await.expect("publish");
        if separate {
            slow_node.publish("burst", vec![n]).await.expect("publish");
        }
    }
    for n in 0..50_u8 {
        assert_eq!(
            recv(&mut fast).await,
            vec![n],
            "the fast subscriber lost a message"
        );
    }
    let deadline = tokio::time::Instant::now() + ARRIVES_WITHIN;
    while slow.dropped() < 34 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.dropped(), 34);
    for n in 0..16_u8 {
        assert_eq!(
            recv(&mut slow).await,
            vec![n],
            "the slow subscriber keeps the oldest messages"
        );
    }
    assert_quiet(&mut slow).await;
}

stellar_testkit::contract_cases!(
    delivers_in_publish_order_per_publisher,
    every_subscriber_gets_its_own_copy,
    delivers_only_subscribed_channels_and_only_after_subscribe,
    dropping_a_subscription_unsubscribes_only_it,
    large_and_binary_payloads_arrive_intact,
    a_full_subscriber_drops_and_counts_without_blocking_others,
);

//! The authenticated bus on both backends: delivery, handlers, and everything it must refuse.

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use stellar_bus::{Bus, BusSettings, Message, START_SKEW};
use stellar_core::ServerToken;
use stellar_testkit::{QUIET_FOR, eventually};
use support::{Backend, api, recv};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    text: String,
    n: u32,
}

/// Collects every message a handler of `message_type` receives.
fn collect(bus: &Bus, message_type: &str) -> Arc<Mutex<Vec<Message>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    bus.subscribe_handler(message_type, move |message| {
        let sink = sink.clone();
        async move {
            sink.lock().expect("collector").push(message);
            Ok(())
        }
    });
    seen
}

fn count(seen: &Arc<Mutex<Vec<Message>>>) -> usize {
    seen.lock().expect("collector").len()
}

/// The default bus settings, signing with `token`.
fn settings(token: &str) -> BusSettings {
    BusSettings::new(ServerToken::new(token))
}

async fn start(backend: &Backend, id: &str, token: &str) -> Bus {
    start_with(backend, id, settings(token)).await
}

async fn start_with(backend: &Backend, id: &str, settings: BusSettings) -> Bus {
    let token = settings.server_token.expose().to_owned();
    Bus::start(&api(id, &token), backend.node().await, settings)
        .await
        .expect("bus starts")
}

async fn broadcasts_reach_every_node_and_the_sender_knows_its_own(backend: Backend) {
    let (a, b, c) = (
        start(&backend, "a", "t").await,
        start(&backend, "b", "t").await,
        start(&backend, "c", "t").await,
    );
    let seen: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|bus| collect(bus, "greeting"))
        .collect();
    a.publish(
        "greeting",
        &Greeting {
            text: "hi".into(),
            n: 1,
        },
    )
    .await
    .expect("publish");
    for (i, seen) in seen.iter().enumerate() {
        eventually("every node gets the broadcast", || count(seen) == 1).await;
        let message = seen.lock().expect("collector")[0].clone();
        assert_eq!(message.sender().as_str(), "a");
        assert_eq!(message.is_own(), i == 0);
        assert!(!message.is_direct());
        assert_eq!(
            message.body::<Greeting>().expect("typed body"),
            Greeting {
                text: "hi".into(),
                n: 1
            }
        );
    }
}

async fn send_to_reaches_only_that_node(backend: Backend) {
    let (a, b, c) = (
        start(&backend, "a", "t").await,
        start(&backend, "b", "t").await,
        start(&backend, "c", "t").await,
    );
    let (at_b, at_c) = (collect(&b, "direct"), collect(&c, "direct"));
    a.send_to(b.node_id(), "direct", &"just for b")
        .await
        .expect("send");
    eventually("b gets it", || count(&at_b) == 1).await;
    assert!(at_b.lock().expect("collector")[0].is_direct());
    tokio::time::sleep(QUIET_FOR).await;
    assert_eq!(count(&at_c), 0, "c got a message sent to b");
    // Direct messages have their own sequence: c sees no gap in a's broadcasts because of them.
    let broadcast_at_c = collect(&c, "after");
    a.publish("after", &()).await.expect("publish");
    a.send_to(b.node_id(), "direct", &"again")
        .await
        .expect("send");
    a.publish("after", &()).await.expect("publish");
    eventually("c gets both broadcasts", || count(&broadcast_at_c) == 2).await;
    assert_eq!(c.stats().possibly_lost, 0, "{:?}", c.stats());
}

async fn handlers_are_per_type_and_can_be_removed(backend: Backend) {
    let (a, b) = (
        start(&backend, "a", "t").await,
        start(&backend, "b", "t").await,
    );
    let first = collect(&b, "kind");
    let second = collect(&b, "kind");
    let other = collect(&b, "other-kind");
    a.publish("kind", &1).await.expect("publish");
    eventually("both handlers of the type run", || {
        count(&first) == 1 && count(&second) == 1
    })
    .await;
    assert_eq!(count(&other), 0);

    let removable = b.subscribe_handler("kind", |_| async { Ok(()) });
    assert!(b.remove_handler(removable));
    assert!(!b.remove_handler(removable), "removing twice reports false");
    a.publish("nobody-listens", &0).await.expect("publish");
    eventually("an unhandled message is counted", || {
        b.stats().unhandled == 1
    })
    .await;
}

async fn a_node_with_another_token_sees_none_of_the_traffic(backend: Backend) {
    let (a, b) = (
        start(&backend, "a", "right").await,
        start(&backend, "b", "right").await,
    );
    let intruder = start(&backend, "intruder", "wrong").await;
    let (at_b, at_intruder) = (collect(&b, "x"), collect(&intruder, "x"));
    a.publish("x", &"secret").await.expect("publish");
    intruder.publish("x", &"forged").await.expect("publish");
    eventually("the intruder's copy is rejected", || {
        intruder.stats().bad_signature == 1
    })
    .await;
    eventually("b rejects the forged one", || b.stats().bad_signature == 1).await;
    eventually("b gets the real one", || count(&at_b) == 1).await;
    tokio::time::sleep(QUIET_FOR).await;
    assert_eq!(count(&at_b), 1, "b accepted the forged message");
    let read: Vec<String> = at_intruder
        .lock()
        .expect("collector")
        .iter()
        .map(|m| m.sender().to_string())
        .collect();
    assert_eq!(
        read,
        ["intruder"],
        "the intruder read the cluster's traffic (it sees only its own)"
    );
}

async fn a_previous_token_is_accepted_while_the_cluster_rolls(backend: Backend) {
    let old = start(&backend, "old", "token-1").await;
    let config = BusSettings {
        previous_tokens: vec![ServerToken::new("token-1")],
        ..settings("token-2")
    };
    let rolled = start_with(&backend, "rolled", config).await;
    let at_rolled = collect(&rolled, "x");
    old.publish("x", &1).await.expect("publish");
    eventually("the rolled node accepts the old token", || {
        count(&at_rolled) == 1
    })
    .await;
}

async fn garbage_and_oversized_bytes_are_counted_and_dropped(backend: Backend) {
    let b = start(&backend, "b", "t").await;
    let a = start(&backend, "a", "t").await;
    let seen = collect(&b, "x");
    let raw = backend.node().await;
    raw.publish("stellar:bus", b"not an envelope".to_vec())
        .await
        .expect("publish garbage");
    raw.publish("stellar:bus", Vec::new())
        .await
        .expect("publish nothing");
    raw.publish("stellar:bus", vec![0xff; 2 * 1024 * 1024])
        .await
        .expect("publish oversized");
    let nested = "[".repeat(100_000);
    raw.publish("stellar:bus", nested.into_bytes())
        .await
        .expect("publish nested");
    eventually("garbage counted", || {
        b.stats().malformed == 3 && b.stats().oversized == 1
    })
    .await;
    a.publish("x", &"still works").await.expect("publish");
    eventually("the bus still works", || count(&seen) == 1).await;
    let too_big = "x".repeat(2 * 1024 * 1024);
    assert!(matches!(
        a.publish("x", &too_big).await,
        Err(stellar_bus::Error::TooLarge { .. })
    ));
}

async fn a_replayed_message_is_rejected(backend: Backend) {
    let (a, b) = (
        start(&backend, "a", "t").await,
        start(&backend, "b", "t").await,
    );
    let seen = collect(&b, "pay");
    let spy = backend.node().await;
    let mut tap = spy.subscribe("stellar:bus").await.expect("tap the bus");
    a.publish("pay", &100).await.expect("publish");
    let captured = recv(&mut tap).await;
    eventually("the original arrives", || count(&seen) == 1).await;
    spy.publish("stellar:bus", captured.clone())
        .await
        .expect("replay");
    spy.publish("stellar:bus", captured)
        .await
        .expect("replay again");
    eventually("replays are counted", || b.stats().replayed == 2).await;
    assert_eq!(count(&seen), 1, "a replay reached the handler");
}

async fn a_restarted_node_refuses_messages_sent_to_its_earlier_run(backend: Backend) {
    let (a, b) = (
        start(&backend, "a", "t").await,
        start(&backend, "b", "t").await,
    );
    let seen = collect(&b, "pay");
    let spy = backend.node().await;
    let mut tap = spy.subscribe("stellar:bus").await.expect("tap the bus");
    a.publish("pay", &100).await.expect("publish");
    let captured = recv(&mut tap).await;
    eventually("the original arrives", || count(&seen) == 1).await;
    // b restarts under the same id: a new process with no memory of what it accepted.
    b.api().stop();
    tokio::time::sleep(START_SKEW + Duration::from_millis(200)).await;
    let restarted = start(&backend, "b", "t").await;
    let seen_again = collect(&restarted, "pay");
    spy.publish("stellar:bus", captured).await.expect("replay");
    eventually("the replay is counted", || {
        restarted.stats().before_start == 1
    })
    .await;
    tokio::time::sleep(QUIET_FOR).await;
    assert_eq!(
        count(&seen_again),
        0,
        "the restarted node accepted a replay"
    );
    assert_eq!(restarted.stats().accepted, 0, "{:?}", restarted.stats());
}

async fn a_slow_or_failing_handler_holds_up_no_other(backend: Backend) {
    let (a, b) = (
        start(&backend, "a", "t").await,
        start(&backend, "b", "t").await,
    );
    b.subscribe_handler("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    });
    b.subscribe_handler("fails", |_| async { Err("handler said no".into()) });
    b.subscribe_handler("panics", |_| async { panic!("handler bug") });
    let fast = collect(&b, "fast");
    for message_type in ["slow", "fails", "panics", "slow"] {
        a.publish(message_type, &()).await.expect("publish");
    }
    for n in 0..20 {
        a.publish("fast", &n).await.expect("publish");
    }
    eventually("fast messages flow past the slow handler", || {
        count(&fast) == 20
    })
    .await;
    eventually("failures are counted", || b.stats().handler_failures == 2).await;
}

async fn handlers_run_concurrently_up_to_the_bound(backend: Backend) {
    let a = start(&backend, "a", "t").await;
    let config = BusSettings {
        handler_concurrency: 4,
        ..settings("t")
    };
    let b = start_with(&backend, "b", config).await;
    let (running, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicU64::new(0));
    let (r, p, d) = (running.clone(), peak.clone(), done.clone());
    b.subscribe_handler("work", move |_| {
        let (running, peak, done) = (r.clone(), p.clone(), d.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    for n in 0..12 {
        a.publish("work", &n).await.expect("publish");
    }
    eventually("every call ran", || done.load(Ordering::SeqCst) == 12).await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 1 && peak <= 4, "peak concurrency {peak}");
}

async fn inline_handlers_run_while_every_handler_permit_is_held(backend: Backend) {
    let a = start(&backend, "a", "t").await;
    let config = BusSettings {
        handler_concurrency: 2,
        ..settings("t")
    };
    let b = start_with(&backend, "b", config).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let (started, gate) = (Arc::new(AtomicU64::new(0)), release.clone());
    let counter = started.clone();
    b.subscribe_handler("busy", move |_| {
        let (gate, counter) = (gate.clone(), counter.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            Ok(())
        }
    });
    let inline = Arc::new(AtomicU64::new(0));
    let seen = inline.clone();
    b.subscribe_inline_handler("reply", move |message| {
        assert_eq!(message.sender().as_str(), "a");
        seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    b.subscribe_inline_handler("reply", |_| Err("inline said no".into()));
    // Two hold the permits, the others wait for one; the replies behind them still run.
    for _ in 0..6 {
        a.send_to(b.node_id(), "busy", &()).await.expect("send");
    }
    for _ in 0..3 {
        a.send_to(b.node_id(), "reply", &()).await.expect("send");
    }
    eventually("inline handlers ran past the waiting calls", || {
        inline.load(Ordering::SeqCst) == 3
    })
    .await;
    eventually("two busy calls hold the permits", || {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(QUIET_FOR).await;
    assert_eq!(started.load(Ordering::SeqCst), 2, "the limiter still holds");
    assert_eq!(b.stats().handler_failures, 3, "{:?}", b.stats());
    release.notify_waiters();
}

stellar_testkit::contract_cases!(
    broadcasts_reach_every_node_and_the_sender_knows_its_own,
    send_to_reaches_only_that_node,
    handlers_are_per_type_and_can_be_removed,
    a_node_with_another_token_sees_none_of_the_traffic,
    a_previous_token_is_accepted_while_the_cluster_rolls,
    garbage_and_oversized_bytes_are_counted_and_dropped,
    a_replayed_message_is_rejected,
    a_restarted_node_refuses_messages_sent_to_its_earlier_run,
    a_slow_or_failing_handler_holds_up_no_other,
    handlers_run_concurrently_up_to_the_bound,
    inline_handlers_run_while_every_handler_permit_is_held,
);

//! `GET /metrics` for the web, RPC, cache and Redis families, parsed with a Prometheus text
//! parser: WebSocket connections and room members, RPC calls by method and outcome (a timeout
//! and an unknown method included), cache operations and lock waits, Redis reconnects after
//! the server restarts.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stellar_node::Node;
use stellar_rpc::{Target, Wait};
use stellar_testkit::RedisServer;
use support::{histogram_count, scrape, scrape_until, start, value};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `node`, past its welcome.
async fn ws(node: &Node) -> Ws {
    let addr = node.http_addr().expect("serves HTTP");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket");
    let welcome = recv(&mut socket).await;
    assert!(welcome.get("connection_id").is_some(), "{welcome}");
    socket
}

/// The next JSON text frame, within 5 s.
async fn recv(socket: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("json frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Joins `room` over `socket` and waits for the answer.
async fn join(socket: &mut Ws, room: &str) {
    let call = json!({"action": "room.join", "params": {"room": room}, "id": room});
    socket
        .send(Message::text(call.to_string()))
        .await
        .expect("send");
    let reply = recv(socket).await;
    assert_eq!(reply["id"], room, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_and_room_members_rise_and_fall() {
    let node = start("metrics-ws", None).await;
    let before = scrape(&node).await;
    for gauge in [
        "stellar_ws_connections",
        "stellar_web_rooms",
        "stellar_web_room_members",
    ] {
        assert_eq!(value(&before, gauge, &[]), Some(0.0), "{gauge}");
    }

    let mut ann = ws(&node).await;
    let mut bob = ws(&node).await;
    join(&mut ann, "lobby").await;
    join(&mut bob, "lobby").await;
    join(&mut bob, "kitchen").await;
    let open = scrape(&node).await;
    assert_eq!(value(&open, "stellar_ws_connections", &[]), Some(2.0));
    assert_eq!(
        value(&open, "stellar_ws_connections_accepted_total", &[]),
        Some(2.0)
    );
    assert_eq!(value(&open, "stellar_web_rooms", &[]), Some(2.0));
    assert_eq!(value(&open, "stellar_web_room_members", &[]), Some(3.0));

    bob.close(None).await.expect("close");
    scrape_until(&node, "bob's memberships outlived his connection", |s| {
        value(s, "stellar_ws_connections", &[]) == Some(1.0)
            && value(s, "stellar_web_rooms", &[]) == Some(1.0)
            && value(s, "stellar_web_room_members", &[]) == Some(1.0)
    })
    .await;
    ann.close(None).await.expect("close");
    let closed = scrape_until(&node, "ann's membership outlived her connection", |s| {
        value(s, "stellar_ws_connections", &[]) == Some(0.0)
            && value(s, "stellar_web_room_members", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(value(&closed, "stellar_web_rooms", &[]), Some(0.0));
    assert_eq!(
        value(&closed, "stellar_ws_connections_accepted_total", &[]),
        Some(2.0)
    );
    node.shutdown().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_calls_are_counted_by_method_and_outcome() {
    let node = start("metrics-rpc", None).await;
    let rpc = node.rpc();
    rpc.register("metrics.echo", |_ctx, args: Value| async move { Ok(args) });
    rpc.register("metrics.slow", |_ctx, _args: Value| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(true)
    });
    let me = node.api().node_id().clone();

    let echoed = rpc.call(&me, "metrics.echo", json!(7)).await.expect("echo");
    assert_eq!(echoed, json!(7));
    let unknown = rpc.call(&me, "metrics.no_such", json!(null)).await;
    assert!(
        matches!(unknown, Err(stellar_rpc::Error::NoSuchMethod { .. })),
        "{unknown:?}"
    );
    let slow = rpc
        .do_cluster(
            "metrics.slow",
            json!(null),
            Target::Node(me.clone()),
            Wait::First,
            Some(Duration::from_millis(50)),
        )
        .await;
    assert!(
        matches!(slow, Err(stellar_rpc::Error::Timeout { .. })),
        "{slow:?}"
    );

    let calls = "stellar_rpc_calls_total";
    let served = "stellar_rpc_served_total";
    // The slow handler finishes after its caller gave up: then it is served.
    let after = scrape_until(&node, "the slow call was not served", |s| {
        value(s, served, &[("method", "metrics.slow"), ("outcome", "ok")]) == Some(1.0)
    })
    .await;
    let echo = [("method", "metrics.echo")];
    assert_eq!(
        value(&after, calls, &[echo[0], ("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        value(&after, served, &[echo[0], ("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        histogram_count(&after, "stellar_rpc_call_duration_seconds", &echo),
        Some(1.0)
    );
    // An unknown method is not a label value of its own, on either side.
    assert_eq!(
        value(
            &after,
            calls,
            &[("method", "other"), ("outcome", "remote_error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            served,
            &[("method", "other"), ("outcome", "no_such_method")]
        ),
        Some(1.0)
    );
    assert!(
        after
            .samples
            .iter()
            .all(|s| s.labels.get("method") != Some("metrics.no_such")),
        "the unknown method's name became a label"
    );
    let slow = [("method", "metrics.slow")];
    assert_eq!(
        value(&after, calls, &[slow[0], ("outcome", "timeout")]),
        Some(1.0)
    );
    assert_eq!(
        histogram_count(&after, "stellar_rpc_call_duration_seconds", &slow),
        Some(1.0)
    );
    node.shutdown().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_operations_and_lock_waits_are_counted() {
    let node = start("metrics-cache", None).await;
    let cache = node.cache();
    cache.save("metrics:k", &1, None).await.expect("save");
    let loaded: i64 = cache.load("metrics:k").await.expect("load").value;
    assert_eq!(loaded, 1);
    let missing = cache.load::<i64>("metrics:absent").await;
    assert!(missing.is_err(), "{missing:?}");
    let guard = cache
        .lock("metrics:held", Duration::from_secs(30))
        .await
        .expect("lock");
    let again = cache.lock("metrics:held", Duration::from_secs(30)).await;
    assert!(again.is_err(), "another owner took a held lock");
    // A free key: the check does not wait, and is not observed.
    cache
        .check_lock("metrics:free", Duration::from_millis(100))
        .await
        .expect("free");
    let before = scrape(&node).await;
    assert_eq!(
        histogram_count(&before, "stellar_cache_lock_wait_seconds", &[]),
        Some(0.0)
    );
    // A held key: the check waits for the lock, then gives up.
    let waited = cache
        .check_lock("metrics:held", Duration::from_millis(100))
        .await;
    assert!(waited.is_err(), "the lock is held");
    assert!(cache.unlock(&guard).await.expect("unlock"));

    let after = scrape(&node).await;
    let ops = "stellar_cache_operations_total";
    for (op, result, n) in [
        ("save", "ok", 1.0),
        ("load", "ok", 1.0),
        ("load", "miss", 1.0),
        ("lock", "ok", 1.0),
        ("lock", "locked", 1.0),
        ("unlock", "ok", 1.0),
    ] {
        assert_eq!(
            value(&after, ops, &[("op", op), ("result", result)]),
            Some(n),
            "{op} {result}"
        );
    }
    assert_eq!(
        histogram_count(&after, "stellar_cache_lock_wait_seconds", &[]),
        Some(1.0)
    );
    let waited_for = value(&after, "stellar_cache_lock_wait_seconds_sum", &[]);
    assert!(
        waited_for.is_some_and(|sum| sum >= 0.1),
        "the wait lasted its retry time: {waited_for:?}"
    );
    node.shutdown().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnects_are_counted_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let node = start("metrics-redis", Some(server.url())).await;
    let before = scrape(&node).await;
    for connection in ["shared", "subscriber"] {
        assert_eq!(
            value(
                &before,
                "stellar_redis_reconnects_total",
                &[("connection", connection)]
            ),
            Some(0.0),
            "{connection}"
        );
    }

    // The restart drops every connection; the node's own background work (heartbeats,
    // maintenance) and its subscriber then connect again.
    tokio::task::block_in_place(|| server.restart());
    let after = scrape_until(&node, "no reconnect counted after the restart", |s| {
        ["shared", "subscriber"].iter().all(|connection| {
            value(
                s,
                "stellar_redis_reconnects_total",
                &[("connection", connection)],
            )
            .is_some_and(|n| n >= 1.0)
        })
    })
    .await;
    assert!(
        value(&after, "stellar_node_ready", &[]) == Some(1.0),
        "the node is not ready again"
    );
    node.cache()
        .save("metrics:after-restart", &1, None)
        .await
        .expect("the node uses the restarted server");
    node.shutdown().await.expect("node stops");
}

//! WebSocket sessions: both protocols, limits, the connection map and the drain.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use stellar_testkit::eventually_async;
use stellar_web::{ConnectionId, WebConfig, always_ready};
use support::{Cluster, close_code, http, recv, send, ws};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_client_is_welcomed_and_calls_actions_by_id() {
    let node = Cluster::new().node("web-1").await;
    let mut client = ws(node.addr).await;
    let welcome = recv(&mut client).await;
    assert_eq!(welcome["context"], "api");
    assert_eq!(welcome["node_id"], "web-1");
    let connection_id = welcome["connection_id"].as_str().expect("id").to_owned();

    send(
        &mut client,
        json!({"action": "echo", "params": {"name": "ann"}, "id": 1}),
    )
    .await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["response"]["name"], "ann");
    assert_eq!(reply["response"]["connection"], connection_id.as_str());

    send(&mut client, json!({"action": "nope", "id": "b"})).await;
    let reply = recv(&mut client).await;
    assert_eq!(
        reply,
        json!({"id": "b", "error": {"code": "unknown_action", "message": "unknown action nope"}})
    );

    send(
        &mut client,
        json!({"action": "echo", "params": {}, "id": 2}),
    )
    .await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["error"]["field"], "name");

    client.send(Message::text("{not json")).await.expect("send");
    let reply = recv(&mut client).await;
    assert_eq!(reply["error"]["code"], "malformed_json");

    // Concurrent calls answer by id, whatever order they finish in.
    send(
        &mut client,
        json!({"action": "slow", "params": {"ms": 300}, "id": "late"}),
    )
    .await;
    send(
        &mut client,
        json!({"action": "slow", "params": {"ms": 10}, "id": "early"}),
    )
    .await;
    assert_eq!(recv(&mut client).await["id"], "early");
    assert_eq!(recv(&mut client).await["id"], "late");
    assert!(node.web.stats().ws_bad_frames >= 1);
}

#[tokio::test]
async fn a_client_speaking_only_the_original_protocol_works() {
    let node = Cluster::new().node("web-1").await;
    let mut client = ws(node.addr).await;
    let welcome = recv(&mut client).await;
    assert_eq!(welcome["welcome"], "Hello human! Welcome to Stellar");
    assert_eq!(welcome["context"], "api");
    let me = welcome["connection_id"].clone();

    send(&mut client, json!({"event": "action", "params": {"action": "echo", "name": "ann", "apiVersion": 1}, "messageId": "m1"})).await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["context"], "response");
    assert_eq!(reply["messageId"], "m1");
    assert_eq!(reply["name"], "ann");

    // Without a messageId, the server's count of frames taken when the frame arrived.
    send(
        &mut client,
        json!({"event": "action", "params": {"action": "nope"}}),
    )
    .await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["messageId"], 2);
    assert_eq!(reply["messageCount"], 2);
    assert_eq!(reply["error"]["code"], "unknown_action");

    send(
        &mut client,
        json!({"event": "roomAdd", "room": "lobby", "messageId": 3}),
    )
    .await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["status"], "OK");
    assert_eq!(reply["data"], true);
    assert_eq!(reply["messageId"], 3);

    send(
        &mut client,
        json!({"event": "say", "room": "lobby", "message": "hi", "messageId": 4}),
    )
    .await;
    let (mut chat, mut ack) = (None, None);
    for _ in 0..2 {
        let frame = recv(&mut client).await;
        if frame["context"] == "user" {
            chat = Some(frame)
        } else {
            ack = Some(frame)
        }
    }
    let chat = chat.expect("chat message");
    assert_eq!(chat["message"], "hi");
    assert_eq!(chat["room"], "lobby");
    assert_eq!(chat["from"], me);
    assert!(chat["sentAt"].is_u64());
    assert_eq!(ack.expect("ack")["messageId"], 4);

    send(
        &mut client,
        json!({"event": "roomView", "room": "lobby", "messageId": 5}),
    )
    .await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["data"]["room"], "lobby");
    assert_eq!(reply["data"]["membersCount"], 1);
    assert_eq!(reply["data"]["members"][me.as_str().expect("id")]["id"], me);

    send(
        &mut client,
        json!({"event": "say", "room": "elsewhere", "message": "x", "messageId": 6}),
    )
    .await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["error"]["code"], "forbidden");
    assert_ne!(reply["status"], "OK");

    send(&mut client, json!({"event": "detailsView", "messageId": 7})).await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["data"]["id"], me);
    assert_eq!(reply["data"]["rooms"], json!(["lobby"]));

    send(
        &mut client,
        json!({"event": "roomLeave", "room": "lobby", "messageId": 8}),
    )
    .await;
    assert_eq!(recv(&mut client).await["status"], "OK");

    send(&mut client, json!({"event": "dance", "messageId": 9})).await;
    let reply = recv(&mut client).await;
    assert_eq!(reply["error"]["code"], "bad_request");
    assert_eq!(reply["messageId"], 9);

    send(&mut client, json!({"event": "quit"})).await;
    assert_eq!(recv(&mut client).await["status"], "OK");
    assert_eq!(close_code(&mut client).await, Some(1000));
}

#[tokio::test]
async fn connections_are_in_the_cluster_map_while_open() {
    let node = Cluster::new().node("web-1").await;
    let mut client = ws(node.addr).await;
    let id = recv(&mut client).await["connection_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let holder = node.membership.connection_holder(&id).await.expect("store");
    assert_eq!(holder.map(|n| n.to_string()).as_deref(), Some("web-1"));
    assert_eq!(node.web.connections(), 1);
    client.close(None).await.expect("close");
    drop(client);
    let membership = node.membership.clone();
    eventually_async("the closed connection is released", async || {
        membership
            .connection_holder(&id)
            .await
            .expect("store")
            .is_none()
    })
    .await;
    assert_eq!(node.web.connections(), 0);
    assert!(
        node.web
            .send(&ConnectionId::new(id), json!("gone"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let config = WebConfig::default().with_max_ws_frame_bytes(1024);
    let node = Cluster::new()
        .node_with("web-1", config, always_ready(), true)
        .await;
    let mut client = ws(node.addr).await;
    recv(&mut client).await;
    let big = "x".repeat(4096);
    let _ = client
        .send(Message::text(
            json!({"action": "echo", "params": {"name": big}, "id": 1}).to_string(),
        ))
        .await;
    assert_eq!(close_code(&mut client).await, Some(1009));
    assert_eq!(node.web.stats().ws_too_large, 1);
    // The node keeps serving others.
    let mut other = ws(node.addr).await;
    assert_eq!(recv(&mut other).await["context"], "api");
}

#[tokio::test]
async fn connections_past_the_maximum_are_refused_with_503() {
    let config = WebConfig::default().with_max_ws_connections(1);
    let node = Cluster::new()
        .node_with("web-1", config, always_ready(), true)
        .await;
    let mut first = ws(node.addr).await;
    recv(&mut first).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(node.web.stats().ws_refused, 1);
    drop(first);
    let addr = node.addr;
    eventually_async("a connection is accepted again", async || {
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let config = WebConfig::default().with_idle_timeout(Duration::from_millis(400));
    let node = Cluster::new()
        .node_with("web-1", config, always_ready(), true)
        .await;
    // A raw client that never answers pings: tungstenite answers them only while it is read.
    let mut client = ws(node.addr).await;
    recv(&mut client).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The server closes with 1000; under load the client may instead see the connection end
    // (its automatic pong to a ping racing the close). Either way the socket ends, and the
    // server counts an idle close.
    let code = close_code(&mut client).await;
    assert!(matches!(code, Some(1000) | None), "{code:?}");
    let web = node.web.clone();
    eventually_async("the idle connection is closed", async || {
        web.stats().ws_idle_closed == 1
    })
    .await;
}

#[tokio::test]
async fn draining_sends_going_away_and_empties_the_connection_map() {
    let node = Cluster::new().node("web-1").await;
    let mut client = ws(node.addr).await;
    let id = recv(&mut client).await["connection_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let api = node.api.clone();
    let shutdown = tokio::spawn(async move { api.shutdown().await });
    assert_eq!(close_code(&mut client).await, Some(1001));
    shutdown.await.expect("task").expect("clean shutdown");
    assert!(
        node.membership
            .connection_holder(&id)
            .await
            .expect("store")
            .is_none()
    );
    assert_eq!(node.web.connections(), 0);
}

/// Reads until the reply with `id`, skipping pushed messages.
async fn reply_to(client: &mut support::Ws, id: u64) -> serde_json::Value {
    loop {
        let message = recv(client).await;
        if message["id"] == id {
            return message;
        }
    }
}

#[tokio::test]
async fn only_members_list_a_room_and_a_connection_joins_a_bounded_number_of_rooms() {
    let node = Cluster::new().node("web-1").await;
    let mut member = ws(node.addr).await;
    recv(&mut member).await;
    let mut outsider = ws(node.addr).await;
    recv(&mut outsider).await;
    let join = |id: u64, room: &str| serde_json::json!({"action": "room.join", "params": {"room": room}, "id": id});
    send(&mut member, join(1, "lobby")).await;
    assert!(reply_to(&mut member, 1).await.get("error").is_none());
    let list = serde_json::json!({"action": "room.members", "params": {"room": "lobby"}, "id": 2});
    send(&mut member, list.clone()).await;
    let listed = reply_to(&mut member, 2).await;
    assert_eq!(
        listed["response"]["members"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    send(&mut outsider, list).await;
    let refused = reply_to(&mut outsider, 2).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    // The original protocol's roomView too.
    send(
        &mut outsider,
        serde_json::json!({"event": "roomView", "room": "lobby", "messageId": "v"}),
    )
    .await;
    let view = recv(&mut outsider).await;
    assert!(view.get("error").is_some(), "{view}");
    // Over HTTP there is no connection, hence no membership.
    let http_list = http(node.addr, "GET", "/api/room.members?room=lobby", &[], b"").await;
    assert_ne!(http_list.status, 200, "{http_list:?}");
    // 64 rooms, then a refusal naming the field.
    for n in 0..63 {
        send(&mut member, join(10 + n, &format!("r{n}"))).await;
        assert!(reply_to(&mut member, 10 + n).await.get("error").is_none());
    }
    send(&mut member, join(100, "one-too-many")).await;
    let full = reply_to(&mut member, 100).await;
    assert_eq!(full["error"]["field"], "room", "{full}");
    // Joining a room it is in already is fine.
    send(&mut member, join(101, "lobby")).await;
    assert!(reply_to(&mut member, 101).await.get("error").is_none());
}

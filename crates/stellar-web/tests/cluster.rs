//! Two nodes on one transport: rooms across nodes and pushes to a connection on another node.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use stellar_rpc::{Target, Wait};
use stellar_testkit::eventually_async;
use stellar_web::ConnectionId;
use support::{Cluster, recv, send, ws};

#[tokio::test]
async fn clients_on_two_nodes_in_one_room_hear_each_other_once_and_in_order() {
    let cluster = Cluster::new();
    let (one, two) = (cluster.node("web-1").await, cluster.node("web-2").await);
    // Alice speaks this protocol on node 1, Bob the original one on node 2.
    let mut alice = ws(one.addr).await;
    let alice_id = recv(&mut alice).await["connection_id"].clone();
    let mut bob = ws(two.addr).await;
    let welcome = recv(&mut bob).await;
    assert_eq!(welcome["node_id"], "web-2");
    let bob_id = welcome["connection_id"].clone();

    send(
        &mut alice,
        json!({"action": "room.join", "params": {"room": "lobby"}, "id": 1}),
    )
    .await;
    assert_eq!(recv(&mut alice).await, json!({"id": 1, "response": true}));
    send(
        &mut bob,
        json!({"event": "roomJoin", "room": "lobby", "messageId": "j"}),
    )
    .await;
    assert_eq!(recv(&mut bob).await["status"], "OK");

    send(
        &mut alice,
        json!({"action": "room.members", "params": {"room": "lobby"}, "id": 2}),
    )
    .await;
    let members = recv(&mut alice).await["response"]["members"].clone();
    let nodes: Vec<&Value> = members
        .as_array()
        .expect("list")
        .iter()
        .map(|m| &m["node_id"])
        .collect();
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");
    assert!(nodes.contains(&&json!("web-1")) && nodes.contains(&&json!("web-2")));

    for n in 0..20 {
        send(&mut alice, json!({"action": "room.say", "params": {"room": "lobby", "message": n}, "id": format!("s{n}")})).await;
    }
    let mut heard = Vec::new();
    while heard.len() < 20 {
        let frame = recv(&mut bob).await;
        assert_eq!(frame["context"], "user", "{frame}");
        assert_eq!(frame["from"], alice_id);
        assert_eq!(frame["room"], "lobby");
        heard.push(frame["message"].as_u64().expect("n"));
    }
    assert_eq!(heard, (0..20).collect::<Vec<u64>>());

    send(
        &mut bob,
        json!({"event": "say", "room": "lobby", "message": "hello from 2", "messageId": "s"}),
    )
    .await;
    let mut got = None;
    while got.is_none() {
        let frame = recv(&mut alice).await;
        if frame["context"] == "user" && frame["from"] == bob_id {
            got = Some(frame);
        }
    }
    assert_eq!(got.expect("heard")["message"], "hello from 2");

    // App code broadcasts from the server; each member receives it exactly once.
    two.web
        .rooms()
        .broadcast("lobby", json!("server says"))
        .await
        .expect("broadcast");
    let mut from_server = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(frame) = tokio::time::timeout_at(deadline, recv(&mut bob)).await {
        if frame["message"] == "server says" {
            assert_eq!(frame["from"], Value::Null);
            from_server += 1;
        }
    }
    assert_eq!(from_server, 1);
}

#[tokio::test]
async fn connection_send_reaches_a_client_on_another_node() {
    let cluster = Cluster::new();
    let (one, two) = (cluster.node("web-1").await, cluster.node("web-2").await);
    let mut client = ws(two.addr).await;
    let id = recv(&mut client).await["connection_id"]
        .as_str()
        .expect("id")
        .to_owned();

    let replies = one
        .rpc
        .do_cluster(
            "connection.send",
            json!({"connection_id": id, "message": {"hello": "from web-1"}}),
            Target::Connection(id.clone()),
            Wait::First,
            None,
        )
        .await
        .expect("delivered");
    assert_eq!(replies[0].node_id.as_str(), "web-2");
    let pushed = recv(&mut client).await;
    assert_eq!(
        pushed,
        json!({"context": "alert", "message": {"hello": "from web-1"}})
    );

    // The same through the web API of node 1.
    one.web
        .send(&ConnectionId::new(id.clone()), json!("again"))
        .await
        .expect("sent");
    assert_eq!(recv(&mut client).await["message"], "again");

    // And a connection node 1 holds is joined to a room from node 2.
    let mut local = ws(one.addr).await;
    let local_id = recv(&mut local).await["connection_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        two.web
            .rooms()
            .join(&ConnectionId::new(local_id), "remote")
            .await
            .expect("joined")
    );
    two.web
        .rooms()
        .broadcast("remote", json!("in"))
        .await
        .expect("broadcast");
    assert_eq!(recv(&mut local).await["message"], "in");
}

#[tokio::test]
async fn members_of_a_stopped_node_leave_the_room_and_the_connection_map() {
    let cluster = Cluster::new();
    let (one, two) = (cluster.node("web-1").await, cluster.node("web-2").await);
    let mut on_one = ws(one.addr).await;
    recv(&mut on_one).await;
    let mut on_two = ws(two.addr).await;
    let id_two = recv(&mut on_two).await["connection_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for client in [&mut on_one, &mut on_two] {
        send(
            client,
            json!({"action": "room.join", "params": {"room": "r"}, "id": 1}),
        )
        .await;
        recv(client).await;
    }
    assert_eq!(
        one.web.rooms().members("r").await.expect("members").len(),
        2
    );
    two.api.shutdown().await.expect("clean shutdown");
    let rooms = one.web.rooms().clone();
    eventually_async("the stopped node leaves the room", async || {
        rooms.members("r").await.expect("members").len() == 1
    })
    .await;
    assert!(
        one.membership
            .connection_holder(&id_two)
            .await
            .expect("store")
            .is_none()
    );
}

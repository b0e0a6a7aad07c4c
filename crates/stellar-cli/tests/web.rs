//! The front door with real processes: `stellar run --cluster 3` serving one port, WebSocket
//! clients on different workers chatting in one room, `stellar cluster do connection.send` to a
//! connection held by another worker, and the connection map after disconnects and a SIGKILL.

mod support;

use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stellar_bus::{RedisConfig, RedisPool};
use stellar_testkit::{Process, RedisServer};
use support::{free_port, http_get, stellar};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

const TOKEN: &str = "web-test-token";

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client and the welcome it got: (socket, connection id, node id).
async fn client(port: u16) -> (Socket, String, String) {
    let (mut socket, _) = connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket");
    let welcome = next_json(&mut socket).await;
    let connection = welcome["connection_id"].as_str().expect("connection_id");
    let node = welcome["node_id"].as_str().expect("node_id");
    (socket, connection.to_owned(), node.to_owned())
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

/// Waits for a pushed (not a reply) message containing `needle`.
async fn pushed(socket: &mut Socket, needle: &str) -> Value {
    loop {
        let message = next_json(socket).await;
        if message.get("id").is_none() && message.to_string().contains(needle) {
            return message;
        }
    }
}

async fn call(socket: &mut Socket, id: u64, action: &str, params: Value) -> Value {
    let frame = json!({"action": action, "params": params, "id": id});
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
    loop {
        let message = next_json(socket).await;
        if message["id"] == id {
            return message;
        }
    }
}

fn cli(redis: &RedisServer, args: &[&str]) -> std::process::Output {
    let url = redis.url();
    let mut full = vec!["cluster", "--redis", &url];
    full.extend_from_slice(args);
    stellar(&full)
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .output()
        .expect("stellar cluster")
}

async fn connections_recorded(redis: &RedisServer) -> u64 {
    let pool = RedisPool::connect(RedisConfig::new(redis.url()))
        .await
        .expect("redis");
    pool.query(
        "HLEN",
        redis::cmd("HLEN").arg("stellar:{members}:connections"),
    )
    .await
    .expect("hlen")
}

/// Connects until the welcome names a worker other than those in `avoid`.
async fn client_on_another_worker(port: u16, avoid: &BTreeSet<String>) -> (Socket, String, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (socket, connection, node) = client(port).await;
        if !avoid.contains(&node) {
            return (socket, connection, node);
        }
        drop(socket);
        assert!(
            Instant::now() < deadline,
            "every connection landed on {avoid:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_serve_one_port_chat_across_workers_and_take_pushes_from_the_cli() {
    let redis = RedisServer::start();
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let pid_file = dir.path().join("stellar.pid").display().to_string();
    let addr = format!("127.0.0.1:{port}");
    let url = redis.url();
    let mut command = stellar(&[
        "run",
        "--cluster",
        "3",
        "--redis",
        &url,
        "--http",
        &addr,
        "--pid-file",
        &pid_file,
    ]);
    command
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000")
        .process_group(0);
    let supervisor = Process::spawn("supervisor", command);
    supervisor.wait_for_line(
        &["worker ready", "stellar-worker-3"],
        Duration::from_secs(20),
    );
    for n in 1..=2 {
        supervisor.wait_for_line(
            &["worker ready", &format!("stellar-worker-{n}")],
            Duration::from_secs(20),
        );
    }

    // One port, three processes: each answers, and each sees the three.
    let mut answered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.len() < 3 {
        let (status, body) = http_get(port, "/api/status");
        assert_eq!(status, 200, "{body}");
        let nodes: BTreeSet<&str> = body["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if nodes.len() == 3 {
            answered.insert(body["node_id"].as_str().expect("node id").to_owned());
        }
        assert!(Instant::now() < deadline, "only {answered:?} answered");
    }
    let (status, _) = http_get(port, "/readyz");
    assert_eq!(status, 200);

    // Two clients on two different workers, one room.
    let (mut ann, ann_id, ann_node) = client(port).await;
    let (mut bob, bob_id, bob_node) =
        client_on_another_worker(port, &BTreeSet::from([ann_node.clone()])).await;
    assert_ne!(ann_node, bob_node);
    for (socket, id) in [(&mut ann, 1), (&mut bob, 1)] {
        let joined = call(socket, id, "room.join", json!({"room": "lobby"})).await;
        assert!(joined.get("error").is_none(), "{joined}");
    }
    let said = call(
        &mut ann,
        2,
        "room.say",
        json!({"room": "lobby", "message": "hello bob"}),
    )
    .await;
    assert!(said.get("error").is_none(), "{said}");
    let heard = pushed(&mut bob, "hello bob").await;
    assert_eq!(heard["room"], "lobby", "{heard}");
    let members = call(&mut bob, 2, "room.members", json!({"room": "lobby"})).await;
    assert_eq!(
        members["response"]["members"].as_array().map(Vec::len),
        Some(2),
        "{members}"
    );

    // A push from the command line to a connection held by another worker than the one the CLI
    // happens to reach: the RPC goes to the holder.
    let sent = cli(
        &redis,
        &[
            "do",
            "connection.send",
            r#"{"message":{"note":"from the cli"}}"#,
            "--connection",
            &bob_id,
            "--wait",
            "first",
        ],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let alert = pushed(&mut bob, "from the cli").await;
    assert_eq!(alert["context"], "alert", "{alert}");

    // Disconnects empty the connection map.
    assert_eq!(connections_recorded(&redis).await, 2);
    drop(ann);
    drop(bob);
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections_recorded(&redis).await > 0 {
        assert!(
            Instant::now() < deadline,
            "connections left after disconnects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A SIGKILLed worker's connections do not outlive it: its next run forgets them.
    let (socket, held, node) = client(port).await;
    assert_eq!(connections_recorded(&redis).await, 1, "{held}");
    let status = cli(&redis, &["do", "api.status", "--node", &node, "--json"]);
    let replies: Value = serde_json::from_slice(&status.stdout).expect("json");
    let pid = replies[0]["ok"]["pid"].as_i64().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(20);
    while connections_recorded(&redis).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the killed worker's connection is still recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = ann_id;
    drop(supervisor);
}

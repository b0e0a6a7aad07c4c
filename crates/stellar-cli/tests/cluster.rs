//! Three real `stellar run` processes on a spawned Redis, driven with `stellar cluster`.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

mod support;

use futures_util::StreamExt;
use serde_json::Value;
use stellar_testkit::{Process, RedisServer};
use support::stellar;

const TOKEN: &str = "cluster-test-token";
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A Redis and the nodes started on it.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<Process>,
}

impl Cluster {
    fn start(ids: &[&str]) -> Self {
        let mut cluster = Self {
            redis: RedisServer::start(),
            nodes: Vec::new(),
        };
        for id in ids {
            cluster.add(id, TOKEN);
        }
        cluster
    }

    fn add(&mut self, id: &str, token: &str) -> &mut Process {
        let node = Process::spawn(id, self.run_command(id, token));
        node.wait_for_line(&["node ready", id], READY_WITHIN);
        self.nodes.push(node);
        self.nodes.last_mut().expect("just pushed")
    }

    /// `stellar run --id ID` on this cluster's Redis, not yet started.
    fn run_command(&self, id: &str, token: &str) -> Command {
        let mut command = stellar(&["run", "--id", id, "--redis", &self.redis.url()]);
        command
            .env("STELLAR_SERVER_TOKEN", token)
            .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
            .env("STELLAR_HEARTBEAT_TTL_MS", "1000");
        command
    }

    /// The incarnation of each live node, by id, from `cluster status --json`.
    fn incarnations(&self) -> Vec<(String, u64)> {
        let nodes = self.json(&["status", "--json"]);
        nodes
            .as_array()
            .expect("array")
            .iter()
            .map(|n| {
                let id = n["id"].as_str().expect("id").to_owned();
                (id, n["incarnation"].as_u64().expect("incarnation"))
            })
            .collect()
    }

    fn node(&mut self, id: &str) -> &mut Process {
        let index = self
            .nodes
            .iter()
            .position(|n| n.output().contains(&format!("node_id={id} ")))
            .expect("known node");
        &mut self.nodes[index]
    }

    /// Runs `stellar cluster ARGS…` with the cluster's token.
    fn client(&self, args: &[&str]) -> Output {
        self.client_with_token(TOKEN, args)
    }

    fn client_with_token(&self, token: &str, args: &[&str]) -> Output {
        let mut full = vec!["cluster", "--redis"];
        let url = self.redis.url();
        full.push(&url);
        full.extend_from_slice(args);
        stellar(&full)
            .env("STELLAR_SERVER_TOKEN", token)
            .output()
            .expect("run stellar cluster")
    }

    fn json(&self, args: &[&str]) -> Value {
        let output = self.client(args);
        assert!(output.status.success(), "{}", describe(&output));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", describe(&output)))
    }

    fn status_ids(&self, token: &str) -> Vec<String> {
        let output = self.client_with_token(token, &["status", "--json"]);
        assert!(output.status.success(), "{}", describe(&output));
        ids(&output)
    }
}

/// The node ids in the output of `cluster status --json`.
fn ids(output: &Output) -> Vec<String> {
    let nodes: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", describe(output)));
    nodes
        .as_array()
        .expect("array")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_owned())
        .collect()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn status_lists_every_live_node() {
    let cluster = Cluster::start(&["n1", "n2", "n3"]);
    assert_eq!(cluster.status_ids(TOKEN), ["n1", "n2", "n3"]);
    let table = cluster.client(&["status"]);
    assert!(table.status.success(), "{}", describe(&table));
    let text = stdout(&table);
    assert!(text.contains("3 node(s)") && text.contains("n2"), "{text}");
}

#[test]
fn wait_all_ping_gets_one_reply_per_node() {
    let cluster = Cluster::start(&["n1", "n2", "n3"]);
    let replies = cluster.json(&["do", "api.ping", "--wait", "all", "--json"]);
    let ids: Vec<&str> = replies
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["node"].as_str().expect("node"))
        .collect();
    assert_eq!(ids, ["n1", "n2", "n3"]);
    assert!(
        replies
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["ok"]["pong"] == Value::Bool(true)),
        "{replies}"
    );
    let text = stdout(&cluster.client(&["do", "api.ping"]));
    assert_eq!(
        text.lines().count(),
        4,
        "a header and one row per node: {text}"
    );
}

#[test]
fn a_node_target_hits_exactly_one_node() {
    let mut cluster = Cluster::start(&["n1", "n2", "n3"]);
    let output = cluster.client(&[
        "do",
        "api.log",
        r#"{"message":"marker-for-n2","level":"warn"}"#,
        "--node",
        "n2",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout(&output), "NODE  REPLY\nn2    true\n");
    cluster
        .node("n2")
        .wait_for_line(&["marker-for-n2"], Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    for other in ["n1", "n3"] {
        assert!(
            !cluster.node(other).output().contains("marker-for-n2"),
            "{other} ran a call meant for n2"
        );
    }
}

#[test]
fn api_stop_stops_one_node_and_status_shows_the_rest() {
    let mut cluster = Cluster::start(&["n1", "n2", "n3"]);
    // n1 must have seen n3 before it can see it leave.
    cluster.node("n1").wait_for_line(
        &["member n3 has joined the cluster"],
        Duration::from_secs(3),
    );
    let output = cluster.client(&["do", "api.stop", "--node", "n3"]);
    assert!(output.status.success(), "{}", describe(&output));
    let status = cluster.node("n3").wait_exit(Duration::from_secs(5));
    assert!(status.success(), "n3 exited with {status:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while cluster.status_ids(TOKEN).len() != 2 {
        assert!(Instant::now() < deadline, "n3 still listed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cluster.status_ids(TOKEN), ["n1", "n2"]);
    cluster
        .node("n1")
        .wait_for_line(&["member n3 has left the cluster"], Duration::from_secs(3));
}

#[test]
fn a_second_node_with_a_live_id_refuses_to_start_unless_it_replaces_that_run() {
    let mut cluster = Cluster::start(&["twin"]);
    let first = cluster.incarnations();
    assert_eq!(first.len(), 1, "{first:?}");
    let mut second = Process::spawn("twin-2", cluster.run_command("twin", TOKEN));
    let status = second.wait_exit(READY_WITHIN);
    assert!(!status.success(), "the second twin started: {status:?}");
    let output = second.output();
    assert!(
        output.contains("node id twin is already in use"),
        "the refusal does not name the id:\n{output}"
    );
    assert_eq!(
        cluster.incarnations(),
        first,
        "the first twin was disturbed"
    );
    // A supervised handover names the run it replaces, and takes the id over.
    let mut command = cluster.run_command("twin", TOKEN);
    command.env("STELLAR_REPLACES_INCARNATION", first[0].1.to_string());
    let replacement = Process::spawn("twin-3", command);
    replacement.wait_for_line(&["node ready", "twin"], READY_WITHIN);
    let replaced = cluster.incarnations();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_ne!(
        replaced[0].1, first[0].1,
        "the replacement did not take over"
    );
    cluster.node("twin").wait_for_line(
        &["another run of this node took over its id"],
        Duration::from_secs(3),
    );
    cluster.node("twin").signal("TERM");
    assert!(
        cluster
            .node("twin")
            .wait_exit(Duration::from_secs(10))
            .success()
    );
    assert_eq!(
        cluster.incarnations(),
        replaced,
        "the old run's stop removed the replacement's record"
    );
    drop(replacement);
}

#[test]
fn a_node_killed_without_leaving_restarts_at_once_under_its_id() {
    let mut cluster = Cluster::start(&["phoenix"]);
    let before = cluster.incarnations();
    cluster.node("phoenix").signal("KILL");
    cluster.node("phoenix").wait_exit(Duration::from_secs(5));
    // Its record is still live (1 s TTL), as when a supervisor restarts a crashed worker.
    let restarted = Process::spawn("phoenix-2", cluster.run_command("phoenix", TOKEN));
    restarted.wait_for_line(&["node ready", "phoenix"], READY_WITHIN);
    let after = cluster.incarnations();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].1, before[0].1);
    drop(restarted);
}

#[test]
fn every_node_logs_members_joining() {
    let mut cluster = Cluster::start(&["n1"]);
    cluster.add("n2", TOKEN);
    cluster.node("n1").wait_for_line(
        &["member n2 has joined the cluster"],
        Duration::from_secs(3),
    );
}

#[test]
fn errors_and_timeouts_exit_non_zero() {
    let mut cluster = Cluster::start(&["n1", "n2", "n3"]);
    let unknown_method = cluster.client(&["do", "no.such.method"]);
    assert!(!unknown_method.status.success());
    assert_eq!(
        stdout(&unknown_method).matches("no such method").count(),
        3,
        "{}",
        describe(&unknown_method)
    );
    let unknown_node = cluster.client(&["do", "api.ping", "--node", "ghost"]);
    assert!(!unknown_node.status.success());
    assert!(
        String::from_utf8_lossy(&unknown_node.stderr).contains("ghost"),
        "{}",
        describe(&unknown_node)
    );

    cluster.node("n2").signal("STOP");
    let started = Instant::now();
    let partial = cluster.client(&["do", "api.ping", "--timeout", "700"]);
    cluster.node("n2").signal("CONT");
    assert!(!partial.status.success(), "{}", describe(&partial));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = stdout(&partial);
    assert!(
        text.contains("n1    {") && text.contains("n3    {"),
        "{text}"
    );
    assert!(
        text.contains("n2    error: no reply within 700 ms"),
        "{text}"
    );
}

#[test]
fn a_node_with_another_token_sees_none_of_the_traffic() {
    let mut cluster = Cluster::start(&["n1", "n2", "n3"]);
    cluster.add("outsider", "another-token");
    // Each side lists its own nodes, and says that a record did not verify (exit code 1).
    let ours = cluster.client(&["status", "--json"]);
    assert!(!ours.status.success(), "{}", describe(&ours));
    assert!(
        String::from_utf8_lossy(&ours.stderr)
            .contains("1 node record is signed with another token"),
        "{}",
        describe(&ours)
    );
    assert_eq!(
        ids(&ours),
        ["n1", "n2", "n3"],
        "the outsider is not a member"
    );
    let theirs = cluster.client_with_token("another-token", &["status", "--json"]);
    assert!(
        String::from_utf8_lossy(&theirs.stderr)
            .contains("3 node records are signed with another token"),
        "{}",
        describe(&theirs)
    );
    assert_eq!(ids(&theirs), ["outsider"]);
    let replies = cluster.client(&["do", "api.ping", "--json"]);
    assert!(!replies.status.success(), "{}", describe(&replies));
    let replies: Value = serde_json::from_slice(&replies.stdout).expect("JSON");
    assert_eq!(replies.as_array().expect("array").len(), 3);

    let output = cluster.client_with_token(
        "another-token",
        &["do", "api.status", "--node", "outsider", "--json"],
    );
    let status: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        status[0]["ok"]["bus"]["bad_signature"]
            .as_u64()
            .expect("counter")
            > 0,
        "{status}"
    );
    assert!(
        !cluster.node("outsider").output().contains("api.ping"),
        "the outsider logged cluster traffic"
    );
}

#[test]
fn garbage_on_the_bus_is_counted_and_rpc_keeps_working() {
    let cluster = Cluster::start(&["n1", "n2", "n3"]);
    let port = cluster.redis.port().to_string();
    for garbage in ["garbage", "", "{\"messageType\":\"api.stop\"}"] {
        let status = Command::new("redis-cli")
            .args(["-p", &port, "PUBLISH", "stellar:bus", garbage])
            .output()
            .expect("redis-cli");
        assert!(status.status.success());
    }
    let replies = cluster.json(&["do", "api.status", "--node", "n1", "--json"]);
    assert!(
        replies[0]["ok"]["bus"]["malformed"]
            .as_u64()
            .expect("counter")
            >= 3,
        "{replies}"
    );
    assert_eq!(
        cluster.status_ids(TOKEN),
        ["n1", "n2", "n3"],
        "a forged stop stopped a node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_captured_message_is_rejected() {
    let cluster = Cluster::start(&["n1", "n2", "n3"]);
    let client = redis::Client::open(cluster.redis.url()).expect("client");
    let (mut sink, mut stream) = client.get_async_pubsub().await.expect("pubsub").split();
    sink.subscribe("stellar:bus").await.expect("subscribe");
    let published = tokio::task::spawn_blocking({
        let url = cluster.redis.url();
        move || {
            stellar(&[
                "cluster",
                "--redis",
                &url,
                "publish",
                "payment",
                r#"{"amount":100}"#,
            ])
            .env("STELLAR_SERVER_TOKEN", TOKEN)
            .output()
            .expect("publish")
        }
    });
    let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message in time");
    let captured = message.expect("stream open").get_payload_bytes().to_vec();
    assert!(published.await.expect("joined").status.success());
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    for _ in 0..2 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("stellar:bus")
            .arg(&captured)
            .query_async(&mut conn)
            .await
            .expect("replay");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = cluster.redis.url();
    let replies = tokio::task::spawn_blocking(move || {
        let output = stellar(&[
            "cluster",
            "--redis",
            &url,
            "do",
            "api.status",
            "--node",
            "n1",
            "--json",
        ])
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .output()
        .expect("status");
        serde_json::from_slice::<Value>(&output.stdout).expect("JSON")
    })
    .await
    .expect("joined");
    assert_eq!(
        replies[0]["ok"]["bus"]["replayed"],
        Value::from(2),
        "{replies}"
    );
}

#[test]
fn cluster_commands_need_redis_and_a_real_token() {
    let no_redis = stellar(&["cluster", "status"]).output().expect("run");
    assert!(!no_redis.status.success());
    assert!(
        String::from_utf8_lossy(&no_redis.stderr).contains("--redis"),
        "{}",
        describe(&no_redis)
    );
    let default_token = stellar(&["cluster", "--redis", "redis://127.0.0.1:1", "status"])
        .output()
        .expect("run");
    assert!(!default_token.status.success());
    assert!(
        String::from_utf8_lossy(&default_token.stderr).contains("STELLAR_SERVER_TOKEN"),
        "{}",
        describe(&default_token)
    );
}

#[test]
fn quiet_stops_a_node_taking_tasks_and_pause_holds_a_queue() {
    let mut cluster = Cluster::start(&["q1"]);
    let output = cluster.client(&["quiet", "q1"]);
    assert!(output.status.success(), "{}", describe(&output));
    cluster
        .node("q1")
        .wait_for_line(&["tasks quiet set", "quiet=true"], Duration::from_secs(5));
    let status = cluster.json(&["do", "api.status", "--node", "q1", "--json"]);
    assert_eq!(status[0]["ok"]["gauges"]["tasks_quiet"], 1, "{status}");
    let output = cluster.client(&["quiet", "q1", "--undo"]);
    assert!(output.status.success(), "{}", describe(&output));
    cluster
        .node("q1")
        .wait_for_line(&["tasks quiet set", "quiet=false"], Duration::from_secs(5));
    let unknown = cluster.client(&["quiet", "nobody"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));

    let url = cluster.redis.url();
    let tasks = |args: &[&str]| {
        let mut full = vec!["tasks", "--redis", &url];
        full.extend_from_slice(args);
        stellar(&full)
            .env("STELLAR_SERVER_TOKEN", TOKEN)
            .output()
            .expect("run stellar tasks")
    };
    let paused = tasks(&["pause", "mail"]);
    assert!(paused.status.success(), "{}", describe(&paused));
    assert!(String::from_utf8_lossy(&paused.stderr).contains("paused mail"));
    let again = tasks(&["pause", "mail"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("paused already"));
    let resumed = tasks(&["resume", "mail"]);
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resumed mail"));
}

//! The README's cluster example on each Redis deployment it names: two `stellar run` nodes with
//! their own HTTP ports on a Redis Cluster, then on Sentinel (through a failover), driven with the
//! `stellar` client commands as a reader would.

mod support;

use std::{
    collections::BTreeSet,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::Value;
use stellar_testkit::{Process, RedisCluster, RedisSentinel};
use support::{free_port, http_get, stellar};

const TOKEN: &str = "deployments-test-token";
const NODES: [&str; 2] = ["web-1", "web-2"];
/// How long a node may take to be ready, and the cluster to see a change.
const WITHIN: Duration = Duration::from_secs(20);

/// Two nodes on one Redis URL, each serving HTTP on its own port.
struct Nodes {
    url: String,
    nodes: Vec<(Process, u16)>,
}

impl Nodes {
    /// Starts [`NODES`] on `url`, each running one task at a time, so two tasks in a row land on
    /// both nodes.
    fn start(url: String) -> Self {
        let nodes = NODES
            .iter()
            .map(|id| {
                let port = free_port();
                let http = format!("127.0.0.1:{port}");
                let mut command = stellar(&["run", "--id", id, "--redis", &url, "--http", &http]);
                command
                    .env("STELLAR_SERVER_TOKEN", TOKEN)
                    .env("STELLAR_TASK_CONCURRENCY", "1")
                    .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
                    .env("STELLAR_HEARTBEAT_TTL_MS", "1000");
                let process = Process::spawn(id, command);
                process.wait_for_line(&["node ready", id], WITHIN);
                (process, port)
            })
            .collect();
        Self { url, nodes }
    }

    /// `stellar ARGS… --redis URL` with the cluster's token.
    fn cli(&self, args: &[&str]) -> Output {
        stellar(args)
            .args(["--redis", &self.url])
            .env("STELLAR_SERVER_TOKEN", TOKEN)
            .output()
            .expect("run stellar")
    }

    /// As [`Nodes::cli`], asserting success, and returning stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "{args:?}: status {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// As [`Nodes::ok`], parsing stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{args:?}: not JSON ({err}): {stdout}"))
    }

    /// Everything the README's cluster example shows, on this deployment; `label` names the step
    /// in values and messages.
    fn serve_the_readme_example(&self, label: &str) {
        self.wait_until_both_listed(label);
        for (_, port) in &self.nodes {
            let (status, body) = http_get(*port, "/api/status");
            assert_eq!(status, 200, "{label}: /api/status on {port}: {body}");
            assert_eq!(ids(&body["nodes"]), NODES, "{label}: {body}");
        }
        self.wait_for_both_pongs(label);
        self.tasks_run_on_both_nodes(label);
        let value = format!(r#""hello from {label}""#);
        self.ok(&["cache", "set", "greeting", &value]);
        assert_eq!(self.ok(&["cache", "get", "greeting"]), value, "{label}");
    }

    /// Waits until `cluster status --json` lists both nodes.
    fn wait_until_both_listed(&self, label: &str) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let listed = self.json(&["cluster", "status", "--json"]);
            if ids(&listed) == NODES {
                return;
            }
            assert!(Instant::now() < deadline, "{label}: status lists {listed}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `cluster do api.ping` gets a pong from both nodes. A call is one message on
    /// the bus (pub/sub), so one sent while a node's subscriber reconnects (after a failover) is
    /// not heard: the caller asks again, as a person would.
    fn wait_for_both_pongs(&self, label: &str) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let output = self.cli(&["cluster", "do", "api.ping", "--json", "--timeout", "1000"]);
            let replies: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
            let mut pongs: Vec<&str> = replies
                .as_array()
                .into_iter()
                .flatten()
                .filter(|reply| reply["ok"]["pong"] == Value::Bool(true))
                .filter_map(|reply| reply["node"].as_str())
                .collect();
            pongs.sort_unstable();
            if output.status.success() && pongs == NODES {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: api.ping answered {replies}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Enqueues two tasks that each keep a node busy (one task at a time) and checks that both
    /// complete, one on each node.
    fn tasks_run_on_both_nodes(&self, label: &str) {
        let ids: Vec<String> = (0..2)
            .map(|_| self.ok(&["tasks", "enqueue", "stellar.sleep", r#"{"ms": 1500}"#]))
            .collect();
        let deadline = Instant::now() + WITHIN;
        let mut ran_on = BTreeSet::new();
        for id in &ids {
            loop {
                let record = self.json(&["tasks", "show", id, "--json"]);
                if record["state"] == "completed" {
                    ran_on.insert(record["node"].as_str().expect("node").to_owned());
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{label}: {id} not completed: {record}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert_eq!(ran_on, BTreeSet::from(NODES.map(str::to_owned)), "{label}");
    }
}

/// The ids of a `cluster status --json` list, or of a `/api/status` `nodes` list, sorted.
fn ids(nodes: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = nodes
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {nodes}"))
        .iter()
        .map(|node| {
            node.as_str()
                .or_else(|| node["id"].as_str())
                .expect("an id")
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn the_readme_cluster_example_runs_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let nodes = Nodes::start(cluster.url());
    nodes.serve_the_readme_example("redis-cluster");
}

#[test]
fn the_readme_cluster_example_runs_on_sentinel_and_follows_a_failover() {
    let mut sentinel = RedisSentinel::start();
    let nodes = Nodes::start(sentinel.url());
    nodes.serve_the_readme_example("sentinel");
    let old_master = sentinel.master_port();
    sentinel.kill_master();
    let new_master = sentinel.wait_for_failover();
    assert_ne!(new_master, old_master);
    nodes.serve_the_readme_example("sentinel after the failover");
    for (process, _) in &nodes.nodes {
        assert!(
            !process.output().contains("panicked"),
            "a node panicked:\n{}",
            process.output()
        );
    }
}

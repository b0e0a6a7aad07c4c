//! A Redis Cluster of `redis-server` children owned by a test.

use std::{path::Path, process::Command, time::Duration};

use crate::{
    RedisServer, Reply,
    redis_server::{Launch, companion_binary, free_port, replica_online, wait_for},
};

/// The number of hash slots of Redis Cluster.
const SLOTS: u16 = 16384;
/// `--cluster-node-timeout`: how long a node may be unreachable before it is failed over.
const NODE_TIMEOUT_MS: u32 = 2000;
/// How long the cluster may take to settle after a creation, a restart, a reshard or a failover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a node of a [`RedisCluster`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A master: it serves hash slots.
    Master,
    /// A replica of the node with this index.
    Replica {
        /// The index of its master in [`RedisCluster::nodes`].
        master: usize,
    },
}

/// One node of a [`RedisCluster`], as the fixture last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    index: usize,
    port: u16,
    id: String,
    role: Role,
}

impl ClusterNode {
    /// Its index: the argument of [`RedisCluster::kill_node`] and the other per-node methods.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The port it serves clients on (its cluster bus has a port of its own).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its cluster node id (`CLUSTER MYID`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Master, or replica of which node.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// A Redis Cluster on loopback ports, every node killed on drop.
///
/// Each node is a [`RedisServer`] with `--cluster-enabled yes`, its `nodes.conf` in its own
/// directory, a node timeout of 2 s and a cluster bus port picked like its client port. Nothing
/// is persisted: a restarted node keeps its place in the cluster (its `nodes.conf`) but not its
/// data. If the test panics, dropping the cluster prints each node's log tail.
///
/// Nodes are numbered in the order they were started; the creation makes the first
/// `masters` nodes masters. Roles change with failovers: [`RedisCluster::nodes`] tells them.
#[derive(Debug)]
pub struct RedisCluster {
    servers: Vec<RedisServer>,
    /// Node ids, by index.
    ids: Vec<String>,
    /// Roles, by index, as last seen (a killed node keeps its last role until a failover).
    roles: Vec<Role>,
}

impl RedisCluster {
    /// Starts a cluster of 3 masters and no replicas.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::start_with_replicas`].
    pub fn start() -> Self {
        Self::start_with_replicas(3, 0)
    }

    /// Starts `masters` masters with `replicas_per_master` replicas each, creates the cluster
    /// with `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`
    /// with all 16384 slots assigned, agrees on who serves them, and every replica is in sync.
    /// Redis keeps a new master's cluster state failed for its first 2 s, so this takes that
    /// long at least.
    ///
    /// # Panics
    ///
    /// Panics if `masters` is below 3 (Redis Cluster's minimum), if `redis-server` or
    /// `redis-cli` is missing, or if the cluster does not settle within 30 s.
    pub fn start_with_replicas(masters: usize, replicas_per_master: usize) -> Self {
        assert!(
            masters >= 3,
            "Redis Cluster needs at least 3 masters, not {masters}"
        );
        let n_nodes = masters * (1 + replicas_per_master);
        let servers: Vec<RedisServer> = (0..n_nodes)
            .map(|_| RedisServer::start_launch(node_launch))
            .collect();
        let ids = servers
            .iter()
            .map(|server| expect_text(&server.command(&["CLUSTER", "MYID"]), "CLUSTER MYID"))
            .collect();
        let mut cluster = Self {
            servers,
            ids,
            roles: vec![Role::Master; n_nodes],
        };
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(cluster.servers.iter().map(|server| address(server.port())));
        args.extend([
            "--cluster-replicas".to_owned(),
            replicas_per_master.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        redis_cli(&args);
        cluster.settle("the new cluster");
        let master_indices: Vec<usize> = cluster.masters().iter().map(ClusterNode::index).collect();
        assert_eq!(
            master_indices,
            (0..masters).collect::<Vec<_>>(),
            "redis-cli made other nodes masters: {cluster:#?}"
        );
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…`: the masters' addresses.
    pub fn url(&self) -> String {
        let masters: Vec<String> = self
            .masters()
            .iter()
            .map(|node| address(node.port()))
            .collect();
        format!("redis+cluster://{}", masters.join(","))
    }

    /// Every node, by index.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        (0..self.servers.len())
            .map(|index| ClusterNode {
                index,
                port: self.servers[index].port(),
                id: self.ids[index].clone(),
                role: self.roles[index],
            })
            .collect()
    }

    /// The nodes that are masters, as last seen (a killed master stays one until
    /// [`RedisCluster::wait_for_failover`] has seen its replica take over).
    pub fn masters(&self) -> Vec<ClusterNode> {
        self.nodes()
            .into_iter()
            .filter(|node| node.role == Role::Master)
            .collect()
    }

    /// The server of node `index`: its log, pid, `PING`.
    ///
    /// # Panics
    ///
    /// Panics if there is no such node.
    pub fn server(&self, index: usize) -> &RedisServer {
        &self.servers[index]
    }

    /// Sends one command to node `index` and returns its reply (a redirection such as `MOVED`
    /// is a [`Reply::Error`]).
    ///
    /// # Panics
    ///
    /// Panics if there is no such node or it cannot be reached.
    pub fn command(&self, index: usize, args: &[&str]) -> Reply {
        self.servers[index].command(args)
    }

    /// Sends commands to node `index` on one connection, in order, and returns their replies
    /// (see [`RedisServer::commands`]).
    ///
    /// # Panics
    ///
    /// Panics if there is no such node or it cannot be reached.
    pub fn commands(&self, index: usize, commands: &[&[&str]]) -> Vec<Reply> {
        self.servers[index].commands(commands)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    ///
    /// # Panics
    ///
    /// Panics if no node answers.
    pub fn slot_of(&self, key: &str) -> u16 {
        let reply = self.any_running().command(&["CLUSTER", "KEYSLOT", key]);
        reply
            .integer()
            .and_then(|slot| u16::try_from(slot).ok())
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {key}: {reply:?}"))
    }

    /// The index of the master serving `slot`, as a running node sees it (`CLUSTER SLOTS`).
    ///
    /// # Panics
    ///
    /// Panics if no node answers or no known node serves the slot.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        let ranges = slot_ranges(self.any_running()).unwrap_or_else(|err| panic!("{err}"));
        let (_, _, port) = ranges
            .into_iter()
            .find(|&(start, end, _)| (start..=end).contains(&slot))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.index_of_port(port)
            .unwrap_or_else(|| panic!("slot {slot} is served by unknown port {port}"))
    }

    /// Kills node `index` with `SIGKILL`. Nothing waits: see [`RedisCluster::wait_for_failover`]
    /// and [`RedisCluster::restart_node`].
    ///
    /// # Panics
    ///
    /// Panics if there is no such node.
    pub fn kill_node(&mut self, index: usize) {
        self.servers[index].kill();
    }

    /// Starts node `index` again on its ports, with its `nodes.conf` (but no data), and waits
    /// until the cluster has settled again (a failed-over master comes back as a replica).
    ///
    /// # Panics
    ///
    /// Panics if there is no such node, it does not start, or the cluster does not settle.
    pub fn restart_node(&mut self, index: usize) {
        self.servers[index].restart();
        self.settle(&format!("node {index} back in the cluster"));
    }

    /// Waits until a replica of the killed master `index` has been promoted and the cluster has
    /// settled (every running node `cluster_state:ok` and agreeing on the slots), and returns the
    /// promoted node's index. The killed node is then a replica of it, as it will be when
    /// restarted. A failover takes the node timeout (2 s) and an election, about 3–4 s.
    ///
    /// # Panics
    ///
    /// Panics if node `index` still runs, was not a master with replicas, or no replica takes
    /// over within 30 s.
    pub fn wait_for_failover(&mut self, index: usize) -> usize {
        assert!(
            !self.servers[index].is_running(),
            "kill node {index} before waiting for its failover"
        );
        let replicas: Vec<usize> = (0..self.roles.len())
            .filter(|&node| self.roles[node] == Role::Replica { master: index })
            .collect();
        assert!(
            self.roles[index] == Role::Master && !replicas.is_empty(),
            "node {index} is not a master with replicas: {:#?}",
            self.nodes()
        );
        let promoted = self.wait_until(&format!("a replica of node {index} promoted"), || {
            let promoted = replicas
                .iter()
                .copied()
                .find(|&replica| role_of(&self.servers[replica]).as_deref() == Some("master"));
            let promoted = promoted.ok_or("no replica reports role master yet")?;
            self.check().map(|()| promoted)
        });
        self.refresh_roles();
        self.roles[index] = Role::Replica { master: promoted };
        promoted
    }

    /// Moves `slots` hash slots from master `from` to master `to` with
    /// `redis-cli --cluster reshard`, keys included, and waits until every node agrees.
    ///
    /// # Panics
    ///
    /// Panics if either node is not a master, `redis-cli` fails, or the cluster does not settle.
    pub fn reshard(&mut self, from: usize, to: usize, slots: u16) {
        assert!(
            self.roles[from] == Role::Master && self.roles[to] == Role::Master,
            "reshard moves slots between masters: {:#?}",
            self.nodes()
        );
        redis_cli(&[
            "--cluster".to_owned(),
            "reshard".to_owned(),
            address(self.servers[from].port()),
            "--cluster-from".to_owned(),
            self.ids[from].clone(),
            "--cluster-to".to_owned(),
            self.ids[to].clone(),
            "--cluster-slots".to_owned(),
            slots.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        self.settle(&format!(
            "{slots} slots moved from node {from} to node {to}"
        ));
    }

    /// Waits until [`RedisCluster::check`] passes, then reads every running node's role.
    fn settle(&mut self, what: &str) {
        self.wait_until(what, || self.check());
        self.refresh_roles();
    }

    /// Whether the running nodes form a healthy cluster: each reports `cluster_state:ok` with
    /// every slot assigned and every node known, all see the same master for each slot, and
    /// every replica among them is connected to its master, which streams writes to it.
    fn check(&self) -> Result<(), String> {
        let mut agreed: Option<Vec<(u16, u16, u16)>> = None;
        for (index, server) in self.running() {
            let info = server
                .try_command(&["CLUSTER", "INFO"])
                .map_err(|err| format!("node {index}: {err}"))?;
            let expected = [
                ("cluster_state", "ok".to_owned()),
                ("cluster_slots_assigned", SLOTS.to_string()),
                ("cluster_known_nodes", self.servers.len().to_string()),
            ];
            for (field, value) in expected {
                let seen = info.field(field);
                if seen.as_deref() != Some(&value) {
                    return Err(format!("node {index}: {field} is {seen:?}, not {value}"));
                }
            }
            let ranges = slot_ranges(server)?;
            match &agreed {
                None => agreed = Some(ranges),
                Some(first) if *first != ranges => {
                    return Err(format!("node {index} sees other slot owners"));
                }
                Some(_) => {}
            }
            let role = server
                .try_command(&["ROLE"])
                .map_err(|err| format!("node {index}: {err}"))?;
            let words = texts(&role);
            if let ["slave", _, master_port, state, ..] =
                words.iter().map(String::as_str).collect::<Vec<_>>()[..]
            {
                if state != "connected" {
                    return Err(format!("replica {index} is {state}"));
                }
                let master_port = master_port.parse().map_err(|_| format!("ROLE: {role:?}"))?;
                replica_online(master_port, server.port())?;
            }
        }
        Ok(())
    }

    /// Reads each running node's role from the node itself (`ROLE`).
    fn refresh_roles(&mut self) {
        for index in 0..self.servers.len() {
            if !self.servers[index].is_running() {
                continue;
            }
            let reply = self.servers[index].command(&["ROLE"]);
            let words = texts(&reply);
            self.roles[index] = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["master", ..] => Role::Master,
                ["slave", _, port, ..] => {
                    let master = port
                        .parse()
                        .ok()
                        .and_then(|port| self.index_of_port(port))
                        .unwrap_or_else(|| panic!("node {index} replicates unknown {port}"));
                    Role::Replica { master }
                }
                _ => panic!("ROLE of node {index}: {reply:?}"),
            };
        }
    }

    /// Polls `probe` until it returns `Ok`, or panics with its last error and each node's view.
    fn wait_until<T>(&self, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        wait_for(SETTLE_TIMEOUT, probe).unwrap_or_else(|reason| {
            panic!(
                "waited {SETTLE_TIMEOUT:?} for {what}: {reason}\n{}",
                self.views()
            )
        })
    }

    /// `CLUSTER NODES` of every running node, for panic messages.
    fn views(&self) -> String {
        self.running()
            .map(|(index, server)| {
                let view = server
                    .try_command(&["CLUSTER", "NODES"])
                    .map(|reply| reply.text().unwrap_or_else(|| format!("{reply:?}")))
                    .unwrap_or_else(|err| err.to_string());
                format!("--- CLUSTER NODES of node {index} ---\n{view}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn running(&self) -> impl Iterator<Item = (usize, &RedisServer)> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.is_running())
    }

    fn any_running(&self) -> &RedisServer {
        self.running()
            .map(|(_, server)| server)
            .next()
            .expect("a running node")
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.servers.iter().position(|server| server.port() == port)
    }
}

/// The arguments of one cluster node, with a bus port of its own.
fn node_launch(dir: &Path, port: u16) -> Launch {
    let bus_port = loop {
        let candidate = free_port();
        if candidate != port {
            break candidate;
        }
    };
    let config_file = dir.join("nodes.conf");
    Launch::args(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &config_file.to_string_lossy(),
        "--cluster-node-timeout",
        &NODE_TIMEOUT_MS.to_string(),
        "--cluster-port",
        &bus_port.to_string(),
        // Replicas sync at once instead of after the default 5 s wait for more replicas.
        "--repl-diskless-sync-delay",
        "0",
    ])
}

/// The slot ranges a node knows, as `(first, last, master port)`, sorted.
fn slot_ranges(server: &RedisServer) -> Result<Vec<(u16, u16, u16)>, String> {
    let reply = server
        .try_command(&["CLUSTER", "SLOTS"])
        .map_err(|err| format!("CLUSTER SLOTS on port {}: {err}", server.port()))?;
    let malformed = || format!("CLUSTER SLOTS on port {}: {reply:?}", server.port());
    let mut ranges = Vec::new();
    for range in reply.array().ok_or_else(malformed)? {
        let number = |reply: Option<&Reply>| {
            reply
                .and_then(Reply::integer)
                .and_then(|value| u16::try_from(value).ok())
        };
        let items = range.array().ok_or_else(malformed)?;
        let master = items.get(2).and_then(Reply::array).ok_or_else(malformed)?;
        match (
            number(items.first()),
            number(items.get(1)),
            number(master.get(1)),
        ) {
            (Some(first), Some(last), Some(port)) => ranges.push((first, last, port)),
            _ => return Err(malformed()),
        }
    }
    ranges.sort_unstable();
    Ok(ranges)
}

/// `master` or `slave`, from the node itself; `None` if it does not answer.
fn role_of(server: &RedisServer) -> Option<String> {
    let reply = server.try_command(&["ROLE"]).ok()?;
    reply.array()?.first()?.text()
}

/// The text of each item of an array reply (integers written out, others empty); empty for
/// a reply that is not an array.
fn texts(reply: &Reply) -> Vec<String> {
    reply
        .array()
        .unwrap_or_default()
        .iter()
        .map(|item| {
            item.text()
                .or_else(|| item.integer().map(|n| n.to_string()))
                .unwrap_or_default()
        })
        .collect()
}

fn expect_text(reply: &Reply, what: &str) -> String {
    reply.text().unwrap_or_else(|| panic!("{what}: {reply:?}"))
}

fn address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Runs `redis-cli` with `args`.
///
/// # Panics
///
/// Panics if `redis-cli` is missing or fails, with its output.
fn redis_cli(args: &[String]) {
    let binary = companion_binary("redis-cli").unwrap_or_else(|| {
        panic!(
            "`redis-cli` not found: cluster tests need it. Install it (Debian/Ubuntu: \
             `apt-get install -y redis-tools`) or put it beside STELLAR_REDIS_SERVER"
        )
    });
    let output = Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
    assert!(
        output.status.success(),
        "redis-cli {args:?} exited with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

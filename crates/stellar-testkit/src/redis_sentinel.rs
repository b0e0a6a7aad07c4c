//! Redis Sentinel: a master, its replica and three sentinels, owned by a test.

use std::{collections::HashMap, path::Path, time::Duration};

use crate::{
    RedisServer, Reply,
    redis_server::{Launch, companion_binary, replica_online, wait_for},
};

/// The name the sentinels monitor the master under.
const MASTER_NAME: &str = "stellar";
/// How many sentinels run; [`QUORUM`] of them must agree the master is down.
const N_SENTINELS: usize = 3;
/// Sentinels that must agree before a failover.
const QUORUM: usize = 2;
/// `down-after-milliseconds`: how long the master may not answer before it counts as down.
const DOWN_AFTER_MS: u32 = 1000;
/// `failover-timeout`: how long a failover may take before another sentinel retries it.
const FAILOVER_TIMEOUT_MS: u32 = 5000;
/// How long the set-up may take to settle after a start or a failover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A master `redis-server`, its replica, and three sentinels monitoring it as `stellar`
/// (quorum 2, down after 1 s, failover timeout 5 s), on loopback ports, all killed on drop.
///
/// Each process is a [`RedisServer`]: no persistence, its own directory (a sentinel rewrites
/// its `sentinel.conf` there), its log tail printed if the test panics.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The data servers: the first starts as the master, the second as its replica.
    servers: Vec<RedisServer>,
    /// The index in `servers` of the master, as the sentinels last reported it.
    master: usize,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// Starts the master, the replica and the sentinels, and waits until the replica is in sync
    /// (its link up, and online for the master) and every sentinel knows the master, the replica and the two other sentinels (sentinels
    /// find each other through hello messages sent every 2 s).
    ///
    /// The sentinels run `redis-sentinel` from `PATH`, or `redis-server --sentinel` when
    /// `STELLAR_REDIS_SERVER` names the server or there is no `redis-sentinel`.
    ///
    /// # Panics
    ///
    /// Panics if a process does not start, or the set-up does not settle within 30 s.
    pub fn start() -> Self {
        // Replicas sync at once instead of after the default 5 s wait for more replicas.
        let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with_args(&[
            "--replicaof",
            "127.0.0.1",
            &master_port,
            "--repl-diskless-sync-delay",
            "0",
        ]);
        wait_until("the replica in sync", || in_sync(&master, &replica));
        let sentinels = (0..N_SENTINELS)
            .map(|_| RedisServer::start_launch(|dir, _| sentinel_launch(dir, master.port())))
            .collect();
        let sentinel = Self {
            servers: vec![master, replica],
            master: 0,
            sentinels,
        };
        wait_until("every sentinel to know the whole set-up", || {
            sentinel.sentinels.iter().try_for_each(knows_everyone)
        });
        sentinel
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/stellar`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// The name the sentinels monitor the master under: `stellar`.
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// The master's port, as the sentinels last reported it.
    pub fn master_port(&self) -> u16 {
        self.servers[self.master].port()
    }

    /// The master's server, as the sentinels last reported it.
    pub fn master(&self) -> &RedisServer {
        &self.servers[self.master]
    }

    /// The other data server: the replica, or after a failover the killed old master.
    pub fn replica(&self) -> &RedisServer {
        &self.servers[1 - self.master]
    }

    /// The sentinels' servers, to ask them `SENTINEL …` with [`RedisServer::command`].
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// Kills the master with `SIGKILL`; see [`RedisSentinel::wait_for_failover`].
    pub fn kill_master(&mut self) {
        self.servers[self.master].kill();
    }

    /// Starts the other data server again (after a failover: the killed old master, with no
    /// data) and makes it a replica of the master with `REPLICAOF`, as an operator would, then
    /// waits until it is in sync. The sentinels would make it one too, but only some 8 s after
    /// they see it back. Until then a master with one replica has none: writes that wait for a
    /// replica (`WAIT 1`) wait in vain.
    ///
    /// # Panics
    ///
    /// Panics if the server does not start, refuses `REPLICAOF`, or is not in sync within 30 s.
    pub fn restart_replica(&mut self) {
        let master_port = self.master_port().to_string();
        let replica = &mut self.servers[1 - self.master];
        replica.restart();
        let reply = replica.command(&["REPLICAOF", "127.0.0.1", &master_port]);
        assert_eq!(reply, Reply::Status("OK".into()), "REPLICAOF {master_port}");
        let (master, replica) = (self.master(), self.replica());
        wait_until("the restarted replica in sync", || in_sync(master, replica));
    }

    /// Waits until every sentinel reports another master address
    /// (`SENTINEL get-master-addr-by-name stellar`) and that server says it is a master, then
    /// returns its port. After [`RedisSentinel::kill_master`] this takes the 1 s down-after
    /// period, the quorum and a leader election: a few seconds.
    ///
    /// # Panics
    ///
    /// Panics if no failover completes within 30 s, or the new master is none of ours.
    pub fn wait_for_failover(&mut self) -> u16 {
        let old_port = self.master_port();
        let new_port = wait_until("the sentinels to report a new master", || {
            let mut ports = self.sentinels.iter().map(reported_master_port);
            let first = ports.next().expect("three sentinels")?;
            if first == old_port {
                return Err(format!("a sentinel still reports port {old_port}"));
            }
            if let Some(other) = ports.map(Result::ok).find(|port| *port != Some(first)) {
                return Err(format!("sentinels report {first} and {other:?}"));
            }
            let role = crate::resp::command(first, &["ROLE"]).map_err(|err| err.to_string())?;
            match role.array().and_then(|items| items.first()?.text()) {
                Some(role) if role == "master" => Ok(first),
                role => Err(format!("port {first} has role {role:?}")),
            }
        });
        self.master = self
            .servers
            .iter()
            .position(|server| server.port() == new_port)
            .unwrap_or_else(|| panic!("the sentinels promoted port {new_port}, none of ours"));
        new_port
    }
}

/// Whether `replica` has its link to `master` up and `master` streams writes to it.
fn in_sync(master: &RedisServer, replica: &RedisServer) -> Result<(), String> {
    let info = replica
        .try_command(&["INFO", "replication"])
        .map_err(|err| err.to_string())?;
    let link = info.field("master_link_status");
    if link.as_deref() != Some("up") {
        return Err(format!("master_link_status is {link:?}"));
    }
    replica_online(master.port(), replica.port())
}

/// How to run one sentinel: its config file, written into its directory, comes first.
fn sentinel_launch(dir: &Path, master_port: u16) -> Launch {
    let config_file = dir.join("sentinel.conf");
    let config = format!(
        "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}\n\
         sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
    );
    std::fs::write(&config_file, config).expect("write sentinel.conf");
    let config_file = config_file.to_string_lossy().into_owned();
    let sentinel_binary = companion_binary("redis-sentinel")
        .filter(|_| std::env::var_os("STELLAR_REDIS_SERVER").is_none());
    match sentinel_binary {
        Some(binary) => Launch {
            program: Some(binary.to_string_lossy().into_owned()),
            leading: vec![config_file],
            trailing: vec![],
        },
        None => Launch {
            program: None,
            leading: vec![config_file, "--sentinel".to_owned()],
            trailing: vec![],
        },
    }
}

/// Whether a sentinel sees the master as up, with one replica and the other sentinels.
fn knows_everyone(sentinel: &RedisServer) -> Result<(), String> {
    let reply = sentinel
        .try_command(&["SENTINEL", "MASTER", MASTER_NAME])
        .map_err(|err| err.to_string())?;
    let fields = pairs(&reply);
    let expected = [
        ("flags", "master".to_owned()),
        ("num-slaves", "1".to_owned()),
        ("num-other-sentinels", (N_SENTINELS - 1).to_string()),
    ];
    for (name, value) in expected {
        let seen = fields.get(name);
        if seen != Some(&value) {
            return Err(format!(
                "sentinel {}: {name} is {seen:?}, not {value}",
                sentinel.port()
            ));
        }
    }
    Ok(())
}

/// The master port a sentinel reports.
fn reported_master_port(sentinel: &RedisServer) -> Result<u16, String> {
    let reply = sentinel
        .try_command(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
        .map_err(|err| err.to_string())?;
    reply
        .array()
        .and_then(|address| address.get(1)?.text()?.parse().ok())
        .ok_or_else(|| format!("sentinel {}: {reply:?}", sentinel.port()))
}

/// A flat array of names and values (`SENTINEL MASTER`) as a map.
fn pairs(reply: &Reply) -> HashMap<String, String> {
    let items = reply.array().unwrap_or_default();
    items
        .chunks_exact(2)
        .filter_map(|pair| Some((pair[0].text()?, pair[1].text()?)))
        .collect()
}

/// Polls `probe` until it returns `Ok`, or panics with its last error.
fn wait_until<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    wait_for(SETTLE_TIMEOUT, probe)
        .unwrap_or_else(|reason| panic!("waited {SETTLE_TIMEOUT:?} for {what}: {reason}"))
}

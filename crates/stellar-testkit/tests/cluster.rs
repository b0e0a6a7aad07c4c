//! `RedisCluster`: a real Redis Cluster that forms, spreads keys, fails over, reshards and
//! leaves nothing behind.

use std::{collections::BTreeSet, path::Path, time::Instant};

use stellar_testkit::{RedisCluster, Reply, Role};

/// Keys with different hash tags, enough of them to land on every master of a small cluster.
fn tagged_keys(count: usize) -> Vec<String> {
    (0..count).map(|tag| format!("{{{tag}}}:value")).collect()
}

/// The number of slots each master serves, by index, as node `viewer` sees it (`CLUSTER SLOTS`).
fn slots_per_master(cluster: &RedisCluster, viewer: usize) -> Vec<(usize, i64)> {
    let reply = cluster.command(viewer, &["CLUSTER", "SLOTS"]);
    let mut counts: Vec<(usize, i64)> = cluster
        .masters()
        .iter()
        .map(|master| (master.index(), 0))
        .collect();
    for range in reply.array().expect("an array of ranges") {
        let items = range.array().expect("a range");
        let (first, last) = (
            items[0].integer().expect("first"),
            items[1].integer().expect("last"),
        );
        let port = items[2].array().expect("the master")[1]
            .integer()
            .expect("its port");
        let master = cluster
            .masters()
            .iter()
            .position(|master| i64::from(master.port()) == port)
            .expect("a known master");
        counts[master].1 += last - first + 1;
    }
    counts
}

#[test]
fn a_new_cluster_is_ok_everywhere_and_spreads_tags_over_its_masters() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!(
        "RedisCluster::start (3 masters) took {:?}",
        started.elapsed()
    );

    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 3);
    for node in &nodes {
        assert_eq!(node.role(), Role::Master);
        let info = cluster.command(node.index(), &["CLUSTER", "INFO"]);
        assert_eq!(
            info.field("cluster_state").as_deref(),
            Some("ok"),
            "{node:?}"
        );
        assert_eq!(
            info.field("cluster_slots_assigned").as_deref(),
            Some("16384")
        );
    }
    let ports: Vec<String> = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    assert_eq!(
        cluster.url(),
        format!("redis+cluster://{}", ports.join(","))
    );

    let mut owners = BTreeSet::new();
    for key in tagged_keys(12) {
        let slot = cluster.slot_of(&key);
        let owner = cluster.master_of_slot(slot);
        owners.insert(owner);
        assert_eq!(
            cluster.command(owner, &["SET", &key, "here"]),
            Reply::Status("OK".into()),
            "{key} on its owner"
        );
        let other = (owner + 1) % nodes.len();
        assert_eq!(
            cluster.command(other, &["SET", &key, "there"]),
            Reply::Error(format!("MOVED {slot} 127.0.0.1:{}", nodes[owner].port())),
            "{key} elsewhere"
        );
    }
    assert_eq!(owners.len(), 3, "twelve tags land on every master");
}

#[test]
fn dropping_a_cluster_leaves_no_process() {
    let cluster = RedisCluster::start();
    let nodes = cluster.nodes();
    let pids: Vec<u32> = nodes
        .iter()
        .map(|node| cluster.server(node.index()).pid().expect("running"))
        .collect();
    drop(cluster);
    for (node, pid) in nodes.iter().zip(pids) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "node {node:?} left pid {pid}"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", node.port())).is_err(),
            "{node:?} still listens"
        );
    }
}

#[test]
fn killing_a_master_promotes_its_replica_and_a_restart_brings_it_back_as_a_replica() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    eprintln!(
        "RedisCluster::start_with_replicas(3, 1) took {:?}",
        started.elapsed()
    );
    assert_eq!(cluster.nodes().len(), 6);
    let masters: Vec<usize> = cluster.masters().iter().map(|node| node.index()).collect();
    assert_eq!(masters, [0, 1, 2], "the first nodes are the masters");

    let victim = cluster.masters()[0].clone();
    let replica = cluster
        .nodes()
        .into_iter()
        .find(|node| {
            node.role()
                == Role::Replica {
                    master: victim.index(),
                }
        })
        .expect("every master has a replica");
    let key = tagged_keys(64)
        .into_iter()
        .find(|key| cluster.master_of_slot(cluster.slot_of(key)) == victim.index())
        .expect("a key on the victim");
    assert_eq!(
        cluster.commands(
            victim.index(),
            &[&["SET", &key, "kept"], &["WAIT", "1", "2000"]]
        ),
        [Reply::Status("OK".into()), Reply::Integer(1)],
        "the write reached the replica"
    );

    cluster.kill_node(victim.index());
    let killed = Instant::now();
    let promoted = cluster.wait_for_failover(victim.index());
    eprintln!("failover after kill_node took {:?}", killed.elapsed());

    assert_eq!(promoted, replica.index());
    let slot = cluster.slot_of(&key);
    assert_eq!(cluster.master_of_slot(slot), promoted);
    assert_eq!(
        cluster.command(promoted, &["GET", &key]).text().as_deref(),
        Some("kept")
    );
    let nodes = cluster.nodes();
    assert_eq!(nodes[promoted].role(), Role::Master);
    assert_eq!(
        nodes[victim.index()].role(),
        Role::Replica { master: promoted }
    );
    assert!(!cluster.url().contains(&format!(":{},", victim.port())));
    assert!(!cluster.url().ends_with(&format!(":{}", victim.port())));

    let restarting = Instant::now();
    cluster.restart_node(victim.index());
    eprintln!("restart_node took {:?}", restarting.elapsed());
    assert_eq!(
        cluster.nodes()[victim.index()].role(),
        Role::Replica { master: promoted }
    );
    let role = cluster.command(victim.index(), &["ROLE"]);
    assert_eq!(
        role.array().and_then(|items| items[0].text()).as_deref(),
        Some("slave")
    );
}

#[test]
fn reshard_moves_slots_and_their_keys_between_masters() {
    let mut cluster = RedisCluster::start();
    let keys = tagged_keys(200);
    for key in &keys {
        let owner = cluster.master_of_slot(cluster.slot_of(key));
        assert_eq!(
            cluster.command(owner, &["SET", key, key]),
            Reply::Status("OK".into())
        );
    }
    let before = slots_per_master(&cluster, 2);

    let resharding = Instant::now();
    cluster.reshard(0, 1, 100);
    eprintln!("reshard of 100 slots took {:?}", resharding.elapsed());

    let after = slots_per_master(&cluster, 2);
    assert_eq!(after[0], (0, before[0].1 - 100));
    assert_eq!(after[1], (1, before[1].1 + 100));
    assert_eq!(after[2], before[2]);
    for key in &keys {
        let owner = cluster.master_of_slot(cluster.slot_of(key));
        assert_eq!(
            cluster.command(owner, &["GET", key]).text().as_deref(),
            Some(key.as_str()),
            "{key} moved with its slot"
        );
    }
}

//! `RedisSentinel`: a master, its replica and three sentinels that fail over when the master dies.

use std::{path::Path, time::Instant};

use stellar_testkit::{RedisSentinel, Reply};

#[test]
fn killing_the_master_makes_the_sentinels_promote_the_replica() {
    let started = Instant::now();
    let mut sentinel = RedisSentinel::start();
    eprintln!("RedisSentinel::start took {:?}", started.elapsed());

    let ports: Vec<String> = sentinel
        .sentinels()
        .iter()
        .map(|server| format!("127.0.0.1:{}", server.port()))
        .collect();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        sentinel.url(),
        format!("redis+sentinel://{}/stellar", ports.join(","))
    );
    let old_port = sentinel.master_port();
    for server in sentinel.sentinels() {
        let address = server.command(&["SENTINEL", "get-master-addr-by-name", "stellar"]);
        let port = address.array().and_then(|items| items[1].text());
        assert_eq!(port, Some(old_port.to_string()));
    }
    assert_eq!(
        sentinel
            .master()
            .commands(&[&["SET", "greeting", "hello"], &["WAIT", "1", "2000"]]),
        [Reply::Status("OK".into()), Reply::Integer(1)],
        "the write reached the replica"
    );

    sentinel.kill_master();
    let killed = Instant::now();
    let new_port = sentinel.wait_for_failover();
    eprintln!("failover after kill_master took {:?}", killed.elapsed());

    assert_ne!(new_port, old_port);
    assert_eq!(sentinel.master_port(), new_port);
    assert_eq!(sentinel.replica().port(), old_port);
    let info = sentinel.master().command(&["INFO", "replication"]);
    assert_eq!(info.field("role").as_deref(), Some("master"));
    assert_eq!(
        sentinel
            .master()
            .command(&["GET", "greeting"])
            .text()
            .as_deref(),
        Some("hello")
    );

    assert_eq!(sentinel.replica().pid(), None, "the old master was killed");
    sentinel.restart_replica();
    let replica = sentinel.replica();
    assert_eq!(replica.port(), old_port, "the old master comes back");
    let info = replica.command(&["INFO", "replication"]);
    assert_eq!(info.field("role").as_deref(), Some("slave"));
    assert_eq!(info.field("master_port"), Some(new_port.to_string()));
    assert_eq!(
        sentinel
            .master()
            .commands(&[&["SET", "greeting", "again"], &["WAIT", "1", "2000"]]),
        [Reply::Status("OK".into()), Reply::Integer(1)],
        "writes reach the restarted replica"
    );
    assert_eq!(
        replica.command(&["GET", "greeting"]).text().as_deref(),
        Some("again")
    );

    let pids: Vec<u32> = sentinel
        .sentinels()
        .iter()
        .chain([sentinel.master(), sentinel.replica()])
        .map(|server| server.pid().expect("running"))
        .collect();
    drop(sentinel);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left behind"
        );
    }
}

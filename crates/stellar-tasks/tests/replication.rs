//! `task_enqueue_wait_replicas`: an enqueue acknowledged only once a replica holds it (Redis
//! `WAIT`), on a real master and replica, and on a Redis Cluster with replicas. Redis only: the
//! memory store has no replicas.

use std::time::{Duration, Instant};

use stellar_bus::{RedisConfig, RedisPool};
use stellar_tasks::{
    Enqueued, RedisTaskStore, StoreError,
    store::{NewTask, TaskInspector, TaskQueue},
};
use stellar_testkit::{RedisCluster, RedisServer, Reply};

fn task(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        name: "work".into(),
        queue: "default".into(),
        args: "null".into(),
        max_attempts: 1,
        due_at_ms: None,
        slot: None,
        signature: String::new(),
        replace: false,
        trace: None,
    }
}

async fn connect(url: String, replicas: usize, wait: Duration) -> RedisTaskStore {
    let pool = RedisPool::connect(RedisConfig::new(url))
        .await
        .expect("redis");
    RedisTaskStore::new(pool).with_enqueue_wait(replicas, wait)
}

/// Waits until `replica` reports its link to the master up.
fn wait_for_link(replica: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = replica
            .command(&["INFO", "replication"])
            .text()
            .unwrap_or_default();
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never synced: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn an_enqueue_that_waits_is_on_the_replica_when_it_returns() {
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port]);
    wait_for_link(&replica);
    let store = connect(master.url(), 1, Duration::from_secs(2)).await;
    for n in 0..20 {
        let id = format!("t{n}");
        assert_eq!(
            store.enqueue(&task(&id)).await.expect("enqueue"),
            Enqueued::Added
        );
        // Read on the replica right away: WAIT returned only once it had the record.
        let key = format!("stellar:{{tasks}}:task:{id}");
        assert_eq!(
            replica.command(&["HGET", &key, "state"]),
            Reply::Bulk(b"queued".to_vec()),
            "{id} is not on the replica when its enqueue returned"
        );
    }
}

#[tokio::test]
async fn an_enqueue_fails_as_not_replicated_when_no_replica_answers_in_time() {
    let master = RedisServer::start();
    let store = connect(master.url(), 1, Duration::from_millis(100)).await;
    let started = Instant::now();
    let err = store.enqueue(&task("alone")).await.expect_err("no replica");
    assert!(
        matches!(
            err,
            StoreError::NotReplicated {
                wanted: 1,
                acked: 0
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient(), "the enqueue's retry tries it again");
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited");
    // The step ran: the task is there, and asking again adds nothing twice.
    assert!(store.show("alone").await.expect("show").is_some());
    let plain = connect(master.url(), 0, Duration::ZERO).await;
    assert!(matches!(
        plain.enqueue(&task("alone")).await.expect("enqueue"),
        Enqueued::Exists(_)
    ));
}

#[tokio::test]
async fn a_retry_that_writes_nothing_still_waits_for_the_first_write() {
    // The first try's write went out on another connection; the retry finds the task and writes
    // nothing itself. Its WAIT must still cover the first try's write: while the replica is
    // stalled (DEBUG SLEEP), the retry fails instead of acknowledging a task no replica holds.
    // (The store writes a fence before its WAIT so this holds whatever the server counts as a
    // connection's last write; Redis 7.0 happens to count a read too, so the fence is not what
    // this test tells apart there.)
    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with_args(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--enable-debug-command",
        "yes",
    ]);
    wait_for_link(&replica);
    let plain = connect(master.url(), 0, Duration::ZERO).await;
    let waiting = connect(master.url(), 1, Duration::from_millis(200)).await;
    let mut sleeper = std::process::Command::new("redis-cli")
        .args(["-p", &replica.port().to_string(), "DEBUG", "SLEEP", "1.5"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-cli");
    tokio::time::sleep(Duration::from_millis(200)).await;
    plain.enqueue(&task("first")).await.expect("enqueue");
    let err = waiting
        .enqueue(&task("first"))
        .await
        .expect_err("the replica sleeps");
    assert!(matches!(err, StoreError::NotReplicated { .. }), "{err:?}");
    sleeper.wait().expect("redis-cli exits");
    // Awake, the replica catches up: the same retry is acknowledged.
    assert!(matches!(
        waiting.enqueue(&task("first")).await.expect("acknowledged"),
        Enqueued::Exists(_)
    ));
}

#[tokio::test]
async fn an_enqueue_on_a_cluster_waits_for_the_replica_of_its_master() {
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let store = connect(cluster.url(), 1, Duration::from_secs(2)).await;
    for n in 0..10 {
        assert_eq!(
            store
                .enqueue(&task(&format!("c{n}")))
                .await
                .expect("enqueue"),
            Enqueued::Added
        );
    }
    let record = store.show("c9").await.expect("show").expect("a record");
    assert_eq!(record.id, "c9");
}

//! A pool on `redis+sentinel://` follows failovers: to the promoted replica after the master is
//! frozen (its TCP connections stay open: commands time out, they never fail), and after a forced
//! failover that demotes a live master (writes to it fail with READONLY). Real servers and real
//! Sentinels (stellar-testkit's `RedisSentinel`). And a blocking command given up on never goes
//! back into the pool still waiting on the server.

use std::time::{Duration, Instant};

use stellar_bus::{RedisConfig, RedisPool};
use stellar_testkit::{RedisSentinel, RedisServer, Reply};

/// Writes `key` until a write succeeds, on the shared connection or, with `blocking`, on a pooled
/// one; panics after `within`.
async fn write_until_accepted(pool: &RedisPool, key: &str, blocking: bool, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let set = redis::cmd("SET").arg(key).arg("v").clone();
        let result = if blocking {
            pool.run_blocking("SET", Duration::from_millis(500), async |conn| {
                set.query_async::<String>(conn).await
            })
            .await
        } else {
            pool.query::<String>("SET", &set).await
        };
        match result {
            Ok(_) => return,
            Err(err) => assert!(
                Instant::now() < deadline,
                "no write accepted within {within:?}: {err:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pool(sentinel: &RedisSentinel) -> RedisPool {
    RedisPool::connect(RedisConfig::new(sentinel.url()).with_op_timeout(Duration::from_millis(300)))
        .await
        .expect("the master, through the Sentinels")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_is_left_for_the_promoted_replica() {
    let mut sentinel = RedisSentinel::start();
    let pool = pool(&sentinel).await;
    write_until_accepted(&pool, "before", false, Duration::from_secs(2)).await;
    write_until_accepted(&pool, "before", true, Duration::from_secs(2)).await;
    let frozen = sentinel.master().pid().expect("the master runs");
    let stop = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &frozen.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {frozen}");
    };
    stop("-STOP");
    let new_master = sentinel.wait_for_failover();
    write_until_accepted(&pool, "after", false, Duration::from_secs(10)).await;
    write_until_accepted(&pool, "after-blocking", true, Duration::from_secs(10)).await;
    let promoted = sentinel.master();
    assert_eq!(promoted.port(), new_master);
    assert_eq!(
        promoted.command(&["GET", "after"]),
        Reply::Bulk(b"v".to_vec())
    );
    assert_eq!(
        promoted.command(&["GET", "after-blocking"]),
        Reply::Bulk(b"v".to_vec())
    );
    // Let the old master run again, so its guard's kill and log work as usual.
    stop("-CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_master_is_left_for_the_new_one() {
    let mut sentinel = RedisSentinel::start();
    let pool = pool(&sentinel).await;
    write_until_accepted(&pool, "before", false, Duration::from_secs(2)).await;
    write_until_accepted(&pool, "before", true, Duration::from_secs(2)).await;
    // A forced failover: the master stays up and becomes a replica.
    let reply = sentinel.sentinels()[0].command(&["SENTINEL", "FAILOVER", "stellar"]);
    assert_eq!(reply, Reply::Status("OK".into()), "{reply:?}");
    let new_master = sentinel.wait_for_failover();
    let promoted = sentinel.master();
    assert_eq!(promoted.port(), new_master);
    // Until the Sentinels turn the old master into a replica, it still takes writes, which its
    // resync to the new master then drops (asynchronous replication: what `WAIT` is for). So
    // write until a write lands on the new master: the pool must get there, not stay behind.
    for (key, blocking) in [("after", false), ("after-blocking", true)] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            write_until_accepted(&pool, key, blocking, Duration::from_secs(10)).await;
            if promoted.command(&["GET", key]) == Reply::Bulk(b"v".to_vec()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{key} never reached the new master"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_pop_given_up_on_takes_nothing_pushed_later() {
    let server = RedisServer::start();
    let pool = RedisPool::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    for _ in 0..3 {
        // The caller gives up long before the command's own deadline.
        let pop = pool.run_blocking("BLPOP", Duration::from_secs(5), async |conn| {
            redis::cmd("BLPOP")
                .arg("q")
                .arg(4)
                .query_async::<Option<(String, String)>>(conn)
                .await
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), pop)
                .await
                .is_err(),
            "nothing to pop"
        );
    }
    let pushed: u64 = pool
        .query("LPUSH", redis::cmd("LPUSH").arg("q").arg("item"))
        .await
        .expect("push");
    assert_eq!(pushed, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left: u64 = pool
        .query("LLEN", redis::cmd("LLEN").arg("q"))
        .await
        .expect("llen");
    assert_eq!(left, 1, "a BLPOP nobody waits for any more took the item");
}

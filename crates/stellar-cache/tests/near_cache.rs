//! The near cache of `RedisCacheStore` against a real `redis-server`: node A writes with a cache
//! of its own (its own connections), node B reads through a near cache, and B never serves a
//! value older than one it has already seen, converges on A's last write once its invalidation
//! arrives, reads its own writes at once, and drops everything when its tracking connection is
//! lost or the database is flushed. The epoch logic that keeps a stale reply out is unit-tested
//! in `src/store/near.rs`.

use std::{sync::Arc, time::Duration};

use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, Error, RedisCacheStore, store::NearCacheLimits};
use stellar_core::NodeId;
use stellar_testkit::{RedisServer, eventually, eventually_async};

const LIMITS: NearCacheLimits = NearCacheLimits {
    max_entries: 1000,
    max_bytes: 1 << 20,
};

async fn connect(url: &str) -> RedisPool {
    RedisPool::connect(RedisConfig::new(url))
        .await
        .expect("redis")
}

fn cache_on(store: Arc<RedisCacheStore>, node: &str) -> Cache {
    Cache::new(
        store,
        NodeId::new(node).expect("id"),
        CacheConfig::default(),
    )
}

/// Node A: a plain cache on connections of its own.
async fn node_a(url: &str) -> Cache {
    cache_on(Arc::new(RedisCacheStore::new(connect(url).await)), "a")
}

/// Node B: a cache with a near cache, and its store to look inside.
async fn node_b(url: &str) -> (Cache, Arc<RedisCacheStore>) {
    let store = Arc::new(RedisCacheStore::new(connect(url).await).with_near_cache(LIMITS));
    (cache_on(store.clone(), "b"), store)
}

async fn load(cache: &Cache, key: &str) -> Option<u64> {
    match cache.load::<u64>(key).await {
        Ok(entry) => Some(entry.value),
        Err(Error::NotFound { .. }) => None,
        Err(err) => panic!("load {key}: {err}"),
    }
}

/// Loads `key` on B until the near cache holds it (the first load records the read, the next
/// one is a tracked read that fills the near cache).
async fn warm(cache: &Cache, store: &RedisCacheStore, key: &str) {
    eventually_async("the near cache holds the key", async || {
        load(cache, key).await;
        store.is_near_cached(key)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_another_node_is_never_read_stale_once_its_invalidation_arrived() {
    let server = RedisServer::start();
    let a = node_a(&server.url()).await;
    let (b, store) = node_b(&server.url()).await;
    a.save("counter", &0_u64, None).await.expect("save");
    warm(&b, &store, "counter").await;

    // B reads as fast as it can while A writes 1, 2, 3, …: B never goes back to an older value.
    let reader = tokio::spawn({
        let b = b.clone();
        async move {
            let (mut seen, mut loads) = (0, 0_u64);
            while seen < LAST {
                let value = load(&b, "counter").await.expect("present");
                assert!(value >= seen, "read {value} after {seen}");
                seen = value;
                loads += 1;
            }
            loads
        }
    });
    const LAST: u64 = 300;
    for value in 1..=LAST {
        a.save("counter", &value, None).await.expect("save");
        if value % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let loads = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("B reads A's last write within 30 s")
        .expect("reader");
    assert!(loads > 0);

    // After A's last write returned, B converges on it and stays there, mostly from memory.
    eventually_async("B reads A's last write", async || {
        load(&b, "counter").await == Some(LAST)
    })
    .await;
    let hits_before = store.near_cache_stats().expect("near").hits;
    for _ in 0..200 {
        assert_eq!(load(&b, "counter").await, Some(LAST));
    }
    let stats = store.near_cache_stats().expect("near");
    assert!(stats.hits > hits_before, "served from memory: {stats:?}");
    assert!(stats.invalidations > 0, "{stats:?}");

    // A deletes it: B sees it gone.
    assert!(a.destroy("counter").await.expect("destroy"));
    eventually_async("B sees the delete", async || {
        load(&b, "counter").await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_its_own_writes_at_once() {
    let server = RedisServer::start();
    let (b, store) = node_b(&server.url()).await;
    b.save("mine", &0_u64, None).await.expect("save");
    warm(&b, &store, "mine").await;
    for value in 1..=100_u64 {
        b.save("mine", &value, None).await.expect("save");
        assert_eq!(load(&b, "mine").await, Some(value));
        assert_eq!(load(&b, "mine").await, Some(value));
        assert_eq!(
            b.increment("mine", 1).await.expect("increment"),
            value as i64 + 1
        );
        assert_eq!(load(&b, "mine").await, Some(value + 1));
    }
    b.destroy("mine").await.expect("destroy");
    assert_eq!(load(&b, "mine").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tracking_connection_empties_the_near_cache() {
    let server = RedisServer::start();
    let raw = connect(&server.url()).await;
    let (b, store) = node_b(&server.url()).await;
    let a = node_a(&server.url()).await;
    a.save("k", &1_u64, None).await.expect("save");
    warm(&b, &store, "k").await;

    // The tracking connection is the one client with the `t` (tracking) flag.
    let clients: String = raw
        .query("CLIENT LIST", &redis::cmd("CLIENT").arg("LIST").clone())
        .await
        .expect("client list");
    let tracking = clients
        .lines()
        .find(|line| {
            line.split(' ')
                .any(|field| field.starts_with("flags=") && field.contains('t'))
        })
        .expect("a tracking client");
    let id = tracking
        .split(' ')
        .find_map(|field| field.strip_prefix("id="))
        .expect("id");
    let killed: u64 = raw
        .query(
            "CLIENT KILL",
            redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id),
        )
        .await
        .expect("kill");
    assert_eq!(killed, 1);
    eventually("the near cache is emptied", || !store.is_near_cached("k")).await;
    assert!(store.near_cache_stats().expect("near").clears >= 1);

    // Nobody can tell B about this write any more; B reads it because it holds nothing, and
    // then tracks the key again on a new connection.
    a.save("k", &2_u64, None).await.expect("save");
    assert_eq!(load(&b, "k").await, Some(2));
    warm(&b, &store, "k").await;
    a.save("k", &3_u64, None).await.expect("save");
    eventually_async("B sees the write on its new connection", async || {
        load(&b, "k").await == Some(3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_is_reported_and_keeps_the_near_cache() {
    let server = RedisServer::start();
    let (b, store) = node_b(&server.url()).await;
    b.save("k", &1_u64, None).await.expect("save");
    warm(&b, &store, "k").await;
    b.push("queue", &1_u64).await.expect("push");
    // The first load runs the script, the second (within a second) a plain read: Redis answers
    // both with WRONGTYPE, which is the caller's mistake, not a lost connection.
    for attempt in 0..2 {
        let loaded = b.load::<u64>("queue").await;
        assert!(
            matches!(
                loaded,
                Err(Error::Store(
                    stellar_cache::store::StoreError::WrongKind { .. }
                ))
            ),
            "load {attempt}: {loaded:?}"
        );
    }
    assert_eq!(store.near_cache_stats().expect("near").clears, 0);
    assert!(store.is_near_cached("k"), "still held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_empties_the_near_cache() {
    let server = RedisServer::start();
    let raw = connect(&server.url()).await;
    let (b, store) = node_b(&server.url()).await;
    b.save("k", &1_u64, None).await.expect("save");
    warm(&b, &store, "k").await;
    let () = raw
        .query("FLUSHALL", &redis::cmd("FLUSHALL"))
        .await
        .expect("flush");
    eventually("the near cache is emptied", || !store.is_near_cached("k")).await;
    assert_eq!(load(&b, "k").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cached_entry_never_outlives_its_ttl() {
    let server = RedisServer::start();
    let (b, store) = node_b(&server.url()).await;
    b.save("short", &1_u64, Some(Duration::from_millis(300)))
        .await
        .expect("save");
    warm(&b, &store, "short").await;
    let entry = b.load::<u64>("short").await.expect("load");
    let expires_at = entry.expires_at.expect("a TTL");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(load(&b, "short").await, None, "expired at {expires_at:?}");
    assert!(!store.is_near_cached("short"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_recorded_once_a_second_per_key() {
    let server = RedisServer::start();
    let a = node_a(&server.url()).await;
    let (b, _store) = node_b(&server.url()).await;
    a.save("seen", &1_u64, None).await.expect("save");
    let first = b.load::<u64>("seen").await.expect("load");
    assert_eq!(first.last_read_at, None, "never read before");
    let second = a.load::<u64>("seen").await.expect("load");
    assert!(second.last_read_at.is_some(), "B's first read was recorded");
    let recorded = b.load::<u64>("seen").await.expect("load").last_read_at;
    assert!(recorded.is_some(), "A's read, as of B's plain read");
}

#[tokio::test]
async fn a_task_looping_over_near_cache_hits_lets_other_tasks_run() {
    let server = RedisServer::start();
    let (b, store) = node_b(&server.url()).await;
    b.save("hot", &1_u64, None).await.expect("save");
    warm(&b, &store, "hot").await;
    // One thread: the other task runs only when the loop below yields.
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn({
        let ran = ran.clone();
        async move { ran.store(true, std::sync::atomic::Ordering::SeqCst) }
    });
    let hits_before = store.near_cache_stats().expect("near").hits;
    for _ in 0..1000 {
        assert_eq!(load(&b, "hot").await, Some(1));
    }
    assert!(store.near_cache_stats().expect("near").hits >= hits_before + 900);
    assert!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        "the loop never yielded"
    );
}

//! Redis-only behaviour: other clients share the data, loads never rewrite, KEYS is never used.

use std::{sync::Arc, time::Duration};

use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, RedisCacheStore};
use stellar_core::{ConfigError, NodeId};
use stellar_testkit::RedisServer;

async fn connect(url: &str) -> RedisPool {
    RedisPool::connect(RedisConfig::new(url))
        .await
        .expect("redis")
}

fn cache_on(store: RedisCacheStore) -> Cache {
    let node_id = NodeId::new("a").expect("id");
    Cache::new(Arc::new(store), node_id, CacheConfig::default())
}

async fn cache(url: &str) -> (Cache, RedisPool) {
    let pool = connect(url).await;
    (cache_on(RedisCacheStore::new(pool.clone())), pool)
}

#[tokio::test]
async fn other_clients_read_and_write_the_same_json() {
    let server = RedisServer::start();
    let (cache, pool) = cache(&server.url()).await;
    cache
        .save("profile", &serde_json::json!({ "name": "ada" }), None)
        .await
        .expect("save");
    let raw: String = pool
        .query(
            "HGET",
            redis::cmd("HGET")
                .arg("stellar:cache:{profile}")
                .arg("value"),
        )
        .await
        .expect("hget");
    assert_eq!(raw, r#"{"name":"ada"}"#);

    let () = pool
        .query::<u64>(
            "HSET",
            redis::cmd("HSET")
                .arg("stellar:cache:{external}")
                .arg("value")
                .arg("[1,2,3]"),
        )
        .await
        .map(drop)
        .expect("hset");
    let entry = cache
        .load::<Vec<u8>>("external")
        .await
        .expect("load what another client wrote");
    assert_eq!(entry.value, [1, 2, 3]);
    assert_eq!(entry.created_at, None, "the other client did not say when");
}

#[tokio::test]
async fn loading_never_rewrites_the_value_or_resets_its_ttl() {
    let server = RedisServer::start();
    let (cache, pool) = cache(&server.url()).await;
    cache
        .save("short", &"v", Some(Duration::from_millis(1500)))
        .await
        .expect("save");
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..5 {
        cache.load::<String>("short").await.expect("load");
    }
    let pttl: i64 = pool
        .query("PTTL", redis::cmd("PTTL").arg("stellar:cache:{short}"))
        .await
        .expect("pttl");
    assert!(
        pttl > 0 && pttl <= 800,
        "the ttl was reset or the key dropped: {pttl}"
    );
    // Under a second left, reading must not delete it (the original's EXPIRE 0 bug).
    assert_eq!(
        cache
            .load::<String>("short")
            .await
            .expect("still there")
            .value,
        "v"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        cache.load::<String>("short").await.is_err(),
        "expired on time"
    );
}

#[tokio::test]
async fn prefixes_are_configurable_and_kept_apart() {
    let server = RedisServer::start();
    let pool = connect(&server.url()).await;
    let store = RedisCacheStore::new(pool.clone()).with_prefixes("app*1:", "app*1-lock:");
    let mine = cache_on(store.expect("prefixes without braces"));
    let (other, _) = cache(&server.url()).await;
    mine.save("k", &1, None).await.expect("save");
    other.save("k", &2, None).await.expect("save");
    let _guard = mine.lock("k", Duration::from_secs(30)).await.expect("lock");
    let exists: u64 = pool
        .query(
            "EXISTS",
            redis::cmd("EXISTS").arg("app*1:{k}").arg("app*1-lock:{k}"),
        )
        .await
        .expect("exists");
    assert_eq!(exists, 2);
    assert_eq!(
        mine.keys("*").await.expect("keys"),
        ["k"],
        "a glob character in the prefix is literal"
    );
    assert_eq!(other.load::<i32>("k").await.expect("load").value, 2);
    other
        .save("k", &3, None)
        .await
        .expect("the other prefix's key is not locked");
}

#[tokio::test]
async fn prefixes_with_braces_are_refused_by_name() {
    let server = RedisServer::start();
    let pool = connect(&server.url()).await;
    let refused = RedisCacheStore::new(pool.clone()).with_prefixes("app:{x}:", "app-lock:");
    let Err(err) = refused else {
        panic!("a brace in the entry prefix was accepted");
    };
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                key: "entry_prefix",
                ..
            }
        ),
        "{err:?}"
    );
    let refused = RedisCacheStore::new(pool).with_prefixes("app:", "app-lock}");
    let Err(err) = refused else {
        panic!("a brace in the lock prefix was accepted");
    };
    let message = err.to_string();
    assert!(
        message.contains("`lock_prefix`") && message.contains("without `{` or `}`"),
        "{message}"
    );
}

/// The caller's key is the hash tag: braces inside it stay part of the name, and listings give
/// the key back whole.
#[tokio::test]
async fn keys_with_braces_are_stored_tagged_and_listed_whole() {
    let server = RedisServer::start();
    let (cache, pool) = cache(&server.url()).await;
    cache.save("a}b", &1, None).await.expect("save");
    cache.push("{x}", &"item").await.expect("push");
    let _guard = cache
        .lock("{x}", Duration::from_secs(30))
        .await
        .expect("lock");
    let exists: u64 = pool
        .query(
            "EXISTS",
            redis::cmd("EXISTS")
                .arg("stellar:cache:{a}b}")
                .arg("stellar:cache:{{x}}")
                .arg("stellar:lock:{{x}}"),
        )
        .await
        .expect("exists");
    assert_eq!(exists, 3);
    assert_eq!(cache.keys("*").await.expect("keys"), ["a}b", "{x}"]);
    assert_eq!(cache.keys("a}*").await.expect("keys"), ["a}b"]);
    let locks = cache.locks().await.expect("locks");
    let names: Vec<&str> = locks.iter().map(|lock| lock.key.as_str()).collect();
    assert_eq!(names, ["{x}"], "the fencing counter is not a lock");
    assert_eq!(cache.clear("*").await.expect("clear"), 2);
}

#[tokio::test]
async fn enumeration_works_for_a_user_denied_the_keys_command() {
    let server = RedisServer::start();
    let (admin, pool) = cache(&server.url()).await;
    let acl = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("cache")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-keys")
        .clone();
    let () = pool
        .query::<String>("ACL", &acl)
        .await
        .map(drop)
        .expect("acl");
    for n in 0..2500 {
        admin
            .save(&format!("bulk:{n}"), &n, None)
            .await
            .expect("save");
    }
    let url = format!("redis://cache:pw@127.0.0.1:{}", server.port());
    let (limited, _) = cache(&url).await;
    assert_eq!(
        limited.keys("bulk:*").await.expect("SCAN, not KEYS").len(),
        2500
    );
    assert_eq!(limited.clear("bulk:1*").await.expect("clear"), 1111);
    assert_eq!(limited.size().await.expect("size"), 1389);
}

#[tokio::test]
async fn fencing_counters_expire_and_tokens_still_rise() {
    let server = RedisServer::start();
    let (cache, pool) = cache(&server.url()).await;
    let mut last = 0;
    for n in 0..3 {
        let key = format!("job-{n}");
        let guard = cache
            .lock(&key, Duration::from_secs(5))
            .await
            .expect("lock");
        assert!(guard.fence() > last, "fences rise across keys and time");
        last = guard.fence();
        assert!(cache.unlock(&guard).await.expect("unlock"));
        let counter = format!("stellar:lock:{{{key}}}\u{1f}fence");
        let ttl: i64 = pool
            .query("PTTL", redis::cmd("PTTL").arg(&counter))
            .await
            .expect("pttl");
        assert!(ttl > 0, "the fencing counter of {key} never expires");
        // Its expiry, early: the next token must still be higher.
        let _: u64 = pool
            .query("DEL", redis::cmd("DEL").arg(&counter))
            .await
            .expect("del");
        let again = cache
            .lock(&key, Duration::from_secs(5))
            .await
            .expect("lock");
        assert!(
            again.fence() > guard.fence(),
            "a token went backwards after expiry"
        );
        last = last.max(again.fence());
        assert!(cache.unlock(&again).await.expect("unlock"));
    }
    let hash: u64 = pool
        .query("EXISTS", redis::cmd("EXISTS").arg("stellar:lock-fences"))
        .await
        .expect("exists");
    assert_eq!(hash, 0, "no hash with one field per key ever locked");
    assert!(cache.locks().await.expect("locks").is_empty());
}

/// A refusal by Redis itself (here out of memory) is a Redis error, never "not a counter": a
/// caller that repaired a "bad" counter by overwriting it would destroy a good one.
#[tokio::test]
async fn a_redis_refusal_of_an_increment_is_not_reported_as_bad_data() {
    let server = RedisServer::start();
    let (cache, pool) = cache(&server.url()).await;
    assert_eq!(cache.increment("hits", 1).await.expect("incr"), 1);
    let _: () = pool
        .query(
            "CONFIG SET",
            redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1"),
        )
        .await
        .expect("config set");
    let refused = cache.increment("hits", 1).await;
    assert!(
        matches!(
            refused,
            Err(stellar_cache::Error::Store(
                stellar_cache::store::StoreError::Redis(_)
            ))
        ),
        "{refused:?}"
    );
    let _: () = pool
        .query(
            "CONFIG SET",
            redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0"),
        )
        .await
        .expect("config set");
    assert_eq!(cache.increment("hits", 1).await.expect("incr"), 2);
}

/// Keys of types the cache does not own (written under its prefix by another client) neither
/// fail a listing nor show in it, and the count matches what is listed.
#[tokio::test]
async fn browsing_skips_keys_of_foreign_types() {
    let server = RedisServer::start();
    let (cache, pool) = cache(&server.url()).await;
    cache.save("mixed:value", &1, None).await.expect("save");
    cache.push("mixed:list", &"a").await.expect("push");
    let mut planted = redis::pipe();
    planted
        .cmd("SET")
        .arg("stellar:cache:{mixed:string}")
        .arg("x")
        .cmd("SADD")
        .arg("stellar:cache:{mixed:set}")
        .arg("x")
        .cmd("ZADD")
        .arg("stellar:cache:{mixed:zset}")
        .arg(1)
        .arg("x");
    let timeout = pool.config().op_timeout;
    let () = pool
        .run("plant", timeout, async |conn| {
            planted.query_async(conn).await
        })
        .await
        .expect("plant");
    let page = cache.browse("mixed:", 100, 100).await.expect("browse");
    let names: Vec<&str> = page.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(names, ["mixed:list", "mixed:value"]);
    assert_eq!(page.total, 2, "the count matches the listing");
}

/// The least-privilege rule of `docs/security.md` before `+@transaction` was added to it.
const RULE_WITHOUT_TRANSACTIONS: &[&str] = &[
    "old",
    "on",
    ">pw",
    "resetkeys",
    "~stellar:*",
    "resetchannels",
    "&stellar:*",
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@pubsub",
    "+@connection",
    "+@keyspace",
    "+time",
    "-@dangerous",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_loads_work_for_a_user_denied_multi_and_exec() {
    let server = RedisServer::start();
    let (admin, pool) = cache(&server.url()).await;
    let () = pool
        .query::<String>(
            "ACL",
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(RULE_WITHOUT_TRANSACTIONS),
        )
        .await
        .map(drop)
        .expect("acl");
    admin.save("k", &7_u64, None).await.expect("save");
    let url = format!("redis://old:pw@127.0.0.1:{}", server.port());
    let limits = stellar_cache::store::NearCacheLimits {
        max_entries: 100,
        max_bytes: 1 << 20,
    };
    for near in [false, true] {
        let store = RedisCacheStore::new(connect(&url).await);
        let store = if near {
            store.with_near_cache(limits)
        } else {
            store
        };
        let cache = cache_on(store);
        // The first load records the read (a script); the next ones within a second are plain
        // reads, which a user without MULTI/EXEC cannot run as a transaction.
        for n in 0..3 {
            let entry = cache.load::<u64>("k").await;
            let value = entry.unwrap_or_else(|err| panic!("load {n} (near {near}): {err:?}"));
            assert_eq!(value.value, 7);
        }
    }
}

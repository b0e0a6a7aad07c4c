//! One contract, two stores: every case runs on `MemoryCacheStore` (Tokio's clock paused, so TTLs
//! take no real time) and on `RedisCacheStore` against a real `redis-server` (real time). Cases
//! are grouped by the store capability they exercise: a module per capability, each with its
//! `memory` and `redis` runs.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, MemoryCacheStore, RedisCacheStore, store::CacheStore};
use stellar_core::NodeId;
use stellar_testkit::BackendKind;

/// A case's backend: one memory store every client shares, or a Redis server each client
/// connects to anew.
struct Backend {
    kind: BackendKind,
    memory: MemoryCacheStore,
}

impl From<BackendKind> for Backend {
    fn from(kind: BackendKind) -> Self {
        Self {
            kind,
            memory: MemoryCacheStore::new(),
        }
    }
}

impl Backend {
    /// The store of this backend; on Redis, a new client of the same server.
    async fn store(&self) -> Arc<dyn CacheStore> {
        match self.kind.url() {
            None => Arc::new(self.memory.clone()),
            Some(url) => {
                let pool = RedisPool::connect(RedisConfig::new(url))
                    .await
                    .expect("redis");
                Arc::new(RedisCacheStore::new(pool))
            }
        }
    }

    /// A cache client on this backend, as node `node`.
    async fn cache(&self, node: &str) -> Cache {
        self.cache_with(node, CacheConfig::default()).await
    }

    async fn cache_with(&self, node: &str, config: CacheConfig) -> Cache {
        Cache::new(self.store().await, NodeId::new(node).expect("id"), config)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    visits: u32,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs each case of the enclosing module on both backends: memory on a paused clock (TTLs take
/// no real time), Redis in real time.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        stellar_testkit::contract_cases! {
            memory: #[tokio::test(start_paused = true)],
            redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
            cases: [$($case),*],
        }
    };
}

/// Values and counters ([`CacheValues`](stellar_cache::store::CacheValues)), with the checks
/// `Cache` makes before a write reaches the store.
mod values {
    use std::time::{Duration, SystemTime};

    use stellar_cache::{
        CacheConfig, Error,
        store::{ItemKind, StoreError},
    };

    use crate::{Backend, User, ms};

    async fn saves_and_loads_values_with_their_metadata(backend: Backend) {
        let cache = backend.cache("a").await;
        let user = User {
            name: "ada".into(),
            visits: 3,
        };
        let before = SystemTime::now() - Duration::from_secs(1);
        cache
            .save("user:1", &user, Some(Duration::from_secs(60)))
            .await
            .expect("save");
        let first = cache.load::<User>("user:1").await.expect("load");
        assert_eq!(first.value, user);
        assert!(first.created_at.expect("created") >= before);
        let expires = first.expires_at.expect("expires");
        assert!(
            expires > SystemTime::now() + Duration::from_secs(50),
            "{expires:?}"
        );
        assert_eq!(first.last_read_at, None, "never read before");
        let second = cache.load::<User>("user:1").await.expect("load");
        assert!(second.last_read_at.is_some(), "the first read was recorded");
        assert_eq!(
            second.created_at, first.created_at,
            "reading does not rewrite"
        );
        cache.save("forever", &1, None).await.expect("save");
        assert_eq!(
            cache.load::<i32>("forever").await.expect("load").expires_at,
            None
        );
        assert!(matches!(
            cache.load::<User>("missing").await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            cache.load::<User>("forever").await,
            Err(Error::Decode { .. })
        ));
    }

    async fn values_expire_and_sliding_loads_extend_them(backend: Backend) {
        let cache = backend.cache("a").await;
        cache
            .save("short", &"x", Some(ms(300)))
            .await
            .expect("save");
        cache
            .save("sliding", &"y", Some(ms(300)))
            .await
            .expect("save");
        tokio::time::sleep(ms(200)).await;
        let slid = cache
            .load_sliding::<String>("sliding", ms(600))
            .await
            .expect("load");
        assert!(slid.expires_at.expect("expires") > SystemTime::now() + ms(400));
        // A plain load keeps the expiry as it is: the value still dies at its TTL.
        cache.load::<String>("short").await.expect("still there");
        tokio::time::sleep(ms(250)).await;
        assert!(
            matches!(
                cache.load::<String>("short").await,
                Err(Error::NotFound { .. })
            ),
            "expired"
        );
        assert_eq!(
            cache.load::<String>("sliding").await.expect("slid").value,
            "y"
        );
    }

    async fn destroy_reports_whether_something_was_deleted(backend: Backend) {
        let cache = backend.cache("a").await;
        cache.save("k", &1, None).await.expect("save");
        assert!(cache.destroy("k").await.expect("destroy"));
        assert!(!cache.destroy("k").await.expect("destroy"));
    }

    async fn counters_count_and_read_as_integers(backend: Backend) {
        let (a, b) = (backend.cache("a").await, backend.cache("b").await);
        assert_eq!(a.increment("hits", 1).await.expect("incr"), 1);
        assert_eq!(b.increment("hits", 5).await.expect("incr"), 6);
        assert_eq!(a.decrement("hits", 2).await.expect("decr"), 4);
        assert_eq!(b.load::<i64>("hits").await.expect("load").value, 4);
        let racers: Vec<_> = (0..50)
            .map(|_| {
                let cache = a.clone();
                tokio::spawn(async move { cache.increment("race", 1).await })
            })
            .collect();
        for racer in racers {
            racer.await.expect("joined").expect("incr");
        }
        assert_eq!(b.load::<i64>("race").await.expect("load").value, 50);
    }

    async fn bad_input_is_refused_and_writes_nothing(backend: Backend) {
        let config = CacheConfig {
            max_value_bytes: 1024,
            ..CacheConfig::default()
        };
        let cache = backend.cache_with("a", config).await;
        assert!(matches!(
            cache.save("", &1, None).await,
            Err(Error::InvalidKey { .. })
        ));
        // A leading `}` would leave the key's Redis hash tag empty (entry and lock apart on a
        // cluster): refused on every store, so code moved between stores behaves the same.
        assert!(matches!(
            cache.lock("}job", Duration::from_secs(5)).await,
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            cache.save("}k", &1, None).await,
            Err(Error::InvalidKey { .. })
        ));
        cache
            .save("a}b{c}", &1, None)
            .await
            .expect("braces past the first character are fine");
        let long = "k".repeat(1025);
        assert!(matches!(
            cache.save(&long, &1, None).await,
            Err(Error::InvalidKey { .. })
        ));
        assert!(cache.save(&"k".repeat(1024), &1, None).await.is_ok());
        // U+001F separates the cache's companion keys: `job\x1ffence` would be `job`'s fencing counter.
        assert!(matches!(
            cache.lock("job\u{1f}fence", Duration::from_secs(5)).await,
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            cache.save("zero", &1, Some(Duration::ZERO)).await,
            Err(Error::InvalidTtl { .. })
        ));
        assert!(matches!(
            cache.save("big", &"x".repeat(2000), None).await,
            Err(Error::TooLarge {
                size: 2002,
                max: 1024,
                ..
            })
        ));
        assert!(matches!(
            cache.lock("zero", Duration::ZERO).await,
            Err(Error::InvalidTtl { .. })
        ));
        let keys = cache.keys("*").await.expect("keys");
        assert_eq!(
            keys,
            ["a}b{c}".to_owned(), "k".repeat(1024)],
            "only the valid writes landed"
        );
    }

    async fn counters_refuse_lists_non_integers_and_overflow(backend: Backend) {
        let cache = backend.cache("a").await;
        cache.push("queue", &1).await.expect("push");
        assert!(
            matches!(
                cache.increment("queue", 1).await,
                Err(Error::Store(StoreError::WrongKind {
                    expected: ItemKind::Value,
                    ..
                }))
            ),
            "a list is not a counter"
        );
        // Twice: on Redis the second load within a second is a plain read, not the script.
        for attempt in 0..2 {
            let loaded = cache.load::<i64>("queue").await;
            assert!(
                matches!(
                    loaded,
                    Err(Error::Store(StoreError::WrongKind {
                        expected: ItemKind::Value,
                        ..
                    }))
                ),
                "load {attempt}: {loaded:?}"
            );
        }
        cache.save("name", &"ada", None).await.expect("save");
        assert!(matches!(
            cache.increment("name", 1).await,
            Err(Error::Store(StoreError::NotACounter { .. }))
        ));
        cache.save("big", &i64::MAX, None).await.expect("save");
        let overflow = cache.increment("big", 1).await;
        assert!(
            matches!(
                &overflow,
                Err(Error::Store(StoreError::CounterOverflow { by: 1, .. }))
            ),
            "{overflow:?}"
        );
        assert!(!overflow.expect_err("overflow").is_transient());
        assert!(matches!(
            cache.decrement("big", i64::MIN).await,
            Err(Error::Store(StoreError::CounterOverflow {
                by: i64::MIN,
                ..
            }))
        ));
        assert_eq!(
            cache.load::<i64>("big").await.expect("load").value,
            i64::MAX,
            "unchanged"
        );
    }

    contract!(
        saves_and_loads_values_with_their_metadata,
        values_expire_and_sliding_loads_extend_them,
        destroy_reports_whether_something_was_deleted,
        counters_count_and_read_as_integers,
        counters_refuse_lists_non_integers_and_overflow,
        bad_input_is_refused_and_writes_nothing,
    );
}

/// Locks ([`CacheLocks`](stellar_cache::store::CacheLocks)): ownership, fencing, and the writes
/// they block.
mod locks {
    use std::{sync::Arc, time::Duration};

    use stellar_cache::{Error, store::CacheLocks};

    use crate::{Backend, ms};

    async fn twenty_racers_get_exactly_one_lock(backend: Backend) {
        let mut caches = Vec::new();
        for node in ["a", "b", "c"] {
            caches.push(backend.cache(node).await);
        }
        let racers = (0..20).map(|i| {
            let cache = caches[i % 3].clone();
            tokio::spawn(async move { cache.lock("resource", Duration::from_secs(30)).await })
        });
        let mut winners = Vec::new();
        for racer in racers {
            match racer.await.expect("joined") {
                Ok(guard) => winners.push(guard),
                Err(Error::Locked { .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
    }

    async fn locks_block_foreign_writes_but_not_reads_or_the_holder(backend: Backend) {
        let (a, b) = (backend.cache("a").await, backend.cache("b").await);
        a.save("doc", &"v1", None).await.expect("save");
        let guard = a.lock("doc", Duration::from_secs(30)).await.expect("lock");
        assert!(matches!(
            b.lock("doc", Duration::from_secs(30)).await,
            Err(Error::Locked { .. })
        ));
        assert!(
            matches!(b.save("doc", &"v2", None).await, Err(Error::Locked { .. })),
            "foreign write"
        );
        assert!(
            matches!(a.save("doc", &"v2", None).await, Err(Error::Locked { .. })),
            "a handle without the guard"
        );
        assert!(matches!(b.destroy("doc").await, Err(Error::Locked { .. })));
        assert!(
            matches!(b.increment("doc-counter", 1).await, Ok(1)),
            "other keys are free"
        );
        a.holding(&guard)
            .save("doc", &"v2", None)
            .await
            .expect("the holder writes");
        assert_eq!(
            b.load::<String>("doc")
                .await
                .expect("reads pass locks")
                .value,
            "v2"
        );
    }

    async fn lock_tokens_are_the_ownership_and_fences_rise(backend: Backend) {
        let (a, b) = (backend.cache("a").await, backend.cache("b").await);
        let guard = a.lock("doc", Duration::from_secs(30)).await.expect("lock");
        let forged = stellar_cache::LockGuard::clone(&guard);
        assert!(
            !b.unlock_token("doc", "not-the-token")
                .await
                .expect("unlock"),
            "a wrong token unlocks nothing"
        );
        assert!(
            b.extend(&forged, Duration::from_secs(60))
                .await
                .expect("extend"),
            "the token is the ownership"
        );
        assert!(a.unlock(&guard).await.expect("unlock"));
        assert!(
            !a.unlock(&guard).await.expect("unlock"),
            "a released lock is not released twice"
        );

        let again = b
            .lock("doc", Duration::from_secs(30))
            .await
            .expect("free again");
        assert!(
            again.fence() > guard.fence(),
            "fences increase: {} then {}",
            guard.fence(),
            again.fence()
        );
        assert_ne!(again.token(), guard.token());
    }

    async fn an_expired_lock_cannot_be_released_by_its_old_holder(backend: Backend) {
        let (a, b) = (backend.cache("a").await, backend.cache("b").await);
        let old = a.lock("job", ms(200)).await.expect("lock");
        tokio::time::sleep(ms(350)).await;
        let new = b
            .lock("job", Duration::from_secs(30))
            .await
            .expect("the lock expired");
        assert!(
            !a.unlock(&old).await.expect("unlock"),
            "the old holder removed the new lock"
        );
        assert!(
            !a.extend(&old, Duration::from_secs(30))
                .await
                .expect("extend")
        );
        assert!(new.fence() > old.fence());
        assert_eq!(b.locks().await.expect("locks").len(), 1);
    }

    async fn node_locks_are_reentrant_for_the_node(backend: Backend) {
        let node = backend.cache("node-1").await.as_node();
        let first = node
            .lock("shared", Duration::from_secs(30))
            .await
            .expect("lock");
        let again = node
            .lock("shared", Duration::from_secs(30))
            .await
            .expect("the node relocks");
        assert_eq!(
            first.fence(),
            again.fence(),
            "a refresh is not a new acquisition"
        );
        assert_eq!(first.token(), "node-1");
        node.save("shared", &1, None)
            .await
            .expect("the node writes through its own lock");
        let other = backend.cache("node-2").await.as_node();
        assert!(matches!(
            other.lock("shared", Duration::from_secs(30)).await,
            Err(Error::Locked { .. })
        ));
    }

    async fn check_lock_waits_for_release_with_backoff(backend: Backend) {
        let (a, b) = (backend.cache("a").await, backend.cache("b").await);
        b.check_lock("free", Duration::ZERO)
            .await
            .expect("nothing to wait for");
        let guard = a.lock("busy", Duration::from_secs(30)).await.expect("lock");
        assert!(matches!(
            b.check_lock("busy", ms(150)).await,
            Err(Error::Locked { .. })
        ));
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(ms(200)).await;
            a.unlock(&guard).await.expect("unlock")
        });
        b.check_lock("busy", Duration::from_secs(5))
            .await
            .expect("released in time");
        assert!(releaser.await.expect("joined"));
    }

    async fn the_locks_capability_works_alone(backend: Backend) {
        let locks: Arc<dyn CacheLocks> = backend.store().await;
        let fence = locks
            .lock("job", "t1", Duration::from_secs(30))
            .await
            .expect("lock");
        assert!(fence.is_some_and(|fence| fence > 0));
        assert_eq!(
            locks
                .lock("job", "t2", Duration::from_secs(30))
                .await
                .expect("lock"),
            None
        );
        assert_eq!(
            locks.lock_holder("job").await.expect("holder").as_deref(),
            Some("t1")
        );
        assert!(
            !locks
                .extend("job", "t2", Duration::from_secs(60))
                .await
                .expect("extend")
        );
        assert!(
            locks
                .extend("job", "t1", Duration::from_secs(60))
                .await
                .expect("extend")
        );
        let held = locks.locks().await.expect("locks");
        assert_eq!(held.len(), 1, "the fencing counter is not a lock: {held:?}");
        assert!(
            held[0].ttl_ms.is_some_and(|ttl| ttl > 30_000),
            "extended: {held:?}"
        );
        assert!(!locks.unlock("job", "t2").await.expect("unlock"));
        assert!(locks.unlock("job", "t1").await.expect("unlock"));
        assert_eq!(locks.lock_holder("job").await.expect("holder"), None);
    }

    contract!(
        twenty_racers_get_exactly_one_lock,
        locks_block_foreign_writes_but_not_reads_or_the_holder,
        lock_tokens_are_the_ownership_and_fences_rise,
        an_expired_lock_cannot_be_released_by_its_old_holder,
        node_locks_are_reentrant_for_the_node,
        check_lock_waits_for_release_with_backoff,
        the_locks_capability_works_alone,
    );
}

/// Lists ([`CacheLists`](stellar_cache::store::CacheLists)): FIFO queues beside the values.
mod lists {
    use std::time::Duration;

    use stellar_cache::{
        Error,
        store::{ItemKind, StoreError},
    };

    use crate::{Backend, ms};

    async fn lists_are_fifo_queues_with_a_blocking_pop(backend: Backend) {
        let (a, b) = (backend.cache("a").await, backend.cache("b").await);
        for n in 1..=3 {
            a.push("queue", &n).await.expect("push");
        }
        assert_eq!(b.list_length("queue").await.expect("len"), 3);
        assert_eq!(b.pop::<i32>("queue").await.expect("pop"), Some(1));
        assert_eq!(b.pop::<i32>("queue").await.expect("pop"), Some(2));
        assert_eq!(b.pop::<i32>("queue").await.expect("pop"), Some(3));
        assert_eq!(b.pop::<i32>("queue").await.expect("pop"), None);
        assert_eq!(b.list_length("queue").await.expect("len"), 0);
        assert_eq!(
            b.pop_blocking::<i32>("queue", ms(200)).await.expect("pop"),
            None,
            "times out empty"
        );
        let waiter = tokio::spawn(async move {
            b.pop_blocking::<String>("queue", Duration::from_secs(10))
                .await
        });
        tokio::time::sleep(ms(100)).await;
        a.push("queue", &"late").await.expect("push");
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(got.expect("pop"), Some("late".to_owned()));
    }

    async fn list_operations_refuse_keys_holding_values(backend: Backend) {
        let cache = backend.cache("a").await;
        cache.save("value", &1, None).await.expect("save");
        let wrong_kind = |result: Result<(), Error>| {
            matches!(
                result,
                Err(Error::Store(StoreError::WrongKind {
                    expected: ItemKind::List,
                    ..
                }))
            )
        };
        assert!(wrong_kind(cache.push("value", &2).await.map(drop)));
        assert!(wrong_kind(cache.pop::<i32>("value").await.map(drop)));
        assert!(wrong_kind(cache.list_length("value").await.map(drop)));
        assert!(wrong_kind(
            cache.pop_blocking::<i32>("value", ms(50)).await.map(drop)
        ));
        assert_eq!(
            cache.load::<i32>("value").await.expect("untouched").value,
            1
        );
    }

    contract!(
        lists_are_fifo_queues_with_a_blocking_pop,
        list_operations_refuse_keys_holding_values,
    );
}

/// Enumeration and dumps ([`CacheDump`](stellar_cache::store::CacheDump)).
mod dump {
    use std::time::{Duration, SystemTime};

    use stellar_cache::Error;

    use crate::{Backend, User};

    async fn keys_size_clear_and_locks_enumerate_without_blocking(backend: Backend) {
        let cache = backend.cache("a").await;
        for key in ["user:1", "user:2", "session:1"] {
            cache.save(key, &key, None).await.expect("save");
        }
        cache.push("user:queue", &1).await.expect("push");
        assert_eq!(
            cache.keys("user:*").await.expect("keys"),
            ["user:1", "user:2", "user:queue"]
        );
        assert_eq!(cache.size().await.expect("size"), 4);
        let guard = cache
            .lock("user:1", Duration::from_secs(30))
            .await
            .expect("lock");
        let locks = cache.locks().await.expect("locks");
        assert_eq!(locks.len(), 1);
        assert_eq!(
            (locks[0].key.as_str(), locks[0].token.as_str()),
            ("user:1", guard.token())
        );
        assert_eq!(cache.clear("user:*").await.expect("clear"), 3);
        assert_eq!(cache.keys("*").await.expect("keys"), ["session:1"]);
        assert_eq!(
            cache.locks().await.expect("locks").len(),
            1,
            "clear leaves locks alone"
        );
    }

    async fn dump_and_restore_keep_values_lists_and_ttls(backend: Backend) {
        let cache = backend.cache("a").await;
        cache
            .save(
                "kept",
                &User {
                    name: "bo".into(),
                    visits: 1,
                },
                None,
            )
            .await
            .expect("save");
        cache
            .save("ttl", &"soon", Some(Duration::from_secs(100)))
            .await
            .expect("save");
        cache.push("list", &"first").await.expect("push");
        cache.push("list", &"second").await.expect("push");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("cache.jsonl");
        assert_eq!(cache.dump(&file).await.expect("dump"), 3);
        cache.clear("*").await.expect("clear");
        assert_eq!(cache.size().await.expect("size"), 0);
        assert_eq!(cache.restore(&file).await.expect("restore"), 3);
        assert_eq!(
            cache.load::<User>("kept").await.expect("load").value.name,
            "bo"
        );
        let ttl = cache
            .load::<String>("ttl")
            .await
            .expect("load")
            .expires_at
            .expect("kept its ttl");
        assert!(
            ttl > SystemTime::now() + Duration::from_secs(90)
                && ttl < SystemTime::now() + Duration::from_secs(101)
        );
        assert_eq!(
            cache.pop::<String>("list").await.expect("pop"),
            Some("first".into())
        );
        std::fs::write(&file, "{\"not\":\"an item\"}\n").expect("write");
        assert!(matches!(
            cache.restore(&file).await,
            Err(Error::DumpFormat { line: 1, .. })
        ));
    }

    /// The dashboard's cache page: keys by prefix (wildcards in the prefix are literal), capped,
    /// with kind, TTL and size; one key's contents without recording a read.
    async fn browse_lists_keys_by_prefix_with_ttl_and_peek_reads_one(backend: Backend) {
        let cache = backend.cache("a").await;
        for n in 0..5 {
            let ttl = (n % 2 == 0).then(|| Duration::from_secs(100));
            cache
                .save(&format!("user:{n}"), &n, ttl)
                .await
                .expect("save");
        }
        cache.save("user*x", &"star", None).await.expect("save");
        cache.save("session:1", &"s", None).await.expect("save");
        cache.push("user:queue", &"a").await.expect("push");
        cache.push("user:queue", &"b").await.expect("push");
        let stellar_cache::KeyPage {
            keys: page,
            total,
            complete,
        } = cache.browse("user:", 3, 100).await.expect("browse");
        assert_eq!((total, complete), (6, true), "5 values and a list");
        let keys: Vec<&str> = page.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["user:0", "user:1", "user:2"]);
        let ttl = page[0].ttl_ms.expect("user:0 expires");
        assert!((90_000..=100_000).contains(&ttl), "{ttl}");
        assert_eq!((page[1].ttl_ms, page[1].size), (None, 1));
        let all = cache.browse("user:", 100, 100).await.expect("browse");
        let queue = all
            .keys
            .iter()
            .find(|k| k.key == "user:queue")
            .expect("the list");
        assert_eq!(
            (queue.kind, queue.size),
            (stellar_cache::store::ItemKind::List, 2)
        );
        let star = cache.browse("user*", 100, 100).await.expect("browse");
        assert_eq!((star.keys.len(), star.total), (1, 1), "{star:?}");
        // Counting stops at its bound: the count is then a lower bound, said to be incomplete.
        let capped = cache.browse("user:", 2, 4).await.expect("browse");
        let keys: Vec<&str> = capped.keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["user:0", "user:1"]);
        assert_eq!((capped.total, capped.complete), (4, false));
        match cache.peek("user:queue").await.expect("peek") {
            Some(stellar_cache::DumpItem::List { items, .. }) => {
                assert_eq!(items, [r#""a""#, r#""b""#]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cache.peek("user*x").await.expect("peek"),
            Some(stellar_cache::DumpItem::Value { ref json, .. }) if json == r#""star""#
        ));
        assert_eq!(cache.peek("user:9").await.expect("peek"), None);
        // A bounded peek reads a long list only in ranges up to its byte bound.
        let item = format!("{:0>1000}", 7);
        for _ in 0..100 {
            cache.push("user:long", &item).await.expect("push");
        }
        let long = cache
            .peek_at_most("user:long", 4096)
            .await
            .expect("peek")
            .expect("the list");
        let read = match &long.item {
            stellar_cache::DumpItem::List { items, .. } => items.len(),
            other => panic!("{other:?}"),
        };
        assert!((4..=5).contains(&read), "read {read} items of about 1 KB");
        assert_eq!((long.len, long.complete), (100, false));
        let short = cache
            .peek_at_most("user:queue", 4096)
            .await
            .expect("peek")
            .expect("the list");
        assert_eq!((short.len, short.complete), (2, true));
        assert!(matches!(
            short.item,
            stellar_cache::DumpItem::List { ref items, .. } if items == &[r#""a""#, r#""b""#]
        ));
        let value = cache
            .peek_at_most("user:3", 1)
            .await
            .expect("peek")
            .expect("the value");
        assert_eq!((value.len, value.complete), (1, true));
        assert_eq!(
            cache.peek_at_most("user:9", 4096).await.expect("peek"),
            None
        );
        assert!(cache.peek("user:3").await.expect("peek").is_some());
        let entry = cache.load::<i32>("user:3").await.expect("load");
        assert_eq!(entry.last_read_at, None, "peek records no read");
    }

    contract!(
        keys_size_clear_and_locks_enumerate_without_blocking,
        dump_and_restore_keep_values_lists_and_ttls,
        browse_lists_keys_by_prefix_with_ttl_and_peek_reads_one,
    );
}

/// Single flight (`get_or_set_with`), built on values and locks together.
mod fill {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        time::Duration,
    };

    use stellar_cache::Error;

    use crate::{Backend, User, ms};

    async fn get_or_set_with_runs_the_loader_once_for_fifty_callers_on_three_nodes(
        backend: Backend,
    ) {
        let mut nodes = Vec::new();
        for node in ["a", "b", "c"] {
            nodes.push(backend.cache(node).await);
        }
        let runs = Arc::new(AtomicU32::new(0));
        let callers: Vec<_> = (0..50)
            .map(|i| {
                let (cache, runs) = (nodes[i % 3].clone(), runs.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_set_with(
                            "expensive",
                            Some(Duration::from_secs(60)),
                            || async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(ms(100)).await;
                                Ok::<_, std::convert::Infallible>(User {
                                    name: "computed".into(),
                                    visits: 42,
                                })
                            },
                        )
                        .await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.expect("joined").expect("value").visits, 42);
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the loader ran more than once"
        );
        let failed = nodes[0]
            .get_or_set_with::<User, _, _, _>("broken", None, || async { Err("backend down") })
            .await;
        assert!(matches!(failed, Err(Error::Loader { .. })), "{failed:?}");
        assert!(
            matches!(
                nodes[1].load::<User>("broken").await,
                Err(Error::NotFound { .. })
            ),
            "a failure is not cached"
        );
    }

    contract!(get_or_set_with_runs_the_loader_once_for_fifty_callers_on_three_nodes);
}

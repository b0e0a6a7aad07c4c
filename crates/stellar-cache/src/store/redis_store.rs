//! The cache on Redis: one HASH per entry (`value`, `created_at`, `read_at`), plain LISTs, and
//! locks as `SET NX PX` strings, every multi-step change one Lua script (`lua/`). Key names come
//! from [`crate::keys`].
//!
//! A plain `load` is a script (read, record the read time) only when this node has not recorded
//! a read of the key within the last second (`read_clock.rs`); otherwise it is one atomic
//! pipeline of plain commands, or, with a near cache, often no Redis call at all (`near.rs`,
//! `tracking.rs`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use redis::{Pipeline, Script};
use stellar_bus::{RedisConnection, RedisPool, ScanCursor, TransportError};
use stellar_core::ConfigError;
use tokio::time::Instant;
use tracing::warn;

use super::{
    CacheDump, CacheLists, CacheLocks, CacheValues, DumpItem, ItemKind, KeyInfo, LockInfo,
    NearCacheLimits, NearCacheStats, RawEntry, StoreError, Written,
    near::NearCache,
    read_clock::ReadClock,
    redis_read::{self, parse_ms},
    tracking::{Tracked, Tracking},
};
use crate::keys::Keys;

/// How many keys one SCAN step asks for.
const SCAN_COUNT: u64 = 1000;

/// How many SCAN steps a bounded key listing takes at most (about this many times
/// [`SCAN_COUNT`] keys examined), however few of them match.
const MAX_BOUNDED_SCAN_STEPS: usize = 100;

/// How many keys one UNLINK deletes.
const UNLINK_CHUNK: usize = 500;

// The scripts of `lua/`, one line each: the name is the file name.
stellar_bus::lua_scripts!(
    "../../lua/": save,
    load,
    destroy,
    increment,
    lock,
    unlock,
    extend,
);

/// A cache store on a shared Redis: values, counters and lists at `stellar:cache:{<key>}`, locks
/// at `stellar:lock:{<key>}` (see [`RedisCacheStore::with_prefixes`]); the key is the hash tag,
/// so on Redis Cluster an entry and its lock share a slot.
#[derive(Clone)]
pub struct RedisCacheStore {
    pool: RedisPool,
    keys: Keys,
    scripts: Arc<Scripts>,
    /// When this store last recorded a read of each key.
    reads: Arc<Mutex<ReadClock>>,
    /// The near cache and its tracking connection, if turned on.
    near: Option<Arc<Tracking>>,
    /// Set once Redis refused `MULTI` to this user: loads then always run the load script.
    plain_denied: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisCacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCacheStore")
            .field("pool", &self.pool)
            .field("keys", &self.keys)
            .field("near_cache", &self.near_cache_stats())
            .finish_non_exhaustive()
    }
}

impl RedisCacheStore {
    /// A store on `pool`, with the default key prefixes and no near cache.
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            keys: Keys::default(),
            scripts: Arc::new(Scripts::load()),
            reads: Arc::default(),
            near: None,
            plain_denied: Arc::default(),
        }
    }

    /// The same store with a near cache of `limits` (none if `max_entries` is 0): loaded entries
    /// are kept in this process's memory and served from there until anyone changes them, which
    /// Redis reports on a dedicated RESP3 connection with `CLIENT TRACKING ON` (Redis 7 or
    /// later, as for the rest of the cache). A write by another client is seen here once its invalidation arrives (a fraction
    /// of a millisecond on a local network; see `docs/cache.md`); this store's own writes are
    /// seen at once.
    ///
    /// On a Redis Cluster there is no one server to track keys on: the store runs without a near
    /// cache, and says so in the log.
    pub fn with_near_cache(mut self, limits: NearCacheLimits) -> Self {
        if limits.max_entries > 0 && self.pool.is_cluster() {
            warn!(
                "the near cache needs CLIENT TRACKING on one server: it is off on a Redis Cluster"
            );
            return self;
        }
        self.near =
            (limits.max_entries > 0).then(|| Arc::new(Tracking::new(NearCache::new(limits))));
        self
    }

    /// The near cache's counters; `None` without a near cache.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.near.as_ref().map(|tracking| tracking.near.stats())
    }

    /// Whether `key` is held by the near cache now.
    pub fn is_near_cached(&self, key: &str) -> bool {
        self.near
            .as_ref()
            .is_some_and(|tracking| tracking.near.contains(&self.keys.entry(key)))
    }

    /// Drops `key` from the near cache after this store changed it, so this node reads its own
    /// writes without waiting for the invalidation Redis pushes.
    fn forget(&self, key: &str) {
        if let Some(tracking) = &self.near {
            let entry = self.keys.entry(key);
            tracking.near.invalidate([entry.as_bytes()]);
        }
    }

    /// The near cache's entry of the Redis key `entry`, if it holds one it may serve.
    fn near_hit(&self, entry: &str, now: Instant) -> Option<RawEntry> {
        let tracking = self.near.as_ref()?;
        tracking.near.get(entry, now)
    }

    /// Reads the Redis key `entry` (the caller's `key`), recording the read if `record`, on the
    /// tracking connection if there is one (so the near cache may keep the reply).
    async fn load_from_redis(
        &self,
        key: &str,
        entry: &str,
        slide: Option<Duration>,
        record: bool,
    ) -> Result<Option<RawEntry>, StoreError> {
        let (script, slide) = (&self.scripts.load, ttl_arg(slide));
        let plain_denied = &self.plain_denied;
        let read = async |conn: &mut RedisConnection| {
            if record || plain_denied.load(Ordering::Relaxed) {
                return redis_read::recording(conn, script, entry, &slide).await;
            }
            if let Some(read) = redis_read::plain(conn, entry).await? {
                return Ok(read);
            }
            if !plain_denied.swap(true, Ordering::Relaxed) {
                warn!(
                    "the redis user may not run MULTI/EXEC (grant +@transaction, see \
                     docs/security.md): every load now runs the load script"
                );
            }
            redis_read::recording(conn, script, entry, "").await
        };
        let read = match self.tracked().await {
            Some((tracking, tracked)) => tracking.read(&self.pool, tracked, entry, read).await,
            None => {
                let timeout = self.pool.config().op_timeout;
                let read = self.pool.run("cache load", timeout, read).await;
                // The script wrote: a near cache without its connection holds nothing, but
                // replies still in flight on the lost connection must not go in.
                if record || self.plain_denied.load(Ordering::Relaxed) {
                    self.forget(key);
                }
                read
            }
        };
        read.map(|read| read.entry)
            .map_err(kind_error(key, ItemKind::Value))
    }

    /// The tracking connection, if there is a near cache and the connection is up.
    async fn tracked(&self) -> Option<(&Tracking, Tracked)> {
        let tracking = self.near.as_deref()?;
        Some((tracking, tracking.connection(&self.pool).await?))
    }

    /// The same store with entries (values, counters, lists) at `<entry_prefix>{<key>}` and locks
    /// at `<lock_prefix>{<key>}`, to keep several caches apart on one Redis. Glob characters in a
    /// prefix are taken literally.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`], naming `entry_prefix` or `lock_prefix`, if a prefix holds `{` or
    /// `}`: the store adds the hash tag `{<key>}` itself.
    pub fn with_prefixes(
        mut self,
        entry_prefix: impl Into<String>,
        lock_prefix: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        self.keys = Keys::new(entry_prefix, lock_prefix)?;
        Ok(self)
    }

    /// Every Redis key matching the SCAN pattern `matcher`, sorted and deduplicated.
    async fn scan(&self, matcher: &str) -> Result<Vec<String>, StoreError> {
        let mut cursor = Some(ScanCursor::default());
        let mut found = Vec::new();
        while let Some(at) = cursor.take() {
            let (keys, next) = self.pool.scan_step(at, matcher, SCAN_COUNT).await?;
            found.extend(keys);
            cursor = next;
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Redis keys matching `matcher`, sorted: at most `max`, and whether they are every match.
    /// Stops once more than `max` matched or after [`MAX_BOUNDED_SCAN_STEPS`] steps.
    async fn scan_bounded(
        &self,
        matcher: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let mut cursor = ScanCursor::default();
        let mut found = std::collections::BTreeSet::new();
        let mut steps = 0;
        let complete = loop {
            let (keys, next) = self.pool.scan_step(cursor, matcher, SCAN_COUNT).await?;
            found.extend(keys);
            steps += 1;
            let Some(next) = next else {
                break found.len() <= max;
            };
            if found.len() > max || steps >= MAX_BOUNDED_SCAN_STEPS {
                break false;
            }
            cursor = next;
        };
        Ok((found.into_iter().take(max).collect(), complete))
    }

    /// Runs `script` (one of [`Scripts`]) on the Redis `keys`.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        keys: &[String],
        args: &[&str],
    ) -> Result<T, TransportError> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.pool.invoke(op, script, &keys, args).await
    }

    /// Runs `pipe` as one round trip.
    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let timeout = self.pool.config().op_timeout;
        let reply = self
            .pool
            .run(op, timeout, async |conn| pipe.query_async(conn).await)
            .await?;
        Ok(reply)
    }

    /// The lock `key` as `locks()` lists it; `None` if it was released meanwhile.
    async fn lock_info(&self, key: String) -> Result<Option<LockInfo>, StoreError> {
        let lock = self.keys.lock(&key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&lock).cmd("PTTL").arg(&lock);
        let (token, ttl): (Option<String>, i64) = self.pipeline("lock info", &pipe).await?;
        Ok(token.map(|token| LockInfo {
            key,
            token,
            ttl_ms: u64::try_from(ttl).ok(),
        }))
    }

    /// The dump item of the entry `key`; `None` if it expired meanwhile or has a shape (a type
    /// written by another client) the cache does not own.
    async fn export_one(&self, key: String) -> Result<Option<DumpItem>, StoreError> {
        let entry = self.keys.entry(&key);
        let mut pipe = redis::pipe();
        pipe.cmd("TYPE").arg(&entry).cmd("PTTL").arg(&entry);
        let (kind, pttl): (String, i64) = self.pipeline("TYPE", &pipe).await?;
        let ttl_ms = u64::try_from(pttl).ok();
        Ok(match kind.as_str() {
            "hash" => {
                let cmd = redis::cmd("HMGET")
                    .arg(&entry)
                    .arg("value")
                    .arg("created_at")
                    .clone();
                let (json, created): (Option<String>, Option<String>) =
                    self.pool.query("HMGET", &cmd).await?;
                json.map(|json| DumpItem::Value {
                    key,
                    json,
                    created_at_ms: created.as_deref().and_then(parse_ms),
                    ttl_ms,
                })
            }
            "list" => {
                let cmd = redis::cmd("LRANGE").arg(&entry).arg(0).arg(-1).clone();
                let items = self.pool.query("LRANGE", &cmd).await?;
                Some(DumpItem::List { key, items, ttl_ms })
            }
            _ => None,
        })
    }

    /// One atomic pipeline that replaces the entry of `item` with it.
    fn restore_pipe(&self, item: &DumpItem) -> Pipeline {
        let entry = self.keys.entry(item.key());
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&entry).ignore();
        let ttl_ms = match item {
            DumpItem::Value {
                json,
                created_at_ms,
                ttl_ms,
                ..
            } => {
                pipe.cmd("HSET")
                    .arg(&entry)
                    .arg("value")
                    .arg(json)
                    .arg("created_at")
                    .arg(created_at_ms.unwrap_or(0))
                    .ignore();
                ttl_ms
            }
            // An empty list does not exist in Redis: deleting it was the whole restore.
            DumpItem::List { items, .. } if items.is_empty() => &None,
            DumpItem::List { items, ttl_ms, .. } => {
                pipe.cmd("RPUSH").arg(&entry).arg(items).ignore();
                ttl_ms
            }
        };
        if let Some(ttl) = ttl_ms {
            pipe.cmd("PEXPIRE").arg(&entry).arg((*ttl).max(1)).ignore();
        }
        pipe
    }
}

fn ttl_arg(ttl: Option<Duration>) -> String {
    ttl.map_or_else(String::new, |ttl| ttl.as_millis().max(1).to_string())
}

/// The keys of one `describe` chunk that hold a value or a list, from their `TYPE`, `PTTL` and
/// size replies (in the chunk's order).
fn describe_chunk(
    chunk: &[String],
    kinds: Vec<(String, i64)>,
    sizes: Vec<u64>,
) -> impl Iterator<Item = KeyInfo> + '_ {
    chunk
        .iter()
        .zip(kinds.into_iter().zip(sizes))
        .filter_map(|(key, ((kind, pttl), size))| {
            let kind = match kind.as_str() {
                "hash" => ItemKind::Value,
                "list" => ItemKind::List,
                _ => return None,
            };
            Some(KeyInfo {
                key: key.clone(),
                kind,
                ttl_ms: u64::try_from(pttl).ok(),
                size,
            })
        })
}

/// The one key a glob `pattern` matches when it has no wildcard (`*`, `?`, `[`), unescaped.
fn literal(pattern: &str) -> Option<String> {
    let mut key = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => return None,
            '\\' => key.push(chars.next()?),
            c => key.push(c),
        }
    }
    Some(key)
}

/// Maps Redis's `WRONGTYPE` (the key holds the other kind of item), alone or inside a
/// transaction's reply, to [`StoreError::WrongKind`]; every other failure stays a Redis error.
fn kind_error(key: &str, expected: ItemKind) -> impl FnOnce(TransportError) -> StoreError + '_ {
    move |err| {
        if redis_read::has_server_code(&err, "WRONGTYPE") {
            StoreError::wrong_kind(key, expected)
        } else {
            StoreError::Redis(err)
        }
    }
}

#[async_trait]
impl CacheValues for RedisCacheStore {
    async fn save(
        &self,
        key: &str,
        json: &str,
        ttl: Option<Duration>,
        token: Option<&str>,
    ) -> Result<Written, StoreError> {
        let keys = [self.keys.entry(key), self.keys.lock(key)];
        let args = [json, &ttl_arg(ttl), token.unwrap_or("")];
        let script = &self.scripts.save;
        let done = self.invoke::<u8>("cache save", script, &keys, &args).await;
        self.forget(key);
        let done = done?;
        Ok(if done == 1 {
            Written::Yes
        } else {
            Written::Locked
        })
    }

    async fn load(
        &self,
        key: &str,
        slide: Option<Duration>,
    ) -> Result<Option<RawEntry>, StoreError> {
        let entry = self.keys.entry(key);
        let now = Instant::now();
        let record = slide.is_some() || stellar_core::sync::lock(&self.reads).claim(key, now);
        if !record && let Some(raw) = self.near_hit(&entry, now) {
            // A hit touches no Tokio resource: spend coop budget, so a task looping over hits
            // still yields to the others on its thread (the connection drivers among them).
            tokio::task::coop::consume_budget().await;
            return Ok(Some(raw));
        }
        // Boxed: a near-cache hit then allocates a small future, not one sized for a Redis call.
        Box::pin(self.load_from_redis(key, &entry, slide, record)).await
    }

    async fn destroy(&self, key: &str, token: Option<&str>) -> Result<Option<bool>, StoreError> {
        let keys = [self.keys.entry(key), self.keys.lock(key)];
        let script = &self.scripts.destroy;
        let args = [token.unwrap_or("")];
        let outcome = self
            .invoke::<i64>("cache destroy", script, &keys, &args)
            .await;
        self.forget(key);
        let outcome = outcome?;
        Ok(match outcome {
            -1 => None,
            deleted => Some(deleted > 0),
        })
    }

    async fn increment(
        &self,
        key: &str,
        by: i64,
        token: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let keys = [self.keys.entry(key), self.keys.lock(key)];
        let args = [&by.to_string(), token.unwrap_or("")];
        let script = &self.scripts.increment;
        let reply = self
            .invoke::<Vec<i64>>("cache increment", script, &keys, &args)
            .await;
        self.forget(key);
        let reply = reply?;
        let key = key.to_owned();
        match reply.as_slice() {
            [1, value] => Ok(Some(*value)),
            [-1] => Err(StoreError::WrongKind {
                key,
                expected: ItemKind::Value,
            }),
            [-2] => Err(StoreError::NotACounter { key }),
            [-3] => Err(StoreError::CounterOverflow { key, by }),
            [0] => Ok(None),
            other => Err(StoreError::unexpected("cache increment", other)),
        }
    }
}

#[async_trait]
impl CacheLocks for RedisCacheStore {
    async fn lock(&self, key: &str, token: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let keys = [self.keys.lock(key), self.keys.fence(key)];
        let args = [token, &ttl_arg(Some(ttl))];
        let script = &self.scripts.lock;
        let fence: u64 = self.invoke("cache lock", script, &keys, &args).await?;
        Ok((fence > 0).then_some(fence))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let keys = [self.keys.lock(key)];
        let script = &self.scripts.unlock;
        let released: u8 = self.invoke("cache unlock", script, &keys, &[token]).await?;
        Ok(released == 1)
    }

    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let keys = [self.keys.lock(key)];
        let args = [token, &ttl_arg(Some(ttl))];
        let script = &self.scripts.extend;
        let extended: u8 = self.invoke("cache extend", script, &keys, &args).await?;
        Ok(extended == 1)
    }

    async fn lock_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let cmd = redis::cmd("GET").arg(self.keys.lock(key)).clone();
        Ok(self.pool.query("GET lock", &cmd).await?)
    }

    async fn locks(&self) -> Result<Vec<LockInfo>, StoreError> {
        let mut locks = Vec::new();
        for redis_key in self.scan(&self.keys.lock_pattern()).await? {
            let Some(key) = self.keys.lock_name(&redis_key) else {
                continue;
            };
            locks.extend(self.lock_info(key.to_owned()).await?);
        }
        Ok(locks)
    }
}

#[async_trait]
impl CacheLists for RedisCacheStore {
    async fn push(&self, key: &str, json: &str) -> Result<u64, StoreError> {
        let cmd = redis::cmd("RPUSH")
            .arg(self.keys.entry(key))
            .arg(json)
            .clone();
        let wrong_kind = kind_error(key, ItemKind::List);
        self.pool.query("RPUSH", &cmd).await.map_err(wrong_kind)
    }

    async fn pop(&self, key: &str) -> Result<Option<String>, StoreError> {
        let cmd = redis::cmd("LPOP").arg(self.keys.entry(key)).clone();
        let wrong_kind = kind_error(key, ItemKind::List);
        self.pool.query("LPOP", &cmd).await.map_err(wrong_kind)
    }

    async fn pop_blocking(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let entry = self.keys.entry(key);
        // BLPOP holds its pooled connection while it waits; the deadline covers the wait.
        let deadline = timeout + self.pool.config().op_timeout;
        let reply: Option<(String, String)> = self
            .pool
            .run_blocking("BLPOP", deadline, async |conn| {
                redis::cmd("BLPOP")
                    .arg(&entry)
                    .arg(timeout.as_secs_f64())
                    .query_async(conn)
                    .await
            })
            .await
            .map_err(kind_error(key, ItemKind::List))?;
        Ok(reply.map(|(_, item)| item))
    }

    async fn list_length(&self, key: &str) -> Result<u64, StoreError> {
        let cmd = redis::cmd("LLEN").arg(self.keys.entry(key)).clone();
        let wrong_kind = kind_error(key, ItemKind::List);
        self.pool.query("LLEN", &cmd).await.map_err(wrong_kind)
    }

    async fn list_range(
        &self,
        key: &str,
        start: u64,
        stop: u64,
    ) -> Result<Vec<String>, StoreError> {
        let cmd = redis::cmd("LRANGE")
            .arg(self.keys.entry(key))
            .arg(start)
            .arg(stop)
            .clone();
        let wrong_kind = kind_error(key, ItemKind::List);
        self.pool.query("LRANGE", &cmd).await.map_err(wrong_kind)
    }
}

#[async_trait]
impl CacheDump for RedisCacheStore {
    async fn keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        if let Some(key) = literal(pattern) {
            // One key, no wildcard: one EXISTS instead of a SCAN of the whole keyspace.
            let cmd = redis::cmd("EXISTS").arg(self.keys.entry(&key)).clone();
            let exists: u64 = self.pool.query("EXISTS", &cmd).await?;
            return Ok(if exists == 1 { vec![key] } else { Vec::new() });
        }
        let found = self.scan(&self.keys.entry_pattern(pattern)).await?;
        let names = found.iter().filter_map(|key| self.keys.entry_name(key));
        Ok(names.map(str::to_owned).collect())
    }

    async fn keys_bounded(
        &self,
        pattern: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        if literal(pattern).is_some() {
            let keys = self.keys(pattern).await?;
            let complete = keys.len() <= max;
            return Ok((keys.into_iter().take(max).collect(), complete));
        }
        let (found, complete) = self
            .scan_bounded(&self.keys.entry_pattern(pattern), max)
            .await?;
        let names = found.iter().filter_map(|key| self.keys.entry_name(key));
        Ok((names.map(str::to_owned).collect(), complete))
    }

    async fn describe(&self, keys: &[String]) -> Result<Vec<KeyInfo>, StoreError> {
        let mut described = Vec::with_capacity(keys.len());
        // A pipeline goes to one node: on a Redis Cluster, one key (one slot) per pipeline.
        let per_pipeline = if self.pool.is_cluster() {
            1
        } else {
            UNLINK_CHUNK
        };
        for chunk in keys.chunks(per_pipeline) {
            let mut pipe = redis::pipe();
            for key in chunk {
                let entry = self.keys.entry(key);
                pipe.cmd("TYPE").arg(&entry).cmd("PTTL").arg(&entry);
            }
            let kinds: Vec<(String, i64)> = self.pipeline("TYPE", &pipe).await?;
            // Sized by kind: a string, set or zset under the prefix (written by another client)
            // gets a harmless EXISTS, never a command of the wrong type (WRONGTYPE would fail
            // the whole pipeline); describe_chunk leaves it out.
            let mut sizes = redis::pipe();
            for (key, (kind, _)) in chunk.iter().zip(&kinds) {
                let entry = self.keys.entry(key);
                match kind.as_str() {
                    "list" => sizes.cmd("LLEN").arg(&entry),
                    "hash" => sizes.cmd("HSTRLEN").arg(&entry).arg("value"),
                    _ => sizes.cmd("EXISTS").arg(&entry),
                };
            }
            let sizes: Vec<u64> = self.pipeline("HSTRLEN", &sizes).await?;
            described.extend(describe_chunk(chunk, kinds, sizes));
        }
        Ok(described)
    }

    async fn clear(&self, pattern: &str) -> Result<u64, StoreError> {
        let mut cleared = 0;
        for chunk in self.keys(pattern).await?.chunks(UNLINK_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|key| self.keys.entry(key)).collect();
            let deleted = self
                .pool
                .query::<u64>("UNLINK", redis::cmd("UNLINK").arg(&keys))
                .await;
            if let Some(tracking) = &self.near {
                tracking.near.invalidate(keys.iter().map(String::as_bytes));
            }
            cleared += deleted?;
        }
        Ok(cleared)
    }

    async fn export(&self, pattern: &str) -> Result<Vec<DumpItem>, StoreError> {
        let mut items = Vec::new();
        for key in self.keys(pattern).await? {
            items.extend(self.export_one(key).await?);
        }
        Ok(items)
    }

    async fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        for item in items {
            let restored = self
                .pipeline::<()>("restore", &self.restore_pipe(item))
                .await;
            self.forget(item.key());
            restored?;
        }
        Ok(())
    }
}

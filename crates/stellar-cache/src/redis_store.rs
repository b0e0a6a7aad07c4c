//! The cache on Redis: one HASH per entry (`value`, `created_at`, `read_at`), plain LISTs, and
//! locks as `SET NX PX` strings, every multi-step change one Lua script (`lua/`).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::Script;
use stellar_bus::{RedisPool, TransportError};

use crate::{
    CacheConfig,
    store::{CacheStore, DumpItem, LockInfo, RawEntry, Written},
};

/// How many keys one SCAN step asks for.
const SCAN_COUNT: u64 = 1000;

/// Loaded once per process and called by SHA (`EVALSHA`, reloaded by redis-rs on `NOSCRIPT`).
#[derive(Debug)]
struct Scripts {
    save: Script,
    load: Script,
    destroy: Script,
    increment: Script,
    lock: Script,
    unlock: Script,
    extend: Script,
}

/// A [`CacheStore`] on a shared Redis.
#[derive(Debug, Clone)]
pub struct RedisCacheStore {
    pool: RedisPool,
    prefix: String,
    lock_prefix: String,
    scripts: Arc<Scripts>,
}

impl RedisCacheStore {
    /// A store on `pool`, with the key prefixes of `config`.
    pub fn new(pool: RedisPool, config: &CacheConfig) -> Self {
        Self {
            pool,
            prefix: config.prefix.clone(),
            lock_prefix: config.lock_prefix.clone(),
            scripts: Arc::new(Scripts {
                save: Script::new(include_str!("../lua/save.lua")),
                load: Script::new(include_str!("../lua/load.lua")),
                destroy: Script::new(include_str!("../lua/destroy.lua")),
                increment: Script::new(include_str!("../lua/increment.lua")),
                lock: Script::new(include_str!("../lua/lock.lua")),
                unlock: Script::new(include_str!("../lua/unlock.lua")),
                extend: Script::new(include_str!("../lua/extend.lua")),
            }),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}{key}", self.lock_prefix)
    }

    /// Every key under `prefix` matching `pattern`, by SCAN.
    async fn scan(&self, prefix: &str, pattern: &str) -> Result<Vec<String>, TransportError> {
        let matcher = format!("{}{pattern}", escape_glob(prefix));
        let mut cursor = 0_u64;
        let mut found = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&matcher)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<String>) = self.pool.query("SCAN", &cmd).await?;
            found.extend(
                keys.into_iter()
                    .filter_map(|key| key.strip_prefix(prefix).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort();
        found.dedup();
        Ok(found)
    }
}

fn ttl_arg(ttl: Option<Duration>) -> String {
    ttl.map_or_else(String::new, |ttl| ttl.as_millis().max(1).to_string())
}

/// Escapes glob characters of a literal prefix, so only the caller's pattern matches patterns.
fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn parse_ms(text: &str) -> Option<u64> {
    text.parse().ok()
}

#[async_trait]
impl CacheStore for RedisCacheStore {
    async fn save(
        &self,
        key: &str,
        json: &str,
        ttl: Option<Duration>,
        token: Option<&str>,
    ) -> Result<Written, TransportError> {
        let (entry, lock) = (self.key(key), self.lock_key(key));
        let ttl = ttl_arg(ttl);
        let done: u8 = self
            .pool
            .invoke(
                "cache save",
                &self.scripts.save,
                &[&entry, &lock],
                &[json, &ttl, token.unwrap_or("")],
            )
            .await?;
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
    ) -> Result<Option<RawEntry>, TransportError> {
        let entry = self.key(key);
        let slide = ttl_arg(slide);
        let reply: Option<(String, String, String, i64, u64)> = self
            .pool
            .invoke("cache load", &self.scripts.load, &[&entry], &[&slide])
            .await?;
        Ok(reply.map(|(json, created, read, pttl, now)| RawEntry {
            json,
            created_at_ms: parse_ms(&created),
            last_read_at_ms: parse_ms(&read),
            expires_at_ms: u64::try_from(pttl).ok().map(|pttl| now + pttl),
        }))
    }

    async fn destroy(
        &self,
        key: &str,
        token: Option<&str>,
    ) -> Result<Option<bool>, TransportError> {
        let (entry, lock) = (self.key(key), self.lock_key(key));
        let outcome: i64 = self
            .pool
            .invoke(
                "cache destroy",
                &self.scripts.destroy,
                &[&entry, &lock],
                &[token.unwrap_or("")],
            )
            .await?;
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
    ) -> Result<Option<i64>, TransportError> {
        let (entry, lock) = (self.key(key), self.lock_key(key));
        let by = by.to_string();
        let reply: Vec<i64> = self
            .pool
            .invoke(
                "cache increment",
                &self.scripts.increment,
                &[&entry, &lock],
                &[&by, token.unwrap_or("")],
            )
            .await?;
        Ok(match reply.as_slice() {
            [1, value] => Some(*value),
            _ => None,
        })
    }

    async fn lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, TransportError> {
        let lock = self.lock_key(key);
        let fence_key = format!("{lock}\u{1f}fence");
        let ttl = ttl_arg(Some(ttl));
        let fence: u64 = self
            .pool
            .invoke(
                "cache lock",
                &self.scripts.lock,
                &[&lock, &fence_key],
                &[token, &ttl],
            )
            .await?;
        Ok((fence > 0).then_some(fence))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<bool, TransportError> {
        let lock = self.lock_key(key);
        let released: u8 = self
            .pool
            .invoke("cache unlock", &self.scripts.unlock, &[&lock], &[token])
            .await?;
        Ok(released == 1)
    }

    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, TransportError> {
        let lock = self.lock_key(key);
        let ttl = ttl_arg(Some(ttl));
        let extended: u8 = self
            .pool
            .invoke(
                "cache extend",
                &self.scripts.extend,
                &[&lock],
                &[token, &ttl],
            )
            .await?;
        Ok(extended == 1)
    }

    async fn lock_holder(&self, key: &str) -> Result<Option<String>, TransportError> {
        self.pool
            .query("GET lock", redis::cmd("GET").arg(self.lock_key(key)))
            .await
    }

    async fn push(&self, key: &str, json: &str) -> Result<u64, TransportError> {
        self.pool
            .query("RPUSH", redis::cmd("RPUSH").arg(self.key(key)).arg(json))
            .await
    }

    async fn pop(&self, key: &str) -> Result<Option<String>, TransportError> {
        self.pool
            .query("LPOP", redis::cmd("LPOP").arg(self.key(key)))
            .await
    }

    async fn pop_blocking(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>, TransportError> {
        let entry = self.key(key);
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
            .await?;
        Ok(reply.map(|(_, item)| item))
    }

    async fn list_length(&self, key: &str) -> Result<u64, TransportError> {
        self.pool
            .query("LLEN", redis::cmd("LLEN").arg(self.key(key)))
            .await
    }

    async fn keys(&self, pattern: &str) -> Result<Vec<String>, TransportError> {
        self.scan(&self.prefix, pattern).await
    }

    async fn clear(&self, pattern: &str) -> Result<u64, TransportError> {
        let mut cleared = 0;
        for chunk in self.keys(pattern).await?.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|key| self.key(key)).collect();
            let deleted: u64 = self
                .pool
                .query("UNLINK", redis::cmd("UNLINK").arg(&keys))
                .await?;
            cleared += deleted;
        }
        Ok(cleared)
    }

    async fn locks(&self) -> Result<Vec<LockInfo>, TransportError> {
        let mut locks = Vec::new();
        for key in self.scan(&self.lock_prefix, "*").await? {
            if key.ends_with("\u{1f}fence") {
                // A fencing counter beside its lock, not a lock.
                continue;
            }
            let lock = self.lock_key(&key);
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&lock).cmd("PTTL").arg(&lock);
            let timeout = self.pool.config().op_timeout;
            let (token, ttl): (Option<String>, i64) = self
                .pool
                .run("lock info", timeout, async |conn| {
                    pipe.query_async(conn).await
                })
                .await?;
            if let Some(token) = token {
                locks.push(LockInfo {
                    key,
                    token,
                    ttl_ms: u64::try_from(ttl).ok(),
                });
            }
        }
        Ok(locks)
    }

    async fn export(&self, pattern: &str) -> Result<Vec<DumpItem>, TransportError> {
        let timeout = self.pool.config().op_timeout;
        let mut items = Vec::new();
        for key in self.keys(pattern).await? {
            let full = self.key(&key);
            let mut pipe = redis::pipe();
            pipe.cmd("TYPE").arg(&full).cmd("PTTL").arg(&full);
            let (kind, pttl): (String, i64) = self
                .pool
                .run("TYPE", timeout, async |conn| pipe.query_async(conn).await)
                .await?;
            let ttl_ms = u64::try_from(pttl).ok();
            match kind.as_str() {
                "hash" => {
                    let cmd = redis::cmd("HMGET")
                        .arg(&full)
                        .arg("value")
                        .arg("created_at")
                        .clone();
                    let (json, created): (Option<String>, Option<String>) =
                        self.pool.query("HMGET", &cmd).await?;
                    if let Some(json) = json {
                        let created_at_ms = created.as_deref().and_then(parse_ms);
                        items.push(DumpItem::Value {
                            key,
                            json,
                            created_at_ms,
                            ttl_ms,
                        });
                    }
                }
                "list" => {
                    let items_of: Vec<String> = self
                        .pool
                        .query("LRANGE", redis::cmd("LRANGE").arg(&full).arg(0).arg(-1))
                        .await?;
                    items.push(DumpItem::List {
                        key,
                        items: items_of,
                        ttl_ms,
                    });
                }
                // Expired meanwhile, or written by another client in a shape we do not own.
                _ => {}
            }
        }
        Ok(items)
    }

    async fn import(&self, items: &[DumpItem]) -> Result<(), TransportError> {
        let timeout = self.pool.config().op_timeout;
        for item in items {
            let mut pipe = redis::pipe();
            pipe.atomic();
            match item {
                DumpItem::Value {
                    key,
                    json,
                    created_at_ms,
                    ttl_ms,
                } => {
                    let full = self.key(key);
                    pipe.cmd("DEL").arg(&full).ignore();
                    pipe.cmd("HSET")
                        .arg(&full)
                        .arg("value")
                        .arg(json)
                        .arg("created_at")
                        .arg(created_at_ms.unwrap_or(0))
                        .ignore();
                    if let Some(ttl) = ttl_ms {
                        pipe.cmd("PEXPIRE").arg(&full).arg((*ttl).max(1)).ignore();
                    }
                }
                DumpItem::List { key, items, ttl_ms } => {
                    let full = self.key(key);
                    pipe.cmd("DEL").arg(&full).ignore();
                    if !items.is_empty() {
                        pipe.cmd("RPUSH").arg(&full).arg(items).ignore();
                        if let Some(ttl) = ttl_ms {
                            pipe.cmd("PEXPIRE").arg(&full).arg((*ttl).max(1)).ignore();
                        }
                    }
                }
            }
            self.pool
                .run("restore", timeout, async |conn| {
                    pipe.query_async::<()>(conn).await
                })
                .await?;
        }
        Ok(())
    }
}

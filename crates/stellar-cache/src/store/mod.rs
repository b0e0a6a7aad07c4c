//! The storage seam of the cache, for backends: raw JSON strings in, raw JSON strings out.
//!
//! A [`Cache`](crate::Cache) runs on a [`CacheStore`]: any type with all four capabilities,
//! each a small trait of atomic primitives.
//!
//! | capability | operations |
//! |---|---|
//! | [`CacheValues`] | `save`, `load`, `destroy`, `increment` |
//! | [`CacheLocks`] | `lock`, `unlock`, `extend`, `lock_holder`, `locks` |
//! | [`CacheLists`] | `push`, `pop`, `pop_blocking`, `list_length` |
//! | [`CacheDump`] | `keys`, `describe`, `clear`, `export`, `import` |
//!
//! Two stores implement them all: [`MemoryCacheStore`] (this process's memory) and
//! [`RedisCacheStore`] (a shared Redis, one Lua script per multi-step operation). Keys are the
//! caller's keys, without any prefix: a store applies its own. A `token` is the lock token of the
//! writer (`None`: holds no lock). Every operation fails with a [`StoreError`].

use std::{fmt, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod error;
mod memory_store;
mod near;
mod read_clock;
mod redis_read;
mod redis_store;
mod tracking;

pub use self::{
    error::{ItemKind, StoreError},
    memory_store::MemoryCacheStore,
    near::{NearCacheLimits, NearCacheStats},
    redis_store::RedisCacheStore,
};

/// One stored entry, as a store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The value as JSON.
    pub json: String,
    /// When it was written (store clock, ms since the Unix epoch), if known.
    pub created_at_ms: Option<u64>,
    /// When it was read before this read, if ever.
    pub last_read_at_ms: Option<u64>,
    /// When it expires (store clock), if it does.
    pub expires_at_ms: Option<u64>,
}

/// The outcome of a write that honours locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Done.
    Yes,
    /// Another owner holds the key's lock; nothing was written.
    Locked,
}

/// A lock as `locks()` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The locked key.
    pub key: String,
    /// The holder's token.
    pub token: String,
    /// Time left, in ms.
    pub ttl_ms: Option<u64>,
}

/// One key of a dump: everything needed to write it back, with its remaining TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DumpItem {
    /// A value entry.
    Value {
        /// The key, without the prefix.
        key: String,
        /// The value as JSON.
        json: String,
        /// When it was written, if known.
        created_at_ms: Option<u64>,
        /// Time left, in ms; `None` for no expiry.
        ttl_ms: Option<u64>,
    },
    /// A list, oldest item first.
    List {
        /// The key, without the prefix.
        key: String,
        /// The items as JSON.
        items: Vec<String>,
        /// Time left, in ms; `None` for no expiry.
        ttl_ms: Option<u64>,
    },
}

impl DumpItem {
    /// The key, without the prefix.
    pub fn key(&self) -> &str {
        match self {
            Self::Value { key, .. } | Self::List { key, .. } => key,
        }
    }
}

/// What a key holds, without its contents, as `describe` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key, without the prefix.
    pub key: String,
    /// A value (or counter) or a list.
    #[serde(serialize_with = "kind_name")]
    pub kind: ItemKind,
    /// Time left, in ms; `None` for no expiry.
    pub ttl_ms: Option<u64>,
    /// The value's JSON length in bytes, or the list's number of items.
    pub size: u64,
}

fn kind_name<S: serde::Serializer>(kind: &ItemKind, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(kind)
}

/// Values and counters: JSON entries that honour locks on write.
#[async_trait]
pub trait CacheValues: Send + Sync {
    /// Writes `json` at `key` (replacing it, resetting its creation time) unless locked by another.
    async fn save(
        &self,
        key: &str,
        json: &str,
        ttl: Option<Duration>,
        token: Option<&str>,
    ) -> Result<Written, StoreError>;
    /// Reads `key` and records the read; with `slide`, also resets its TTL to `slide`.
    async fn load(
        &self,
        key: &str,
        slide: Option<Duration>,
    ) -> Result<Option<RawEntry>, StoreError>;
    /// Deletes `key`: `Ok(Some(true))` deleted, `Ok(Some(false))` absent, `Ok(None)` locked by another.
    async fn destroy(&self, key: &str, token: Option<&str>) -> Result<Option<bool>, StoreError>;
    /// Adds `by` to the integer entry at `key` (created at 0); `None` when locked by another.
    async fn increment(
        &self,
        key: &str,
        by: i64,
        token: Option<&str>,
    ) -> Result<Option<i64>, StoreError>;
}

/// Locks: owned by a token, compare-and-set to release or extend, fenced on every acquisition.
#[async_trait]
pub trait CacheLocks: Send + Sync {
    /// Takes (or, for the same token, refreshes) the lock of `key`; the fencing token, or `None`
    /// when another token holds it.
    async fn lock(&self, key: &str, token: &str, ttl: Duration) -> Result<Option<u64>, StoreError>;
    /// Releases the lock of `key` if `token` holds it.
    async fn unlock(&self, key: &str, token: &str) -> Result<bool, StoreError>;
    /// Extends the lock of `key` to `ttl` if `token` holds it.
    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Who holds the lock of `key`.
    async fn lock_holder(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Every held lock.
    async fn locks(&self) -> Result<Vec<LockInfo>, StoreError>;
}

/// Lists: FIFO queues of JSON items that ignore locks.
#[async_trait]
pub trait CacheLists: Send + Sync {
    /// Appends an item to the list at `key`; the new length.
    async fn push(&self, key: &str, json: &str) -> Result<u64, StoreError>;
    /// Takes the oldest item of the list at `key`.
    async fn pop(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Takes the oldest item, waiting up to `timeout` for one.
    async fn pop_blocking(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError>;
    /// The length of the list at `key` (0 if absent).
    async fn list_length(&self, key: &str) -> Result<u64, StoreError>;
    /// The items of list `key` from index `start` to `stop` (inclusive, oldest first), without
    /// changing it; empty if absent or past its end.
    async fn list_range(&self, key: &str, start: u64, stop: u64)
    -> Result<Vec<String>, StoreError>;
}

/// Enumeration, bulk deletion, and dumps of values and lists (locks are left alone).
#[async_trait]
pub trait CacheDump: Send + Sync {
    /// Keys matching a glob `pattern` (`*`, `?`), without the prefix; never blocks the store.
    async fn keys(&self, pattern: &str) -> Result<Vec<String>, StoreError>;
    /// At most `max` keys matching `pattern` (sorted), and whether they are every match: a
    /// bounded read for browsing. Memory gives the first `max` by name; Redis stops its SCAN once
    /// it has seen more than `max` matches or after a bounded number of steps, so which keys an
    /// incomplete answer holds is up to the store.
    async fn keys_bounded(
        &self,
        pattern: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError>;
    /// What each of `keys` holds (kind, TTL, size), without reading the contents; keys that do
    /// not exist are left out.
    async fn describe(&self, keys: &[String]) -> Result<Vec<KeyInfo>, StoreError>;
    /// Deletes every key matching `pattern`; how many.
    async fn clear(&self, pattern: &str) -> Result<u64, StoreError>;
    /// Everything under `pattern`, with remaining TTLs.
    async fn export(&self, pattern: &str) -> Result<Vec<DumpItem>, StoreError>;
    /// Writes dumped items back, replacing what is there.
    async fn import(&self, items: &[DumpItem]) -> Result<(), StoreError>;
}

/// Everything a [`Cache`](crate::Cache) needs: all four capabilities. Implemented for every type
/// that has them, so a store implements the four traits and is then usable as
/// `Arc<dyn CacheStore>`.
pub trait CacheStore:
    CacheValues + CacheLocks + CacheLists + CacheDump + fmt::Debug + 'static
{
}

impl<T> CacheStore for T where
    T: CacheValues + CacheLocks + CacheLists + CacheDump + fmt::Debug + ?Sized + 'static
{
}

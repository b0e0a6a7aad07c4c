//! The shared cluster cache of a Stellar cluster.
//!
//! A [`Cache`] stores serde values as JSON under a prefix (`stellar:cache:` by default), so other
//! clients can read and write them too; lists and counters live beside them. Every node, and
//! every other client of the same Redis, sees the same data. Locks ([`Cache::lock`]) belong to
//! the caller that took them (a random token), or to the node with [`Cache::as_node`]; unlock and
//! extend are compare-and-set, so nobody removes someone else's lock, and every acquisition gets a
//! higher fencing token. Writes to a key locked by another owner fail with [`Error::Locked`].
//! [`Cache::get_or_set_with`] runs its loader once across the cluster when many callers miss at
//! once.
//!
//! A [`CacheStore`] holds the data: [`RedisCacheStore`] (one atomic Lua script per multi-step
//! operation, SCAN instead of KEYS) or [`MemoryCacheStore`] for the embedded backend. One contract
//! test suite runs against both.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> stellar_cache::Result<()> {
//! use std::time::Duration;
//! use stellar_cache::Cache;
//!
//! let cache = Cache::memory();
//! cache.save("greeting", &"hello", Some(Duration::from_secs(60))).await?;
//! let entry = cache.load::<String>("greeting").await?;
//! assert_eq!(entry.value, "hello");
//!
//! let guard = cache.lock("greeting", Duration::from_secs(5)).await?;
//! assert!(cache.save("greeting", &"hi", None).await.is_err(), "locked by the guard's owner");
//! cache.holding(&guard).save("greeting", &"hi", None).await?;
//! assert!(cache.unlock(&guard).await?);
//! # Ok(())
//! # }
//! ```

mod cache;
mod error;
mod memory_store;
mod redis_store;
mod store;

pub use crate::{
    cache::{Cache, CacheConfig, Entry, LockGuard},
    error::{Error, Result},
    memory_store::MemoryCacheStore,
    redis_store::RedisCacheStore,
    store::{CacheStore, DumpItem, LockInfo, RawEntry, Written},
};

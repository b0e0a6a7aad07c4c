//! The shared cluster cache of a Stellar cluster.
//!
//! A [`Cache`] stores serde values as JSON, so other clients can read and write them too; lists
//! and counters live beside them. Every node, and every other client of the same Redis, sees the
//! same data. Locks ([`Cache::lock`]) belong to the caller that took them (a random token), or to
//! the node with [`Cache::as_node`]; unlock and extend are compare-and-set, so nobody removes
//! someone else's lock, and every acquisition gets a higher fencing token. Writes to a key locked
//! by another owner fail with [`Error::Locked`]. [`Cache::get_or_set_with`] runs its loader once
//! across the cluster when many callers miss at once.
//!
//! # Stores
//!
//! A cache runs on a [`store::CacheStore`], which is any type with the four capabilities of the
//! [`store`] module, each a small trait of atomic primitives:
//! [`CacheValues`](store::CacheValues) (save, load, destroy, increment),
//! [`CacheLocks`](store::CacheLocks) (lock, unlock, extend, holder, list of locks),
//! [`CacheLists`](store::CacheLists) (push, pop, blocking pop, length) and
//! [`CacheDump`](store::CacheDump) (keys, describe, clear, export, import). Stores fail with their own
//! [`store::StoreError`], which [`Error::Store`] carries.
//!
//! Two stores come with the crate, and one contract test suite (a module per capability) runs
//! against both:
//! - [`RedisCacheStore`]: a shared Redis, one atomic Lua script per multi-step operation, SCAN
//!   instead of KEYS; entries at `stellar:cache:{<key>}`, locks at `stellar:lock:{<key>}` (the key
//!   is the hash tag, so on Redis Cluster an entry and its lock share a slot).
//! - [`MemoryCacheStore`]: this process's memory, with the same semantics, for the embedded
//!   backend and tests (Tokio's clock, so paused tests take no real time).
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
mod keys;
mod metrics;
pub mod store;

pub use crate::keys::{LEGACY_PATTERNS, migrated_key};
pub use crate::{
    cache::{Cache, CacheConfig, Entry, KeyPage, LockGuard, Peeked},
    error::{Error, Result},
    store::{DumpItem, KeyInfo, LockInfo, MemoryCacheStore, RedisCacheStore},
};

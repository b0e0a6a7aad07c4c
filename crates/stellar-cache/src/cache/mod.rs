//! The typed cache API over a [`CacheStore`]: one file per capability, like the store traits.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Serialize, de::DeserializeOwned};
use stellar_core::NodeId;

use crate::{
    Error, Result, keys, metrics::CacheMetrics, store::CacheStore, store::MemoryCacheStore,
};

mod dump;
mod fill;
mod lists;
mod locks;
mod values;

pub use self::{
    dump::{KeyPage, Peeked},
    locks::LockGuard,
    values::Entry,
};

/// The longest key accepted, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Settings of a [`Cache`]. Key prefixes belong to the Redis store
/// ([`RedisCacheStore::with_prefixes`](crate::RedisCacheStore::with_prefixes)).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Values whose JSON is larger are refused.
    pub max_value_bytes: usize,
    /// How long `get_or_set_with` waits for another caller's loader before giving up.
    pub fill_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_value_bytes: 16 * 1024 * 1024,
            fill_timeout: Duration::from_secs(30),
        }
    }
}

/// The cluster cache. Cloning it is cheap; clones share the store.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    /// The lock token this handle writes with: `None` holds no lock.
    token: Option<Arc<str>>,
}

struct Inner {
    store: Arc<dyn CacheStore>,
    config: CacheConfig,
    node_id: NodeId,
    /// One gate per key being filled by `get_or_set_with` in this process, so local callers wait
    /// for one loader instead of all polling the store.
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: CacheMetrics,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.inner.store)
            .field("node_id", &self.inner.node_id)
            .field("holds_lock", &self.token.is_some())
            .finish()
    }
}

impl Cache {
    /// A cache on `store`; `node_id` owns locks taken through [`Cache::as_node`].
    pub fn new(store: Arc<dyn CacheStore>, node_id: NodeId, config: CacheConfig) -> Self {
        let inner = Inner {
            store,
            config,
            node_id,
            fills: Mutex::new(HashMap::new()),
            metrics: CacheMetrics::default(),
        };
        Self {
            inner: Arc::new(inner),
            token: None,
        }
    }

    /// A cache in this process's memory, for a single node and for tests.
    pub fn memory() -> Self {
        Self::new(
            Arc::new(MemoryCacheStore::new()),
            NodeId::from_host(),
            CacheConfig::default(),
        )
    }

    /// A handle that writes, locks and unlocks as this node (the original framework's model):
    /// locks it takes are held by the node id, so taking one again refreshes it, and its writes
    /// pass locks held by the node.
    pub fn as_node(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            token: Some(self.inner.node_id.as_str().into()),
        }
    }

    /// A handle whose writes pass the lock held by `guard`.
    pub fn holding(&self, guard: &LockGuard) -> Self {
        Self {
            inner: self.inner.clone(),
            token: Some(guard.token().into()),
        }
    }

    /// Registers the cache's families (operations by op and result, lock waits) on the node's
    /// `metrics`. A node calls it once for its cache.
    pub fn register_metrics(&self, metrics: &stellar_core::Metrics) {
        self.inner.metrics.register(metrics);
    }

    fn counted<T>(&self, op: &'static str, result: Result<T>) -> Result<T> {
        self.inner.metrics.count(op, result)
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn store(&self) -> &dyn CacheStore {
        &*self.inner.store
    }

    /// `value` as JSON, within the size cap.
    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<String> {
        let json = serde_json::to_string(value).map_err(|source| Error::Encode {
            key: key.to_owned(),
            source,
        })?;
        let max = self.inner.config.max_value_bytes;
        if json.len() > max {
            return Err(Error::TooLarge {
                key: key.to_owned(),
                size: json.len(),
                max,
            });
        }
        Ok(json)
    }
}

fn check_key(key: &str) -> Result<()> {
    // An empty key, or one starting with `}`, would leave its Redis hash tag empty: on Redis
    // Cluster its entry and its lock would land in different slots (see `keys.rs`).
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.starts_with('}') {
        "it starts with `}`"
    } else if key.len() > MAX_KEY_BYTES {
        "it is longer than 1 KiB"
    } else if key.contains(keys::SEPARATOR) {
        // The separator of the cache's own companion keys (fill locks, fencing counters).
        "it contains the control character U+001F"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.chars().take(64).collect(),
        reason,
    })
}

fn check_ttl(key: &str, ttl: Option<Duration>) -> Result<()> {
    match ttl {
        Some(ttl) if ttl.is_zero() => Err(Error::InvalidTtl {
            key: key.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn decode<T: DeserializeOwned>(key: &str, json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|source| Error::Decode {
        key: key.to_owned(),
        source,
    })
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

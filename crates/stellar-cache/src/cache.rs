//! The typed cache API over a [`CacheStore`].

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    io::{BufRead, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Serialize, de::DeserializeOwned};
use stellar_core::NodeId;
use tracing::warn;

use crate::{
    CacheStore, DumpItem, Error, LockInfo, MemoryCacheStore, Result, Written,
    memory_store::dump_key,
};

/// The longest key accepted, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Settings of a [`Cache`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Prefix of every entry and list key.
    pub prefix: String,
    /// Prefix of every lock key.
    pub lock_prefix: String,
    /// Values whose JSON is larger are refused.
    pub max_value_bytes: usize,
    /// How long `get_or_set_with` waits for another caller's loader before giving up.
    pub fill_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            prefix: "stellar:cache:".to_owned(),
            lock_prefix: "stellar:lock:".to_owned(),
            max_value_bytes: 16 * 1024 * 1024,
            fill_timeout: Duration::from_secs(30),
        }
    }
}

/// A value with what the cache knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    /// The value.
    pub value: T,
    /// When it was saved, if known (values written by other clients may not say).
    pub created_at: Option<SystemTime>,
    /// When it expires, if it does.
    pub expires_at: Option<SystemTime>,
    /// When it was last read before this read, if ever.
    pub last_read_at: Option<SystemTime>,
}

/// A held lock. Release it with [`Cache::unlock`]; it also expires by itself at its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    key: String,
    token: String,
    fence: u64,
}

impl LockGuard {
    /// The locked key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The owner token: proves ownership to unlock, extend and write.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The fencing token: higher for every new acquisition of this key, so a resource can refuse
    /// writes from an older holder whose lock expired.
    pub fn fence(&self) -> u64 {
        self.fence
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
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.inner.store)
            .field("prefix", &self.inner.config.prefix)
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
            token: Some(guard.token.as_str().into()),
        }
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Saves `value` at `key` for `ttl` (`None`: no expiry), replacing what is there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`], [`Error::InvalidTtl`], [`Error::TooLarge`] or [`Error::Encode`]
    /// before anything is written; [`Error::Locked`] if another owner holds the key's lock.
    pub async fn save<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        check_key(key)?;
        check_ttl(key, ttl)?;
        let json = self.encode(key, value)?;
        match self.inner.store.save(key, &json, ttl, self.token()).await? {
            Written::Yes => Ok(()),
            Written::Locked => Err(Error::Locked {
                key: key.to_owned(),
            }),
        }
    }

    /// Loads the value at `key`. Reading never rewrites the value; it records the read time.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if absent or expired, [`Error::Decode`] if it is not a `T`.
    pub async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Entry<T>> {
        self.load_with(key, None).await
    }

    /// Loads the value at `key` and resets its TTL to `expire_in` (a sliding expiry).
    ///
    /// # Errors
    ///
    /// As [`Cache::load`], and [`Error::InvalidTtl`] for a zero `expire_in`.
    pub async fn load_sliding<T: DeserializeOwned>(
        &self,
        key: &str,
        expire_in: Duration,
    ) -> Result<Entry<T>> {
        check_ttl(key, Some(expire_in))?;
        self.load_with(key, Some(expire_in)).await
    }

    async fn load_with<T: DeserializeOwned>(
        &self,
        key: &str,
        slide: Option<Duration>,
    ) -> Result<Entry<T>> {
        check_key(key)?;
        let raw = self
            .inner
            .store
            .load(key, slide)
            .await?
            .ok_or_else(|| Error::NotFound {
                key: key.to_owned(),
            })?;
        let value = serde_json::from_str(&raw.json).map_err(|source| Error::Decode {
            key: key.to_owned(),
            source,
        })?;
        Ok(Entry {
            value,
            created_at: raw.created_at_ms.map(time),
            expires_at: raw.expires_at_ms.map(time),
            last_read_at: raw.last_read_at_ms.map(time),
        })
    }

    /// Deletes `key`; false if there was nothing to delete.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another owner holds the key's lock.
    pub async fn destroy(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.inner
            .store
            .destroy(key, self.token())
            .await?
            .ok_or_else(|| Error::Locked {
                key: key.to_owned(),
            })
    }

    /// Returns the value at `key`, or runs `loader` to produce it and saves it for `ttl`. When many
    /// callers, on any number of nodes, miss at once, the loader runs once and every caller gets its
    /// value.
    ///
    /// # Errors
    ///
    /// [`Error::Loader`] if the loader fails (nothing is cached, a later call tries again),
    /// [`Error::FillTimeout`] if another caller's loader did not finish within
    /// `CacheConfig::fill_timeout`, and the errors of [`Cache::load`] and [`Cache::save`].
    pub async fn get_or_set_with<T, F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        check_key(key)?;
        check_ttl(key, ttl)?;
        let gate = {
            let mut fills = self
                .inner
                .fills
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            fills.entry(key.to_owned()).or_default().clone()
        };
        let result = {
            let _local_turn = gate.lock().await;
            self.fill(key, ttl, loader).await
        };
        let mut fills = self
            .inner
            .fills
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The map and this call hold the last two references: no local caller waits on the gate.
        if Arc::strong_count(&gate) == 2 {
            fills.remove(key);
        }
        result
    }

    async fn fill<T, F, Fut, E>(&self, key: &str, ttl: Option<Duration>, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let fill_lock = format!("{key}\u{1f}fill");
        let token = stellar_bus::unique_token(&self.inner.node_id, 16);
        let fill_timeout = self.inner.config.fill_timeout;
        let deadline = tokio::time::Instant::now() + fill_timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.load::<T>(key).await {
                Ok(entry) => return Ok(entry.value),
                Err(Error::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
            if self
                .inner
                .store
                .lock(&fill_lock, &token, fill_timeout)
                .await?
                .is_some()
            {
                let outcome = loader().await;
                let saved = match &outcome {
                    Ok(value) => self.save(key, value, ttl).await,
                    Err(_) => Ok(()),
                };
                self.inner.store.unlock(&fill_lock, &token).await?;
                let value = outcome.map_err(|err| Error::Loader {
                    key: key.to_owned(),
                    message: err.to_string(),
                })?;
                if let Err(err) = saved {
                    warn!(key, error = %err, "get_or_set_with could not cache the loaded value");
                }
                return Ok(value);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::FillTimeout {
                    key: key.to_owned(),
                    after: fill_timeout,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Takes the lock of `key` for `ttl`, as this caller (a new random token) or, on an
    /// [`Cache::as_node`] handle, as the node.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another owner holds it; [`Error::InvalidTtl`] for a zero `ttl`.
    pub async fn lock(&self, key: &str, ttl: Duration) -> Result<LockGuard> {
        check_key(key)?;
        check_ttl(key, Some(ttl))?;
        let token = self.token.as_deref().map_or_else(
            || stellar_bus::unique_token(&self.inner.node_id, 16),
            str::to_owned,
        );
        match self.inner.store.lock(key, &token, ttl).await? {
            Some(fence) => Ok(LockGuard {
                key: key.to_owned(),
                token,
                fence,
            }),
            None => Err(Error::Locked {
                key: key.to_owned(),
            }),
        }
    }

    /// Releases `guard`'s lock if it still holds it; false if it expired or someone else took it.
    ///
    /// # Errors
    ///
    /// Fails only if the store cannot be reached.
    pub async fn unlock(&self, guard: &LockGuard) -> Result<bool> {
        Ok(self.inner.store.unlock(&guard.key, &guard.token).await?)
    }

    /// Releases the lock of `key` held by `token` (for tools that kept only the token).
    ///
    /// # Errors
    ///
    /// Fails only if the store cannot be reached.
    pub async fn unlock_token(&self, key: &str, token: &str) -> Result<bool> {
        check_key(key)?;
        Ok(self.inner.store.unlock(key, token).await?)
    }

    /// Extends `guard`'s lock to `ttl` from now if it still holds it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] for a zero `ttl`.
    pub async fn extend(&self, guard: &LockGuard, ttl: Duration) -> Result<bool> {
        check_ttl(&guard.key, Some(ttl))?;
        Ok(self
            .inner
            .store
            .extend(&guard.key, &guard.token, ttl)
            .await?)
    }

    /// Waits until `key` is not locked by another owner, polling with backoff for at most
    /// `retry_for` (zero: check once).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if it is still locked by another owner after `retry_for`.
    pub async fn check_lock(&self, key: &str, retry_for: Duration) -> Result<()> {
        check_key(key)?;
        let deadline = tokio::time::Instant::now() + retry_for;
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.inner.store.lock_holder(key).await? {
                None => return Ok(()),
                Some(holder) if Some(holder.as_str()) == self.token() => return Ok(()),
                Some(_) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Locked {
                    key: key.to_owned(),
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Appends `item` to the list at `key` (a FIFO queue); the new length. Lists ignore locks.
    ///
    /// # Errors
    ///
    /// As [`Cache::save`]'s validation.
    pub async fn push<T: Serialize + ?Sized>(&self, key: &str, item: &T) -> Result<u64> {
        check_key(key)?;
        let json = self.encode(key, item)?;
        Ok(self.inner.store.push(key, &json).await?)
    }

    /// Takes the oldest item of the list at `key`; `None` if it is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if the item is not a `T` (it is consumed all the same).
    pub async fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_key(key)?;
        let item = self.inner.store.pop(key).await?;
        item.map(|json| decode(key, &json)).transpose()
    }

    /// Takes the oldest item of the list at `key`, waiting up to `timeout` for one.
    ///
    /// # Errors
    ///
    /// As [`Cache::pop`].
    pub async fn pop_blocking<T: DeserializeOwned>(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<T>> {
        check_key(key)?;
        let item = self.inner.store.pop_blocking(key, timeout).await?;
        item.map(|json| decode(key, &json)).transpose()
    }

    /// The length of the list at `key`; 0 if absent.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn list_length(&self, key: &str) -> Result<u64> {
        check_key(key)?;
        Ok(self.inner.store.list_length(key).await?)
    }

    /// Adds `by` to the counter at `key` (created at 0); the new value. Counters are entries whose
    /// value is an integer: `load::<i64>` reads them.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another owner holds the key's lock.
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        check_key(key)?;
        self.inner
            .store
            .increment(key, by, self.token())
            .await?
            .ok_or_else(|| Error::Locked {
                key: key.to_owned(),
            })
    }

    /// Subtracts `by` from the counter at `key`; the new value.
    ///
    /// # Errors
    ///
    /// As [`Cache::increment`].
    pub async fn decrement(&self, key: &str, by: i64) -> Result<i64> {
        self.increment(key, by.checked_neg().unwrap_or(i64::MAX))
            .await
    }

    /// Keys (values, counters and lists) matching the glob `pattern`, without the prefix.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>> {
        Ok(self.inner.store.keys(pattern).await?)
    }

    /// How many keys the cache holds.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn size(&self) -> Result<u64> {
        Ok(self.keys("*").await?.len() as u64)
    }

    /// Deletes every key matching `pattern` (locks are left alone); how many.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn clear(&self, pattern: &str) -> Result<u64> {
        Ok(self.inner.store.clear(pattern).await?)
    }

    /// Every lock currently held.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn locks(&self) -> Result<Vec<LockInfo>> {
        Ok(self.inner.store.locks().await?)
    }

    /// Writes every key (values, counters, lists) with its remaining TTL to `path`, one JSON item
    /// per line; how many.
    ///
    /// # Errors
    ///
    /// [`Error::DumpFile`] if the file cannot be written.
    pub async fn dump(&self, path: &Path) -> Result<u64> {
        let mut items = self.inner.store.export("*").await?;
        items.sort_by(|a, b| dump_key(a).cmp(dump_key(b)));
        let io = |source| Error::DumpFile {
            path: path.to_owned(),
            source,
        };
        let partial = path.with_extension("partial");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
        for item in &items {
            let line = serde_json::to_string(item).expect("dump items serialise to JSON");
            writeln!(file, "{line}").map_err(io)?;
        }
        file.into_inner()
            .map_err(|err| io(err.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&partial, path).map_err(io)?;
        Ok(items.len() as u64)
    }

    /// Writes back what [`Cache::dump`] wrote, with the TTLs left at dump time; how many keys.
    ///
    /// # Errors
    ///
    /// [`Error::DumpFile`] or [`Error::DumpFormat`] before anything is written.
    pub async fn restore(&self, path: &Path) -> Result<u64> {
        let io = |source| Error::DumpFile {
            path: path.to_owned(),
            source,
        };
        let file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut items: Vec<DumpItem> = Vec::new();
        for (index, line) in file.lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let item = serde_json::from_str(&line).map_err(|source| Error::DumpFormat {
                path: path.to_owned(),
                line: index + 1,
                source,
            })?;
            items.push(item);
        }
        self.inner.store.import(&items).await?;
        Ok(items.len() as u64)
    }

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
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.len() > MAX_KEY_BYTES {
        "it is longer than 1 KiB"
    } else if key.contains('\u{1f}') {
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

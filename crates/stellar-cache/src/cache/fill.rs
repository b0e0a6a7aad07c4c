//! Single flight: [`Cache::get_or_set_with`] runs a loader once across the cluster.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;
use tracing::warn;

use super::{Cache, check_key, check_ttl};
use crate::{Error, Result, keys};

/// A per-key gate of this process: local callers of one key queue on it.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// The longest pause between two looks for another caller's value.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

impl Cache {
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
        let gate = self.enter_gate(key);
        let result = {
            let _local_turn = gate.lock().await;
            self.fill(key, ttl, loader).await
        };
        self.leave_gate(key, gate);
        result
    }

    /// The gate of `key`, created if no local caller is filling it.
    fn enter_gate(&self, key: &str) -> Gate {
        let mut fills = stellar_core::sync::lock(&self.inner.fills);
        fills.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets the gate of `key` when no other local caller waits on it.
    fn leave_gate(&self, key: &str, gate: Gate) {
        let mut fills = stellar_core::sync::lock(&self.inner.fills);
        // The map and this call hold the last two references: no local caller waits on the gate.
        if Arc::strong_count(&gate) == 2 {
            fills.remove(key);
        }
    }

    /// Loads `key`, or takes its fill lock and runs the loader, or waits with backoff for whoever
    /// holds the fill lock, until `fill_timeout`.
    async fn fill<T, F, Fut, E>(&self, key: &str, ttl: Option<Duration>, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let fill_lock = keys::fill_lock(key);
        let token = self.new_token();
        let fill_timeout = self.inner.config.fill_timeout;
        let deadline = Instant::now() + fill_timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.load::<T>(key).await {
                Ok(entry) => return Ok(entry.value),
                Err(Error::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
            if self
                .store()
                .lock(&fill_lock, &token, fill_timeout)
                .await?
                .is_some()
            {
                let outcome = self.load_and_save(key, ttl, loader).await;
                self.store().unlock(&fill_lock, &token).await?;
                return outcome;
            }
            if Instant::now() >= deadline {
                return Err(Error::FillTimeout {
                    key: key.to_owned(),
                    after: fill_timeout,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs the loader (the fill lock held) and caches what it returns. A value that cannot be
    /// cached is still returned: the caller asked for the value, and the next caller loads again.
    async fn load_and_save<T, F, Fut, E>(
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
        let value = loader().await.map_err(|err| Error::Loader {
            key: key.to_owned(),
            message: err.to_string(),
        })?;
        if let Err(err) = self.save(key, &value, ttl).await {
            warn!(key, error = %err, "get_or_set_with could not cache the loaded value");
        }
        Ok(value)
    }
}

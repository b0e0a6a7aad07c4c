//! Locks: [`Cache::lock`], [`Cache::unlock`], [`Cache::extend`], [`Cache::check_lock`],
//! [`Cache::locks`].

use std::time::Duration;

use super::{Cache, check_key, check_ttl};
use crate::{Error, Result, store::LockInfo};

/// How long a lock token is, in bytes of randomness.
const TOKEN_BYTES: usize = 16;

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

impl Cache {
    /// A new random lock token, unique across the cluster.
    pub(super) fn new_token(&self) -> String {
        stellar_bus::unique_token(&self.inner.node_id, TOKEN_BYTES)
    }

    /// Takes the lock of `key` for `ttl`, as this caller (a new random token) or, on an
    /// [`Cache::as_node`] handle, as the node.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another owner holds it; [`Error::InvalidTtl`] for a zero `ttl`.
    pub async fn lock(&self, key: &str, ttl: Duration) -> Result<LockGuard> {
        let locked = async {
            check_key(key)?;
            check_ttl(key, Some(ttl))?;
            let token = self.token().map_or_else(|| self.new_token(), str::to_owned);
            match self.store().lock(key, &token, ttl).await? {
                Some(fence) => Ok(LockGuard {
                    key: key.to_owned(),
                    token,
                    fence,
                }),
                None => Err(Error::locked(key)),
            }
        };
        self.counted("lock", locked.await)
    }

    /// Releases `guard`'s lock if it still holds it; false if it expired or someone else took it.
    ///
    /// # Errors
    ///
    /// Fails only if the store cannot be reached.
    pub async fn unlock(&self, guard: &LockGuard) -> Result<bool> {
        let unlocked = self.store().unlock(&guard.key, &guard.token).await;
        self.counted("unlock", unlocked.map_err(Error::from))
    }

    /// Releases the lock of `key` held by `token` (for tools that kept only the token).
    ///
    /// # Errors
    ///
    /// Fails only if the store cannot be reached.
    pub async fn unlock_token(&self, key: &str, token: &str) -> Result<bool> {
        check_key(key)?;
        Ok(self.store().unlock(key, token).await?)
    }

    /// Extends `guard`'s lock to `ttl` from now if it still holds it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] for a zero `ttl`.
    pub async fn extend(&self, guard: &LockGuard, ttl: Duration) -> Result<bool> {
        check_ttl(&guard.key, Some(ttl))?;
        Ok(self.store().extend(&guard.key, &guard.token, ttl).await?)
    }

    /// Waits until `key` is not locked by another owner, polling with backoff for at most
    /// `retry_for` (zero: check once).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if it is still locked by another owner after `retry_for`.
    pub async fn check_lock(&self, key: &str, retry_for: Duration) -> Result<()> {
        check_key(key)?;
        let started = tokio::time::Instant::now();
        let deadline = started + retry_for;
        let mut backoff = Duration::from_millis(10);
        let mut waited = false;
        loop {
            match self.store().lock_holder(key).await? {
                Some(holder) if Some(holder.as_str()) != self.token() => {}
                _ => {
                    if waited {
                        self.inner.metrics.lock_waited(started.elapsed());
                    }
                    return Ok(());
                }
            }
            waited = true;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.inner.metrics.lock_waited(started.elapsed());
                return Err(Error::locked(key));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Every lock currently held.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached.
    pub async fn locks(&self) -> Result<Vec<LockInfo>> {
        Ok(self.store().locks().await?)
    }
}

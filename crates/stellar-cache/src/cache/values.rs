//! Values and counters: [`Cache::save`], [`Cache::load`], [`Cache::destroy`], [`Cache::increment`].

use std::time::{Duration, SystemTime};

use serde::{Serialize, de::DeserializeOwned};

use super::{Cache, check_key, check_ttl, decode, time};
use crate::{
    Error, Result,
    store::{StoreError, Written},
};

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

impl Cache {
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
        let saved = async {
            check_key(key)?;
            check_ttl(key, ttl)?;
            let json = self.encode(key, value)?;
            match self.store().save(key, &json, ttl, self.token()).await? {
                Written::Yes => Ok(()),
                Written::Locked => Err(Error::locked(key)),
            }
        };
        self.counted("save", saved.await)
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
        let loaded = self.load_raw(key, slide).await;
        self.counted("load", loaded)
    }

    async fn load_raw<T: DeserializeOwned>(
        &self,
        key: &str,
        slide: Option<Duration>,
    ) -> Result<Entry<T>> {
        check_key(key)?;
        let raw = self
            .store()
            .load(key, slide)
            .await?
            .ok_or_else(|| Error::NotFound {
                key: key.to_owned(),
            })?;
        Ok(Entry {
            value: decode(key, &raw.json)?,
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
        let destroyed = async {
            check_key(key)?;
            let deleted = self.store().destroy(key, self.token()).await?;
            deleted.ok_or_else(|| Error::locked(key))
        };
        self.counted("destroy", destroyed.await)
    }

    /// Adds `by` to the counter at `key` (created at 0); the new value. Counters are entries whose
    /// value is an integer: `load::<i64>` reads them.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another owner holds the key's lock; [`Error::Store`] with
    /// [`StoreError::NotACounter`](crate::store::StoreError::NotACounter) or
    /// [`StoreError::CounterOverflow`](crate::store::StoreError::CounterOverflow) if the value
    /// is not an integer or would overflow.
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let incremented = async {
            check_key(key)?;
            let counted = self.store().increment(key, by, self.token()).await?;
            counted.ok_or_else(|| Error::locked(key))
        };
        self.counted("increment", incremented.await)
    }

    /// Subtracts `by` from the counter at `key`; the new value.
    ///
    /// # Errors
    ///
    /// As [`Cache::increment`].
    pub async fn decrement(&self, key: &str, by: i64) -> Result<i64> {
        match by.checked_neg() {
            Some(by) => self.increment(key, by).await,
            None => Err(StoreError::CounterOverflow {
                key: key.to_owned(),
                by,
            }
            .into()),
        }
    }
}

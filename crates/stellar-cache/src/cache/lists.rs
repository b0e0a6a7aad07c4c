//! Lists: [`Cache::push`], [`Cache::pop`], [`Cache::pop_blocking`], [`Cache::list_length`].

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::{Cache, check_key, decode};
use crate::Result;

impl Cache {
    /// Appends `item` to the list at `key` (a FIFO queue); the new length. Lists ignore locks.
    ///
    /// # Errors
    ///
    /// As [`Cache::save`]'s validation; [`Error::Store`](crate::Error::Store) with
    /// [`StoreError::WrongKind`](crate::store::StoreError::WrongKind) if `key` holds a value.
    pub async fn push<T: Serialize + ?Sized>(&self, key: &str, item: &T) -> Result<u64> {
        let pushed = async {
            check_key(key)?;
            let json = self.encode(key, item)?;
            Ok(self.store().push(key, &json).await?)
        };
        self.counted("push", pushed.await)
    }

    /// Takes the oldest item of the list at `key`; `None` if it is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) if the item is not a `T` (it is consumed all the
    /// same); a wrong kind as [`Cache::push`].
    pub async fn pop<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let popped = async {
            check_key(key)?;
            let item = self.store().pop(key).await?;
            item.map(|json| decode(key, &json)).transpose()
        };
        self.counted("pop", popped.await)
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
        let item = self.store().pop_blocking(key, timeout).await?;
        item.map(|json| decode(key, &json)).transpose()
    }

    /// The length of the list at `key`; 0 if absent.
    ///
    /// # Errors
    ///
    /// Fails if the store cannot be reached; a wrong kind as [`Cache::push`].
    pub async fn list_length(&self, key: &str) -> Result<u64> {
        check_key(key)?;
        Ok(self.store().list_length(key).await?)
    }
}

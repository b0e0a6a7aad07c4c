//! Errors of the cache.

use std::{path::PathBuf, time::Duration};

use crate::store::StoreError;

/// A cache operation failed. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No value at the key (or it expired).
    #[error("no value at key {key:?}")]
    NotFound {
        /// The key.
        key: String,
    },
    /// Another owner holds the key's lock.
    #[error("key {key:?} is locked by another owner")]
    Locked {
        /// The key.
        key: String,
    },
    /// The key is empty, too long, starts with `}` or holds the control character U+001F.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key, cut to its first 64 characters.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TTL of zero.
    #[error("invalid ttl for key {key:?}: it must be longer than zero")]
    InvalidTtl {
        /// The key.
        key: String,
    },
    /// The value's JSON is larger than `CacheConfig::max_value_bytes`.
    #[error("value for key {key:?} is {size} bytes, over the {max}-byte cap")]
    TooLarge {
        /// The key.
        key: String,
        /// Its encoded size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// The value could not be encoded as JSON.
    #[error("cannot encode the value for key {key:?}")]
    Encode {
        /// The key.
        key: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The stored JSON does not fit the requested type.
    #[error("cannot decode the value at key {key:?}")]
    Decode {
        /// The key.
        key: String,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The loader of `get_or_set_with` failed; nothing was cached.
    #[error("loader for key {key:?} failed: {message}")]
    Loader {
        /// The key.
        key: String,
        /// The loader's error message.
        message: String,
    },
    /// Another caller was filling the key and did not finish in time.
    #[error("key {key:?} was not filled within {after:?}")]
    FillTimeout {
        /// The key.
        key: String,
        /// How long we waited.
        after: Duration,
    },
    /// The store failed (see [`StoreError::is_transient`] for whether to retry).
    #[error("cache store failed")]
    Store(#[from] StoreError),
    /// A dump file could not be read or written.
    #[error("cannot access dump file {path}")]
    DumpFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A dump file holds a line that is not a dump item.
    #[error("dump file {path} line {line} is not a cache dump item")]
    DumpFormat {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether this is a connection blip worth retrying: only a [`Error::Store`] failure can be.
    /// Retry only what is idempotent: a lost reply may mean the operation ran.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Store(err) if err.is_transient())
    }

    pub(crate) fn locked(key: &str) -> Self {
        Self::Locked {
            key: key.to_owned(),
        }
    }
}

/// A cache result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

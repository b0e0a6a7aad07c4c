//! The error of a cache store.

use std::fmt;

use stellar_bus::TransportError;

/// What a key holds: a value (counters are values) or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A value or counter (`save`, `load`, `increment`).
    Value,
    /// A list (`push`, `pop`).
    List,
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Value => "value",
            Self::List => "list",
        })
    }
}

/// A store operation failed. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis failed: it could not be reached, timed out, or refused the command.
    #[error(transparent)]
    Redis(#[from] TransportError),
    /// The key holds another kind of item: a list where a value was expected or the reverse, or
    /// a Redis type another client wrote (e.g. a plain string).
    #[error("key {key:?} does not hold a {expected}")]
    WrongKind {
        /// The key.
        key: String,
        /// The kind the operation works on.
        expected: ItemKind,
    },
    /// The value at the key is not an integer, so it cannot be counted.
    #[error("value at key {key:?} is not an integer")]
    NotACounter {
        /// The key.
        key: String,
    },
    /// The counter would leave the 64-bit signed range; it keeps its value.
    #[error("counter at key {key:?} would overflow adding {by}")]
    CounterOverflow {
        /// The key.
        key: String,
        /// The amount that did not fit.
        by: i64,
    },
}

impl StoreError {
    /// Whether this is a connection blip worth retrying (see [`TransportError::is_transient`]).
    /// Only Redis errors can be; retry only what is idempotent.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Redis(err) => err.is_transient(),
            Self::WrongKind { .. } | Self::NotACounter { .. } | Self::CounterOverflow { .. } => {
                false
            }
        }
    }

    /// A script replied with something its contract does not allow: Redis and this build
    /// disagree about the script (never retried).
    pub(crate) fn unexpected(op: &'static str, reply: &[i64]) -> Self {
        Self::Redis(TransportError::Backend {
            op,
            source: format!("unexpected script reply {reply:?}").into(),
        })
    }

    pub(crate) fn wrong_kind(key: &str, expected: ItemKind) -> Self {
        Self::WrongKind {
            key: key.to_owned(),
            expected,
        }
    }
}

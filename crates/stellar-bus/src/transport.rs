//! The `Transport` seam: publish and subscribe opaque bytes.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::mpsc;

/// How many undelivered messages a subscription buffers before it drops new ones.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 4096;

/// Moves opaque bytes between nodes. Knows nothing about envelopes, tokens, node ids or methods.
#[async_trait]
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// Publishes `payload` on `channel`, to every current subscriber of any node.
    ///
    /// # Errors
    ///
    /// Fails if the backend cannot be reached within its operation timeout.
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<(), TransportError>;

    /// Delivers messages published on `channel` after this returns. Dropping the returned
    /// subscription unsubscribes it.
    ///
    /// # Errors
    ///
    /// Fails if the backend cannot confirm the subscription within its operation timeout.
    async fn subscribe(&self, channel: &str) -> Result<RawSubscription, TransportError>;
}

/// A transport operation failed. Backend errors are kept as the source, so no dependency type
/// shows in this crate's API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The Redis URL or connection settings are not valid.
    #[error("invalid redis url {url}: {reason}")]
    InvalidUrl {
        /// The URL, with any password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis could not be reached.
    #[error("cannot connect to redis at {url}")]
    Connect {
        /// The URL, with any password hidden.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Redis operation did not finish in time.
    #[error("redis {op} timed out after {after:?}")]
    Timeout {
        /// The operation, e.g. `PUBLISH` or `SUBSCRIBE`.
        op: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// A Redis operation failed.
    #[error("redis {op} failed")]
    Backend {
        /// The operation, e.g. `PUBLISH`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The transport has been shut down.
    #[error("transport is shut down")]
    Closed,
    /// What was asked for is not available on this kind of Redis deployment.
    #[error("not supported: {what}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
}

impl TransportError {
    /// Whether this is a connection blip worth retrying (connection lost or refused, a timeout,
    /// Redis loading its data after a restart, a failover under way: `READONLY` from a demoted
    /// master, `CLUSTERDOWN`, `MASTERDOWN`), not a refused or malformed command. Retry only
    /// what is idempotent: a lost reply may mean the command ran.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Backend { source, .. } if source.is::<SharedSource>() => source
                .downcast_ref::<SharedSource>()
                .is_some_and(|shared| shared.0.is_transient()),
            Self::Backend { source, .. } => {
                source.downcast_ref::<redis::RedisError>().is_some_and(|e| {
                    e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.is_timeout()
                        || matches!(
                            e.kind(),
                            redis::ErrorKind::Server(
                                redis::ServerErrorKind::BusyLoading
                                    | redis::ServerErrorKind::TryAgain
                                    | redis::ServerErrorKind::ReadOnly
                                    | redis::ServerErrorKind::ClusterDown
                                    | redis::ServerErrorKind::MasterDown
                            )
                        )
                })
            }
            _ => false,
        }
    }

    /// A copy of `err`, the failure of one operation whose result several callers share: the
    /// same variant and fields, its source (which cannot be cloned) shared behind the `Arc`.
    pub(crate) fn shared(err: &Arc<TransportError>) -> Self {
        let source =
            || -> Box<dyn std::error::Error + Send + Sync> { Box::new(SharedSource(err.clone())) };
        match &**err {
            Self::InvalidUrl { url, reason } => Self::InvalidUrl {
                url: url.clone(),
                reason: reason.clone(),
            },
            Self::Connect { url, .. } => Self::Connect {
                url: url.clone(),
                source: source(),
            },
            Self::Timeout { op, after } => Self::Timeout { op, after: *after },
            Self::Backend { op, .. } => Self::Backend {
                op,
                source: source(),
            },
            Self::Closed => Self::Closed,
            Self::Unsupported { what } => Self::Unsupported { what },
        }
    }
}

/// The source of a shared [`TransportError`], seen through the `Arc` that shares it: it shows
/// and chains as that error's own source.
#[derive(Debug)]
struct SharedSource(Arc<TransportError>);

impl fmt::Display for SharedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::error::Error::source(&*self.0) {
            Some(source) => fmt::Display::fmt(source, f),
            None => Ok(()),
        }
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0).and_then(std::error::Error::source)
    }
}

/// A subscription to one channel. Dropping it unsubscribes.
pub struct RawSubscription {
    channel: String,
    receiver: mpsc::Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl fmt::Debug for RawSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSubscription")
            .field("channel", &self.channel)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl RawSubscription {
    /// Builds a subscription for a [`Transport`] implementation: `receiver` yields the messages,
    /// `dropped` counts those the transport had to discard, and `on_drop` runs once when the
    /// subscription is dropped, to unsubscribe.
    pub fn new(
        channel: impl Into<String>,
        receiver: mpsc::Receiver<Vec<u8>>,
        dropped: Arc<AtomicU64>,
        on_drop: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            channel: channel.into(),
            receiver,
            dropped,
            on_drop: Some(Box::new(on_drop)),
        }
    }

    /// The channel this subscription listens to.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits for the next message; `None` once the transport has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.receiver.recv().await
    }

    /// Returns the next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        self.receiver.try_recv().ok()
    }

    /// How many messages were discarded because this subscription's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for RawSubscription {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop.take() {
            on_drop();
        }
    }
}

/// The sending half of one subscription, as transports keep it.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    sender: mpsc::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

/// Offers `payload` to every subscriber of `channel`, forgetting those that are gone. Returns
/// true if none is left.
pub(crate) fn fan_out(channel: &str, subscribers: &mut Vec<Subscriber>, payload: &[u8]) -> bool {
    subscribers.retain(|subscriber| match subscriber.offer(payload.to_vec()) {
        Delivery::Delivered => true,
        Delivery::Dropped => {
            tracing::debug!(channel, "subscriber buffer full, message dropped");
            true
        }
        Delivery::Closed => false,
    });
    subscribers.is_empty()
}

/// What happened when a message was offered to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    /// The buffer was full; the message was discarded and counted.
    Dropped,
    /// The subscription is gone.
    Closed,
}

impl Subscriber {
    /// A connected pair: the transport keeps the `Subscriber`, the caller gets the parts of a
    /// [`RawSubscription`].
    pub(crate) fn pair(
        id: u64,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<Vec<u8>>, Arc<AtomicU64>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        (
            Self {
                id,
                sender,
                dropped: dropped.clone(),
            },
            receiver,
            dropped,
        )
    }

    /// Offers `payload` without waiting: a slow subscriber loses messages, never blocks others.
    pub(crate) fn offer(&self, payload: Vec<u8>) -> Delivery {
        match self.sender.try_send(payload) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Delivery::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_shared_error_keeps_its_variant_message_and_source() {
        let timeout = Arc::new(TransportError::Timeout {
            op: "EVALSHA",
            after: Duration::from_secs(2),
        });
        let copy = TransportError::shared(&timeout);
        assert!(matches!(
            copy,
            TransportError::Timeout { op: "EVALSHA", .. }
        ));
        assert!(copy.is_transient());
        let backend = Arc::new(TransportError::Backend {
            op: "ZRANGE",
            source: "connection reset".into(),
        });
        let copy = TransportError::shared(&backend);
        assert_eq!(copy.to_string(), "redis ZRANGE failed");
        let source = copy.source().expect("a source");
        assert_eq!(source.to_string(), "connection reset");
        assert!(source.source().is_none());
        assert_eq!(copy.is_transient(), backend.is_transient());
    }
}

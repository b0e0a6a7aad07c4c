//! The in-process transport: the embedded backend of a single node.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    DEFAULT_SUBSCRIPTION_CAPACITY, RawSubscription, Transport, TransportError,
    transport::{Subscriber, fan_out},
};
use async_trait::async_trait;
use stellar_core::sync;

/// A [`Transport`] inside one process. Clones share the same channels, so each clone can play one
/// node of an in-process cluster.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    next_id: AtomicU64,
    /// Subscribers by channel. A `std` mutex: it is never held across an `.await`.
    channels: Mutex<HashMap<String, Vec<Subscriber>>>,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A transport whose subscriptions buffer [`DEFAULT_SUBSCRIPTION_CAPACITY`] messages.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// A transport whose subscriptions buffer `capacity` messages each.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity,
                next_id: AtomicU64::new(0),
                channels: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    fn channels(&self) -> MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        // Every critical section is a single map update, so a poisoned lock is still consistent.
        sync::lock(&self.channels)
    }

    fn remove(&self, channel: &str, id: u64) {
        let mut channels = self.channels();
        if let Some(subscribers) = channels.get_mut(channel) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                channels.remove(channel);
            }
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<(), TransportError> {
        let mut channels = self.inner.channels();
        let Some(subscribers) = channels.get_mut(channel) else {
            return Ok(());
        };
        if fan_out(channel, subscribers, &payload) {
            channels.remove(channel);
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<RawSubscription, TransportError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (subscriber, receiver, dropped) = Subscriber::pair(id, self.inner.capacity);
        self.inner
            .channels()
            .entry(channel.to_owned())
            .or_default()
            .push(subscriber);
        let inner = Arc::downgrade(&self.inner);
        let owned_channel = channel.to_owned();
        Ok(RawSubscription::new(
            channel,
            receiver,
            dropped,
            move || {
                if let Some(inner) = inner.upgrade() {
                    inner.remove(&owned_channel, id);
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_last_subscription_forgets_the_channel() {
        let transport = MemoryTransport::new();
        let a = transport.subscribe("c").await.expect("subscribe");
        let b = transport.subscribe("c").await.expect("subscribe");
        assert_eq!(transport.inner.channels()["c"].len(), 2);
        drop(a);
        assert_eq!(transport.inner.channels()["c"].len(), 1);
        drop(b);
        assert!(transport.inner.channels().is_empty());
    }
}

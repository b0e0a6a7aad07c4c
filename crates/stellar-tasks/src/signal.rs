//! Wake-ups for idle workers, apart from the store: a [`WorkSignal`] tells the workers of a node
//! that work may have become ready, so they claim at once instead of at their next poll. Missing
//! a wake-up costs latency, never a task: idle workers also look every `idle_poll`.

use std::{
    collections::HashSet,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use stellar_bus::Transport;
use stellar_core::Api;
use tokio::sync::Notify;
use tracing::warn;

/// Where wake-ups come from: [`WorkSignal::local`] for a store in this process (the memory store
/// notifies it), [`WorkSignal::subscribed`] for the Redis store, whose scripts publish a wake-up
/// on each queue's channel. Clones share the same signal.
#[derive(Clone, Default)]
pub struct WorkSignal {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Moves on every wake-up: a worker that read it before claiming sees if one came since.
    generation: AtomicU64,
    notify: Notify,
    /// The transport wake-ups arrive over; `None` for a local signal.
    transport: Option<Arc<dyn Transport>>,
    /// Queues whose wake-up channel this signal listens to.
    listening: Mutex<HashSet<String>>,
}

impl fmt::Debug for WorkSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkSignal")
            .field("generation", &self.generation())
            .field("subscribed", &self.inner.transport.is_some())
            .finish()
    }
}

impl WorkSignal {
    /// A signal for a store in this process: whoever holds a clone wakes the workers with
    /// [`WorkSignal::notify`].
    pub fn local() -> Self {
        Self::default()
    }

    /// A signal fed by the wake-ups the Redis store publishes on each queue's channel, heard
    /// over `transport` (the node's Redis transport).
    pub fn subscribed(transport: Arc<dyn Transport>) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport: Some(transport),
                ..Inner::default()
            }),
        }
    }

    /// Wakes every idle worker listening to this signal.
    pub fn notify(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// A number that changes whenever work may have become ready.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Subscribes to the wake-up channel of each of `queues` not listened to yet; the listeners
    /// run on `api`'s tracker until it stops (or their subscription ends: the next call
    /// subscribes again). A local signal has nothing to subscribe to.
    pub(crate) async fn listen(&self, api: &Api, queues: &[String]) {
        let Some(transport) = &self.inner.transport else {
            return;
        };
        for queue in queues {
            if !self.lock_listening().insert(queue.clone()) {
                continue;
            }
            match transport.subscribe(&crate::keys::wake(queue)).await {
                Ok(subscription) => {
                    api.spawn(
                        self.clone()
                            .forward(api.clone(), queue.clone(), subscription),
                    );
                }
                Err(err) => {
                    warn!(queue, error = %err, "cannot listen for task wake-ups; polling instead");
                    self.lock_listening().remove(queue);
                }
            }
        }
    }

    /// Turns every message of `subscription` into a wake-up until `api` stops. When the
    /// subscription ends first, it wakes the workers too: an idle one listens again at once
    /// instead of after its `idle_poll`, and looks for work it may have missed meanwhile.
    async fn forward(
        self,
        api: Api,
        queue: String,
        mut subscription: stellar_bus::RawSubscription,
    ) {
        let cancel = api.cancellation_token();
        let ended = loop {
            tokio::select! {
                () = cancel.cancelled() => break false,
                message = subscription.recv() => match message {
                    Some(_) => self.notify(),
                    None => break true,
                },
            }
        };
        self.lock_listening().remove(&queue);
        if ended {
            self.notify();
        }
    }

    /// Waits until the generation moved past `seen` or `timeout` passed.
    pub(crate) async fn wait(&self, seen: u64, timeout: Duration) {
        let woken = self.inner.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if self.generation() != seen {
            return;
        }
        let _ = tokio::time::timeout(timeout, woken).await;
    }

    fn lock_listening(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        stellar_core::sync::lock(&self.inner.listening)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use stellar_bus::{RawSubscription, TransportError};
    use stellar_core::Config;
    use tokio::sync::mpsc;

    use super::*;

    /// A transport whose subscriptions end when the test says so.
    #[derive(Debug, Default)]
    struct Ending {
        subscribed: AtomicUsize,
        senders: Mutex<Vec<mpsc::Sender<Vec<u8>>>>,
    }

    #[async_trait]
    impl Transport for Ending {
        async fn publish(&self, _: &str, _: Vec<u8>) -> Result<(), TransportError> {
            Ok(())
        }

        async fn subscribe(&self, channel: &str) -> Result<RawSubscription, TransportError> {
            self.subscribed.fetch_add(1, Ordering::SeqCst);
            let (sender, receiver) = mpsc::channel(8);
            stellar_core::sync::lock(&self.senders).push(sender);
            Ok(RawSubscription::new(
                channel,
                receiver,
                Arc::default(),
                || {},
            ))
        }
    }

    #[tokio::test]
    async fn an_ended_subscription_wakes_the_workers_to_listen_again() {
        let api = Api::new(Config::default());
        let transport = Arc::new(Ending::default());
        let signal = WorkSignal::subscribed(transport.clone());
        let queues = ["default".to_owned()];
        signal.listen(&api, &queues).await;
        signal.listen(&api, &queues).await;
        assert_eq!(
            transport.subscribed.load(Ordering::SeqCst),
            1,
            "one listener a queue"
        );
        let seen = signal.generation();
        // The subscription ends (the transport stopped delivering to it).
        stellar_core::sync::lock(&transport.senders).clear();
        let woken = tokio::time::timeout(
            Duration::from_secs(5),
            signal.wait(seen, Duration::from_secs(60)),
        );
        woken
            .await
            .expect("the end of the subscription woke the waiting worker");
        assert_ne!(signal.generation(), seen);
        signal.listen(&api, &queues).await;
        assert_eq!(
            transport.subscribed.load(Ordering::SeqCst),
            2,
            "listening again"
        );
        api.shutdown().await.expect("stops");
    }
}

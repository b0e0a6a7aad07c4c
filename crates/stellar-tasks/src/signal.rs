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

    /// Turns every message of `subscription` into a wake-up until `api` stops.
    async fn forward(
        self,
        api: Api,
        queue: String,
        mut subscription: stellar_bus::RawSubscription,
    ) {
        let cancel = api.cancellation_token();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                message = subscription.recv() => match message {
                    Some(_) => self.notify(),
                    None => break,
                },
            }
        }
        self.lock_listening().remove(&queue);
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

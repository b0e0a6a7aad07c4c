//! The Redis transport: PUBLISH on pooled connections, one dedicated SUBSCRIBE connection that
//! reconnects and re-subscribes by itself.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{PubSub, PubSubSink};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use crate::{
    RawSubscription, RedisPool, Transport, TransportError,
    transport::{Subscriber, fan_out},
};

/// How often the subscriber connection is checked with `PING` when no message arrives.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// The first reconnect delay; it doubles after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A [`Transport`] over a shared Redis.
///
/// Publishing uses the [`RedisPool`]. Subscriptions share one dedicated connection, owned by a
/// background task that reconnects with backoff when Redis goes away, re-subscribes every
/// channel, and logs each reconnect. Messages published while it is disconnected are lost
/// (Redis pub/sub is at most once).
#[derive(Debug, Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: RedisPool,
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    /// Stops the subscriber task; cancelled when the transport is dropped or its parent stops.
    cancel: CancellationToken,
    /// Holds the subscriber task, so [`RedisTransport::stopped`] can wait for it.
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Debug)]
enum Command {
    Subscribe {
        channel: String,
        subscriber: Subscriber,
        ack: oneshot::Sender<Result<(), TransportError>>,
    },
    Unsubscribe {
        channel: String,
        id: u64,
    },
}

impl RedisTransport {
    /// Opens the subscriber connection and starts its task. The task stops when `cancel` is
    /// cancelled or the transport is dropped; open subscriptions then end. A node waits for it
    /// at shutdown through [`RedisTransport::stopped`].
    ///
    /// # Errors
    ///
    /// Fails with [`TransportError::Connect`] or [`TransportError::Timeout`] if the subscriber
    /// connection cannot be opened: a node does not start on an unreachable Redis.
    pub async fn connect(
        pool: RedisPool,
        cancel: CancellationToken,
    ) -> Result<Self, TransportError> {
        let first = pool.pubsub().await?;
        let cancel = cancel.child_token();
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = SubscriberTask {
            pool: pool.clone(),
            commands: receiver,
            channels: HashMap::new(),
            waiting: Vec::new(),
            cancel: cancel.clone(),
        };
        let tasks = TaskTracker::new();
        tasks.spawn(task.run(first));
        // The subscriber task is the only one: `stopped` resolves when it ends.
        tasks.close();
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                commands,
                next_id: AtomicU64::new(0),
                cancel,
                tasks,
            }),
        })
    }

    /// Resolves once the subscriber task has ended: after the `cancel` token given to
    /// [`RedisTransport::connect`] is cancelled, or every clone of the transport is dropped.
    /// The future holds no clone of the transport, so a node can hand it to
    /// [`Api::spawn`](stellar_core::Api::spawn) and have its shutdown wait for the subscriber
    /// connection to close.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let tasks = self.inner.tasks.clone();
        async move { tasks.wait().await }
    }

    /// The pool this transport publishes through.
    pub fn pool(&self) -> &RedisPool {
        &self.inner.pool
    }
}

#[async_trait]
impl Transport for RedisTransport {
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<(), TransportError> {
        let _receivers: u64 = self
            .inner
            .pool
            .query("PUBLISH", redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await?;
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<RawSubscription, TransportError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let capacity = self.inner.pool.config().subscription_capacity;
        let (subscriber, receiver, dropped) = Subscriber::pair(id, capacity);
        let (ack, acked) = oneshot::channel();
        let command = Command::Subscribe {
            channel: channel.to_owned(),
            subscriber,
            ack,
        };
        self.inner
            .commands
            .send(command)
            .map_err(|_| TransportError::Closed)?;
        let commands = self.inner.commands.clone();
        let owned_channel = channel.to_owned();
        // Built before the wait, so a timeout or error drops it and unsubscribes.
        let subscription = RawSubscription::new(channel, receiver, dropped, move || {
            // The task may be gone already; then there is nothing left to unsubscribe.
            let _ = commands.send(Command::Unsubscribe {
                channel: owned_channel,
                id,
            });
        });
        let after = self.inner.pool.config().op_timeout;
        match tokio::time::timeout(after, acked).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(TransportError::Closed),
            Err(_) => Err(TransportError::Timeout {
                op: "SUBSCRIBE",
                after,
            }),
        }
    }
}

/// Why a connected session of the subscriber task ended.
enum Ended {
    Cancelled,
    Lost(String),
}

/// Owns the subscriber connection and every local subscription.
struct SubscriberTask {
    pool: RedisPool,
    commands: mpsc::UnboundedReceiver<Command>,
    channels: HashMap<String, Vec<Subscriber>>,
    /// Acknowledgements of subscriptions made while disconnected, sent once Redis confirms.
    waiting: Vec<oneshot::Sender<Result<(), TransportError>>>,
    cancel: CancellationToken,
}

impl SubscriberTask {
    async fn run(mut self, first: PubSub) {
        let mut connection = Some(first);
        let mut reconnected = false;
        loop {
            let pubsub = match connection.take() {
                Some(pubsub) => pubsub,
                None => match self.reconnect().await {
                    Some(pubsub) => pubsub,
                    None => return,
                },
            };
            match self.serve(pubsub, reconnected).await {
                Ended::Cancelled => return,
                // A deliberate close (the client or node stopping) can fail an UNSUBSCRIBE in
                // flight: nothing was lost.
                Ended::Lost(reason) if self.cancel.is_cancelled() => {
                    debug!(%reason, "redis subscriber connection closed while stopping");
                    return;
                }
                Ended::Lost(reason) => {
                    warn!(url = %self.pool.redacted_url(), %reason, "redis subscriber connection lost, reconnecting");
                    reconnected = true;
                }
            }
        }
    }

    /// Opens a new connection, retrying with backoff; `None` if cancelled first.
    async fn reconnect(&mut self) -> Option<PubSub> {
        let mut delay = MIN_BACKOFF;
        for attempt in 1_u32.. {
            let sleep = tokio::time::sleep(stellar_core::time::jitter(delay, 0.2));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = self.cancel.cancelled() => return None,
                    () = &mut sleep => break,
                    Some(command) = self.commands.recv() => self.handle_disconnected(command),
                }
            }
            match self.pool.pubsub().await {
                Ok(pubsub) => {
                    self.pool.subscriber_reconnected();
                    info!(url = %self.pool.redacted_url(), attempt, "redis subscriber reconnected");
                    return Some(pubsub);
                }
                Err(err) => {
                    warn!(url = %self.pool.redacted_url(), attempt, error = %err, retry_in_ms = delay.as_millis() as u64, "redis subscriber reconnect failed");
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        unreachable!("the attempt counter does not run out")
    }

    /// While disconnected, subscriptions are recorded and confirmed after the next connect.
    fn handle_disconnected(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                channel,
                subscriber,
                ack,
            } => {
                self.channels.entry(channel).or_default().push(subscriber);
                self.waiting.push(ack);
            }
            Command::Unsubscribe { channel, id } => {
                self.remove_local(&channel, id);
            }
        }
    }

    /// Serves one connection until it is lost or the task is cancelled.
    async fn serve(&mut self, pubsub: PubSub, reconnected: bool) -> Ended {
        let (mut sink, mut stream) = pubsub.split();
        if !self.channels.is_empty() {
            let channels: Vec<String> = self.channels.keys().cloned().collect();
            if let Err(err) = self.sink_op("SUBSCRIBE", sink.subscribe(&channels)).await {
                return Ended::Lost(err.to_string());
            }
            if reconnected {
                info!(url = %self.pool.redacted_url(), channels = channels.len(), "redis subscriber re-subscribed");
            }
        }
        for ack in self.waiting.drain(..) {
            // A subscriber that stopped waiting (its timeout passed) needs no answer.
            let _ = ack.send(Ok(()));
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.reset();
        loop {
            let result = tokio::select! {
                () = self.cancel.cancelled() => return Ended::Cancelled,
                message = stream.next() => match message {
                    Some(message) => self.dispatch(&mut sink, &message).await,
                    None => Err("connection closed".to_owned()),
                },
                Some(command) = self.commands.recv() => self.handle_connected(&mut sink, command).await,
                _ = keepalive.tick() => self.sink_op("PING", sink.ping::<redis::Value>()).await.map(drop).map_err(|err| err.to_string()),
            };
            if let Err(reason) = result {
                return Ended::Lost(reason);
            }
        }
    }

    async fn handle_connected(
        &mut self,
        sink: &mut PubSubSink,
        command: Command,
    ) -> Result<(), String> {
        match command {
            Command::Subscribe {
                channel,
                subscriber,
                ack,
            } => {
                let is_new = !self.channels.contains_key(&channel);
                self.channels
                    .entry(channel.clone())
                    .or_default()
                    .push(subscriber);
                if is_new
                    && let Err(err) = self.sink_op("SUBSCRIBE", sink.subscribe(&channel)).await
                {
                    // Confirmed after the reconnect re-subscribes every channel.
                    self.waiting.push(ack);
                    return Err(err.to_string());
                }
                debug!(channel, "subscribed");
                // A subscriber that stopped waiting (its timeout passed) needs no answer.
                let _ = ack.send(Ok(()));
                Ok(())
            }
            Command::Unsubscribe { channel, id } => {
                if self.remove_local(&channel, id) {
                    self.sink_op("UNSUBSCRIBE", sink.unsubscribe(&channel))
                        .await
                        .map_err(|err| err.to_string())?;
                    debug!(channel, "unsubscribed");
                }
                Ok(())
            }
        }
    }

    /// Hands a message to every local subscriber of its channel.
    async fn dispatch(
        &mut self,
        sink: &mut PubSubSink,
        message: &redis::Msg,
    ) -> Result<(), String> {
        let channel = message.get_channel_name();
        let Some(subscribers) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        if fan_out(channel, subscribers, message.get_payload_bytes()) {
            let channel = channel.to_owned();
            self.channels.remove(&channel);
            self.sink_op("UNSUBSCRIBE", sink.unsubscribe(&channel))
                .await
                .map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    /// Removes one local subscriber; true if that left the channel with none.
    fn remove_local(&mut self, channel: &str, id: u64) -> bool {
        let Some(subscribers) = self.channels.get_mut(channel) else {
            return false;
        };
        subscribers.retain(|s| s.id != id);
        let now_empty = subscribers.is_empty();
        if now_empty {
            self.channels.remove(channel);
        }
        now_empty
    }

    async fn sink_op<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, TransportError> {
        let after = self.pool.config().op_timeout;
        match tokio::time::timeout(after, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(TransportError::Backend {
                op,
                source: Box::new(err),
            }),
            Err(_) => Err(TransportError::Timeout { op, after }),
        }
    }
}

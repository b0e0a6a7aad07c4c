//! The authenticated bus: typed messages between nodes, sealed with the server token.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    ops::ControlFlow,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use stellar_core::{
    Api, CancellationToken, Config, NodeId, ServerToken, TraceParent, sync, time::now_ms,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tracing::{Instrument, Span, debug, info_span, warn};

use crate::{
    Error, HandlerError, RawSubscription, Result, Transport,
    envelope::{Envelope, MAX_MESSAGE_BYTES, Rejection, Sealer},
    replay::{ReplayGuard, Verdict},
};

/// How much earlier than the receiving bus's start a message may say it was sent and still be
/// accepted: covers a sender's clock running slightly behind. Anything older was sent to an
/// earlier run of this node (the replay state of that run is gone), so it is refused as
/// `before_start`.
pub const START_SKEW: Duration = Duration::from_secs(1);

/// A per-channel sequence counter unused for this long is forgotten. It must outlive the
/// receivers' replay windows of that channel (kept three clock windows after the last message,
/// pruned once per clock window), or a restarted count would look like a replay; see
/// [`SeqTable::idle_limit`].
const SEQ_IDLE: Duration = Duration::from_secs(10 * 60);

/// Settings of a [`Bus`]: the tokens it signs and verifies with, and its limits.
///
/// A node builds them from its configuration with `BusSettings::from(&config)`; tests and
/// embedders start from [`BusSettings::new`] and change what they need.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// The token every message is signed with.
    pub server_token: ServerToken,
    /// Older tokens still accepted (never used to sign) while a cluster rolls to a new one.
    pub previous_tokens: Vec<ServerToken>,
    /// The broadcast channel; each node also listens on `<channel>:node:<id>`.
    pub channel: String,
    /// Sealed messages larger than this are refused on send and dropped on receipt. At most
    /// 1 MiB (the wire format's hard cap, which bincode's decode limit enforces too): larger
    /// values act as 1 MiB.
    pub max_message_bytes: usize,
    /// Messages whose timestamp is further than this from the local clock are dropped.
    pub clock_window: Duration,
    /// How many handler calls may run at once.
    pub handler_concurrency: usize,
    /// Whether messages sent inside a trace carry its context (envelope version 2, see
    /// `docs/wire-format.md`). Off by default: nodes of builds before trace context drop
    /// version-2 messages, so turn it on (config key `bus_trace_context`) once every node reads
    /// them. RPC calls carry their trace context in the request body either way.
    pub trace_context: bool,
}

impl BusSettings {
    /// The default limits, signing with `server_token` and accepting no other token.
    pub fn new(server_token: ServerToken) -> Self {
        Self {
            server_token,
            previous_tokens: Vec::new(),
            channel: crate::keys::bus_channel().to_owned(),
            max_message_bytes: MAX_MESSAGE_BYTES,
            clock_window: Duration::from_secs(30),
            handler_concurrency: 64,
            trace_context: false,
        }
    }
}

impl From<&Config> for BusSettings {
    /// The server token and previous token of `config`, and the default limits.
    fn from(config: &Config) -> Self {
        Self {
            previous_tokens: config.previous_server_token.iter().cloned().collect(),
            trace_context: config.bus_trace_context,
            ..Self::new(config.server_token.clone())
        }
    }
}

/// A verified message, as handlers receive it.
#[derive(Debug, Clone)]
pub struct Message {
    message_type: String,
    sender: NodeId,
    incarnation: u64,
    sent_at: SystemTime,
    own: bool,
    direct: bool,
    body: Arc<[u8]>,
    trace: Option<TraceParent>,
}

impl Message {
    /// The message type handlers are registered for.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The node that sent it (verified by the signature).
    pub fn sender(&self) -> &NodeId {
        &self.sender
    }

    /// The run of the sender that sent it ([`Api::incarnation`], verified by the signature):
    /// during a supervised handover two runs share the sender's id.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The sender's clock when it sent the message.
    pub fn sent_at(&self) -> SystemTime {
        self.sent_at
    }

    /// Whether this node sent it: a node receives its own broadcasts.
    pub fn is_own(&self) -> bool {
        self.own
    }

    /// Whether it was sent to this node alone rather than broadcast.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The sender's trace position, if it sent the message inside a trace; its handlers run in
    /// a `bus.message` span continuing that trace.
    pub fn trace(&self) -> Option<TraceParent> {
        self.trace
    }

    /// Decodes the JSON body.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if the body does not match `T`.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            message_type: self.message_type.clone(),
            source,
        })
    }
}

/// Identifies a registered handler, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u64);

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type SpawnedHandler = Arc<dyn Fn(Message) -> BoxFuture + Send + Sync>;
type InlineHandler = Arc<dyn Fn(&Message) -> Result<(), HandlerError> + Send + Sync>;

/// A registered handler, by how it runs.
#[derive(Clone)]
enum Handler {
    /// In a task of its own, once it gets a permit of the handler limiter.
    Spawned(SpawnedHandler),
    /// On the receive loop itself, at once and without a permit.
    Inline(InlineHandler),
}

/// How many messages per unit of `handler_concurrency` may wait for a handler permit before a
/// receive loop stops reading (and its transport buffer starts to fill). While they wait, the
/// loop keeps going, so inline handlers (RPC replies) never queue behind busy handlers.
const BACKLOG_PER_HANDLER: usize = 16;

/// Counters of what the bus received, by outcome. Every message received is counted exactly
/// once in `accepted` or in one rejection counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BusStats {
    /// Messages that passed every check.
    pub accepted: u64,
    /// Larger than `max_message_bytes`.
    pub oversized: u64,
    /// Not a valid envelope.
    pub malformed: u64,
    /// Signed with no accepted token.
    pub bad_signature: u64,
    /// Timestamp outside the clock window.
    pub outside_window: u64,
    /// Sent before this bus started (minus [`START_SKEW`]): meant for an earlier run of this
    /// node, so possibly a replay the replay window no longer remembers.
    #[serde(default)]
    pub before_start: u64,
    /// Seen before.
    pub replayed: u64,
    /// Gaps in senders' sequence numbers: messages probably lost in transit.
    pub possibly_lost: u64,
    /// Accepted messages no handler was registered for.
    pub unhandled: u64,
    /// Handler calls that returned an error or panicked.
    pub handler_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    oversized: AtomicU64,
    malformed: AtomicU64,
    bad_signature: AtomicU64,
    outside_window: AtomicU64,
    before_start: AtomicU64,
    replayed: AtomicU64,
    possibly_lost: AtomicU64,
    unhandled: AtomicU64,
    handler_failures: AtomicU64,
}

/// Registers the bus families on the node's metrics, read from `counters` at each scrape.
fn register_metrics(metrics: &stellar_core::Metrics, counters: Arc<Counters>) {
    metrics.snapshot(move |out| {
        let stats = counters.snapshot();
        out.counter(
            "stellar_bus_messages_accepted",
            "Bus messages received that passed every check",
            &[],
            stats.accepted,
        );
        let help = "Bus messages received and dropped, by reason";
        for (reason, value) in [
            ("oversized", stats.oversized),
            ("malformed", stats.malformed),
            ("bad_signature", stats.bad_signature),
            ("outside_window", stats.outside_window),
            ("before_start", stats.before_start),
            ("replayed", stats.replayed),
        ] {
            out.counter(
                "stellar_bus_messages_rejected",
                help,
                &[("reason", reason)],
                value,
            );
        }
        out.counter(
            "stellar_bus_messages_possibly_lost",
            "Gaps in senders' sequence numbers: bus messages probably lost in transit",
            &[],
            stats.possibly_lost,
        );
        out.counter(
            "stellar_bus_messages_unhandled",
            "Accepted bus messages no handler was registered for",
            &[],
            stats.unhandled,
        );
        out.counter(
            "stellar_bus_handler_failures",
            "Bus handler calls that returned an error or panicked",
            &[],
            stats.handler_failures,
        );
    });
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Authenticated pub/sub between the nodes of a cluster. Cloning it is cheap.
///
/// Every message is sealed with an HMAC-SHA256 tag keyed from the server token; receivers drop
/// (and count, see [`BusStats`]) messages that are oversized, malformed, badly signed, outside
/// the clock window or replayed. Handlers run concurrently, up to a bound, each in its own task:
/// a slow or failing handler holds up no other.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    settings: BusSettings,
    transport: Arc<dyn Transport>,
    sealer: Sealer,
    /// Identifies this run of the node, so a restarted node's sequence numbers are new.
    incarnation: u64,
    /// When this bus started (ms since the Unix epoch): earlier messages were meant for an
    /// earlier run of the node.
    started_at_ms: u64,
    /// The last sequence number sent on each channel: receivers see one gap-free sequence per
    /// channel, whatever this node sends elsewhere.
    seqs: Mutex<SeqTable>,
    handlers: RwLock<HashMap<String, Vec<(HandlerId, Handler)>>>,
    next_handler: AtomicU64,
    counters: Arc<Counters>,
    replay: Mutex<(ReplayGuard, u64)>,
    /// Bounds concurrent handler calls.
    limiter: Arc<Semaphore>,
    /// Bounds the handler calls waiting for a `limiter` permit: each takes one of these first.
    backlog: Arc<Semaphore>,
    api: Api,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("node_id", &self.inner.node_id)
            .field("channel", &self.inner.settings.channel)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Starts the bus of the node `api`: subscribes to the broadcast channel and to this node's
    /// own channel, and spawns their receive loops on the node (they stop with it).
    ///
    /// # Errors
    ///
    /// Fails if the transport cannot subscribe.
    pub async fn start(
        api: &Api,
        transport: Arc<dyn Transport>,
        settings: BusSettings,
    ) -> Result<Self> {
        let sealer = Sealer::new(&settings.server_token, &settings.previous_tokens);
        let settings = BusSettings {
            max_message_bytes: settings.max_message_bytes.min(MAX_MESSAGE_BYTES),
            ..settings
        };
        let handlers = settings.handler_concurrency.max(1);
        let inner = Arc::new(Inner {
            node_id: api.node_id().clone(),
            limiter: Arc::new(Semaphore::new(handlers)),
            backlog: Arc::new(Semaphore::new(handlers * BACKLOG_PER_HANDLER)),
            seqs: Mutex::new(SeqTable::new(settings.clock_window)),
            settings,
            transport,
            sealer,
            incarnation: api.incarnation(),
            started_at_ms: now_ms(),
            handlers: RwLock::new(HashMap::new()),
            next_handler: AtomicU64::new(0),
            counters: Arc::default(),
            replay: Mutex::new((ReplayGuard::default(), 0)),
            api: api.clone(),
        });
        register_metrics(api.metrics(), inner.counters.clone());
        let broadcast = inner.transport.subscribe(&inner.settings.channel).await?;
        let direct = inner
            .transport
            .subscribe(&inner.node_channel(&inner.node_id))
            .await?;
        for (subscription, is_direct) in [(broadcast, false), (direct, true)] {
            let cancel = api.cancellation_token();
            api.spawn(receive_loop(inner.clone(), subscription, is_direct, cancel));
        }
        Ok(Self { inner })
    }

    /// This node's id: the sender of everything it publishes.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// This run of the node ([`Api::incarnation`]), as its messages carry it.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The node this bus belongs to.
    pub fn api(&self) -> &Api {
        &self.inner.api
    }

    /// Broadcasts a message to every node, this one included.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `body` cannot be JSON, [`Error::TooLarge`] past the cap, or
    /// [`Error::Transport`].
    pub async fn publish<T: Serialize + ?Sized>(&self, message_type: &str, body: &T) -> Result<()> {
        let channel = self.inner.settings.channel.clone();
        self.send(&channel, message_type, body).await
    }

    /// Sends a message to one node only.
    ///
    /// # Errors
    ///
    /// As [`Bus::publish`]. Sending to a node that is not listening is not an error: the message
    /// is lost, as any pub/sub message without a subscriber.
    pub async fn send_to<T: Serialize + ?Sized>(
        &self,
        node: &NodeId,
        message_type: &str,
        body: &T,
    ) -> Result<()> {
        let channel = self.inner.node_channel(node);
        self.send(&channel, message_type, body).await
    }

    async fn send<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        message_type: &str,
        body: &T,
    ) -> Result<()> {
        let body = serde_json::to_vec(body).map_err(|source| Error::Encode {
            message_type: message_type.to_owned(),
            source,
        })?;
        let trace = if self.inner.settings.trace_context {
            TraceParent::current()
        } else {
            None
        };
        let mut envelope = Envelope {
            trace,
            sender: self.inner.node_id.to_string(),
            incarnation: self.inner.incarnation,
            seq: self.inner.next_seq(channel),
            sent_at_ms: now_ms(),
            message_type: message_type.to_owned(),
            body,
            tag: [0; 32],
        };
        self.inner.sealer.seal(channel, &mut envelope);
        let bytes = envelope.encode();
        let max = self.inner.settings.max_message_bytes;
        if bytes.len() > max {
            return Err(Error::TooLarge {
                message_type: message_type.to_owned(),
                size: bytes.len(),
                max,
            });
        }
        debug!(node_id = %self.inner.node_id, channel, message_type, "publish");
        self.inner.transport.publish(channel, bytes).await?;
        Ok(())
    }

    /// Registers `handler` for messages of `message_type`. Several handlers of one type all run.
    ///
    /// Each call runs in a task of its own once one of the `handler_concurrency` permits is
    /// free; calls waiting for a permit hold up no inline handler.
    pub fn subscribe_handler<F, Fut>(
        &self,
        message_type: impl Into<String>,
        handler: F,
    ) -> HandlerId
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: SpawnedHandler = Arc::new(move |message| Box::pin(handler(message)));
        self.inner
            .register(message_type.into(), Handler::Spawned(handler))
    }

    /// Registers `handler` for messages of `message_type`, to run on the receive loop itself as
    /// each message is accepted: never behind the handler limiter, and before the spawned
    /// handlers of that message start. For short, non-blocking work only, such as handing an RPC
    /// reply to the call waiting for it (replies must not wait for permits that the handlers
    /// waiting for those replies hold). A failure or panic is counted as for any handler.
    pub fn subscribe_inline_handler<F>(
        &self,
        message_type: impl Into<String>,
        handler: F,
    ) -> HandlerId
    where
        F: Fn(&Message) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.inner
            .register(message_type.into(), Handler::Inline(Arc::new(handler)))
    }

    /// Removes a handler; false if it was not registered.
    pub fn remove_handler(&self, id: HandlerId) -> bool {
        let mut handlers = self.inner.handlers_mut();
        let mut removed = false;
        handlers.retain(|_, list| {
            let before = list.len();
            list.retain(|(handler_id, _)| *handler_id != id);
            removed |= list.len() != before;
            !list.is_empty()
        });
        removed
    }

    /// What the bus has received so far, by outcome.
    pub fn stats(&self) -> BusStats {
        self.inner.counters.snapshot()
    }
}

impl Counters {
    fn snapshot(&self) -> BusStats {
        let c = self;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BusStats {
            accepted: get(&c.accepted),
            oversized: get(&c.oversized),
            malformed: get(&c.malformed),
            bad_signature: get(&c.bad_signature),
            outside_window: get(&c.outside_window),
            before_start: get(&c.before_start),
            replayed: get(&c.replayed),
            possibly_lost: get(&c.possibly_lost),
            unhandled: get(&c.unhandled),
            handler_failures: get(&c.handler_failures),
        }
    }
}

impl Inner {
    fn next_seq(&self, channel: &str) -> u64 {
        // One map update per call: a poisoned lock is still consistent.
        sync::lock(&self.seqs).next(channel, Instant::now())
    }

    fn register(&self, message_type: String, handler: Handler) -> HandlerId {
        let id = HandlerId(self.next_handler.fetch_add(1, Ordering::Relaxed));
        self.handlers_mut()
            .entry(message_type)
            .or_default()
            .push((id, handler));
        id
    }

    fn handler_failed(&self, message_type: &str, failure: &str) {
        bump(&self.counters.handler_failures);
        warn!(node_id = %self.node_id, message_type, error = %failure, "bus handler failed");
    }

    fn node_channel(&self, node: &NodeId) -> String {
        format!("{}:node:{node}", self.settings.channel)
    }

    fn handlers_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<(HandlerId, Handler)>>> {
        // Critical sections are single map updates: a poisoned lock is still consistent.
        sync::write(&self.handlers)
    }

    /// Checks raw bytes from `channel`; the message if it passes, counting it either way.
    fn admit(&self, channel: &str, bytes: &[u8], direct: bool) -> Option<Message> {
        let envelope = match Envelope::decode(bytes, self.settings.max_message_bytes) {
            Ok(envelope) => envelope,
            Err(rejection) => return self.reject(rejection, channel),
        };
        if let Err(rejection) = self.sealer.verify(channel, &envelope) {
            return self.reject(rejection, channel);
        }
        let Ok(sender) = NodeId::new(envelope.sender) else {
            return self.reject(Rejection::Malformed, channel);
        };
        let now = now_ms();
        if !self.in_time(channel, &sender, envelope.sent_at_ms, now)
            || !self.first_seen(channel, &sender, envelope.incarnation, envelope.seq, now)
        {
            return None;
        }
        bump(&self.counters.accepted);
        Some(Message {
            message_type: envelope.message_type,
            own: sender == self.node_id,
            sender,
            incarnation: envelope.incarnation,
            sent_at: UNIX_EPOCH + Duration::from_millis(envelope.sent_at_ms),
            direct,
            body: envelope.body.into(),
            trace: envelope.trace,
        })
    }

    /// Whether a message sent at `sent_at_ms` is within the clock window of `now` and not meant
    /// for an earlier run of this node; counts it if not.
    fn in_time(&self, channel: &str, sender: &NodeId, sent_at_ms: u64, now: u64) -> bool {
        let window = self.settings.clock_window.as_millis() as u64;
        if sent_at_ms.abs_diff(now) > window {
            bump(&self.counters.outside_window);
            debug!(channel, sender = %sender, "message outside the clock window dropped");
            return false;
        }
        let skew = START_SKEW.as_millis() as u64;
        if sent_at_ms.saturating_add(skew) < self.started_at_ms {
            bump(&self.counters.before_start);
            debug!(channel, sender = %sender, "message sent before this bus started dropped");
            return false;
        }
        true
    }

    /// Whether `seq` of this sender's run on `channel` is new (not a replay), recording it and
    /// counting gaps in the sequence as possibly lost messages.
    fn first_seen(
        &self,
        channel: &str,
        sender: &NodeId,
        incarnation: u64,
        seq: u64,
        now: u64,
    ) -> bool {
        let verdict = {
            let mut guard = sync::lock(&self.replay);
            let (replay, last_prune) = &mut *guard;
            let window = self.settings.clock_window;
            if now.saturating_sub(*last_prune) > window.as_millis() as u64 {
                replay.prune(now, window * 3);
                *last_prune = now;
            }
            replay.check(sender.as_str(), channel, incarnation, seq, now)
        };
        let (gap, late) = match verdict {
            Verdict::Replayed => {
                bump(&self.counters.replayed);
                debug!(channel, sender = %sender, "replayed message dropped");
                return false;
            }
            Verdict::Fresh { gap, late } => (gap, late),
        };
        let lost = &self.counters.possibly_lost;
        if gap > 0 {
            lost.fetch_add(gap, Ordering::Relaxed);
            warn!(channel, sender = %sender, gap, "gap in a sender's messages: some were probably lost");
        }
        if late {
            // Never fails: the update always returns `Some`.
            let _ = lost.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        }
        true
    }

    fn reject(&self, rejection: Rejection, channel: &str) -> Option<Message> {
        let counter = match rejection {
            Rejection::Oversized => &self.counters.oversized,
            Rejection::Malformed => &self.counters.malformed,
            Rejection::BadSignature => &self.counters.bad_signature,
        };
        bump(counter);
        debug!(channel, ?rejection, "bus message dropped");
        None
    }

    fn handlers_for(&self, message_type: &str) -> Vec<Handler> {
        let handlers = sync::read(&self.handlers);
        handlers.get(message_type).map_or_else(Vec::new, |list| {
            list.iter().map(|(_, h)| h.clone()).collect()
        })
    }
}

async fn receive_loop(
    inner: Arc<Inner>,
    mut subscription: RawSubscription,
    direct: bool,
    cancel: CancellationToken,
) {
    let channel = subscription.channel().to_owned();
    loop {
        let bytes = tokio::select! {
            () = cancel.cancelled() => break,
            bytes = subscription.recv() => match bytes {
                Some(bytes) => bytes,
                None => break,
            },
        };
        let Some(message) = inner.admit(&channel, &bytes, direct) else {
            continue;
        };
        if dispatch(&inner, &message, &cancel).await.is_break() {
            break;
        }
    }
    debug!(channel, "bus receive loop ended");
}

/// Hands an accepted message to every handler of its type: inline handlers at once, the others
/// each in a task of its own once the backlog admits it. `Break` if the bus stopped meanwhile.
async fn dispatch(
    inner: &Arc<Inner>,
    message: &Message,
    cancel: &CancellationToken,
) -> ControlFlow<()> {
    let handlers = inner.handlers_for(&message.message_type);
    if handlers.is_empty() {
        bump(&inner.counters.unhandled);
    }
    for handler in handlers {
        let handler = match handler {
            Handler::Inline(handler) => {
                run_inline(inner, &handler, message);
                continue;
            }
            Handler::Spawned(handler) => handler,
        };
        let queued = tokio::select! {
            () = cancel.cancelled() => return ControlFlow::Break(()),
            permit = inner.backlog.clone().acquire_owned() => permit.expect("the backlog is never closed"),
        };
        let run = run_spawned(
            inner.clone(),
            handler,
            message.clone(),
            queued,
            cancel.clone(),
        );
        inner.api.spawn(run);
    }
    ControlFlow::Continue(())
}

/// Runs a spawned handler once it gets a permit of the handler limiter, giving up its place in
/// the backlog (`queued`) then; counts a failure or panic.
async fn run_spawned(
    inner: Arc<Inner>,
    handler: SpawnedHandler,
    message: Message,
    queued: OwnedSemaphorePermit,
    cancel: CancellationToken,
) {
    let permit = tokio::select! {
        () = cancel.cancelled() => return,
        permit = inner.limiter.clone().acquire_owned() => permit.expect("the limiter is never closed"),
    };
    drop(queued);
    let message_type = message.message_type.clone();
    let span = message_span(&inner, &message);
    // Made in the span too: a handler's synchronous part may log.
    let run = span.in_scope(|| handler(message));
    let outcome = AssertUnwindSafe(run).catch_unwind().instrument(span).await;
    drop(permit);
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err.to_string(),
        Err(_) => "handler panicked".to_owned(),
    };
    inner.handler_failed(&message_type, &failure);
}

fn run_inline(inner: &Inner, handler: &InlineHandler, message: &Message) {
    let span = message_span(inner, message);
    let outcome = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| handler(message))));
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(err)) => err.to_string(),
        Err(_) => "handler panicked".to_owned(),
    };
    inner.handler_failed(&message.message_type, &failure);
}

/// The span a traced message's handlers run in, continuing the sender's trace; none for a
/// message sent outside any trace (heartbeats and the like cost no span).
fn message_span(inner: &Inner, message: &Message) -> Span {
    let Some(parent) = message.trace else {
        return Span::none();
    };
    let span = info_span!(
        "bus.message",
        node_id = %inner.node_id,
        message_type = %message.message_type,
        sender = %message.sender,
        trace_id = tracing::field::Empty,
    );
    stellar_core::trace::follow(&span, Some(parent));
    span
}

/// The last sequence number sent on each channel, forgetting channels unused for a while: node
/// channels come and go with the nodes (a new id per restart), so the table would otherwise grow
/// for as long as the node runs.
#[derive(Debug)]
struct SeqTable {
    /// Channel -> (last sequence number, when it was last used).
    seqs: HashMap<String, (u64, Instant)>,
    idle_limit: Duration,
    last_prune: Instant,
}

impl SeqTable {
    fn new(clock_window: Duration) -> Self {
        Self {
            seqs: HashMap::new(),
            idle_limit: Self::idle_limit(clock_window),
            last_prune: Instant::now(),
        }
    }

    /// How long an unused counter is kept: [`SEQ_IDLE`], and always longer than receivers
    /// remember a channel's replay window (three clock windows, pruned once per window), so
    /// that a forgotten counter restarting at 1 is never taken for a replay.
    fn idle_limit(clock_window: Duration) -> Duration {
        SEQ_IDLE.max(clock_window * 5)
    }

    fn next(&mut self, channel: &str, now: Instant) -> u64 {
        if now.duration_since(self.last_prune) >= self.idle_limit / 10 {
            let idle_limit = self.idle_limit;
            self.seqs
                .retain(|_, (_, used)| now.duration_since(*used) < idle_limit);
            self.last_prune = now;
        }
        let (seq, used) = self.seqs.entry(channel.to_owned()).or_insert((0, now));
        *seq += 1;
        *used = now;
        *seq
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seqs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTransport;

    const CHANNEL: &str = "stellar:bus";

    fn crafted(seq: u64, sent_at_ms: u64) -> Vec<u8> {
        let mut envelope = Envelope {
            sender: "crafted".into(),
            incarnation: 1,
            seq,
            sent_at_ms,
            message_type: "x".into(),
            body: b"null".to_vec(),
            trace: None,
            tag: [0; 32],
        };
        Sealer::new(&ServerToken::new("t"), &[]).seal(CHANNEL, &mut envelope);
        envelope.encode()
    }

    async fn bus() -> (Bus, MemoryTransport) {
        let transport = MemoryTransport::new();
        let api = Api::new(Config::default());
        let settings = BusSettings::new(ServerToken::new("t"));
        let bus = Bus::start(&api, Arc::new(transport.clone()), settings)
            .await
            .expect("start");
        bus.subscribe_handler("x", |_| async { Ok(()) });
        (bus, transport)
    }

    async fn settle(bus: &Bus, total: u64) -> BusStats {
        for _ in 0..500 {
            let stats = bus.stats();
            if stats.accepted + stats.outside_window + stats.before_start + stats.replayed >= total
            {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("messages not processed: {:?}", bus.stats());
    }

    #[tokio::test]
    async fn messages_outside_the_clock_window_or_before_the_start_are_dropped() {
        let (bus, transport) = bus().await;
        let now = now_ms();
        for (seq, sent_at) in [
            (1, now - 31_000),
            (2, now + 31_000),
            (3, now - 29_000),
            (4, now + 29_000),
            (5, now - 500),
        ] {
            transport
                .publish(CHANNEL, crafted(seq, sent_at))
                .await
                .expect("publish");
        }
        let stats = settle(&bus, 5).await;
        assert_eq!(
            (stats.accepted, stats.outside_window, stats.before_start),
            (2, 2, 1),
            "{stats:?}"
        );
    }

    #[test]
    fn sequence_counters_of_unused_channels_are_forgotten() {
        let start = Instant::now();
        let mut seqs = SeqTable::new(Duration::from_secs(30));
        for n in 0..1000 {
            assert_eq!(seqs.next(&format!("stellar:bus:node:gone-{n}"), start), 1);
        }
        let busy = "stellar:bus";
        for minute in 1..=15 {
            let now = start + Duration::from_secs(60 * minute);
            assert_eq!(
                seqs.next(busy, now),
                minute,
                "a channel in use keeps counting"
            );
        }
        assert_eq!(seqs.len(), 1, "idle channels are forgotten");
        assert!(SeqTable::idle_limit(Duration::from_secs(600)) >= Duration::from_secs(3000));
    }

    #[tokio::test]
    async fn gaps_in_a_senders_sequence_count_as_possibly_lost_until_filled() {
        let (bus, transport) = bus().await;
        let now = now_ms();
        for seq in [1, 2, 6] {
            transport
                .publish(CHANNEL, crafted(seq, now))
                .await
                .expect("publish");
        }
        assert_eq!(settle(&bus, 3).await.possibly_lost, 3);
        transport
            .publish(CHANNEL, crafted(4, now))
            .await
            .expect("publish");
        let stats = settle(&bus, 4).await;
        assert_eq!((stats.accepted, stats.possibly_lost), (4, 2), "{stats:?}");
    }
}

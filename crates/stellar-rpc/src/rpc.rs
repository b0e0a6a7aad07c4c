//! Calls, replies and the pending-call table.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use stellar_bus::{Bus, HandlerError, Membership, Message, TransportError};
use stellar_core::{Api, Config, NodeId, TraceParent, sync};
use tokio::{sync::oneshot, time::Instant};
use tracing::{Instrument, debug, info_span, instrument, warn};

use crate::{Error, RemoteError, Result, metrics::RpcMetrics};

const REQUEST: &str = "stellar.rpc.request";
const REPLY: &str = "stellar.rpc.reply";

/// Which nodes a call goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every node, this one included.
    All,
    /// One node, by id.
    Node(NodeId),
    /// The node holding this client connection (see `Membership::hold_connection`).
    Connection(String),
}

/// How long a call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Publish and return at once.
    None,
    /// Return the first reply.
    First,
    /// Return one result per live node targeted, as soon as all have answered or at the timeout.
    All,
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The node that answered (or failed to, for [`RemoteError::Timeout`]).
    pub node_id: NodeId,
    /// Its value or its error.
    pub result: Result<Value, RemoteError>,
}

/// What a method handler learns about the call.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The node that called.
    pub caller: NodeId,
    /// This node.
    pub api: Api,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    request_id: u64,
    method: String,
    args: Value,
    wants_reply: bool,
    /// For a request to one node: the run of that node (its incarnation, from its membership
    /// record) the call is for. During a handover two runs share the id and both receive the
    /// node's direct messages; only the named run handles the request, so it runs once. Absent
    /// from callers that predate it: then every receiving run handles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_incarnation: Option<u64>,
    /// The caller's trace position (W3C `traceparent`): the method runs in an `rpc.serve` span
    /// continuing it. In the body rather than the envelope, so nodes that predate it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReplyBody {
    request_id: u64,
    result: Result<Value, RemoteError>,
}

type MethodFuture = Pin<Box<dyn Future<Output = Result<Value, RemoteError>> + Send>>;
type Method = Arc<dyn Fn(CallContext, Value) -> MethodFuture + Send + Sync>;

/// Settings of an [`Rpc`]. A node builds them from its configuration with
/// `RpcSettings::from(&config)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcSettings {
    /// How long a call waits for replies unless it says otherwise.
    pub timeout: Duration,
}

impl Default for RpcSettings {
    /// The default of `rpc_timeout_ms`: 5 s.
    fn default() -> Self {
        Self::from(&Config::default())
    }
}

impl From<&Config> for RpcSettings {
    /// `rpc_timeout_ms` of `config`.
    fn from(config: &Config) -> Self {
        Self {
            timeout: config.rpc_timeout,
        }
    }
}

/// A call waiting for replies.
struct Pending {
    wait: Wait,
    /// The nodes whose replies complete a [`Wait::All`] call; `None` until a call to every node
    /// has read the members.
    expected: Option<BTreeSet<NodeId>>,
    replies: Vec<Reply>,
    done: Option<oneshot::Sender<()>>,
}

/// Calls methods on the nodes of a cluster, and serves this node's methods. Cloning it is cheap.
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    membership: Membership,
    settings: RpcSettings,
    methods: RwLock<HashMap<String, Method>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    metrics: RpcMetrics,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc")
            .field("node_id", self.inner.bus.node_id())
            .field("pending", &self.pending_calls())
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// A caller on `bus`, finding the cluster's nodes through `membership`. It can call other
    /// nodes at once; call [`Rpc::serve`] to answer calls.
    pub fn new(bus: Bus, membership: Membership, settings: RpcSettings) -> Self {
        // Request ids start from the clock, so a restarted caller's ids do not meet late replies
        // to its previous run.
        let first = stellar_core::time::now_us() << 8;
        let metrics = RpcMetrics::register(bus.api().metrics());
        let rpc = Self {
            inner: Arc::new(Inner {
                metrics,
                bus,
                membership,
                settings,
                methods: RwLock::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_request: AtomicU64::new(first),
            }),
        };
        crate::notices::follow(&rpc.inner.bus, &rpc.inner.membership);
        let weak = Arc::downgrade(&rpc.inner);
        // Inline: a reply must never wait for a handler permit, since the handlers holding the
        // permits may be the very calls waiting for it (a method that calls another node).
        rpc.inner
            .bus
            .subscribe_inline_handler(REPLY, move |message| match weak.upgrade() {
                Some(inner) => inner.on_reply(message),
                None => Ok(()),
            });
        rpc
    }

    /// Answers calls from now on, with the built-in methods and every registered one. A run
    /// that joined the cluster announces it on the bus, and announces its stop when its node
    /// stops, so callers address this run at once (after a supervised handover too) and stop
    /// addressing it as soon as it stops.
    pub fn serve(&self) {
        crate::builtins::register(self);
        let weak = Arc::downgrade(&self.inner);
        self.inner.bus.subscribe_handler(REQUEST, move |message| {
            let inner = weak.upgrade();
            async move {
                match inner {
                    Some(inner) => inner.on_request(message).await,
                    None => Ok(()),
                }
            }
        });
        crate::notices::announce(&self.inner.bus, &self.inner.membership);
    }

    /// The bus calls travel on.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The cluster's membership, as calls see it.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// Registers `method` (replacing any earlier handler of that name). Its arguments are decoded
    /// from JSON into `A`; its value is encoded into JSON.
    pub fn register<A, R, F, Fut>(&self, method: impl Into<String>, handler: F)
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        let method = method.into();
        let name = method.clone();
        let handler = Arc::new(handler);
        let erased: Method = Arc::new(move |ctx, args| {
            let (handler, name) = (handler.clone(), name.clone());
            Box::pin(async move {
                let args: A =
                    serde_json::from_value(args).map_err(|err| RemoteError::InvalidArgs {
                        method: name,
                        message: err.to_string(),
                    })?;
                let value = handler(ctx, args)
                    .await
                    .map_err(|err| RemoteError::Handler {
                        message: err.to_string(),
                    })?;
                serde_json::to_value(value).map_err(|err| RemoteError::Handler {
                    message: err.to_string(),
                })
            })
        });
        sync::write(&self.inner.methods).insert(method, erased);
    }

    /// How many calls are waiting for replies.
    pub fn pending_calls(&self) -> usize {
        self.inner.pending().len()
    }

    /// Calls `method` on one node and returns its value.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] if `node` is not live, [`Error::NoSuchMethod`],
    /// [`Error::InvalidArgs`] or [`Error::Remote`] as the node answered, [`Error::Timeout`] after
    /// the timeout of the [`RpcSettings`].
    pub async fn call(&self, node: &NodeId, method: &str, args: Value) -> Result<Value> {
        let timeout = self.inner.settings.timeout;
        let mut replies = self
            .do_cluster(
                method,
                args,
                Target::Node(node.clone()),
                Wait::First,
                Some(timeout),
            )
            .await?;
        let reply = replies
            .pop()
            .expect("a first-reply call returns one reply or an error");
        reply
            .result
            .map_err(|err| Error::from_remote(reply.node_id, method, err, timeout))
    }

    /// Calls `method` on every node and returns one result per live node.
    ///
    /// # Errors
    ///
    /// See [`Rpc::do_cluster`].
    pub async fn call_all(&self, method: &str, args: Value) -> Result<Vec<Reply>> {
        self.do_cluster(method, args, Target::All, Wait::All, None)
            .await
    }

    /// Calls `method` with `args` on `target` and waits as `wait` says, at most `timeout`
    /// (default: the timeout of the [`RpcSettings`]) from the call's start, reads of the
    /// members included.
    ///
    /// - [`Wait::None`]: returns no replies once the request is published.
    /// - [`Wait::First`]: returns the first reply, whatever it is, or [`Error::Timeout`].
    /// - [`Wait::All`]: returns one reply per live node targeted, ordered by node id, as soon as
    ///   every one has answered; nodes that did not answer in time get
    ///   [`RemoteError::Timeout`].
    ///
    /// A call to one node checks it against the membership's recent view
    /// ([`Membership::recent_incarnation`]), which reads the store only when the view is older
    /// than two heartbeat intervals, does not list the node, or lists a run of it that left a
    /// call unanswered: a call to one node that gets no reply tells the view
    /// ([`Membership::note_unanswered`]). A [`Wait::All`] call to every node reads the members
    /// while its request travels; if that read fails, the call expects the members the view
    /// last knew ([`Membership::known_nodes`]), or, knowing none, returns whoever answered in
    /// time: a call that was sent never fails for want of a read.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] for a target that is not live, [`Error::Timeout`] for a first-reply
    /// call with no reply, [`Error::Bus`] or [`Error::Membership`] when the backend fails
    /// before the request is sent ([`Error::Membership`] with
    /// [`TransportError::Timeout`] when resolving the target takes the whole timeout).
    #[instrument(name = "rpc.call", skip_all, fields(node_id = %self.inner.bus.node_id(), method = %method))]
    pub async fn do_cluster(
        &self,
        method: &str,
        args: Value,
        target: Target,
        wait: Wait,
        timeout: Option<Duration>,
    ) -> Result<Vec<Reply>> {
        let started = std::time::Instant::now();
        let result = self.call_cluster(method, args, target, wait, timeout).await;
        let label = self.inner.method_label(method);
        let seconds = started.elapsed().as_secs_f64();
        self.inner.metrics.called(label, seconds, &result);
        result
    }

    async fn call_cluster(
        &self,
        method: &str,
        args: Value,
        target: Target,
        wait: Wait,
        timeout: Option<Duration>,
    ) -> Result<Vec<Reply>> {
        let after = timeout.unwrap_or(self.inner.settings.timeout);
        let deadline = Instant::now() + after;
        let mut resolved = tokio::time::timeout_at(deadline, self.resolve(target))
            .await
            .map_err(|_| {
                Error::Membership(TransportError::Timeout {
                    op: "membership read",
                    after,
                })
            })??;
        let request = Request {
            request_id: self.inner.next_request.fetch_add(1, Ordering::Relaxed),
            method: method.to_owned(),
            args,
            wants_reply: wait != Wait::None,
            to_incarnation: resolved.incarnation,
            trace: TraceParent::current().map(|trace| trace.to_string()),
        };
        // Registered before publishing: a fast reply must find its call (ActionHero #1244). The
        // guard removes the entry however this future ends, dropped by a caller's own timeout
        // or `select!` included.
        let (done, completed) = oneshot::channel();
        let entry = (wait != Wait::None).then(|| {
            PendingEntry::insert(
                &self.inner,
                request.request_id,
                Pending::new(
                    wait,
                    resolved.node.is_some().then(|| resolved.expected.clone()),
                    done,
                ),
            )
        });
        let send = async {
            match &resolved.node {
                Some(node) => self.inner.bus.send_to(node, REQUEST, &request).await,
                None => self.inner.bus.publish(REQUEST, &request).await,
            }
        };
        match &entry {
            // A call to every node waits for every node live now, one that joined a moment ago
            // included: the members are read while the request travels.
            Some(entry) if resolved.node.is_none() && wait == Wait::All => {
                let members = tokio::time::timeout_at(deadline, self.inner.membership.nodes());
                let (sent, members) = tokio::join!(send, members);
                sent?;
                if let Some(expected) = self.expected_members(members, after) {
                    resolved.expected = expected;
                    entry.expect(resolved.expected.clone());
                }
            }
            _ => send.await?,
        }
        let Some(entry) = entry else {
            return Ok(Vec::new());
        };
        let in_time = tokio::time::timeout_at(deadline, completed).await.is_ok();
        let replies = entry.finish();
        if let (Some(node), Some(incarnation)) = (&resolved.node, resolved.incarnation)
            && !replies.iter().any(|reply| &reply.node_id == node)
        {
            // The run may be dead, or another run may hold the node's record since an
            // announcement this caller missed: the next call to the node reads the members.
            debug!(request_id = request.request_id, %node, incarnation, "no reply from the node");
            self.inner.membership.note_unanswered(node, incarnation);
        }
        debug!(
            request_id = request.request_id,
            replies = replies.len(),
            in_time,
            "call ended"
        );
        collect(method, wait, after, &resolved.expected, replies)
    }

    /// The nodes a [`Wait::All`] call to every node waits for, given how reading the `members`
    /// while its request travelled went. The request is out, so a failed read must not fail
    /// the call (a caller that retried would run it twice): the members the view last knew
    /// stand in, and `None`, when it knows none, lets the call collect replies until its
    /// timeout.
    fn expected_members(
        &self,
        members: Result<
            Result<Vec<stellar_bus::NodeInfo>, TransportError>,
            tokio::time::error::Elapsed,
        >,
        after: Duration,
    ) -> Option<BTreeSet<NodeId>> {
        let membership = &self.inner.membership;
        let err = match members {
            Ok(Ok(members)) => return Some(members.into_iter().map(|n| n.id).collect()),
            Ok(Err(err)) => err,
            Err(_) => TransportError::Timeout {
                op: "membership read",
                after,
            },
        };
        let known = membership.known_nodes();
        warn!(node_id = %self.inner.bus.node_id(), error = %err, known = known.len(), "could not read the members for a call to every node; expecting those last known");
        (!known.is_empty()).then(|| known.into_iter().collect())
    }

    /// The live node `target` names and the run of it the call is for, from the membership's
    /// recent view ([`Membership::recent_incarnation`]): no read of the store on the hot path.
    /// For every node nothing is read here: a [`Wait::All`] call reads the members while its
    /// request travels.
    async fn resolve(&self, target: Target) -> Result<Resolved> {
        let membership = &self.inner.membership;
        let node = match target {
            Target::All => {
                return Ok(Resolved {
                    node: None,
                    incarnation: None,
                    expected: BTreeSet::new(),
                });
            }
            Target::Node(node) => node,
            // Reads the holder and the members (the holder must be live).
            Target::Connection(connection) => membership
                .connection_holder(&connection)
                .await
                .map_err(Error::Membership)?
                .ok_or(Error::UnknownConnection { connection })?,
        };
        let incarnation = membership
            .recent_incarnation(&node)
            .await
            .map_err(Error::Membership)?;
        let Some(incarnation) = incarnation else {
            return Err(Error::UnknownNode { node });
        };
        Ok(Resolved {
            expected: BTreeSet::from([node.clone()]),
            node: Some(node),
            incarnation: Some(incarnation),
        })
    }
}

/// Where a call goes, as [`Rpc::do_cluster`] resolved its [`Target`].
struct Resolved {
    /// The one node called; `None` for every node.
    node: Option<NodeId>,
    /// The run of that node the call is for (its membership record's incarnation).
    incarnation: Option<u64>,
    /// The nodes whose replies a [`Wait::All`] call waits for.
    expected: BTreeSet<NodeId>,
}

/// The result of a call from the `replies` that arrived within `after`: the first one for
/// [`Wait::First`] (or [`Error::Timeout`]); for the others one per `expected` node, ordered by
/// id, [`RemoteError::Timeout`] for each node that did not answer.
fn collect(
    method: &str,
    wait: Wait,
    after: Duration,
    expected: &BTreeSet<NodeId>,
    mut replies: Vec<Reply>,
) -> Result<Vec<Reply>> {
    if wait == Wait::First {
        if replies.is_empty() {
            return Err(Error::Timeout {
                method: method.to_owned(),
                after,
                replies,
            });
        }
        replies.truncate(1);
        return Ok(replies);
    }
    let answered: BTreeSet<NodeId> = replies.iter().map(|r| r.node_id.clone()).collect();
    let after_ms = after.as_millis() as u64;
    for node_id in expected.difference(&answered) {
        replies.push(Reply {
            node_id: node_id.clone(),
            result: Err(RemoteError::Timeout { after_ms }),
        });
    }
    replies.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(replies)
}

impl Pending {
    fn new(wait: Wait, expected: Option<BTreeSet<NodeId>>, done: oneshot::Sender<()>) -> Self {
        Self {
            wait,
            expected,
            replies: Vec::new(),
            done: Some(done),
        }
    }

    /// Wakes the call once its replies complete it.
    fn end_if_complete(&mut self) {
        let complete = match (self.wait, &self.expected) {
            (Wait::First, _) => !self.replies.is_empty(),
            (Wait::All, Some(expected)) => expected
                .iter()
                .all(|node| self.replies.iter().any(|r| &r.node_id == node)),
            (Wait::All, None) | (Wait::None, _) => false,
        };
        if complete && let Some(done) = self.done.take() {
            // The call may have ended meanwhile (its timeout, or its caller dropped it).
            let _ = done.send(());
        }
    }
}

/// A call's entry in the pending table, removed when this is dropped.
struct PendingEntry<'a> {
    inner: &'a Inner,
    request_id: u64,
}

impl<'a> PendingEntry<'a> {
    fn insert(inner: &'a Inner, request_id: u64, pending: Pending) -> Self {
        inner.pending().insert(request_id, pending);
        Self { inner, request_id }
    }

    /// Sets the nodes whose replies complete the call, which may complete it at once.
    fn expect(&self, expected: BTreeSet<NodeId>) {
        if let Some(call) = self.inner.pending().get_mut(&self.request_id) {
            call.expected = Some(expected);
            call.end_if_complete();
        }
    }

    /// Removes the entry and returns the replies it collected.
    fn finish(self) -> Vec<Reply> {
        self.inner
            .pending()
            .remove(&self.request_id)
            .map(|pending| pending.replies)
            .expect("only this call's guard removes its entry")
    }
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.inner.pending().remove(&self.request_id);
    }
}

impl Inner {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        // Each critical section is one map update: a poisoned lock is still consistent.
        sync::lock(&self.pending)
    }

    fn on_reply(&self, message: &Message) -> Result<(), HandlerError> {
        let body: ReplyBody = message.body()?;
        let mut pending = self.pending();
        // A late reply finds no entry: its call has ended.
        let Some(call) = pending.get_mut(&body.request_id) else {
            debug!(request_id = body.request_id, from = %message.sender(), "late reply ignored");
            return Ok(());
        };
        if call.replies.iter().any(|r| &r.node_id == message.sender()) {
            debug!(request_id = body.request_id, from = %message.sender(), "duplicate reply ignored");
            return Ok(());
        }
        call.replies.push(Reply {
            node_id: message.sender().clone(),
            result: body.result,
        });
        call.end_if_complete();
        Ok(())
    }

    /// The `method` label of a call: its name when this node knows the method, else `other`
    /// (labels stay bounded whatever callers ask for).
    fn method_label(&self, method: &str) -> String {
        if sync::read(&self.methods).contains_key(method) {
            method.to_owned()
        } else {
            "other".to_owned()
        }
    }

    async fn on_request(&self, message: Message) -> Result<(), HandlerError> {
        let request: Request = message.body()?;
        let incarnation = self.bus.api().incarnation();
        if message.is_direct()
            && let Some(wanted) = request.to_incarnation
            && wanted != incarnation
        {
            // Another run of this id (a handover's other side) holds the record the caller read.
            debug!(node_id = %self.bus.node_id(), method = %request.method, wanted, incarnation, "direct request for another run of this id ignored");
            return Ok(());
        }
        let span = info_span!(
            "rpc.serve",
            node_id = %self.bus.node_id(),
            method = %request.method,
            caller = %message.sender(),
            trace_id = tracing::field::Empty,
        );
        let parent = request.trace.as_deref().and_then(TraceParent::parse);
        stellar_core::trace::follow(&span, parent.or(message.trace()));
        self.serve(&message, request).instrument(span).await
    }

    /// Runs the method `request` names and answers the caller if it wants a reply.
    async fn serve(&self, message: &Message, request: Request) -> Result<(), HandlerError> {
        let method = sync::read(&self.methods).get(&request.method).cloned();
        let ctx = CallContext {
            caller: message.sender().clone(),
            api: self.bus.api().clone(),
        };
        let result = match method {
            Some(handler) => {
                let result = handler(ctx, request.args).await;
                let outcome = if result.is_ok() { "ok" } else { "error" };
                self.metrics.served(request.method.clone(), outcome);
                result
            }
            None => {
                self.metrics.served("other".to_owned(), "no_such_method");
                warn!(node_id = %self.bus.node_id(), method = %request.method, caller = %message.sender(), "call of an unknown method");
                Err(RemoteError::NoSuchMethod {
                    method: request.method.clone(),
                })
            }
        };
        if request.wants_reply {
            let reply = ReplyBody {
                request_id: request.request_id,
                result,
            };
            self.bus.send_to(message.sender(), REPLY, &reply).await?;
        }
        Ok(())
    }
}

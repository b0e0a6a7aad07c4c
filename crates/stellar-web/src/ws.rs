//! `/ws`: one task per WebSocket, speaking both protocols of [`crate::protocol`].

use std::{
    net::SocketAddr,
    ops::ControlFlow,
    sync::{Arc, atomic::Ordering},
};

use axum::{
    Extension, Router,
    extract::{
        State,
        ws::{
            CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
        },
    },
    response::Response,
    routing::get,
};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde_json::{Map, Value, json};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, sleep_until},
};
use tracing::{Instrument, Span, debug, info_span, warn};

use crate::{
    ActionContext, ActionError, ConnectionId, RoomMember,
    action::{Action, Params},
    hub::{OUTBOUND_CAPACITY, Outbound},
    protocol::{self, Event, Frame},
    stats::{Counters, bump},
    web::Shared,
};

/// The peer address of an HTTP connection, set by [`crate::Web::serve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Close codes (RFC 6455).
const GOING_AWAY: u16 = 1001;
const NORMAL: u16 = 1000;
const TOO_BIG: u16 = 1009;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/ws", get(upgrade))
}

/// `GET /ws`: refused while draining or at the connection limit, else upgraded to a session
/// tracked with the other WebSockets (so the drain waits for it).
async fn upgrade(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<Peer>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ActionError> {
    let upgrade = upgrade.map_err(|rejection| ActionError::BadRequest {
        message: rejection.body_text(),
    })?;
    if shared.draining() {
        return Err(ActionError::Draining);
    }
    let permit = shared.ws_permits.clone().try_acquire_owned().map_err(|_| {
        ActionError::TooManyConnections {
            max: shared.config.max_ws_connections,
        }
    })?;
    let limit = shared.config.max_ws_frame_bytes;
    let remote = peer.map(|Extension(Peer(addr))| addr);
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let tracker = shared.ws_tasks.clone();
            tracker.track_future(run(shared, socket, remote, permit))
        }))
}

/// Serves one WebSocket from welcome to close, then forgets it everywhere.
async fn run(
    shared: Arc<Shared>,
    socket: WebSocket,
    remote: Option<SocketAddr>,
    _permit: OwnedSemaphorePermit,
) {
    let api = shared.services.api.clone();
    let id = ConnectionId::generate(api.node_id());
    let span = info_span!("websocket", node_id = %api.node_id(), connection_id = %id);
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    make_known(&shared, &id, tx.clone()).await;
    let pending = Arc::new(Semaphore::new(shared.config.max_ws_pending));
    let mut session = Session {
        shared: shared.clone(),
        id: id.clone(),
        tx,
        pending,
        frames: 0,
        remote,
    };
    session.serve(socket, rx).instrument(span).await;
    forget(&shared, &id).await;
}

/// Makes a new connection known: to this node's hub (pushes reach it through `tx`), to the
/// cluster's connection map, and to the counters.
async fn make_known(shared: &Shared, id: &ConnectionId, tx: mpsc::Sender<Outbound>) {
    let api = &shared.services.api;
    shared.hub.insert(id.clone(), tx);
    if let Err(err) = shared
        .services
        .membership
        .hold_connection(api, id.as_str())
        .await
    {
        warn!(node_id = %api.node_id(), connection_id = %id, cause = %err, "could not register the connection cluster-wide");
    }
    bump(&shared.counters.ws_accepted);
    shared.counters.ws_open.fetch_add(1, Ordering::Relaxed);
}

/// Forgets a closed connection everywhere [`make_known`] made it known.
async fn forget(shared: &Shared, id: &ConnectionId) {
    let api = &shared.services.api;
    shared.hub.remove(id);
    if let Err(err) = shared
        .services
        .membership
        .release_connection(api, id.as_str())
        .await
    {
        warn!(node_id = %api.node_id(), connection_id = %id, cause = %err, "could not release the connection cluster-wide");
    }
    shared.counters.ws_open.fetch_sub(1, Ordering::Relaxed);
}

/// One WebSocket being served.
struct Session {
    shared: Arc<Shared>,
    id: ConnectionId,
    /// Replies of action calls that run concurrently, and pushes, go through here.
    tx: mpsc::Sender<Outbound>,
    /// One permit per concurrent action call this connection may still start.
    pending: Arc<Semaphore>,
    /// Frames received so far: the original protocol's `messageCount`.
    frames: u64,
    remote: Option<SocketAddr>,
}

type Sink = SplitSink<WebSocket, Message>;

/// The close frame (code, reason) that ends a session; `None` when the socket is gone already.
type Close = Option<(u16, &'static str)>;

impl Session {
    /// Welcomes the client, runs the exchange, and sends the close frame it ended with.
    async fn serve(&mut self, socket: WebSocket, mut rx: mpsc::Receiver<Outbound>) {
        let (mut sink, mut stream) = socket.split();
        let welcome = protocol::welcome(
            self.id.as_str(),
            self.shared.services.api.node_id().as_str(),
        );
        if send_json(&mut sink, &welcome).await.is_err() {
            return;
        }
        if let Some((code, reason)) = self.exchange(&mut sink, &mut stream, &mut rx).await {
            send_close(&mut sink, code, reason).await;
        }
    }

    /// Answers the client's frames, forwards pushes and pings the client, until the client
    /// leaves or falls silent or the node stops: the close frame to send then, if any.
    async fn exchange(
        &mut self,
        sink: &mut Sink,
        stream: &mut SplitStream<WebSocket>,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> Close {
        let cancel = self.shared.stop.clone();
        let idle = self.shared.config.idle_timeout;
        let mut ping = tokio::time::interval_at(Instant::now() + idle / 2, idle / 2);
        let mut silent_until = Instant::now() + idle;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Some((GOING_AWAY, "server shutting down")),
                Some(outbound) = rx.recv() => {
                    if send_text(sink, outbound_text(outbound)).await.is_err() {
                        return None;
                    }
                }
                () = sleep_until(silent_until) => {
                    bump(&self.shared.counters.ws_idle_closed);
                    return Some((NORMAL, "idle timeout"));
                }
                _ = ping.tick() => {
                    if !send_ping(sink).await {
                        return None;
                    }
                }
                frame = stream.next() => {
                    silent_until = Instant::now() + idle;
                    if let ControlFlow::Break(close) = self.on_frame(sink, frame).await {
                        return close;
                    }
                }
            }
        }
    }

    /// Handles one frame from the client (or the end of its stream): `Break` with the close
    /// frame to send (if any) ends the session.
    async fn on_frame(
        &mut self,
        sink: &mut Sink,
        frame: Option<Result<Message, axum::Error>>,
    ) -> ControlFlow<Close> {
        match frame {
            None | Some(Ok(Message::Close(_))) => ControlFlow::Break(None),
            Some(Err(err)) => ControlFlow::Break(self.on_error(&err)),
            Some(Ok(Message::Text(text))) => {
                let (replies, quit) = self.on_text(text.as_str()).await;
                for reply in replies {
                    if send_json(sink, &reply).await.is_err() {
                        return ControlFlow::Break(None);
                    }
                }
                if quit {
                    return ControlFlow::Break(Some((NORMAL, "bye")));
                }
                ControlFlow::Continue(())
            }
            Some(Ok(Message::Binary(_))) => {
                bump(&self.shared.counters.ws_bad_frames);
                let err = ActionError::BadRequest {
                    message: "binary frames are not supported".into(),
                };
                match send_json(sink, &protocol::call_reply(Value::Null, Err(err))).await {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(None),
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => ControlFlow::Continue(()),
        }
    }

    /// The close frame for a failed read: 1009 for a message over the limit, none otherwise.
    fn on_error(&self, err: &axum::Error) -> Close {
        // tungstenite reports a message over the limit as a capacity error.
        let text = err.to_string();
        if text.contains("Space limit exceeded") || text.contains("too long") {
            bump(&self.shared.counters.ws_too_large);
            Some((TOO_BIG, "message too big"))
        } else {
            debug!(cause = %err, "websocket read failed");
            None
        }
    }

    /// Handles one text frame: the replies to send now, and whether the client asked to quit.
    async fn on_text(&mut self, text: &str) -> (Vec<Value>, bool) {
        self.frames += 1;
        let count = self.frames;
        match protocol::parse_frame(text) {
            Err(err) => {
                bump(&self.shared.counters.ws_bad_frames);
                self.shared.counters.error(err.error.code());
                let reply = if err.legacy {
                    protocol::legacy_verb_reply(
                        err.id.unwrap_or(json!(count)),
                        count,
                        Err(err.error),
                    )
                } else {
                    protocol::call_reply(err.id.unwrap_or(Value::Null), Err(err.error))
                };
                (vec![reply], false)
            }
            Ok(Frame::Call { id, action, params }) => {
                let reply = self
                    .call(action, params, move |result| {
                        protocol::call_reply(id, result)
                    })
                    .await;
                (reply.into_iter().collect(), false)
            }
            Ok(Frame::Legacy { message_id, event }) => {
                let message_id = message_id.unwrap_or(json!(count));
                // Room verbs are traces of their own, as actions are (`call` makes theirs).
                let span = match event {
                    Event::Action { .. } => Span::none(),
                    _ => {
                        let span = info_span!("ws.event", trace_id = tracing::field::Empty);
                        stellar_core::trace::follow(&span, None);
                        span
                    }
                };
                self.on_event(message_id, count, event)
                    .instrument(span)
                    .await
            }
        }
    }

    /// Handles one original-protocol verb: the replies to send now, and whether the client
    /// asked to quit.
    async fn on_event(
        &mut self,
        message_id: Value,
        count: u64,
        event: Event,
    ) -> (Vec<Value>, bool) {
        let rooms = self.shared.rooms.clone();
        let result = match event {
            Event::Action { action, params } => {
                let reply = self
                    .call(action, params, move |result| {
                        protocol::legacy_action_reply(message_id, count, result)
                    })
                    .await;
                return (reply.into_iter().collect(), false);
            }
            Event::Quit => {
                let reply = protocol::legacy_verb_reply(message_id, count, Ok(Value::Null));
                return (vec![reply], true);
            }
            Event::RoomJoin { room } => rooms.join(&self.id, &room).await.map(|_| json!(true)),
            Event::RoomLeave { room } => rooms.leave(&self.id, &room).await.map(|_| json!(true)),
            Event::Say { room, message } => rooms
                .say(&self.id, &room, message)
                .await
                .map(|()| json!(true)),
            Event::RoomView { room } => self.room_view(room).await,
            Event::DetailsView => Ok(self.details(count)),
            Event::Unknown { event } => Err(self.unknown_event(&event)),
        };
        if let Err(err) = &result {
            self.shared.counters.error(err.code());
        }
        (
            vec![protocol::legacy_verb_reply(message_id, count, result)],
            false,
        )
    }

    /// `roomView`: the members of `room` across the cluster, shown to members only.
    async fn room_view(&self, room: String) -> Result<Value, ActionError> {
        let rooms = &self.shared.rooms;
        if !rooms.is_local_member(&self.id, &room) {
            return Err(ActionError::Forbidden {
                message: format!("only a member of {room} sees its members"),
            });
        }
        let members = rooms.members(&room).await?;
        Ok(room_view_data(&room, &members))
    }

    /// Counts a frame naming an event the protocol does not have; the error to answer with.
    fn unknown_event(&self, event: &str) -> ActionError {
        bump(&self.shared.counters.ws_bad_frames);
        ActionError::BadRequest {
            message: format!("unknown event {event}"),
        }
    }

    /// `detailsView`: this connection as the original framework describes it.
    fn details(&self, count: u64) -> Value {
        let details = self.shared.hub.details(&self.id);
        let max = self.shared.config.max_ws_pending;
        json!({
            "id": self.id,
            "node_id": self.shared.services.api.node_id(),
            "remoteIP": self.remote.map(|a| a.ip().to_string()),
            "remotePort": self.remote.map(|a| a.port()),
            "connectedAt": details.as_ref().map(|d| d.connected_at_ms),
            "rooms": details.map(|d| d.rooms).unwrap_or_default(),
            "totalActions": count,
            "pendingActions": max - self.pending.available_permits().min(max),
        })
    }

    /// Calls `action`: at once for ordered actions (the reply is returned), else in a task of
    /// its own whose reply goes through the outbound channel (nothing is returned).
    async fn call(
        &self,
        action: String,
        params: Value,
        reply: impl FnOnce(Result<Value, ActionError>) -> Value + Send + 'static,
    ) -> Option<Value> {
        let counters = self.shared.counters.clone();
        let Some(found) = self.shared.actions.get(&action) else {
            let err = ActionError::UnknownAction { name: action };
            counters.error(err.code());
            return Some(reply(Err(err)));
        };
        let ctx = self.shared.context(Some(self.id.clone()), None);
        // Each action is a trace of its own (a connection may live for days).
        let span = info_span!("ws.action", action = %action, trace_id = tracing::field::Empty);
        stellar_core::trace::follow(&span, None);
        if found.is_ordered() {
            let result = run_counted(&found, ctx, params, &counters)
                .instrument(span)
                .await;
            return Some(reply(result));
        }
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            let err = ActionError::TooManyPending {
                max: self.shared.config.max_ws_pending,
            };
            counters.error(err.code());
            return Some(reply(Err(err)));
        };
        let tx = self.tx.clone();
        self.shared.ws_tasks.spawn(async move {
            let result = run_counted(&found, ctx, params, &counters)
                .instrument(span)
                .await;
            drop(permit);
            // The socket may have closed meanwhile: its reply has nowhere to go.
            let _ = tx.send(Outbound::Json(reply(result))).await;
        });
        None
    }
}

/// How long one frame may take to reach a client's socket. A client that stops reading fills its
/// socket buffer; without this bound its session would wait on the write for ever, deaf to the
/// idle timeout and to the node's stop.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `action` on `params`, counting its error (if any) by code.
async fn run_counted(
    action: &Action,
    ctx: ActionContext,
    params: Value,
    counters: &Counters,
) -> Result<Value, ActionError> {
    let result = action.run(ctx, Params::Json(params)).await;
    if let Err(err) = &result {
        counters.error(err.code());
    }
    result
}

/// The members of a room in the original framework's `roomView` shape: keyed by connection id.
fn room_view_data(room: &str, members: &[RoomMember]) -> Value {
    let listed: Map<String, Value> = members
        .iter()
        .map(|m| {
            let entry = json!({ "id": m.connection_id, "joinedAt": m.joined_at_ms });
            (m.connection_id.to_string(), entry)
        })
        .collect();
    json!({ "room": room, "members": listed, "membersCount": members.len() })
}

/// The text frame carrying a push.
fn outbound_text(outbound: Outbound) -> String {
    match outbound {
        Outbound::Json(value) => value.to_string(),
        Outbound::Shared(text) => text.to_string(),
    }
}

/// Pings the client; false if the ping could not be written in time.
async fn send_ping(sink: &mut Sink) -> bool {
    let ping = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Ping(Default::default())));
    matches!(ping.await, Ok(Ok(())))
}

/// Sends the close frame, giving a client that does not read one second to take it.
async fn send_close(sink: &mut Sink, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

async fn send_json(sink: &mut Sink, value: &Value) -> Result<(), axum::Error> {
    send_text(sink, value.to_string()).await
}

/// Sends one text frame, failing if the client does not take it within [`WRITE_TIMEOUT`].
async fn send_text(sink: &mut Sink, text: String) -> Result<(), axum::Error> {
    match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await {
        Ok(sent) => sent,
        Err(_) => Err(axum::Error::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read within the write timeout",
        ))),
    }
}

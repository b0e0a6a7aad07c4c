//! Rooms across the cluster, and pushing to a connection held by any node.
//!
//! Room membership lives where the connections live: each node indexes its own connections'
//! rooms in memory ([`crate::hub::Hub`]). Nothing about rooms is stored in Redis, so the members
//! of a node that crashed disappear with it: `room.members` asks every live node for its own
//! members (an RPC to all), and a dead node is not asked. A message said in a room is one bus
//! message to every node (authenticated, replay-checked, so delivered at most once); each node
//! hands it to its local members on the bus's receive loop, in the order the sender published.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use stellar_bus::{Bus, HandlerError, Message};
use stellar_core::{Api, NodeId};
use stellar_rpc::{Rpc, Target, Wait};
use tracing::{debug, warn};

use crate::{
    ActionError, ConnectionId,
    hub::{Hub, Outbound, now_ms},
};

/// The bus message type of a room message.
const ROOM_SAY: &str = "stellar.web.room.say";
/// RPC: this node's members of a room.
pub const ROOM_MEMBERS_METHOD: &str = "room.members";
/// RPC: adds a connection held by this node to a room.
pub const ROOM_JOIN_METHOD: &str = "room.join";
/// RPC: takes a connection held by this node out of a room.
pub const ROOM_LEAVE_METHOD: &str = "room.leave";
/// RPC: pushes a message to a connection held by this node.
pub const CONNECTION_SEND_METHOD: &str = "connection.send";
/// Longest room name.
const MAX_ROOM_NAME: usize = 200;

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    /// The member connection.
    pub connection_id: ConnectionId,
    /// The node holding it.
    pub node_id: NodeId,
    /// When it joined, in ms since the Unix epoch.
    pub joined_at_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SayBody {
    room: String,
    from: Option<ConnectionId>,
    message: Value,
    sent_at_ms: u64,
}

#[derive(Debug, Deserialize)]
struct RoomArgs {
    room: String,
}

#[derive(Debug, Deserialize)]
struct MemberArgs {
    connection_id: ConnectionId,
    room: String,
}

#[derive(Debug, Deserialize)]
struct SendArgs {
    connection_id: Option<ConnectionId>,
    message: Value,
}

/// The rooms of the cluster, as this node sees and serves them. Cloning it is cheap.
#[derive(Clone)]
pub struct Rooms {
    hub: Hub,
    api: Api,
    bus: Bus,
    rpc: Rpc,
}

impl fmt::Debug for Rooms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rooms")
            .field("node_id", self.api.node_id())
            .finish_non_exhaustive()
    }
}

impl Rooms {
    pub(crate) fn new(hub: Hub, api: Api, bus: Bus, rpc: Rpc) -> Self {
        Self { hub, api, bus, rpc }
    }

    /// Receives room messages from the bus and serves the room and connection RPC methods.
    pub(crate) fn install(&self) {
        let hub = self.hub.clone();
        // Inline: on the receive loop, so messages reach each client in the order they came.
        self.bus
            .subscribe_inline_handler(ROOM_SAY, move |message: &Message| {
                let body: SayBody = message.body()?;
                hub.deliver(&body.room, &chat_payload(&body));
                Ok(())
            });
        self.serve_method(ROOM_MEMBERS_METHOD, |rooms, args: RoomArgs| {
            Ok(rooms.local_members(&args.room))
        });
        self.serve_method(ROOM_JOIN_METHOD, Rooms::join_here);
        self.serve_method(ROOM_LEAVE_METHOD, Rooms::leave_here);
        self.serve_method(CONNECTION_SEND_METHOD, Rooms::send_here);
    }

    /// Registers the RPC `method`, answered by `handler` on this node's rooms.
    fn serve_method<A, R>(&self, method: &str, handler: fn(&Rooms, A) -> Result<R, HandlerError>)
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let rooms = self.clone();
        self.rpc.register(method, move |_ctx, args: A| {
            std::future::ready(handler(&rooms, args))
        });
    }

    /// `room.join` for a connection this node holds.
    fn join_here(&self, args: MemberArgs) -> Result<bool, HandlerError> {
        if room_limit_reached(&self.hub, &args.connection_id, &args.room) {
            return Err(HandlerError::from(too_many_rooms()));
        }
        self.hub
            .join(&args.connection_id, &args.room)
            .ok_or_else(|| not_here(&args.connection_id))
    }

    /// `room.leave` for a connection this node holds.
    fn leave_here(&self, args: MemberArgs) -> Result<bool, HandlerError> {
        self.hub
            .leave(&args.connection_id, &args.room)
            .ok_or_else(|| not_here(&args.connection_id))
    }

    /// `connection.send` to a connection this node holds.
    fn send_here(&self, args: SendArgs) -> Result<Value, HandlerError> {
        let id = args
            .connection_id
            .ok_or_else(|| HandlerError::from("connection.send needs a connection_id"))?;
        if self
            .hub
            .send(&id, Outbound::Json(alert_payload(args.message)))
        {
            Ok(json!({ "delivered": true }))
        } else {
            Err(not_here(&id))
        }
    }

    /// Adds `connection` (held by any node) to `room`; false if it was a member already.
    ///
    /// # Errors
    ///
    /// [`ActionError::InvalidInput`] for a bad room name, [`ActionError::Failed`] if no live
    /// node holds the connection.
    pub async fn join(&self, connection: &ConnectionId, room: &str) -> Result<bool, ActionError> {
        check_room(room)?;
        if room_limit_reached(&self.hub, connection, room) {
            return Err(ActionError::invalid("room", too_many_rooms()));
        }
        match self.hub.join(connection, room) {
            Some(joined) => Ok(joined),
            None => self.remote(ROOM_JOIN_METHOD, connection, room).await,
        }
    }

    /// Takes `connection` (held by any node) out of `room`; false if it was no member.
    ///
    /// # Errors
    ///
    /// As [`Rooms::join`].
    pub async fn leave(&self, connection: &ConnectionId, room: &str) -> Result<bool, ActionError> {
        check_room(room)?;
        match self.hub.leave(connection, room) {
            Some(left) => Ok(left),
            None => self.remote(ROOM_LEAVE_METHOD, connection, room).await,
        }
    }

    /// Says `message` in `room` as the local connection `from`, which must be a member. Every
    /// member on every node receives `{message, room, from, context: "user", sentAt}`.
    ///
    /// # Errors
    ///
    /// [`ActionError::Forbidden`] if `from` is not in the room, [`ActionError::Failed`] if the
    /// bus refuses the message (too large, transport down).
    pub async fn say(
        &self,
        from: &ConnectionId,
        room: &str,
        message: Value,
    ) -> Result<(), ActionError> {
        check_room(room)?;
        if !self.hub.is_member(from, room) {
            return Err(ActionError::Forbidden {
                message: format!("not a member of room {room}"),
            });
        }
        self.publish(Some(from.clone()), room, message).await
    }

    /// Says `message` in `room` from the server (`from` is null): app code's broadcast.
    ///
    /// # Errors
    ///
    /// As [`Rooms::say`], without the membership check.
    pub async fn broadcast(&self, room: &str, message: Value) -> Result<(), ActionError> {
        check_room(room)?;
        self.publish(None, room, message).await
    }

    /// Every member of `room` on every live node, oldest first. Members of a node that did not
    /// answer in time are missing (logged).
    ///
    /// # Errors
    ///
    /// [`ActionError::Failed`] if the cluster cannot be asked.
    pub async fn members(&self, room: &str) -> Result<Vec<RoomMember>, ActionError> {
        check_room(room)?;
        let replies = self
            .rpc
            .do_cluster(
                ROOM_MEMBERS_METHOD,
                json!({ "room": room }),
                Target::All,
                Wait::All,
                None,
            )
            .await
            .map_err(ActionError::internal)?;
        let mut members = Vec::new();
        for reply in replies {
            match reply.result.map(serde_json::from_value::<Vec<RoomMember>>) {
                Ok(Ok(list)) => members.extend(list),
                Ok(Err(err)) => {
                    warn!(node_id = %reply.node_id, cause = %err, "bad room.members reply")
                }
                Err(err) => warn!(node_id = %reply.node_id, cause = %err, "no room.members reply"),
            }
        }
        members.sort_by(|a, b| {
            (a.joined_at_ms, &a.connection_id).cmp(&(b.joined_at_ms, &b.connection_id))
        });
        Ok(members)
    }

    /// Whether the connection `id`, held by this node, is a member of `room`.
    pub fn is_local_member(&self, id: &ConnectionId, room: &str) -> bool {
        self.hub.is_member(id, room)
    }

    /// The members of `room` held by this node.
    pub fn local_members(&self, room: &str) -> Vec<RoomMember> {
        self.hub
            .members(room)
            .into_iter()
            .map(|(connection_id, joined_at_ms)| RoomMember {
                connection_id,
                node_id: self.api.node_id().clone(),
                joined_at_ms,
            })
            .collect()
    }

    /// Pushes `message` to `connection`, held by any node, as `{context: "alert", message}`.
    ///
    /// # Errors
    ///
    /// [`ActionError::Failed`] if no live node holds the connection.
    pub async fn send(&self, connection: &ConnectionId, message: Value) -> Result<(), ActionError> {
        if self
            .hub
            .send(connection, Outbound::Json(alert_payload(message.clone())))
        {
            return Ok(());
        }
        let args = json!({ "connection_id": connection, "message": message });
        self.call_holder(CONNECTION_SEND_METHOD, connection, args)
            .await
            .map(drop)
    }

    /// Publishes a room message to every node (this one included), which deliver it to their
    /// members.
    async fn publish(
        &self,
        from: Option<ConnectionId>,
        room: &str,
        message: Value,
    ) -> Result<(), ActionError> {
        let body = SayBody {
            room: room.to_owned(),
            from,
            message,
            sent_at_ms: now_ms(),
        };
        debug!(node_id = %self.api.node_id(), room, "room message");
        self.bus
            .publish(ROOM_SAY, &body)
            .await
            .map_err(|err| match err {
                stellar_bus::Error::TooLarge { max, .. } => {
                    ActionError::invalid("message", format!("over the limit of {max} bytes"))
                }
                other => ActionError::internal(other),
            })
    }

    /// Joins or leaves (`method`) a room for a connection held by another node: whether that
    /// changed its membership.
    async fn remote(
        &self,
        method: &str,
        connection: &ConnectionId,
        room: &str,
    ) -> Result<bool, ActionError> {
        let args = json!({ "connection_id": connection, "room": room });
        let value = self.call_holder(method, connection, args).await?;
        Ok(value.as_bool().unwrap_or(false))
    }

    /// Calls `method` on the node that holds `connection`, and returns its answer.
    async fn call_holder(
        &self,
        method: &str,
        connection: &ConnectionId,
        args: Value,
    ) -> Result<Value, ActionError> {
        let replies = self
            .rpc
            .do_cluster(
                method,
                args,
                Target::Connection(connection.to_string()),
                Wait::First,
                None,
            )
            .await
            .map_err(|err| match err {
                stellar_rpc::Error::UnknownConnection { .. } => {
                    ActionError::failed(format!("no live node holds connection {connection}"))
                }
                other => ActionError::internal(other),
            })?;
        let reply = replies
            .into_iter()
            .next()
            .ok_or_else(|| ActionError::failed("no reply from the connection's node"))?;
        reply
            .result
            .map_err(|err| ActionError::failed(err.to_string()))
    }
}

/// The error of a node asked about a connection it does not hold.
fn not_here(id: &ConnectionId) -> HandlerError {
    HandlerError::from(format!("no connection {id} on this node"))
}

/// A room message as clients receive it (the original framework's chat payload).
fn chat_payload(body: &SayBody) -> Value {
    json!({
        "context": "user",
        "message": body.message,
        "room": body.room,
        "from": body.from,
        "sentAt": body.sent_at_ms,
    })
}

/// A message pushed to one connection (`connection.send`).
fn alert_payload(message: Value) -> Value {
    json!({ "context": "alert", "message": message })
}

/// Checks a room name: 1 to `MAX_ROOM_NAME` bytes, no control characters.
fn check_room(room: &str) -> Result<(), ActionError> {
    if room.is_empty() || room.len() > MAX_ROOM_NAME || room.chars().any(char::is_control) {
        return Err(ActionError::invalid(
            "room",
            format!("a room name is 1 to {MAX_ROOM_NAME} bytes without control characters"),
        ));
    }
    Ok(())
}

/// How many rooms one connection may be in: each is an entry in the node's room index and in
/// every `room.members` answer.
pub(crate) const MAX_ROOMS_PER_CONNECTION: usize = 64;

/// The message for a join past [`MAX_ROOMS_PER_CONNECTION`].
fn too_many_rooms() -> String {
    format!("a connection is in at most {MAX_ROOMS_PER_CONNECTION} rooms; leave one first")
}

/// Whether the local `connection` is in as many rooms as allowed and `room` is not one of them.
fn room_limit_reached(hub: &Hub, connection: &ConnectionId, room: &str) -> bool {
    hub.room_count(connection)
        .is_some_and(|n| n >= MAX_ROOMS_PER_CONNECTION && !hub.is_member(connection, room))
}

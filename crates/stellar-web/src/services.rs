//! What an action can reach: the node's components, and who called.

use std::fmt;

use serde::{Deserialize, Serialize};
use stellar_bus::{Bus, Membership};
use stellar_cache::Cache;
use stellar_core::{Api, NodeId};
use stellar_rpc::Rpc;
use stellar_tasks::Tasks;

use crate::Rooms;

/// The node's components, as the node assembled them. Cloning it is cheap.
#[derive(Clone)]
pub struct Services {
    /// The node: id, state, cancellation.
    pub api: Api,
    /// The authenticated bus (rooms ride on it).
    pub bus: Bus,
    /// Who is alive, and the cluster-wide connection map.
    pub membership: Membership,
    /// RPC (the web layer registers `connection.send` and the room methods on it).
    pub rpc: Rpc,
    /// The cluster cache.
    pub cache: Cache,
    /// The task system.
    pub tasks: Tasks,
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("node_id", self.api.node_id())
            .finish_non_exhaustive()
    }
}

/// The id of a client connection (a WebSocket), unique in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(String);

impl ConnectionId {
    /// A new id, unique to this node and moment.
    pub(crate) fn generate(node_id: &NodeId) -> Self {
        Self(stellar_bus::unique_token(node_id, 16))
    }

    /// An id as a client or another node wrote it.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an action handler gets: the node's components and who called. Cloning it is cheap.
#[derive(Debug, Clone)]
pub struct ActionContext {
    pub(crate) services: Services,
    pub(crate) rooms: Rooms,
    pub(crate) connection: Option<ConnectionId>,
    pub(crate) request_id: Option<String>,
}

impl ActionContext {
    /// The node's components.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        self.services.api.node_id()
    }

    /// The WebSocket connection that called, `None` over HTTP.
    pub fn connection(&self) -> Option<&ConnectionId> {
        self.connection.as_ref()
    }

    /// The id of the HTTP request (its `x-request-id`), `None` over WebSocket.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The cluster's rooms.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }
}

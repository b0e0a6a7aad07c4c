//! Every Redis key this crate uses. All start with `stellar:`.

use stellar_core::NodeId;

/// The pub/sub channel every node's bus listens on by default (direct messages use
/// `<channel>:node:<id>`).
pub(crate) fn bus_channel() -> &'static str {
    "stellar:bus"
}

/// ZSET of live node ids, scored by when their record expires (Redis time, ms).
pub(crate) fn nodes() -> &'static str {
    "stellar:nodes"
}

/// The prefix of [`node`] keys, for scripts that build them.
pub(crate) fn node_prefix() -> &'static str {
    "stellar:node:"
}

/// HASH of one node's record: `info` (JSON), `last_seen` (ms) and `incarnation` (the run that wrote it).
pub(crate) fn node(id: &NodeId) -> String {
    format!("{}{id}", node_prefix())
}

/// SET of the client connections recorded for one node (an index of [`connections`]).
pub(crate) fn node_connections(node: &NodeId) -> String {
    format!("stellar:node-connections:{node}")
}

/// HASH of client connection id -> the node that holds the connection.
pub(crate) fn connections() -> &'static str {
    "stellar:connections"
}

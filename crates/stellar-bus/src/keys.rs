//! Every Redis key this crate uses. All start with `stellar:`.

use stellar_core::NodeId;

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

/// HASH of connection id -> the node that holds the connection.
/// The connections recorded for one node (an index of [`connections`]).
pub(crate) fn node_connections(node: &NodeId) -> String {
    format!("stellar:node-connections:{node}")
}

pub(crate) fn connections() -> &'static str {
    "stellar:connections"
}

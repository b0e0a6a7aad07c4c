//! Every Redis key this crate uses. All start with `stellar:`.
//!
//! The membership keys share the hash tag `{members}`, so they live in one hash slot and every
//! script may touch them together on Redis Cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `stellar:{members}:nodes` | ZSET | live node ids, scored by expiry (ms, Redis time) |
//! | `stellar:{members}:node:<id>` | HASH | one node's record: `info`, `last_seen`, `incarnation` |
//! | `stellar:{members}:connections` | HASH | client connection id -> the node holding it |
//! | `stellar:{members}:node-connections:<id>` | SET | the connections recorded for one node |
//!
//! The bus channel is a pub/sub channel, not a key: it has no slot to share.

use stellar_core::NodeId;

/// What every membership key starts with: the `{members}` hash tag puts them in one slot.
const MEMBERS: &str = "stellar:{members}:";

/// The pub/sub channel every node's bus listens on by default (direct messages use
/// `<channel>:node:<id>`).
pub(crate) fn bus_channel() -> &'static str {
    "stellar:bus"
}

/// ZSET of live node ids, scored by when their record expires (Redis time, ms).
pub(crate) fn nodes() -> &'static str {
    "stellar:{members}:nodes"
}

/// The prefix of [`node`] keys, passed in KEYS to scripts that build them (it carries the
/// `{members}` tag, so the slot of every key built from it is declared).
pub(crate) fn node_prefix() -> &'static str {
    "stellar:{members}:node:"
}

/// HASH of one node's record: `info` (JSON), `last_seen` (ms) and `incarnation` (the run that wrote it).
pub(crate) fn node(id: &NodeId) -> String {
    format!("{}{id}", node_prefix())
}

/// SET of the client connections recorded for one node (an index of [`connections`]).
pub(crate) fn node_connections(node: &NodeId) -> String {
    format!("{MEMBERS}node-connections:{node}")
}

/// HASH of client connection id -> the node that holds the connection.
pub(crate) fn connections() -> &'static str {
    "stellar:{members}:connections"
}

/// The live-node set of the layout before hash tags (releases before issue 15), scored like
/// [`nodes`]: `stellar migrate` refuses to run while it lists a live node of an old release.
pub const LEGACY_NODES: &str = "stellar:nodes";

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;
    use stellar_core::NodeId;

    use super::{MEMBERS, connections, node, node_connections, node_prefix, nodes};

    #[test]
    fn membership_keys_follow_the_documented_schema() {
        let id = NodeId::new("web-1").expect("id");
        assert_eq!(nodes(), "stellar:{members}:nodes");
        assert_eq!(node(&id), "stellar:{members}:node:web-1");
        assert_eq!(connections(), "stellar:{members}:connections");
        assert_eq!(
            node_connections(&id),
            "stellar:{members}:node-connections:web-1"
        );
        assert!(nodes().starts_with(MEMBERS) && node_prefix().starts_with(MEMBERS));
    }

    #[test]
    fn membership_keys_share_one_cluster_slot() {
        // Ids with braces of their own: the first `{...}` of a key is its tag, the prefix's.
        let slot = Slot::for_key("members");
        for raw in ["web-1", "{other}", "}x{y}"] {
            let id = NodeId::new(raw).expect("id");
            for key in [
                nodes().to_owned(),
                node_prefix().to_owned(),
                node(&id),
                connections().to_owned(),
                node_connections(&id),
            ] {
                assert_eq!(Slot::for_key(&key), slot, "{key}");
            }
        }
    }
}

//! Errors of the bus.

use stellar_core::NodeId;

use crate::TransportError;

/// A bus operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("transport failed")]
    Transport(#[from] TransportError),
    /// A message body could not be encoded as JSON.
    #[error("cannot encode the body of a {message_type} message")]
    Encode {
        /// The message type.
        message_type: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A message body could not be decoded into the requested type.
    #[error("cannot decode the body of a {message_type} message")]
    Decode {
        /// The message type.
        message_type: String,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The sealed message would exceed the bus's size cap.
    #[error("{message_type} message of {size} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// The message type.
        message_type: String,
        /// Its sealed size.
        size: usize,
        /// The cap (`BusSettings::max_message_bytes`).
        max: usize,
    },
    /// Another live run of a node (another incarnation, with a valid record) holds this node's
    /// id: two processes must not share one.
    #[error("node id {id} is already in use by a live node (incarnation {incarnation})")]
    DuplicateNode {
        /// The id in use.
        id: NodeId,
        /// The incarnation of the run holding it.
        incarnation: u64,
    },
    /// A membership store operation failed.
    #[error("membership store failed")]
    Membership(#[source] TransportError),
}

/// A bus result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a message handler may fail with.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

//! Errors of RPC calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stellar_core::NodeId;

use crate::Reply;

/// What a remote node answered instead of a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The node has no method of that name.
    #[error("no such method {method}")]
    NoSuchMethod {
        /// The method asked for.
        method: String,
    },
    /// The arguments do not fit the method.
    #[error("invalid arguments for {method}: {message}")]
    InvalidArgs {
        /// The method.
        method: String,
        /// Why they do not fit.
        message: String,
    },
    /// The method's handler failed.
    #[error("{message}")]
    Handler {
        /// The handler's error message.
        message: String,
    },
    /// The node did not answer before the call's timeout.
    #[error("no reply within {after_ms} ms")]
    Timeout {
        /// The timeout.
        after_ms: u64,
    },
}

/// An RPC call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No (or not every) reply arrived in time.
    #[error("no reply to {method} within {after:?}")]
    Timeout {
        /// The method called.
        method: String,
        /// The timeout that passed.
        after: Duration,
        /// Replies that did arrive.
        replies: Vec<Reply>,
    },
    /// The target node has no method of that name.
    #[error("node {node} has no method {method}")]
    NoSuchMethod {
        /// The node that said so.
        node: NodeId,
        /// The method asked for.
        method: String,
    },
    /// The target node rejected the arguments.
    #[error("node {node} rejected the arguments of {method}: {message}")]
    InvalidArgs {
        /// The node that said so.
        node: NodeId,
        /// The method.
        method: String,
        /// Why.
        message: String,
    },
    /// The method's handler on the target node failed.
    #[error("{method} failed on node {node}: {message}")]
    Remote {
        /// The node.
        node: NodeId,
        /// The method.
        method: String,
        /// The handler's error message.
        message: String,
    },
    /// The target node is not a live member of the cluster.
    #[error("node {node} is not a live member of the cluster")]
    UnknownNode {
        /// The node asked for.
        node: NodeId,
    },
    /// No live node holds the target connection.
    #[error("no live node holds connection {connection}")]
    UnknownConnection {
        /// The connection asked for.
        connection: String,
    },
    /// The bus failed.
    #[error("bus failed")]
    Bus(#[from] stellar_bus::Error),
    /// The membership store failed.
    #[error("cannot list the cluster's members")]
    Membership(#[source] stellar_bus::TransportError),
}

/// An RPC result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The typed error for a remote node's answer to `method`.
    pub(crate) fn from_remote(
        node: NodeId,
        method: &str,
        error: RemoteError,
        after: Duration,
    ) -> Self {
        let method = method.to_owned();
        match error {
            RemoteError::NoSuchMethod { .. } => Self::NoSuchMethod { node, method },
            RemoteError::InvalidArgs { message, .. } => Self::InvalidArgs {
                node,
                method,
                message,
            },
            RemoteError::Handler { message } => Self::Remote {
                node,
                method,
                message,
            },
            RemoteError::Timeout { .. } => Self::Timeout {
                method,
                after,
                replies: Vec::new(),
            },
        }
    }
}

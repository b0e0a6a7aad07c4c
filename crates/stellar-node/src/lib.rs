//! A Stellar node as a library.
//!
//! [`Node`] is every component of a node (bus, membership, RPC, cache, tasks, your own),
//! assembled from one [`Config`](stellar_core::Config) by a [`NodeBuilder`]: the `stellar run`
//! command, your own binary and tests all start nodes this way. Each setting is read from the
//! config once, here, and handed to the component that needs it as a plain value.
//!
//! [`Client`] is what the `stellar cluster`, `cache` and `tasks` commands use: it connects to a
//! running cluster's Redis, can call RPC methods and read the shared state, and never joins the
//! membership, so it never shows as a node.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), stellar_node::Error> {
//! use stellar_core::Config;
//! use stellar_node::Node;
//!
//! // No Redis URL: the embedded in-memory backend.
//! let node = Node::builder(Config::default()).start().await?;
//! let id = node
//!     .tasks()
//!     .enqueue("stellar.sleep", &serde_json::json!({"ms": 1}), Default::default())
//!     .await?;
//! assert!(!id.is_empty());
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod backend;
mod builtin_tasks;
mod client;
mod error;
mod node;

pub use crate::{
    builtin_tasks::definitions as builtin_tasks,
    client::Client,
    error::{Error, Result},
    node::{Node, NodeBuilder, SetupHook},
};
pub use stellar_web::{Action, ActionContext, ActionError, NoInput, Web};

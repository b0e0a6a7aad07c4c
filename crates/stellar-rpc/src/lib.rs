//! Remote procedure calls on one node or on every node of a Stellar cluster.
//!
//! [`Rpc`] carries calls over the authenticated [`stellar_bus::Bus`]. Methods are registered by
//! name, so only what a node registers can be called (the original framework let any API
//! function be called remotely). Built-ins: `api.ping`, `api.status`, `api.log` and `api.stop`.
//!
//! [`Rpc::do_cluster`] targets every node, one node, or the node holding a client connection
//! ([`Target`]), and waits for nothing, the
//! first reply, or every live node's reply ([`Wait`]), within a timeout. The pending call is
//! registered before the request is published; late and duplicate replies are ignored; the
//! pending table is empty after every call. Errors are distinct: [`Error::Timeout`],
//! [`Error::NoSuchMethod`] (said by the remote node), [`Error::Remote`] (the handler's message),
//! [`Error::UnknownNode`].
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use stellar_bus::{Bus, BusSettings, Membership, MembershipSettings, MemoryMembershipStore, MemoryTransport};
//! use stellar_core::{Api, Config, NodeId};
//! use stellar_rpc::{Rpc, RpcSettings};
//!
//! let api = Api::new(Config { id: Some(NodeId::new("solo")?), ..Config::default() });
//! let config = api.config();
//! let bus = Bus::start(&api, Arc::new(MemoryTransport::new()), BusSettings::from(config)).await?;
//! let store = Arc::new(MemoryMembershipStore::new());
//! let membership = Membership::new(store, &api, MembershipSettings::from(config));
//! membership.join(&api).await?;
//! let rpc = Rpc::new(bus, membership, RpcSettings::from(config));
//! rpc.serve();
//! rpc.register("math.double", |_ctx, n: i64| async move { Ok(n * 2) });
//!
//! let doubled = rpc.call(api.node_id(), "math.double", serde_json::json!(21)).await?;
//! assert_eq!(doubled, serde_json::json!(42));
//! # api.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod builtins;
mod error;
mod metrics;
mod notices;
mod rpc;

pub use crate::{
    error::{Error, RemoteError, Result},
    rpc::{CallContext, Reply, Rpc, RpcSettings, Target, Wait},
};

//! Actions over HTTP and WebSocket, client connections and rooms for a Stellar cluster.
//!
//! An [`Action`] is a name, a typed input (serde; input that does not fit fails with 422
//! naming the field) and an async handler that gets an [`ActionContext`]: the node's
//! [`Services`] and, over WebSocket, the calling [`ConnectionId`]. The [`Actions`] registry
//! holds them; [`Web`] serves them on one port:
//!
//! - `GET|POST /api/{action}`: query string or JSON body in, JSON out; errors are
//!   `{"error": {"code", "message", "field"?}}`, with the status chosen by [`ActionError`] only;
//! - `/ws`: a WebSocket speaking this crate's protocol and the original framework's (see
//!   `docs/web.md`); each connection is registered cluster-wide, so
//!   `do_cluster("connection.send", ..., Target::Connection(id))` reaches it from any node;
//! - `/healthz` and `/readyz` (503 while starting or draining);
//! - `/metrics`: the node's metrics in the Prometheus text format (see `docs/observability.md`).
//! - `/dashboard`: a live view of the cluster (nodes, queues, failed tasks) with buttons to
//!   retry, remove, pause and quiet, behind a login when [`WebConfig::dashboard_secret`] is set
//!   and read-only otherwise (see `docs/observability.md`).
//!
//! [`Rooms`] span the cluster over the authenticated bus. [`bind`] makes a listener that
//! several worker processes can share (`SO_REUSEPORT`); [`Web::serve`] serves it until the node
//! stops, then drains.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use serde::Deserialize;
//! use stellar_bus::{Bus, BusSettings, Membership, MembershipSettings, MemoryMembershipStore, MemoryTransport};
//! use stellar_cache::{Cache, CacheConfig, MemoryCacheStore};
//! use stellar_core::{Api, Config, NodeId};
//! use stellar_rpc::{Rpc, RpcSettings};
//! use stellar_tasks::{MemoryTaskStore, TaskConfig, Tasks};
//! use stellar_web::{Action, Actions, Services, Web, WebConfig, always_ready, bind};
//!
//! let api = Api::new(Config { id: Some(NodeId::new("web-a")?), ..Config::default() });
//! let bus = Bus::start(&api, Arc::new(MemoryTransport::new()), BusSettings::from(api.config())).await?;
//! let store = Arc::new(MemoryMembershipStore::new());
//! let membership = Membership::new(store, &api, MembershipSettings::from(api.config()));
//! membership.join(&api).await?;
//! let rpc = Rpc::new(bus.clone(), membership.clone(), RpcSettings::from(api.config()));
//! rpc.serve();
//! let cache = Cache::new(Arc::new(MemoryCacheStore::new()), api.node_id().clone(), CacheConfig::default());
//! let store = MemoryTaskStore::new();
//! let tasks = Tasks::new(Arc::new(store.clone()), store.signal(), api.node_id().clone(), TaskConfig::default());
//! let services = Services { api: api.clone(), bus, membership, rpc, cache, tasks };
//!
//! #[derive(Deserialize)]
//! struct Add { a: i64, b: i64 }
//! let actions = Actions::new();
//! actions.register(Action::new("add", |_ctx, input: Add| async move { Ok(input.a + input.b) })
//!     .description("Adds two numbers").input("a", "a number").input("b", "another"));
//!
//! let web = Web::new(services, actions, WebConfig::default(), always_ready());
//! let listener = bind("127.0.0.1:0".parse()?, false)?;
//! api.spawn(web.clone().serve(listener));
//! api.set_ready();
//!
//! let sum = web.actions().call(web.context(), "add", serde_json::json!({"a": 2, "b": 3})).await?;
//! assert_eq!(sum, 5);
//! api.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod action;
mod builtins;
mod config;
mod dashboard;
mod error;
mod http;
mod hub;
mod metrics;
mod protocol;
mod rooms;
mod server;
mod services;
mod stats;
mod web;
mod ws;

pub use crate::{
    action::{Action, Actions, InputDoc, NoInput},
    config::WebConfig,
    dashboard::serve_quiet,
    error::ActionError,
    rooms::{
        CONNECTION_SEND_METHOD, ROOM_JOIN_METHOD, ROOM_LEAVE_METHOD, ROOM_MEMBERS_METHOD,
        RoomMember, Rooms,
    },
    server::bind,
    services::{ActionContext, ConnectionId, Services},
    stats::WebStats,
    web::{Readiness, Web, always_ready},
};

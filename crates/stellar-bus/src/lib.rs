//! Authenticated pub/sub and live membership between the nodes of a Stellar cluster, over Redis
//! or in memory.
//!
//! Three layers, each built on the public API of the one below:
//!
//! - [`Bus`] sends typed messages between nodes: JSON bodies in an envelope sealed with an
//!   HMAC keyed from the server token ([`BusSettings`]). Every node receives what is broadcast
//!   ([`Bus::publish`]) and what is sent to it alone ([`Bus::send_to`]); handlers registered by
//!   message type run concurrently, up to a bound. Receivers drop, and count in [`BusStats`],
//!   whatever is oversized, malformed, badly signed, outside the clock window or replayed.
//! - [`Membership`] keeps a signed record per live node, renewed by a heartbeat
//!   ([`MembershipSettings`]): [`Membership::nodes`] is who is up, and one id is held by one run of
//!   a node at a time. Records live behind the narrow [`MembershipStore`] trait
//!   ([`RedisMembershipStore`], [`MemoryMembershipStore`]), which sees them as opaque
//!   [`MemberRecord`]s.
//! - A [`Transport`] moves opaque bytes on named channels and never sees a token or a decoded
//!   message: [`RedisTransport`] for real clusters, [`MemoryTransport`] for one process (the
//!   embedded backend of `stellar run`, and tests). Both keep one contract, checked by one test
//!   suite run against each: a subscriber gets every message published on its channel after
//!   `subscribe` returned, in each publisher's order; every subscriber gets its own copy;
//!   dropping a [`RawSubscription`] unsubscribes it; delivery is at most once, and a subscriber
//!   that falls more than its buffer behind loses the excess, counted in
//!   [`RawSubscription::dropped`].
//!
//! [`RedisPool`] is the one place that turns a [`RedisConfig`] into Redis connections (URL
//! parsing, credentials, database, a timeout on every operation); the Redis transport, the
//! membership store and the cache and task stores of other crates all connect through it. It is
//! also the only public item of this crate that names a `redis` type: everything above it speaks
//! [`TransportError`]. [`RecordSigner`] signs records other crates keep in Redis with the same
//! token-derived keys as the bus.
//!
//! # Example
//!
//! Two nodes on one in-memory backend: both join, one greets the other.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use stellar_bus::{
//!     Bus, BusSettings, Membership, MembershipSettings, MemoryMembershipStore, MemoryTransport,
//! };
//! use stellar_core::{Api, Config, NodeId, ServerToken};
//!
//! let (transport, store) = (MemoryTransport::new(), Arc::new(MemoryMembershipStore::new()));
//! let node = |id: &str| -> Result<Api, Box<dyn std::error::Error>> {
//!     let token = ServerToken::new("s3cret");
//!     Ok(Api::new(Config { id: Some(NodeId::new(id)?), server_token: token, ..Config::default() }))
//! };
//! let (a, b) = (node("a")?, node("b")?);
//! let (greeted, mut got) = tokio::sync::mpsc::unbounded_channel();
//! let mut buses = Vec::new();
//! for api in [&a, &b] {
//!     let config = api.config();
//!     buses.push(Bus::start(api, Arc::new(transport.clone()), BusSettings::from(config)).await?);
//!     Membership::new(store.clone(), api, MembershipSettings::from(config)).join(api).await?;
//! }
//! let greeted = greeted.clone();
//! buses[1].subscribe_handler("greeting", move |message| {
//!     let greeted = greeted.clone();
//!     async move {
//!         greeted.send((message.sender().to_string(), message.body::<String>()?))?;
//!         Ok(())
//!     }
//! });
//! let members = Membership::new(store, &a, MembershipSettings::from(a.config())).nodes().await?;
//! assert_eq!(members.len(), 2);
//! buses[0].send_to(b.node_id(), "greeting", "hello").await?;
//! assert_eq!(got.recv().await, Some(("a".to_owned(), "hello".to_owned())));
//! # a.shutdown().await?;
//! # b.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod bus;
mod envelope;
mod error;
mod keys;
mod membership;
mod membership_store;
mod membership_view;
mod memory_transport;
mod redis_pool;
mod redis_target;
mod redis_transport;
mod replay;
mod scripts;
mod signer;
mod transport;
mod unique;

pub use crate::{
    bus::{Bus, BusSettings, BusStats, HandlerId, Message, START_SKEW},
    error::{Error, HandlerError, Result},
    membership::{Membership, MembershipSettings, MembershipStats, NodeInfo, RECORD_SKEW},
    membership_store::{
        Beat, Claim, LiveRecords, MemberRecord, MembershipStore, MemoryMembershipStore,
        RedisMembershipStore,
    },
    memory_transport::MemoryTransport,
    redis_pool::{RedisConfig, RedisPool, Replication, ScanCursor},
    redis_target::RedisConnection,
    redis_transport::RedisTransport,
    signer::RecordSigner,
    transport::{DEFAULT_SUBSCRIPTION_CAPACITY, RawSubscription, Transport, TransportError},
    unique::unique_token,
};

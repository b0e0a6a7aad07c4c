//! Pub/sub between the nodes of a Stellar cluster, over Redis or in memory.
//!
//! A [`Transport`] moves opaque bytes on named channels: [`RedisTransport`] for real clusters,
//! [`MemoryTransport`] for a single process (the embedded backend of `stellar run`, and tests).
//! Both keep the same contract, checked by one test suite run against each:
//!
//! - a subscriber gets every message published on its channel after `subscribe` returned, in the
//!   order each publisher published them;
//! - every subscriber of a channel gets its own copy;
//! - dropping a [`RawSubscription`] unsubscribes it;
//! - delivery is at most once: a subscriber that falls more than its buffer behind loses the
//!   excess, and counts it in [`RawSubscription::dropped`].
//!
//! [`RedisPool`] is the one place that turns a [`RedisConfig`] into Redis connections (URL
//! parsing, credentials, database, timeouts on every operation); the cache and task stores reuse
//! it.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), stellar_bus::TransportError> {
//! use stellar_bus::{MemoryTransport, Transport};
//!
//! let transport = MemoryTransport::new();
//! let mut sub = transport.subscribe("greetings").await?;
//! transport.publish("greetings", b"hello".to_vec()).await?;
//! assert_eq!(sub.recv().await.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```

mod bus;
mod envelope;
mod error;
mod keys;
mod membership;
mod membership_store;
mod memory_transport;
mod redis_pool;
mod redis_transport;
mod replay;
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
    redis_pool::{RedisConfig, RedisPool},
    redis_transport::RedisTransport,
    signer::RecordSigner,
    transport::{DEFAULT_SUBSCRIPTION_CAPACITY, RawSubscription, Transport, TransportError},
    unique::unique_token,
};

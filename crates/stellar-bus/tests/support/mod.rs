//! Shared by the contract suites: one cluster of nodes on the memory or the Redis backend.

#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use stellar_bus::{
    MemoryTransport, RawSubscription, RedisConfig, RedisPool, RedisTransport, Transport,
};
use stellar_core::{Api, CancellationToken, Config, NodeId, ServerToken};
use stellar_testkit::RedisServer;

/// How long a test waits for something that should happen.
pub const ARRIVES_WITHIN: Duration = Duration::from_secs(5);
/// How long a test waits to be fairly sure something will not happen.
pub const QUIET_FOR: Duration = Duration::from_millis(200);

/// Makes the nodes of one cluster on one backend.
pub enum Backend {
    Memory(MemoryTransport),
    Redis {
        server: RedisServer,
        cancel: CancellationToken,
    },
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Self::Redis { cancel, .. } = self {
            cancel.cancel();
        }
    }
}

impl Backend {
    pub fn memory() -> Self {
        Self::Memory(MemoryTransport::new())
    }

    pub fn redis() -> Self {
        Self::Redis {
            server: RedisServer::start(),
            cancel: CancellationToken::new(),
        }
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    /// A new node of this cluster (for memory: a clone sharing the same channels).
    pub async fn node(&self) -> Arc<dyn Transport> {
        self.node_with_capacity(stellar_bus::DEFAULT_SUBSCRIPTION_CAPACITY)
            .await
    }

    pub async fn node_with_capacity(&self, capacity: usize) -> Arc<dyn Transport> {
        match self {
            Self::Memory(shared) if capacity == stellar_bus::DEFAULT_SUBSCRIPTION_CAPACITY => {
                Arc::new(shared.clone())
            }
            Self::Memory(_) => panic!("memory nodes of one cluster share one capacity"),
            Self::Redis { server, cancel } => {
                let config = RedisConfig::new(server.url()).with_subscription_capacity(capacity);
                let pool = RedisPool::connect(config)
                    .await
                    .expect("connect to the test redis");
                Arc::new(
                    RedisTransport::connect(pool, cancel.clone())
                        .await
                        .expect("subscriber connects"),
                )
            }
        }
    }

    /// The Redis pool of a fresh connection, for tests that inspect Redis itself.
    pub async fn redis_pool(&self) -> Option<RedisPool> {
        match self {
            Self::Memory(_) => None,
            Self::Redis { server, .. } => Some(
                RedisPool::connect(RedisConfig::new(server.url()))
                    .await
                    .expect("connect"),
            ),
        }
    }
}

/// A node's `Api` with this id and token.
pub fn api(id: &str, token: &str) -> Api {
    Api::new(Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new(token),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    })
}

pub async fn recv(sub: &mut RawSubscription) -> Vec<u8> {
    tokio::time::timeout(ARRIVES_WITHIN, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("no message on {} within {ARRIVES_WITHIN:?}", sub.channel()))
        .expect("transport still open")
}

pub async fn assert_quiet(sub: &mut RawSubscription) {
    if let Ok(message) = tokio::time::timeout(QUIET_FOR, sub.recv()).await {
        panic!("unexpected message on {}: {message:?}", sub.channel());
    }
}

/// Waits until `condition` holds, or panics naming `what`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + ARRIVES_WITHIN;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {ARRIVES_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs each listed case once per backend: `memory::<case>` and `redis::<case>`.
#[macro_export]
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::Backend::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::support::Backend::redis()).await;
                }
            )*
        }
    };
}

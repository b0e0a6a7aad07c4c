//! Shared by the contract suites: one cluster of nodes on the memory or the Redis backend. The
//! generic parts (the backend kind, `eventually`, one test per backend and case) are
//! `stellar-testkit`'s.

#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use stellar_bus::{
    MemoryTransport, RawSubscription, RedisConfig, RedisPool, RedisTransport, Transport,
};
use stellar_core::{Api, CancellationToken, Config, NodeId, ServerToken};
use stellar_testkit::{ARRIVES_WITHIN, BackendKind, QUIET_FOR};

/// Makes the nodes of one cluster on one backend.
pub struct Backend {
    kind: BackendKind,
    /// The channels memory nodes share.
    memory: MemoryTransport,
    /// Stops the Redis subscriber tasks when the case ends.
    cancel: CancellationToken,
}

impl From<BackendKind> for Backend {
    fn from(kind: BackendKind) -> Self {
        Self {
            kind,
            memory: MemoryTransport::new(),
            cancel: CancellationToken::new(),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Backend {
    pub fn is_memory(&self) -> bool {
        self.kind.is_memory()
    }

    /// A new node of this cluster (for memory: a clone sharing the same channels).
    pub async fn node(&self) -> Arc<dyn Transport> {
        self.node_with_capacity(stellar_bus::DEFAULT_SUBSCRIPTION_CAPACITY)
            .await
    }

    pub async fn node_with_capacity(&self, capacity: usize) -> Arc<dyn Transport> {
        let Some(url) = self.kind.url() else {
            assert_eq!(
                capacity,
                stellar_bus::DEFAULT_SUBSCRIPTION_CAPACITY,
                "memory nodes of one cluster share one capacity"
            );
            return Arc::new(self.memory.clone());
        };
        let config = RedisConfig::new(url).with_subscription_capacity(capacity);
        let pool = RedisPool::connect(config)
            .await
            .expect("connect to the test redis");
        Arc::new(
            RedisTransport::connect(pool, self.cancel.clone())
                .await
                .expect("subscriber connects"),
        )
    }

    /// The Redis pool of a fresh connection, for tests that inspect Redis itself.
    pub async fn redis_pool(&self) -> Option<RedisPool> {
        let url = self.kind.url()?;
        Some(
            RedisPool::connect(RedisConfig::new(url))
                .await
                .expect("connect"),
        )
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

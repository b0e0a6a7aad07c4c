//! Contract suites: every case runs on the in-memory backend, on a real Redis and on a real
//! Redis Cluster.
//!
//! A suite writes each case as `async fn case(backend: B)`, where `B` is the suite's own harness
//! (it knows the crate's stores) built from a [`BackendKind`] with `From<BackendKind>`, and lists
//! the cases in [`contract_cases!`](crate::contract_cases). The kind says which backend a case
//! runs on and, for Redis, owns the server or the cluster, so it lives exactly as long as the
//! case.

use std::time::Duration;

use crate::{RedisCluster, RedisServer};

/// How long a test waits for something that should happen.
pub const ARRIVES_WITHIN: Duration = Duration::from_secs(5);
/// How long a test waits to be fairly sure something will not happen.
pub const QUIET_FOR: Duration = Duration::from_millis(200);
/// How often [`eventually`] checks its condition.
const POLL: Duration = Duration::from_millis(10);

/// The backend a contract case runs on.
#[derive(Debug)]
pub enum BackendKind {
    /// The in-memory stores: state shared by nothing outside the test.
    Memory,
    /// A real `redis-server` of the case's own, killed when the case ends.
    Redis(RedisServer),
    /// A real Redis Cluster of the case's own (3 masters), killed when the case ends.
    Cluster(RedisCluster),
}

impl BackendKind {
    /// The in-memory backend.
    pub fn memory() -> Self {
        Self::Memory
    }

    /// A Redis backend on a freshly started server.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`]: when `redis-server` is missing or does not answer.
    pub fn redis() -> Self {
        Self::Redis(RedisServer::start())
    }

    /// A Redis Cluster backend on a freshly started cluster of 3 masters.
    ///
    /// # Panics
    ///
    /// As [`RedisCluster::start`]: when `redis-server` or `redis-cli` is missing or the cluster
    /// does not form.
    pub fn cluster() -> Self {
        Self::Cluster(RedisCluster::start())
    }

    /// Whether this is the in-memory backend.
    pub fn is_memory(&self) -> bool {
        matches!(self, Self::Memory)
    }

    /// The Redis URL (`redis://…`, or `redis+cluster://…` naming the cluster's masters);
    /// `None` for the in-memory backend.
    pub fn url(&self) -> Option<String> {
        match self {
            Self::Memory => None,
            Self::Redis(server) => Some(server.url()),
            Self::Cluster(cluster) => Some(cluster.url()),
        }
    }

    /// The single Redis server; `None` for the in-memory and cluster backends.
    pub fn server(&self) -> Option<&RedisServer> {
        match self {
            Self::Redis(server) => Some(server),
            Self::Memory | Self::Cluster(_) => None,
        }
    }

    /// The single Redis server, to kill or restart it; `None` for the in-memory and cluster
    /// backends.
    pub fn server_mut(&mut self) -> Option<&mut RedisServer> {
        match self {
            Self::Redis(server) => Some(server),
            Self::Memory | Self::Cluster(_) => None,
        }
    }

    /// The Redis Cluster; `None` for the other backends. (Not `cluster()`: that name builds
    /// the backend, as `memory()` and `redis()` do.)
    pub fn redis_cluster(&self) -> Option<&RedisCluster> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            Self::Memory | Self::Redis(_) => None,
        }
    }

    /// The Redis Cluster, to kill, restart or reshard its nodes; `None` for the other backends.
    pub fn redis_cluster_mut(&mut self) -> Option<&mut RedisCluster> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            Self::Memory | Self::Redis(_) => None,
        }
    }

    /// `memory`, `redis` or `cluster`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis(_) => "redis",
            Self::Cluster(_) => "cluster",
        }
    }
}

/// Waits until `condition` holds, checking every 10 ms on Tokio's clock (so a paused clock
/// advances), or panics naming `what` after [`ARRIVES_WITHIN`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    eventually_within(what, ARRIVES_WITHIN, async || condition()).await;
}

/// As [`eventually`], for a condition that has to await (a store read, a request).
pub async fn eventually_async(what: &str, condition: impl AsyncFnMut() -> bool) {
    eventually_within(what, ARRIVES_WITHIN, condition).await;
}

/// As [`eventually_async`], giving up after `within` instead of [`ARRIVES_WITHIN`].
pub async fn eventually_within(
    what: &str,
    within: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Expands each listed case into one `#[tokio::test]` per backend: `memory::<case>`,
/// `redis::<case>` and `cluster::<case>`, each calling `<case>(From::from(kind))` with a fresh
/// [`BackendKind`], so a case takes the suite's harness type (anything `From<BackendKind>`, or
/// the kind itself).
///
/// Every backend runs on a two-thread runtime unless the test attributes are given, e.g. to run
/// the memory cases on a paused clock; the cluster cases take the Redis attribute unless they
/// have their own:
///
/// ```text
/// stellar_testkit::contract_cases! {
///     memory: #[tokio::test(start_paused = true)],
///     redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
///     cases: [values_expire, locks_exclude],
/// }
/// // or with an attribute for the cluster cases:
/// stellar_testkit::contract_cases! {
///     memory: #[tokio::test(start_paused = true)],
///     redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
///     cluster: #[tokio::test(flavor = "multi_thread", worker_threads = 4)],
///     cases: [values_expire, locks_exclude],
/// }
/// // or, with the default runtime for all:
/// stellar_testkit::contract_cases!(values_expire, locks_exclude);
/// ```
#[macro_export]
macro_rules! contract_cases {
    (
        memory: #[$memory:meta],
        redis: #[$redis:meta],
        cluster: #[$cluster:meta],
        cases: [$($case:ident),* $(,)?] $(,)?
    ) => {
        mod memory {
            $(
                #[$memory]
                async fn $case() {
                    super::$case(::core::convert::From::from($crate::BackendKind::memory())).await;
                }
            )*
        }
        mod redis {
            $(
                #[$redis]
                async fn $case() {
                    super::$case(::core::convert::From::from($crate::BackendKind::redis())).await;
                }
            )*
        }
        mod cluster {
            $(
                #[$cluster]
                async fn $case() {
                    super::$case(::core::convert::From::from($crate::BackendKind::cluster())).await;
                }
            )*
        }
    };
    (
        memory: #[$memory:meta],
        redis: #[$redis:meta],
        cases: [$($case:ident),* $(,)?] $(,)?
    ) => {
        $crate::contract_cases! {
            memory: #[$memory],
            redis: #[$redis],
            cluster: #[$redis],
            cases: [$($case),*],
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::contract_cases! {
            memory: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
            redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
            cases: [$($case),*],
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_once_the_condition_holds() {
        let checks = AtomicU32::new(0);
        eventually("the third check", || {
            checks.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_panics_naming_what_did_not_happen() {
        let outcome = tokio::spawn(eventually_within(
            "the impossible",
            Duration::from_millis(50),
            async || false,
        ))
        .await;
        let panic = outcome.expect_err("never holds").into_panic();
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(
            message.contains("the impossible: not within 50ms"),
            "{message}"
        );
    }

    #[test]
    fn the_memory_kind_has_no_server() {
        let kind = BackendKind::memory();
        assert!(kind.is_memory());
        assert_eq!((kind.url(), kind.name()), (None, "memory"));
    }
}

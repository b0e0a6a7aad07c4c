//! `contract_cases!` runs each case once per backend, on the attributes given.

use stellar_testkit::BackendKind;
use tokio::runtime::{Handle, RuntimeFlavor};

/// A suite's own harness, built from the kind as suites build theirs.
struct Harness {
    kind: BackendKind,
}

impl From<BackendKind> for Harness {
    fn from(kind: BackendKind) -> Self {
        Self { kind }
    }
}

async fn each_backend_owns_the_redis_it_names(harness: Harness) {
    let kind = &harness.kind;
    assert_eq!(kind.is_memory(), kind.name() == "memory");
    match (kind.name(), kind.server(), kind.redis_cluster()) {
        ("memory", None, None) => assert_eq!(kind.url(), None),
        ("redis", Some(server), None) => {
            assert!(server.ping(), "the case's redis answers");
            assert_eq!(kind.url(), Some(server.url()));
        }
        ("cluster", None, Some(cluster)) => {
            assert!(
                cluster
                    .nodes()
                    .iter()
                    .all(|node| cluster.server(node.index()).ping()),
                "every node of the case's cluster answers"
            );
            assert_eq!(kind.url(), Some(cluster.url()));
        }
        (name, server, cluster) => panic!("{name} with {server:?} and {cluster:?}"),
    }
}

async fn a_case_may_take_the_kind_itself(kind: BackendKind) {
    assert_eq!(kind.url().is_some(), !kind.is_memory());
}

async fn the_memory_clock_is_paused_when_asked(kind: BackendKind) {
    let started = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    if kind.is_memory() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }
}

/// The runtime flavor each backend's attribute below asks for.
fn assert_flavor(
    kind: &BackendKind,
    memory: RuntimeFlavor,
    redis: RuntimeFlavor,
    cluster: RuntimeFlavor,
) {
    let expected = match kind.name() {
        "memory" => memory,
        "redis" => redis,
        _ => cluster,
    };
    assert_eq!(
        Handle::current().runtime_flavor(),
        expected,
        "{}",
        kind.name()
    );
}

stellar_testkit::contract_cases!(
    each_backend_owns_the_redis_it_names,
    a_case_may_take_the_kind_itself
);

mod paused {
    use super::*;

    async fn the_clock_case(kind: BackendKind) {
        the_memory_clock_is_paused_when_asked(kind).await;
    }

    /// Without a `cluster:` attribute, the cluster cases take the Redis one.
    async fn the_cluster_runs_like_redis(kind: BackendKind) {
        use RuntimeFlavor::{CurrentThread, MultiThread};
        assert_flavor(&kind, CurrentThread, MultiThread, MultiThread);
    }

    stellar_testkit::contract_cases! {
        memory: #[tokio::test(start_paused = true)],
        redis: #[tokio::test(start_paused = true)],
        cases: [the_clock_case],
    }

    mod like_redis {
        use super::*;

        stellar_testkit::contract_cases! {
            memory: #[tokio::test(start_paused = true)],
            redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
            cases: [the_cluster_runs_like_redis],
        }
    }
}

mod own_cluster_attribute {
    use super::*;

    async fn each_backend_runs_on_its_own_attribute(kind: BackendKind) {
        use RuntimeFlavor::{CurrentThread, MultiThread};
        assert_flavor(&kind, CurrentThread, MultiThread, CurrentThread);
    }

    stellar_testkit::contract_cases! {
        memory: #[tokio::test(start_paused = true)],
        redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
        cluster: #[tokio::test(flavor = "current_thread")],
        cases: [each_backend_runs_on_its_own_attribute],
    }
}

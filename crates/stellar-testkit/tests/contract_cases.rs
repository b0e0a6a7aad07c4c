//! `contract_cases!` runs each case once per backend, on the attributes given.

use stellar_testkit::BackendKind;

/// A suite's own harness, built from the kind as suites build theirs.
struct Harness {
    kind: BackendKind,
}

impl From<BackendKind> for Harness {
    fn from(kind: BackendKind) -> Self {
        Self { kind }
    }
}

async fn only_the_redis_backend_has_a_live_server(harness: Harness) {
    let kind = &harness.kind;
    assert_eq!(kind.is_memory(), kind.name() == "memory");
    match kind.server() {
        Some(server) => assert!(server.ping(), "the case's redis answers"),
        None => assert_eq!(kind.url(), None),
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

stellar_testkit::contract_cases!(
    only_the_redis_backend_has_a_live_server,
    a_case_may_take_the_kind_itself
);

mod paused {
    use super::*;

    async fn the_clock_case(kind: BackendKind) {
        the_memory_clock_is_paused_when_asked(kind).await;
    }

    stellar_testkit::contract_cases! {
        memory: #[tokio::test(start_paused = true)],
        redis: #[tokio::test(start_paused = true)],
        cases: [the_clock_case],
    }
}

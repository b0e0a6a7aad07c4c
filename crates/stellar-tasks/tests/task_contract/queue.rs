//! TaskQueue: enqueue, claim, renew, complete, fail, bury, release.

use crate::support::*;

async fn a_batch_claim_takes_queues_in_priority_order_up_to_its_size(backend: Backend) {
    let store = backend.store().await;
    for (n, queue) in ["low", "high", "low", "high", "high"].iter().enumerate() {
        let task = NewTask {
            id: format!("b{n}"),
            name: "work".into(),
            queue: (*queue).into(),
            args: "null".into(),
            max_attempts: 1,
            due_at_ms: None,
            slot: None,
            signature: String::new(),
            replace: false,
            trace: None,
        };
        store.enqueue(&task).await.expect("enqueue");
    }
    let queues = vec!["high".to_owned(), "low".to_owned()];
    let node = NodeId::new("n").expect("id");
    let batch = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 4))
        .await
        .expect("claim");
    let ids: Vec<&str> = batch.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["b1", "b3", "b4", "b0"]);
    let rest = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 4))
        .await
        .expect("claim");
    assert_eq!(
        rest.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["b2"]
    );
    let tokens: std::collections::HashSet<(String, u64)> = batch
        .iter()
        .chain(&rest)
        .map(|c| (c.id.clone(), c.token))
        .collect();
    assert_eq!(tokens.len(), 5);
    assert_eq!(store.stats().await.expect("stats").in_flight, 5);
}

async fn batch_completions_accept_current_claims_and_reject_stale_ones(backend: Backend) {
    let store = backend.store().await;
    for n in 0..3 {
        let task = NewTask {
            id: format!("c{n}"),
            name: "work".into(),
            queue: "default".into(),
            args: "null".into(),
            max_attempts: 2,
            due_at_ms: None,
            slot: None,
            signature: String::new(),
            replace: false,
            trace: None,
        };
        store.enqueue(&task).await.expect("enqueue");
    }
    let queues = vec!["default".to_owned()];
    let node = NodeId::new("n").expect("id");
    let mut claims = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 3))
        .await
        .expect("claim");
    assert_eq!(claims.len(), 3);
    let mut stale = claims[1].clone();
    stale.token += 100;
    claims[1] = stale;
    let accepted = store
        .complete_many(&claims, Duration::from_secs(60))
        .await
        .expect("complete many");
    assert_eq!(accepted, [true, false, true]);
    assert_eq!(store.stats().await.expect("stats").processed, 2);
}

/// The chaos-run reproduction: a re-enqueued id must never hand out a claim token it used before,
/// or a stale worker's late answer completes the new run.
async fn claim_tokens_never_repeat_when_an_id_is_enqueued_again(backend: Backend) {
    let store = backend.store().await;
    let queues = vec!["default".to_owned()];
    let (a, b) = (NodeId::new("a").expect("id"), NodeId::new("b").expect("id"));
    store
        .enqueue(&plain_task("x", "work", 1))
        .await
        .expect("enqueue");
    let stale = store
        .claim(&request(&queues, &a, Duration::from_millis(100), 1))
        .await
        .expect("claim")
        .pop()
        .expect("a task");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let reaped = store.reap(100).await.expect("reap");
    assert_eq!(
        reaped.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [ReapOutcome::Failed],
        "its only attempt was lost: to the failed set"
    );
    let again = NewTask {
        replace: true,
        ..plain_task("x", "work", 1)
    };
    assert_eq!(
        store.enqueue(&again).await.expect("enqueue"),
        Enqueued::Added
    );
    let fresh = store
        .claim(&request(&queues, &b, Duration::from_secs(30), 1))
        .await
        .expect("claim")
        .pop()
        .expect("the new run");
    assert_ne!(fresh.token, stale.token, "a claim token was reused");
    assert!(
        !store
            .complete(&stale, Duration::from_secs(60))
            .await
            .expect("complete"),
        "the stale worker completed the new run"
    );
    assert!(
        store
            .renew(&fresh, Duration::from_secs(30))
            .await
            .expect("renew")
    );
    assert!(
        store
            .complete(&fresh, Duration::from_secs(60))
            .await
            .expect("complete")
    );
    assert_eq!(store.stats().await.expect("stats").processed, 1);
}

async fn an_id_is_deduplicated_while_its_record_is_kept(backend: Backend) {
    let store = backend.store().await;
    let queues = vec!["default".to_owned()];
    let node = NodeId::new("n").expect("id");
    store
        .enqueue(&plain_task("done", "work", 1))
        .await
        .expect("enqueue");
    store
        .enqueue(&plain_task("dead", "work", 1))
        .await
        .expect("enqueue");
    let claims = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 2))
        .await
        .expect("claim");
    assert_eq!(claims.len(), 2);
    for claimed in &claims {
        if claimed.id == "done" {
            assert!(
                store
                    .complete(claimed, Duration::from_secs(60))
                    .await
                    .expect("complete")
            );
        } else {
            let outcome = store
                .fail(claimed, "boom", Duration::ZERO)
                .await
                .expect("fail");
            assert_eq!(outcome, FailOutcome::Dead);
        }
    }
    for (id, state) in [("done", TaskState::Completed), ("dead", TaskState::Failed)] {
        assert_eq!(
            store
                .enqueue(&plain_task(id, "work", 1))
                .await
                .expect("enqueue"),
            Enqueued::Exists(state),
            "{id}"
        );
    }
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (stats.queues["default"].depth, stats.failed_now),
        (0, 1),
        "{stats:?}"
    );
    // Explicitly running them again: a fresh record, and the failed set forgets the old one.
    for id in ["done", "dead"] {
        let replace = NewTask {
            replace: true,
            ..plain_task(id, "work", 1)
        };
        assert_eq!(
            store.enqueue(&replace).await.expect("replace"),
            Enqueued::Added
        );
    }
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (stats.queues["default"].depth, stats.failed_now),
        (2, 0),
        "{stats:?}"
    );
    // A pending task is never replaced.
    let replace = NewTask {
        replace: true,
        ..plain_task("done", "work", 1)
    };
    assert_eq!(
        store.enqueue(&replace).await.expect("replace"),
        Enqueued::Exists(TaskState::Queued)
    );
    let record = store.show("dead").await.expect("show").expect("record");
    assert_eq!(
        (record.state, record.attempts, record.error),
        (TaskState::Queued, 0, None)
    );
}

async fn a_node_parks_tasks_it_cannot_run_without_spending_attempts(backend: Backend) {
    let store = backend.store().await;
    let queues = vec!["default".to_owned()];
    store
        .enqueue(&plain_task("new-1", "brand-new", 5))
        .await
        .expect("enqueue");
    store
        .enqueue(&plain_task("old-1", "work", 5))
        .await
        .expect("enqueue");
    let old_node = NodeId::new("old").expect("id");
    // The old node takes its own task and sets the unknown one aside, many times over.
    for _ in 0..5 {
        let claimed = store
            .claim(&request(&queues, &old_node, Duration::from_secs(30), 8))
            .await
            .expect("claim");
        assert!(claimed.iter().all(|c| c.name == "work"), "{claimed:?}");
    }
    let parked = store.show("new-1").await.expect("show").expect("record");
    assert_eq!((parked.state, parked.attempts), (TaskState::Queued, 0));
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.parked.get("default brand-new"), Some(&1), "{stats:?}");
    assert_eq!(stats.failed + stats.failed_now, 0);
    let upgraded = ClaimRequest {
        names: vec!["brand-new".to_owned(), "work".to_owned()].into(),
        ..request(
            &queues,
            &NodeId::new("new").expect("id"),
            Duration::from_secs(30),
            8,
        )
    };
    let claimed = store.claim(&upgraded).await.expect("claim");
    assert_eq!(
        claimed
            .iter()
            .map(|c| (c.id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("new-1", 1)]
    );
    assert!(store.stats().await.expect("stats").parked.is_empty());
}

async fn asking_again_after_a_lost_claim_reply_returns_the_same_tasks(backend: Backend) {
    let store = backend.store().await;
    let queues = vec!["default".to_owned()];
    let node = NodeId::new("n").expect("id");
    for n in 0..3 {
        store
            .enqueue(&plain_task(&format!("r{n}"), "work", 1))
            .await
            .expect("enqueue");
    }
    let ask = request(&queues, &node, Duration::from_secs(30), 2);
    let first = store.claim(&ask).await.expect("claim");
    assert_eq!(first.len(), 2);
    // The reply was lost: the same request gets the same tasks and tokens, nothing more.
    assert_eq!(store.claim(&ask).await.expect("re-ask"), first);
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.in_flight, stats.queues["default"].depth), (2, 1));
    let other = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 8))
        .await
        .expect("claim");
    assert_eq!(other.len(), 1);
    // A completion repeated after a lost reply is accepted once and counted once.
    assert_eq!(
        store
            .complete_many(&first, Duration::from_secs(60))
            .await
            .expect("complete"),
        [true, true]
    );
    assert_eq!(
        store
            .complete_many(&first, Duration::from_secs(60))
            .await
            .expect("again"),
        [true, true]
    );
    assert_eq!(store.stats().await.expect("stats").processed, 2);
}

async fn a_batch_is_added_in_one_step_with_an_outcome_per_task(backend: Backend) {
    let store = backend.store().await;
    store
        .enqueue(&plain_task("old", "work", 1))
        .await
        .expect("enqueue");
    let later = NewTask {
        due_at_ms: Some(u64::MAX / 2),
        ..plain_task("later", "work", 1)
    };
    let batch = [
        plain_task("a", "work", 1),
        plain_task("old", "work", 1),
        later,
        NewTask {
            queue: "other".into(),
            ..plain_task("b", "work", 1)
        },
        plain_task("a", "work", 1),
    ];
    assert_eq!(
        store.enqueue_many(&batch).await.expect("enqueue many"),
        [
            Enqueued::Added,
            Enqueued::Exists(TaskState::Queued),
            Enqueued::Added,
            Enqueued::Added,
            Enqueued::Exists(TaskState::Queued),
        ]
    );
    assert_eq!(store.enqueue_many(&[]).await.expect("empty"), []);
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (
            stats.queues["default"].depth,
            stats.queues["other"].depth,
            stats.delayed
        ),
        (2, 1, 1),
        "{stats:?}"
    );
    let node = NodeId::new("n").expect("id");
    let claimed = store
        .claim(&request(
            &["default".to_owned()],
            &node,
            Duration::from_secs(30),
            8,
        ))
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["old", "a"],
        "oldest first"
    );
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

async fn a_retry_delay_too_long_for_the_clock_is_taken_as_thirty_days(backend: Backend) {
    let store = backend.store().await;
    store
        .enqueue(&plain_task("f1", "work", 3))
        .await
        .expect("enqueue");
    let node = NodeId::new("n").expect("id");
    let claimed = store
        .claim(&request(
            &["default".to_owned()],
            &node,
            Duration::from_secs(30),
            1,
        ))
        .await
        .expect("claim")
        .pop()
        .expect("a task");
    let before = wall_ms();
    assert_eq!(
        store
            .fail(&claimed, "come back never", Duration::MAX)
            .await
            .expect("fail"),
        FailOutcome::Retrying
    );
    let record = store.show("f1").await.expect("show").expect("not lost");
    assert_eq!(record.state, TaskState::Delayed);
    let thirty_days = stellar_tasks::MAX_RETRY_DELAY.as_millis() as u64;
    let due = record.due_at_ms.expect("a readable due time");
    assert!(
        due >= before + thirty_days - 1_000 && due <= wall_ms() + thirty_days + 1_000,
        "due at {due}, failed at {before}"
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.delayed, stats.in_flight), (1, 0));
    assert_eq!(store.promote(10).await.expect("promote"), 0, "due at once");
}

async fn trace_context_travels_from_the_enqueue_to_the_claim_and_the_record(backend: Backend) {
    let store = backend.store().await;
    let trace =
        stellar_core::TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let traced = NewTask {
        trace,
        ..plain_task("traced", "work", 1)
    };
    store.enqueue(&traced).await.expect("enqueue");
    store
        .enqueue(&plain_task("untraced", "work", 1))
        .await
        .expect("enqueue");
    let queues = vec!["default".to_owned()];
    let node = NodeId::new("n").expect("id");
    let ask = request(&queues, &node, Duration::from_secs(30), 2);
    let claimed = store.claim(&ask).await.expect("claim");
    let traces: Vec<(&str, Option<stellar_core::TraceParent>)> =
        claimed.iter().map(|c| (c.id.as_str(), c.trace)).collect();
    assert_eq!(traces, [("traced", trace), ("untraced", None)]);
    let again = store.claim(&ask).await.expect("ask again");
    let seen = |batch: &[Claimed]| -> Vec<(String, u64, Option<stellar_core::TraceParent>)> {
        batch
            .iter()
            .map(|c| (c.id.clone(), c.token, c.trace))
            .collect()
    };
    assert_eq!(
        seen(&again),
        seen(&claimed),
        "a re-ask rebuilds the trace context too"
    );
    let record = store.show("traced").await.expect("show").expect("record");
    assert_eq!(
        record.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let record = store.show("untraced").await.expect("show").expect("record");
    assert_eq!(record.trace_id, None);
}

contract!(
    trace_context_travels_from_the_enqueue_to_the_claim_and_the_record,
    a_retry_delay_too_long_for_the_clock_is_taken_as_thirty_days,
    a_batch_is_added_in_one_step_with_an_outcome_per_task,
    a_batch_claim_takes_queues_in_priority_order_up_to_its_size,
    batch_completions_accept_current_claims_and_reject_stale_ones,
    claim_tokens_never_repeat_when_an_id_is_enqueued_again,
    an_id_is_deduplicated_while_its_record_is_kept,
    a_node_parks_tasks_it_cannot_run_without_spending_attempts,
    asking_again_after_a_lost_claim_reply_returns_the_same_tasks,
);

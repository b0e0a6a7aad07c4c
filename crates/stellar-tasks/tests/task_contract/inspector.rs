//! TaskInspector: records, lists, statistics and deletion.

use crate::support::*;

async fn deleting_a_large_queue_works_in_bounded_steps(backend: Backend) {
    let store = backend.store().await;
    for n in 0..2500 {
        store
            .enqueue(&plain_task(&format!("q{n}"), "work", 1))
            .await
            .expect("enqueue");
    }
    assert_eq!(store.delete("q7").await.expect("delete"), Some(true));
    assert_eq!(
        store.delete_queue("default").await.expect("delete queue"),
        2499
    );
    let stats = store.stats().await.expect("stats");
    assert!(!stats.queues.contains_key("default"), "{stats:?}");
    assert_eq!(store.show("q8").await.expect("show"), None);
}

/// Review finding: an id deleted from queue A and enqueued again in queue B leaves a stale copy in
/// A's list; neither A's deletion nor A's workers may touch B's task.
async fn a_stale_id_in_another_queue_never_touches_the_live_task(backend: Backend) {
    let store = backend.store().await;
    let in_queue = |queue: &str| NewTask {
        queue: queue.into(),
        ..plain_task("x", "work", 1)
    };
    store.enqueue(&in_queue("a")).await.expect("enqueue");
    assert_eq!(store.delete("x").await.expect("delete"), Some(true));
    assert_eq!(
        store.enqueue(&in_queue("b")).await.expect("enqueue"),
        Enqueued::Added
    );
    let node = NodeId::new("n").expect("id");
    let only_a = request(&["a".to_owned()], &node, Duration::from_secs(30), 8);
    assert!(
        store.claim(&only_a).await.expect("claim").is_empty(),
        "a worker of queue a took b's task"
    );
    store.delete_queue("a").await.expect("delete queue");
    let record = store
        .show("x")
        .await
        .expect("show")
        .expect("the task in b survives");
    assert_eq!(
        (record.queue.as_str(), record.state),
        ("b", TaskState::Queued)
    );
    let only_b = request(&["b".to_owned()], &node, Duration::from_secs(30), 8);
    let claimed = store.claim(&only_b).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["x"]
    );
}

/// The structured statistics: counters per task name and per node, and each queue's depth and
/// the age of the task next to run; serialized as `docs/tasks.md` documents.
async fn stats_count_per_task_and_node_and_age_each_queue(backend: Backend) {
    let store = backend.store().await;
    let node = NodeId::new("n1").expect("id");
    for id in ["a", "b", "c"] {
        store
            .enqueue(&plain_task(id, "work", 1))
            .await
            .expect("enqueue");
    }
    let empty = store.stats().await.expect("stats");
    assert_eq!(empty.queues["default"].depth, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claims = store
        .claim(&request(
            &["default".to_owned()],
            &node,
            Duration::from_secs(30),
            2,
        ))
        .await
        .expect("claim");
    assert!(
        store
            .complete(&claims[0], Duration::from_secs(60))
            .await
            .expect("complete")
    );
    let failed = store
        .fail(&claims[1], "boom", Duration::ZERO)
        .await
        .expect("fail");
    assert_eq!(failed, FailOutcome::Dead);
    let stats = store.stats().await.expect("stats");
    let once = |processed, failed| stellar_tasks::Counters {
        processed,
        failed,
        retried: 0,
    };
    assert_eq!(stats.tasks["work"], once(1, 1), "{stats:?}");
    assert_eq!(stats.nodes["n1"], once(1, 1), "{stats:?}");
    assert_eq!((stats.processed, stats.failed, stats.failed_now), (1, 1, 1));
    let backlog = stats.queues["default"];
    assert_eq!(backlog.depth, 1);
    assert!(
        (300..60_000).contains(&backlog.oldest_ms),
        "the waiting task is {} ms old",
        backlog.oldest_ms
    );
    let json = serde_json::to_value(&stats).expect("json");
    assert_eq!(json["tasks"]["work"]["processed"], 1);
    assert_eq!(json["nodes"]["n1"]["failed"], 1);
    assert_eq!(json["queues"]["default"]["depth"], 1);
    store.delete_queue("default").await.expect("delete queue");
    let drained = store.stats().await.expect("stats");
    assert_eq!(
        drained.queues.get("default").map_or(0, |q| q.oldest_ms),
        0,
        "an empty queue has no age"
    );
}

/// A page of the failed set, latest failure first, with the size of the whole set.
async fn the_failed_set_reads_one_page_latest_first(backend: Backend) {
    let store = backend.store().await;
    let node = NodeId::new("n1").expect("id");
    for id in ["f1", "f2", "f3", "f4", "f5"] {
        store
            .enqueue(&plain_task(id, "work", 1))
            .await
            .expect("enqueue");
        let claims = store
            .claim(&request(
                &["default".to_owned()],
                &node,
                Duration::from_secs(30),
                1,
            ))
            .await
            .expect("claim");
        let outcome = store
            .fail(&claims[0], "boom", Duration::ZERO)
            .await
            .expect("fail");
        assert_eq!(outcome, FailOutcome::Dead);
        // Failure order by time, on a clock that may be paused.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = |records: Vec<stellar_tasks::TaskRecord>| {
        records.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let (first, total) = store.failed_page(0, 2).await.expect("page");
    assert_eq!(
        (ids(first), total),
        (vec!["f5".to_owned(), "f4".to_owned()], 5)
    );
    let (last, total) = store.failed_page(4, 2).await.expect("page");
    assert_eq!((ids(last), total), (vec!["f1".to_owned()], 5));
    let (past, total) = store.failed_page(9, 2).await.expect("page");
    assert_eq!((past.len(), total), (0, 5));
}

/// Run now: a delayed task, or a retry waiting for its backoff, moves to its queue at once, its
/// record, attempts and signature kept; anything else is left alone.
async fn a_delayed_task_or_a_waiting_retry_runs_now(backend: Backend) {
    let store = backend.store().await;
    let node = NodeId::new("n1").expect("id");
    let queues = vec!["default".to_owned()];
    let later = NewTask {
        due_at_ms: Some(stellar_core::time::now_ms() + 3_600_000),
        signature: "sig-later".into(),
        ..plain_task("later", "work", 3)
    };
    store.enqueue(&later).await.expect("enqueue");
    let lease = Duration::from_secs(30);
    let claim = async || store.claim(&request(&queues, &node, lease, 8)).await;
    assert!(claim().await.expect("claim").is_empty(), "not due yet");
    assert!(store.run_now("later").await.expect("run now"));
    assert!(
        !store.run_now("later").await.expect("run now"),
        "not delayed any more"
    );
    let record = store.show("later").await.expect("show").expect("record");
    assert_eq!((record.state, record.attempts), (TaskState::Queued, 0));
    assert_eq!(store.stats().await.expect("stats").delayed, 0);
    let claimed = claim().await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (
            claimed[0].id.as_str(),
            claimed[0].signature.as_str(),
            claimed[0].attempt
        ),
        ("later", "sig-later", 1)
    );
    // A retry waiting an hour for its backoff runs now as its second attempt.
    let outcome = store
        .fail(&claimed[0], "boom", Duration::from_secs(3600))
        .await
        .expect("fail");
    assert_eq!(outcome, FailOutcome::Retrying);
    assert!(store.run_now("later").await.expect("run now"));
    let again = claim().await.expect("claim");
    assert_eq!((again.len(), again[0].attempt), (1, 2));
    assert!(!store.run_now("absent").await.expect("run now"));
}

/// Run now puts the task at the front of its queue: with a backlog waiting, it is claimed first.
async fn a_task_run_now_is_claimed_before_the_backlog(backend: Backend) {
    let store = backend.store().await;
    let node = NodeId::new("n1").expect("id");
    let queues = vec!["default".to_owned()];
    for id in ["b1", "b2", "b3"] {
        store
            .enqueue(&plain_task(id, "work", 1))
            .await
            .expect("enqueue");
    }
    let later = NewTask {
        due_at_ms: Some(stellar_core::time::now_ms() + 3_600_000),
        ..plain_task("urgent", "work", 1)
    };
    store.enqueue(&later).await.expect("enqueue");
    assert!(store.run_now("urgent").await.expect("run now"));
    let lease = Duration::from_secs(30);
    let next = store
        .queued("default", 0, 0)
        .await
        .expect("queued")
        .into_iter()
        .map(|r| r.id)
        .collect::<Vec<_>>();
    assert_eq!(next, ["urgent"], "next to run");
    let first = store
        .claim(&request(&queues, &node, lease, 1))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, "urgent", "run now jumps the backlog");
    let rest = store
        .claim(&request(&queues, &node, lease, 8))
        .await
        .expect("claim");
    let rest: Vec<&str> = rest.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(rest, ["b1", "b2", "b3"], "the backlog keeps its order");
}

/// Deleting "only if still delayed" is one step: a delayed task goes, a task that moved on (run
/// now, claimed, failed) or is absent stays as it is.
async fn a_task_is_deleted_only_while_it_is_still_delayed(backend: Backend) {
    let store = backend.store().await;
    let node = NodeId::new("n1").expect("id");
    let queues = vec!["default".to_owned()];
    let delayed = |id: &str| NewTask {
        due_at_ms: Some(stellar_core::time::now_ms() + 3_600_000),
        ..plain_task(id, "work", 1)
    };
    for id in ["d1", "d2"] {
        store.enqueue(&delayed(id)).await.expect("enqueue");
    }
    assert!(
        store
            .delete_if("d1", TaskState::Delayed)
            .await
            .expect("delete")
    );
    assert!(store.show("d1").await.expect("show").is_none());
    assert_eq!(store.stats().await.expect("stats").delayed, 1);
    assert!(
        !store
            .delete_if("d1", TaskState::Delayed)
            .await
            .expect("delete"),
        "absent"
    );

    // Promoted meanwhile (run now): queued, so it stays, and is claimed as usual.
    assert!(store.run_now("d2").await.expect("run now"));
    assert!(
        !store
            .delete_if("d2", TaskState::Delayed)
            .await
            .expect("delete")
    );
    assert_eq!(
        store.show("d2").await.expect("show").map(|r| r.state),
        Some(TaskState::Queued)
    );
    let lease = Duration::from_secs(30);
    let claimed = store
        .claim(&request(&queues, &node, lease, 1))
        .await
        .expect("claim");
    assert_eq!(claimed[0].id, "d2");
    // Running: never deleted, whatever state is asked for.
    for state in [TaskState::Delayed, TaskState::Running] {
        assert!(!store.delete_if("d2", state).await.expect("delete"));
    }
    // Failed: not delayed, so it stays in the failed set.
    store
        .fail(&claimed[0], "boom", Duration::ZERO)
        .await
        .expect("fail");
    assert!(
        !store
            .delete_if("d2", TaskState::Delayed)
            .await
            .expect("delete")
    );
    assert_eq!(store.stats().await.expect("stats").failed_now, 1);
    assert!(
        store
            .delete_if("d2", TaskState::Failed)
            .await
            .expect("delete")
    );
    assert_eq!(store.stats().await.expect("stats").failed_now, 0);
}

/// A page of the delayed set: the soonest first, at most `limit`, with the size of the whole set.
async fn the_delayed_set_reads_one_page_soonest_first(backend: Backend) {
    let store = backend.store().await;
    let now = stellar_core::time::now_ms();
    // Enqueued latest first, so the page's order is the due times', not the enqueue order.
    for (n, id) in ["e5", "e4", "e3", "e2", "e1"].into_iter().enumerate() {
        let task = NewTask {
            due_at_ms: Some(now + 3_600_000 - 60_000 * n as u64),
            ..plain_task(id, "work", 1)
        };
        store.enqueue(&task).await.expect("enqueue");
    }
    let ids = |records: Vec<stellar_tasks::TaskRecord>| {
        records.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let (first, total) = store.delayed_page(2).await.expect("page");
    assert_eq!(
        (ids(first), total),
        (vec!["e1".to_owned(), "e2".to_owned()], 5)
    );
    let (all, total) = store.delayed_page(50).await.expect("page");
    assert_eq!(
        (ids(all), total),
        (
            vec!["e1", "e2", "e3", "e4", "e5"]
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            5
        )
    );
    let (none, total) = store.delayed_page(0).await.expect("page");
    assert_eq!((none.len(), total), (0, 5));
}

contract!(
    the_delayed_set_reads_one_page_soonest_first,
    a_task_is_deleted_only_while_it_is_still_delayed,
    a_task_run_now_is_claimed_before_the_backlog,
    a_delayed_task_or_a_waiting_retry_runs_now,
    the_failed_set_reads_one_page_latest_first,
    stats_count_per_task_and_node_and_age_each_queue,
    deleting_a_large_queue_works_in_bounded_steps,
    a_stale_id_in_another_queue_never_touches_the_live_task,
);

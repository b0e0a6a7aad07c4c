//! TaskMaintenance: reaping expired leases and promoting due tasks.

use crate::support::*;

async fn a_lost_lease_is_reaped_and_its_late_answer_rejected(backend: Backend) {
    let store = backend.store().await;
    let task = NewTask {
        id: "t1".into(),
        name: "work".into(),
        queue: "default".into(),
        args: "null".into(),
        max_attempts: 3,
        due_at_ms: None,
        slot: None,
        signature: String::new(),
        replace: false,
        trace: None,
    };
    store.enqueue(&task).await.expect("enqueue");
    let node = NodeId::new("zombie").expect("id");
    let queues = vec!["default".to_owned()];
    let first: Claimed = store
        .claim(&request(&queues, &node, Duration::from_millis(100), 1))
        .await
        .expect("claim")
        .pop()
        .expect("a task");
    assert_eq!(first.attempt, 1);
    assert!(
        store
            .claim(&request(&queues, &node, Duration::from_secs(30), 8))
            .await
            .expect("claim")
            .is_empty(),
        "claimed twice"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        store.reap(100).await.expect("reap"),
        vec![Reaped {
            queue: "default".into(),
            name: "work".into(),
            outcome: ReapOutcome::Requeued,
        }],
        "the reaper says which task it took back and where it went"
    );
    assert!(store.reap(100).await.expect("reap").is_empty());
    let second = store
        .claim(&request(
            &queues,
            &NodeId::new("healthy").expect("id"),
            Duration::from_secs(30),
            8,
        ))
        .await
        .expect("claim")
        .pop()
        .expect("requeued");
    assert_eq!((second.attempt, second.id.as_str()), (2, "t1"));
    assert!(
        !store
            .complete(&first, Duration::from_secs(60))
            .await
            .expect("complete"),
        "the zombie's answer was accepted"
    );
    assert_eq!(
        store
            .fail(&first, "late", Duration::ZERO)
            .await
            .expect("fail"),
        FailOutcome::Rejected
    );
    assert!(
        !store
            .renew(&first, Duration::from_secs(30))
            .await
            .expect("renew")
    );
    assert!(
        store
            .complete(&second, Duration::from_secs(60))
            .await
            .expect("complete")
    );
    assert!(
        store
            .complete(&second, Duration::from_secs(60))
            .await
            .expect("complete"),
        "a repeated completion by the same claim (a lost reply) is accepted again"
    );
    assert_eq!(
        store.stats().await.expect("stats").processed,
        1,
        "completed twice"
    );
}

async fn concurrent_promoters_never_duplicate_a_delayed_task(backend: Backend) {
    let stores = [
        backend.store().await,
        backend.store().await,
        backend.store().await,
    ];
    for n in 0..50 {
        let due = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
            + 100;
        let task = NewTask {
            id: format!("d{n}"),
            name: "work".into(),
            queue: "default".into(),
            args: "null".into(),
            max_attempts: 1,
            due_at_ms: Some(due),
            slot: None,
            signature: String::new(),
            replace: false,
            trace: None,
        };
        stores[0].enqueue(&task).await.expect("enqueue");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let promoters: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = store.clone();
            tokio::spawn(async move { store.promote(10).await })
        })
        .collect();
    for promoter in promoters {
        promoter.await.expect("joined").expect("promote");
    }
    while stores[1].promote(100).await.expect("promote") > 0 {}
    let stats = stores[2].stats().await.expect("stats");
    assert_eq!(
        (stats.queues["default"].depth, stats.delayed),
        (50, 0),
        "{stats:?}"
    );
}

async fn a_new_attempt_starts_without_the_last_ones_progress(backend: Backend) {
    let store = backend.store().await;
    store
        .enqueue(&plain_task("p1", "work", 3))
        .await
        .expect("enqueue");
    let queues = vec!["default".to_owned()];
    let node = NodeId::new("n").expect("id");
    let progress = async || {
        store
            .show("p1")
            .await
            .expect("show")
            .expect("record")
            .progress
    };
    let first = store
        .claim(&request(&queues, &node, Duration::from_millis(100), 1))
        .await
        .expect("claim")
        .pop()
        .expect("a task");
    assert!(store.progress(&first, "40").await.expect("progress"));
    assert_eq!(progress().await, Some(serde_json::json!(40)));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.reap(100).await.expect("reap").len(), 1);
    assert_eq!(
        progress().await,
        Some(serde_json::json!(40)),
        "a waiting task still shows how far its last attempt got"
    );
    let second = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 1))
        .await
        .expect("claim")
        .pop()
        .expect("reaped back to its queue");
    assert_eq!(second.attempt, 2);
    assert_eq!(
        progress().await,
        None,
        "a reaped attempt's progress was shown"
    );
    assert!(
        store
            .progress(&second, r#"{"step": 2}"#)
            .await
            .expect("progress")
    );
    assert_eq!(
        store
            .fail(&second, "busy", Duration::ZERO)
            .await
            .expect("fail"),
        FailOutcome::Retrying
    );
    while store.promote(100).await.expect("promote") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = store
        .claim(&request(&queues, &node, Duration::from_secs(30), 1))
        .await
        .expect("claim")
        .pop()
        .expect("retried");
    assert_eq!(third.attempt, 3);
    assert_eq!(
        progress().await,
        None,
        "a failed attempt's progress was shown"
    );
}

async fn every_answer_of_a_stale_claim_is_rejected(backend: Backend) {
    let store = backend.store().await;
    store
        .enqueue(&plain_task("s1", "work", 3))
        .await
        .expect("enqueue");
    let queues = vec!["default".to_owned()];
    let zombie = NodeId::new("zombie").expect("id");
    let stale = store
        .claim(&request(&queues, &zombie, Duration::from_millis(100), 1))
        .await
        .expect("claim")
        .pop()
        .expect("a task");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.reap(100).await.expect("reap").len(), 1);
    // Reaped, not claimed again yet: the old claim is already stale.
    assert!(
        !store.progress(&stale, "1").await.expect("progress"),
        "progress by a reaped claim was accepted"
    );
    assert!(
        !store.release(&stale).await.expect("release"),
        "a reaped claim handed the task back"
    );
    let healthy = NodeId::new("healthy").expect("id");
    let current = store
        .claim(&request(&queues, &healthy, Duration::from_secs(30), 1))
        .await
        .expect("claim")
        .pop()
        .expect("requeued");
    assert!(store.progress(&current, "50").await.expect("progress"));
    // Claimed again by another node: every answer of the old claim is refused, and changes nothing.
    assert!(
        !store.progress(&stale, "99").await.expect("progress"),
        "progress by a stale claim was accepted"
    );
    assert!(
        !store.bury(&stale, "stale").await.expect("bury"),
        "a stale claim buried the task"
    );
    assert!(
        !store.release(&stale).await.expect("release"),
        "a stale claim handed the task back"
    );
    let record = store.show("s1").await.expect("show").expect("record");
    assert_eq!(
        (
            record.state,
            record.attempts,
            record.node.as_deref(),
            record.progress
        ),
        (
            TaskState::Running,
            2,
            Some("healthy"),
            Some(serde_json::json!(50))
        ),
        "the current attempt was disturbed"
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (
            stats.failed_now,
            stats.in_flight,
            stats.queues["default"].depth
        ),
        (0, 1, 0)
    );
    assert!(
        store
            .complete(&current, Duration::from_secs(60))
            .await
            .expect("complete")
    );
}

contract!(
    a_lost_lease_is_reaped_and_its_late_answer_rejected,
    a_new_attempt_starts_without_the_last_ones_progress,
    concurrent_promoters_never_duplicate_a_delayed_task,
    every_answer_of_a_stale_claim_is_rejected,
);

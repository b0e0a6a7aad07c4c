//! Schedules: recurring schedules and their slots.

use crate::support::*;

async fn a_deposed_leader_cannot_enqueue_a_slot(backend: Backend) {
    let store = backend.store().await;
    let (first, second) = (
        NodeId::new("first").expect("id"),
        NodeId::new("second").expect("id"),
    );
    let schedule = Schedule {
        id: "tick".into(),
        task: "work".into(),
        args: "null".into(),
        queue: "default".into(),
        recurrence: Recurrence::Every { every_ms: 1000 },
        signature: String::new(),
    };
    store.set_schedule(&schedule).await.expect("schedule");
    let epoch = store
        .try_lead(&first, Duration::from_millis(100))
        .await
        .expect("lead")
        .expect("leads");
    let slot = |at_ms: u64, leader: (String, u64)| NewTask {
        slot: Some(Slot {
            schedule: "tick".into(),
            at_ms,
            remember: Duration::from_secs(60),
            leader,
        }),
        ..plain_task(&format!("recur:tick:{at_ms}"), "work", 1)
    };
    let as_first = ("first".to_owned(), epoch);
    assert_eq!(
        store
            .enqueue(&slot(1000, as_first.clone()))
            .await
            .expect("slot"),
        Enqueued::Added
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let new_epoch = store
        .try_lead(&second, Duration::from_secs(30))
        .await
        .expect("lead")
        .expect("the second node leads");
    assert!(new_epoch > epoch);
    assert_eq!(
        store.enqueue(&slot(2000, as_first)).await.expect("slot"),
        Enqueued::Fenced,
        "a deposed leader's write was accepted"
    );
    assert_eq!(
        store
            .enqueue(&slot(2000, ("second".to_owned(), new_epoch)))
            .await
            .expect("slot"),
        Enqueued::Added
    );
}

async fn schedules_are_set_listed_replaced_and_removed(backend: Backend) {
    let store = backend.store().await;
    let schedule = |id: &str, every_ms: u64| Schedule {
        id: id.into(),
        task: "work".into(),
        args: "null".into(),
        queue: "default".into(),
        recurrence: Recurrence::Every { every_ms },
        signature: String::new(),
    };
    store.set_schedule(&schedule("b", 1000)).await.expect("set");
    store.set_schedule(&schedule("a", 1000)).await.expect("set");
    store
        .set_schedule(&schedule("a", 5000))
        .await
        .expect("replace");
    assert_eq!(
        store.schedules().await.expect("list"),
        [schedule("a", 5000), schedule("b", 1000)]
    );
    assert_eq!(store.last_slot("a").await.expect("last slot"), None);
    assert!(store.remove_schedule("a").await.expect("remove"));
    assert!(!store.remove_schedule("a").await.expect("remove again"));
    assert_eq!(
        store.schedules().await.expect("list"),
        [schedule("b", 1000)]
    );
}

/// The last slot is the latest one enqueued, not the latest one tried: a later slot enqueued
/// first is not overwritten by an earlier one.
async fn the_last_slot_only_moves_forward(backend: Backend) {
    let store = backend.store().await;
    let node = NodeId::new("leader").expect("id");
    store
        .set_schedule(&Schedule {
            id: "tick".into(),
            task: "work".into(),
            args: "null".into(),
            queue: "default".into(),
            recurrence: Recurrence::Every { every_ms: 1000 },
            signature: String::new(),
        })
        .await
        .expect("set");
    let epoch = store
        .try_lead(&node, Duration::from_secs(30))
        .await
        .expect("lead")
        .expect("leads");
    for at_ms in [5000, 3000] {
        let task = NewTask {
            slot: Some(Slot {
                schedule: "tick".into(),
                at_ms,
                remember: Duration::from_secs(60),
                leader: ("leader".into(), epoch),
            }),
            ..plain_task(&format!("recur:tick:{at_ms}"), "work", 1)
        };
        assert_eq!(store.enqueue(&task).await.expect("slot"), Enqueued::Added);
    }
    assert_eq!(store.last_slot("tick").await.expect("last"), Some(5000));
    // Removed, the schedule forgets its last slot: scheduled again, it starts afresh.
    assert!(store.remove_schedule("tick").await.expect("remove"));
    assert_eq!(store.last_slot("tick").await.expect("last"), None);
}

contract!(
    schedules_are_set_listed_replaced_and_removed,
    the_last_slot_only_moves_forward,
    a_deposed_leader_cannot_enqueue_a_slot,
);

//! Pausing: a paused queue keeps its tasks until it is resumed, on every node; a quiet node
//! takes no new task.

use crate::support::*;

async fn pausing_and_resuming_a_queue_is_recorded_once(backend: Backend) {
    let store = backend.store().await;
    assert!(store.paused_queues().await.expect("paused").is_empty());
    assert!(store.pause_queue("mail").await.expect("pause"));
    assert!(!store.pause_queue("mail").await.expect("pause again"));
    assert!(store.pause_queue("default").await.expect("pause"));
    let paused: Vec<String> = store
        .paused_queues()
        .await
        .expect("paused")
        .into_iter()
        .collect();
    assert_eq!(paused, ["default", "mail"]);
    assert!(store.resume_queue("mail").await.expect("resume"));
    assert!(!store.resume_queue("mail").await.expect("resume again"));
    assert!(!store.resume_queue("never-paused").await.expect("resume"));
    let paused: Vec<String> = store
        .paused_queues()
        .await
        .expect("paused")
        .into_iter()
        .collect();
    assert_eq!(paused, ["default"]);
}

async fn no_node_runs_a_paused_queue_until_it_is_resumed(backend: Backend) {
    let runs = Runs::default();
    let config = TaskConfig {
        queues: vec!["high".into(), "default".into()],
        ..fast()
    };
    let mut nodes = Vec::new();
    for id in ["p1", "p2"] {
        let (api, tasks) = backend.node(id, config.clone()).await;
        counting(&tasks, &runs);
        tasks.start(&api);
        nodes.push((api, tasks));
    }
    let tasks = nodes[0].1.clone();
    assert!(tasks.pause_queue("default").await.expect("pause"));
    // Every node reads the paused set within PAUSE_REFRESH.
    tokio::time::sleep(PAUSE_REFRESH + Duration::from_millis(100)).await;
    let held = tasks
        .enqueue("work", &1, EnqueueOptions::default())
        .await
        .expect("enqueue");
    let high = tasks
        .enqueue(
            "work",
            &2,
            EnqueueOptions {
                queue: Some("high".into()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    eventually("the other queue runs", async || {
        state_of(&tasks, &high).await == Some(TaskState::Completed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state_of(&tasks, &held).await, Some(TaskState::Queued));
    assert!(!runs.lock().expect("runs").contains_key(&held));
    assert!(nodes[1].1.resume_queue("default").await.expect("resume"));
    stellar_testkit::eventually_within(
        "the resumed queue runs within a second",
        Duration::from_secs(1),
        async || state_of(&tasks, &held).await == Some(TaskState::Completed),
    )
    .await;
    for (api, _) in nodes {
        api.shutdown().await.expect("stops");
    }
}

async fn a_quiet_node_takes_no_new_task(backend: Backend) {
    let runs = Runs::default();
    let (api, tasks) = backend.node("q1", fast()).await;
    counting(&tasks, &runs);
    tasks.start(&api);
    tasks.set_quiet(true);
    assert!(tasks.is_quiet());
    tokio::time::sleep(PAUSE_REFRESH).await;
    let id = tasks
        .enqueue("work", &1, EnqueueOptions::default())
        .await
        .expect("enqueue");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state_of(&tasks, &id).await, Some(TaskState::Queued));
    tasks.set_quiet(false);
    stellar_testkit::eventually_within(
        "a node no longer quiet runs it within a second",
        Duration::from_secs(1),
        async || state_of(&tasks, &id).await == Some(TaskState::Completed),
    )
    .await;
    api.shutdown().await.expect("stops");
}

contract!(
    pausing_and_resuming_a_queue_is_recorded_once,
    no_node_runs_a_paused_queue_until_it_is_resumed,
    a_quiet_node_takes_no_new_task,
);

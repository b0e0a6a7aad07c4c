//! One contract, two stores: memory (Tokio's clock paused) and Redis (a real `redis-server`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use stellar_bus::{RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, CancellationToken, Config, NodeId};
use stellar_tasks::{
    ClaimRequest, Claimed, EnqueueOptions, Enqueued, Error, FailOutcome, MemoryTaskStore, NewTask,
    RedisTaskStore, TaskConfig, TaskDefinition, TaskState, TaskStore, Tasks,
};
use stellar_testkit::RedisServer;

enum Backend {
    Memory(MemoryTaskStore),
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
    async fn store(&self) -> Arc<dyn TaskStore> {
        match self {
            Self::Memory(store) => Arc::new(store.clone()),
            Self::Redis { server, cancel } => {
                let pool = RedisPool::connect(RedisConfig::new(server.url()))
                    .await
                    .expect("redis");
                let transport: Arc<dyn Transport> = Arc::new(
                    RedisTransport::connect(pool.clone(), cancel.clone())
                        .await
                        .expect("subscriber"),
                );
                Arc::new(RedisTaskStore::new(pool, transport))
            }
        }
    }

    /// A node: its Api and its Tasks, not started.
    async fn node(&self, id: &str, config: TaskConfig) -> (Api, Tasks) {
        let api = Api::new(Config {
            id: Some(NodeId::new(id).expect("id")),
            shutdown_timeout: Duration::from_secs(5),
            ..Config::default()
        });
        let tasks = Tasks::new(self.store().await, api.node_id().clone(), config);
        (api, tasks)
    }
}

fn fast() -> TaskConfig {
    TaskConfig {
        lease: Duration::from_millis(600),
        idle_poll: Duration::from_millis(100),
        maintenance_interval: Duration::from_millis(50),
        ..TaskConfig::default()
    }
}

type Runs = Arc<Mutex<HashMap<String, u32>>>;

/// Registers `work`, which counts runs per task id.
fn counting(tasks: &Tasks, runs: &Runs) {
    let runs = runs.clone();
    tasks.register(TaskDefinition::new(
        "work",
        move |ctx, _: serde_json::Value| {
            let runs = runs.clone();
            async move {
                *runs.lock().expect("runs").entry(ctx.id).or_default() += 1;
                Ok(())
            }
        },
    ));
}

/// A claim of tasks named `work`, with a fresh request id.
fn request(queues: &[String], node: &NodeId, lease: Duration, max: usize) -> ClaimRequest {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    ClaimRequest {
        queues: queues.to_vec(),
        node: node.clone(),
        lease,
        max,
        names: vec!["work".to_owned()].into(),
        request_id: format!("r{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state_of(tasks: &Tasks, id: &str) -> Option<TaskState> {
    tasks.show(id).await.expect("show").map(|t| t.state)
}

async fn every_task_runs_exactly_once_across_three_nodes(backend: Backend) {
    let runs = Runs::default();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let (api, tasks) = backend.node(id, fast()).await;
        counting(&tasks, &runs);
        tasks.start(&api);
        nodes.push((api, tasks));
    }
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(
            nodes[n % 3]
                .1
                .enqueue("work", &n, EnqueueOptions::default())
                .await
                .expect("enqueue"),
        );
    }
    let tasks = nodes[0].1.clone();
    eventually("all ran", async || {
        tasks.stats().await.expect("stats").processed == 300
    })
    .await;
    let runs = runs.lock().expect("runs").clone();
    assert_eq!(runs.len(), 300);
    assert!(runs.values().all(|n| *n == 1), "a task ran twice");
    let stats = tasks.stats().await.expect("stats");
    assert_eq!(
        (stats.failed, stats.in_flight, stats.queues["default"]),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.by_name["processed:work"], 300);
    assert_eq!(state_of(&tasks, &ids[0]).await, Some(TaskState::Completed));
    for (api, _) in nodes {
        api.shutdown().await.expect("stops");
    }
}

async fn an_id_is_an_idempotency_key_and_bad_input_is_refused(backend: Backend) {
    let (_api, tasks) = backend.node("n1", fast()).await;
    counting(&tasks, &Runs::default());
    let options = EnqueueOptions {
        id: Some("invoice-7".into()),
        ..EnqueueOptions::default()
    };
    assert_eq!(
        tasks
            .enqueue("work", &1, options.clone())
            .await
            .expect("enqueue"),
        "invoice-7"
    );
    assert_eq!(
        tasks.enqueue("work", &2, options).await.expect("again"),
        "invoice-7"
    );
    assert_eq!(
        tasks.stats().await.expect("stats").queues["default"],
        1,
        "the second enqueue added nothing"
    );
    assert!(matches!(
        tasks.enqueue("nope", &1, EnqueueOptions::default()).await,
        Err(Error::UnknownTask { .. })
    ));
    let bad = EnqueueOptions {
        id: Some("has space".into()),
        ..EnqueueOptions::default()
    };
    assert!(matches!(
        tasks.enqueue("work", &1, bad).await,
        Err(Error::Invalid { .. })
    ));
}

async fn a_delayed_task_does_not_run_early(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let runs = Runs::default();
    counting(&tasks, &runs);
    tasks.start(&api);
    let started = tokio::time::Instant::now();
    let id = tasks
        .enqueue_in(
            Duration::from_millis(400),
            "work",
            &(),
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    assert_eq!(state_of(&tasks, &id).await, Some(TaskState::Delayed));
    eventually("it ran", async || {
        state_of(&tasks, &id).await == Some(TaskState::Completed)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "ran after {:?}",
        started.elapsed()
    );
    api.shutdown().await.expect("stops");
}

async fn failures_retry_with_backoff_then_land_in_the_failed_set(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    tasks.register(
        TaskDefinition::new("flaky", move |_, fail_until: u32| {
            let counter = counter.clone();
            async move {
                let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
                if attempt <= fail_until {
                    Err(format!("attempt {attempt} broke").into())
                } else {
                    Ok(())
                }
            }
        })
        .max_attempts(3)
        .backoff(Duration::from_millis(50), Duration::from_millis(100)),
    );
    tasks.start(&api);
    let recovers = tasks
        .enqueue("flaky", &2_u32, EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("third attempt succeeds", async || {
        state_of(&tasks, &recovers).await == Some(TaskState::Completed)
    })
    .await;
    assert_eq!(attempts.swap(0, Ordering::SeqCst), 3);

    let poison = tasks
        .enqueue("flaky", &99_u32, EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("out of attempts", async || {
        state_of(&tasks, &poison).await == Some(TaskState::Failed)
    })
    .await;
    let failed = tasks.failed().await.expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].attempts, failed[0].node.as_deref()),
        (3, Some("n1"))
    );
    assert_eq!(failed[0].error.as_deref(), Some("attempt 3 broke"));
    let stats = tasks.stats().await.expect("stats");
    assert_eq!(
        (stats.failed, stats.retried, stats.failed_now),
        (1, 4, 1),
        "{stats:?}"
    );

    attempts.store(100, Ordering::SeqCst);
    assert!(tasks.retry_failed(&poison).await.expect("retry"));
    eventually("retried task completes", async || {
        state_of(&tasks, &poison).await == Some(TaskState::Completed)
    })
    .await;
    assert!(
        !tasks.retry_failed(&poison).await.expect("retry"),
        "only failed tasks are retried"
    );
    api.shutdown().await.expect("stops");
}

async fn panics_and_timeouts_fail_the_attempt_not_the_worker(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    tasks.register(
        TaskDefinition::new("panics", |_, _: ()| async { panic!("bug") }).max_attempts(1),
    );
    tasks.register(
        TaskDefinition::new("hangs", |_, _: ()| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .max_attempts(1)
        .timeout(Duration::from_millis(200)),
    );
    let runs = Runs::default();
    counting(&tasks, &runs);
    tasks.start(&api);
    let panics = tasks
        .enqueue("panics", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    let hangs = tasks
        .enqueue("hangs", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    for n in 0..20 {
        tasks
            .enqueue("work", &n, EnqueueOptions::default())
            .await
            .expect("enqueue");
    }
    eventually("good tasks flow", async || {
        runs.lock().expect("runs").len() == 20
    })
    .await;
    eventually("both bad ones failed", async || {
        state_of(&tasks, &panics).await == Some(TaskState::Failed)
            && state_of(&tasks, &hangs).await == Some(TaskState::Failed)
    })
    .await;
    let errors: Vec<String> = tasks
        .failed()
        .await
        .expect("failed")
        .into_iter()
        .filter_map(|t| t.error)
        .collect();
    assert!(
        errors.iter().any(|e| e == "handler panicked")
            && errors.iter().any(|e| e.starts_with("timed out")),
        "{errors:?}"
    );
    api.shutdown().await.expect("stops");
}

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
    assert_eq!(store.reap(100).await.expect("reap"), 1);
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
        (stats.queues["default"], stats.delayed),
        (50, 0),
        "{stats:?}"
    );
}

async fn a_graceful_stop_hands_unfinished_tasks_back_at_once(backend: Backend) {
    let config = TaskConfig {
        drain_timeout: Duration::from_millis(200),
        lease: Duration::from_secs(30),
        ..fast()
    };
    let (leaving, tasks_a) = backend.node("leaving", config.clone()).await;
    let long_runs = Arc::new(AtomicU32::new(0));
    let define = |tasks: &Tasks, sleep: Duration| {
        let runs = long_runs.clone();
        tasks.register(TaskDefinition::new("long", move |_, _: ()| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(sleep).await;
                Ok(())
            }
        }));
    };
    define(&tasks_a, Duration::from_secs(3600));
    tasks_a.start(&leaving);
    let id = tasks_a
        .enqueue("long", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("it started", async || {
        state_of(&tasks_a, &id).await == Some(TaskState::Running)
    })
    .await;
    leaving.shutdown().await.expect("stops within its deadline");
    let record = tasks_a.show(&id).await.expect("show").expect("record");
    assert_eq!(
        (record.state, record.attempts),
        (TaskState::Queued, 0),
        "handed back at once, attempt not counted"
    );

    let (staying, tasks_b) = backend.node("staying", config).await;
    define(&tasks_b, Duration::from_millis(10));
    tasks_b.start(&staying);
    eventually("another node finishes it", async || {
        state_of(&tasks_b, &id).await == Some(TaskState::Completed)
    })
    .await;
    assert_eq!(long_runs.load(Ordering::SeqCst), 2);
    staying.shutdown().await.expect("stops");
}

async fn queues_are_served_in_priority_order(backend: Backend) {
    let config = TaskConfig {
        queues: vec!["high".into(), "low".into()],
        concurrency: 1,
        ..fast()
    };
    let (api, tasks) = backend.node("n1", config).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = order.clone();
    tasks.register(TaskDefinition::new("record", move |_, label: String| {
        let log = log.clone();
        async move {
            log.lock().expect("order").push(label);
            Ok(())
        }
    }));
    for label in ["low-1", "low-2"] {
        tasks
            .enqueue(
                "record",
                &label,
                EnqueueOptions {
                    queue: Some("low".into()),
                    ..EnqueueOptions::default()
                },
            )
            .await
            .expect("enqueue");
    }
    tasks
        .enqueue(
            "record",
            &"high-1",
            EnqueueOptions {
                queue: Some("high".into()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    tasks.start(&api);
    eventually("all ran", async || order.lock().expect("order").len() == 3).await;
    assert_eq!(*order.lock().expect("order"), ["high-1", "low-1", "low-2"]);
    api.shutdown().await.expect("stops");
}

async fn leadership_is_a_short_lease_with_a_rising_epoch(backend: Backend) {
    let store = backend.store().await;
    let (a, b) = (NodeId::new("a").expect("id"), NodeId::new("b").expect("id"));
    let first = store
        .try_lead(&a, Duration::from_millis(300))
        .await
        .expect("lead")
        .expect("a leads");
    assert_eq!(
        store
            .try_lead(&b, Duration::from_millis(300))
            .await
            .expect("lead"),
        None
    );
    assert_eq!(
        store
            .try_lead(&a, Duration::from_millis(300))
            .await
            .expect("renew"),
        Some(first),
        "a renewal keeps the epoch"
    );
    assert_eq!(
        store.leader().await.expect("leader"),
        Some(("a".to_owned(), first))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = store
        .try_lead(&b, Duration::from_millis(300))
        .await
        .expect("lead")
        .expect("b takes over after the lease");
    assert!(second > first);
    assert_eq!(
        store
            .try_lead(&a, Duration::from_millis(300))
            .await
            .expect("lead"),
        None,
        "the old leader is fenced out"
    );
    assert!(!store.resign(&a).await.expect("resign"));
    assert!(store.resign(&b).await.expect("resign"));
    assert_eq!(store.leader().await.expect("leader"), None);
}

async fn inspection_shows_queues_delays_workers_and_deletes(backend: Backend) {
    let config = TaskConfig {
        concurrency: 1,
        ..fast()
    };
    let (api, tasks) = backend.node("inspector", config).await;
    let (release, gate) = tokio::sync::watch::channel(false);
    tasks.register(TaskDefinition::new("blocker", move |_, _: ()| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(())
        }
    }));
    counting(&tasks, &Runs::default());
    let blocker = tasks
        .enqueue("blocker", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    tasks.start(&api);
    eventually("the blocker runs", async || {
        state_of(&tasks, &blocker).await == Some(TaskState::Running)
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            tasks
                .enqueue("work", &n, EnqueueOptions::default())
                .await
                .expect("enqueue"),
        );
    }
    let later = tasks
        .enqueue_in(
            Duration::from_secs(3600),
            "work",
            &"later",
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    let queued: Vec<String> = tasks
        .queued("default", 0, 10)
        .await
        .expect("queued")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(queued, ids, "next to run first");
    assert_eq!(
        tasks
            .delayed()
            .await
            .expect("delayed")
            .iter()
            .map(|t| t.id.as_str().to_owned())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&later)
    );
    eventually("the worker pool is announced", async || {
        !tasks.workers().await.expect("workers").is_empty()
    })
    .await;
    let workers = tasks.workers().await.expect("workers");
    assert_eq!(workers[0].0.node, "inspector");
    assert_eq!(
        workers[0]
            .1
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        [blocker.as_str()]
    );
    assert!(matches!(
        tasks.del(&blocker).await,
        Err(Error::Running { .. })
    ));
    assert!(tasks.del(&later).await.expect("del"));
    assert!(tasks.del(&ids[0]).await.expect("del"));
    assert!(!tasks.del(&ids[0]).await.expect("del"));
    assert_eq!(tasks.del_queue("default").await.expect("del queue"), 2);
    assert_eq!(tasks.show(&ids[1]).await.expect("show"), None);
    release.send(true).expect("open the gate");
    eventually("the blocker completes", async || {
        state_of(&tasks, &blocker).await == Some(TaskState::Completed)
    })
    .await;
    let stats = tasks.stats().await.expect("stats");
    assert_eq!(
        stats.by_node.get("processed@inspector"),
        Some(&1),
        "{stats:?}"
    );
    api.shutdown().await.expect("stops");
}

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

fn plain_task(id: &str, name: &str, max_attempts: u32) -> NewTask {
    NewTask {
        id: id.into(),
        name: name.into(),
        queue: "default".into(),
        args: "null".into(),
        max_attempts,
        due_at_ms: None,
        slot: None,
        signature: String::new(),
        replace: false,
    }
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
    assert_eq!(store.reap(100).await.expect("reap"), 1);
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
        (stats.queues["default"], stats.failed_now),
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
        (stats.queues["default"], stats.failed_now),
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
    assert_eq!((stats.in_flight, stats.queues["default"]), (2, 1));
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

/// Someone who can write to Redis but has no token writes a record directly (HSET + LPUSH, or a
/// store call with a made-up signature): it lands in the failed set, never in a handler.
async fn an_unsigned_task_record_never_reaches_a_handler(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let runs = Runs::default();
    counting(&tasks, &runs);
    let forged = NewTask {
        signature: "00".repeat(32),
        ..plain_task("forged", "work", 5)
    };
    tasks.store().enqueue(&forged).await.expect("enqueue");
    let genuine = tasks
        .enqueue("work", &1, EnqueueOptions::default())
        .await
        .expect("enqueue");
    tasks.start(&api);
    eventually("the forged record is failed", async || {
        state_of(&tasks, "forged").await == Some(TaskState::Failed)
    })
    .await;
    eventually("the genuine task ran", async || {
        state_of(&tasks, &genuine).await == Some(TaskState::Completed)
    })
    .await;
    let record = tasks.show("forged").await.expect("show").expect("record");
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("unsigned")),
        "{record:?}"
    );
    assert_eq!(record.attempts, 1, "buried at its first claim, not retried");
    assert!(
        !runs.lock().expect("runs").contains_key("forged"),
        "a handler ran a forged task"
    );
    // A plain retry keeps the record's signature: refused again.
    assert!(tasks.retry_failed("forged").await.expect("retry"));
    eventually("refused again", async || {
        tasks
            .show("forged")
            .await
            .expect("show")
            .is_some_and(|t| t.state == TaskState::Failed && t.attempts == 1)
    })
    .await;
    assert!(!runs.lock().expect("runs").contains_key("forged"));
    // An operator who vouches for it (an upgrade, a token rotation gone wrong) signs it again.
    assert!(tasks.retry_failed_resigned("forged").await.expect("retry"));
    eventually("the vouched-for task ran", async || {
        state_of(&tasks, "forged").await == Some(TaskState::Completed)
    })
    .await;
    assert_eq!(runs.lock().expect("runs").get("forged"), Some(&1));
    api.shutdown().await.expect("stops");
}

async fn a_deposed_leader_cannot_enqueue_a_slot(backend: Backend) {
    let store = backend.store().await;
    let (first, second) = (
        NodeId::new("first").expect("id"),
        NodeId::new("second").expect("id"),
    );
    let schedule = stellar_tasks::Schedule {
        name: "tick".into(),
        task: "work".into(),
        args: "null".into(),
        queue: "default".into(),
        every_ms: 1000,
    };
    store.set_schedule(&schedule).await.expect("schedule");
    let epoch = store
        .try_lead(&first, Duration::from_millis(100))
        .await
        .expect("lead")
        .expect("leads");
    let slot = |at_ms: u64, leader: (String, u64)| NewTask {
        slot: Some(stellar_tasks::Slot {
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

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(super::Backend::Memory(stellar_tasks::MemoryTaskStore::new())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::Redis { server: stellar_testkit::RedisServer::start(), cancel: stellar_core::CancellationToken::new() };
                    super::$case(backend).await;
                }
            )*
        }
    };
}

contract!(
    every_task_runs_exactly_once_across_three_nodes,
    an_id_is_an_idempotency_key_and_bad_input_is_refused,
    a_delayed_task_does_not_run_early,
    failures_retry_with_backoff_then_land_in_the_failed_set,
    panics_and_timeouts_fail_the_attempt_not_the_worker,
    a_lost_lease_is_reaped_and_its_late_answer_rejected,
    concurrent_promoters_never_duplicate_a_delayed_task,
    a_graceful_stop_hands_unfinished_tasks_back_at_once,
    queues_are_served_in_priority_order,
    leadership_is_a_short_lease_with_a_rising_epoch,
    inspection_shows_queues_delays_workers_and_deletes,
    a_batch_claim_takes_queues_in_priority_order_up_to_its_size,
    batch_completions_accept_current_claims_and_reject_stale_ones,
    claim_tokens_never_repeat_when_an_id_is_enqueued_again,
    an_id_is_deduplicated_while_its_record_is_kept,
    a_node_parks_tasks_it_cannot_run_without_spending_attempts,
    asking_again_after_a_lost_claim_reply_returns_the_same_tasks,
    an_unsigned_task_record_never_reaches_a_handler,
    a_deposed_leader_cannot_enqueue_a_slot,
    deleting_a_large_queue_works_in_bounded_steps,
    a_stale_id_in_another_queue_never_touches_the_live_task,
);

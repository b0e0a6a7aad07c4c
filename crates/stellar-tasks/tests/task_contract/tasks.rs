//! The user API end to end: `Tasks` with workers on a store.

use crate::support::*;

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
        (stats.failed, stats.in_flight, stats.queues["default"].depth),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.tasks["work"].processed, 300);
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
        tasks.stats().await.expect("stats").queues["default"].depth,
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
        stats.nodes.get("inspector").map(|n| n.processed),
        Some(1),
        "{stats:?}"
    );
    api.shutdown().await.expect("stops");
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

/// Wake-ups come from the work signal, not the store: an idle worker whose next poll is far off
/// starts a task enqueued by another node at once.
async fn an_idle_worker_starts_a_new_task_at_once(backend: Backend) {
    let config = TaskConfig {
        idle_poll: Duration::from_secs(30),
        ..fast()
    };
    let (api, worker) = backend.node("worker", config.clone()).await;
    let runs = Runs::default();
    counting(&worker, &runs);
    worker.start(&api);
    let (_client_api, client) = backend.node("client", config).await;
    counting(&client, &Runs::default());
    // Let the worker find nothing and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let enqueued = tokio::time::Instant::now();
    let id = client
        .enqueue("work", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("it ran", async || {
        state_of(&worker, &id).await == Some(TaskState::Completed)
    })
    .await;
    assert!(
        enqueued.elapsed() < Duration::from_secs(5),
        "picked up after {:?}: the wake-up did not reach the idle worker",
        enqueued.elapsed()
    );
    api.shutdown().await.expect("stops");
}

async fn a_handler_can_abort_or_ask_for_a_retry_after_a_delay(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let attempts = Arc::new(AtomicU32::new(0));
    tasks.register(
        TaskDefinition::new("refuse", |_, _: ()| async {
            Err(TaskError::abort("bad input: retrying cannot help").into())
        })
        .max_attempts(5),
    );
    let counter = attempts.clone();
    tasks.register(
        TaskDefinition::new("busy", move |ctx, _: ()| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt == 1 {
                    return Err(TaskError::retry_after(Duration::from_millis(300), "busy").into());
                }
                Ok(())
            }
        })
        // Without the handler's delay, the retry would wait an hour.
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600)),
    );
    tasks.start(&api);
    let refused = tasks
        .enqueue("refuse", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    let started = tokio::time::Instant::now();
    let busy = tasks
        .enqueue("busy", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("the aborted task failed", async || {
        state_of(&tasks, &refused).await == Some(TaskState::Failed)
    })
    .await;
    let record = tasks.show(&refused).await.expect("show").expect("record");
    assert_eq!(
        (record.attempts, record.error.as_deref()),
        (1, Some("bad input: retrying cannot help")),
        "aborted at its first attempt of five"
    );
    eventually("the busy task ran again", async || {
        state_of(&tasks, &busy).await == Some(TaskState::Completed)
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(60),
        "retried after {elapsed:?}"
    );
    api.shutdown().await.expect("stops");
}

async fn a_task_reports_progress_on_its_record(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let (step, mut steps) = tokio::sync::watch::channel(0_u8);
    let (go, gate) = tokio::sync::watch::channel(0_u8);
    tasks.register(TaskDefinition::new("upload", move |ctx, _: ()| {
        let (step, mut gate) = (step.clone(), gate.clone());
        async move {
            assert!(ctx.progress(&40_u8).await?, "the claim is current");
            step.send_replace(1);
            gate.wait_for(|n| *n >= 1).await?;
            ctx.progress(&serde_json::json!({"step": "upload", "files": 3}))
                .await?;
            step.send_replace(2);
            gate.wait_for(|n| *n >= 2).await?;
            Ok(())
        }
    }));
    tasks.start(&api);
    let id = tasks
        .enqueue("upload", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    let progress = async |tasks: &Tasks| {
        tasks
            .show(&id)
            .await
            .expect("show")
            .expect("record")
            .progress
    };
    steps.wait_for(|n| *n >= 1).await.expect("step 1");
    assert_eq!(progress(&tasks).await, Some(serde_json::json!(40)));
    go.send_replace(1);
    steps.wait_for(|n| *n >= 2).await.expect("step 2");
    assert_eq!(
        progress(&tasks).await,
        Some(serde_json::json!({"step": "upload", "files": 3}))
    );
    go.send_replace(2);
    eventually("it completed", async || {
        state_of(&tasks, &id).await == Some(TaskState::Completed)
    })
    .await;
    assert_eq!(
        progress(&tasks).await,
        Some(serde_json::json!({"step": "upload", "files": 3})),
        "the last report stays on the record"
    );
    api.shutdown().await.expect("stops");
}

async fn a_batch_is_checked_whole_then_enqueued_at_once(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let runs = Runs::default();
    counting(&tasks, &runs);
    let task = |id: &str, name: &str| BatchTask {
        name: name.into(),
        args: serde_json::json!({"n": id}),
        options: EnqueueOptions {
            id: Some(id.into()),
            ..EnqueueOptions::default()
        },
        at: None,
    };
    let bad = vec![task("b0", "work"), task("b1", "work"), task("b2", "nope")];
    match tasks.enqueue_many(bad).await {
        Err(Error::InBatch { index: 2, source }) => {
            assert!(matches!(*source, Error::UnknownTask { .. }), "{source:?}")
        }
        other => panic!("a bad task was not refused: {other:?}"),
    }
    assert_eq!(
        tasks.show("b0").await.expect("show"),
        None,
        "half a batch was written"
    );
    let mut good: Vec<BatchTask> = (0..50).map(|n| task(&format!("b{n}"), "work")).collect();
    good[7].at = Some(std::time::SystemTime::now() + Duration::from_millis(200));
    let submitted = tasks
        .enqueue_many(good.clone())
        .await
        .expect("enqueue many");
    assert_eq!(submitted.len(), 50);
    assert!(submitted.iter().all(|s| s.outcome == Enqueued::Added));
    assert_eq!(submitted[3].id, "b3");
    assert_eq!(state_of(&tasks, "b7").await, Some(TaskState::Delayed));
    tasks.start(&api);
    eventually("the batch ran", async || {
        runs.lock().expect("runs").len() == 50
    })
    .await;
    let again = tasks.enqueue_many(good).await.expect("again");
    assert!(
        again
            .iter()
            .all(|s| s.outcome == Enqueued::Exists(TaskState::Completed)),
        "ids are idempotency keys"
    );
    assert!(runs.lock().expect("runs").values().all(|n| *n == 1));
    api.shutdown().await.expect("stops");
}

async fn a_handler_asking_to_retry_after_forever_waits_thirty_days(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    tasks.register(TaskDefinition::new("later", |_, _: ()| async {
        Err(TaskError::retry_after(Duration::MAX, "come back never").into())
    }));
    let runs = Runs::default();
    counting(&tasks, &runs);
    tasks.start(&api);
    let started = std::time::SystemTime::now();
    let id = tasks
        .enqueue("later", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("the attempt failed and waits", async || {
        state_of(&tasks, &id).await == Some(TaskState::Delayed)
    })
    .await;
    let record = tasks.show(&id).await.expect("show").expect("not lost");
    let failed_at = started
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let thirty_days = stellar_tasks::MAX_RETRY_DELAY.as_millis() as u64;
    let due = record.due_at_ms.expect("a readable due time");
    assert!(
        due >= failed_at + thirty_days - 1_000 && due <= failed_at + thirty_days + 60_000,
        "due at {due}, enqueued at {failed_at}"
    );
    assert_eq!(
        (record.attempts, record.error.as_deref()),
        (1, Some("come back never"))
    );
    tasks
        .enqueue("work", &1, EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("the workers still run tasks", async || {
        runs.lock().expect("runs").len() == 1
    })
    .await;
    api.shutdown().await.expect("stops");
}

async fn a_batch_over_its_count_or_byte_limit_is_refused_whole(backend: Backend) {
    let (_api, tasks) = backend.node("n1", fast()).await;
    let runs = Runs::default();
    counting(&tasks, &runs);
    let task = |id: String, args: serde_json::Value| BatchTask {
        name: "work".into(),
        args,
        options: EnqueueOptions {
            id: Some(id),
            ..EnqueueOptions::default()
        },
        at: None,
    };
    let many: Vec<BatchTask> = (0..=stellar_tasks::MAX_BATCH)
        .map(|n| task(format!("m{n}"), serde_json::Value::Null))
        .collect();
    match tasks.enqueue_many(many).await {
        Err(Error::BatchTooLarge { len, max, unit }) => {
            assert_eq!((len, max, unit), (10_001, 10_000, "tasks"));
        }
        other => panic!("10,001 tasks were not refused: {other:?}"),
    }
    // Three tasks of 1.5 MiB of arguments each: 4.5 MiB in all.
    let big = serde_json::Value::String("x".repeat(3 << 19));
    let heavy: Vec<BatchTask> = (0..3).map(|n| task(format!("h{n}"), big.clone())).collect();
    let err = tasks
        .enqueue_many(heavy.clone())
        .await
        .expect_err("4.5 MiB of arguments");
    match &err {
        Error::BatchTooLarge { len, max, unit } => {
            assert_eq!(
                (*max, *unit),
                (stellar_tasks::MAX_BATCH_BYTES, "bytes of arguments")
            );
            assert!(*len > 4_500_000, "{len}");
        }
        other => panic!("4.5 MiB of arguments were not refused: {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("at most 4194304 bytes of arguments go in one call"),
        "{err}"
    );
    assert_eq!(tasks.show("h0").await.expect("show"), None, "written");
    let submitted = tasks
        .enqueue_many(heavy[..2].to_vec())
        .await
        .expect("3 MiB fit");
    assert!(submitted.iter().all(|s| s.outcome == Enqueued::Added));
}

/// The dashboard's run now: a delayed task runs at once, and a schedule runs one extra time
/// with its arguments, signed; a schedule that does not verify is not run.
async fn a_delayed_task_and_a_schedule_run_now_on_demand(backend: Backend) {
    let (api, tasks) = backend.node("n1", fast()).await;
    let runs = Runs::default();
    counting(&tasks, &runs);
    tasks.start(&api);
    let later = tasks
        .enqueue_in(
            Duration::from_secs(3600),
            "work",
            &1,
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    assert_eq!(state_of(&tasks, &later).await, Some(TaskState::Delayed));
    assert!(tasks.run_now(&later).await.expect("run now"));
    eventually("the delayed task ran", async || {
        state_of(&tasks, &later).await == Some(TaskState::Completed)
    })
    .await;
    let hourly = stellar_tasks::ScheduleOptions::default().id("hourly");
    let recurrence = Recurrence::every(Duration::from_secs(3600));
    tasks
        .schedule("work", &serde_json::json!({ "n": 7 }), recurrence, hourly)
        .await
        .expect("schedule");
    let id = tasks
        .run_schedule_now("hourly")
        .await
        .expect("run now")
        .expect("the schedule exists");
    eventually("the schedule's extra run completes", async || {
        state_of(&tasks, &id).await == Some(TaskState::Completed)
    })
    .await;
    let record = tasks.show(&id).await.expect("show").expect("record");
    assert_eq!(
        (record.name.as_str(), record.args.as_str()),
        ("work", r#"{"n":7}"#)
    );
    assert_eq!(
        tasks.run_schedule_now("absent").await.expect("run now"),
        None
    );
    let forged = Schedule {
        id: "forged".into(),
        task: "work".into(),
        args: "null".into(),
        queue: "default".into(),
        recurrence: Recurrence::Every {
            every_ms: 3_600_000,
        },
        signature: String::new(),
    };
    tasks.store().set_schedule(&forged).await.expect("schedule");
    let refused = tasks.run_schedule_now("forged").await;
    assert!(
        matches!(refused, Err(Error::UnverifiedSchedule { .. })),
        "{refused:?}"
    );
    api.shutdown().await.expect("stops");
}

contract!(
    a_delayed_task_and_a_schedule_run_now_on_demand,
    a_batch_over_its_count_or_byte_limit_is_refused_whole,
    a_handler_asking_to_retry_after_forever_waits_thirty_days,
    a_batch_is_checked_whole_then_enqueued_at_once,
    a_handler_can_abort_or_ask_for_a_retry_after_a_delay,
    a_task_reports_progress_on_its_record,
    an_idle_worker_starts_a_new_task_at_once,
    every_task_runs_exactly_once_across_three_nodes,
    an_id_is_an_idempotency_key_and_bad_input_is_refused,
    a_delayed_task_does_not_run_early,
    failures_retry_with_backoff_then_land_in_the_failed_set,
    panics_and_timeouts_fail_the_attempt_not_the_worker,
    a_graceful_stop_hands_unfinished_tasks_back_at_once,
    queues_are_served_in_priority_order,
    inspection_shows_queues_delays_workers_and_deletes,
    an_unsigned_task_record_never_reaches_a_handler,
);

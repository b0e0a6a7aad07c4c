//! Redis is the trust boundary: what someone who can write to Redis, but holds no server token,
//! can and cannot do to the task queue. Redis only: these write keys by hand.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use stellar_bus::{RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, CancellationToken, Config, NodeId};
use stellar_tasks::{
    BatchTask, EnqueueOptions, Enqueued, Error, Recurrence, RedisTaskStore, ScheduleOptions,
    StoreError, TaskConfig, TaskDefinition, TaskState, Tasks, WorkSignal, store::Leadership,
};
use stellar_testkit::RedisServer;

async fn store(
    server: &RedisServer,
    cancel: &CancellationToken,
) -> (RedisPool, (RedisTaskStore, WorkSignal)) {
    let pool = RedisPool::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    let transport: Arc<dyn Transport> = Arc::new(
        RedisTransport::connect(pool.clone(), cancel.clone())
            .await
            .expect("subscriber"),
    );
    (
        pool.clone(),
        (RedisTaskStore::new(pool), WorkSignal::subscribed(transport)),
    )
}

async fn run(pool: &RedisPool, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    pool.query::<redis::Value>("test command", &cmd)
        .await
        .expect("command");
}

/// A node `id` on `store` whose task `work` counts its runs; not started.
fn counting_node(
    (store, signal): (RedisTaskStore, WorkSignal),
    id: &str,
    config: TaskConfig,
) -> (Api, Tasks, Arc<AtomicU32>) {
    let api = Api::new(Config {
        id: Some(NodeId::new(id).expect("id")),
        ..Config::default()
    });
    let tasks = Tasks::new(Arc::new(store), signal, api.node_id().clone(), config);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    tasks.register(TaskDefinition::new(
        "work",
        move |_, _: serde_json::Value| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        },
    ));
    (api, tasks, runs)
}

/// Waits until task `id` is completed, at most 10 s.
async fn completed(tasks: &Tasks, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tasks.show(id).await.expect("show").map(|t| t.state) != Some(TaskState::Completed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} did not complete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_written_by_hand_lands_in_the_failed_set_never_in_a_handler() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let config = TaskConfig {
        idle_poll: Duration::from_millis(50),
        ..TaskConfig::default()
    };
    let (api, tasks, runs) = counting_node(store, "n1", config);
    // HSET + LPUSH: what a Redis writer without the token can do.
    run(
        &pool,
        &[
            "HSET",
            "stellar:{tasks}:task:evil",
            "id",
            "evil",
            "name",
            "work",
            "queue",
            "default",
            "args",
            "null",
            "max_attempts",
            "5",
            "attempts",
            "0",
            "state",
            "queued",
        ],
    )
    .await;
    run(&pool, &["LPUSH", "stellar:{tasks}:queue:default", "evil"]).await;
    let genuine = tasks
        .enqueue("work", &1, EnqueueOptions::default())
        .await
        .expect("enqueue");
    tasks.start(&api);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let evil = tasks.show("evil").await.expect("show").map(|t| t.state);
        let good = tasks.show(&genuine).await.expect("show").map(|t| t.state);
        if evil == Some(TaskState::Failed) && good == Some(TaskState::Completed) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{evil:?} {good:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evil = tasks.show("evil").await.expect("show").expect("record");
    assert!(
        evil.error
            .as_deref()
            .is_some_and(|e| e.starts_with("unsigned")),
        "{evil:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the genuine task ran");
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

/// A schedule written into Redis by hand (no signature, a made-up one, or a genuine record copied
/// under another id) never produces a task; one created through `Tasks::schedule` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_written_by_hand_never_runs() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let config = TaskConfig {
        idle_poll: Duration::from_millis(50),
        maintenance_interval: Duration::from_millis(50),
        ..TaskConfig::default()
    };
    let (api, tasks, runs) = counting_node(store, "n1", config);
    let genuine = tasks
        .schedule(
            "work",
            &"genuine",
            Recurrence::every(Duration::from_millis(100)),
            ScheduleOptions::default().id("genuine"),
        )
        .await
        .expect("schedule");
    let copied = serde_json::to_string(&genuine).expect("json");
    let forged = [
        (
            "unsigned",
            r#"{"name":"unsigned","task":"work","args":"1","queue":"default","every_ms":100}"#
                .to_owned(),
        ),
        (
            "made-up",
            r#"{"name":"made-up","task":"work","args":"1","queue":"default","every_ms":100,"sig":"00ff"}"#
                .to_owned(),
        ),
        (
            "altered",
            copied
                .replace(r#""name":"genuine""#, r#""name":"altered""#)
                .replace(r#""args":"\"genuine\"""#, r#""args":"\"evil\"""#),
        ),
        // The genuine record under another id: its signature covers the id.
        (
            "relabelled",
            copied.replace(r#""name":"genuine""#, r#""name":"relabelled""#),
        ),
        ("copy", copied.clone()),
    ];
    for (id, json) in &forged {
        run(&pool, &["HSET", "stellar:{tasks}:schedules", id, json]).await;
    }
    tasks.start(&api);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let listed = tasks.schedules().await.expect("schedules");
    let problems: Vec<(&str, bool)> = listed
        .iter()
        .map(|info| (info.schedule.id.as_str(), info.problem.is_some()))
        .collect();
    // The copy under another id is not listed (its record names "genuine").
    assert_eq!(
        problems,
        [
            ("altered", true),
            ("genuine", false),
            ("made-up", true),
            ("relabelled", true),
            ("unsigned", true)
        ]
    );
    let refused = api
        .gauges()
        .into_iter()
        .find(|(name, _)| *name == "tasks_schedules_refused");
    assert_eq!(refused, Some(("tasks_schedules_refused", 4)));
    api.shutdown().await.expect("stops");
    let ids: Vec<String> = pool
        .query("KEYS", redis::cmd("KEYS").arg("stellar:{tasks}:task:*"))
        .await
        .expect("keys");
    assert!(
        ids.len() >= 5,
        "the genuine schedule ran too little: {ids:?}"
    );
    assert!(
        ids.iter()
            .all(|key| key.starts_with("stellar:{tasks}:task:recur:genuine:")),
        "a forged schedule produced a task: {ids:?}"
    );
    assert!(runs.load(Ordering::SeqCst) >= 5);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_key_written_by_hand_does_not_stop_the_scheduler() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, (store, _)) = store(&server, &cancel).await;
    let node = NodeId::new("n1").expect("id");
    let lease = Duration::from_secs(3);
    for forged in [
        vec!["SET", "stellar:{tasks}:leader", "x 1"],
        vec![
            "SET",
            "stellar:{tasks}:leader",
            "nobody 7",
            "PX",
            "999999999",
        ],
        vec!["SET", "stellar:{tasks}:leader", "garbage", "PX", "2000"],
    ] {
        run(&pool, &forged).await;
        let epoch = store.try_lead(&node, lease).await.expect("lead");
        assert!(
            epoch.is_some(),
            "{forged:?} kept the leadership from every node"
        );
        assert!(store.resign(&node).await.expect("resign"));
    }
    // A counter overwritten with text or a huge number does not stop every node from leading.
    for epoch in ["garbage", "99999999999999999999"] {
        run(&pool, &["SET", "stellar:{tasks}:leader-epoch", epoch]).await;
        assert!(
            store.try_lead(&node, lease).await.expect("lead").is_some(),
            "{epoch}"
        );
        assert!(store.resign(&node).await.expect("resign"));
    }
    // A genuine leader with a live lease is still respected.
    let other = NodeId::new("n2").expect("id");
    assert!(store.try_lead(&other, lease).await.expect("lead").is_some());
    assert_eq!(store.try_lead(&node, lease).await.expect("lead"), None);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_counters_expire_instead_of_piling_up() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (api, tasks, _) = counting_node(store, "short-lived-1", TaskConfig::default());
    tasks.start(&api);
    let id = tasks
        .enqueue("work", &1, EnqueueOptions::default())
        .await
        .expect("enqueue");
    completed(&tasks, &id).await;
    let stats = tasks.stats().await.expect("stats");
    assert_eq!(
        stats.nodes.get("short-lived-1").map(|n| n.processed),
        Some(1),
        "{stats:?}"
    );
    let ttl: i64 = pool
        .query(
            "PTTL",
            redis::cmd("PTTL").arg("stellar:{tasks}:stats:node:short-lived-1"),
        )
        .await
        .expect("pttl");
    assert!(ttl > 0, "per-node counters never expire (PTTL {ttl})");
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_neither_stop_a_claim_nor_misalign_it() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (api, tasks, runs) = counting_node(store, "n1", TaskConfig::default());
    let mut genuine = Vec::new();
    for n in 0..3 {
        genuine.push(
            tasks
                .enqueue("work", &n, EnqueueOptions::default())
                .await
                .expect("enqueue"),
        );
    }
    // Between the genuine tasks: a record without queue, args or max_attempts, and one whose
    // attempts are not a number (HINCRBY would fail half way through the claim).
    run(
        &pool,
        &[
            "HSET",
            "stellar:{tasks}:task:bare",
            "id",
            "bare",
            "name",
            "work",
            "state",
            "queued",
        ],
    )
    .await;
    run(&pool, &["LPUSH", "stellar:{tasks}:queue:default", "bare"]).await;
    run(
        &pool,
        &[
            "HSET",
            "stellar:{tasks}:task:odd",
            "id",
            "odd",
            "name",
            "work",
            "queue",
            "default",
            "args",
            "null",
            "max_attempts",
            "x",
            "attempts",
            "many",
            "state",
            "queued",
        ],
    )
    .await;
    run(&pool, &["LPUSH", "stellar:{tasks}:queue:default", "odd"]).await;
    for n in 3..6 {
        genuine.push(
            tasks
                .enqueue("work", &n, EnqueueOptions::default())
                .await
                .expect("enqueue"),
        );
    }
    tasks.start(&api);
    for id in &genuine {
        completed(&tasks, id).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6, "only the genuine tasks ran");
    let odd = tasks.show("odd").await.expect("show").map(|t| t.state);
    assert_ne!(
        odd,
        Some(TaskState::Running),
        "a malformed record stayed leased"
    );
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

/// An enqueue rides out a Redis restart: its ids (given, or made up before the first try) make a
/// retry safe, with an id or without, one task or a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_retries_through_a_redis_restart() {
    let mut server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (_pool, (store, signal)) = store(&server, &cancel).await;
    let config = TaskConfig {
        enqueue_retry: Duration::from_secs(15),
        ..TaskConfig::default()
    };
    let tasks = Tasks::new(
        Arc::new(store),
        signal,
        NodeId::new("client").expect("id"),
        config,
    );
    tasks.register(TaskDefinition::new(
        "work",
        |_, _: serde_json::Value| async { Ok(()) },
    ));
    server.kill();
    let background = tasks.clone();
    let with_id = tokio::spawn(async move {
        let options = EnqueueOptions {
            id: Some("must-land".into()),
            ..EnqueueOptions::default()
        };
        background.enqueue("work", &2, options).await
    });
    let background = tasks.clone();
    let without_id = tokio::spawn(async move {
        background
            .enqueue("work", &1, EnqueueOptions::default())
            .await
    });
    let background = tasks.clone();
    let batch = tokio::spawn(async move {
        let batch = (0..3)
            .map(|n| BatchTask {
                name: "work".into(),
                args: serde_json::json!(n),
                options: EnqueueOptions::default(),
                at: None,
            })
            .collect();
        background.enqueue_many(batch).await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.restart();
    let id = with_id
        .await
        .expect("join")
        .expect("the enqueue with an id landed");
    assert_eq!(id, "must-land");
    let made_up = without_id
        .await
        .expect("join")
        .expect("the enqueue without an id landed");
    let batch = batch.await.expect("join").expect("the batch landed");
    assert!(
        batch.iter().all(|s| s.outcome == Enqueued::Added),
        "{batch:?}"
    );
    for id in ["must-land", made_up.as_str()]
        .into_iter()
        .chain(batch.iter().map(|s| s.id.as_str()))
    {
        let record = tasks.show(id).await.expect("show").expect("record");
        assert_eq!(record.state, TaskState::Queued);
    }
    assert_eq!(
        tasks.stats().await.expect("stats").queues["default"].depth,
        5
    );
    cancel.cancel();
}

/// A key of the wrong type at one task's record or queue fails the whole batch before anything
/// is written: a script error half way would keep the tasks before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_key_of_the_wrong_type_fails_a_batch_with_nothing_written() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (_api, tasks, _runs) = counting_node(store, "client", TaskConfig::default());
    let task = |id: &str, queue: &str| BatchTask {
        name: "work".into(),
        args: serde_json::json!(id),
        options: EnqueueOptions {
            id: Some(id.into()),
            queue: Some(queue.into()),
            ..EnqueueOptions::default()
        },
        at: None,
    };
    let length = async |queue: &str| -> u64 {
        let list = format!("stellar:{{tasks}}:queue:{queue}");
        pool.query("LLEN", redis::cmd("LLEN").arg(&list))
            .await
            .expect("llen")
    };

    // The batch `batch` over a planted `what` is refused, and none of `unwritten` is written.
    let refused = async |batch: Vec<BatchTask>, what: &str, unwritten: &[&str]| {
        match tasks.enqueue_many(batch).await {
            Err(Error::Store(StoreError::Refused(_))) => {}
            other => panic!("a batch over a planted {what} was not refused: {other:?}"),
        }
        for id in unwritten {
            assert_eq!(
                tasks.show(id).await.expect("show"),
                None,
                "{id} was written"
            );
        }
    };

    // The second task's record key holds a string.
    run(&pool, &["SET", "stellar:{tasks}:task:b1", "planted"]).await;
    let batch = vec![
        task("b0", "default"),
        task("b1", "default"),
        task("b2", "default"),
    ];
    refused(batch, "record key", &["b0", "b2"]).await;
    assert_eq!(length("default").await, 0, "ids were queued");

    // The third task's queue list holds a string.
    run(&pool, &["SET", "stellar:{tasks}:queue:planted", "x"]).await;
    let batch = vec![
        task("c0", "default"),
        task("c1", "other"),
        task("c2", "planted"),
    ];
    refused(batch, "queue key", &["c0", "c1"]).await;
    assert_eq!(
        (length("default").await, length("other").await),
        (0, 0),
        "ids were queued"
    );

    // Without the planted keys, the same kind of batch is written whole.
    let batch = vec![
        task("d0", "default"),
        task("d1", "default"),
        task("d2", "other"),
    ];
    let submitted = tasks.enqueue_many(batch).await.expect("enqueue many");
    assert!(submitted.iter().all(|s| s.outcome == Enqueued::Added));
    assert_eq!((length("default").await, length("other").await), (2, 1));
    cancel.cancel();
}

/// What others may leave in the schedule keys never stops a schedule: a field that is not UTF-8,
/// a last slot that is not a number or lies far ahead; and a schedule whose recurrence changes
/// runs on its new timetable at once, not where the old one would have run next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedule_state_and_changed_recurrences_never_stop_a_schedule() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let config = TaskConfig {
        idle_poll: Duration::from_millis(50),
        maintenance_interval: Duration::from_millis(50),
        ..TaskConfig::default()
    };
    let (api, tasks, _runs) = counting_node(store, "n1", config);
    let every = |ms| Recurrence::every(Duration::from_millis(ms));
    for id in ["garbage", "ahead"] {
        tasks
            .schedule("work", &id, every(100), ScheduleOptions::default().id(id))
            .await
            .expect("schedule");
    }
    tasks
        .schedule(
            "work",
            &"changed",
            every(3_600_000),
            ScheduleOptions::default().id("changed"),
        )
        .await
        .expect("schedule");
    let mut binary = redis::cmd("HSET");
    binary
        .arg("stellar:{tasks}:schedules")
        .arg(&b"\xff\xfe"[..])
        .arg(&b"\xff"[..]);
    pool.query::<redis::Value>("HSET", &binary)
        .await
        .expect("hset");
    let far = (stellar_core::time::now_ms() + 10 * 86_400_000).to_string();
    run(&pool, &["HSET", "stellar:{tasks}:last-slot", "ahead", &far]).await;
    run(
        &pool,
        &["HSET", "stellar:{tasks}:last-slot", "garbage", "abc"],
    )
    .await;
    tasks.start(&api);
    tokio::time::sleep(Duration::from_millis(600)).await;
    tasks
        .schedule(
            "work",
            &"changed",
            every(100),
            ScheduleOptions::default().id("changed"),
        )
        .await
        .expect("schedule");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    api.shutdown().await.expect("stops");
    for id in ["garbage", "ahead", "changed"] {
        let keys: Vec<String> = pool
            .query(
                "KEYS",
                redis::cmd("KEYS").arg(format!("stellar:{{tasks}}:task:recur:{id}:*")),
            )
            .await
            .expect("keys");
        assert!(keys.len() >= 3, "schedule {id} ran {} time(s)", keys.len());
    }
    cancel.cancel();
}

/// Run now reads the record's queue before it writes anything: a planted delayed record without
/// one is left exactly as it was (still delayed, still in the delayed set), never half moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_leaves_a_delayed_record_without_a_queue_untouched() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (_api, tasks, _runs) = counting_node(store, "n1", TaskConfig::default());
    run(
        &pool,
        &[
            "HSET",
            "stellar:{tasks}:task:queueless",
            "id",
            "queueless",
            "name",
            "work",
            "state",
            "delayed",
        ],
    )
    .await;
    let due = (stellar_core::time::now_ms() + 3_600_000).to_string();
    run(
        &pool,
        &["ZADD", "stellar:{tasks}:delayed", &due, "queueless"],
    )
    .await;
    assert!(!tasks.run_now("queueless").await.expect("run now"));
    let state: Option<String> = pool
        .query(
            "HGET",
            redis::cmd("HGET")
                .arg("stellar:{tasks}:task:queueless")
                .arg("state"),
        )
        .await
        .expect("hget");
    assert_eq!(state.as_deref(), Some("delayed"));
    let score: Option<f64> = pool
        .query(
            "ZSCORE",
            redis::cmd("ZSCORE")
                .arg("stellar:{tasks}:delayed")
                .arg("queueless"),
        )
        .await
        .expect("zscore");
    assert!(score.is_some(), "still in the delayed set");
    cancel.cancel();
}

/// The reaper takes back running records written by hand without attempts, max_attempts or a
/// queue (coerced as a claim does: no attempts left, or nowhere to go back to, so failed), and
/// one whose queue and name are not UTF-8: its reply is read lossily, labels cut at 128 bytes,
/// instead of failing after the script already moved the tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_takes_back_malformed_and_non_utf8_running_records() {
    use stellar_tasks::store::{ReapOutcome, TaskMaintenance};

    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, (store, _signal)) = store(&server, &cancel).await;
    let running = |id: &str, extra: &[&str]| {
        let mut fields = vec![
            "HSET".to_owned(),
            format!("stellar:{{tasks}}:task:{id}"),
            "id".to_owned(),
            id.to_owned(),
            "state".to_owned(),
            "running".to_owned(),
        ];
        fields.extend(extra.iter().map(|s| (*s).to_owned()));
        fields
    };
    for (id, extra) in [
        ("no-attempts", &["name", "work", "queue", "default"][..]),
        (
            "no-queue",
            &["name", "work", "attempts", "1", "max_attempts", "3"][..],
        ),
    ] {
        let fields = running(id, extra);
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        run(&pool, &fields).await;
        run(&pool, &["ZADD", "stellar:{tasks}:inflight", "0", id]).await;
    }
    let long_name = "n".repeat(300);
    let mut binary = redis::cmd("HSET");
    binary
        .arg("stellar:{tasks}:task:binary")
        .arg("id")
        .arg("binary")
        .arg("state")
        .arg("running")
        .arg("attempts")
        .arg("1")
        .arg("max_attempts")
        .arg("3")
        .arg("queue")
        .arg(&b"q\xff"[..])
        .arg("name")
        .arg(&long_name);
    pool.query::<redis::Value>("HSET", &binary)
        .await
        .expect("hset");
    run(&pool, &["ZADD", "stellar:{tasks}:inflight", "0", "binary"]).await;

    let mut reaped = store.reap(100).await.expect("reap reads the reply");
    reaped.sort_by(|a, b| a.queue.cmp(&b.queue));
    assert_eq!(reaped.len(), 3, "{reaped:?}");
    let outcomes: Vec<(&str, usize, ReapOutcome)> = reaped
        .iter()
        .map(|r| (r.queue.as_str(), r.name.len(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("", 4, ReapOutcome::Failed),
            ("default", 4, ReapOutcome::Failed),
            ("q\u{fffd}", 128, ReapOutcome::Requeued),
        ]
    );
    for (id, state) in [
        ("no-attempts", "failed"),
        ("no-queue", "failed"),
        ("binary", "queued"),
    ] {
        let found: Option<String> = pool
            .query(
                "HGET",
                redis::cmd("HGET")
                    .arg(format!("stellar:{{tasks}}:task:{id}"))
                    .arg("state"),
            )
            .await
            .expect("hget");
        assert_eq!(found.as_deref(), Some(state), "{id}");
    }
    assert!(store.reap(100).await.expect("reap").is_empty());
    cancel.cancel();
}

/// An id listed twice in its queue (pushed again by hand, or left by a crash between two steps
/// of an older version) is claimed once, even when both copies come in one claim batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_listed_twice_in_its_queue_runs_once() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (api, tasks, runs) = counting_node(store, "n1", TaskConfig::default());
    let options = EnqueueOptions {
        id: Some("twice".into()),
        ..EnqueueOptions::default()
    };
    tasks.enqueue("work", &1, options).await.expect("enqueue");
    run(
        &pool,
        &["LPUSH", "stellar:{tasks}:queue:default", "twice", "twice"],
    )
    .await;
    tasks.start(&api);
    completed(&tasks, "twice").await;
    // A second run would start within a claim of the first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the task ran more than once"
    );
    let record = tasks.show("twice").await.expect("show").expect("record");
    assert_eq!(record.attempts, 1, "one claim only");
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

/// Concurrent single enqueues share store calls (they are combined while one is in flight), and
/// a key planted under one task's id fails that enqueue alone: every other caller's task is
/// added, whether or not it shared a call with the refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_calls_and_a_planted_key_fails_only_its_own() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (_api, tasks, _) = counting_node(store, "n1", TaskConfig::default());
    run(
        &pool,
        &["SET", "stellar:{tasks}:task:planted", "not a hash"],
    )
    .await;
    let script_calls = async || {
        let info: String = pool
            .query("INFO", redis::cmd("INFO").arg("commandstats"))
            .await
            .expect("info");
        info.lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for round in 0..3 {
        let before = script_calls().await;
        let callers: Vec<_> = (0..200)
            .map(|n| {
                let tasks = tasks.clone();
                tokio::spawn(async move {
                    // Round 0 has no planted id: it shows the sharing.
                    let id = if n == 100 && round > 0 {
                        "planted".to_owned()
                    } else {
                        format!("r{round}-{n}")
                    };
                    let options = EnqueueOptions {
                        id: Some(id.clone()),
                        ..EnqueueOptions::default()
                    };
                    (id, tasks.submit("work", &n, options, None).await)
                })
            })
            .collect();
        for caller in callers {
            let (id, result) = caller.await.expect("caller");
            if id == "planted" {
                assert!(
                    matches!(result, Err(Error::Store(StoreError::Refused(_)))),
                    "the planted id was not refused: {result:?}"
                );
            } else {
                let submitted = result.expect("an unrelated enqueue failed");
                assert_eq!(submitted.outcome, Enqueued::Added, "{id}");
                let record = tasks.show(&id).await.expect("show").expect("record");
                assert_eq!(record.state, TaskState::Queued, "{id}");
            }
        }
        if round == 0 {
            let calls = script_calls().await - before;
            assert!(
                calls < 200,
                "{calls} script calls for 200 concurrent enqueues"
            );
        }
    }
    let queued: u64 = pool
        .query(
            "LLEN",
            redis::cmd("LLEN").arg("stellar:{tasks}:queue:default"),
        )
        .await
        .expect("llen");
    assert_eq!(
        queued,
        200 + 2 * 199,
        "every added task is in its queue once"
    );
    cancel.cancel();
}

/// Keys of the wrong type planted where a claim, an acknowledgement or a promotion reads them fail
/// nothing half way: Redis keeps what a script wrote before an error, so a batch that stopped at
/// one would strand the ids it had popped (in no list, or running without a lease). Every genuine
/// task still runs; the planted ids are passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_keys_of_another_type_strand_nothing_around_them() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (api, tasks, runs) = counting_node(store, "n1", TaskConfig::default());
    let mut genuine = Vec::new();
    let mut enqueue = async |at: Option<std::time::SystemTime>| {
        let submitted = tasks
            .submit("work", &1, EnqueueOptions::default(), at)
            .await
            .expect("enqueue");
        genuine.push(submitted.id);
    };
    for _ in 0..3 {
        enqueue(None).await;
    }
    // A queued id whose record is a string, between genuine tasks of one claim batch.
    run(&pool, &["SET", "stellar:{tasks}:task:string", "x"]).await;
    run(&pool, &["LPUSH", "stellar:{tasks}:queue:default", "string"]).await;
    for _ in 0..3 {
        enqueue(None).await;
    }
    // A task of a name this node cannot run, whose parked list is a string.
    run(
        &pool,
        &[
            "HSET",
            "stellar:{tasks}:task:foreign",
            "id",
            "foreign",
            "name",
            "other",
            "queue",
            "default",
            "state",
            "queued",
        ],
    )
    .await;
    run(
        &pool,
        &["LPUSH", "stellar:{tasks}:queue:default", "foreign"],
    )
    .await;
    run(&pool, &["SET", "stellar:{tasks}:parked:default other", "x"]).await;
    enqueue(None).await;
    // Due delayed ids: one whose record is a list, one whose queue key is a string.
    run(&pool, &["RPUSH", "stellar:{tasks}:task:listed", "x"]).await;
    run(&pool, &["ZADD", "stellar:{tasks}:delayed", "1", "listed"]).await;
    run(
        &pool,
        &[
            "HSET",
            "stellar:{tasks}:task:stuck",
            "id",
            "stuck",
            "name",
            "work",
            "queue",
            "blocked",
            "state",
            "delayed",
        ],
    )
    .await;
    run(&pool, &["SET", "stellar:{tasks}:queue:blocked", "x"]).await;
    run(&pool, &["ZADD", "stellar:{tasks}:delayed", "1", "stuck"]).await;
    let soon = std::time::SystemTime::now() + Duration::from_millis(200);
    for _ in 0..3 {
        enqueue(Some(soon)).await;
    }
    tasks.start(&api);
    for id in &genuine {
        completed(&tasks, id).await;
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        10,
        "every genuine task ran once"
    );
    let foreign: Option<u64> = pool
        .query(
            "LPOS",
            redis::cmd("LPOS")
                .arg("stellar:{tasks}:queue:default")
                .arg("foreign"),
        )
        .await
        .expect("lpos");
    assert!(
        foreign.is_some(),
        "a task that could not be parked went back to its queue"
    );
    let in_flight: u64 = pool
        .query("ZCARD", redis::cmd("ZCARD").arg("stellar:{tasks}:inflight"))
        .await
        .expect("zcard");
    assert_eq!(in_flight, 0, "no lease left behind");
    let stuck: Option<f64> = pool
        .query(
            "ZSCORE",
            redis::cmd("ZSCORE")
                .arg("stellar:{tasks}:delayed")
                .arg("stuck"),
        )
        .await
        .expect("zscore");
    assert!(
        stuck.is_some(),
        "a task whose queue cannot take it stays delayed"
    );
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

/// A hash without a state planted under an id (not a record any step writes) does not leak its
/// fields or its expiry into the task enqueued with that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_over_a_planted_stateless_hash_writes_a_clean_record() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let (pool, store) = store(&server, &cancel).await;
    let (_api, tasks, _) = counting_node(store, "n1", TaskConfig::default());
    run(
        &pool,
        &["HSET", "stellar:{tasks}:task:ghost", "planted", "1"],
    )
    .await;
    run(&pool, &["PEXPIRE", "stellar:{tasks}:task:ghost", "100000"]).await;
    let options = EnqueueOptions {
        id: Some("ghost".into()),
        ..EnqueueOptions::default()
    };
    let submitted = tasks
        .submit("work", &1, options, None)
        .await
        .expect("enqueue");
    assert_eq!(submitted.outcome, Enqueued::Added);
    let planted: Option<String> = pool
        .query(
            "HGET",
            redis::cmd("HGET")
                .arg("stellar:{tasks}:task:ghost")
                .arg("planted"),
        )
        .await
        .expect("hget");
    let ttl: i64 = pool
        .query("PTTL", redis::cmd("PTTL").arg("stellar:{tasks}:task:ghost"))
        .await
        .expect("pttl");
    assert_eq!(
        (planted, ttl),
        (None, -1),
        "the planted hash leaked into the record"
    );
    cancel.cancel();
}

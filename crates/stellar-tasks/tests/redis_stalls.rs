//! A Redis that stalls: commands that time out on the client while Redis may still run them
//! (`CLIENT PAUSE WRITE` holds every script until the pause ends, then runs it). Redis only: the
//! memory store never times out.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use stellar_bus::{RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, CancellationToken, Config, NodeId};
use stellar_tasks::{
    BatchTask, EnqueueOptions, Enqueued, Error, RedisTaskStore, TaskConfig, TaskDefinition,
    TaskState, Tasks, WorkSignal,
};
use stellar_testkit::RedisServer;
use tracing::{Event, Level, Metadata, Subscriber, field, span};

/// The messages of the warnings logged on this thread while it is the default subscriber.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn matching(&self, needle: &str) -> Vec<String> {
        let all = self.0.lock().expect("warnings");
        all.iter().filter(|m| m.contains(needle)).cloned().collect()
    }
}

struct Message(String);

impl field::Visit for Message {
    fn record_debug(&mut self, field: &field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().expect("warnings").push(message.0);
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// A node on `server` whose Redis commands time out after `op_timeout`; not started.
async fn node(
    server: &RedisServer,
    cancel: &CancellationToken,
    op_timeout: Duration,
    config: TaskConfig,
) -> (Api, Tasks) {
    let pool = RedisPool::connect(RedisConfig::new(server.url()).with_op_timeout(op_timeout))
        .await
        .expect("redis");
    let transport: Arc<dyn Transport> = Arc::new(
        RedisTransport::connect(pool.clone(), cancel.clone())
            .await
            .expect("subscriber"),
    );
    let api = Api::new(Config {
        id: Some(NodeId::new("n1").expect("id")),
        ..Config::default()
    });
    let tasks = Tasks::new(
        Arc::new(RedisTaskStore::new(pool)),
        WorkSignal::subscribed(transport),
        api.node_id().clone(),
        config,
    );
    (api, tasks)
}

/// Holds every script on `server` for `pause` (from a connection of its own).
async fn pause_writes(server: &RedisServer, pause: Duration) {
    let admin = RedisPool::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("PAUSE").arg(pause.as_millis() as u64).arg("WRITE");
    admin
        .query::<String>("CLIENT PAUSE", &cmd)
        .await
        .expect("pause");
}

/// One thread, so every log line of the node reaches the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn failing_lease_renewals_are_logged_once_not_per_task() {
    let warnings = Warnings::default();
    let _logs = tracing::subscriber::set_default(warnings.clone());
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let config = TaskConfig {
        lease: Duration::from_secs(3),
        idle_poll: Duration::from_millis(100),
        maintenance_interval: Duration::from_millis(50),
        drain_timeout: Duration::from_secs(1),
        ..TaskConfig::default()
    };
    let (api, tasks) = node(&server, &cancel, Duration::from_millis(200), config).await;
    let (go, gate) = tokio::sync::watch::channel(false);
    tasks.register(TaskDefinition::new("hold", move |_, _: ()| {
        let mut gate = gate.clone();
        async move {
            gate.wait_for(|go| *go).await?;
            Ok(())
        }
    }));
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = tasks
            .enqueue("hold", &(), EnqueueOptions::default())
            .await
            .expect("enqueue");
        ids.push(id);
    }
    tasks.start(&api);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tasks.running_here() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tasks did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Renewals come every second (a third of the lease): the one at about 1 s times out for all
    // five tasks, the one at about 2 s works again.
    pause_writes(&server, Duration::from_millis(1_500)).await;
    tokio::time::sleep(Duration::from_millis(2_400)).await;
    let renewals = warnings.matching("renew");
    assert_eq!(
        renewals.len(),
        1,
        "failing renewals of 5 tasks logged at warn: {renewals:?}"
    );
    go.send_replace(true);
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tasks.show(id).await.expect("show").map(|t| t.state) != Some(TaskState::Completed) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} did not complete"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

/// A client only: enqueues, runs nothing. Its first enqueue (a task `warm-up`) has loaded the
/// script, so a call held by a pause runs when the pause ends (not `NOSCRIPT`, which the client
/// would answer by loading the script, had it not given up by then).
async fn client(
    server: &RedisServer,
    cancel: &CancellationToken,
    enqueue_retry: Duration,
) -> Tasks {
    let config = TaskConfig {
        enqueue_retry,
        ..TaskConfig::default()
    };
    let (_api, tasks) = node(server, cancel, Duration::from_millis(200), config).await;
    tasks.register(TaskDefinition::new(
        "work",
        |_, _: serde_json::Value| async { Ok(()) },
    ));
    let warm_up = EnqueueOptions {
        id: Some("warm-up".into()),
        ..EnqueueOptions::default()
    };
    tasks.enqueue("work", &(), warm_up).await.expect("enqueue");
    tasks
}

/// Fifty tasks, every other one with an id of its own.
fn fifty(prefix: &str) -> Vec<BatchTask> {
    (0..50)
        .map(|n| BatchTask {
            name: "work".into(),
            args: serde_json::json!(n),
            options: EnqueueOptions {
                id: (n % 2 == 0).then(|| format!("{prefix}-{n}")),
                ..EnqueueOptions::default()
            },
            at: None,
        })
        .collect()
}

/// How many tasks wait in the default queue, besides the warm-up.
async fn queue_length(server: &RedisServer) -> u64 {
    let admin = RedisPool::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    let length: u64 = admin
        .query(
            "LLEN",
            redis::cmd("LLEN").arg("stellar:{tasks}:queue:default"),
        )
        .await
        .expect("llen");
    length - 1
}

/// The first try times out on the client but runs in Redis once the pause ends; the retries of
/// the same batch (same ids, those made up included) add nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_reply_is_lost_is_retried_without_a_second_copy() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let tasks = client(&server, &cancel, Duration::from_secs(10)).await;
    pause_writes(&server, Duration::from_millis(700)).await;
    let submitted = tasks
        .enqueue_many(fifty("lost"))
        .await
        .expect("enqueued after retrying");
    assert_eq!(
        queue_length(&server).await,
        50,
        "tasks were added twice or not at all"
    );
    for (n, one) in submitted.iter().enumerate() {
        let record = tasks.show(&one.id).await.expect("show").expect("record");
        assert_eq!(record.args, n.to_string());
        if n % 2 == 1 {
            assert_eq!(
                one.outcome,
                Enqueued::Added,
                "a made-up id found existing can only be this call's"
            );
        }
    }
    // A single enqueue without an id rides out the same stall.
    pause_writes(&server, Duration::from_millis(700)).await;
    let id = tasks
        .enqueue("work", &"one", EnqueueOptions::default())
        .await
        .expect("enqueued after retrying");
    assert_eq!(queue_length(&server).await, 51);
    assert!(tasks.show(&id).await.expect("show").is_some());
    cancel.cancel();
}

/// When Redis never answers within `enqueue_retry`, the caller learns the outcome is unknown,
/// with the ids to look up; once the pause ended the batch is there whole, or not at all. (A
/// command that timed out drops its connection, so a try still held by the pause may be
/// discarded with it: which one happens is what "unknown" means.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_redis_never_confirms_is_reported_as_unknown_not_as_lost() {
    let server = RedisServer::start();
    let cancel = CancellationToken::new();
    let tasks = client(&server, &cancel, Duration::from_millis(400)).await;
    pause_writes(&server, Duration::from_millis(1_500)).await;
    let paused_at = tokio::time::Instant::now();
    let ids = match tasks.enqueue_many(fifty("unknown")).await {
        Err(err @ Error::OutcomeUnknown { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("all or none of them may have been enqueued"),
                "{text}"
            );
            let Error::OutcomeUnknown { ids, .. } = err else {
                unreachable!()
            };
            ids
        }
        other => panic!("an unconfirmed batch was reported as {other:?}"),
    };
    assert_eq!((ids.len(), ids[0].as_str()), (50, "unknown-0"));
    // Past the pause (and a held try's run), the batch is there whole or not at all.
    tokio::time::sleep_until(paused_at + Duration::from_millis(2_500)).await;
    let landed = queue_length(&server).await;
    assert!(
        landed == 0 || landed == 50,
        "{landed} of the batch's 50 tasks landed"
    );
    for id in &ids {
        assert_eq!(
            tasks.show(id).await.expect("show").is_some(),
            landed == 50,
            "{id} of a batch of which {landed} landed"
        );
    }

    // A batch that replaces a task is not retried (a retry could replace the first try's run).
    let tasks = client(&server, &cancel, Duration::from_secs(10)).await;
    let mut replacing = fifty("replacing");
    replacing[0].options.replace = true;
    pause_writes(&server, Duration::from_millis(1_500)).await;
    let started = tokio::time::Instant::now();
    match tasks.enqueue_many(replacing).await {
        Err(Error::OutcomeUnknown { ids, .. }) => assert_eq!(ids.len(), 50),
        other => panic!("an unconfirmed replacing batch was reported as {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a replacing batch was retried for {:?}",
        started.elapsed()
    );
    cancel.cancel();
}

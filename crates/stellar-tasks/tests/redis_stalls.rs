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
    EnqueueOptions, RedisTaskStore, TaskConfig, TaskDefinition, TaskState, Tasks, WorkSignal,
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

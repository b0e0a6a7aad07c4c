//! What every contract case shares: the backends, a fast config, helpers, the `contract!` macro.

pub(crate) use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

pub(crate) use stellar_bus::{RedisConfig, RedisPool, RedisTransport, Transport};
pub(crate) use stellar_core::{Api, CancellationToken, Config, NodeId};
pub(crate) use stellar_tasks::{
    BatchTask, EnqueueOptions, Enqueued, Error, MemoryTaskStore, PAUSE_REFRESH, Recurrence,
    RedisTaskStore, Schedule, TaskConfig, TaskDefinition, TaskError, TaskState, TaskStore, Tasks,
    WorkSignal, WorkerInfo,
    store::{ClaimRequest, Claimed, FailOutcome, NewTask, ReapOutcome, Reaped, Slot},
};
pub(crate) use stellar_testkit::BackendKind;

/// A case's backend: one memory store every node shares, or a Redis server each node connects
/// to anew (its subscribers stopped when the case ends).
pub(crate) struct Backend {
    kind: BackendKind,
    memory: MemoryTaskStore,
    cancel: CancellationToken,
}

impl From<BackendKind> for Backend {
    fn from(kind: BackendKind) -> Self {
        Self {
            kind,
            memory: MemoryTaskStore::new(),
            cancel: CancellationToken::new(),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Backend {
    pub(crate) async fn store(&self) -> Arc<dyn TaskStore> {
        self.store_and_signal().await.0
    }

    /// A store of this backend, and the signal its workers wake up on.
    pub(crate) async fn store_and_signal(&self) -> (Arc<dyn TaskStore>, WorkSignal) {
        match self.kind.url() {
            None => (Arc::new(self.memory.clone()), self.memory.signal()),
            Some(url) => {
                let pool = RedisPool::connect(RedisConfig::new(url))
                    .await
                    .expect("redis");
                let transport: Arc<dyn Transport> = Arc::new(
                    RedisTransport::connect(pool.clone(), self.cancel.clone())
                        .await
                        .expect("subscriber"),
                );
                (
                    Arc::new(RedisTaskStore::new(pool)),
                    WorkSignal::subscribed(transport),
                )
            }
        }
    }

    /// A node: its Api and its Tasks, not started.
    pub(crate) async fn node(&self, id: &str, config: TaskConfig) -> (Api, Tasks) {
        let api = Api::new(Config {
            id: Some(NodeId::new(id).expect("id")),
            shutdown_timeout: Duration::from_secs(5),
            ..Config::default()
        });
        let (store, signal) = self.store_and_signal().await;
        let tasks = Tasks::new(store, signal, api.node_id().clone(), config);
        (api, tasks)
    }
}

pub(crate) fn fast() -> TaskConfig {
    TaskConfig {
        lease: Duration::from_millis(600),
        idle_poll: Duration::from_millis(100),
        maintenance_interval: Duration::from_millis(50),
        ..TaskConfig::default()
    }
}

pub(crate) type Runs = Arc<Mutex<HashMap<String, u32>>>;

/// Registers `work`, which counts runs per task id.
pub(crate) fn counting(tasks: &Tasks, runs: &Runs) {
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
pub(crate) fn request(
    queues: &[String],
    node: &NodeId,
    lease: Duration,
    max: usize,
) -> ClaimRequest {
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

/// Waits up to 20 s (tasks go through leases and retries) for `check`.
pub(crate) async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    stellar_testkit::eventually_within(what, Duration::from_secs(20), check).await;
}

pub(crate) async fn state_of(tasks: &Tasks, id: &str) -> Option<TaskState> {
    tasks.show(id).await.expect("show").map(|t| t.state)
}

pub(crate) fn plain_task(id: &str, name: &str, max_attempts: u32) -> NewTask {
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
        trace: None,
    }
}

/// Runs each case of the enclosing module on both backends: memory on a paused clock, Redis in
/// real time.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        stellar_testkit::contract_cases! {
            memory: #[tokio::test(start_paused = true)],
            redis: #[tokio::test(flavor = "multi_thread", worker_threads = 2)],
            cases: [$($case),*],
        }
    };
}

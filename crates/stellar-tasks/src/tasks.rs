//! Task definitions and the `Tasks` handle: enqueue, inspect, start the workers.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use serde::{Serialize, de::DeserializeOwned};
use stellar_bus::{RecordSigner, TransportError};
use stellar_core::{Api, NodeId, ServerToken, sync};
use tracing::warn;

use crate::{
    Enqueued, Error, HandlerError, Recurrence, Result, Schedule, ScheduleInfo, Stats, StoreError,
    TaskRecord, TaskState, TaskStore, WorkSignal, WorkerInfo,
    coalesce::Coalescer,
    metrics::TaskMetrics,
    retry::Retry,
    store::{Claimed, NewTask, now_ms, task_signature_fields},
    timetable::Timetable,
    worker,
};

/// The context of task record signatures.
const SIGNATURE_CONTEXT: &str = "stellar task record v1";
/// The context of recurring schedule signatures.
const SCHEDULE_SIGNATURE_CONTEXT: &str = "stellar task schedule v1";

/// The RPC method that quiets a node (`{"quiet": true}`) or lets it take tasks again
/// (`{"quiet": false}`); it answers `{"node_id", "quiet"}`. Every node serves it.
pub const QUIET_METHOD: &str = "tasks.quiet";

/// How often a worker pool reads the paused queues: a pause is honoured by every node within it.
pub const PAUSE_REFRESH: Duration = Duration::from_millis(500);

/// The queue of tasks that name none.
pub const DEFAULT_QUEUE: &str = "default";

/// The longest a failed attempt waits for its retry (30 days): a longer backoff or
/// [`crate::TaskError::retry_after`] delay is taken as this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type Handler = Arc<dyn Fn(TaskContext, String) -> BoxFuture + Send + Sync>;

/// What a handler learns about the run, and how it reports progress.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task's id.
    pub id: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The node running it.
    pub node_id: NodeId,
    /// The store and the claim, to record progress under.
    pub(crate) claim: Arc<(Arc<dyn TaskStore>, Claimed)>,
}

impl TaskContext {
    /// Records how far this attempt got, on the task's record (`Tasks::show`, `stellar tasks
    /// show`): a percentage (`ctx.progress(40_u8)`) or any JSON (`ctx.progress(json!({"step":
    /// "upload"}))`). Each report replaces the last; it stays after the task ends, and the next
    /// attempt starts without it. False if this worker lost the lease (another node may run the
    /// task now).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `progress` does not serialize; [`Error::Store`].
    pub async fn progress<P: Serialize + ?Sized>(&self, progress: &P) -> Result<bool> {
        let (store, claimed) = &*self.claim;
        let json = serde_json::to_string(progress).map_err(|source| Error::Encode {
            name: claimed.name.clone(),
            source,
        })?;
        Ok(store.progress(claimed, &json).await?)
    }
}

/// A task type: its name, handler and policies.
#[derive(Clone)]
pub struct TaskDefinition {
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) timeout: Duration,
    pub(crate) every: Option<Duration>,
    pub(crate) handler: Handler,
}

impl fmt::Debug for TaskDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskDefinition")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TaskDefinition {
    /// A task named `name` whose arguments are decoded from JSON into `A`. Defaults: queue
    /// `default`, 5 attempts, backoff from 1 s doubling to 5 min (with jitter), timeout 5 min.
    pub fn new<A, F, Fut>(name: impl Into<String>, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, args| {
            let handler = handler.clone();
            Box::pin(async move {
                let args: A = serde_json::from_str(&args)
                    .map_err(|err| format!("invalid arguments: {err}"))?;
                handler(ctx, args).await
            })
        });
        Self {
            name: name.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            timeout: Duration::from_secs(300),
            every: None,
            handler: erased,
        }
    }

    /// Puts the task in `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Gives it `n` attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Waits `base * 2^(attempt-1)`, at most `max` (and at most [`MAX_RETRY_DELAY`]), with
    /// ±20 % jitter, before a retry.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base.min(MAX_RETRY_DELAY);
        self.backoff_max = max.max(base).min(MAX_RETRY_DELAY);
        self
    }

    /// Fails an attempt that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the task (with `null` arguments) once per `every` slot of wall-clock time, cluster
    /// wide: slots start at multiples of `every` since the Unix epoch, and each slot is enqueued
    /// at most once whatever the number of nodes. A failing run does not stop the next slot.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = Some(every.max(Duration::from_millis(1)));
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn retry_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let delay = self
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(self.backoff_max);
        // Plus or minus a fifth, so many nodes retrying after one failure spread out.
        stellar_core::time::jitter(delay, 0.2)
    }
}

/// How a node runs tasks.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// The queues this node's workers serve, highest priority first.
    pub queues: Vec<String>,
    /// How many tasks run at once on this node.
    pub concurrency: usize,
    /// How long a claim lasts without renewal; workers renew every third of it.
    pub lease: Duration,
    /// How long completed task records are kept for `show`; while kept, their id is not enqueued
    /// again (unless replaced explicitly).
    pub keep_completed: Duration,
    /// How long an enqueue (one task or a batch) retries transient Redis errors before it reports
    /// failure. Every task's id is fixed before the first try (a given one, or one made up), so
    /// asking again after a lost reply adds nothing twice. An enqueue that replaces a task is not
    /// retried: a retry could replace the run the first try started. When the store never
    /// answered and a try may have run, the error is [`Error::OutcomeUnknown`].
    pub enqueue_retry: Duration,
    /// Signs task records at enqueue and verifies them before they run: a record written by
    /// someone without the server token never reaches a handler.
    pub signer: RecordSigner,
    /// The longest an idle worker waits without a wake-up before it looks again.
    pub idle_poll: Duration,
    /// How often this node promotes due tasks and reaps expired leases.
    pub maintenance_interval: Duration,
    /// On a graceful stop, how long in-flight tasks may run before they are handed back.
    pub drain_timeout: Duration,
    /// The scheduler leader's lease: a new leader takes over within it after the old one dies.
    pub leader_lease: Duration,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            queues: vec![DEFAULT_QUEUE.to_owned()],
            concurrency: 10,
            lease: Duration::from_secs(30),
            keep_completed: Duration::from_secs(3600),
            enqueue_retry: Duration::from_secs(10),
            signer: RecordSigner::new(&ServerToken::default(), None),
            idle_poll: Duration::from_millis(500),
            maintenance_interval: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(8),
            leader_lease: Duration::from_secs(3),
        }
    }
}

/// How to enqueue one task.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// The queue; default: the definition's.
    pub queue: Option<String>,
    /// The task id, an idempotency key: while a task with this id has a record (pending, running,
    /// completed within `keep_completed`, or failed), enqueueing it again adds nothing and reports
    /// the existing state. Default: a fresh id.
    pub id: Option<String>,
    /// Run a completed or failed task with this id again (a fresh record). A pending or running
    /// task is never replaced.
    pub replace: bool,
}

/// How to schedule a recurring task ([`Tasks::schedule`]).
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// The schedule's id, which [`Tasks::unschedule`] takes and its slots' task ids carry
    /// (`recur:<id>:<fire time ms>`). Default: the task's name, so a task has one schedule unless
    /// its schedules are given ids.
    pub id: Option<String>,
    /// The queue its slots go to; default: the definition's.
    pub queue: Option<String>,
}

impl ScheduleOptions {
    /// The schedule's id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The queue its slots go to.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

/// The most tasks [`Tasks::enqueue_many`] takes in one batch.
pub const MAX_BATCH: usize = 10_000;

/// The most bytes of arguments (their JSON, added up over the tasks) [`Tasks::enqueue_many`]
/// takes in one batch: 4 MiB. On Redis a batch is one script call that must arrive and run
/// within the command timeout.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One task of [`Tasks::enqueue_many`].
#[derive(Debug, Clone)]
pub struct BatchTask {
    /// The task definition's name.
    pub name: String,
    /// Its arguments.
    pub args: serde_json::Value,
    /// Its queue, id (idempotency key) and replace flag.
    pub options: EnqueueOptions,
    /// When it may run; `None`: now.
    pub at: Option<SystemTime>,
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The task's id.
    pub id: String,
    /// Whether it was added, or what already holds the id.
    pub outcome: Enqueued,
}

/// The task system of a node (or of a client that only enqueues). Cloning it is cheap.
#[derive(Clone)]
pub struct Tasks {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn TaskStore>,
    /// What wakes this node's idle workers when work becomes ready.
    pub(crate) signal: WorkSignal,
    pub(crate) node_id: NodeId,
    pub(crate) config: TaskConfig,
    definitions: RwLock<HashMap<String, TaskDefinition>>,
    /// The names of `definitions`, sorted, rebuilt by `register`: every claim sends them.
    names: RwLock<Arc<[String]>>,
    /// Tasks this node is running now.
    pub(crate) running_here: AtomicU64,
    /// Schedules the scheduler skipped at its last look while this node led (bad signature, or
    /// a recurrence that cannot run here).
    pub(crate) refused_schedules: AtomicU64,
    /// What this node's workers and scheduler did, for `GET /metrics`.
    pub(crate) metrics: TaskMetrics,
    /// Quiet: this node's workers take no new task.
    quiet: AtomicBool,
    /// The paused queues as last read, and when.
    paused: Mutex<PausedCache>,
    /// Combines concurrent single enqueues into store batches.
    coalescer: Coalescer,
}

/// The paused queues as a claim sees them.
#[derive(Default)]
struct PausedCache {
    /// When `set` was read; `None`: never, or forgotten (the next claim reads again).
    at: Option<tokio::time::Instant>,
    set: Arc<BTreeSet<String>>,
    /// Bumped when the set is forgotten: a read that started before does not store its set.
    generation: u64,
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("node_id", &self.inner.node_id)
            .field("store", &self.inner.store)
            .finish()
    }
}

impl Tasks {
    /// Tasks on `store` for node `node_id`; its idle workers wake up on `signal` (the memory
    /// store's [`crate::MemoryTaskStore::signal`], or [`WorkSignal::subscribed`] to the node's
    /// transport for Redis).
    pub fn new(
        store: Arc<dyn TaskStore>,
        signal: WorkSignal,
        node_id: NodeId,
        config: TaskConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                coalescer: Coalescer::new(store.clone()),
                store,
                signal,
                node_id,
                config,
                definitions: RwLock::new(HashMap::new()),
                names: RwLock::new(Arc::from([])),
                running_here: AtomicU64::new(0),
                refused_schedules: AtomicU64::new(0),
                metrics: TaskMetrics::default(),
                quiet: AtomicBool::new(false),
                paused: Mutex::default(),
            }),
        }
    }

    /// Registers a task type (replacing one of the same name).
    pub fn register(&self, definition: TaskDefinition) {
        let mut definitions = sync::write(&self.inner.definitions);
        definitions.insert(definition.name.clone(), definition);
        let mut names: Vec<String> = definitions.keys().cloned().collect();
        names.sort();
        *sync::write(&self.inner.names) = names.into();
    }

    pub(crate) fn definitions(&self) -> Vec<TaskDefinition> {
        sync::read(&self.inner.definitions)
            .values()
            .cloned()
            .collect()
    }

    /// The names of the registered task types, sorted.
    pub fn names(&self) -> Vec<String> {
        self.runnable_names().to_vec()
    }

    /// The names of the registered task types, sorted, shared (no copy per claim).
    pub(crate) fn runnable_names(&self) -> Arc<[String]> {
        sync::read(&self.inner.names).clone()
    }

    pub(crate) fn definition(&self, name: &str) -> Option<TaskDefinition> {
        sync::read(&self.inner.definitions).get(name).cloned()
    }

    /// Starts this node's workers and its share of maintenance (promotion, reaping) on `api`;
    /// they stop with the node, handing unfinished tasks back. Registers the gauges
    /// `tasks_in_flight` and `tasks_schedules_refused` (schedules the scheduler leader skips:
    /// unverifiable signature or a recurrence that cannot run; 0 on other nodes), and the task
    /// families of the node's metrics (see `docs/observability.md`).
    pub fn start(&self, api: &Api) {
        let tasks = self.clone();
        self.inner
            .metrics
            .register(api.metrics(), move || tasks.running_here());
        let tasks = self.clone();
        api.register_gauge("tasks_in_flight", move || tasks.running_here());
        let tasks = self.clone();
        api.register_gauge("tasks_quiet", move || u64::from(tasks.is_quiet()));
        let tasks = self.clone();
        api.register_gauge("tasks_schedules_refused", move || {
            tasks.inner.refused_schedules.load(Ordering::Relaxed)
        });
        worker::start(self.clone(), api);
    }

    /// Quiets this node (`true`): its workers take no new task (those running finish), as
    /// before a deploy; `false` lets them take tasks again (within [`PAUSE_REFRESH`]).
    pub fn set_quiet(&self, quiet: bool) {
        self.inner.quiet.store(quiet, Ordering::SeqCst);
        if !quiet {
            self.inner.signal.notify();
        }
    }

    /// Whether this node is quiet (see [`Tasks::set_quiet`]).
    pub fn is_quiet(&self) -> bool {
        self.inner.quiet.load(Ordering::SeqCst)
    }

    /// Pauses `queue` cluster wide: no node's workers claim from it after [`PAUSE_REFRESH`];
    /// tasks still enqueue and wait. False if it was paused already.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn pause_queue(&self, queue: &str) -> Result<bool> {
        let paused = self.inner.store.pause_queue(queue).await?;
        self.forget_paused();
        Ok(paused)
    }

    /// Resumes a paused `queue`; false if it was not paused.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        let resumed = self.inner.store.resume_queue(queue).await?;
        self.forget_paused();
        Ok(resumed)
    }

    /// The paused queues.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn paused_queues(&self) -> Result<BTreeSet<String>> {
        Ok(self.inner.store.paused_queues().await?)
    }

    /// Makes the next claim read the paused queues again (a read in flight does not store what
    /// it read before this).
    fn forget_paused(&self) {
        let mut cached = sync::lock(&self.inner.paused);
        cached.at = None;
        cached.generation += 1;
    }

    /// The paused queues, read from the store at most every [`PAUSE_REFRESH`] (a claim waits for
    /// the read when the set is older: the cached set is all that keeps a claim off a queue
    /// another node paused). After a store error, the last set read.
    pub(crate) async fn paused_cached(&self) -> Arc<BTreeSet<String>> {
        let generation = {
            let cached = sync::lock(&self.inner.paused);
            match cached.at {
                Some(at) if at.elapsed() < PAUSE_REFRESH => return cached.set.clone(),
                _ => cached.generation,
            }
        };
        self.refresh_paused(generation).await
    }

    /// Reads the paused queues and keeps them, unless they were forgotten since `generation`;
    /// what was read (or, after an error, the last set).
    async fn refresh_paused(&self, generation: u64) -> Arc<BTreeSet<String>> {
        let read = self.inner.store.paused_queues().await;
        let mut cached = sync::lock(&self.inner.paused);
        match read {
            Ok(set) => {
                let fresh = Arc::new(set);
                if cached.generation == generation {
                    cached.at = Some(tokio::time::Instant::now());
                    cached.set = fresh.clone();
                }
                fresh
            }
            Err(err) => {
                tracing::debug!(error = %err, "reading the paused queues failed; using the last set read");
                if cached.generation == generation {
                    cached.at = Some(tokio::time::Instant::now());
                }
                cached.set.clone()
            }
        }
    }

    /// How many tasks this node is running now.
    pub fn running_here(&self) -> u64 {
        self.inner.running_here.load(Ordering::Relaxed)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.inner.store
    }

    /// Enqueues task `name` with `args`, to run now. Returns its id. A transient store error is
    /// retried within [`TaskConfig::enqueue_retry`] (unless it replaces a task).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTask`], [`Error::Encode`], [`Error::Invalid`] before anything is written;
    /// [`Error::Store`] when nothing was written; [`Error::OutcomeUnknown`] when the store never
    /// answered and the task may have been enqueued.
    pub async fn enqueue<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        options: EnqueueOptions,
    ) -> Result<String> {
        Ok(self.add(name, args, options, None).await?.id)
    }

    /// Enqueues a task to run at `at` (not before).
    ///
    /// # Errors
    ///
    /// As [`Tasks::enqueue`].
    pub async fn enqueue_at<A: Serialize + ?Sized>(
        &self,
        at: SystemTime,
        name: &str,
        args: &A,
        options: EnqueueOptions,
    ) -> Result<String> {
        Ok(self.add(name, args, options, Some(epoch_ms(at))).await?.id)
    }

    /// Enqueues a task to run after `delay`.
    ///
    /// # Errors
    ///
    /// As [`Tasks::enqueue`].
    pub async fn enqueue_in<A: Serialize + ?Sized>(
        &self,
        delay: Duration,
        name: &str,
        args: &A,
        options: EnqueueOptions,
    ) -> Result<String> {
        self.enqueue_at(SystemTime::now() + delay, name, args, options)
            .await
    }

    /// Enqueues task `name` with `args`, to run at `at` (now if `None`), and reports whether it was
    /// added or what already holds its id.
    ///
    /// # Errors
    ///
    /// As [`Tasks::enqueue`].
    pub async fn submit<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        options: EnqueueOptions,
        at: Option<SystemTime>,
    ) -> Result<Submitted> {
        self.add(name, args, options, at.map(epoch_ms)).await
    }

    /// The signature of a task record.
    pub(crate) fn sign(&self, id: &str, name: &str, queue: &str, args: &str, max: u32) -> String {
        let max = max.to_string();
        let fields = task_signature_fields(id, name, queue, args, &max);
        self.inner.config.signer.sign(SIGNATURE_CONTEXT, &fields)
    }

    /// Whether a claimed task's record carries a valid signature.
    pub(crate) fn verify(&self, claimed: &Claimed) -> bool {
        let max = claimed.max_attempts.to_string();
        let fields = task_signature_fields(
            &claimed.id,
            &claimed.name,
            &claimed.queue,
            &claimed.args,
            &max,
        );
        self.inner
            .config
            .signer
            .verify(SIGNATURE_CONTEXT, &fields, &claimed.signature)
    }

    /// The signature of a schedule record: over its id, task, queue, args and recurrence.
    pub(crate) fn sign_schedule(&self, schedule: &Schedule) -> String {
        let recurrence = recurrence_json(schedule);
        let fields = schedule_signature_fields(schedule, &recurrence);
        self.inner
            .config
            .signer
            .sign(SCHEDULE_SIGNATURE_CONTEXT, &fields)
    }

    /// Whether a schedule record carries a valid signature, made with the current token or a
    /// previous one the signer still accepts.
    pub(crate) fn verify_schedule(&self, schedule: &Schedule) -> bool {
        let recurrence = recurrence_json(schedule);
        let fields = schedule_signature_fields(schedule, &recurrence);
        self.inner
            .config
            .signer
            .verify(SCHEDULE_SIGNATURE_CONTEXT, &fields, &schedule.signature)
    }

    /// Why the scheduler leader skips `schedule`, if it does: a bad signature or a recurrence
    /// that cannot run here.
    pub(crate) fn schedule_problem(&self, schedule: &Schedule) -> Result<Timetable, String> {
        if !self.verify_schedule(schedule) {
            return Err(UNVERIFIED_SCHEDULE.to_owned());
        }
        Timetable::new(&schedule.recurrence).map_err(|err| err.to_string())
    }

    /// Adds `tasks` in one store step. Their ids are fixed, so unless a task replaces one, a
    /// transient error is retried for up to `enqueue_retry`: a try whose reply was lost may have
    /// added them, and the next finds them existing. `made_up[i]`: the id of `tasks[i]` was made
    /// up by this call, so only a try of this call can have added it.
    async fn store_enqueue(&self, tasks: &[NewTask], made_up: &[bool]) -> Result<Vec<Enqueued>> {
        let retryable = tasks.iter().all(|task| !task.replace);
        let mut retry = Retry::within(
            self.inner.config.enqueue_retry,
            Duration::from_millis(50),
            Duration::from_secs(1),
        );
        // Whether a try whose answer never came may have run.
        let mut maybe_ran = false;
        loop {
            let (result, batch_maybe_ran) = self.enqueue_step(tasks).await;
            maybe_ran |= batch_maybe_ran;
            let err = match result {
                Ok(mut outcomes) => {
                    if maybe_ran {
                        // An id made up here is held only by an earlier try of this call.
                        for (outcome, made_up) in outcomes.iter_mut().zip(made_up) {
                            if *made_up && matches!(outcome, Enqueued::Exists(_)) {
                                *outcome = Enqueued::Added;
                            }
                        }
                    }
                    return Ok(outcomes);
                }
                Err(err) => err,
            };
            maybe_ran |= may_have_run(&err);
            if retryable && err.is_transient() && retry.has_time() {
                warn!(tasks = tasks.len(), error = %err, "enqueue failed; retrying (the ids make it idempotent)");
                retry.wait().await;
                continue;
            }
            if maybe_ran {
                return Err(Error::OutcomeUnknown {
                    ids: tasks.iter().map(|task| task.id.clone()).collect(),
                    source: err,
                });
            }
            return Err(err.into());
        }
    }

    /// One try of `store_enqueue`: a single task goes through the coalescer (in one store call
    /// with other single enqueues waiting at the same time), a batch alone; and whether a
    /// combined call that failed may have added the task. A task that replaces one goes alone:
    /// after a combined call that may have run, trying it again would replace the run the
    /// first try started.
    async fn enqueue_step(&self, tasks: &[NewTask]) -> (Result<Vec<Enqueued>, StoreError>, bool) {
        if let [task] = tasks
            && !task.replace
        {
            let coalesced = self.inner.coalescer.enqueue(task).await;
            return (
                coalesced.result.map(|outcome| vec![outcome]),
                coalesced.maybe_ran,
            );
        }
        (self.inner.store.enqueue_many(tasks).await, false)
    }

    async fn add<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        options: EnqueueOptions,
        due_at_ms: Option<u64>,
    ) -> Result<Submitted> {
        let made_up = options.id.is_none();
        let trace = stellar_core::TraceParent::current();
        let task = self.new_task(name, args, options, due_at_ms, trace)?;
        let outcomes = self
            .store_enqueue(std::slice::from_ref(&task), &[made_up])
            .await?;
        let outcome = outcomes.first().copied().ok_or(StoreError::Malformed {
            op: "task enqueue",
            detail: "no outcome".to_owned(),
        })?;
        Ok(Submitted {
            id: task.id,
            outcome,
        })
    }

    /// The signed task record of an enqueue at trace position `trace`, checked: nothing is
    /// written yet.
    fn new_task<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        options: EnqueueOptions,
        due_at_ms: Option<u64>,
        trace: Option<stellar_core::TraceParent>,
    ) -> Result<NewTask> {
        let definition = self.definition(name).ok_or_else(|| Error::UnknownTask {
            name: name.to_owned(),
        })?;
        let args = serde_json::to_string(args).map_err(|source| Error::Encode {
            name: name.to_owned(),
            source,
        })?;
        let id = match options.id {
            Some(id) => checked("task id", id)?,
            None => stellar_bus::unique_token(&self.inner.node_id, 12),
        };
        let queue = checked("queue", options.queue.unwrap_or(definition.queue))?;
        let signature = self.sign(&id, name, &queue, &args, definition.max_attempts);
        Ok(NewTask {
            id,
            name: name.to_owned(),
            queue,
            args,
            max_attempts: definition.max_attempts,
            due_at_ms,
            slot: None,
            signature,
            replace: options.replace,
            trace,
        })
    }

    /// Enqueues a batch in one atomic step (BullMQ's `addBulk`): every task is checked first, so
    /// a bad one ([`Error::InBatch`] says which) writes nothing; then all are written at once
    /// (on Redis, one script call), never half of them. One [`Submitted`] per task, in order;
    /// ids are idempotency keys as for [`Tasks::enqueue`]. At most [`MAX_BATCH`] tasks and
    /// [`MAX_BATCH_BYTES`] of arguments; keep batches to a few thousand tasks: on Redis the whole
    /// batch is one step that other clients wait for.
    ///
    /// Every id is fixed before the first try (those not given are made up), so a transient
    /// store error is retried for the whole batch within [`TaskConfig::enqueue_retry`] without
    /// adding a task twice (not for a batch that replaces a task). If the store never answers,
    /// [`Error::OutcomeUnknown`] carries the ids: the batch was enqueued whole or not at all, and
    /// looking one id up tells which.
    ///
    /// # Errors
    ///
    /// [`Error::InBatch`] (wrapping [`Error::UnknownTask`], [`Error::Encode`] or
    /// [`Error::Invalid`]) or [`Error::BatchTooLarge`] before anything is written;
    /// [`Error::Store`] when nothing was written; [`Error::OutcomeUnknown`].
    pub async fn enqueue_many(&self, batch: Vec<BatchTask>) -> Result<Vec<Submitted>> {
        if batch.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                len: batch.len(),
                max: MAX_BATCH,
                unit: "tasks",
            });
        }
        let made_up: Vec<bool> = batch.iter().map(|task| task.options.id.is_none()).collect();
        // One trace position for the whole batch, read once.
        let trace = stellar_core::TraceParent::current();
        let tasks = batch
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                let due = task.at.map(epoch_ms);
                self.new_task(&task.name, &task.args, task.options, due, trace)
                    .map_err(|source| Error::InBatch {
                        index,
                        source: Box::new(source),
                    })
            })
            .collect::<Result<Vec<NewTask>>>()?;
        let bytes: usize = tasks.iter().map(|task| task.args.len()).sum();
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::BatchTooLarge {
                len: bytes,
                max: MAX_BATCH_BYTES,
                unit: "bytes of arguments",
            });
        }
        let outcomes = self.store_enqueue(&tasks, &made_up).await?;
        Ok(tasks
            .into_iter()
            .zip(outcomes)
            .map(|(task, outcome)| Submitted {
                id: task.id,
                outcome,
            })
            .collect())
    }

    /// The record of task `id` (completed records are kept for `keep_completed`).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn show(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.inner.store.show(id).await?)
    }

    /// Tasks in the failed set, with their last error, attempts and node.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn failed(&self) -> Result<Vec<TaskRecord>> {
        Ok(self.inner.store.failed().await?)
    }

    /// One page of the failed set, latest failure first (at most `limit` records from the
    /// `offset`-th), and how many tasks the set holds; reads only that page's records.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn failed_page(&self, offset: u64, limit: u64) -> Result<(Vec<TaskRecord>, u64)> {
        Ok(self.inner.store.failed_page(offset, limit).await?)
    }

    /// Moves a failed task back to its queue with fresh attempts; false if it is not failed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn retry_failed(&self, id: &str) -> Result<bool> {
        Ok(self.inner.store.retry_failed(id, None).await?)
    }

    /// Like [`Tasks::retry_failed`], but signs the record again with this node's token first: for
    /// a task refused as `unsigned` that the operator vouches for (enqueued before signatures
    /// existed, or signed with a token this node did not accept yet). A record written by hand
    /// would run too, so look at it first.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn retry_failed_resigned(&self, id: &str) -> Result<bool> {
        let Some(record) = self.inner.store.show(id).await? else {
            return Ok(false);
        };
        let signature = self.sign(
            &record.id,
            &record.name,
            &record.queue,
            &record.args,
            record.max_attempts,
        );
        Ok(self.inner.store.retry_failed(id, Some(&signature)).await?)
    }

    /// Deletes a failed task; false if it is not failed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn remove_failed(&self, id: &str) -> Result<bool> {
        Ok(self.inner.store.remove_failed(id).await?)
    }

    /// Runs task `name` with `args` once per `every` slot, cluster wide, until
    /// [`Tasks::unschedule`]: a schedule whose id is the task's name (see [`Tasks::schedule`]).
    ///
    /// # Errors
    ///
    /// As [`Tasks::schedule`].
    pub async fn schedule_recurring<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        every: Duration,
    ) -> Result<()> {
        let recurrence = Recurrence::every(every);
        self.schedule(name, args, recurrence, ScheduleOptions::default())
            .await
            .map(drop)
    }

    /// Runs task `name` with `args` at every fire time of `recurrence`, cluster wide, until
    /// [`Tasks::unschedule`] with its id: each fire time is one slot, enqueued once as task
    /// `recur:<id>:<fire time ms>` by the scheduler leader. The id ([`ScheduleOptions::id`],
    /// default the task's name) tells schedules apart: several of one task, with their own
    /// arguments, need their own ids, and scheduling an existing id replaces that schedule.
    /// Returns the stored schedule.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTask`], [`Error::Encode`], [`Error::Invalid`] before anything is written;
    /// [`Error::Store`].
    pub async fn schedule<A: Serialize + ?Sized>(
        &self,
        name: &str,
        args: &A,
        recurrence: Recurrence,
        options: ScheduleOptions,
    ) -> Result<Schedule> {
        let definition = self.definition(name).ok_or_else(|| Error::UnknownTask {
            name: name.to_owned(),
        })?;
        let args = serde_json::to_string(args).map_err(|source| Error::Encode {
            name: name.to_owned(),
            source,
        })?;
        let id = checked("schedule id", options.id.unwrap_or_else(|| name.to_owned()))?;
        let queue = checked("queue", options.queue.unwrap_or(definition.queue))?;
        Timetable::new(&recurrence)?;
        let mut schedule = Schedule {
            id,
            task: name.to_owned(),
            args,
            queue,
            recurrence,
            signature: String::new(),
        };
        schedule.signature = self.sign_schedule(&schedule);
        self.store_schedule(&schedule).await?;
        Ok(schedule)
    }

    /// Stores a signed `schedule`. One that changes the recurrence of a stored schedule forgets
    /// that schedule's last slot first: a new leader then starts it at its next fire time
    /// instead of catching up the new timetable from the old one's last run.
    pub(crate) async fn store_schedule(&self, schedule: &Schedule) -> Result<()> {
        let store = &self.inner.store;
        let stored = store.schedules().await?;
        let changed = stored
            .iter()
            .any(|s| s.id == schedule.id && s.recurrence != schedule.recurrence);
        if changed {
            store.remove_schedule(&schedule.id).await?;
        }
        store.set_schedule(schedule).await?;
        Ok(())
    }

    /// Stops the recurring schedule `id`; false if there was none. Scheduled again later, it
    /// starts afresh (no catch-up of the slots in between).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn unschedule(&self, id: &str) -> Result<bool> {
        Ok(self.inner.store.remove_schedule(id).await?)
    }

    /// Enqueues one run of the recurring schedule `id` now, outside its timetable: its task with
    /// its arguments on its queue, signed as any enqueue (the schedule keeps its own slots). The
    /// new task's id, or `None` if there is no such schedule.
    ///
    /// # Errors
    ///
    /// [`Error::UnverifiedSchedule`] if the schedule's signature does not verify (it is not run);
    /// otherwise as [`Tasks::enqueue`] (the task must be registered on this node).
    pub async fn run_schedule_now(&self, id: &str) -> Result<Option<String>> {
        let schedules = self.inner.store.schedules().await?;
        let Some(schedule) = schedules.into_iter().find(|s| s.id == id) else {
            return Ok(None);
        };
        if !self.verify_schedule(&schedule) {
            return Err(Error::UnverifiedSchedule { id: id.to_owned() });
        }
        let args: serde_json::Value =
            serde_json::from_str(&schedule.args).map_err(|source| Error::Encode {
                name: schedule.task.clone(),
                source,
            })?;
        let options = EnqueueOptions {
            queue: Some(schedule.queue),
            ..EnqueueOptions::default()
        };
        self.enqueue(&schedule.task, &args, options).await.map(Some)
    }

    /// Every recurring schedule, by id, with its next fire time after now and why the scheduler
    /// would skip it, if it would (a signature that does not verify with this node's token, a
    /// recurrence that cannot run).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let now = now_ms();
        let schedules = self.inner.store.schedules().await?;
        Ok(schedules
            .into_iter()
            .map(|schedule| {
                let (next_run_at_ms, problem) = match self.schedule_problem(&schedule) {
                    Ok(timetable) => (timetable.after(now), None),
                    Err(problem) => (None, Some(problem)),
                };
                ScheduleInfo {
                    schedule,
                    next_run_at_ms,
                    problem,
                }
            })
            .collect())
    }

    /// The scheduler leader and its fencing epoch, if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn leader(&self) -> Result<Option<(String, u64)>> {
        Ok(self.inner.store.leader().await?)
    }

    /// Ready tasks of `queue`, next first, positions `start..=stop`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn queued(&self, queue: &str, start: u64, stop: u64) -> Result<Vec<TaskRecord>> {
        Ok(self.inner.store.queued(queue, start, stop).await?)
    }

    /// The first `limit` delayed tasks, soonest first, and how many are delayed in all; reads
    /// only those records (what the dashboard lists).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn delayed_page(&self, limit: u64) -> Result<(Vec<TaskRecord>, u64)> {
        Ok(self.inner.store.delayed_page(limit).await?)
    }

    /// Tasks waiting for their time, soonest first.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn delayed(&self) -> Result<Vec<TaskRecord>> {
        Ok(self.inner.store.delayed().await?)
    }

    /// Every node's worker pool with the tasks it is running now.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn workers(&self) -> Result<Vec<(WorkerInfo, Vec<TaskRecord>)>> {
        let running = self.inner.store.running().await?;
        let workers = self.inner.store.workers().await?;
        Ok(workers
            .into_iter()
            .map(|worker| {
                let tasks = running
                    .iter()
                    .filter(|t| t.node.as_deref() == Some(worker.node.as_str()))
                    .cloned()
                    .collect();
                (worker, tasks)
            })
            .collect())
    }

    /// Runs a delayed task now (a delayed enqueue, or a retry waiting for its backoff): it moves
    /// to the front of its queue in one store step, its record, attempts and signature kept;
    /// false if it is not delayed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn run_now(&self, id: &str) -> Result<bool> {
        Ok(self.inner.store.run_now(id).await?)
    }

    /// Deletes a delayed task (a delayed enqueue or a retry waiting for its backoff) in one store
    /// step, only while it is still delayed: false if it is absent or no longer delayed
    /// (promoted, claimed, finished or re-enqueued meanwhile).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn del_delayed(&self, id: &str) -> Result<bool> {
        Ok(self.inner.store.delete_if(id, TaskState::Delayed).await?)
    }

    /// Deletes a task that is not running; false if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Store`], or [`Error::Running`] if a worker holds it.
    pub async fn del(&self, id: &str) -> Result<bool> {
        self.inner
            .store
            .delete(id)
            .await?
            .ok_or_else(|| Error::Running { id: id.to_owned() })
    }

    /// Deletes a queue and the tasks waiting in it; how many.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn del_queue(&self, queue: &str) -> Result<u64> {
        Ok(self.inner.store.delete_queue(queue).await?)
    }

    /// Processed, failed and retried totals (also per task name), queue lengths, delayed, in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn stats(&self) -> Result<Stats> {
        Ok(self.inner.store.stats().await?)
    }
}

/// Why a schedule whose signature does not verify is skipped.
const UNVERIFIED_SCHEDULE: &str = "its signature does not verify with this token (written without \
     the server token, signed with a token no longer accepted, or stored before schedules were \
     signed): schedule it again to sign it";

/// A schedule's recurrence as it is signed: its JSON, fields in declaration order.
fn recurrence_json(schedule: &Schedule) -> String {
    serde_json::to_string(&schedule.recurrence).expect("a recurrence serialises")
}

/// The fields a schedule's signature covers, in order: id, task, queue, args, recurrence.
fn schedule_signature_fields<'a>(schedule: &'a Schedule, recurrence: &'a str) -> [&'a [u8]; 5] {
    [
        schedule.id.as_bytes(),
        schedule.task.as_bytes(),
        schedule.queue.as_bytes(),
        schedule.args.as_bytes(),
        recurrence.as_bytes(),
    ]
}

/// Whether a try that failed with `err` may have run in the store: anything but a connection
/// that could not be made at all (the request never left), or a refusal (the scripts check
/// everything before they write, so a refused step wrote nothing).
pub(crate) fn may_have_run(err: &StoreError) -> bool {
    !matches!(
        err,
        StoreError::Unavailable(TransportError::Connect { .. }) | StoreError::Refused(_)
    )
}

use stellar_core::time::epoch_ms;

fn checked(what: &'static str, value: String) -> Result<String> {
    if value.is_empty()
        || value.len() > 256
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Invalid {
            what,
            value: value.chars().take(64).collect(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTaskStore;

    /// Tasks on `store` signing with `signer`.
    fn tasks_on(store: &MemoryTaskStore, signer: RecordSigner) -> Tasks {
        let tasks = Tasks::new(
            Arc::new(store.clone()),
            store.signal(),
            NodeId::new("n1").expect("id"),
            TaskConfig {
                signer,
                ..TaskConfig::default()
            },
        );
        tasks.register(TaskDefinition::new(
            "work",
            |_, _: serde_json::Value| async { Ok(()) },
        ));
        tasks
    }

    /// A schedule verifies with the token that signed it, or with a signer that still accepts
    /// that token as the previous one (rotation); not once a signed field changes.
    #[tokio::test]
    async fn schedule_signatures_survive_a_token_rotation_but_not_a_change() {
        let (old, new) = (ServerToken::new("old"), ServerToken::new("new"));
        let store = MemoryTaskStore::new();
        let tasks_with = |signer| tasks_on(&store, signer);
        let signed_by_old = tasks_with(RecordSigner::new(&old, None));
        let options = ScheduleOptions::default().id("nightly");
        let recurrence = Recurrence::cron("0 3 * * *", "Europe/Paris");
        let schedule = signed_by_old
            .schedule("work", &1, recurrence, options)
            .await
            .expect("schedule");
        assert!(signed_by_old.verify_schedule(&schedule));
        assert!(tasks_with(RecordSigner::new(&new, Some(&old))).verify_schedule(&schedule));
        assert!(!tasks_with(RecordSigner::new(&new, None)).verify_schedule(&schedule));
        let changes = [
            Schedule {
                id: "nightly2".into(),
                ..schedule.clone()
            },
            Schedule {
                args: "2".into(),
                ..schedule.clone()
            },
            Schedule {
                queue: "other".into(),
                ..schedule.clone()
            },
            Schedule {
                recurrence: Recurrence::cron("* * * * *", "Europe/Paris"),
                ..schedule.clone()
            },
            Schedule {
                recurrence: Recurrence::every(Duration::from_millis(1)),
                ..schedule.clone()
            },
        ];
        for changed in changes {
            assert!(!signed_by_old.verify_schedule(&changed), "{changed:?}");
        }
        let listed = signed_by_old.schedules().await.expect("list");
        assert_eq!(listed[0].problem, None);
        let other_token = tasks_with(RecordSigner::new(&new, None));
        let seen = other_token.schedules().await.expect("list");
        assert!(
            seen[0]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("signature does not verify")),
            "{seen:?}"
        );
        assert_eq!(seen[0].next_run_at_ms, None);
    }
}

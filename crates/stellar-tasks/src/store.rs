//! The storage seam of the task queue, for backend authors: small capability traits (as apalis
//! splits its storage), each method one atomic step, and the types they exchange.
//!
//! - [`TaskQueue`]: what a worker does (enqueue, claim, renew, complete, fail, bury, release);
//! - [`TaskMaintenance`]: promote due tasks, reap expired leases (any node, idempotent);
//! - [`TaskInspector`]: records, lists, statistics, retries, run-now and deletion, for operators;
//! - [`Leadership`]: the scheduler leader's lease and fencing epoch;
//! - [`Schedules`]: recurring schedules and their last enqueued slot;
//! - [`WorkerRegistry`]: which nodes serve which queues.
//!
//! [`TaskStore`] is all of them at once (implemented for any type that implements each), so
//! `Arc<dyn TaskStore>` is what [`crate::Tasks`] holds. Redis ([`crate::RedisTaskStore`]) and
//! memory ([`crate::MemoryTaskStore`]) implement every capability; `tests/task_contract` runs the
//! same cases on both.

use std::{collections::BTreeSet, fmt, time::Duration};

use async_trait::async_trait;
use stellar_core::{NodeId, TraceParent};

pub use crate::error::StoreError;
use crate::types::{Enqueued, Schedule, Stats, TaskRecord, TaskState, WorkerInfo};

pub(crate) use stellar_core::time::now_ms;

/// A task to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Its id: the idempotency key.
    pub id: String,
    /// The task definition's name.
    pub name: String,
    /// The queue it waits in.
    pub queue: String,
    /// Its arguments as JSON.
    pub args: String,
    /// How many attempts it gets.
    pub max_attempts: u32,
    /// When it may run, in ms since the epoch; `None`: now.
    pub due_at_ms: Option<u64>,
    /// For a recurring task: its schedule and slot, enqueued at most once across the cluster.
    pub slot: Option<Slot>,
    /// The record's signature (see [`task_signature_fields`]); checked before the task runs.
    pub signature: String,
    /// Replace a completed or failed task with this id (run it again); a pending or running one
    /// is never replaced.
    pub replace: bool,
    /// The trace context of the enqueue: the task's run continues that trace. Not signed: it
    /// only links telemetry (see docs/security.md).
    pub trace: Option<TraceParent>,
}

/// The fields a task record's signature covers, in order: id, name, queue, args, max attempts.
pub fn task_signature_fields<'a>(
    id: &'a str,
    name: &'a str,
    queue: &'a str,
    args: &'a str,
    max_attempts: &'a str,
) -> [&'a [u8]; 5] {
    [
        id.as_bytes(),
        name.as_bytes(),
        queue.as_bytes(),
        args.as_bytes(),
        max_attempts.as_bytes(),
    ]
}

/// One slot of a recurring schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The schedule's id.
    pub schedule: String,
    /// The slot's fire time, ms since the epoch (a multiple of the schedule's period, or a time
    /// its cron expression matches).
    pub at_ms: u64,
    /// How long the store remembers that the slot was enqueued.
    pub remember: Duration,
    /// The scheduler leader enqueueing it and its epoch: the store refuses the slot unless they
    /// still hold the leadership (a deposed leader's late writes are fenced off).
    pub leader: (String, u64),
}

/// What a worker asks for when it claims tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The queues to take from, highest priority first.
    pub queues: Vec<String>,
    /// The claiming node.
    pub node: NodeId,
    /// How long each claimed task is leased (on the store's clock).
    pub lease: Duration,
    /// At most this many tasks.
    pub max: usize,
    /// The task names this node can run. A ready task of another name is set aside (parked, no
    /// attempt counted) until a node that can run it claims it.
    pub names: std::sync::Arc<[String]>,
    /// Unique per claim: asking again with the same id (after a lost reply) returns the tasks the
    /// first ask claimed, for as long as their lease, instead of claiming more.
    pub request_id: String,
}

/// A claimed task: run it, then answer with its `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The task's id.
    pub id: String,
    /// This claim's token: only it can complete, fail, renew or release the task.
    pub token: u64,
    /// The task definition's name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments as JSON.
    pub args: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// How many attempts it gets.
    pub max_attempts: u32,
    /// The record's signature, as enqueued.
    pub signature: String,
    /// How long it waited ready before this claim (since its enqueue, or the due time it was
    /// promoted at).
    pub waited: Duration,
    /// The trace context of its enqueue, if it was enqueued inside a trace.
    pub trace: Option<TraceParent>,
}

/// A task the reaper took back after its lease expired (see [`TaskMaintenance::reap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// Its queue, as its record says.
    pub queue: String,
    /// Its task definition's name, as its record says.
    pub name: String,
    /// Where it went.
    pub outcome: ReapOutcome,
}

/// Where a reaped task went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReapOutcome {
    /// Back to its queue, to run again (attempts remained).
    Requeued,
    /// To the failed set: the lost attempt was its last.
    Failed,
}

impl ReapOutcome {
    /// `requeued` or `failed`, as a metric label says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requeued => "requeued",
            Self::Failed => "failed",
        }
    }
}

/// What `fail` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The claim was not current (the lease was lost): nothing changed.
    Rejected,
    /// Scheduled to run again after the backoff.
    Retrying,
    /// Out of attempts: moved to the failed set.
    Dead,
}

/// What a worker does with tasks: add them, claim them under a lease, and answer for each claim.
/// Only the current claim (its token) can renew, complete, fail, bury or release a task.
#[async_trait]
pub trait TaskQueue: fmt::Debug + Send + Sync + 'static {
    /// Adds `task`, unless a task record with its id exists (pending, running, completed within
    /// retention, or failed); with `task.replace`, a completed or failed one is replaced.
    async fn enqueue(&self, task: &NewTask) -> Result<Enqueued, StoreError> {
        let outcomes = self.enqueue_many(std::slice::from_ref(task)).await?;
        outcomes.first().copied().ok_or(StoreError::Malformed {
            op: "task enqueue",
            detail: "no outcome".to_owned(),
        })
    }
    /// Adds every task of `tasks` in one atomic step (all or none are written, even when the step
    /// fails; on Redis one script call): one outcome per task, in order, as `enqueue` would give.
    /// A later task with the id of an earlier one of the batch finds it existing. A transport
    /// error may come after the step ran: asking again with the same tasks adds nothing twice
    /// (each finds its own record), unless one replaces.
    async fn enqueue_many(&self, tasks: &[NewTask]) -> Result<Vec<Enqueued>, StoreError>;
    /// Claims up to `request.max` of the oldest ready tasks the node can run, from its queues in
    /// priority order, each leased for `request.lease` under a claim token never used before for
    /// that id. Tasks parked for a name the node can run come first.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>, StoreError>;
    /// Extends the lease of a claim; false if the claim is no longer current.
    async fn renew(&self, claimed: &Claimed, lease: Duration) -> Result<bool, StoreError>;
    /// Records a success; false (rejected) if the claim is no longer current.
    async fn complete(&self, claimed: &Claimed, keep: Duration) -> Result<bool, StoreError> {
        let accepted = self
            .complete_many(std::slice::from_ref(claimed), keep)
            .await?;
        Ok(accepted.first().copied().unwrap_or(false))
    }
    /// Records several successes at once: one answer per claim, as `complete` would give. A
    /// completion repeated by the same claim (after a lost reply) is accepted again, counted once.
    async fn complete_many(
        &self,
        claimed: &[Claimed],
        keep: Duration,
    ) -> Result<Vec<bool>, StoreError>;
    /// Records a failed attempt: retry after `retry_in` (at most [`crate::MAX_RETRY_DELAY`]: a
    /// longer delay is taken as that), or move to the failed set.
    async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Duration,
    ) -> Result<FailOutcome, StoreError>;
    /// Moves a claimed task straight to the failed set with `error`, whatever attempts remain
    /// (a record that fails verification); false if the claim is no longer current.
    async fn bury(&self, claimed: &Claimed, error: &str) -> Result<bool, StoreError>;
    /// Hands a claimed task back to the front of its queue without counting the attempt.
    async fn release(&self, claimed: &Claimed) -> Result<bool, StoreError>;
    /// Records the progress (JSON) a running task reports on its record; false if the claim is
    /// no longer current.
    async fn progress(&self, claimed: &Claimed, progress: &str) -> Result<bool, StoreError>;
}

/// Housekeeping any node may run at any time: every step is idempotent and bounded.
#[async_trait]
pub trait TaskMaintenance: fmt::Debug + Send + Sync + 'static {
    /// Returns up to `limit` tasks whose lease expired to their queue (or, after their last
    /// attempt, to the failed set), invalidating the old claim; the tasks it moved, with their
    /// queue and name. Expired entries whose task no longer runs are dropped without a mention.
    async fn reap(&self, limit: u32) -> Result<Vec<Reaped>, StoreError>;
    /// Moves up to `limit` due delayed tasks to their queues; how many.
    async fn promote(&self, limit: u32) -> Result<u64, StoreError>;
}

/// What an operator sees and does: records, lists, statistics, retries and deletion.
#[async_trait]
pub trait TaskInspector: fmt::Debug + Send + Sync + 'static {
    /// The record of task `id`.
    async fn show(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Tasks in the failed set, oldest failure first.
    async fn failed(&self) -> Result<Vec<TaskRecord>, StoreError>;
    /// One page of the failed set, latest failure first: at most `limit` records from the
    /// `offset`-th, and the size of the whole set. Reads only that page's records.
    async fn failed_page(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<TaskRecord>, u64), StoreError>;
    /// Moves a failed task back to its queue with fresh attempts (and, given one, a new record
    /// signature); false if it is not failed.
    async fn retry_failed(&self, id: &str, signature: Option<&str>) -> Result<bool, StoreError>;
    /// Moves a delayed task (a delayed enqueue, or a retry waiting for its backoff) to the front
    /// of its queue, due now, its record and attempts kept (so its signature stays valid); false
    /// if it is not delayed.
    async fn run_now(&self, id: &str) -> Result<bool, StoreError>;
    /// Deletes a failed task; false if it is not failed.
    async fn remove_failed(&self, id: &str) -> Result<bool, StoreError>;
    /// Counters and gauges.
    async fn stats(&self) -> Result<Stats, StoreError>;
    /// Ready tasks of `queue`, next to run first, from `start` to `stop` (inclusive).
    async fn queued(
        &self,
        queue: &str,
        start: u64,
        stop: u64,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Delayed tasks (including retries waiting for their backoff), soonest first.
    async fn delayed(&self) -> Result<Vec<TaskRecord>, StoreError>;
    /// The first `limit` delayed tasks, soonest first, and how many are delayed in all. Reads
    /// only those records (on Redis: one range, one count, one pipeline of records), so its work
    /// is bounded by `limit` whatever the size of the delayed set.
    async fn delayed_page(&self, limit: u64) -> Result<(Vec<TaskRecord>, u64), StoreError>;
    /// Running tasks, under a lease.
    async fn running(&self) -> Result<Vec<TaskRecord>, StoreError>;
    /// Deletes a task that is not running: `Some(true)` deleted, `Some(false)` absent, `None` running.
    async fn delete(&self, id: &str) -> Result<Option<bool>, StoreError>;
    /// Deletes task `id` only if it is still in `state`, in one atomic step: false if it is absent
    /// or in another state. A running task is never deleted (asking for `Running` deletes nothing).
    async fn delete_if(&self, id: &str, state: TaskState) -> Result<bool, StoreError>;
    /// Deletes a queue and its waiting tasks; how many.
    async fn delete_queue(&self, queue: &str) -> Result<u64, StoreError>;
}

/// Pausing and resuming queues, cluster wide (the dashboard's and `stellar tasks pause`).
#[async_trait]
pub trait QueueControl: fmt::Debug + Send + Sync + 'static {
    /// Pauses `queue`: workers stop claiming from it (they read the paused set at most every
    /// [`crate::PAUSE_REFRESH`]); its tasks wait. False if it was paused already.
    async fn pause_queue(&self, queue: &str) -> Result<bool, StoreError>;
    /// Resumes a paused `queue` and wakes the workers that serve it; false if it was not paused.
    async fn resume_queue(&self, queue: &str) -> Result<bool, StoreError>;
    /// The paused queues.
    async fn paused_queues(&self) -> Result<BTreeSet<String>, StoreError>;
}

/// The scheduler leadership: a short lease with a fencing epoch that rises with every new leader.
#[async_trait]
pub trait Leadership: fmt::Debug + Send + Sync + 'static {
    /// Takes or renews the scheduler leadership for `lease`: the epoch if this node leads.
    async fn try_lead(&self, node: &NodeId, lease: Duration) -> Result<Option<u64>, StoreError>;
    /// Gives up the leadership if this node holds it.
    async fn resign(&self, node: &NodeId) -> Result<bool, StoreError>;
    /// The current leader and its epoch.
    async fn leader(&self) -> Result<Option<(String, u64)>, StoreError>;
}

/// Recurring schedules. Their slots are enqueued through [`TaskQueue::enqueue`] with a [`Slot`].
#[async_trait]
pub trait Schedules: fmt::Debug + Send + Sync + 'static {
    /// Adds or replaces a recurring schedule, under its id.
    async fn set_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;
    /// Removes recurring schedule `id` and forgets its last slot; false if there was none.
    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError>;
    /// Every recurring schedule, by id.
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;
    /// The latest slot enqueued for schedule id `schedule`, ms since the epoch.
    async fn last_slot(&self, schedule: &str) -> Result<Option<u64>, StoreError>;
}

/// Which nodes run workers, on which queues, for which task names.
#[async_trait]
pub trait WorkerRegistry: fmt::Debug + Send + Sync + 'static {
    /// Announces this node's workers for `ttl`.
    async fn announce(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), StoreError>;
    /// Every announced worker pool that has not expired.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;
}

/// Every capability at once: what [`crate::Tasks`] runs on. Implemented for any type that
/// implements each capability trait.
pub trait TaskStore:
    TaskQueue + TaskMaintenance + TaskInspector + QueueControl + Leadership + Schedules + WorkerRegistry
{
}

impl<T> TaskStore for T where
    T: TaskQueue
        + TaskMaintenance
        + TaskInspector
        + QueueControl
        + Leadership
        + Schedules
        + WorkerRegistry
{
}

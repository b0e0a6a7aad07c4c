//! The task queue in this process's memory, with the same semantics as Redis. Time is Tokio's.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use stellar_core::{NodeId, TraceParent};
use tokio::time::Instant;

use crate::{
    MAX_RETRY_DELAY,
    signal::WorkSignal,
    store::{
        ClaimRequest, Claimed, FailOutcome, Leadership, NewTask, QueueControl, ReapOutcome, Reaped,
        Schedules, StoreError, TaskInspector, TaskMaintenance, TaskQueue, WorkerRegistry, now_ms,
    },
    types::{Counters, Enqueued, QueueStats, Schedule, Stats, TaskRecord, TaskState, WorkerInfo},
};

#[derive(Debug)]
struct Task {
    record: TaskRecord,
    /// The current (or last) claim's token.
    claims: u64,
    signature: String,
    /// The enqueue's trace context.
    trace: Option<TraceParent>,
    /// Set aside in `parked` because a node that could not run its name claimed it.
    parked: bool,
    /// When a completed record is forgotten.
    forget_at: Option<Instant>,
    /// Since when it waits when ready: its enqueue, or its latest due time (as on Redis, from
    /// the record's `enqueued_at` and `due_at`).
    ready_since: Instant,
}

#[derive(Debug, Default)]
struct State {
    tasks: HashMap<String, Task>,
    queues: BTreeMap<String, VecDeque<String>>,
    /// id -> due instant.
    delayed: HashMap<String, Instant>,
    /// id -> lease deadline.
    inflight: HashMap<String, Instant>,
    /// id -> order of failure.
    failed: BTreeMap<String, u64>,
    failures: u64,
    totals: Counters,
    by_task: BTreeMap<String, Counters>,
    by_node: BTreeMap<String, Counters>,
    /// Recurring slots already enqueued (schedule, slot), until when they are remembered.
    slots: HashMap<(String, u64), Instant>,
    last_slots: HashMap<String, u64>,
    schedules: BTreeMap<String, Schedule>,
    workers: BTreeMap<String, (WorkerInfo, Instant)>,
    leader: Option<(String, u64, Instant)>,
    epoch: u64,
    /// The claim token counter: tokens never repeat, whatever happens to an id.
    claim_seq: u64,
    /// Replies of recent claims by request id, until their lease ends, for a re-ask.
    claim_replies: HashMap<String, (Vec<Claimed>, Instant)>,
    /// Ready tasks set aside per (queue, name), oldest at the back.
    parked: BTreeMap<(String, String), VecDeque<String>>,
    /// Queues no worker claims from.
    paused: BTreeSet<String>,
}

impl State {
    fn bump(&mut self, counter: &str, name: &str) {
        self.totals.add(counter, 1);
        self.by_task
            .entry(name.to_owned())
            .or_default()
            .add(counter, 1);
    }

    fn bump_node(&mut self, counter: &str, id: &str) {
        let node = self
            .tasks
            .get(id)
            .and_then(|t| t.record.node.clone())
            .unwrap_or_else(|| "?".to_owned());
        self.by_node.entry(node).or_default().add(counter, 1);
    }

    /// The backlog of `queue`: its length, and how long the task next to run has waited.
    fn queue_stats(&self, queue: &str, ids: &VecDeque<String>) -> QueueStats {
        let next = ids.iter().rev().find_map(|id| {
            let task = self.tasks.get(id)?;
            let record = &task.record;
            (record.state == TaskState::Queued && record.queue == queue).then_some(task)
        });
        let age = next.map(|task| Instant::now().saturating_duration_since(task.ready_since));
        QueueStats {
            depth: ids.len() as u64,
            oldest_ms: age.map_or(0, |age| age.as_millis() as u64),
        }
    }

    /// Why `task` is not added, if it is not: its id has a record (that it may not replace), or
    /// its recurring slot is fenced off or taken (a slot it may take is marked taken).
    fn refusal(&mut self, task: &NewTask) -> Option<Enqueued> {
        if let Some(existing) = self.tasks.get(&task.id) {
            let replaceable = matches!(
                existing.record.state,
                TaskState::Completed | TaskState::Failed
            );
            if !(replaceable && task.replace) {
                return Some(Enqueued::Exists(existing.record.state));
            }
        }
        let slot = task.slot.as_ref()?;
        let leads = self.leader.as_ref().is_some_and(|(node, epoch, _)| {
            (node.as_str(), *epoch) == (slot.leader.0.as_str(), slot.leader.1)
        });
        if !leads {
            return Some(Enqueued::Fenced);
        }
        let key = (slot.schedule.clone(), slot.at_ms);
        if self.slots.contains_key(&key) || !self.schedules.contains_key(&slot.schedule) {
            return Some(Enqueued::SlotTaken);
        }
        self.slots.insert(key, Instant::now() + slot.remember);
        let last = self.last_slots.entry(slot.schedule.clone()).or_insert(0);
        *last = (*last).max(slot.at_ms);
        None
    }

    /// Adds `task` as a fresh record, ready or delayed; true if it is ready now.
    fn insert(&mut self, task: &NewTask) -> bool {
        self.failed.remove(&task.id);
        let due = task
            .due_at_ms
            .filter(|due| *due > now_ms())
            .map(|due| Instant::now() + Duration::from_millis(due - now_ms()));
        let record = TaskRecord {
            id: task.id.clone(),
            name: task.name.clone(),
            queue: task.queue.clone(),
            args: task.args.clone(),
            state: match due {
                Some(_) => TaskState::Delayed,
                None => TaskState::Queued,
            },
            attempts: 0,
            max_attempts: task.max_attempts,
            node: None,
            enqueued_at_ms: Some(now_ms()),
            due_at_ms: due.map(wall_ms),
            started_at_ms: None,
            finished_at_ms: None,
            error: None,
            progress: None,
            trace_id: task.trace.map(|trace| trace.trace_id_hex()),
        };
        let fresh = Task {
            record,
            claims: 0,
            signature: task.signature.clone(),
            trace: task.trace,
            parked: false,
            forget_at: None,
            ready_since: due.unwrap_or_else(Instant::now),
        };
        self.tasks.insert(task.id.clone(), fresh);
        let queue = self.queues.entry(task.queue.clone()).or_default();
        match due {
            Some(due) => {
                self.delayed.insert(task.id.clone(), due);
                false
            }
            None => {
                queue.push_front(task.id.clone());
                true
            }
        }
    }

    /// Claims tasks of `queue` parked for names the claiming node can run.
    fn claim_parked(&mut self, queue: &str, claim: &mut Claim<'_>) {
        for name in claim.request.names.iter() {
            let key = (queue.to_owned(), name.clone());
            while claim.wants_more() {
                let Some(id) = self.parked.get_mut(&key).and_then(VecDeque::pop_back) else {
                    self.parked.remove(&key);
                    break;
                };
                match self.take(&id, claim.request) {
                    Some(one) => claim.claimed.push(one),
                    None => claim.skipped += 1,
                }
            }
        }
    }

    /// Claims the oldest ready tasks of `queue`: a stale id is dropped, a task of a name the
    /// node cannot run is parked.
    fn claim_ready(&mut self, queue: &str, claim: &mut Claim<'_>) {
        while claim.wants_more() {
            let Some(id) = self.queues.get_mut(queue).and_then(VecDeque::pop_back) else {
                break;
            };
            let name = match self.tasks.get(&id) {
                Some(task) if task.record.state == TaskState::Queued => task.record.name.clone(),
                _ => {
                    claim.skipped += 1;
                    continue;
                }
            };
            if !claim.request.names.contains(&name) {
                claim.skipped += 1;
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.parked = true;
                }
                let parked = self.parked.entry((queue.to_owned(), name)).or_default();
                parked.push_front(id);
                continue;
            }
            claim.claimed.extend(self.take(&id, claim.request));
        }
    }

    /// Leases the queued task `id` under a fresh claim token.
    fn take(&mut self, id: &str, request: &ClaimRequest) -> Option<Claimed> {
        let task = self.tasks.get_mut(id)?;
        if task.record.state != TaskState::Queued {
            return None;
        }
        self.claim_seq += 1;
        task.claims = self.claim_seq;
        task.parked = false;
        // A new attempt starts without the progress the previous one reported.
        task.record.progress = None;
        task.record.attempts += 1;
        task.record.state = TaskState::Running;
        task.record.node = Some(request.node.to_string());
        task.record.started_at_ms = Some(now_ms());
        let claimed = Claimed {
            id: id.to_owned(),
            token: task.claims,
            name: task.record.name.clone(),
            queue: task.record.queue.clone(),
            args: task.record.args.clone(),
            attempt: task.record.attempts,
            max_attempts: task.record.max_attempts,
            signature: task.signature.clone(),
            waited: Instant::now().saturating_duration_since(task.ready_since),
            trace: task.trace,
        };
        self.inflight
            .insert(id.to_owned(), Instant::now() + request.lease);
        Some(claimed)
    }

    /// Records the success of `claimed`: false if the claim is not current; true again (counted
    /// once) for a repeat by the claim that completed it.
    fn complete(&mut self, claimed: &Claimed, keep: Duration) -> bool {
        let Some(task) = self.tasks.get_mut(&claimed.id) else {
            return false;
        };
        if task.claims != claimed.token {
            return false;
        }
        match task.record.state {
            TaskState::Completed => return true,
            TaskState::Running => {}
            _ => return false,
        }
        task.record.state = TaskState::Completed;
        task.record.finished_at_ms = Some(now_ms());
        task.forget_at = Some(Instant::now() + keep);
        self.inflight.remove(&claimed.id);
        self.bump("processed", &claimed.name);
        self.bump_node("processed", &claimed.id);
        true
    }

    /// Forgets task `id`: its record, and its place in every set and list.
    fn remove(&mut self, id: &str) {
        self.tasks.remove(id);
        self.delayed.remove(id);
        self.failed.remove(id);
        for ids in self.queues.values_mut().chain(self.parked.values_mut()) {
            ids.retain(|queued| queued != id);
        }
    }

    fn records<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Vec<TaskRecord> {
        ids.filter_map(|id| self.tasks.get(id).map(|task| task.record.clone()))
            .collect()
    }
}

/// One claim in progress.
struct Claim<'a> {
    request: &'a ClaimRequest,
    claimed: Vec<Claimed>,
    /// Stale or parked ids passed over so far.
    skipped: usize,
}

impl Claim<'_> {
    fn wants_more(&self) -> bool {
        self.claimed.len() < self.request.max && self.skipped < CLAIM_SKIP_LIMIT
    }
}

/// How many stale or parked ids one claim passes over at most (as on Redis).
const CLAIM_SKIP_LIMIT: usize = 256;

/// A task store in memory. Clones share the same queues and the same [`WorkSignal`].
#[derive(Debug, Clone, Default)]
pub struct MemoryTaskStore {
    state: Arc<Mutex<State>>,
    signal: WorkSignal,
}

/// Up to `limit` ids whose time in `times` has come.
fn due(times: &HashMap<String, Instant>, now: Instant, limit: u32) -> Vec<String> {
    times
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(id, _)| id.clone())
        .take(limit as usize)
        .collect()
}

/// The wall-clock time of a Tokio instant, for records.
fn wall_ms(at: Instant) -> u64 {
    let now = Instant::now();
    if at >= now {
        now_ms() + (at - now).as_millis() as u64
    } else {
        now_ms().saturating_sub((now - at).as_millis() as u64)
    }
}

impl MemoryTaskStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = stellar_core::sync::lock(&self.state);
        let now = Instant::now();
        state
            .tasks
            .retain(|_, task| task.forget_at.is_none_or(|at| at > now));
        state.slots.retain(|_, until| *until > now);
        state.claim_replies.retain(|_, (_, until)| *until > now);
        state.workers.retain(|_, (_, until)| *until > now);
        if state
            .leader
            .as_ref()
            .is_some_and(|(_, _, until)| *until <= now)
        {
            state.leader = None;
        }
        state
    }

    /// Records a failed attempt: retry after `retry_in` while attempts remain, else (or without
    /// `retry_in`) move to the failed set.
    fn record_failure(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Option<Duration>,
    ) -> FailOutcome {
        // Before anything changes: a delay too long for the clock must not panic half way, with
        // the task out of flight and in no other set.
        let now = Instant::now();
        let due = retry_in.map(|delay| now.checked_add(delay.min(MAX_RETRY_DELAY)).unwrap_or(now));
        let mut state = self.state();
        if !Self::current(&state, claimed) {
            return FailOutcome::Rejected;
        }
        state.inflight.remove(&claimed.id);
        let task = state
            .tasks
            .get_mut(&claimed.id)
            .expect("current claims have a task");
        task.record.error = Some(error.to_owned());
        task.record.finished_at_ms = Some(now_ms());
        if let Some(due) = due.filter(|_| task.record.attempts < task.record.max_attempts) {
            task.record.state = TaskState::Delayed;
            task.record.due_at_ms = Some(wall_ms(due));
            task.ready_since = due;
            state.delayed.insert(claimed.id.clone(), due);
            state.bump("retried", &claimed.name);
            return FailOutcome::Retrying;
        }
        task.record.state = TaskState::Failed;
        state.failures += 1;
        let order = state.failures;
        state.failed.insert(claimed.id.clone(), order);
        state.bump("failed", &claimed.name);
        state.bump_node("failed", &claimed.id);
        FailOutcome::Dead
    }

    /// The signal this store wakes when work becomes ready: give it to [`crate::Tasks::new`].
    pub fn signal(&self) -> WorkSignal {
        self.signal.clone()
    }

    fn wake(&self) {
        self.signal.notify();
    }

    fn current(state: &State, claimed: &Claimed) -> bool {
        state
            .tasks
            .get(&claimed.id)
            .is_some_and(|t| t.claims == claimed.token && t.record.state == TaskState::Running)
    }
}

#[async_trait]
impl TaskQueue for MemoryTaskStore {
    async fn enqueue_many(&self, tasks: &[NewTask]) -> Result<Vec<Enqueued>, StoreError> {
        let (outcomes, ready) = {
            let mut state = self.state();
            let mut ready = false;
            let outcomes = tasks
                .iter()
                .map(|task| {
                    let refused = state.refusal(task);
                    refused.unwrap_or_else(|| {
                        ready |= state.insert(task);
                        Enqueued::Added
                    })
                })
                .collect();
            (outcomes, ready)
        };
        if ready {
            self.wake();
        }
        Ok(outcomes)
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>, StoreError> {
        let mut state = self.state();
        if let Some((claimed, _)) = state.claim_replies.get(&request.request_id) {
            // A re-ask: the same tasks, those still held by this claim.
            return Ok(claimed
                .iter()
                .filter(|c| Self::current(&state, c))
                .cloned()
                .collect());
        }
        let mut claim = Claim {
            request,
            claimed: Vec::new(),
            skipped: 0,
        };
        for queue in &request.queues {
            state.claim_parked(queue, &mut claim);
            state.claim_ready(queue, &mut claim);
        }
        if !claim.claimed.is_empty() {
            let until = Instant::now() + request.lease / 3;
            state
                .claim_replies
                .insert(request.request_id.clone(), (claim.claimed.clone(), until));
        }
        Ok(claim.claimed)
    }

    async fn renew(&self, claimed: &Claimed, lease: Duration) -> Result<bool, StoreError> {
        let mut state = self.state();
        if !Self::current(&state, claimed) {
            return Ok(false);
        }
        state
            .inflight
            .insert(claimed.id.clone(), Instant::now() + lease);
        Ok(true)
    }

    async fn complete_many(
        &self,
        claimed: &[Claimed],
        keep: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let mut state = self.state();
        Ok(claimed
            .iter()
            .map(|one| state.complete(one, keep))
            .collect())
    }

    async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Duration,
    ) -> Result<FailOutcome, StoreError> {
        Ok(self.record_failure(claimed, error, Some(retry_in)))
    }

    async fn bury(&self, claimed: &Claimed, error: &str) -> Result<bool, StoreError> {
        Ok(self.record_failure(claimed, error, None) == FailOutcome::Dead)
    }

    async fn progress(&self, claimed: &Claimed, progress: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        if !Self::current(&state, claimed) {
            return Ok(false);
        }
        let task = state
            .tasks
            .get_mut(&claimed.id)
            .expect("current claims have a task");
        task.record.progress = serde_json::from_str(progress).ok();
        Ok(true)
    }

    async fn release(&self, claimed: &Claimed) -> Result<bool, StoreError> {
        {
            let mut state = self.state();
            if !Self::current(&state, claimed) {
                return Ok(false);
            }
            state.inflight.remove(&claimed.id);
            let task = state
                .tasks
                .get_mut(&claimed.id)
                .expect("current claims have a task");
            task.record.attempts -= 1;
            task.record.state = TaskState::Queued;
            task.record.node = None;
            state
                .queues
                .entry(claimed.queue.clone())
                .or_default()
                .push_back(claimed.id.clone());
        }
        self.wake();
        Ok(true)
    }
}

#[async_trait]
impl TaskMaintenance for MemoryTaskStore {
    async fn reap(&self, limit: u32) -> Result<Vec<Reaped>, StoreError> {
        let reaped = {
            let mut state = self.state();
            let now = Instant::now();
            let expired = due(&state.inflight, now, limit);
            let mut reaped = Vec::new();
            for id in &expired {
                state.inflight.remove(id);
                let Some(task) = state.tasks.get_mut(id) else {
                    continue;
                };
                if task.record.state != TaskState::Running {
                    continue;
                }
                task.record.error = Some(format!(
                    "lease expired on node {}",
                    task.record.node.as_deref().unwrap_or("?")
                ));
                let (name, queue) = (task.record.name.clone(), task.record.queue.clone());
                let outcome = if task.record.attempts < task.record.max_attempts {
                    task.record.state = TaskState::Queued;
                    state
                        .queues
                        .entry(queue.clone())
                        .or_default()
                        .push_back(id.clone());
                    state.totals.add("retried", 1);
                    ReapOutcome::Requeued
                } else {
                    task.record.state = TaskState::Failed;
                    task.record.finished_at_ms = Some(now_ms());
                    state.failures += 1;
                    let order = state.failures;
                    state.failed.insert(id.clone(), order);
                    state.bump("failed", &name);
                    ReapOutcome::Failed
                };
                reaped.push(Reaped {
                    queue,
                    name,
                    outcome,
                });
            }
            reaped
        };
        if !reaped.is_empty() {
            self.wake();
        }
        Ok(reaped)
    }

    async fn promote(&self, limit: u32) -> Result<u64, StoreError> {
        let promoted = {
            let mut state = self.state();
            let now = Instant::now();
            let due = due(&state.delayed, now, limit);
            for id in &due {
                state.delayed.remove(id);
                let Some(task) = state.tasks.get_mut(id) else {
                    continue;
                };
                if task.record.state != TaskState::Delayed {
                    continue;
                }
                task.record.state = TaskState::Queued;
                let queue = task.record.queue.clone();
                state
                    .queues
                    .entry(queue)
                    .or_default()
                    .push_front(id.clone());
            }
            due.len() as u64
        };
        if promoted > 0 {
            self.wake();
        }
        Ok(promoted)
    }
}

#[async_trait]
impl TaskInspector for MemoryTaskStore {
    async fn show(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.state().tasks.get(id).map(|task| task.record.clone()))
    }

    async fn failed(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let state = self.state();
        let mut failed: Vec<(u64, TaskRecord)> = state
            .failed
            .iter()
            .filter_map(|(id, order)| {
                state
                    .tasks
                    .get(id)
                    .map(|task| (*order, task.record.clone()))
            })
            .collect();
        failed.sort_by_key(|(order, _)| *order);
        Ok(failed.into_iter().map(|(_, record)| record).collect())
    }

    async fn failed_page(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<TaskRecord>, u64), StoreError> {
        let all = self.failed().await?;
        let total = all.len() as u64;
        let page = all
            .into_iter()
            .rev()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    async fn retry_failed(&self, id: &str, signature: Option<&str>) -> Result<bool, StoreError> {
        {
            let mut state = self.state();
            if state.failed.remove(id).is_none() {
                return Ok(false);
            }
            let task = state.tasks.get_mut(id).expect("failed tasks have a record");
            if let Some(signature) = signature {
                task.signature = signature.to_owned();
            }
            task.record.attempts = 0;
            task.record.state = TaskState::Queued;
            let queue = task.record.queue.clone();
            state
                .queues
                .entry(queue)
                .or_default()
                .push_front(id.to_owned());
        }
        self.wake();
        Ok(true)
    }

    async fn run_now(&self, id: &str) -> Result<bool, StoreError> {
        {
            let mut state = self.state();
            let delayed = state
                .tasks
                .get(id)
                .is_some_and(|task| task.record.state == TaskState::Delayed);
            if !delayed || state.delayed.remove(id).is_none() {
                return Ok(false);
            }
            let task = state
                .tasks
                .get_mut(id)
                .expect("delayed tasks have a record");
            task.record.state = TaskState::Queued;
            task.record.due_at_ms = Some(now_ms());
            task.ready_since = Instant::now();
            let queue = task.record.queue.clone();
            // The front of its queue: claims pop from the back.
            state
                .queues
                .entry(queue)
                .or_default()
                .push_back(id.to_owned());
        }
        self.wake();
        Ok(true)
    }

    async fn remove_failed(&self, id: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.failed.remove(id).is_none() {
            return Ok(false);
        }
        state.tasks.remove(id);
        Ok(true)
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let state = self.state();
        let parked = state.parked.iter().filter(|(_, ids)| !ids.is_empty());
        Ok(Stats {
            processed: state.totals.processed,
            failed: state.totals.failed,
            retried: state.totals.retried,
            tasks: state.by_task.clone(),
            nodes: state.by_node.clone(),
            queues: state
                .queues
                .iter()
                .map(|(queue, ids)| (queue.clone(), state.queue_stats(queue, ids)))
                .collect(),
            delayed: state.delayed.len() as u64,
            in_flight: state.inflight.len() as u64,
            failed_now: state.failed.len() as u64,
            parked: parked
                .map(|((queue, name), ids)| (format!("{queue} {name}"), ids.len() as u64))
                .collect(),
        })
    }

    async fn queued(
        &self,
        queue: &str,
        start: u64,
        stop: u64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let state = self.state();
        let Some(ids) = state.queues.get(queue) else {
            return Ok(Vec::new());
        };
        let next_first = ids
            .iter()
            .rev()
            .skip(start as usize)
            .take((stop.saturating_sub(start) + 1) as usize);
        Ok(state.records(next_first))
    }

    async fn delayed(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let state = self.state();
        let mut due: Vec<(&Instant, &String)> =
            state.delayed.iter().map(|(id, at)| (at, id)).collect();
        due.sort();
        Ok(state.records(due.into_iter().map(|(_, id)| id)))
    }

    async fn delayed_page(&self, limit: u64) -> Result<(Vec<TaskRecord>, u64), StoreError> {
        let state = self.state();
        let mut due: Vec<(&Instant, &String)> =
            state.delayed.iter().map(|(id, at)| (at, id)).collect();
        due.sort();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = state.records(due.iter().take(limit).map(|(_, id)| *id));
        Ok((page, state.delayed.len() as u64))
    }

    async fn running(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let state = self.state();
        let mut ids: Vec<&String> = state.inflight.keys().collect();
        ids.sort();
        Ok(state.records(ids.into_iter()))
    }

    async fn delete(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let mut state = self.state();
        match state.tasks.get(id).map(|task| task.record.state) {
            None => Ok(Some(false)),
            Some(TaskState::Running) => Ok(None),
            Some(_) => {
                state.remove(id);
                Ok(Some(true))
            }
        }
    }

    async fn delete_if(&self, id: &str, state: TaskState) -> Result<bool, StoreError> {
        // One lock from the check to the delete: nothing moves the task in between.
        let mut guard = self.state();
        if state == TaskState::Running
            || guard.tasks.get(id).map(|task| task.record.state) != Some(state)
        {
            return Ok(false);
        }
        guard.remove(id);
        Ok(true)
    }

    async fn delete_queue(&self, queue: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        let mut ids = state.queues.remove(queue).unwrap_or_default();
        let parked: Vec<(String, String)> = state
            .parked
            .keys()
            .filter(|(q, _)| q == queue)
            .cloned()
            .collect();
        for key in parked {
            ids.extend(state.parked.remove(&key).unwrap_or_default());
        }
        for id in &ids {
            if state
                .tasks
                .get(id)
                .is_some_and(|task| task.record.state == TaskState::Queued)
            {
                state.tasks.remove(id);
            }
        }
        Ok(ids.len() as u64)
    }
}

#[async_trait]
impl QueueControl for MemoryTaskStore {
    async fn pause_queue(&self, queue: &str) -> Result<bool, StoreError> {
        Ok(self.state().paused.insert(queue.to_owned()))
    }

    async fn resume_queue(&self, queue: &str) -> Result<bool, StoreError> {
        let resumed = self.state().paused.remove(queue);
        if resumed {
            self.wake();
        }
        Ok(resumed)
    }

    async fn paused_queues(&self) -> Result<BTreeSet<String>, StoreError> {
        Ok(self.state().paused.clone())
    }
}

#[async_trait]
impl Leadership for MemoryTaskStore {
    async fn try_lead(&self, node: &NodeId, lease: Duration) -> Result<Option<u64>, StoreError> {
        let mut state = self.state();
        let until = Instant::now() + lease;
        match &mut state.leader {
            Some((holder, epoch, expires)) if holder == node.as_str() => {
                *expires = until;
                Ok(Some(*epoch))
            }
            Some(_) => Ok(None),
            None => {
                state.epoch += 1;
                let epoch = state.epoch;
                state.leader = Some((node.to_string(), epoch, until));
                Ok(Some(epoch))
            }
        }
    }

    async fn resign(&self, node: &NodeId) -> Result<bool, StoreError> {
        let mut state = self.state();
        let holds = state
            .leader
            .as_ref()
            .is_some_and(|(holder, _, _)| holder == node.as_str());
        if holds {
            state.leader = None;
        }
        Ok(holds)
    }

    async fn leader(&self) -> Result<Option<(String, u64)>, StoreError> {
        Ok(self
            .state()
            .leader
            .as_ref()
            .map(|(holder, epoch, _)| (holder.clone(), *epoch)))
    }
}

#[async_trait]
impl Schedules for MemoryTaskStore {
    async fn set_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        self.state()
            .schedules
            .insert(schedule.id.clone(), schedule.clone());
        Ok(())
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        state.last_slots.remove(id);
        Ok(state.schedules.remove(id).is_some())
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        Ok(self.state().schedules.values().cloned().collect())
    }

    async fn last_slot(&self, schedule: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.state().last_slots.get(schedule).copied())
    }
}

#[async_trait]
impl WorkerRegistry for MemoryTaskStore {
    async fn announce(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), StoreError> {
        self.state()
            .workers
            .insert(worker.node.clone(), (worker.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        Ok(self
            .state()
            .workers
            .values()
            .map(|(info, _)| info.clone())
            .collect())
    }
}

//! The task queue in this process's memory, with the same semantics as Redis. Time is Tokio's.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use stellar_bus::TransportError;
use stellar_core::NodeId;
use tokio::{sync::Notify, time::Instant};

use crate::store::{
    Claimed, Enqueued, FailOutcome, NewTask, Stats, TaskRecord, TaskState, TaskStore,
};

#[derive(Debug)]
struct Task {
    record: TaskRecord,
    claims: u64,
    /// When a completed record is forgotten.
    forget_at: Option<Instant>,
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
    counters: BTreeMap<String, u64>,
}

impl State {
    fn bump(&mut self, counter: &str, name: &str) {
        *self.counters.entry(counter.to_owned()).or_default() += 1;
        *self
            .counters
            .entry(format!("{counter}:{name}"))
            .or_default() += 1;
    }
}

/// A [`TaskStore`] in memory. Clones share the same queues.
#[derive(Debug, Clone, Default)]
pub struct MemoryTaskStore {
    state: Arc<Mutex<State>>,
    generation: Arc<AtomicU64>,
    woken: Arc<Notify>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        state
            .tasks
            .retain(|_, task| task.forget_at.is_none_or(|at| at > now));
        state
    }

    fn wake(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.woken.notify_waiters();
    }

    fn current(state: &State, claimed: &Claimed) -> bool {
        state
            .tasks
            .get(&claimed.id)
            .is_some_and(|t| t.claims == claimed.token && t.record.state == TaskState::Running)
    }
}

#[async_trait]
impl TaskStore for MemoryTaskStore {
    async fn enqueue(&self, task: &NewTask) -> Result<Enqueued, TransportError> {
        let added = {
            let mut state = self.state();
            if let Some(existing) = state.tasks.get(&task.id) {
                let pending = matches!(
                    existing.record.state,
                    TaskState::Queued | TaskState::Delayed | TaskState::Running
                );
                if pending {
                    return Ok(Enqueued::Exists(existing.record.state));
                }
                state.failed.remove(&task.id);
            }
            let now = Instant::now();
            let due = task
                .due_at_ms
                .filter(|due| *due > now_ms())
                .map(|due| now + Duration::from_millis(due - now_ms()));
            let record = TaskRecord {
                id: task.id.clone(),
                name: task.name.clone(),
                queue: task.queue.clone(),
                args: task.args.clone(),
                state: if due.is_some() {
                    TaskState::Delayed
                } else {
                    TaskState::Queued
                },
                attempts: 0,
                max_attempts: task.max_attempts,
                node: None,
                enqueued_at_ms: Some(now_ms()),
                due_at_ms: due.map(wall_ms),
                started_at_ms: None,
                finished_at_ms: None,
                error: None,
            };
            state.tasks.insert(
                task.id.clone(),
                Task {
                    record,
                    claims: 0,
                    forget_at: None,
                },
            );
            let queue = state.queues.entry(task.queue.clone()).or_default();
            match due {
                Some(due) => {
                    state.delayed.insert(task.id.clone(), due);
                }
                None => queue.push_front(task.id.clone()),
            }
            due.is_none()
        };
        if added {
            self.wake();
        }
        Ok(Enqueued::Added)
    }

    async fn claim(
        &self,
        queues: &[String],
        node: &NodeId,
        lease: Duration,
    ) -> Result<Option<Claimed>, TransportError> {
        let mut state = self.state();
        for queue in queues {
            while let Some(id) = state.queues.get_mut(queue).and_then(VecDeque::pop_back) {
                let Some(task) = state.tasks.get_mut(&id) else {
                    continue;
                };
                if task.record.state != TaskState::Queued {
                    continue;
                }
                task.claims += 1;
                task.record.attempts += 1;
                task.record.state = TaskState::Running;
                task.record.node = Some(node.to_string());
                task.record.started_at_ms = Some(now_ms());
                let claimed = Claimed {
                    id: id.clone(),
                    token: task.claims,
                    name: task.record.name.clone(),
                    queue: task.record.queue.clone(),
                    args: task.record.args.clone(),
                    attempt: task.record.attempts,
                    max_attempts: task.record.max_attempts,
                };
                state.inflight.insert(id, Instant::now() + lease);
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    async fn renew(&self, claimed: &Claimed, lease: Duration) -> Result<bool, TransportError> {
        let mut state = self.state();
        if !Self::current(&state, claimed) {
            return Ok(false);
        }
        state
            .inflight
            .insert(claimed.id.clone(), Instant::now() + lease);
        Ok(true)
    }

    async fn complete(&self, claimed: &Claimed, keep: Duration) -> Result<bool, TransportError> {
        let mut state = self.state();
        if !Self::current(&state, claimed) {
            return Ok(false);
        }
        state.inflight.remove(&claimed.id);
        let task = state
            .tasks
            .get_mut(&claimed.id)
            .expect("current claims have a task");
        task.record.state = TaskState::Completed;
        task.record.finished_at_ms = Some(now_ms());
        task.forget_at = Some(Instant::now() + keep);
        state.bump("processed", &claimed.name);
        Ok(true)
    }

    async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Duration,
    ) -> Result<FailOutcome, TransportError> {
        let mut state = self.state();
        if !Self::current(&state, claimed) {
            return Ok(FailOutcome::Rejected);
        }
        state.inflight.remove(&claimed.id);
        let task = state
            .tasks
            .get_mut(&claimed.id)
            .expect("current claims have a task");
        task.record.error = Some(error.to_owned());
        task.record.finished_at_ms = Some(now_ms());
        if task.record.attempts < task.record.max_attempts {
            let due = Instant::now() + retry_in;
            task.record.state = TaskState::Delayed;
            task.record.due_at_ms = Some(wall_ms(due));
            state.delayed.insert(claimed.id.clone(), due);
            state.bump("retried", &claimed.name);
            return Ok(FailOutcome::Retrying);
        }
        task.record.state = TaskState::Failed;
        state.failures += 1;
        let order = state.failures;
        state.failed.insert(claimed.id.clone(), order);
        state.bump("failed", &claimed.name);
        Ok(FailOutcome::Dead)
    }

    async fn release(&self, claimed: &Claimed) -> Result<bool, TransportError> {
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
            task.claims += 1;
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

    async fn reap(&self, limit: u32) -> Result<u64, TransportError> {
        let reaped = {
            let mut state = self.state();
            let now = Instant::now();
            let expired: Vec<String> = state
                .inflight
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(id, _)| id.clone())
                .take(limit as usize)
                .collect();
            for id in &expired {
                state.inflight.remove(id);
                let Some(task) = state.tasks.get_mut(id) else {
                    continue;
                };
                if task.record.state != TaskState::Running {
                    continue;
                }
                task.claims += 1;
                task.record.error = Some(format!(
                    "lease expired on node {}",
                    task.record.node.as_deref().unwrap_or("?")
                ));
                let (name, queue) = (task.record.name.clone(), task.record.queue.clone());
                if task.record.attempts < task.record.max_attempts {
                    task.record.state = TaskState::Queued;
                    state.queues.entry(queue).or_default().push_back(id.clone());
                    *state.counters.entry("retried".to_owned()).or_default() += 1;
                } else {
                    task.record.state = TaskState::Failed;
                    task.record.finished_at_ms = Some(now_ms());
                    state.failures += 1;
                    let order = state.failures;
                    state.failed.insert(id.clone(), order);
                    state.bump("failed", &name);
                }
            }
            expired.len() as u64
        };
        if reaped > 0 {
            self.wake();
        }
        Ok(reaped)
    }

    async fn promote(&self, limit: u32) -> Result<u64, TransportError> {
        let promoted = {
            let mut state = self.state();
            let now = Instant::now();
            let due: Vec<String> = state
                .delayed
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(id, _)| id.clone())
                .take(limit as usize)
                .collect();
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

    fn wake_generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    async fn wait_for_work(&self, _queues: &[String], seen: u64, timeout: Duration) {
        let woken = self.woken.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if self.wake_generation() != seen {
            return;
        }
        let _ = tokio::time::timeout(timeout, woken).await;
    }

    async fn show(&self, id: &str) -> Result<Option<TaskRecord>, TransportError> {
        Ok(self.state().tasks.get(id).map(|task| task.record.clone()))
    }

    async fn failed(&self) -> Result<Vec<TaskRecord>, TransportError> {
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

    async fn retry_failed(&self, id: &str) -> Result<bool, TransportError> {
        {
            let mut state = self.state();
            if state.failed.remove(id).is_none() {
                return Ok(false);
            }
            let task = state.tasks.get_mut(id).expect("failed tasks have a record");
            task.claims += 1;
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

    async fn remove_failed(&self, id: &str) -> Result<bool, TransportError> {
        let mut state = self.state();
        if state.failed.remove(id).is_none() {
            return Ok(false);
        }
        state.tasks.remove(id);
        Ok(true)
    }

    async fn stats(&self) -> Result<Stats, TransportError> {
        let state = self.state();
        let total = |name: &str| state.counters.get(name).copied().unwrap_or(0);
        Ok(Stats {
            processed: total("processed"),
            failed: total("failed"),
            retried: total("retried"),
            by_name: state
                .counters
                .iter()
                .filter(|(k, _)| k.contains(':'))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            queues: state
                .queues
                .iter()
                .map(|(q, ids)| (q.clone(), ids.len() as u64))
                .collect(),
            delayed: state.delayed.len() as u64,
            in_flight: state.inflight.len() as u64,
            failed_now: state.failed.len() as u64,
        })
    }
}

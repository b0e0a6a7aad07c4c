//! What users of [`crate::Tasks`] see of a task: its state, record, schedules, worker pools,
//! what an enqueue did, and the queue statistics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting in its queue.
    Queued,
    /// Waiting for its time (a delayed task, or a retry after backoff).
    Delayed,
    /// Claimed by a worker under a lease.
    Running,
    /// Done; the record is kept for a while.
    Completed,
    /// Out of attempts; in the failed set until retried or removed.
    Failed,
}

impl TaskState {
    /// The state as records store it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delayed => "delayed",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => Self::Queued,
            "delayed" => Self::Delayed,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A recurring schedule: enqueue `task` with `args` at every fire time of its [`Recurrence`].
///
/// Stored as JSON under its id. Records stored before ids and cron existed (`{"name", "task",
/// "args", "queue", "every_ms"}`) still load: their `name` is the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's id (by default the task's name): its slots run as tasks
    /// `recur:<id>:<fire time ms>`, and [`crate::Tasks::unschedule`] takes it.
    #[serde(rename = "name")]
    pub id: String,
    /// The task to enqueue.
    pub task: String,
    /// Its arguments as JSON.
    pub args: String,
    /// Its queue.
    pub queue: String,
    /// When it fires.
    #[serde(flatten)]
    pub recurrence: Recurrence,
    /// The HMAC (from the server token) over id, task, queue, args and recurrence that
    /// [`crate::Tasks::schedule`] sets: the scheduler leader runs no schedule whose signature does
    /// not verify. Empty in records stored before schedules were signed.
    #[serde(default, rename = "sig", skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

/// When a recurring schedule fires. Each fire time is one slot, enqueued once cluster wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Recurrence {
    /// At every time a cron expression matches in a time zone, daylight saving time included
    /// (the `croner` crate's rules: a fixed time that a spring-forward gap skips runs at the first
    /// time after the gap that day; one that a fall-back repeats runs once, at its first pass).
    Cron {
        /// The expression: 5 fields (`minute hour day-of-month month day-of-week`), or 6 with
        /// seconds first, or an alias such as `@daily`.
        cron: String,
        /// The IANA time zone it is read in, e.g. `Europe/Paris` or `UTC`.
        tz: String,
    },
    /// Once per `every_ms` of wall-clock time: slots start at multiples of it since the Unix
    /// epoch.
    Every {
        /// The period, in ms (at least 1).
        every_ms: u64,
    },
}

impl Recurrence {
    /// Once per `every` (at least 1 ms), aligned to multiples of it since the Unix epoch.
    pub fn every(every: std::time::Duration) -> Self {
        Self::Every {
            every_ms: (every.as_millis() as u64).max(1),
        }
    }

    /// At every time `expression` matches in time zone `tz` (an IANA name such as
    /// `Europe/Paris`, or `UTC`). Checked when scheduled: [`crate::Tasks::schedule`] refuses an
    /// expression that does not parse or never matches, and a zone it does not know.
    pub fn cron(expression: impl Into<String>, tz: impl Into<String>) -> Self {
        Self::Cron {
            cron: expression.into(),
            tz: tz.into(),
        }
    }
}

impl std::fmt::Display for Recurrence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Every { every_ms } => write!(f, "every {every_ms} ms"),
            Self::Cron { cron, tz } => write!(f, "cron {cron:?} {tz}"),
        }
    }
}

/// A schedule as [`crate::Tasks::schedules`] lists it: the record, when it runs next, and why
/// it will not run if it will not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleInfo {
    /// The stored schedule.
    pub schedule: Schedule,
    /// Its next fire time after now, ms since the epoch; `None` when it never fires again or
    /// cannot run (see `problem`).
    pub next_run_at_ms: Option<u64>,
    /// Why the scheduler leader skips it, if it does.
    pub problem: Option<String>,
}

/// What a node announces about its workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The node.
    pub node: String,
    /// The queues it serves, highest priority first.
    pub queues: Vec<String>,
    /// How many tasks it runs at once.
    pub concurrency: usize,
    /// The task names it can run.
    #[serde(default)]
    pub tasks: Vec<String>,
}

/// What `enqueue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The task was added.
    Added,
    /// A pending task already has this id; nothing was added.
    Exists(TaskState),
    /// This recurring slot was enqueued before, or its schedule is gone; nothing was added.
    SlotTaken,
    /// The slot's leader no longer holds the leadership; nothing was added.
    Fenced,
}

/// A task record, as `show` and `failed` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub id: String,
    /// The task definition's name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments as JSON.
    pub args: String,
    /// Where it is.
    pub state: TaskState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts it gets.
    pub max_attempts: u32,
    /// The node running it, or that ran it last.
    pub node: Option<String>,
    /// When it was enqueued (ms since the epoch, store clock).
    pub enqueued_at_ms: Option<u64>,
    /// When it is (or was) due, if delayed.
    pub due_at_ms: Option<u64>,
    /// When its last attempt started.
    pub started_at_ms: Option<u64>,
    /// When its last attempt ended.
    pub finished_at_ms: Option<u64>,
    /// The last error.
    pub error: Option<String>,
    /// The progress its handler last reported in this attempt, or the last one
    /// ([`crate::TaskContext::progress`]): a percentage or any JSON value. Each claim clears it.
    #[serde(default)]
    pub progress: Option<serde_json::Value>,
    /// The id of the trace its enqueue belongs to (32 hex digits): its runs continue that trace,
    /// and their log lines name it.
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl TaskRecord {
    /// Since when a ready task waits (ms since the epoch): its enqueue, or the due time it was
    /// promoted at.
    pub(crate) fn waiting_since(&self) -> u64 {
        let enqueued = self.enqueued_at_ms.unwrap_or(0);
        self.due_at_ms.map_or(enqueued, |due| due.max(enqueued))
    }
}

/// Counters and gauges of the whole queue system (`stellar tasks stats --json` prints it; the
/// schema is in `docs/tasks.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Completed tasks, in all.
    pub processed: u64,
    /// Tasks moved to the failed set, in all.
    pub failed: u64,
    /// Attempts scheduled again after a failure or a lost lease, in all.
    pub retried: u64,
    /// The same counters per task name.
    pub tasks: BTreeMap<String, Counters>,
    /// Processed and failed per node id (nodes updated within the last day).
    pub nodes: BTreeMap<String, Counters>,
    /// Ready tasks per queue.
    pub queues: BTreeMap<String, QueueStats>,
    /// Tasks waiting for their time.
    pub delayed: u64,
    /// Tasks under a lease.
    pub in_flight: u64,
    /// Tasks in the failed set.
    pub failed_now: u64,
    /// Ready tasks set aside because the nodes that claimed them cannot run their name, per
    /// `<queue> <name>`: they wait for a node that can.
    pub parked: BTreeMap<String, u64>,
}

/// Processed, failed and retried counts of one task name or one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Completed.
    pub processed: u64,
    /// Moved to the failed set.
    pub failed: u64,
    /// Scheduled again after a failure.
    pub retried: u64,
}

impl Counters {
    /// Adds `n` to the counter named `counter` (`processed`, `failed` or `retried`; another name
    /// is ignored).
    pub(crate) fn add(&mut self, counter: &str, n: u64) {
        match counter {
            "processed" => self.processed += n,
            "failed" => self.failed += n,
            "retried" => self.retried += n,
            _ => {}
        }
    }
}

/// One queue's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Ready tasks waiting in it.
    pub depth: u64,
    /// How long the task next to run has waited, in ms (0 when the queue is empty).
    pub oldest_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule stored before ids and cron expressions existed still loads, its name as its id,
    /// and a schedule is stored in the same shape.
    #[test]
    fn schedules_stored_by_earlier_versions_load() {
        let old =
            r#"{"name":"report","task":"report","args":"null","queue":"default","every_ms":1000}"#;
        let schedule: Schedule = serde_json::from_str(old).expect("an old record loads");
        assert_eq!(
            schedule,
            Schedule {
                id: "report".into(),
                task: "report".into(),
                args: "null".into(),
                queue: "default".into(),
                recurrence: Recurrence::Every { every_ms: 1000 },
                signature: String::new(),
            }
        );
        assert_eq!(serde_json::to_string(&schedule).expect("json"), old);
        let cron = Schedule {
            recurrence: Recurrence::cron("0 9 * * 1-5", "Europe/Paris"),
            signature: "00ff".into(),
            ..schedule
        };
        let json = serde_json::to_string(&cron).expect("json");
        assert!(
            json.contains(r#""cron":"0 9 * * 1-5","tz":"Europe/Paris""#),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<Schedule>(&json).expect("loads"),
            cron
        );
    }
}

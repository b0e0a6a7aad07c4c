//! The task system's metrics: what this node's workers did (by queue and task name), how long
//! runs took and tasks waited, whether this node leads the scheduler, and, on the leader only,
//! the cluster-wide backlog.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use stellar_core::{Metrics, metrics::duration_buckets};

use crate::{
    Stats,
    store::{Claimed, Reaped},
};

/// How often the scheduler leader reads the cluster-wide backlog for the gauges.
pub(crate) const BACKLOG_REFRESH: Duration = Duration::from_secs(2);

/// `queue` and `task` labels (both bounded: configured queues, registered task names).
type TaskLabels = [(&'static str, String); 2];
/// `queue`, `task` and `outcome` of a reaped task.
type ReapLabels = [(&'static str, String); 3];
type Histograms = Family<TaskLabels, Histogram, fn() -> Histogram>;

/// The live families of one node's task system. Cloning it is cheap.
#[derive(Debug, Clone)]
pub(crate) struct TaskMetrics {
    processed: Family<TaskLabels, Counter>,
    failed: Family<TaskLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    lease_lost: Family<TaskLabels, Counter>,
    duration: Histograms,
    wait: Histograms,
    reaped: Family<ReapLabels, Counter>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Whether this node leads the scheduler now.
    leader: AtomicBool,
    /// The cluster-wide backlog as the leader last read it; `None` off the leader.
    backlog: Mutex<Option<Stats>>,
    /// Tasks refused for an unsigned record (their name is not trusted as a label).
    unsigned: AtomicU64,
    /// The `(queue, task)` label pairs of reaped tasks so far, at most [`MAX_QUEUE_LABELS`]:
    /// they come from records in Redis, not from this node's configuration.
    reaped_labels: Mutex<HashSet<(String, String)>>,
}

fn labels(claimed: &Claimed) -> TaskLabels {
    [
        ("queue", claimed.queue.clone()),
        ("task", claimed.name.clone()),
    ]
}

impl Default for TaskMetrics {
    fn default() -> Self {
        let histograms = || -> Histograms {
            Family::new_with_constructor(|| Histogram::new(duration_buckets()))
        };
        Self {
            processed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            lease_lost: Family::default(),
            duration: histograms(),
            wait: histograms(),
            reaped: Family::default(),
            shared: Arc::default(),
        }
    }
}

impl TaskMetrics {
    /// Registers every family on `metrics`; `running` reads how many tasks this node runs now.
    pub(crate) fn register(
        &self,
        metrics: &Metrics,
        running: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let per_task = [
            (
                "stellar_tasks_processed",
                "Tasks this node completed, by queue and task name",
                &self.processed,
            ),
            (
                "stellar_tasks_failed",
                "Tasks this node moved to the failed set (last attempt failed, or aborted by the handler), by queue and task name",
                &self.failed,
            ),
            (
                "stellar_tasks_retried",
                "Failed attempts on this node scheduled to run again, by queue and task name",
                &self.retried,
            ),
            (
                "stellar_tasks_lease_lost",
                "Attempts on this node that lost their lease while running (another node may run the task), by queue and task name",
                &self.lease_lost,
            ),
        ];
        for (name, help, family) in per_task {
            metrics.register(name, help, family.clone());
        }
        metrics.register(
            "stellar_task_run_duration_seconds",
            "How long this node's task attempts ran (handler start to outcome), by queue and task name",
            self.duration.clone(),
        );
        metrics.register(
            "stellar_task_queue_wait_seconds",
            "How long tasks this node claimed had waited ready in their queue, by queue and task name",
            self.wait.clone(),
        );
        metrics.register(
            "stellar_tasks_reaped",
            "Tasks whose lease expired that this node's maintenance took back, by queue, task name and outcome (requeued or failed)",
            self.reaped.clone(),
        );
        let shared = self.shared.clone();
        metrics.snapshot(move |out| {
            out.gauge("stellar_tasks_running", "Tasks running on this node now", &[], running() as f64);
            out.counter(
                "stellar_tasks_unsigned",
                "Claimed tasks refused because their record's signature does not verify",
                &[],
                shared.unsigned.load(Ordering::Relaxed),
            );
            let leader = shared.leader.load(Ordering::Relaxed);
            out.gauge(
                "stellar_scheduler_leader",
                "1 on the node that leads the scheduler (and exports the cluster-wide task gauges), 0 elsewhere",
                &[],
                if leader { 1.0 } else { 0.0 },
            );
            if !leader {
                return;
            }
            if let Some(stats) = stellar_core::sync::lock(&shared.backlog).as_ref() {
                cluster_gauges(out, stats);
            }
        });
    }

    /// A claimed task is about to run: how long it waited.
    pub(crate) fn started(&self, claimed: &Claimed) {
        self.wait
            .get_or_create(&labels(claimed))
            .observe(claimed.waited.as_secs_f64());
    }

    /// An attempt ended after `ran`.
    pub(crate) fn ran(&self, claimed: &Claimed, ran: Duration) {
        self.duration
            .get_or_create(&labels(claimed))
            .observe(ran.as_secs_f64());
    }

    pub(crate) fn processed(&self, claimed: &Claimed) {
        self.processed.get_or_create(&labels(claimed)).inc();
    }

    pub(crate) fn failed(&self, claimed: &Claimed) {
        self.failed.get_or_create(&labels(claimed)).inc();
    }

    pub(crate) fn retried(&self, claimed: &Claimed) {
        self.retried.get_or_create(&labels(claimed)).inc();
    }

    pub(crate) fn lease_lost(&self, claimed: &Claimed) {
        self.lease_lost.get_or_create(&labels(claimed)).inc();
    }

    pub(crate) fn unsigned(&self) {
        self.shared.unsigned.fetch_add(1, Ordering::Relaxed);
    }

    /// Tasks this node's reaper took back after their lease expired.
    pub(crate) fn reaped(&self, reaped: &[Reaped]) {
        let mut seen = stellar_core::sync::lock(&self.shared.reaped_labels);
        for task in reaped {
            let pair = (task.queue.clone(), task.name.clone());
            let known = seen.contains(&pair)
                || (seen.len() < MAX_QUEUE_LABELS && seen.insert(pair.clone()));
            // Past the cap, a new pair is counted under `other` rather than as a new series.
            let (queue, name) = if known {
                pair
            } else {
                (OTHER.to_owned(), OTHER.to_owned())
            };
            let labels = [
                ("queue", queue),
                ("task", name),
                ("outcome", task.outcome.as_str().to_owned()),
            ];
            self.reaped.get_or_create(&labels).inc();
        }
    }

    /// Whether this node leads the scheduler; off the leader the backlog is forgotten.
    pub(crate) fn set_leader(&self, leader: bool) {
        self.shared.leader.store(leader, Ordering::Relaxed);
        if !leader {
            *stellar_core::sync::lock(&self.shared.backlog) = None;
        }
    }

    /// The cluster-wide backlog the leader just read.
    pub(crate) fn set_backlog(&self, stats: Stats) {
        *stellar_core::sync::lock(&self.shared.backlog) = Some(stats);
    }
}

/// The cluster-wide gauges, from the leader's last read of the backlog.
/// At most this many queues get their own depth and age series (and at most this many
/// `(queue, task)` pairs their own reaped series).
const MAX_QUEUE_LABELS: usize = 256;
/// The label value of reaped tasks past [`MAX_QUEUE_LABELS`] pairs.
const OTHER: &str = "other";

fn cluster_gauges(out: &mut stellar_core::metrics::Samples, stats: &Stats) {
    // Queue names come from Redis, where anyone with write access may add some: a bounded
    // number of label values, whatever is stored.
    for (queue, backlog) in stats.queues.iter().take(MAX_QUEUE_LABELS) {
        let labels = [("queue", queue.as_str())];
        out.gauge(
            "stellar_queue_depth",
            "Ready tasks waiting in the queue (cluster-wide; exported by the scheduler leader only)",
            &labels,
            backlog.depth as f64,
        );
        out.gauge(
            "stellar_queue_oldest_task_age_seconds",
            "How long the task next to run in the queue has waited (cluster-wide; leader only)",
            &labels,
            backlog.oldest_ms as f64 / 1000.0,
        );
    }
    let whole = [
        (
            "stellar_tasks_delayed",
            "Tasks waiting for their time, a retry or a schedule (cluster-wide; leader only)",
            stats.delayed,
        ),
        (
            "stellar_tasks_in_flight",
            "Tasks under a lease, running somewhere (cluster-wide; leader only)",
            stats.in_flight,
        ),
        (
            "stellar_tasks_failed_set_size",
            "Tasks in the failed set (cluster-wide; leader only)",
            stats.failed_now,
        ),
        (
            "stellar_tasks_parked",
            "Ready tasks set aside until a node that can run their name claims them (cluster-wide; leader only)",
            stats.parked.values().sum(),
        ),
    ];
    for (name, help, value) in whole {
        out.gauge(name, help, &[], value as f64);
    }
}

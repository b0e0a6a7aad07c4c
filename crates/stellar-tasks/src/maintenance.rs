//! The maintenance loop of one node: promotion of due tasks, reaping of expired leases, the
//! announcement of its workers. Any node runs it; every step is idempotent.

use std::{collections::HashSet, time::Duration};

use stellar_core::CancellationToken;
use tracing::{debug, info, warn};

use crate::{StoreError, Tasks, WorkerInfo};

/// How many due or expired tasks one maintenance step moves at most.
const BATCH: u32 = 200;

/// Promotes due tasks and reaps expired leases, on every node (the scripts are idempotent), and
/// announces this node's workers. A failing step is logged at warn when it starts failing.
pub(crate) async fn run_maintenance(tasks: Tasks, cancel: CancellationToken) {
    let config = &tasks.inner.config;
    let mut tick = tokio::time::interval(config.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_announce = tokio::time::Instant::now();
    let mut trouble = Trouble::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if tokio::time::Instant::now() >= next_announce {
            next_announce = tokio::time::Instant::now() + Duration::from_secs(1);
            trouble.check("announcing this node's workers", announce(&tasks).await);
        }
        trouble.check("promoting due tasks", promote_due(&tasks).await);
        match tasks.inner.store.reap(BATCH).await {
            Ok(reaped) => {
                trouble.check("reaping expired leases", Ok(()));
                if !reaped.is_empty() {
                    tasks.inner.metrics.reaped(&reaped);
                    let n_reaped = reaped.len();
                    warn!(node_id = %tasks.inner.node_id, reaped = n_reaped, "took back tasks with expired leases");
                }
            }
            Err(err) => trouble.check("reaping expired leases", Err(err)),
        }
    }
}

async fn announce(tasks: &Tasks) -> Result<(), StoreError> {
    let config = &tasks.inner.config;
    let announcement = WorkerInfo {
        node: tasks.inner.node_id.to_string(),
        queues: config.queues.clone(),
        concurrency: config.concurrency,
        tasks: tasks.names(),
    };
    tasks
        .inner
        .store
        .announce(&announcement, Duration::from_secs(5))
        .await
}

/// Promotes every due task, a batch at a time.
async fn promote_due(tasks: &Tasks) -> Result<(), StoreError> {
    while tasks.inner.store.promote(BATCH).await? >= u64::from(BATCH) {}
    Ok(())
}

/// Which background steps (maintenance, scheduling, lease renewal) are failing: a step is logged
/// at warn when it starts failing (with its error), at debug while it keeps failing, and at info
/// when it works again, so an outage of Redis is reported without a line per tick (or per task).
#[derive(Debug, Default)]
pub(crate) struct Trouble {
    failing: HashSet<&'static str>,
}

impl Trouble {
    pub(crate) fn check(&mut self, step: &'static str, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {
                if self.failing.remove(step) {
                    info!(step, "{step} works again");
                }
            }
            Err(err) if self.failing.insert(step) => {
                warn!(step, error = %err, "{step} failed; will retry");
            }
            Err(err) => debug!(step, error = %err, "{step} still failing"),
        }
    }
}

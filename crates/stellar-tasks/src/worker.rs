//! The worker pool and the maintenance loop of one node.

use std::{sync::Arc, time::Duration};

use stellar_core::{Api, CancellationToken};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::{
    StoreError, TaskContext, Tasks, WorkerInfo,
    retry::Retry,
    store::{ClaimRequest, Claimed, FailOutcome},
};

/// How many due or expired tasks one maintenance step moves at most.
const BATCH: u32 = 200;
/// How many tasks one claim takes at most.
const MAX_CLAIM: usize = 32;

pub(crate) fn start(tasks: Tasks, api: &Api) {
    let cancel = api.cancellation_token();
    if tasks.inner.config.concurrency > 0 {
        api.spawn(run_workers(tasks.clone(), api.clone()));
    }
    api.spawn(crate::scheduler::run(tasks.clone(), cancel.clone()));
    api.spawn(run_maintenance(tasks, cancel));
}

/// Claims tasks while permits are free; on cancel, drains, then hands the rest back.
async fn run_workers(tasks: Tasks, api: Api) {
    let cancel = api.cancellation_token();
    let config = &tasks.inner.config;
    let signal = tasks.inner.signal.clone();
    signal.listen(&api, &config.queues).await;
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let running = TaskTracker::new();
    let hand_back = CancellationToken::new();
    let (acks, pending_acks) = mpsc::unbounded_channel();
    let acknowledger = api.spawn(acknowledge(tasks.clone(), pending_acks));
    info!(node_id = %tasks.inner.node_id, queues = ?config.queues, concurrency = config.concurrency, "task workers started");
    let mut failures = 0_u32;
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        // One permit is ours; take every other free one, to claim a batch in one round trip.
        let mut permits_held = vec![permit];
        while permits_held.len() < MAX_CLAIM {
            match permits.clone().try_acquire_owned() {
                Ok(permit) => permits_held.push(permit),
                Err(_) => break,
            }
        }
        let seen = signal.generation();
        let request = ClaimRequest {
            queues: config.queues.clone(),
            node: tasks.inner.node_id.clone(),
            lease: config.lease,
            max: permits_held.len(),
            names: tasks.runnable_names(),
            request_id: stellar_bus::unique_token(&tasks.inner.node_id, 12),
        };
        match claim(&tasks, &request, &cancel).await {
            Ok(claimed) if !claimed.is_empty() => {
                failures = 0;
                for (claimed, permit) in claimed.into_iter().zip(permits_held) {
                    running.spawn(run_claimed(
                        tasks.clone(),
                        running.clone(),
                        claimed,
                        permit,
                        hand_back.clone(),
                        acks.clone(),
                    ));
                }
            }
            Ok(_) => {
                drop(permits_held);
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = async {
                        signal.listen(&api, &config.queues).await;
                        signal.wait(seen, config.idle_poll).await;
                    } => {}
                }
            }
            Err(err) => {
                drop(permits_held);
                failures += 1;
                if failures == 1 {
                    warn!(node_id = %tasks.inner.node_id, error = %err, "claiming tasks failed; retrying");
                }
                let pause = Duration::from_millis(50 * u64::from(failures.min(20)));
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    running.close();
    let in_flight = running.len();
    info!(node_id = %tasks.inner.node_id, in_flight, "task workers stopping; draining");
    if tokio::time::timeout(config.drain_timeout, running.wait())
        .await
        .is_err()
    {
        warn!(node_id = %tasks.inner.node_id, still_running = running.len(), "drain deadline passed; handing tasks back");
        hand_back.cancel();
        running.wait().await;
    }
    // Every attempt has ended, so no more acknowledgements come; let the last batch go out.
    drop(acks);
    if let Err(err) = acknowledger.await {
        warn!(node_id = %tasks.inner.node_id, error = %err, "the acknowledger ended abnormally");
    }
    info!(node_id = %tasks.inner.node_id, "task workers stopped");
}

/// Claims with `request`; after a transport error, asks again with the same request id (so a
/// claim that ran in Redis but whose reply was lost returns the same tasks) for up to a third of
/// the lease, then reports the error. A claim in flight is never abandoned (its tasks would sit
/// leased to nobody until the lease ends): a stop while asking again leaves one more second to
/// get the answer, so the tasks can be handed back.
async fn claim(
    tasks: &Tasks,
    request: &ClaimRequest,
    cancel: &CancellationToken,
) -> Result<Vec<Claimed>, crate::StoreError> {
    let mut retry = ask_again(request.lease);
    loop {
        match tasks.inner.store.claim(request).await {
            Err(err) if retry.has_time() => {
                debug!(node_id = %request.node, error = %err, "claim failed; asking again with the same request id");
                if cancel.is_cancelled() {
                    retry.cap(Duration::from_secs(1));
                }
                retry.wait().await;
            }
            result => return result,
        }
    }
}

/// A completion waiting to be recorded, and who waits for the answer.
type Ack = (Claimed, oneshot::Sender<Result<bool, String>>);

/// Records completions in batches: whatever accumulated while the previous batch was in flight
/// goes in one script call, so a busy node acknowledges many tasks per round trip.
async fn acknowledge(tasks: Tasks, mut pending: mpsc::UnboundedReceiver<Ack>) {
    const MAX_BATCH: usize = 64;
    let keep = tasks.inner.config.keep_completed;
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(ack) => batch.push(ack),
                Err(_) => break,
            }
        }
        let claims: Vec<Claimed> = batch.iter().map(|(claimed, _)| claimed.clone()).collect();
        match complete_many(&tasks, &claims, keep).await {
            Ok(accepted) => {
                for ((_, answer), accepted) in batch.into_iter().zip(accepted) {
                    let _ = answer.send(Ok(accepted));
                }
            }
            Err(err) => {
                for (_, answer) in batch {
                    let _ = answer.send(Err(err.to_string()));
                }
            }
        }
    }
}

/// Records `claims` as completed; after a transport error, tries again (a completion by the same
/// claim is idempotent) until a third of the lease has passed.
async fn complete_many(
    tasks: &Tasks,
    claims: &[Claimed],
    keep: Duration,
) -> Result<Vec<bool>, crate::StoreError> {
    let mut retry = ask_again(tasks.inner.config.lease);
    loop {
        match tasks.inner.store.complete_many(claims, keep).await {
            Err(err) if retry.has_time() => {
                debug!(node_id = %tasks.inner.node_id, error = %err, "recording completions failed; trying again");
                retry.wait().await;
            }
            result => return result,
        }
    }
}

/// The budget for asking again after a lost claim or completion reply: a third of the lease,
/// so the tasks are still leased when the answer comes.
fn ask_again(lease: Duration) -> Retry {
    Retry::within(
        lease / 3,
        Duration::from_millis(20),
        Duration::from_millis(250),
    )
}

/// What ended one attempt.
enum Outcome {
    Done,
    Failed(String),
    LeaseLost,
    HandedBack,
}

async fn run_claimed(
    tasks: Tasks,
    running: TaskTracker,
    claimed: Claimed,
    permit: OwnedSemaphorePermit,
    hand_back: CancellationToken,
    acks: mpsc::UnboundedSender<Ack>,
) {
    let store = tasks.inner.store.clone();
    let config = &tasks.inner.config;
    let node_id = tasks.inner.node_id.clone();
    if !tasks.verify(&claimed) {
        let error = "unsigned: the task record's signature does not verify (not written with the server token)";
        match store.bury(&claimed, error).await {
            Ok(_) => {
                warn!(%node_id, task_id = %claimed.id, task = %claimed.name, "refused a task whose record is not signed with the server token; moved to the failed set")
            }
            Err(err) => {
                warn!(%node_id, task_id = %claimed.id, error = %err, "refused an unsigned task record; could not move it to the failed set")
            }
        }
        return;
    }
    let Some(definition) = tasks.definition(&claimed.name) else {
        // Only names this node can run are claimed; a definition removed meanwhile hands it back.
        warn!(%node_id, task_id = %claimed.id, task = %claimed.name, "claimed a task this node has no handler for; handing it back");
        if let Err(err) = store.release(&claimed).await {
            warn!(%node_id, task_id = %claimed.id, error = %err, "could not hand the task back; its lease will expire");
        }
        return;
    };
    debug!(%node_id, task_id = %claimed.id, task = %claimed.name, attempt = claimed.attempt, "task started");
    tasks
        .inner
        .running_here
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ctx = TaskContext {
        id: claimed.id.clone(),
        attempt: claimed.attempt,
        node_id: node_id.clone(),
    };
    // Its own task: a panic fails this attempt, never the worker.
    let mut handler = running.spawn((definition.handler)(ctx, claimed.args.clone()));
    let deadline = tokio::time::sleep(definition.timeout);
    tokio::pin!(deadline);
    let mut renew = tokio::time::interval(config.lease / 3);
    renew.reset();
    let outcome = loop {
        tokio::select! {
            joined = &mut handler => break match joined {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(err)) => Outcome::Failed(err.to_string()),
                Err(err) if err.is_panic() => Outcome::Failed("handler panicked".to_owned()),
                Err(_) => Outcome::Failed("handler was cancelled".to_owned()),
            },
            () = &mut deadline => {
                handler.abort();
                break Outcome::Failed(format!("timed out after {:?}", definition.timeout));
            }
            _ = renew.tick() => {
                match store.renew(&claimed, config.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        handler.abort();
                        break Outcome::LeaseLost;
                    }
                    Err(err) => {
                        warn!(%node_id, task_id = %claimed.id, error = %err, "renewing the lease failed; trying again at the next renewal");
                    }
                }
            }
            () = hand_back.cancelled() => {
                handler.abort();
                break Outcome::HandedBack;
            }
        }
    };
    match outcome {
        Outcome::Done => {
            let (answer, answered) = oneshot::channel();
            let recorded = match acks.send((claimed.clone(), answer)) {
                Ok(()) => answered
                    .await
                    .unwrap_or_else(|_| Err("the acknowledger stopped".to_owned())),
                Err(_) => Err("the acknowledger stopped".to_owned()),
            };
            match recorded {
                Ok(true) => debug!(%node_id, task_id = %claimed.id, "task completed"),
                Ok(false) => {
                    warn!(%node_id, task_id = %claimed.id, "completion rejected: this worker lost the lease")
                }
                Err(err) => {
                    warn!(%node_id, task_id = %claimed.id, error = %err, "could not record completion; the lease will expire")
                }
            }
        }
        Outcome::Failed(error) => {
            let retry_in = definition.retry_delay(claimed.attempt);
            match store.fail(&claimed, &error, retry_in).await {
                Ok(FailOutcome::Retrying) => {
                    info!(%node_id, task_id = %claimed.id, attempt = claimed.attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "task failed; will retry")
                }
                Ok(FailOutcome::Dead) => {
                    warn!(%node_id, task_id = %claimed.id, attempt = claimed.attempt, %error, "task failed for the last time")
                }
                Ok(FailOutcome::Rejected) => {
                    warn!(%node_id, task_id = %claimed.id, "failure rejected: this worker lost the lease")
                }
                Err(err) => {
                    warn!(%node_id, task_id = %claimed.id, error = %err, "could not record failure; the lease will expire")
                }
            }
        }
        Outcome::LeaseLost => {
            warn!(%node_id, task_id = %claimed.id, "lease lost while running; another node may run the task")
        }
        Outcome::HandedBack => match store.release(&claimed).await {
            Ok(true) => info!(%node_id, task_id = %claimed.id, "task handed back to its queue"),
            Ok(false) => {
                warn!(%node_id, task_id = %claimed.id, "hand-back rejected: the lease was lost already")
            }
            Err(err) => {
                warn!(%node_id, task_id = %claimed.id, error = %err, "could not hand the task back; its lease will expire")
            }
        },
    }
    tasks
        .inner
        .running_here
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    drop(permit);
}

/// Promotes due tasks and reaps expired leases, on every node (the scripts are idempotent), and
/// announces this node's workers. A failing step is logged at warn when it starts failing.
async fn run_maintenance(tasks: Tasks, cancel: CancellationToken) {
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
            Ok(0) => trouble.check("reaping expired leases", Ok(())),
            Ok(reaped) => {
                trouble.check("reaping expired leases", Ok(()));
                warn!(node_id = %tasks.inner.node_id, reaped, "returned tasks with expired leases to their queues");
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

/// Which maintenance steps are failing: a step is logged at warn when it starts failing (with
/// its error), at debug while it keeps failing, and at info when it works again, so an outage of
/// Redis is reported without a line per tick.
#[derive(Debug, Default)]
pub(crate) struct Trouble {
    failing: std::collections::HashSet<&'static str>,
}

impl Trouble {
    pub(crate) fn check(&mut self, step: &'static str, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {
                if self.failing.remove(step) {
                    info!(step, "task maintenance works again");
                }
            }
            Err(err) if self.failing.insert(step) => {
                warn!(step, error = %err, "task maintenance failed; will retry");
            }
            Err(err) => debug!(step, error = %err, "task maintenance still failing"),
        }
    }
}

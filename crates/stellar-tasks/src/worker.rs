//! The worker pool of one node: claim a batch while permits are free, run each claimed task
//! (`execute` -> [`Outcome`]), then answer for it (`record`). On a stop, in-flight tasks get the
//! drain deadline, then are handed back.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use stellar_core::{Api, CancellationToken};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::{
    MAX_RETRY_DELAY, PAUSE_REFRESH, StoreError, TaskContext, TaskDefinition, TaskError, Tasks,
    error::AfterFailure,
    maintenance::Trouble,
    retry::Retry,
    store::{ClaimRequest, Claimed, FailOutcome},
};

/// How many tasks one claim takes at most.
const MAX_CLAIM: usize = 32;
/// After the hand-back, how long a stop waits for aborted handlers to end. A handler that blocks
/// its thread never sees the abort; it is left running rather than holding up the stop. Well
/// inside the second a node leaves between the drain deadline and its shutdown deadline.
const HANDLER_GRACE: Duration = Duration::from_millis(500);
/// The error of a task whose record does not verify.
const UNSIGNED: &str =
    "unsigned: the task record's signature does not verify (not written with the server token)";

pub(crate) fn start(tasks: Tasks, api: &Api) {
    let cancel = api.cancellation_token();
    if tasks.inner.config.concurrency > 0 {
        api.spawn(run_workers(tasks.clone(), api.clone()));
    }
    api.spawn(crate::scheduler::run(tasks.clone(), cancel.clone()));
    api.spawn(crate::maintenance::run_maintenance(tasks, cancel));
}

/// What the attempts of one worker pool share.
#[derive(Clone)]
struct Pool {
    tasks: Tasks,
    /// Every attempt (claim to answer), so a stop can wait for them.
    running: TaskTracker,
    /// The handlers the attempts run, apart: a stop waits for them only briefly.
    handlers: TaskTracker,
    /// Cancelled when the drain deadline passes: unfinished attempts hand their task back.
    hand_back: CancellationToken,
    /// Whether lease renewals are failing: an outage is logged once, not per task and tick.
    renewals: Arc<Mutex<Trouble>>,
    /// Completions waiting to be recorded in a batch.
    acks: mpsc::UnboundedSender<Ack>,
}

/// Claims tasks while permits are free; on cancel, drains, then hands the rest back.
async fn run_workers(tasks: Tasks, api: Api) {
    let config = &tasks.inner.config;
    let (acks, pending_acks) = mpsc::unbounded_channel();
    let acknowledger = api.spawn(acknowledge(tasks.clone(), pending_acks));
    let pool = Pool {
        tasks: tasks.clone(),
        running: TaskTracker::new(),
        handlers: TaskTracker::new(),
        hand_back: CancellationToken::new(),
        renewals: Arc::default(),
        acks,
    };
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    info!(node_id = %tasks.inner.node_id, queues = ?config.queues, concurrency = config.concurrency, "task workers started");
    claim_loop(&pool, &api, &permits).await;
    drain(&pool).await;
    // Every attempt has ended, so no more acknowledgements come; let the last batch go out.
    drop(pool);
    if let Err(err) = acknowledger.await {
        warn!(node_id = %tasks.inner.node_id, error = %err, "the acknowledger ended abnormally");
    }
    info!(node_id = %tasks.inner.node_id, "task workers stopped");
}

/// Claims a batch whenever a permit is free, waits for a wake-up when there is nothing to claim,
/// and backs off after errors; until `api` stops.
async fn claim_loop(pool: &Pool, api: &Api, permits: &Arc<Semaphore>) {
    let (tasks, cancel) = (&pool.tasks, api.cancellation_token());
    let (config, signal) = (&tasks.inner.config, &tasks.inner.signal);
    signal.listen(api, &config.queues).await;
    let mut failures = 0_u32;
    loop {
        let Some(held) = free_permits(permits, &cancel).await else {
            break;
        };
        let seen = signal.generation();
        let (request, paused) = claim_request(tasks, held.len()).await;
        if tasks.is_quiet() || request.queues.is_empty() {
            // Quiet, or every queue paused: look again after the paused set may have changed.
            drop(held);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = signal.wait(seen, PAUSE_REFRESH) => {}
            }
            continue;
        }
        let backoff = match claim(tasks, &request, &cancel).await {
            Ok(claimed) if !claimed.is_empty() => {
                failures = 0;
                for (claimed, permit) in claimed.into_iter().zip(held) {
                    pool.running
                        .spawn(run_claimed(pool.clone(), claimed, permit));
                }
                continue;
            }
            Ok(_) => None,
            Err(err) => {
                failures += 1;
                if failures == 1 {
                    warn!(node_id = %tasks.inner.node_id, error = %err, "claiming tasks failed; retrying");
                }
                Some(Duration::from_millis(50 * u64::from(failures.min(20))))
            }
        };
        drop(held);
        let pause = async {
            match backoff {
                Some(backoff) => tokio::time::sleep(backoff).await,
                None => {
                    // Listening again picks up a wake-up channel whose subscription ended.
                    signal.listen(api, &config.queues).await;
                    let poll = if paused {
                        config.idle_poll.min(PAUSE_REFRESH)
                    } else {
                        config.idle_poll
                    };
                    signal.wait(seen, poll).await;
                }
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = pause => {}
        }
    }
}

/// Waits for one free permit, then takes every other free one (up to a batch), so a batch is
/// claimed in one round trip; `None` once `cancel` fires.
async fn free_permits(
    permits: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        () = cancel.cancelled() => return None,
        permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
    };
    let mut held = vec![first];
    while held.len() < MAX_CLAIM {
        match permits.clone().try_acquire_owned() {
            Ok(permit) => held.push(permit),
            Err(_) => break,
        }
    }
    Some(held)
}

/// A claim of up to `max` tasks from this node's queues that are not paused; and whether any of
/// its queues is paused.
async fn claim_request(tasks: &Tasks, max: usize) -> (ClaimRequest, bool) {
    let config = &tasks.inner.config;
    let paused = tasks.paused_cached().await;
    let queues: Vec<String> = config
        .queues
        .iter()
        .filter(|queue| !paused.contains(*queue))
        .cloned()
        .collect();
    let any_paused = queues.len() < config.queues.len();
    let request = ClaimRequest {
        queues,
        node: tasks.inner.node_id.clone(),
        lease: config.lease,
        max,
        names: tasks.runnable_names(),
        request_id: stellar_bus::unique_token(&tasks.inner.node_id, 12),
    };
    (request, any_paused)
}

/// Lets in-flight attempts finish within the drain deadline, then hands the rest back, and waits
/// at most [`HANDLER_GRACE`] for their aborted handlers.
async fn drain(pool: &Pool) {
    let node_id = &pool.tasks.inner.node_id;
    pool.running.close();
    pool.handlers.close();
    let in_flight = pool.running.len();
    info!(%node_id, in_flight, "task workers stopping; draining");
    let deadline = pool.tasks.inner.config.drain_timeout;
    if tokio::time::timeout(deadline, pool.running.wait())
        .await
        .is_err()
    {
        warn!(%node_id, still_running = pool.running.len(), "drain deadline passed; handing tasks back");
        pool.hand_back.cancel();
        // An attempt ends at once when handed back: it aborts its handler without waiting for it.
        pool.running.wait().await;
    }
    if tokio::time::timeout(HANDLER_GRACE, pool.handlers.wait())
        .await
        .is_err()
    {
        warn!(%node_id, handlers = pool.handlers.len(), "task handlers still running after their tasks were handed back (blocking their thread?); leaving them");
    }
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
) -> Result<Vec<Claimed>, StoreError> {
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
        let answers: Vec<Result<bool, String>> = match complete_many(&tasks, &claims, keep).await {
            Ok(accepted) => accepted.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err.to_string()); batch.len()],
        };
        for ((_, answer), result) in batch.into_iter().zip(answers) {
            // The attempt waiting for it may have been aborted; nobody is left to tell.
            let _ = answer.send(result);
        }
    }
}

/// Records `claims` as completed; after a transport error, tries again (a completion by the same
/// claim is idempotent) until a third of the lease has passed.
async fn complete_many(
    tasks: &Tasks,
    claims: &[Claimed],
    keep: Duration,
) -> Result<Vec<bool>, StoreError> {
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
    /// The handler succeeded.
    Done,
    /// The handler failed, panicked or timed out; what follows, unless the handler said.
    Failed(String, Option<AfterFailure>),
    /// The lease was lost while it ran: another node may run the task.
    LeaseLost,
    /// The drain deadline passed: hand the task back.
    HandedBack,
}

/// Runs one claimed task and answers for it, in a `task.run` span continuing the trace of its
/// enqueue; the permit is held until then.
async fn run_claimed(pool: Pool, claimed: Claimed, permit: OwnedSemaphorePermit) {
    let span = info_span!(
        "task.run",
        node_id = %pool.tasks.inner.node_id,
        task = %claimed.name,
        queue = %claimed.queue,
        task_id = %claimed.id,
        attempt = claimed.attempt,
        trace_id = tracing::field::Empty,
    );
    stellar_core::trace::follow(&span, claimed.trace);
    run_traced(pool, claimed, permit).instrument(span).await;
}

async fn run_traced(pool: Pool, claimed: Claimed, permit: OwnedSemaphorePermit) {
    let Some(definition) = admit(&pool.tasks, &claimed).await else {
        return;
    };
    let running_here = &pool.tasks.inner.running_here;
    running_here.fetch_add(1, Ordering::Relaxed);
    debug!(node_id = %pool.tasks.inner.node_id, task_id = %claimed.id, task = %claimed.name, attempt = claimed.attempt, "task started");
    let metrics = &pool.tasks.inner.metrics;
    metrics.started(&claimed);
    let began = tokio::time::Instant::now();
    let outcome = execute(&pool, &definition, &claimed).await;
    metrics.ran(&claimed, began.elapsed());
    record(&pool, &definition, &claimed, outcome).await;
    running_here.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// The definition to run `claimed` with, once its record verifies. An unsigned record is buried
/// (never reaches a handler); a name with no handler here is handed back.
async fn admit(tasks: &Tasks, claimed: &Claimed) -> Option<TaskDefinition> {
    let (store, node_id) = (&tasks.inner.store, &tasks.inner.node_id);
    if !tasks.verify(claimed) {
        tasks.inner.metrics.unsigned();
        match store.bury(claimed, UNSIGNED).await {
            Ok(_) => {
                warn!(%node_id, task_id = %claimed.id, task = %claimed.name, "refused a task whose record is not signed with the server token; moved to the failed set")
            }
            Err(err) => {
                warn!(%node_id, task_id = %claimed.id, error = %err, "refused an unsigned task record; could not move it to the failed set")
            }
        }
        return None;
    }
    let definition = tasks.definition(&claimed.name);
    if definition.is_none() {
        // Only names this node can run are claimed; a definition removed meanwhile hands it back.
        warn!(%node_id, task_id = %claimed.id, task = %claimed.name, "claimed a task this node has no handler for; handing it back");
        hand_back(tasks, claimed).await;
    }
    definition
}

/// Runs the handler in a task of its own (a panic fails this attempt, never the worker), renewing
/// the lease every third of it, until it ends, times out, loses the lease or must hand back.
async fn execute(pool: &Pool, definition: &TaskDefinition, claimed: &Claimed) -> Outcome {
    let tasks = &pool.tasks;
    let ctx = TaskContext {
        id: claimed.id.clone(),
        attempt: claimed.attempt,
        node_id: tasks.inner.node_id.clone(),
        claim: Arc::new((tasks.inner.store.clone(), claimed.clone())),
    };
    let run = (definition.handler)(ctx, claimed.args.clone()).instrument(Span::current());
    let mut handler = pool.handlers.spawn(run);
    let deadline = tokio::time::sleep(definition.timeout);
    tokio::pin!(deadline);
    let lease = tasks.inner.config.lease;
    let mut renew = tokio::time::interval(lease / 3);
    renew.reset();
    loop {
        let stopped = tokio::select! {
            joined = &mut handler => return handler_outcome(joined),
            () = &mut deadline => Outcome::Failed(format!("timed out after {:?}", definition.timeout), None),
            _ = renew.tick() => match renew_lease(pool, claimed, lease).await {
                true => continue,
                false => Outcome::LeaseLost,
            },
            () = pool.hand_back.cancelled() => Outcome::HandedBack,
        };
        handler.abort();
        return stopped;
    }
}

fn handler_outcome(
    joined: Result<Result<(), crate::HandlerError>, tokio::task::JoinError>,
) -> Outcome {
    match joined {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(err)) => {
            let then = err.downcast_ref::<TaskError>().map(TaskError::then);
            Outcome::Failed(err.to_string(), then)
        }
        Err(err) if err.is_panic() => Outcome::Failed("handler panicked".to_owned(), None),
        Err(_) => Outcome::Failed("handler was cancelled".to_owned(), None),
    }
}

/// Extends the lease; false once the claim is no longer current. A failed renewal is tried
/// again at the next tick (the lease outlives two of them); the pool logs at warn when renewals
/// start failing, not for each.
async fn renew_lease(pool: &Pool, claimed: &Claimed, lease: Duration) -> bool {
    let (current, result) = match pool.tasks.inner.store.renew(claimed, lease).await {
        Ok(current) => (current, Ok(())),
        Err(err) => {
            debug!(node_id = %pool.tasks.inner.node_id, task_id = %claimed.id, error = %err, "renewing a lease failed; trying again at the next renewal");
            (true, Err(err))
        }
    };
    stellar_core::sync::lock(&pool.renewals).check("renewing task leases", result);
    current
}

/// Answers for an attempt: completion, failure, or hand-back.
async fn record(pool: &Pool, definition: &TaskDefinition, claimed: &Claimed, outcome: Outcome) {
    let node_id = &pool.tasks.inner.node_id;
    match outcome {
        Outcome::Done => record_done(pool, claimed).await,
        Outcome::Failed(error, Some(AfterFailure::Abort)) => {
            abort(&pool.tasks, claimed, &error).await;
        }
        Outcome::Failed(error, then) => {
            let retry_in = match then {
                Some(AfterFailure::RetryAfter(delay)) => delay,
                _ => definition.retry_delay(claimed.attempt),
            }
            .min(MAX_RETRY_DELAY);
            record_failure(&pool.tasks, claimed, &error, retry_in).await;
        }
        Outcome::LeaseLost => {
            pool.tasks.inner.metrics.lease_lost(claimed);
            warn!(%node_id, task_id = %claimed.id, "lease lost while running; another node may run the task")
        }
        Outcome::HandedBack => hand_back(&pool.tasks, claimed).await,
    }
}

/// Queues the completion for the acknowledger and waits for its answer.
async fn record_done(pool: &Pool, claimed: &Claimed) {
    let node_id = &pool.tasks.inner.node_id;
    let (answer, answered) = oneshot::channel();
    let recorded = match pool.acks.send((claimed.clone(), answer)) {
        Ok(()) => answered
            .await
            .unwrap_or_else(|_| Err("the acknowledger stopped".to_owned())),
        Err(_) => Err("the acknowledger stopped".to_owned()),
    };
    match recorded {
        Ok(true) => {
            pool.tasks.inner.metrics.processed(claimed);
            debug!(%node_id, task_id = %claimed.id, "task completed")
        }
        Ok(false) => {
            warn!(%node_id, task_id = %claimed.id, "completion rejected: this worker lost the lease")
        }
        Err(err) => {
            warn!(%node_id, task_id = %claimed.id, error = %err, "could not record completion; the lease will expire")
        }
    }
}

/// Records a failed attempt: retried after `retry_in` while attempts remain.
async fn record_failure(tasks: &Tasks, claimed: &Claimed, error: &str, retry_in: Duration) {
    let node_id = &tasks.inner.node_id;
    match tasks.inner.store.fail(claimed, error, retry_in).await {
        Ok(FailOutcome::Retrying) => {
            tasks.inner.metrics.retried(claimed);
            info!(%node_id, task_id = %claimed.id, attempt = claimed.attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "task failed; will retry")
        }
        Ok(FailOutcome::Dead) => {
            tasks.inner.metrics.failed(claimed);
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

/// Moves a task its handler aborted straight to the failed set.
async fn abort(tasks: &Tasks, claimed: &Claimed, error: &str) {
    let node_id = &tasks.inner.node_id;
    match tasks.inner.store.bury(claimed, error).await {
        Ok(true) => {
            tasks.inner.metrics.failed(claimed);
            warn!(%node_id, task_id = %claimed.id, attempt = claimed.attempt, %error, "task aborted by its handler; not retried")
        }
        Ok(false) => {
            warn!(%node_id, task_id = %claimed.id, "abort rejected: this worker lost the lease")
        }
        Err(err) => {
            warn!(%node_id, task_id = %claimed.id, error = %err, "could not record the abort; the lease will expire")
        }
    }
}

/// Hands a claimed task back to its queue without counting the attempt.
async fn hand_back(tasks: &Tasks, claimed: &Claimed) {
    let node_id = &tasks.inner.node_id;
    match tasks.inner.store.release(claimed).await {
        Ok(true) => info!(%node_id, task_id = %claimed.id, "task handed back to its queue"),
        Ok(false) => {
            warn!(%node_id, task_id = %claimed.id, "hand-back rejected: the lease was lost already")
        }
        Err(err) => {
            warn!(%node_id, task_id = %claimed.id, error = %err, "could not hand the task back; its lease will expire")
        }
    }
}

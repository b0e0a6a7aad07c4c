//! Single enqueues that arrive together reach the store as one batch: while a batch is in
//! flight, the enqueues that come meanwhile wait and go in the next one, so fifty concurrent
//! callers cost the store a few calls instead of fifty (on Redis, one script call each), and a
//! lone caller goes at once, as before. Each caller still gets its own outcome, and its own error:
//! when a combined call fails, every task in it is tried again alone, so a task another caller
//! got wrong (a key of the wrong type planted under its id) fails only that caller. Tasks that
//! replace one never come here (trying one again could replace its own new run).

use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Enqueued, StoreError, TaskStore, store::NewTask};

/// The most tasks one combined call carries.
const MAX_TASKS: usize = 256;
/// The most bytes of arguments one combined call carries: 1 MiB.
const MAX_BYTES: usize = 1024 * 1024;
/// Combined calls in flight at once: a caller waits for at most one round trip behind others.
const IN_FLIGHT: usize = 4;

/// What one enqueue got: its outcome or error, and whether a combined call it was part of may
/// have run before failing (so its task may already have been added by this enqueue).
pub(crate) struct Coalesced {
    pub(crate) result: Result<Enqueued, StoreError>,
    pub(crate) maybe_ran: bool,
}

type Job = (NewTask, oneshot::Sender<Coalesced>);

/// Combines concurrent single-task enqueues of one `Tasks` into batches.
pub(crate) struct Coalescer {
    store: Arc<dyn TaskStore>,
    /// Started at the first enqueue (on the caller's runtime); ends when the `Tasks` is dropped.
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl Coalescer {
    pub(crate) fn new(store: Arc<dyn TaskStore>) -> Self {
        Self {
            store,
            jobs: OnceLock::new(),
        }
    }

    /// Enqueues `task`, in a batch with whatever other enqueues wait at the same time.
    pub(crate) async fn enqueue(&self, task: &NewTask) -> Coalesced {
        let jobs = self.jobs.get_or_init(|| {
            let (jobs, pending) = mpsc::unbounded_channel();
            tokio::spawn(combine(self.store.clone(), pending));
            jobs
        });
        let (reply, answer) = oneshot::channel();
        if jobs.send((task.clone(), reply)).is_ok() {
            match answer.await {
                Ok(coalesced) => return coalesced,
                // The combining task ended with the call in flight (its runtime stopped): the
                // task may have been added; ask alone, and say so.
                Err(_) => return alone(&*self.store, task, true).await,
            }
        }
        // The combining task is gone (a runtime that has ended); nothing was sent.
        alone(&*self.store, task, false).await
    }
}

/// `task` in a call of its own.
async fn alone(store: &dyn TaskStore, task: &NewTask, maybe_ran: bool) -> Coalesced {
    let result = store
        .enqueue_many(std::slice::from_ref(task))
        .await
        .and_then(|outcomes| one(&outcomes));
    Coalesced { result, maybe_ran }
}

fn one(outcomes: &[Enqueued]) -> Result<Enqueued, StoreError> {
    match outcomes {
        [outcome] => Ok(*outcome),
        _ => Err(StoreError::Malformed {
            op: "task enqueue",
            detail: format!("{} outcomes for 1 task", outcomes.len()),
        }),
    }
}

/// Takes whatever waits (up to a batch) whenever a call slot is free, and makes the call.
async fn combine(store: Arc<dyn TaskStore>, mut pending: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.0.args.len();
        let mut batch = vec![first];
        while batch.len() < MAX_TASKS && bytes < MAX_BYTES {
            match pending.try_recv() {
                Ok(job) => {
                    bytes += job.0.args.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            run(store, batch).await;
            drop(slot);
        });
    }
}

/// One combined call for `batch`; after a failure, each task alone.
async fn run(store: Arc<dyn TaskStore>, batch: Vec<Job>) {
    // A caller that stopped waiting (its future dropped, e.g. by a timeout) may try again with
    // the same made-up id: its task is not enqueued behind its back.
    let (tasks, replies): (Vec<NewTask>, Vec<oneshot::Sender<Coalesced>>) = batch
        .into_iter()
        .filter(|(_, reply)| !reply.is_closed())
        .unzip();
    if tasks.is_empty() {
        return;
    }
    if let [task] = tasks.as_slice() {
        let coalesced = alone(&*store, task, false).await;
        if let Some(reply) = replies.into_iter().next() {
            // The caller may have gone (its future dropped); nobody is left to tell.
            let _ = reply.send(coalesced);
        }
        return;
    }
    let maybe_ran = match store.enqueue_many(&tasks).await {
        Ok(outcomes) if outcomes.len() == tasks.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Coalesced {
                    result: Ok(outcome),
                    maybe_ran: false,
                });
            }
            return;
        }
        // A reply of the wrong shape came from a call that ran.
        Ok(_) => true,
        Err(err) => crate::tasks::may_have_run(&err),
    };
    // Each alone, all at once (an outage must not cost one timeout per task in turn).
    let mut each = tokio::task::JoinSet::new();
    for (task, reply) in tasks.into_iter().zip(replies) {
        let store = store.clone();
        each.spawn(async move {
            let _ = reply.send(alone(&*store, &task, maybe_ran).await);
        });
    }
    each.join_all().await;
}

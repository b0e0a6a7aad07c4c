//! Scheduler leadership and recurring tasks. Every node is a candidate; the leader (a short lease
//! with a fencing epoch) enqueues each recurring slot, and the slot key makes a slot run once even
//! if two nodes briefly both believe they lead.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use stellar_core::CancellationToken;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{
    Enqueued, Schedule, StoreError, Tasks,
    store::{NewTask, Slot, now_ms},
    worker::Trouble,
};

/// How often the scheduler looks at the clock for new slots.
const TICK: Duration = Duration::from_millis(50);
/// A new leader enqueues at most this many slots it finds missed since the last one enqueued.
const CATCH_UP: u64 = 20;
/// How often the leader checks for queues no live node serves.
const UNSERVED_CHECK: Duration = Duration::from_secs(10);

pub(crate) async fn run(tasks: Tasks, cancel: CancellationToken) {
    let store = tasks.inner.store.clone();
    let node = tasks.inner.node_id.clone();
    let lease = tasks.inner.config.leader_lease;
    register_code_schedules(&tasks).await;
    let mut epoch: Option<u64> = None;
    let mut next_lead = Instant::now();
    let mut schedules: Vec<Schedule> = Vec::new();
    let mut next_refresh = Instant::now();
    let mut next_unserved = Instant::now() + UNSERVED_CHECK;
    // The next slot to enqueue, per schedule; filled from the store when leadership begins.
    let mut next_slot: HashMap<String, u64> = HashMap::new();
    let mut trouble = Trouble::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if now >= next_lead {
            next_lead = now + lease / 3;
            let led = match store.try_lead(&node, lease).await {
                Ok(led) => {
                    trouble.check("taking the scheduler leadership", Ok(()));
                    led
                }
                Err(err) => {
                    trouble.check("taking the scheduler leadership", Err(err));
                    None
                }
            };
            match (epoch, led) {
                (None, Some(new)) => {
                    info!(node_id = %node, epoch = new, "became the scheduler leader");
                    next_slot.clear();
                }
                (Some(old), None) => {
                    warn!(node_id = %node, epoch = old, "lost the scheduler leadership")
                }
                _ => {}
            }
            epoch = led;
        }
        let Some(current_epoch) = epoch else {
            continue;
        };
        if now >= next_refresh {
            next_refresh = now + Duration::from_secs(1);
            match store.schedules().await {
                Ok(fresh) => {
                    schedules = fresh;
                    trouble.check("reading the schedules", Ok(()));
                }
                Err(err) => trouble.check("reading the schedules", Err(err)),
            }
        }
        let leader = (node.to_string(), current_epoch);
        for schedule in &schedules {
            if !enqueue_due_slots(&tasks, schedule, &leader, &mut next_slot).await {
                warn!(node_id = %node, epoch = current_epoch, "lost the scheduler leadership (fenced)");
                epoch = None;
                break;
            }
        }
        if now >= next_unserved {
            next_unserved = now + UNSERVED_CHECK;
            trouble.check(
                "looking for unserved queues",
                warn_about_unserved_queues(&tasks).await,
            );
        }
    }
    if epoch.is_some() {
        match store.resign(&node).await {
            Ok(true) => info!(node_id = %node, "resigned the scheduler leadership"),
            Ok(false) => {}
            Err(err) => {
                warn!(node_id = %node, error = %err, "cannot resign the scheduler leadership; it ends with its lease")
            }
        }
    }
}

/// Code-defined recurring tasks become stored schedules (idempotent: every node writes the same).
async fn register_code_schedules(tasks: &Tasks) {
    for definition in tasks.definitions() {
        let Some(every) = definition.every else {
            continue;
        };
        let schedule = Schedule {
            name: definition.name.clone(),
            task: definition.name.clone(),
            args: "null".to_owned(),
            queue: definition.queue.clone(),
            every_ms: every.as_millis().max(1) as u64,
        };
        if let Err(err) = tasks.inner.store.set_schedule(&schedule).await {
            warn!(task = %definition.name, error = %err, "cannot register the recurring schedule");
        }
    }
}

/// Enqueues the slots of `schedule` that are due, at most `CATCH_UP` + 1 of them: catch-up after
/// a pause, a takeover or a forward clock step is always clamped. False when the store refused a
/// slot because `leader` no longer leads.
async fn enqueue_due_slots(
    tasks: &Tasks,
    schedule: &Schedule,
    leader: &(String, u64),
    next_slot: &mut HashMap<String, u64>,
) -> bool {
    let every = schedule.every_ms.max(1);
    let current = now_ms() / every * every;
    let floor = current.saturating_sub(CATCH_UP * every);
    let next = match next_slot.get(&schedule.name) {
        Some(next) => (*next).max(floor),
        None => {
            // Continue after the last slot any leader enqueued, catching up a bounded number.
            let last = match tasks.inner.store.last_slot(&schedule.name).await {
                Ok(last) => last,
                Err(err) => {
                    warn!(schedule = %schedule.name, error = %err, "cannot read the last slot enqueued; will retry");
                    return true;
                }
            };
            last.map_or(current, |last| (last + every).max(floor))
        }
    };
    let mut slot = next;
    let max_attempts = tasks
        .definition(&schedule.task)
        .map_or(1, |d| d.max_attempts);
    while slot <= current {
        let id = format!("recur:{}:{slot}", schedule.name);
        let signature = tasks.sign(
            &id,
            &schedule.task,
            &schedule.queue,
            &schedule.args,
            max_attempts,
        );
        let task = NewTask {
            id,
            name: schedule.task.clone(),
            queue: schedule.queue.clone(),
            args: schedule.args.clone(),
            max_attempts,
            due_at_ms: None,
            signature,
            replace: false,
            slot: Some(Slot {
                schedule: schedule.name.clone(),
                at_ms: slot,
                remember: Duration::from_millis(every * (CATCH_UP + 10))
                    .max(Duration::from_secs(60)),
                leader: leader.clone(),
            }),
        };
        match tasks.inner.store.enqueue(&task).await {
            Ok(Enqueued::Fenced) => {
                next_slot.clear();
                return false;
            }
            Ok(_) => slot += every,
            Err(err) => {
                warn!(schedule = %schedule.name, slot, error = %err, "cannot enqueue a recurring slot; will retry");
                break;
            }
        }
    }
    next_slot.insert(schedule.name.clone(), slot);
    true
}

async fn warn_about_unserved_queues(tasks: &Tasks) -> Result<(), StoreError> {
    let stats = tasks.inner.store.stats().await?;
    let workers = tasks.inner.store.workers().await?;
    let served: HashSet<&str> = workers
        .iter()
        .flat_map(|w| w.queues.iter().map(String::as_str))
        .collect();
    for (queue, waiting) in &stats.queues {
        if *waiting > 0 && !served.contains(queue.as_str()) {
            warn!(
                queue,
                waiting, "tasks wait in a queue that no live node serves"
            );
        }
    }
    for (queue_and_name, waiting) in &stats.parked {
        let (queue, name) = queue_and_name
            .split_once(' ')
            .unwrap_or((queue_and_name, ""));
        let runnable = workers
            .iter()
            .any(|w| w.queues.iter().any(|q| q == queue) && w.tasks.iter().any(|t| t == name));
        if !runnable {
            warn!(
                queue,
                task = name,
                waiting,
                "tasks wait that no live node can run (no handler registered); they are kept, not failed"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use stellar_core::NodeId;

    use super::*;
    use crate::{
        MemoryTaskStore, TaskConfig, TaskDefinition,
        store::{Leadership, Schedules, TaskInspector},
    };

    /// A leader whose next slot lies a day back (it was paused, or the clock stepped forward a
    /// day) enqueues at most `CATCH_UP` + 1 slots, not 86,400, and never one twice.
    #[tokio::test]
    async fn catch_up_is_clamped_whenever_the_next_slot_lies_far_back() {
        let store = MemoryTaskStore::new();
        let node = NodeId::new("leader").expect("id");
        let tasks = Tasks::new(
            Arc::new(store.clone()),
            store.signal(),
            node.clone(),
            TaskConfig::default(),
        );
        tasks.register(TaskDefinition::new("tick", |_, _: ()| async { Ok(()) }));
        let schedule = Schedule {
            name: "tick".into(),
            task: "tick".into(),
            args: "null".into(),
            queue: "default".into(),
            every_ms: 1000,
        };
        store.set_schedule(&schedule).await.expect("schedule");
        let epoch = store
            .try_lead(&node, Duration::from_secs(30))
            .await
            .expect("lead")
            .expect("leads");
        let leader = (node.to_string(), epoch);
        let a_day_ago = now_ms() / 1000 * 1000 - 86_400_000;
        let mut next_slot = HashMap::from([("tick".to_owned(), a_day_ago)]);
        assert!(enqueue_due_slots(&tasks, &schedule, &leader, &mut next_slot).await);
        let queued = store.stats().await.expect("stats").queues["default"];
        assert!(
            (CATCH_UP..=CATCH_UP + 2).contains(&queued),
            "{queued} slots enqueued after a day"
        );
        // The next tick adds at most the slot that just began.
        assert!(enqueue_due_slots(&tasks, &schedule, &leader, &mut next_slot).await);
        let after = store.stats().await.expect("stats").queues["default"];
        assert!(after <= queued + 1, "{queued} then {after}");
        // A deposed leader (another epoch) is fenced.
        let deposed = (node.to_string(), epoch + 1);
        let tock = Schedule {
            name: "tock".into(),
            ..schedule.clone()
        };
        store.set_schedule(&tock).await.expect("schedule");
        let mut behind = HashMap::from([("tock".to_owned(), a_day_ago)]);
        assert!(!enqueue_due_slots(&tasks, &tock, &deposed, &mut behind).await);
        let fenced = store.stats().await.expect("stats").queues["default"];
        assert_eq!(fenced, after, "a deposed leader enqueued slots");
    }
}

//! Scheduler leadership and recurring tasks. Every node is a candidate; the leader (a short lease
//! with a fencing epoch) enqueues each recurring slot, and the slot key makes a slot run once even
//! if two nodes briefly both believe they lead.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use stellar_core::CancellationToken;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{
    Enqueued, Recurrence, Schedule, StoreError, Tasks,
    maintenance::Trouble,
    metrics::BACKLOG_REFRESH,
    store::{NewTask, Slot, now_ms},
    timetable::Timetable,
};

/// How often the scheduler looks at the clock for new slots.
const TICK: Duration = Duration::from_millis(50);
/// A new leader enqueues at most this many slots it finds missed since the last one enqueued.
const CATCH_UP: u64 = 20;
/// How far ahead of this node's clock a recorded last slot may be (clock skew between nodes).
const MAX_LAST_SLOT_AHEAD_MS: u64 = 60_000;
/// How often the leader checks for queues no live node serves.
const UNSERVED_CHECK: Duration = Duration::from_secs(10);

pub(crate) async fn run(tasks: Tasks, cancel: CancellationToken) {
    register_code_schedules(&tasks).await;
    let mut scheduler = Scheduler::new(tasks);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        scheduler.tick().await;
    }
    scheduler.resign().await;
}

/// A schedule the leader runs, with its timetable.
#[derive(Debug)]
struct Active {
    schedule: Schedule,
    timetable: Timetable,
}

/// One node's scheduler: a candidate for the leadership, and while it leads, the one that
/// enqueues the slots of every schedule.
struct Scheduler {
    tasks: Tasks,
    /// The leadership epoch while this node leads.
    epoch: Option<u64>,
    next_lead: Instant,
    schedules: Vec<Active>,
    next_refresh: Instant,
    next_unserved: Instant,
    /// When the leader next reads the cluster-wide backlog for the metrics.
    next_backlog: Instant,
    /// The next slot to enqueue, per schedule id; filled from the store when leadership begins.
    next_slot: HashMap<String, u64>,
    /// Schedules that cannot run here, with why, each warned about once.
    refused: HashMap<String, String>,
    trouble: Trouble,
}

impl Scheduler {
    fn new(tasks: Tasks) -> Self {
        let now = Instant::now();
        Self {
            tasks,
            epoch: None,
            next_lead: now,
            schedules: Vec::new(),
            next_refresh: now,
            next_unserved: now + UNSERVED_CHECK,
            next_backlog: now,
            next_slot: HashMap::new(),
            refused: HashMap::new(),
            trouble: Trouble::default(),
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_lead {
            self.next_lead = now + self.tasks.inner.config.leader_lease / 3;
            self.lead().await;
        }
        let Some(epoch) = self.epoch else {
            return;
        };
        if now >= self.next_refresh {
            self.next_refresh = now + Duration::from_secs(1);
            self.refresh().await;
        }
        self.enqueue_slots(epoch).await;
        if now >= self.next_backlog {
            self.next_backlog = now + BACKLOG_REFRESH;
            match self.tasks.inner.store.stats().await {
                Ok(stats) => self.tasks.inner.metrics.set_backlog(stats),
                Err(err) => debug!(error = %err, "reading the backlog for the metrics failed"),
            }
        }
        if now >= self.next_unserved {
            self.next_unserved = now + UNSERVED_CHECK;
            let checked = warn_about_unserved_queues(&self.tasks).await;
            self.trouble.check("looking for unserved queues", checked);
        }
    }

    /// Takes or renews the leadership, and says when it begins or ends.
    async fn lead(&mut self) {
        let node = &self.tasks.inner.node_id;
        let lease = self.tasks.inner.config.leader_lease;
        let led = match self.tasks.inner.store.try_lead(node, lease).await {
            Ok(led) => {
                self.trouble
                    .check("taking the scheduler leadership", Ok(()));
                led
            }
            Err(err) => {
                self.trouble
                    .check("taking the scheduler leadership", Err(err));
                None
            }
        };
        self.tasks.inner.metrics.set_leader(led.is_some());
        match (self.epoch, led) {
            (None, Some(new)) => {
                info!(node_id = %node, epoch = new, "became the scheduler leader");
                // Nothing from an earlier term: the slots and schedules are read afresh.
                self.next_slot.clear();
                self.schedules.clear();
                self.next_refresh = Instant::now();
                self.next_backlog = Instant::now();
            }
            (Some(old), None) => {
                warn!(node_id = %node, epoch = old, "lost the scheduler leadership")
            }
            _ => {}
        }
        self.epoch = led;
    }

    /// Reads the schedules again; a removed one forgets its next slot (created again, it
    /// starts afresh), a changed one gets a new timetable.
    async fn refresh(&mut self) {
        let fresh = match self.tasks.inner.store.schedules().await {
            Ok(fresh) => fresh,
            Err(err) => return self.trouble.check("reading the schedules", Err(err)),
        };
        self.trouble.check("reading the schedules", Ok(()));
        let mut old: HashMap<String, Active> = std::mem::take(&mut self.schedules)
            .into_iter()
            .map(|active| (active.schedule.id.clone(), active))
            .collect();
        let stored_ids: Vec<String> = fresh.iter().map(|s| s.id.clone()).collect();
        let now = now_ms();
        for schedule in fresh {
            match old.remove(&schedule.id) {
                Some(active) if active.schedule == schedule => self.schedules.push(active),
                changed => {
                    let Some(active) = self.activate(schedule) else {
                        continue;
                    };
                    if changed.is_some() {
                        // A new recurrence starts at its own next fire time, not where the old
                        // timetable would have run next.
                        let first = active.timetable.first(now).unwrap_or(u64::MAX);
                        self.next_slot.insert(active.schedule.id.clone(), first);
                    }
                    self.schedules.push(active);
                }
            }
        }
        let ids: HashSet<&str> = self
            .schedules
            .iter()
            .map(|a| a.schedule.id.as_str())
            .collect();
        self.next_slot.retain(|id, _| ids.contains(id.as_str()));
        // Forget refusals of schedules that are gone; count those still refused.
        let stored: HashSet<&str> = stored_ids.iter().map(String::as_str).collect();
        self.refused.retain(|id, _| stored.contains(id.as_str()));
        let refused = self.refused.len() as u64;
        self.tasks
            .inner
            .refused_schedules
            .store(refused, std::sync::atomic::Ordering::Relaxed);
    }

    /// The schedule ready to run, or `None` (warned about once) if its signature does not
    /// verify or it cannot run here.
    fn activate(&mut self, schedule: Schedule) -> Option<Active> {
        match self.tasks.schedule_problem(&schedule) {
            Ok(timetable) => {
                self.refused.remove(&schedule.id);
                Some(Active {
                    schedule,
                    timetable,
                })
            }
            Err(why) => {
                if self.refused.get(&schedule.id) != Some(&why) {
                    warn!(schedule = %schedule.id, task = %schedule.task, problem = %why, "a recurring schedule is skipped: it never runs");
                    self.refused.insert(schedule.id, why);
                }
                None
            }
        }
    }

    /// Enqueues the due slots of every schedule as the leader of `epoch`; stops leading when the
    /// store fences a slot off.
    async fn enqueue_slots(&mut self, epoch: u64) {
        let leader = (self.tasks.inner.node_id.to_string(), epoch);
        let mut failed = Ok(());
        for active in &self.schedules {
            match enqueue_due_slots(&self.tasks, active, &leader, &mut self.next_slot).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(node_id = %leader.0, epoch, "lost the scheduler leadership (fenced)");
                    self.epoch = None;
                    self.tasks.inner.metrics.set_leader(false);
                    return;
                }
                // Retried at the next tick; reported once while it keeps failing.
                Err(err) => failed = Err(err),
            }
        }
        self.trouble.check("enqueue recurring slots", failed);
    }

    async fn resign(&self) {
        if self.epoch.is_none() {
            return;
        }
        let node = &self.tasks.inner.node_id;
        match self.tasks.inner.store.resign(node).await {
            Ok(true) => info!(node_id = %node, "resigned the scheduler leadership"),
            Ok(false) => {}
            Err(err) => {
                warn!(node_id = %node, error = %err, "cannot resign the scheduler leadership; it ends with its lease")
            }
        }
    }
}

/// Code-defined recurring tasks become stored schedules named after their task, signed by this
/// node (idempotent: every node with the same token writes the same).
async fn register_code_schedules(tasks: &Tasks) {
    for definition in tasks.definitions() {
        let Some(every) = definition.every else {
            continue;
        };
        let mut schedule = Schedule {
            id: definition.name.clone(),
            task: definition.name.clone(),
            args: "null".to_owned(),
            queue: definition.queue.clone(),
            recurrence: Recurrence::every(every),
            signature: String::new(),
        };
        schedule.signature = tasks.sign_schedule(&schedule);
        if let Err(err) = tasks.store_schedule(&schedule).await {
            warn!(task = %definition.name, error = %err, "cannot register the recurring schedule");
        }
    }
}

/// Enqueues the fire times of a schedule that are due, at most `CATCH_UP` + 1 of them: catch-up
/// after a pause, a takeover or a forward clock step is always clamped. False when the store
/// refused a slot because `leader` no longer leads; an error when the store failed (the slots
/// not enqueued are tried again at the next tick).
async fn enqueue_due_slots(
    tasks: &Tasks,
    active: &Active,
    leader: &(String, u64),
    next_slot: &mut HashMap<String, u64>,
) -> Result<bool, StoreError> {
    let (schedule, timetable) = (&active.schedule, &active.timetable);
    let now = now_ms();
    let pending = match next_slot.get(&schedule.id) {
        Some(next) => *next,
        // Continue after the last slot any leader enqueued, catching up a bounded number.
        None => match tasks.inner.store.last_slot(&schedule.id).await? {
            // A slot is enqueued only once due: one recorded ahead of this clock by more than
            // the skew between nodes was not written by a sane leader, and would stop the
            // schedule until then.
            Some(last) if last > now + MAX_LAST_SLOT_AHEAD_MS => {
                warn!(schedule = %schedule.id, last_slot_ms = last, "the last slot recorded is in the future; starting afresh");
                timetable.first(now)
            }
            Some(last) => timetable.after(last),
            None => timetable.first(now),
        }
        .unwrap_or(u64::MAX),
    };
    if pending > now {
        next_slot.insert(schedule.id.clone(), pending);
        return Ok(true);
    }
    let next = timetable.after(now).unwrap_or(u64::MAX);
    for slot in timetable.due(pending, now, CATCH_UP as usize + 1) {
        let task = slot_task(tasks, active, slot, leader);
        match tasks.inner.store.enqueue(&task).await {
            Ok(Enqueued::Fenced) => {
                next_slot.clear();
                return Ok(false);
            }
            Ok(_) => {}
            Err(err) => {
                next_slot.insert(schedule.id.clone(), slot);
                return Err(err);
            }
        }
    }
    next_slot.insert(schedule.id.clone(), next);
    Ok(true)
}

/// The task of the slot at fire time `at_ms` of a schedule, enqueued by `leader`.
fn slot_task(tasks: &Tasks, active: &Active, at_ms: u64, leader: &(String, u64)) -> NewTask {
    let schedule = &active.schedule;
    let max_attempts = tasks
        .definition(&schedule.task)
        .map_or(1, |d| d.max_attempts);
    let id = format!("recur:{}:{at_ms}", schedule.id);
    let signature = tasks.sign(
        &id,
        &schedule.task,
        &schedule.queue,
        &schedule.args,
        max_attempts,
    );
    // Long enough to outlast any catch-up; a month at most (a yearly cron need not be kept).
    let gap = active
        .timetable
        .gap_after(at_ms)
        .min(31 * 86_400_000 / (CATCH_UP + 10));
    NewTask {
        id,
        name: schedule.task.clone(),
        queue: schedule.queue.clone(),
        args: schedule.args.clone(),
        max_attempts,
        due_at_ms: None,
        signature,
        replace: false,
        // Each slot's run is a trace of its own.
        trace: None,
        slot: Some(Slot {
            schedule: schedule.id.clone(),
            at_ms,
            remember: Duration::from_millis(gap * (CATCH_UP + 10)).max(Duration::from_secs(60)),
            leader: leader.clone(),
        }),
    }
}

async fn warn_about_unserved_queues(tasks: &Tasks) -> Result<(), StoreError> {
    let stats = tasks.inner.store.stats().await?;
    let workers = tasks.inner.store.workers().await?;
    let served: HashSet<&str> = workers
        .iter()
        .flat_map(|w| w.queues.iter().map(String::as_str))
        .collect();
    for (queue, backlog) in &stats.queues {
        let (waiting, oldest_ms) = (backlog.depth, backlog.oldest_ms);
        if waiting > 0 && !served.contains(queue.as_str()) {
            warn!(
                queue,
                waiting, oldest_ms, "tasks wait in a queue that no live node serves"
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
            id: "tick".into(),
            task: "tick".into(),
            args: "null".into(),
            queue: "default".into(),
            recurrence: Recurrence::Every { every_ms: 1000 },
            signature: String::new(),
        };
        store.set_schedule(&schedule).await.expect("schedule");
        let active = |schedule: &Schedule| Active {
            schedule: schedule.clone(),
            timetable: Timetable::new(&schedule.recurrence).expect("valid"),
        };
        let epoch = store
            .try_lead(&node, Duration::from_secs(30))
            .await
            .expect("lead")
            .expect("leads");
        let leader = (node.to_string(), epoch);
        let a_day_ago = now_ms() / 1000 * 1000 - 86_400_000;
        let mut next_slot = HashMap::from([("tick".to_owned(), a_day_ago)]);
        assert!(
            enqueue_due_slots(&tasks, &active(&schedule), &leader, &mut next_slot)
                .await
                .expect("store")
        );
        let queued = store.stats().await.expect("stats").queues["default"].depth;
        assert!(
            (CATCH_UP..=CATCH_UP + 2).contains(&queued),
            "{queued} slots enqueued after a day"
        );
        // The next tick adds at most the slot that just began.
        assert!(
            enqueue_due_slots(&tasks, &active(&schedule), &leader, &mut next_slot)
                .await
                .expect("store")
        );
        let after = store.stats().await.expect("stats").queues["default"].depth;
        assert!(after <= queued + 1, "{queued} then {after}");
        // A deposed leader (another epoch) is fenced.
        let deposed = (node.to_string(), epoch + 1);
        let tock = Schedule {
            id: "tock".into(),
            ..schedule.clone()
        };
        store.set_schedule(&tock).await.expect("schedule");
        let mut behind = HashMap::from([("tock".to_owned(), a_day_ago)]);
        assert!(
            !enqueue_due_slots(&tasks, &active(&tock), &deposed, &mut behind)
                .await
                .expect("store")
        );
        let fenced = store.stats().await.expect("stats").queues["default"].depth;
        assert_eq!(fenced, after, "a deposed leader enqueued slots");
    }
}

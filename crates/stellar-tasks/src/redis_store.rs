//! The task queue on Redis: one HASH per task, a LIST per queue, ZSETs for delayed, in-flight
//! (scored by lease deadline on Redis time) and failed tasks; every change one Lua script (`lua/`).
//! Enqueues publish a wake-up on `stellar:tasks:wake:<queue>` inside the same script.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use stellar_bus::{RedisPool, Replication};
use stellar_core::{NodeId, TraceParent};

use crate::{
    store::{
        ClaimRequest, Claimed, FailOutcome, Leadership, NewTask, QueueControl, ReapOutcome, Reaped,
        Schedules, StoreError, TaskInspector, TaskMaintenance, TaskQueue, WorkerRegistry, now_ms,
    },
    types::{Counters, Enqueued, QueueStats, Schedule, Stats, TaskRecord, TaskState, WorkerInfo},
};

use crate::keys::{
    self, CLAIM_SEQ, DELAYED, FAILED, INFLIGHT, LAST_SLOT, LEADER, LEADER_EPOCH, NODE_STATS_INDEX,
    NODE_STATS_PREFIX as NODE_STATS, PARKED_PREFIX as PARKED, PAUSED, QUEUE_PREFIX as QUEUE,
    QUEUES, REPLICATION_FENCE, SCHEDULES, SLOT_PREFIX as SLOT, STATS, TASK_PREFIX as TASK,
    WAKE_PREFIX as WAKE, WORKERS,
};
/// How long a node's processed/failed counters outlive its last update (one hash per node id, and
/// a restarted process is a new id: without expiry they would pile up forever).
const NODE_STATS_TTL: &str = "86400000";
/// How many stale or parked ids one claim passes over at most, so its work stays bounded.
const CLAIM_SKIP_LIMIT: usize = 256;
/// How many ids one call of the queue deletion takes off at most.
const DELETE_BATCH: u64 = 250;

// The Lua scripts, one line each: `name` is `lua/<name>.lua`, loaded into `Scripts::name`.
stellar_bus::lua_scripts!(
    "../lua/": enqueue,
    claim,
    renew,
    complete_many,
    fail,
    release,
    progress,
    reap,
    promote,
    retry_failed,
    run_now,
    remove_failed,
    delete,
    delete_queue,
    lead,
    resign,
);

/// A task store on a shared Redis. Its scripts publish wake-ups on each queue's channel: give
/// the workers a [`crate::WorkSignal::subscribed`] to hear them.
#[derive(Debug, Clone)]
pub struct RedisTaskStore {
    pool: RedisPool,
    scripts: Arc<Scripts>,
    /// Replicas an enqueue waits for, and for how long (`WAIT`); `None`: no wait.
    enqueue_wait: Option<(usize, Duration)>,
}

impl RedisTaskStore {
    /// A store on `pool`.
    pub fn new(pool: RedisPool) -> Self {
        Self {
            pool,
            scripts: Arc::new(Scripts::load()),
            enqueue_wait: None,
        }
    }

    /// The same store, acknowledging an enqueue only once `replicas` replicas hold it (Redis
    /// `WAIT` for up to `wait` after the enqueue script); otherwise the enqueue fails with
    /// [`StoreError::NotReplicated`], which the enqueue's retry treats as transient. 0 replicas:
    /// no wait.
    pub fn with_enqueue_wait(mut self, replicas: usize, wait: Duration) -> Self {
        self.enqueue_wait = (replicas > 0).then_some((replicas, wait));
        self
    }

    async fn record_failure(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Duration,
        bury: bool,
    ) -> Result<u8, StoreError> {
        let key = keys::task(&claimed.id);
        let retry_in = retry_in.min(crate::MAX_RETRY_DELAY).as_millis().to_string();
        let token = claimed.token.to_string();
        let bury = if bury { "1" } else { "0" };
        self.pool
            .invoke(
                "task fail",
                &self.scripts.fail,
                &[
                    &key,
                    INFLIGHT,
                    DELAYED,
                    FAILED,
                    STATS,
                    NODE_STATS_INDEX,
                    NODE_STATS,
                ],
                &[&claimed.id, &token, error, &retry_in, bury, NODE_STATS_TTL],
            )
            .await
            .map_err(StoreError::from)
    }

    /// Every node's counters, from the index of nodes updated in the last day (no keyspace
    /// scan; the index forgets older nodes as their counters expire).
    async fn node_stats(&self) -> Result<BTreeMap<String, Counters>, StoreError> {
        let day: u64 = NODE_STATS_TTL.parse().expect("a number");
        let stale = redis::cmd("ZREMRANGEBYSCORE")
            .arg(NODE_STATS_INDEX)
            .arg("-inf")
            .arg(now_ms().saturating_sub(day))
            .clone();
        self.pool.query::<u64>("ZREMRANGEBYSCORE", &stale).await?;
        let nodes: Vec<String> = self
            .pool
            .query(
                "ZRANGE",
                redis::cmd("ZRANGE").arg(NODE_STATS_INDEX).arg(0).arg(-1),
            )
            .await?;
        let mut by_node = BTreeMap::new();
        for node in nodes {
            let fields: HashMap<String, u64> = self
                .pool
                .query(
                    "HGETALL",
                    redis::cmd("HGETALL").arg(keys::node_stats(&node)),
                )
                .await?;
            let counters: &mut Counters = by_node.entry(node).or_default();
            for (counter, value) in fields {
                counters.add(&counter, value);
            }
        }
        Ok(by_node)
    }

    /// The totals and the counters per task name (`<counter>:<name>` fields of the stats hash).
    async fn task_stats(&self) -> Result<(Counters, BTreeMap<String, Counters>), StoreError> {
        let fields: HashMap<String, u64> = self
            .pool
            .query("HGETALL", redis::cmd("HGETALL").arg(STATS))
            .await?;
        let (mut totals, mut by_task) = (Counters::default(), BTreeMap::new());
        for (field, value) in fields {
            match field.split_once(':') {
                Some((counter, name)) => by_task
                    .entry(name.to_owned())
                    .or_insert_with(Counters::default)
                    .add(counter, value),
                None => totals.add(&field, value),
            }
        }
        Ok((totals, by_task))
    }

    /// The backlog of `queue`: its length, and how long the task next to run has waited (the
    /// first of the last few ids that is a queued task of this queue; stale ids are skipped).
    async fn queue_stats(&self, queue: &str) -> Result<QueueStats, StoreError> {
        let key = keys::queue(queue);
        let depth: u64 = self
            .pool
            .query("LLEN", redis::cmd("LLEN").arg(&key))
            .await?;
        let next: Vec<String> = self
            .pool
            .query("LRANGE", redis::cmd("LRANGE").arg(&key).arg(-8).arg(-1))
            .await?;
        for id in next.iter().rev() {
            match self.record(id).await? {
                Some(record) if record.state == TaskState::Queued && record.queue == queue => {
                    let age = now_ms().saturating_sub(record.waiting_since());
                    return Ok(QueueStats {
                        depth,
                        oldest_ms: age,
                    });
                }
                _ => {}
            }
        }
        Ok(QueueStats {
            depth,
            oldest_ms: 0,
        })
    }

    /// Parked tasks of `queue` per `<queue> <name>`.
    async fn parked(&self, queue: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let names: Vec<String> = self
            .pool
            .query(
                "SMEMBERS",
                redis::cmd("SMEMBERS").arg(keys::parked_names(queue)),
            )
            .await?;
        let mut parked = Vec::new();
        for name in names {
            let list = redis::cmd("LLEN").arg(keys::parked(queue, &name)).clone();
            let waiting: u64 = self.pool.query("LLEN", &list).await?;
            if waiting > 0 {
                parked.push((format!("{queue} {name}"), waiting));
            }
        }
        Ok(parked)
    }

    async fn record(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let fields: HashMap<String, String> = self
            .pool
            .query("HGETALL", redis::cmd("HGETALL").arg(keys::task(id)))
            .await?;
        Ok(parse_record(&fields))
    }

    /// The records of `ids` that exist, in order: one pipeline, one round trip.
    async fn records(&self, ids: Vec<String>) -> Result<Vec<TaskRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys::task(id));
        }
        let timeout = self.pool.config().op_timeout;
        let replies: Vec<HashMap<String, String>> = self
            .pool
            .run("HGETALL", timeout, async |conn| {
                pipe.query_async(conn).await
            })
            .await?;
        Ok(replies.iter().filter_map(parse_record).collect())
    }
}

fn parse_record(fields: &HashMap<String, String>) -> Option<TaskRecord> {
    let text = |name: &str| fields.get(name).cloned();
    let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
    Some(TaskRecord {
        id: text("id")?,
        name: text("name")?,
        queue: text("queue")?,
        args: text("args").unwrap_or_else(|| "null".to_owned()),
        state: TaskState::parse(fields.get("state")?)?,
        attempts: number("attempts").unwrap_or(0) as u32,
        max_attempts: number("max_attempts").unwrap_or(1) as u32,
        node: text("node"),
        enqueued_at_ms: number("enqueued_at"),
        due_at_ms: number("due_at"),
        started_at_ms: number("started_at"),
        finished_at_ms: number("finished_at"),
        error: text("error"),
        progress: fields
            .get("progress")
            .and_then(|json| serde_json::from_str(json).ok()),
        trace_id: fields
            .get("trace")
            .and_then(|trace| TraceParent::parse(trace))
            .map(|trace| trace.trace_id_hex()),
    })
}

/// The 14 fields of one task in `lua/enqueue.lua`.
fn enqueue_fields(task: &NewTask) -> [String; 14] {
    let slot = task.slot.as_ref();
    [
        task.id.clone(),
        task.name.clone(),
        task.queue.clone(),
        task.args.clone(),
        task.max_attempts.to_string(),
        task.due_at_ms.unwrap_or(0).to_string(),
        task.signature.clone(),
        if task.replace { "1" } else { "0" }.to_owned(),
        slot.map_or_else(String::new, |s| keys::slot_suffix(&s.schedule, s.at_ms)),
        slot.map_or_else(String::new, |s| ms(s.remember)),
        slot.map_or_else(String::new, |s| s.schedule.clone()),
        slot.map_or_else(String::new, |s| s.at_ms.to_string()),
        slot.map_or_else(String::new, |s| format!("{} {}", s.leader.0, s.leader.1)),
        task.trace
            .map_or_else(String::new, |trace| trace.to_string()),
    ]
}

/// The keys and arguments of `lua/claim.lua` for `request`.
fn claim_call(request: &ClaimRequest) -> (Vec<String>, Vec<String>) {
    let mut keys = vec![
        INFLIGHT.to_owned(),
        CLAIM_SEQ.to_owned(),
        keys::claim_reply(&request.request_id),
        TASK.to_owned(),
        PARKED.to_owned(),
    ];
    for queue in &request.queues {
        keys.extend([keys::queue(queue), keys::parked_names(queue)]);
    }
    let mut args = vec![
        ms(request.lease),
        request.node.to_string(),
        request.max.to_string(),
        CLAIM_SKIP_LIMIT.to_string(),
        request.names.len().to_string(),
    ];
    args.extend(request.names.iter().cloned());
    args.extend(request.queues.iter().cloned());
    args.push(ms(request.lease / 3));
    (keys, args)
}

/// The claimed tasks of a claim reply: how many ids it passed over, then 10 fields per task.
fn parse_claimed(flat: &[redis::Value]) -> Result<Vec<Claimed>, StoreError> {
    if flat.is_empty() || !(flat.len() - 1).is_multiple_of(10) {
        return Err(StoreError::Malformed {
            op: "task claim",
            detail: format!("{} entries", flat.len()),
        });
    }
    let text =
        |value: &redis::Value| redis::from_redis_value::<String>(value.clone()).unwrap_or_default();
    let number =
        |value: &redis::Value| redis::from_redis_value::<u64>(value.clone()).unwrap_or_default();
    Ok(flat[1..]
        .chunks_exact(10)
        .map(|f| Claimed {
            id: text(&f[0]),
            token: number(&f[1]),
            name: text(&f[2]),
            queue: text(&f[3]),
            args: text(&f[4]),
            attempt: number(&f[5]) as u32,
            max_attempts: number(&f[6]) as u32,
            signature: text(&f[7]),
            waited: Duration::from_millis(number(&f[8])),
            trace: TraceParent::parse(&text(&f[9])),
        })
        .collect())
}

/// The longest queue or task name a reap reports (as a metric label), in bytes.
const MAX_REAPED_LABEL: usize = 128;

/// The reap script's reply: queue, name and outcome (0 requeued, 1 failed) per task. Parsed
/// leniently: the script has already moved the tasks, so a name that is not UTF-8 is read lossily
/// (and any name cut at [`MAX_REAPED_LABEL`] bytes) rather than failing the reply.
fn parse_reaped(flat: Vec<redis::Value>) -> Result<Vec<Reaped>, StoreError> {
    if !flat.len().is_multiple_of(3) {
        return Err(StoreError::Malformed {
            op: "task reap",
            detail: format!("{} entries", flat.len()),
        });
    }
    let mut entries = flat.into_iter();
    let mut reaped = Vec::with_capacity(entries.len() / 3);
    while let (Some(queue), Some(name), Some(outcome)) =
        (entries.next(), entries.next(), entries.next())
    {
        let outcome = match outcome {
            redis::Value::Int(1) => ReapOutcome::Failed,
            redis::Value::BulkString(ref b) if b.as_slice() == b"1" => ReapOutcome::Failed,
            _ => ReapOutcome::Requeued,
        };
        reaped.push(Reaped {
            queue: label(&queue),
            name: label(&name),
            outcome,
        });
    }
    Ok(reaped)
}

/// A reply entry as a metric label: lossy UTF-8, at most [`MAX_REAPED_LABEL`] bytes (on a
/// character boundary).
fn label(value: &redis::Value) -> String {
    let mut text = match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Int(n) => n.to_string(),
        _ => String::new(),
    };
    if text.len() > MAX_REAPED_LABEL {
        let end = (0..=MAX_REAPED_LABEL)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
}

fn ms(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

#[async_trait]
impl TaskQueue for RedisTaskStore {
    async fn enqueue_many(&self, tasks: &[NewTask]) -> Result<Vec<Enqueued>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<String> = std::iter::once(WAKE.to_owned())
            .chain(tasks.iter().flat_map(enqueue_fields))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let keys = [
            DELAYED, QUEUES, FAILED, LAST_SLOT, SCHEDULES, LEADER, TASK, QUEUE, SLOT,
        ];
        let reply: Vec<String> = match self.enqueue_wait {
            None => {
                self.pool
                    .invoke("task enqueue", &self.scripts.enqueue, &keys, &args)
                    .await?
            }
            Some((wanted, wait)) => {
                let (reply, acked) = self
                    .pool
                    .invoke_replicated(
                        "task enqueue",
                        &self.scripts.enqueue,
                        &keys,
                        &args,
                        Replication {
                            fence: REPLICATION_FENCE,
                            replicas: wanted,
                            wait,
                        },
                    )
                    .await?;
                if acked < wanted as u64 {
                    return Err(StoreError::NotReplicated { wanted, acked });
                }
                reply
            }
        };
        if reply.len() != tasks.len() {
            return Err(StoreError::Malformed {
                op: "task enqueue",
                detail: format!("{} outcomes for {} tasks", reply.len(), tasks.len()),
            });
        }
        Ok(reply
            .iter()
            .map(|outcome| match outcome.as_str() {
                "added" => Enqueued::Added,
                "slot" => Enqueued::SlotTaken,
                "fenced" => Enqueued::Fenced,
                state => Enqueued::Exists(TaskState::parse(state).unwrap_or(TaskState::Queued)),
            })
            .collect())
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>, StoreError> {
        let (keys, args) = claim_call(request);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // A call that only passed over stale or parked ids (its budget spent) is repeated at once,
        // a few times, rather than leaving the worker idle until its next poll. Nothing was
        // claimed, so no reply was saved under the request id and asking again is safe.
        let mut flat: Vec<redis::Value> = Vec::new();
        for _ in 0..8 {
            flat = self
                .pool
                .invoke("task claim", &self.scripts.claim, &keys, &args)
                .await?;
            let skipped = flat
                .first()
                .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
                .unwrap_or(0);
            if flat.len() > 1 || skipped < CLAIM_SKIP_LIMIT as u64 {
                break;
            }
        }
        parse_claimed(&flat)
    }

    async fn renew(&self, claimed: &Claimed, lease: Duration) -> Result<bool, StoreError> {
        let key = keys::task(&claimed.id);
        let (token, lease) = (claimed.token.to_string(), ms(lease));
        let renewed: u8 = self
            .pool
            .invoke(
                "task renew",
                &self.scripts.renew,
                &[&key, INFLIGHT],
                &[&claimed.id, &token, &lease],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn complete_many(
        &self,
        claimed: &[Claimed],
        keep: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        let keep = ms(keep);
        let tokens: Vec<String> = claimed.iter().map(|c| c.token.to_string()).collect();
        let mut args: Vec<&str> = vec![&keep, NODE_STATS_TTL];
        for (one, token) in claimed.iter().zip(&tokens) {
            args.extend([one.id.as_str(), token.as_str()]);
        }
        let accepted: Vec<u8> = self
            .pool
            .invoke(
                "task complete many",
                &self.scripts.complete_many,
                &[INFLIGHT, STATS, NODE_STATS_INDEX, TASK, NODE_STATS],
                &args,
            )
            .await?;
        Ok(accepted.into_iter().map(|a| a == 1).collect())
    }

    async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_in: Duration,
    ) -> Result<FailOutcome, StoreError> {
        Ok(
            match self.record_failure(claimed, error, retry_in, false).await? {
                1 => FailOutcome::Retrying,
                2 => FailOutcome::Dead,
                _ => FailOutcome::Rejected,
            },
        )
    }

    async fn bury(&self, claimed: &Claimed, error: &str) -> Result<bool, StoreError> {
        Ok(self
            .record_failure(claimed, error, Duration::ZERO, true)
            .await?
            == 2)
    }

    async fn progress(&self, claimed: &Claimed, progress: &str) -> Result<bool, StoreError> {
        let (key, token) = (keys::task(&claimed.id), claimed.token.to_string());
        let recorded: u8 = self
            .pool
            .invoke(
                "task progress",
                &self.scripts.progress,
                &[&key],
                &[&token, progress],
            )
            .await?;
        Ok(recorded == 1)
    }

    async fn release(&self, claimed: &Claimed) -> Result<bool, StoreError> {
        let (key, queue, wake) = (
            keys::task(&claimed.id),
            keys::queue(&claimed.queue),
            keys::wake(&claimed.queue),
        );
        let token = claimed.token.to_string();
        let released: u8 = self
            .pool
            .invoke(
                "task release",
                &self.scripts.release,
                &[&key, INFLIGHT, &queue],
                &[&claimed.id, &token, &wake, &claimed.queue],
            )
            .await?;
        Ok(released == 1)
    }
}

#[async_trait]
impl TaskMaintenance for RedisTaskStore {
    async fn reap(&self, limit: u32) -> Result<Vec<Reaped>, StoreError> {
        let limit = limit.to_string();
        let flat: Vec<redis::Value> = self
            .pool
            .invoke(
                "task reap",
                &self.scripts.reap,
                &[INFLIGHT, FAILED, STATS, TASK, QUEUE],
                &[WAKE, &limit],
            )
            .await?;
        parse_reaped(flat)
    }

    async fn promote(&self, limit: u32) -> Result<u64, StoreError> {
        let limit = limit.to_string();
        self.pool
            .invoke(
                "task promote",
                &self.scripts.promote,
                &[DELAYED, TASK, QUEUE],
                &[WAKE, &limit],
            )
            .await
            .map_err(StoreError::from)
    }
}

#[async_trait]
impl TaskInspector for RedisTaskStore {
    async fn show(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.record(id).await
    }

    async fn failed(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let ids: Vec<String> = self
            .pool
            .query("ZRANGE", redis::cmd("ZRANGE").arg(FAILED).arg(0).arg(-1))
            .await?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.record(&id).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn failed_page(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<TaskRecord>, u64), StoreError> {
        let total: u64 = self
            .pool
            .query("ZCARD", redis::cmd("ZCARD").arg(FAILED))
            .await?;
        if limit == 0 || offset >= total {
            return Ok((Vec::new(), total));
        }
        let stop = offset.saturating_add(limit - 1);
        let ids: Vec<String> = self
            .pool
            .query(
                "ZREVRANGE",
                redis::cmd("ZREVRANGE").arg(FAILED).arg(offset).arg(stop),
            )
            .await?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.record(&id).await? {
                records.push(record);
            }
        }
        Ok((records, total))
    }

    async fn retry_failed(&self, id: &str, signature: Option<&str>) -> Result<bool, StoreError> {
        let key = keys::task(id);
        let moved: u8 = self
            .pool
            .invoke(
                "task retry",
                &self.scripts.retry_failed,
                &[&key, FAILED, QUEUE],
                &[id, WAKE, signature.unwrap_or("")],
            )
            .await?;
        Ok(moved == 1)
    }

    async fn run_now(&self, id: &str) -> Result<bool, StoreError> {
        let key = keys::task(id);
        let moved: u8 = self
            .pool
            .invoke(
                "task run now",
                &self.scripts.run_now,
                &[&key, DELAYED, QUEUE],
                &[id, WAKE],
            )
            .await?;
        Ok(moved == 1)
    }

    async fn remove_failed(&self, id: &str) -> Result<bool, StoreError> {
        let key = keys::task(id);
        let removed: u8 = self
            .pool
            .invoke(
                "task remove",
                &self.scripts.remove_failed,
                &[&key, FAILED],
                &[id],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let (totals, tasks) = self.task_stats().await?;
        let queue_names: Vec<String> = self
            .pool
            .query("SMEMBERS", redis::cmd("SMEMBERS").arg(QUEUES))
            .await?;
        let (mut queues, mut parked) = (BTreeMap::new(), BTreeMap::new());
        for queue in queue_names {
            parked.extend(self.parked(&queue).await?);
            queues.insert(queue.clone(), self.queue_stats(&queue).await?);
        }
        let card = |key: &'static str| async move {
            self.pool
                .query::<u64>("ZCARD", redis::cmd("ZCARD").arg(key))
                .await
        };
        Ok(Stats {
            processed: totals.processed,
            failed: totals.failed,
            retried: totals.retried,
            tasks,
            nodes: self.node_stats().await?,
            queues,
            delayed: card(DELAYED).await?,
            in_flight: card(INFLIGHT).await?,
            failed_now: card(FAILED).await?,
            parked,
        })
    }

    async fn queued(
        &self,
        queue: &str,
        start: u64,
        stop: u64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        // Claims pop from the right: index -1 is next.
        let (from, to) = (
            -1 - i64::try_from(stop).unwrap_or(i64::MAX - 1),
            -1 - i64::try_from(start).unwrap_or(0),
        );
        let mut ids: Vec<String> = self
            .pool
            .query(
                "LRANGE",
                redis::cmd("LRANGE")
                    .arg(keys::queue(queue))
                    .arg(from)
                    .arg(to),
            )
            .await?;
        ids.reverse();
        self.records(ids).await
    }

    async fn delayed(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let ids: Vec<String> = self
            .pool
            .query("ZRANGE", redis::cmd("ZRANGE").arg(DELAYED).arg(0).arg(-1))
            .await?;
        self.records(ids).await
    }

    async fn delayed_page(&self, limit: u64) -> Result<(Vec<TaskRecord>, u64), StoreError> {
        let total: u64 = self
            .pool
            .query("ZCARD", redis::cmd("ZCARD").arg(DELAYED))
            .await?;
        if limit == 0 || total == 0 {
            return Ok((Vec::new(), total));
        }
        let ids: Vec<String> = self
            .pool
            .query(
                "ZRANGE",
                redis::cmd("ZRANGE").arg(DELAYED).arg(0).arg(limit - 1),
            )
            .await?;
        Ok((self.records(ids).await?, total))
    }

    async fn running(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let ids: Vec<String> = self
            .pool
            .query("ZRANGE", redis::cmd("ZRANGE").arg(INFLIGHT).arg(0).arg(-1))
            .await?;
        self.records(ids).await
    }

    async fn delete(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let key = keys::task(id);
        let outcome: i64 = self
            .pool
            .invoke(
                "task delete",
                &self.scripts.delete,
                &[&key, DELAYED, FAILED],
                &[id],
            )
            .await?;
        Ok(match outcome {
            -1 => None,
            deleted => Some(deleted > 0),
        })
    }

    async fn delete_if(&self, id: &str, state: TaskState) -> Result<bool, StoreError> {
        let key = keys::task(id);
        let outcome: i64 = self
            .pool
            .invoke(
                "task delete",
                &self.scripts.delete,
                &[&key, DELAYED, FAILED],
                &[id, state.as_str()],
            )
            .await?;
        Ok(outcome == 1)
    }

    async fn delete_queue(&self, queue: &str) -> Result<u64, StoreError> {
        let (key, parked_names) = (keys::queue(queue), keys::parked_names(queue));
        let batch = DELETE_BATCH.to_string();
        let mut deleted = 0;
        loop {
            let (taken, gone): (u64, u64) = self
                .pool
                .invoke(
                    "queue delete",
                    &self.scripts.delete_queue,
                    &[&key, QUEUES, &parked_names, TASK, PARKED],
                    &[queue, &batch],
                )
                .await?;
            deleted += gone;
            if taken < DELETE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

#[async_trait]
impl QueueControl for RedisTaskStore {
    async fn pause_queue(&self, queue: &str) -> Result<bool, StoreError> {
        let added: u64 = self
            .pool
            .query("SADD", redis::cmd("SADD").arg(PAUSED).arg(queue))
            .await?;
        Ok(added == 1)
    }

    async fn resume_queue(&self, queue: &str) -> Result<bool, StoreError> {
        let removed: u64 = self
            .pool
            .query("SREM", redis::cmd("SREM").arg(PAUSED).arg(queue))
            .await?;
        if removed == 1 {
            let _: u64 = self
                .pool
                .query(
                    "PUBLISH",
                    redis::cmd("PUBLISH").arg(keys::wake(queue)).arg(queue),
                )
                .await?;
        }
        Ok(removed == 1)
    }

    async fn paused_queues(&self) -> Result<BTreeSet<String>, StoreError> {
        self.pool
            .query("SMEMBERS", redis::cmd("SMEMBERS").arg(PAUSED))
            .await
            .map_err(StoreError::from)
    }
}

#[async_trait]
impl Leadership for RedisTaskStore {
    async fn try_lead(&self, node: &NodeId, lease: Duration) -> Result<Option<u64>, StoreError> {
        let lease = ms(lease);
        let epoch: u64 = self
            .pool
            .invoke(
                "lead",
                &self.scripts.lead,
                &[LEADER, LEADER_EPOCH],
                &[node.as_str(), &lease],
            )
            .await?;
        Ok((epoch > 0).then_some(epoch))
    }

    async fn resign(&self, node: &NodeId) -> Result<bool, StoreError> {
        let resigned: u8 = self
            .pool
            .invoke("resign", &self.scripts.resign, &[LEADER], &[node.as_str()])
            .await?;
        Ok(resigned == 1)
    }

    async fn leader(&self) -> Result<Option<(String, u64)>, StoreError> {
        let current: Option<String> = self
            .pool
            .query("GET leader", redis::cmd("GET").arg(LEADER))
            .await?;
        Ok(current.and_then(|value| {
            let (node, epoch) = value.split_once(' ')?;
            Some((node.to_owned(), epoch.parse().ok()?))
        }))
    }
}

#[async_trait]
impl Schedules for RedisTaskStore {
    async fn set_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let json = serde_json::to_string(schedule).expect("schedules serialise");
        self.pool
            .query::<u64>(
                "HSET schedule",
                redis::cmd("HSET")
                    .arg(SCHEDULES)
                    .arg(&schedule.id)
                    .arg(json),
            )
            .await
            .map_err(StoreError::from)
            .map(drop)
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let removed: u64 = self
            .pool
            .query("HDEL schedule", redis::cmd("HDEL").arg(SCHEDULES).arg(id))
            .await?;
        // After the schedule: the enqueue script sets no last slot of a schedule that is gone.
        let _: u64 = self
            .pool
            .query("HDEL last slot", redis::cmd("HDEL").arg(LAST_SLOT).arg(id))
            .await?;
        Ok(removed == 1)
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        // Bytes, not strings: one field that is not UTF-8 (written by someone else) must not
        // hide every schedule.
        let all: HashMap<Vec<u8>, Vec<u8>> = self
            .pool
            .query("HGETALL schedules", redis::cmd("HGETALL").arg(SCHEDULES))
            .await?;
        // A record stored under another id than its own is not one `set_schedule` wrote.
        let mut schedules: Vec<Schedule> = all
            .iter()
            .filter_map(|(id, json)| {
                serde_json::from_slice::<Schedule>(json)
                    .ok()
                    .filter(|s| s.id.as_bytes() == id.as_slice())
            })
            .collect();
        schedules.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(schedules)
    }

    async fn last_slot(&self, schedule: &str) -> Result<Option<u64>, StoreError> {
        let raw: Option<Vec<u8>> = self
            .pool
            .query(
                "HGET last slot",
                redis::cmd("HGET").arg(LAST_SLOT).arg(schedule),
            )
            .await?;
        // Not a number (not written by enqueue.lua): as if no slot had run, never an error that
        // would stall the schedule.
        Ok(raw.and_then(|raw| std::str::from_utf8(&raw).ok()?.parse().ok()))
    }
}

#[async_trait]
impl WorkerRegistry for RedisTaskStore {
    async fn announce(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(worker).expect("worker info serialises");
        let cmd = redis::cmd("SET")
            .arg(keys::worker(&worker.node))
            .arg(json)
            .arg("PX")
            .arg(ms(ttl))
            .clone();
        self.pool.query::<()>("SET worker", &cmd).await?;
        let index = redis::cmd("ZADD")
            .arg(WORKERS)
            .arg(now_ms())
            .arg(&worker.node)
            .clone();
        self.pool
            .query::<u64>("ZADD workers", &index)
            .await
            .map_err(StoreError::from)
            .map(drop)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        // The index of announcing nodes, not a keyspace scan; a node whose announcement expired
        // leaves the index here.
        let nodes: Vec<String> = self
            .pool
            .query("ZRANGE", redis::cmd("ZRANGE").arg(WORKERS).arg(0).arg(-1))
            .await?;
        let mut workers = Vec::new();
        for node in nodes {
            let json: Option<String> = self
                .pool
                .query("GET worker", redis::cmd("GET").arg(keys::worker(&node)))
                .await?;
            match json {
                Some(json) => workers.extend(serde_json::from_str::<WorkerInfo>(&json).ok()),
                None => {
                    let _: u64 = self
                        .pool
                        .query("ZREM workers", redis::cmd("ZREM").arg(WORKERS).arg(&node))
                        .await?;
                }
            }
        }
        workers.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(workers)
    }
}

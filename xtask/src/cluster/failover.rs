//! Fault rows on Redis Cluster and Sentinel: three nodes run a stream of uniquely identified tasks
//! from several producers while the master holding the task keys is killed (its replica takes
//! over) or their slot moves to another master; then every acknowledged enqueue is looked for
//! (lost: acknowledged, never completed), with each accepted completion and start from the logs.
//!
//! Replication is asynchronous: a master killed just after it acknowledged a write can take the
//! write with it. Rows 16 and 18 therefore report the losses they see instead of failing on them,
//! unless a lost enqueue was acknowledged well before the kill (it had reached the replica by
//! then, so losing it is not asynchronous replication) or after it. Row 19 acknowledges an
//! enqueue only once a replica has it (WAIT), and row 17 moves keys without a failover, so a loss
//! fails them. On loopback expect 0 lost in rows 16 and 18 all the same: Redis writes a reply and
//! the replication stream in the same pass of its event loop, so the kill has to land between two
//! `write` calls; over a network, or with a replica that lags, the window is real.
//!
//! A completion is never waited for: a failover can lose one, and the task then runs again once
//! its lease expires and completes a second time (at least once, by design). Rows 16, 18 and 19
//! report such duplicate completions; row 17 loses no write, so one fails it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use stellar_testkit::{ClusterNode, RedisCluster, RedisSentinel};

use super::{
    Row,
    harness::{Backend, Env, Node, cli_json, enqueue_ids},
    history::History,
};

/// The hash tag of every task key (`docs/redis-keys.md`): its slot holds them all.
const TASKS_TAG: &str = "{tasks}";
/// Enqueueing threads, each running one `stellar tasks enqueue --stdin` after another, so
/// several enqueues are in flight when the fault strikes.
const PRODUCERS: usize = 4;
/// Tasks per enqueue batch (one script call, acknowledged together).
const BATCH: usize = 5;
/// How long each task works.
const TASK_MS: u64 = 10;
/// How long the stream runs before the fault.
const BEFORE_FAULT: Duration = Duration::from_secs(3);
/// How long the stream runs on once Redis serves again.
const AFTER_FAULT: Duration = Duration::from_secs(4);
/// How long a producer retries one batch (the same ids: an idempotency key) before it gives up
/// on it; a batch given up on fails the row.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long the tally waits for every acknowledged task to complete.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// Fewer acknowledged enqueues than this and the row measured nothing.
const MIN_ACKED: usize = 100;
/// An enqueue acknowledged this long before a kill had reached the replica (on loopback it lags
/// by milliseconds): losing it is not asynchronous replication.
const REPLICATION_WINDOW: Duration = Duration::from_secs(2);
/// How long a Sentinel set-up runs without a replica after its failover: enqueues that wait for
/// one (row 19) are refused meanwhile, and retried. Long enough that, on a loaded machine, the
/// producers get past reconnecting to the new master and have calls refused (2 s was not: a run
/// under the whole test suite spent it all on reconnects and saw no refusal).
const REPLICA_BACK_AFTER: Duration = Duration::from_secs(4);
/// Slots moved past the task slot by the reshard: `redis-cli --cluster reshard` moves a master's
/// lowest slots first, so every slot of its range below the task slot moves too.
const NEIGHBOURS: usize = 16;
/// How many acknowledged ids without a logged completion are looked up one by one
/// (`stellar tasks show`); the rest count as lost unseen.
const LOOKUPS: usize = 100;
/// The nodes' environment: a short lease, so a task whose claim or completion a failover lost
/// runs again within the row, and the debug line that logs each accepted completion.
const NODE_ENV: [(&str, &str); 2] = [
    ("STELLAR_TASK_LEASE_MS", "2000"),
    ("STELLAR_LOG", "info,stellar_tasks=debug"),
];
/// The producers' environment: an enqueue the CLI cannot get confirmed within 1 s (Redis away,
/// or too few replicas with WAIT) makes it exit non-zero, and the producer runs it again with the
/// same ids, as a client of a failed call would.
const PRODUCER_ENV: [(&str, &str); 1] = [("STELLAR_TASK_ENQUEUE_RETRY_MS", "1000")];
/// The WAIT option, for the enqueueing CLI and the nodes: an enqueue is acknowledged once one
/// replica has it, or fails after 1 s.
const WAIT_ENV: [(&str, &str); 2] = [
    ("STELLAR_TASK_ENQUEUE_WAIT_REPLICAS", "1"),
    ("STELLAR_TASK_ENQUEUE_WAIT_MS", "1000"),
];

/// What the rows accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A failover without WAIT: enqueues acknowledged within [`REPLICATION_WINDOW`] before the
    /// kill may be lost, and completions may be lost and the task complete again.
    AsyncFailover,
    /// Enqueues that wait for a replica: none lost; a completion (not waited for) may be lost
    /// in the failover and its task complete again.
    WaitedEnqueues,
    /// No write lost: nothing lost, nothing completed twice.
    NoLoss,
}

/// `16-cluster-master-kill`: 3 masters with a replica each; the master of the task slot is
/// SIGKILLed mid-stream and its replica takes over (node timeout 2 s, then an election).
pub(crate) fn cluster_master_kill(env: &Env) -> Result<Row> {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let url = cluster.url();
    let slot = cluster.slot_of(TASKS_TAG);
    let run = stream_through(env, url, &[], || {
        let victim = cluster.master_of_slot(slot);
        cluster.kill_node(victim);
        cluster.wait_for_failover(victim);
        Ok(())
    })?;
    Ok(run.row(env, Expect::AsyncFailover, run.recovered))
}

/// `17-cluster-reshard`: 3 masters; mid-stream the task slot and its neighbours move to another
/// master with `redis-cli --cluster reshard` (keys moved by MIGRATE, clients following `ASK` and
/// `MOVED`). The recovery column is the longest time without an acknowledged enqueue from the
/// reshard's start on.
pub(crate) fn cluster_reshard(env: &Env) -> Result<Row> {
    let mut cluster = RedisCluster::start();
    let url = cluster.url();
    let run = stream_through(env, url, &[], || move_task_slot(&mut cluster))?;
    Ok(run.row(env, Expect::NoLoss, Some(run.longest_stall)))
}

/// `18-sentinel-failover`: a master, its replica and three sentinels; the master is SIGKILLed
/// mid-stream, the sentinels promote the replica and the nodes follow; 2 s later the old master
/// comes back as a replica.
pub(crate) fn sentinel_failover(env: &Env) -> Result<Row> {
    let mut sentinel = RedisSentinel::start();
    let url = sentinel.url();
    let run = stream_through(env, url, &[], || {
        fail_over(&mut sentinel);
        Ok(())
    })?;
    Ok(run.row(env, Expect::AsyncFailover, run.recovered))
}

/// `19-sentinel-failover-wait`: row 18 with enqueues acknowledged only once a replica has them.
/// Until the old master is back as a replica the new master has none, so enqueues are refused and
/// the producers retry them (the same ids): the recovery column includes bringing the replica
/// back.
pub(crate) fn sentinel_failover_wait(env: &Env) -> Result<Row> {
    let mut sentinel = RedisSentinel::start();
    let url = sentinel.url();
    let run = stream_through(env, url, &WAIT_ENV, || {
        fail_over(&mut sentinel);
        Ok(())
    })?;
    Ok(run.row(env, Expect::WaitedEnqueues, run.recovered))
}

/// Kills the Sentinel set-up's master, waits for the sentinels to promote the replica, and
/// after [`REPLICA_BACK_AFTER`] brings the old master back as its replica.
fn fail_over(sentinel: &mut RedisSentinel) {
    sentinel.kill_master();
    sentinel.wait_for_failover();
    thread::sleep(REPLICA_BACK_AFTER);
    sentinel.restart_replica();
}

/// Moves the task slot, with the slots below it on its master and [`NEIGHBOURS`] above, to
/// another master.
fn move_task_slot(cluster: &mut RedisCluster) -> Result<()> {
    let slot = cluster.slot_of(TASKS_TAG);
    let from = cluster.master_of_slot(slot);
    let to = cluster
        .masters()
        .iter()
        .map(ClusterNode::index)
        .find(|&index| index != from)
        .context("another master")?;
    let count = slots_up_to(cluster, from, slot)? + NEIGHBOURS;
    cluster.reshard(from, to, u16::try_from(count)?);
    let now = cluster.master_of_slot(slot);
    if now != to {
        bail!("the reshard left slot {slot} on node {now}, not node {to}");
    }
    Ok(())
}

/// How many slots master `from` serves up to `slot` included (`CLUSTER SLOTS`).
fn slots_up_to(cluster: &RedisCluster, from: usize, slot: u16) -> Result<usize> {
    let port = i64::from(cluster.nodes()[from].port());
    let reply = cluster.command(from, &["CLUSTER", "SLOTS"]);
    let ranges = reply.array().context("CLUSTER SLOTS")?;
    let mut count = 0;
    for range in ranges {
        let items = range.array().context("a slot range")?;
        let number = |index: usize| items.get(index).and_then(|item| item.integer());
        let owner = items
            .get(2)
            .and_then(|master| master.array()?.get(1)?.integer());
        if let (Some(first), Some(last), Some(owner)) = (number(0), number(1), owner)
            && owner == port
            && first <= i64::from(slot)
        {
            count += usize::try_from(last.min(i64::from(slot)) - first + 1)?;
        }
    }
    Ok(count)
}

/// What a stream through a fault left behind.
#[derive(Debug)]
struct Run {
    history: History,
    /// When each acknowledged id was acknowledged.
    acked_at: BTreeMap<String, Instant>,
    /// Ids whose batch was never acknowledged within [`RETRY_FOR`].
    unacked: usize,
    /// Enqueue calls that failed (and were retried).
    failures: Failures,
    /// When the fault began: the kill, or the reshard's start.
    fault_at: Instant,
    /// How long the fault took until Redis served again (failover done, slot moved).
    fault_took: Duration,
    /// From the fault until a task enqueued after it completed.
    recovered: Option<Duration>,
    /// The longest time without an acknowledged enqueue from the fault on.
    longest_stall: Duration,
    /// Acknowledged ids never completed, neither in the logs nor in the store.
    lost: Vec<String>,
    /// Nodes that exited during the run.
    dead: Vec<String>,
}

/// Starts 3 nodes on `url` and the producers (both given `extra` environment), runs `fault`
/// mid-stream, lets the stream run on, then waits for the acknowledged tasks and reads what
/// happened.
fn stream_through(
    env: &Env,
    url: String,
    extra: &[(&'static str, &'static str)],
    fault: impl FnOnce() -> Result<()>,
) -> Result<Run> {
    let node_env: Vec<(&str, &str)> = NODE_ENV.iter().chain(extra).copied().collect();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| Node::start(env, &url, &format!("n{n}"), &node_env))
        .collect::<Result<_>>()?;
    let producers = Producers::start(env, &url, extra);
    thread::sleep(BEFORE_FAULT);
    let fault_at = Instant::now();
    let watcher = Watcher::start(env, producers.acks.clone(), fault_at);
    fault()?;
    let fault_took = fault_at.elapsed();
    thread::sleep(AFTER_FAULT);
    let Streamed {
        acks,
        attempted,
        unacked,
        failures,
    } = producers.finish()?;
    let acked_at: BTreeMap<String, Instant> =
        acks.iter().map(|ack| (ack.id.clone(), ack.acked)).collect();
    let acked: BTreeSet<String> = acked_at.keys().cloned().collect();
    settle(env, &url, &acked)?;
    let recovered = watcher.finish();
    let history = History::read(&env.dir, acked, attempted)?;
    let lost = lost(env, &url, &history);
    let dead = nodes
        .iter_mut()
        .filter_map(|node| {
            let exited = node.wait_exit(Duration::from_millis(1)).is_ok();
            exited.then(|| node.name.clone())
        })
        .collect();
    Ok(Run {
        history,
        acked_at,
        unacked,
        failures,
        fault_at,
        fault_took,
        recovered,
        longest_stall: longest_stall(&acks, fault_at),
        lost,
        dead,
    })
}

/// The longest time without an acknowledgement, from `from` to the last one.
fn longest_stall(acks: &[Ack], from: Instant) -> Duration {
    let mut times: Vec<Instant> = acks
        .iter()
        .map(|ack| ack.acked)
        .filter(|at| *at >= from)
        .collect();
    times.sort_unstable();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for at in times {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest
}

/// Waits until every acknowledged id has an accepted completion in the logs, or nothing is left
/// to run (no task queued, delayed or in flight, three reads in a row over a second: what is
/// missing then is lost), or [`SETTLE_WITHIN`] passes.
fn settle(env: &Env, backend: &dyn Backend, acked: &BTreeSet<String>) -> Result<()> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    let mut idle_reads = 0;
    while Instant::now() < deadline {
        let history = History::read(&env.dir, BTreeSet::new(), BTreeSet::new())?;
        if acked.iter().all(|id| history.completions.contains_key(id)) {
            return Ok(());
        }
        let stats = cli_json(env, backend, &["tasks", "stats", "--json"]).unwrap_or(Value::Null);
        let idle = stats["in_flight"].as_u64() == Some(0)
            && stats["queues"]["default"]["depth"].as_u64().unwrap_or(0) == 0
            && stats["delayed"].as_u64() == Some(0);
        idle_reads = if idle { idle_reads + 1 } else { 0 };
        if idle_reads >= 3 {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Acknowledged ids with no accepted completion in the logs and not completed in the store
/// (the first [`LOOKUPS`] are looked up; any more count as lost unseen).
fn lost(env: &Env, backend: &dyn Backend, history: &History) -> Vec<String> {
    let missing: Vec<&String> = history
        .acked
        .iter()
        .filter(|id| !history.completions.contains_key(*id))
        .collect();
    missing
        .iter()
        .enumerate()
        .filter(|(index, id)| {
            *index >= LOOKUPS
                || match cli_json(env, backend, &["tasks", "show", id, "--json"]) {
                    Ok(record) => record["state"] != "completed",
                    Err(_) => true,
                }
        })
        .map(|(_, id)| (*id).clone())
        .collect()
}

impl Run {
    /// The report row, `recovery` in its recovery column, failed as `expect` says; the figures
    /// behind it go to `failover.txt` in the scenario's folder.
    fn row(&self, env: &Env, expect: Expect, recovery: Option<Duration>) -> Row {
        let history = &self.history;
        let duplicated: Vec<&String> = history
            .completions
            .iter()
            .filter(|(id, n)| **n > 1 && history.acked.contains(*id))
            .map(|(id, _)| id)
            .collect();
        let reexecutions = history
            .acked
            .iter()
            .map(|id| history.starts.get(id).map_or(0, |n| n.saturating_sub(1)))
            .sum();
        let (in_window, outside): (Vec<&String>, Vec<&String>) =
            self.lost.iter().partition(|id| self.in_window(id));
        let mut row = Row {
            enqueued: history.acked.len(),
            completed: history.acked.len() - self.lost.len(),
            lost: self.lost.len(),
            duplicate_completions: duplicated.len() as u64,
            reexecutions,
            recovery,
            failure: self.failure(expect, &outside, &duplicated),
        };
        let details = self.details(&in_window, &duplicated);
        if let Err(err) = std::fs::write(env.dir.join("failover.txt"), details) {
            row.failure
                .get_or_insert_with(|| format!("writing failover.txt: {err}"));
        }
        row
    }

    /// Why the row fails, if it does: `outside` are the lost ids acknowledged outside the
    /// replication window before the fault, `duplicated` the ids completed twice.
    fn failure(
        &self,
        expect: Expect,
        outside: &[&String],
        duplicated: &[&String],
    ) -> Option<String> {
        let acked = self.history.acked.len();
        let unexpected = self.history.unexpected();
        if let Some(name) = self.dead.first() {
            Some(format!("node {name} exited"))
        } else if acked < MIN_ACKED {
            Some(format!("only {acked} enqueues acknowledged"))
        } else if self.unacked > 0 {
            Some(format!(
                "{} enqueue(s) not acknowledged after {RETRY_FOR:?} of retries",
                self.unacked
            ))
        } else if self.recovered.is_none() {
            Some("no task enqueued after the fault completed".into())
        } else if !unexpected.is_empty() {
            Some(format!(
                "{} unexpected task(s), e.g. {}",
                unexpected.len(),
                unexpected[0]
            ))
        } else if expect == Expect::AsyncFailover && !outside.is_empty() {
            Some(format!(
                "{} task(s) lost that were acknowledged outside the {REPLICATION_WINDOW:?} \
                 before the kill, e.g. {}",
                outside.len(),
                outside[0]
            ))
        } else if expect != Expect::AsyncFailover && !self.lost.is_empty() {
            Some(format!("{} acknowledged task(s) lost", self.lost.len()))
        } else if expect == Expect::NoLoss && !duplicated.is_empty() {
            Some(format!("{} duplicate completion(s)", duplicated.len()))
        } else if expect == Expect::WaitedEnqueues && self.failures.not_replicated == 0 {
            // Without a replica for REPLICA_BACK_AFTER, every producer has a call refused.
            Some("no enqueue was refused for want of a replica: is the WAIT option on?".into())
        } else {
            None
        }
    }

    /// Whether `id` was acknowledged within [`REPLICATION_WINDOW`] before the fault.
    fn in_window(&self, id: &str) -> bool {
        self.acked_at.get(id).is_some_and(|at| {
            *at <= self.fault_at && self.fault_at.duration_since(*at) <= REPLICATION_WINDOW
        })
    }

    /// When `id` was acknowledged, in ms from the fault (negative: before it).
    fn offset_ms(&self, id: &str) -> String {
        self.acked_at.get(id).map_or_else(
            || "?".to_owned(),
            |at| match at.checked_duration_since(self.fault_at) {
                Some(after) => format!("+{}", after.as_millis()),
                None => format!("-{}", (self.fault_at - *at).as_millis()),
            },
        )
    }

    /// The figures behind the row, with each lost or duplicated id and when it was acknowledged.
    fn details(&self, in_window: &[&String], duplicated: &[&String]) -> String {
        let history = &self.history;
        let mut text = format!(
            "attempted {} acked {} unacked {} lost {} (in the window before the fault {}) \
             duplicated {} starts {}\nfailed enqueue calls {} (not replicated in time {}), the \
             last: {}\n\
             fault took {:?}, recovered after {:?}, longest stall {:?}\n",
            history.attempted.len(),
            history.acked.len(),
            self.unacked,
            self.lost.len(),
            in_window.len(),
            duplicated.len(),
            history.starts.values().sum::<usize>(),
            self.failures.calls,
            self.failures.not_replicated,
            self.failures.last.as_deref().unwrap_or("-"),
            self.fault_took,
            self.recovered,
            self.longest_stall,
        );
        for id in &self.lost {
            let _ = writeln!(text, "lost {id} acked at {} ms", self.offset_ms(id));
        }
        for id in duplicated {
            let _ = writeln!(text, "duplicated {id} acked at {} ms", self.offset_ms(id));
        }
        text
    }
}

/// An acknowledged enqueue.
#[derive(Debug, Clone)]
struct Ack {
    id: String,
    /// When the CLI call that was acknowledged started: its write happened after this.
    sent: Instant,
    /// When it exited 0: its write happened before this.
    acked: Instant,
}

/// The acknowledgements so far, shared by the producers and the [`Watcher`].
type Acks = Arc<Mutex<Vec<Ack>>>;

/// Enqueueing threads, each writing batches of uniquely identified tasks as fast as the CLI
/// goes, each batch retried with the same ids until acknowledged. Dropped (an error or a panic
/// unwinding the scenario), they give up at once.
struct Producers {
    acks: Acks,
    /// Set to stop after the batch in hand.
    stop: Arc<AtomicBool>,
    /// Set to give up at once.
    abandon: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Produced>>,
}

/// What the producers did.
#[derive(Debug)]
struct Streamed {
    /// Every acknowledged enqueue.
    acks: Vec<Ack>,
    /// Every id attempted, acknowledged or not.
    attempted: BTreeSet<String>,
    /// How many ids were never acknowledged.
    unacked: usize,
    /// The enqueue calls that failed.
    failures: Failures,
}

/// Enqueue calls that failed (the CLI exited non-zero) and were retried.
#[derive(Debug, Default, Clone)]
struct Failures {
    calls: usize,
    /// Of which refused because too few replicas acknowledged the write (the WAIT option).
    not_replicated: usize,
    /// The last line of the last failure's message.
    last: Option<String>,
}

/// What one producer attempted, and how many of its ids were never acknowledged.
#[derive(Debug, Default)]
struct Produced {
    attempted: Vec<String>,
    unacked: usize,
    failures: Failures,
}

impl Producers {
    fn start(env: &Env, url: &str, extra: &[(&'static str, &'static str)]) -> Self {
        let acks = Acks::default();
        let (stop, abandon) = (Arc::default(), Arc::<AtomicBool>::default());
        let threads = (0..PRODUCERS)
            .map(|producer| {
                let extra: Vec<(&str, &str)> = PRODUCER_ENV.iter().chain(extra).copied().collect();
                let (env, url) = (env.clone(), url.to_owned());
                let (acks, stop, abandon) = (acks.clone(), Arc::clone(&stop), abandon.clone());
                thread::spawn(move || {
                    produce(
                        &env,
                        &url,
                        &extra,
                        &format!("fo{producer}"),
                        &acks,
                        &stop,
                        &abandon,
                    )
                })
            })
            .collect();
        Self {
            acks,
            stop,
            abandon,
            threads,
        }
    }

    /// Stops after the batches in hand.
    fn finish(mut self) -> Result<Streamed> {
        self.stop.store(true, Ordering::SeqCst);
        let (mut attempted, mut unacked) = (BTreeSet::new(), 0);
        let mut failures = Failures::default();
        for thread in self.threads.drain(..) {
            let produced = thread
                .join()
                .map_err(|_| anyhow::anyhow!("a producer panicked"))?;
            attempted.extend(produced.attempted);
            unacked += produced.unacked;
            failures.calls += produced.failures.calls;
            failures.not_replicated += produced.failures.not_replicated;
            failures.last = produced.failures.last.or(failures.last);
        }
        // A copy: the watcher reads them until the tally is done.
        let acks = self.acks.lock().expect("no producer panicked").clone();
        Ok(Streamed {
            acks,
            attempted,
            unacked,
            failures,
        })
    }
}

impl Drop for Producers {
    fn drop(&mut self) {
        self.abandon.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One producer: batches `<prefix>-<k>` until `stop`, each retried until acknowledged, for
/// [`RETRY_FOR`] at most, or until `abandon`.
fn produce(
    env: &Env,
    backend: &dyn Backend,
    extra: &[(&str, &str)],
    prefix: &str,
    acks: &Mutex<Vec<Ack>>,
    stop: &AtomicBool,
    abandon: &AtomicBool,
) -> Produced {
    let mut produced = Produced::default();
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<String> = (next..next + BATCH)
            .map(|k| format!("{prefix}-{k}"))
            .collect();
        next += BATCH;
        produced.attempted.extend(ids.iter().cloned());
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            if abandon.load(Ordering::SeqCst) {
                return produced;
            }
            let sent = Instant::now();
            match enqueue_ids(env, backend, &ids, TASK_MS, extra) {
                Ok(()) => {
                    let acked = Instant::now();
                    let mut acks = acks.lock().expect("no producer panicked");
                    acks.extend(ids.iter().map(|id| Ack {
                        id: id.clone(),
                        sent,
                        acked,
                    }));
                    break;
                }
                Err(err) => {
                    produced.failures.calls += 1;
                    // stellar_tasks::Error::NotReplicated, in the CLI's standard error.
                    let message = format!("{err:#}");
                    if message.contains("replica(s) acknowledged") {
                        produced.failures.not_replicated += 1;
                    }
                    produced.failures.last = message.trim_end().lines().last().map(str::to_owned);
                }
            }
            if Instant::now() > deadline {
                produced.unacked += ids.len();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    produced
}

/// Watches the logs from the fault on for the completion of a task enqueued after it (by a CLI
/// call started after it: one acknowledged just after the fault may have written before it):
/// when the whole path (enqueue, claim, completion) works again.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Option<Duration>>>,
}

impl Watcher {
    fn start(env: &Env, acks: Acks, fault_at: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, stopped) = (env.dir.clone(), stop.clone());
        let thread = thread::spawn(move || {
            loop {
                let after: Vec<String> = acks
                    .lock()
                    .expect("no producer panicked")
                    .iter()
                    .filter(|ack| ack.sent > fault_at)
                    .map(|ack| ack.id.clone())
                    .collect();
                if !after.is_empty() {
                    let history = History::read(&dir, BTreeSet::new(), BTreeSet::new()).ok()?;
                    if after.iter().any(|id| history.completions.contains_key(id)) {
                        // Read after the completion: an upper bound.
                        return Some(fault_at.elapsed());
                    }
                }
                if stopped.load(Ordering::SeqCst) {
                    return None;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching: when a task enqueued after the fault was first seen completed.
    fn finish(mut self) -> Option<Duration> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

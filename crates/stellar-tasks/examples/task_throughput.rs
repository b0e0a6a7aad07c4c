//! End-to-end task throughput and pickup latency on a `redis-server` started for the run, beside
//! raw Redis `LPUSH`/`BRPOP` through the same pool, measured in the same run.
//!
//! ```text
//! cargo run --release -p stellar-tasks --example task_throughput -- [TASKS] [CONCURRENCY]
//! cargo run --release -p stellar-tasks --example task_throughput -- --backlog N [CONCURRENCY]
//! ```
//!
//! - enqueue rate: `TASKS` no-op tasks enqueued by 50 concurrent callers;
//! - run rate: the same tasks drained by one node with `CONCURRENCY` workers, and Redis's time
//!   per drained task (its CPU time, `INFO cpu`, over the drain: every command the node sent),
//!   a figure the machine's other load hardly moves, beside raw `BRPOP`'s per item;
//! - pickup latency: from `enqueue` returning to the handler starting, on an idle node, 500 times;
//! - bulk enqueue rate: `TASKS` tasks by one caller with `Tasks::enqueue_many`, 1000 a batch, and
//!   Redis's CPU time per task of it, beside raw `LPUSH`'s per item by 50 callers.
//!
//! With `--backlog N`: N no-op tasks enqueued with `enqueue_many` (no worker running), then one
//! node with `CONCURRENCY` workers drains them (rate: N over the drain time) while probes go one
//! at a time, 2 ms apart, to a queue its workers serve first: pickup latency with the backlog in
//! the queue, until the drain ends or 500 probes ran. Figures `tasks.backlog_<N>.*`, no baseline.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use stellar_bus::{RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, Config, NodeId};
use stellar_tasks::{
    BatchTask, DEFAULT_QUEUE, EnqueueOptions, RedisTaskStore, TaskConfig, TaskDefinition, Tasks,
    WorkSignal,
};
use stellar_testkit::{RedisServer, bench::report};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error>;

/// Enqueue callers of the enqueue figures, ours and raw.
const CALLERS: u64 = 50;
/// Probes of an idle pickup measurement, and the most of one under a backlog.
const PROBES: usize = 500;
/// The queue probes go to under a backlog, served before the backlog's.
const PROBE_QUEUE: &str = "probe";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let concurrency = |at: usize| args.get(at).map_or(Ok(50), |n| n.parse::<usize>());
    if args.first().map(String::as_str) == Some("--backlog") {
        let size: u64 = args.get(1).ok_or("--backlog takes a size")?.parse()?;
        return backlog(size, concurrency(2)?).await;
    }
    if args.first().map(String::as_str) == Some("--queues") {
        let queues: usize = args.get(1).ok_or("--queues takes a count")?.parse()?;
        let total: u64 = args.get(2).ok_or("--queues N takes a total")?.parse()?;
        return drain_queues(queues, total, concurrency(3)?).await;
    }
    let total: u64 = args.first().map_or(Ok(20_000), |n| n.parse())?;
    throughput(total, concurrency(1)?).await
}

/// One node's task system on the bench Redis, with a `noop` task that counts its runs and a
/// `probe` task that reports when it started.
struct Bench {
    /// The Redis started for the run when `cargo xtask bench` named none; kept alive.
    _redis: Option<RedisServer>,
    pool: RedisPool,
    api: Api,
    tasks: Tasks,
    done: Arc<AtomicU64>,
    started_rx: mpsc::UnboundedReceiver<Instant>,
}

impl Bench {
    async fn new(concurrency: usize, queues: &[&str]) -> Result<Self, Error> {
        let (redis, url) = stellar_testkit::bench::redis();
        let pool = RedisPool::connect(RedisConfig::new(url)).await?;
        let api = Api::new(Config {
            id: Some(NodeId::new("bench")?),
            ..Config::default()
        });
        let transport: Arc<dyn Transport> =
            Arc::new(RedisTransport::connect(pool.clone(), api.cancellation_token()).await?);
        let config = TaskConfig {
            concurrency,
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            ..TaskConfig::default()
        };
        let tasks = Tasks::new(
            Arc::new(RedisTaskStore::new(pool.clone())),
            WorkSignal::subscribed(transport),
            api.node_id().clone(),
            config,
        );
        let (done, started_rx) = register(&tasks);
        Ok(Self {
            _redis: redis,
            pool,
            api,
            tasks,
            done,
            started_rx,
        })
    }

    /// Starts the workers and waits until `total` no-op tasks ran; the rate in tasks per second.
    async fn drain(&self, total: u64) -> f64 {
        let started = Instant::now();
        self.tasks.start(&self.api);
        self.wait_done(total).await;
        total as f64 / started.elapsed().as_secs_f64()
    }

    async fn wait_done(&self, total: u64) {
        while self.done.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Up to `max` probes in `queue`, one at a time and 2 ms apart, while `more()` holds: from
    /// `enqueue` returning to the handler starting, in milliseconds.
    async fn pickup(
        &mut self,
        max: usize,
        queue: Option<&str>,
        more: impl Fn() -> bool,
    ) -> Result<Vec<f64>, Error> {
        let options = EnqueueOptions {
            queue: queue.map(str::to_owned),
            ..EnqueueOptions::default()
        };
        let mut pickup = Vec::new();
        while pickup.len() < max && more() {
            let before = Instant::now();
            self.tasks.enqueue("probe", &(), options.clone()).await?;
            let started = tokio::time::timeout(Duration::from_secs(5), self.started_rx.recv())
                .await?
                .ok_or("probe channel closed")?;
            pickup.push(started.duration_since(before).as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(pickup)
    }
}

/// The `noop` and `probe` definitions: a counter of `noop` runs, the start times of probes.
fn register(tasks: &Tasks) -> (Arc<AtomicU64>, mpsc::UnboundedReceiver<Instant>) {
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    tasks.register(TaskDefinition::new("noop", move |_, _: u64| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }));
    let (started_tx, started_rx) = mpsc::unbounded_channel::<Instant>();
    let started_tx = Arc::new(Mutex::new(started_tx));
    tasks.register(TaskDefinition::new("probe", move |_, _: ()| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.lock().expect("sender").send(Instant::now());
            Ok(())
        }
    }));
    (done, started_rx)
}

async fn throughput(total: u64, concurrency: usize) -> Result<(), Error> {
    let mut bench = Bench::new(concurrency, &[DEFAULT_QUEUE]).await?;
    let per_caller = total / CALLERS;
    let enqueued = per_caller * CALLERS;
    // Enqueue everything first (no workers yet), then start the node and time the drain.
    let enqueue_rate = enqueue_concurrently(&bench.tasks, per_caller).await?;
    let _: String = bench
        .pool
        .query("CONFIG", redis::cmd("CONFIG").arg("RESETSTAT"))
        .await?;
    let before = redis_usec(&bench.pool).await?;
    let run_rate = bench.drain(enqueued).await;
    if std::env::var("DEBUG_STATS").is_ok() {
        let i: String = bench
            .pool
            .query("INFO", redis::cmd("INFO").arg("commandstats"))
            .await?;
        eprintln!("{i}");
    }
    let drain_cost = (redis_usec(&bench.pool).await? - before) / enqueued as f64;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pickup = bench.pickup(PROBES, None, || true).await?;

    let raw_push_rate = raw_push(&bench.pool, per_caller).await?;
    let before = redis_usec(&bench.pool).await?;
    let raw_drain_rate = raw_drain(&bench.pool, enqueued, concurrency.min(16)).await?;
    let raw_drain_cost = (redis_usec(&bench.pool).await? - before) / enqueued as f64;
    let raw_pickup = raw_pickup(&bench.pool).await?;
    let (bulk_rate, bulk_cost) = bulk_enqueue(&bench.tasks, &bench.pool, enqueued).await?;
    let before = redis_usec(&bench.pool).await?;
    raw_push(&bench.pool, per_caller).await?;
    let raw_push_cost = (redis_usec(&bench.pool).await? - before) / enqueued as f64;

    let report_rate = |name, rate, raw_name, raw| report(name, "tasks/s", rate, raw_name, raw);
    report_rate(
        "tasks.enqueue_bulk_per_s",
        bulk_rate,
        "redis.lpush_c50_per_s",
        raw_push_rate,
    );
    report_rate(
        "tasks.enqueue_per_s",
        enqueue_rate,
        "redis.lpush_c50_per_s",
        raw_push_rate,
    );
    report_rate(
        "tasks.drain_per_s",
        run_rate,
        "redis.brpop_drain_per_s",
        raw_drain_rate,
    );
    report(
        "tasks.enqueue_bulk_redis_cpu_us_per_task",
        "us",
        bulk_cost,
        "redis.lpush_c50_redis_cpu_us_per_item",
        raw_push_cost,
    );
    report(
        "tasks.drain_redis_cpu_us_per_task",
        "us",
        drain_cost,
        "redis.brpop_drain_redis_cpu_us_per_item",
        raw_drain_cost,
    );
    for (p, name, raw_name) in [
        (50.0, "tasks.pickup_p50_ms", "redis.lpush_brpop_p50_ms"),
        (99.0, "tasks.pickup_p99_ms", "redis.lpush_brpop_p99_ms"),
    ] {
        let (ours, raw) = (percentile(&pickup, p), percentile(&raw_pickup, p));
        report(name, "ms", ours, raw_name, raw);
    }
    println!("tasks: {enqueued}, worker concurrency: {concurrency}, enqueue callers: {CALLERS}");
    bench.api.shutdown().await?;
    Ok(())
}

/// `total` no-op tasks spread over `queues` queues (enqueued in batches first), then the rate at
/// which one node with workers on every queue drains them: `tasks.drain_<n>q_per_s`, with no
/// baseline of its own (`cargo xtask bench --redis-cluster` puts the same figure on one Redis
/// beside the one on a Redis Cluster).
async fn drain_queues(queues: usize, total: u64, concurrency: usize) -> Result<(), Error> {
    let names: Vec<String> = (1..=queues).map(|n| format!("q{n}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let bench = Bench::new(concurrency, &refs).await?;
    let per_queue = total / queues as u64;
    for name in &names {
        enqueue_batches(&bench.tasks, per_queue, name).await?;
    }
    let rate = bench.drain(per_queue * queues as u64).await;
    report(
        &format!("tasks.drain_{queues}q_per_s"),
        "tasks/s",
        rate,
        "none",
        0.0,
    );
    println!(
        "tasks: {} over {queues} queues, worker concurrency: {concurrency}",
        per_queue * queues as u64
    );
    bench.api.shutdown().await?;
    Ok(())
}

/// `size` no-op tasks in the queue, then the drain rate and the pickup of probes meanwhile.
async fn backlog(size: u64, concurrency: usize) -> Result<(), Error> {
    let mut bench = Bench::new(concurrency, &[PROBE_QUEUE, DEFAULT_QUEUE]).await?;
    let filled = Instant::now();
    enqueue_batches(&bench.tasks, size, DEFAULT_QUEUE).await?;
    eprintln!(
        "task_throughput: {size} tasks enqueued in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    bench.tasks.start(&bench.api);
    let done = bench.done.clone();
    let pickup = bench
        .pickup(PROBES, Some(PROBE_QUEUE), || {
            done.load(Ordering::Relaxed) < size
        })
        .await?;
    bench.wait_done(size).await;
    let drain_rate = size as f64 / started.elapsed().as_secs_f64();
    if pickup.is_empty() {
        return Err("the backlog drained before the first probe ran".into());
    }
    let figure = |name: &str| format!("tasks.backlog_{size}.{name}");
    report(&figure("drain_per_s"), "tasks/s", drain_rate, "", 0.0);
    for p in [50.0, 99.0] {
        let name = figure(&format!("pickup_p{p}_ms"));
        report(&name, "ms", percentile(&pickup, p), "", 0.0);
    }
    let probes = pickup.len() as f64;
    report(&figure("pickup_samples"), "probes", probes, "", 0.0);
    bench.api.shutdown().await?;
    Ok(())
}

/// `per_caller` no-op tasks from each of 50 concurrent callers; the rate in tasks per second.
async fn enqueue_concurrently(tasks: &Tasks, per_caller: u64) -> Result<f64, Error> {
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let tasks = tasks.clone();
            tokio::spawn(async move {
                for n in 0..per_caller {
                    let args = caller * per_caller + n;
                    tasks
                        .enqueue("noop", &args, EnqueueOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for caller in callers {
        caller.await??;
    }
    Ok((per_caller * CALLERS) as f64 / started.elapsed().as_secs_f64())
}

/// Enqueues `total` tasks in batches of 1000 (one script call each) into a queue no worker
/// serves, then deletes the queue; the rate in tasks per second and Redis's CPU time per task
/// (the deletion not counted).
async fn bulk_enqueue(tasks: &Tasks, pool: &RedisPool, total: u64) -> Result<(f64, f64), Error> {
    let before = redis_usec(pool).await?;
    let started = Instant::now();
    enqueue_batches(tasks, total, "bulk").await?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let cost = (redis_usec(pool).await? - before) / total as f64;
    tasks.del_queue("bulk").await?;
    Ok((rate, cost))
}

/// `total` no-op tasks into `queue` with `enqueue_many`, 1000 a batch.
async fn enqueue_batches(tasks: &Tasks, total: u64, queue: &str) -> Result<(), Error> {
    const BATCH: u64 = 1000;
    let mut n = 0;
    while n < total {
        let batch = (n..total.min(n + BATCH))
            .map(|i| BatchTask {
                name: "noop".into(),
                args: i.into(),
                options: EnqueueOptions {
                    queue: Some(queue.into()),
                    ..EnqueueOptions::default()
                },
                at: None,
            })
            .collect();
        n += tasks.enqueue_many(batch).await?.len() as u64;
    }
    Ok(())
}

/// Raw `LPUSH` by 50 callers through the same pool; the rate in pushes per second.
async fn raw_push(pool: &RedisPool, per_caller: u64) -> Result<f64, Error> {
    let started = Instant::now();
    let pushers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for n in 0..per_caller {
                    pool.query::<u64>("LPUSH", redis::cmd("LPUSH").arg("raw:queue").arg(n))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for pusher in pushers {
        pusher.await??;
    }
    Ok((per_caller * CALLERS) as f64 / started.elapsed().as_secs_f64())
}

/// `BRPOP` drain of `total` items by `consumers` consumers; the rate in items per second.
async fn raw_drain(pool: &RedisPool, total: u64, consumers: usize) -> Result<f64, Error> {
    let started = Instant::now();
    let popped = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..consumers)
        .map(|_| {
            let (pool, popped) = (pool.clone(), popped.clone());
            tokio::spawn(async move {
                while popped.load(Ordering::Relaxed) < total {
                    if brpop(&pool, "raw:queue", 0.2).await?.is_some() {
                        popped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for consumer in consumers {
        consumer.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// `LPUSH` returning to a blocked `BRPOP` returning, 500 times, in milliseconds.
async fn raw_pickup(pool: &RedisPool) -> Result<Vec<f64>, Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let consumer_pool = pool.clone();
    let consumer = tokio::spawn(async move {
        for _ in 0..PROBES {
            if brpop(&consumer_pool, "raw:probe", 5.0).await?.is_some() {
                let _ = tx.send(Instant::now());
            }
        }
        Ok::<_, String>(())
    });
    let mut raw_pickup = Vec::new();
    for n in 0..PROBES {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let before = Instant::now();
        pool.query::<u64>("LPUSH", redis::cmd("LPUSH").arg("raw:probe").arg(n))
            .await?;
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await?
            .ok_or("raw consumer ended")?;
        raw_pickup.push(got.duration_since(before).as_secs_f64() * 1000.0);
    }
    consumer.await??;
    Ok(raw_pickup)
}

async fn brpop(
    pool: &RedisPool,
    key: &str,
    timeout_s: f64,
) -> Result<Option<(String, String)>, String> {
    let wait = Duration::from_secs_f64(timeout_s + 5.0);
    pool.run_blocking("BRPOP", wait, async |conn| {
        redis::cmd("BRPOP")
            .arg(key)
            .arg(timeout_s)
            .query_async(conn)
            .await
    })
    .await
    .map_err(|e| e.to_string())
}

/// The CPU time Redis's process has used so far (user and system, `INFO cpu`), in
/// microseconds: the server's share of a measurement, which the machine's other load hardly
/// moves (unlike the `usec` of `INFO commandstats`, which counts wall time and counts a script's
/// commands twice).
async fn redis_usec(pool: &RedisPool) -> Result<f64, Error> {
    let info: String = pool.query("INFO", redis::cmd("INFO").arg("cpu")).await?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:"))
        .filter_map(|line| line.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum::<f64>()
        * 1e6)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

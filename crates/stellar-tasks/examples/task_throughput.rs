//! End-to-end task throughput and pickup latency on a `redis-server` started for the run, beside
//! raw Redis `LPUSH`/`BRPOP` through the same pool, measured in the same run.
//!
//! ```text
//! cargo run --release -p stellar-tasks --example task_throughput -- [TASKS] [CONCURRENCY]
//! ```
//!
//! - enqueue rate: `TASKS` no-op tasks enqueued by 50 concurrent callers;
//! - run rate: the same tasks drained by one node with `CONCURRENCY` workers;
//! - pickup latency: from `enqueue` returning to the handler starting, on an idle node, 500 times;
//! - bulk enqueue rate: `TASKS` tasks by one caller with `Tasks::enqueue_many`, 1000 a batch.

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
    BatchTask, EnqueueOptions, RedisTaskStore, TaskConfig, TaskDefinition, Tasks, WorkSignal,
};
use stellar_testkit::bench::report;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let concurrency: usize = args.next().map_or(Ok(50), |n| n.parse())?;
    let (_owned, url) = stellar_testkit::bench::redis();
    let pool = RedisPool::connect(RedisConfig::new(url.clone())).await?;
    let api = Api::new(Config {
        id: Some(NodeId::new("bench")?),
        ..Config::default()
    });
    let transport: Arc<dyn Transport> =
        Arc::new(RedisTransport::connect(pool.clone(), api.cancellation_token()).await?);
    let store = Arc::new(RedisTaskStore::new(pool.clone()));
    let config = TaskConfig {
        concurrency,
        ..TaskConfig::default()
    };
    let tasks = Tasks::new(
        store,
        WorkSignal::subscribed(transport),
        api.node_id().clone(),
        config,
    );
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    tasks.register(TaskDefinition::new("noop", move |_, _: u64| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<Instant>();
    let started_tx = Arc::new(Mutex::new(started_tx));
    tasks.register(TaskDefinition::new("probe", move |_, _: ()| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.lock().expect("sender").send(Instant::now());
            Ok(())
        }
    }));

    // Enqueue everything first (no workers yet), then start the node and time the drain.
    let enqueue_started = Instant::now();
    let per_caller = total / 50;
    let callers: Vec<_> = (0..50)
        .map(|caller| {
            let tasks = tasks.clone();
            tokio::spawn(async move {
                for n in 0..per_caller {
                    tasks
                        .enqueue(
                            "noop",
                            &(caller * per_caller + n),
                            EnqueueOptions::default(),
                        )
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
    let enqueued = per_caller * 50;
    let enqueue_rate = enqueued as f64 / enqueue_started.elapsed().as_secs_f64();
    let drain_started = Instant::now();
    tasks.start(&api);
    while done.load(Ordering::Relaxed) < enqueued {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run_rate = enqueued as f64 / drain_started.elapsed().as_secs_f64();

    // Pickup latency on the now idle node.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut pickup = Vec::new();
    for _ in 0..500 {
        let before = Instant::now();
        tasks
            .enqueue("probe", &(), EnqueueOptions::default())
            .await?;
        let started = tokio::time::timeout(Duration::from_secs(5), started_rx.recv())
            .await?
            .ok_or("probe channel closed")?;
        pickup.push(started.duration_since(before).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // Raw baseline through the same pool: LPUSH by 50 callers, BRPOP drain by `concurrency` consumers,
    // and LPUSH -> BRPOP pickup on an idle consumer.
    let raw_push_started = Instant::now();
    let pushers: Vec<_> = (0..50)
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
    let raw_push_rate = enqueued as f64 / raw_push_started.elapsed().as_secs_f64();
    let raw_drain_started = Instant::now();
    let popped = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..concurrency.min(16))
        .map(|_| {
            let (pool, popped) = (pool.clone(), popped.clone());
            tokio::spawn(async move {
                while popped.load(Ordering::Relaxed) < enqueued {
                    let item: Option<(String, String)> = pool
                        .run_blocking("BRPOP", Duration::from_secs(2), async |conn| {
                            redis::cmd("BRPOP")
                                .arg("raw:queue")
                                .arg(0.2)
                                .query_async(conn)
                                .await
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    if item.is_some() {
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
    let raw_drain_rate = enqueued as f64 / raw_drain_started.elapsed().as_secs_f64();
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let consumer_pool = pool.clone();
    let consumer = tokio::spawn(async move {
        for _ in 0..500 {
            let item: Option<(String, String)> = consumer_pool
                .run_blocking("BRPOP", Duration::from_secs(10), async |conn| {
                    redis::cmd("BRPOP")
                        .arg("raw:probe")
                        .arg(5)
                        .query_async(conn)
                        .await
                })
                .await
                .map_err(|e| e.to_string())?;
            if item.is_some() {
                let _ = tx.send(Instant::now());
            }
        }
        Ok::<_, String>(())
    });
    let mut raw_pickup = Vec::new();
    for n in 0..500 {
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

    let bulk_rate = bulk_enqueue(&tasks, enqueued).await?;
    report(
        "tasks.enqueue_bulk_per_s",
        "tasks/s",
        bulk_rate,
        "redis.lpush_c50_per_s",
        raw_push_rate,
    );
    report(
        "tasks.enqueue_per_s",
        "tasks/s",
        enqueue_rate,
        "redis.lpush_c50_per_s",
        raw_push_rate,
    );
    report(
        "tasks.drain_per_s",
        "tasks/s",
        run_rate,
        "redis.brpop_drain_per_s",
        raw_drain_rate,
    );
    report(
        "tasks.pickup_p50_ms",
        "ms",
        percentile(&pickup, 50.0),
        "redis.lpush_brpop_p50_ms",
        percentile(&raw_pickup, 50.0),
    );
    report(
        "tasks.pickup_p99_ms",
        "ms",
        percentile(&pickup, 99.0),
        "redis.lpush_brpop_p99_ms",
        percentile(&raw_pickup, 99.0),
    );
    println!("tasks: {enqueued}, worker concurrency: {concurrency}, enqueue callers: 50");
    println!(
        "{:<24} {:>12} {:>12} {:>8}",
        "figure", "value", "raw", "ratio"
    );
    println!(
        "{:<24} {enqueue_rate:>12.0} {raw_push_rate:>12.0} {:>8.2}",
        "tasks.enqueue_per_s",
        enqueue_rate / raw_push_rate
    );
    println!(
        "{:<24} {run_rate:>12.0} {raw_drain_rate:>12.0} {:>8.2}",
        "tasks.drain_per_s",
        run_rate / raw_drain_rate
    );
    println!(
        "{:<24} {bulk_rate:>12.0} {raw_push_rate:>12.0} {:>8.2}",
        "tasks.enqueue_bulk_per_s",
        bulk_rate / raw_push_rate
    );
    for (name, p) in [("tasks.pickup_p50_ms", 50.0), ("tasks.pickup_p99_ms", 99.0)] {
        let (ours, raw) = (percentile(&pickup, p), percentile(&raw_pickup, p));
        println!("{name:<24} {ours:>12.3} {raw:>12.3} {:>8.2}", ours / raw);
    }
    api.shutdown().await?;
    Ok(())
}

/// Enqueues `total` tasks in batches of 1000 (one script call each) into a queue no worker
/// serves, then deletes the queue; the rate in tasks per second.
async fn bulk_enqueue(tasks: &Tasks, total: u64) -> Result<f64, Box<dyn std::error::Error>> {
    const BATCH: u64 = 1000;
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let batch = (n..total.min(n + BATCH))
            .map(|i| BatchTask {
                name: "noop".into(),
                args: i.into(),
                options: EnqueueOptions {
                    queue: Some("bulk".into()),
                    ..EnqueueOptions::default()
                },
                at: None,
            })
            .collect();
        n += tasks.enqueue_many(batch).await?.len() as u64;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    tasks.del_queue("bulk").await?;
    Ok(rate)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

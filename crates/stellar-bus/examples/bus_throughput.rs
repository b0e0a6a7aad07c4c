//! One-way bus throughput: one publisher, three subscriber nodes, beside raw `PUBLISH` of the same
//! bytes to three raw subscribers, on one Redis, in one run.
//!
//! ```text
//! cargo run --release -p stellar-bus --example bus_throughput -- [MESSAGES]
//! ```
//!
//! Uses the Redis in `STELLAR_BENCH_REDIS` if set, else starts its own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use stellar_bus::{Bus, BusSettings, RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, Config, NodeId, ServerToken};
use stellar_testkit::bench::report;

/// Concurrent publishing tasks, for the bus and the raw baseline alike.
const PUBLISHERS: u64 = 8;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let messages: u64 = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or(Ok(50_000), |n| n.parse())?;
    let (_owned, url) = stellar_testkit::bench::redis();
    let config = || RedisConfig::new(url.clone()).with_subscription_capacity(1 << 20);
    let mut apis = Vec::new();
    let mut buses = Vec::new();
    for id in ["publisher", "s1", "s2", "s3"] {
        let api = Api::new(Config {
            id: Some(NodeId::new(id)?),
            server_token: ServerToken::new("bench"),
            ..Config::default()
        });
        let pool = RedisPool::connect(config()).await?;
        let transport: Arc<dyn Transport> =
            Arc::new(RedisTransport::connect(pool, api.cancellation_token()).await?);
        buses.push(Bus::start(&api, transport, BusSettings::from(api.config())).await?);
        apis.push(api);
    }
    let received = Arc::new(AtomicU64::new(0));
    for bus in &buses[1..] {
        let received = received.clone();
        bus.subscribe_handler("bench", move |_| {
            received.fetch_add(1, Ordering::Relaxed);
            async { Ok(()) }
        });
    }
    let body = serde_json::json!({ "user": 42, "action": "updated", "fields": ["name", "email"] });
    let bus_rate = run(messages, &received, 3, |n| {
        let (bus, body) = (buses[0].clone(), body.clone());
        async move {
            bus.publish("bench", &(n, body))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await?;

    // Raw: the same number of bytes per message, PUBLISHed through a pool, three raw subscribers.
    let envelope_size = 200;
    let payload = vec![7_u8; envelope_size];
    let raw_received = Arc::new(AtomicU64::new(0));
    let mut raw_nodes = Vec::new();
    for _ in 0..3 {
        let pool = RedisPool::connect(config()).await?;
        let transport = RedisTransport::connect(pool, apis[0].cancellation_token()).await?;
        let mut subscription = transport.subscribe("raw:bench").await?;
        let counter = raw_received.clone();
        tokio::spawn(async move {
            while subscription.recv().await.is_some() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        raw_nodes.push(transport);
    }
    let publisher = RedisPool::connect(config()).await?;
    let raw_rate = run(messages, &raw_received, 3, |_| {
        let (pool, payload) = (publisher.clone(), payload.clone());
        async move {
            let cmd = redis::cmd("PUBLISH").arg("raw:bench").arg(payload).clone();
            pool.query::<u64>("PUBLISH", &cmd)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    let drops: u64 = buses.iter().map(|b| b.stats().possibly_lost).sum();
    let replayed: u64 = buses.iter().map(|b| b.stats().replayed).sum();
    report(
        "bus.oneway_per_s",
        "msg/s",
        bus_rate,
        "redis.publish_3_subscribers_per_s",
        raw_rate,
    );
    println!(
        "messages: {messages}, publishers: {PUBLISHERS}, subscribers: 3, possibly lost: {drops}, rejected as replays: {replayed}"
    );
    for api in apis {
        api.shutdown().await?;
    }
    Ok(())
}

/// Publishes `messages` from [`PUBLISHERS`] tasks; messages per second until `copies` of each
/// arrived (or 30 s passed).
async fn run<F, Fut>(
    messages: u64,
    received: &AtomicU64,
    copies: u64,
    publish: F,
) -> Result<f64, String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    received.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let per = messages / PUBLISHERS;
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let jobs: Vec<_> = (0..per).map(|n| publish(p * per + n)).collect();
            tokio::spawn(async move {
                for job in jobs {
                    job.await?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    // Until every copy arrived, or nothing arrived for a second (messages lost): the rate counts
    // what arrived, up to the last arrival.
    let want = per * PUBLISHERS * copies;
    let (mut seen, mut last_progress) = (0, Instant::now());
    let mut last_arrival = started.elapsed();
    while seen < want && last_progress.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = received.load(Ordering::Relaxed);
        if now > seen {
            (seen, last_progress, last_arrival) = (now, Instant::now(), started.elapsed());
        }
    }
    if seen < want {
        eprintln!("bus_throughput: {} of {want} copies arrived", seen);
    }
    Ok(seen as f64 / copies as f64 / last_arrival.as_secs_f64())
}

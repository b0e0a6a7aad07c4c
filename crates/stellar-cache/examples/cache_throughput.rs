//! Cache `save`/`load` throughput at 1 and 50 concurrent callers, beside raw `SET`/`GET` with the
//! same client library and pool, on a `redis-server` started for the run.
//!
//! ```text
//! cargo run --release -p stellar-cache --example cache_throughput -- [SECONDS_PER_FIGURE]
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, RedisCacheStore};
use stellar_core::NodeId;
use stellar_testkit::bench::report;

/// How many distinct keys the figures cycle through.
const KEYS: u64 = 1000;

type BoxError = Box<dyn std::error::Error>;

/// What one run measures on: the cache, and the raw pool beside it.
#[derive(Clone)]
struct Bench {
    cache: Cache,
    pool: RedisPool,
    value: Value,
    payload: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let seconds: f64 = std::env::args().nth(1).map_or(Ok(3.0), |s| s.parse())?;
    let window = Duration::from_secs_f64(seconds);
    let (_owned, url) = stellar_testkit::bench::redis();
    let bench = Bench::connect(&url).await?;
    bench.seed().await?;
    println!(
        "{:<22} {:>12} {:>12} {:>8}",
        "figure", "ops/s", "raw ops/s", "ratio"
    );
    for concurrency in [1, 50] {
        let save = bench.save(window, concurrency).await?;
        let raw_set = bench.raw_set(window, concurrency).await?;
        figure("save", concurrency, save, "set", raw_set);
        let load = bench.load(window, concurrency).await?;
        let raw_get = bench.raw_get(window, concurrency).await?;
        figure("load", concurrency, load, "get", raw_get);
    }
    Ok(())
}

impl Bench {
    async fn connect(url: &str) -> Result<Self, BoxError> {
        let pool = RedisPool::connect(RedisConfig::new(url)).await?;
        let cache = Cache::new(
            Arc::new(RedisCacheStore::new(pool.clone())),
            NodeId::new("bench")?,
            CacheConfig::default(),
        );
        let value = serde_json::json!({ "user": "ada", "visits": 42, "tags": ["a", "b", "c"] });
        let payload = serde_json::to_string(&value)?;
        Ok(Self {
            cache,
            pool,
            value,
            payload,
        })
    }

    /// Writes every key once, through the cache and raw, so loads find them.
    async fn seed(&self) -> Result<(), BoxError> {
        for n in 0..KEYS {
            self.cache.save(&format!("k{n}"), &self.value, None).await?;
            let set = redis::cmd("SET")
                .arg(format!("raw:k{n}"))
                .arg(&self.payload)
                .clone();
            self.pool.query::<()>("SET", &set).await?;
        }
        Ok(())
    }

    async fn save(&self, window: Duration, concurrency: usize) -> Result<f64, String> {
        let bench = self.clone();
        run(window, concurrency, move |n| {
            let bench = bench.clone();
            async move {
                let key = format!("k{}", n % KEYS);
                let saved = bench.cache.save(&key, &bench.value, None).await;
                saved.map_err(|e| e.to_string())
            }
        })
        .await
    }

    async fn raw_set(&self, window: Duration, concurrency: usize) -> Result<f64, String> {
        let bench = self.clone();
        run(window, concurrency, move |n| {
            let bench = bench.clone();
            async move {
                let cmd = redis::cmd("SET")
                    .arg(format!("raw:k{}", n % KEYS))
                    .arg(&bench.payload)
                    .clone();
                let set = bench.pool.query::<()>("SET", &cmd).await;
                set.map_err(|e| e.to_string())
            }
        })
        .await
    }

    async fn load(&self, window: Duration, concurrency: usize) -> Result<f64, String> {
        let cache = self.cache.clone();
        run(window, concurrency, move |n| {
            let cache = cache.clone();
            async move {
                let loaded = cache.load::<Value>(&format!("k{}", n % KEYS)).await;
                loaded.map(drop).map_err(|e| e.to_string())
            }
        })
        .await
    }

    async fn raw_get(&self, window: Duration, concurrency: usize) -> Result<f64, String> {
        let pool = self.pool.clone();
        run(window, concurrency, move |n| {
            let pool = pool.clone();
            async move {
                let cmd = redis::cmd("GET").arg(format!("raw:k{}", n % KEYS)).clone();
                let got = pool.query::<String>("GET", &cmd).await;
                got.map(drop).map_err(|e| e.to_string())
            }
        })
        .await
    }
}

/// Reports one cache figure (`cache.<op>_c<concurrency>_per_s`) against its raw Redis baseline,
/// and prints both with their ratio.
fn figure(op: &str, concurrency: usize, cache: f64, raw_op: &str, raw: f64) {
    report(
        &format!("cache.{op}_c{concurrency}_per_s"),
        "ops/s",
        cache,
        &format!("redis.{raw_op}_c{concurrency}_per_s"),
        raw,
    );
    println!(
        "{:<22} {cache:>12.0} {raw:>12.0} {:>8.2}",
        format!("cache.{op}_c{concurrency}"),
        cache / raw
    );
}

/// Runs `op` from `concurrency` tasks for `window`; operations per second.
async fn run<F, Fut>(window: Duration, concurrency: usize, op: F) -> Result<f64, String>
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0_u64;
                while started.elapsed() < window {
                    op(worker as u64 * 1_000_003 + done).await?;
                    done += 1;
                }
                Ok::<_, String>(done)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

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

use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, RedisCacheStore};
use stellar_core::NodeId;
use stellar_testkit::bench::report;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args().nth(1).map_or(Ok(3.0), |s| s.parse())?;
    let window = Duration::from_secs_f64(seconds);
    let (_owned, url) = stellar_testkit::bench::redis();
    let pool = RedisPool::connect(RedisConfig::new(url.clone())).await?;
    let cache = Cache::new(
        Arc::new(RedisCacheStore::new(pool.clone())),
        NodeId::new("bench")?,
        CacheConfig::default(),
    );
    let value = serde_json::json!({ "user": "ada", "visits": 42, "tags": ["a", "b", "c"] });
    let payload = serde_json::to_string(&value)?;
    for n in 0..1000 {
        cache.save(&format!("k{n}"), &value, None).await?;
        let () = pool
            .query::<()>(
                "SET",
                redis::cmd("SET").arg(format!("raw:k{n}")).arg(&payload),
            )
            .await?;
    }
    println!(
        "{:<22} {:>12} {:>12} {:>8}",
        "figure", "ops/s", "raw ops/s", "ratio"
    );
    for concurrency in [1, 50] {
        let (c, v) = (cache.clone(), value.clone());
        let save = run(window, concurrency, move |n| {
            let (cache, value) = (c.clone(), v.clone());
            async move {
                cache
                    .save(&format!("k{}", n % 1000), &value, None)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        let (p, raw) = (pool.clone(), payload.clone());
        let raw_set = run(window, concurrency, move |n| {
            let (pool, payload) = (p.clone(), raw.clone());
            async move {
                let cmd = redis::cmd("SET")
                    .arg(format!("raw:k{}", n % 1000))
                    .arg(payload)
                    .clone();
                pool.query::<()>("SET", &cmd)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        let c = cache.clone();
        let load = run(window, concurrency, move |n| {
            let cache = c.clone();
            async move {
                cache
                    .load::<serde_json::Value>(&format!("k{}", n % 1000))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        let p = pool.clone();
        let raw_get = run(window, concurrency, move |n| {
            let pool = p.clone();
            async move {
                let cmd = redis::cmd("GET").arg(format!("raw:k{}", n % 1000)).clone();
                pool.query::<String>("GET", &cmd)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        report(
            &format!("cache.save_c{concurrency}_per_s"),
            "ops/s",
            save,
            &format!("redis.set_c{concurrency}_per_s"),
            raw_set,
        );
        report(
            &format!("cache.load_c{concurrency}_per_s"),
            "ops/s",
            load,
            &format!("redis.get_c{concurrency}_per_s"),
            raw_get,
        );
        println!(
            "{:<22} {save:>12.0} {raw_set:>12.0} {:>8.2}",
            format!("cache.save_c{concurrency}"),
            save / raw_set
        );
        println!(
            "{:<22} {load:>12.0} {raw_get:>12.0} {:>8.2}",
            format!("cache.load_c{concurrency}"),
            load / raw_get
        );
    }
    Ok(())
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

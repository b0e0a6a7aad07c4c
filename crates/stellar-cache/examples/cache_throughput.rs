//! Cache `save`/`load` throughput at 1 and 50 concurrent callers, beside raw `SET`/`GET` with the
//! same client library and pool, on a `redis-server` started for the run; then `load` of hot keys
//! through a near cache (`load_hot`, 50 callers) beside raw `GET` at 50, and the invalidation
//! delay (another node's `save` returns → the near cache has dropped the key) beside a raw `GET`
//! round trip, as p50 and p99.
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
use stellar_cache::{Cache, CacheConfig, RedisCacheStore, store::NearCacheLimits};
use stellar_core::NodeId;
use stellar_testkit::bench::report;

/// How many distinct keys the figures cycle through.
const KEYS: u64 = 1000;

/// How many writes the invalidation delay is measured over.
const DELAY_SAMPLES: usize = 500;

type BoxError = Box<dyn std::error::Error>;

/// What one run measures on: the cache, and the raw pool beside it.
#[derive(Clone)]
struct Bench {
    cache: Cache,
    /// Another node's cache: its own connections and a near cache.
    near: Cache,
    near_store: Arc<RedisCacheStore>,
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
    let mut redis_costs = Vec::new();
    for concurrency in [1, 50] {
        let (save, save_cost) = bench.costed(bench.save(window, concurrency)).await?;
        let (raw_set, set_cost) = bench.costed(bench.raw_set(window, concurrency)).await?;
        figure("save", concurrency, save.per_s, "set", raw_set.per_s);
        let (load, load_cost) = bench.costed(bench.load(window, concurrency)).await?;
        let (raw_get, get_cost) = bench.costed(bench.raw_get(window, concurrency)).await?;
        figure("load", concurrency, load.per_s, "get", raw_get.per_s);
        if concurrency == 50 {
            redis_costs = vec![
                ("save", save_cost, "set", set_cost),
                ("load", load_cost, "get", get_cost),
            ];
        }
    }
    // Redis's CPU time per operation (`INFO cpu`): the server's share, which the machine's other
    // load hardly moves, unlike the rates.
    for (op, cost, raw_op, raw_cost) in redis_costs {
        let name = format!("cache.{op}_c50_redis_us");
        report(
            &name,
            "us/op",
            cost,
            &format!("redis.{raw_op}_c50_redis_us"),
            raw_cost,
        );
        println!(
            "{name:<22} {cost:>12.2} {raw_cost:>12.2} {:>8.2}",
            cost / raw_cost
        );
    }
    let before = bench.near_store.near_cache_stats().unwrap_or_default();
    let hot = bench.load_hot(window, 50).await?.per_s;
    let after = bench.near_store.near_cache_stats().unwrap_or_default();
    let hits = (after.hits - before.hits) as f64 / (hot * window.as_secs_f64());
    println!("near cache: {:.1} % of hot loads were hits", hits * 100.0);
    let raw_get = bench.raw_get(window, 50).await?.per_s;
    report(
        "cache.load_hot_per_s",
        "ops/s",
        hot,
        "redis.get_c50_per_s",
        raw_get,
    );
    println!(
        "{:<22} {hot:>12.0} {raw_get:>12.0} {:>8.2}",
        "cache.load_hot_c50",
        hot / raw_get
    );
    let (delays, round_trips) = bench.invalidation_delays().await?;
    for p in [50, 99] {
        let (delay, raw) = (percentile(&delays, p), percentile(&round_trips, p));
        let name = format!("cache.invalidation_p{p}_ms");
        report(&name, "ms", delay, &format!("redis.get_p{p}_ms"), raw);
        println!("{name:<22} {delay:>12.3} {raw:>12.3} {:>8.2}", delay / raw);
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
        let limits = NearCacheLimits {
            max_entries: 10_000,
            max_bytes: 64 << 20,
        };
        let near_pool = RedisPool::connect(RedisConfig::new(url)).await?;
        let near_store = Arc::new(RedisCacheStore::new(near_pool).with_near_cache(limits));
        let near = Cache::new(
            near_store.clone(),
            NodeId::new("bench-near")?,
            CacheConfig::default(),
        );
        let value = serde_json::json!({ "user": "ada", "visits": 42, "tags": ["a", "b", "c"] });
        let payload = serde_json::to_string(&value)?;
        Ok(Self {
            cache,
            near,
            near_store,
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

    async fn save(&self, window: Duration, concurrency: usize) -> Result<Rate, String> {
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

    async fn raw_set(&self, window: Duration, concurrency: usize) -> Result<Rate, String> {
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

    async fn load(&self, window: Duration, concurrency: usize) -> Result<Rate, String> {
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

    /// Loads through the near cache, warmed by one load of each key first: hot keys.
    async fn load_hot(&self, window: Duration, concurrency: usize) -> Result<Rate, String> {
        for n in 0..KEYS {
            let loaded = self.near.load::<Value>(&format!("k{n}")).await;
            loaded.map_err(|e| e.to_string())?;
        }
        let cache = self.near.clone();
        run(window, concurrency, move |n| {
            let cache = cache.clone();
            async move {
                let loaded = cache.load::<Value>(&format!("k{}", n % KEYS)).await;
                loaded.map(drop).map_err(|e| e.to_string())
            }
        })
        .await
    }

    /// For each sample: the near cache holds the key, this node saves it, and the time from the
    /// save's return until the near cache has dropped it; beside one raw `GET` round trip.
    async fn invalidation_delays(&self) -> Result<(Vec<f64>, Vec<f64>), BoxError> {
        let (mut delays, mut round_trips) = (Vec::new(), Vec::new());
        let get = redis::cmd("GET").arg("raw:k0").clone();
        for n in 0..DELAY_SAMPLES {
            let key = format!("k{}", n as u64 % KEYS);
            while !self.near_store.is_near_cached(&key) {
                self.near.load::<Value>(&key).await?;
            }
            self.cache.save(&key, &self.value, None).await?;
            let saved = Instant::now();
            while self.near_store.is_near_cached(&key) {
                tokio::task::yield_now().await;
            }
            delays.push(saved.elapsed().as_secs_f64() * 1000.0);
            let sent = Instant::now();
            self.pool.query::<String>("GET", &get).await?;
            round_trips.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        Ok((delays, round_trips))
    }

    async fn raw_get(&self, window: Duration, concurrency: usize) -> Result<Rate, String> {
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

/// How fast a measurement went, and how many operations it made.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_s: f64,
    ops: u64,
}

impl Bench {
    /// Runs `measurement`, and the CPU time Redis spent per operation meanwhile, in µs.
    async fn costed(
        &self,
        measurement: impl Future<Output = Result<Rate, String>>,
    ) -> Result<(Rate, f64), BoxError> {
        let before = redis_usec(&self.pool).await?;
        let rate = measurement.await?;
        let spent = redis_usec(&self.pool).await? - before;
        Ok((rate, spent / rate.ops.max(1) as f64))
    }
}

/// The CPU time Redis's process has used so far (user and system, `INFO cpu`), in µs.
async fn redis_usec(pool: &RedisPool) -> Result<f64, BoxError> {
    let info: String = pool.query("INFO", redis::cmd("INFO").arg("cpu")).await?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:"))
        .filter_map(|line| line.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum::<f64>()
        * 1e6)
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

/// The `p`th percentile of `samples` (nearest rank).
fn percentile(samples: &[f64], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Runs `op` from `concurrency` tasks for `window`; operations per second.
async fn run<F, Fut>(window: Duration, concurrency: usize, op: F) -> Result<Rate, String>
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
    Ok(Rate {
        per_s: total as f64 / started.elapsed().as_secs_f64(),
        ops: total,
    })
}

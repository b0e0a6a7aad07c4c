//! `stellar cache …`: read and write the shared cache of a running cluster.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, RedisCacheStore};
use stellar_core::{Config, NodeId};

use crate::{
    cli::CacheCommand,
    output::{self, line},
};

/// Runs one cache command against the configured Redis.
pub(crate) async fn run(config: Config, command: CacheCommand) -> Result<()> {
    let cache = connect(&config).await?;
    match command {
        CacheCommand::Set { key, value, ttl } => set(&cache, &key, &value, ttl).await,
        CacheCommand::Get { key, json } => get(&cache, &key, json).await,
        CacheCommand::Del { key } => del(&cache, &key).await,
        CacheCommand::Keys { pattern, json } => keys(&cache, pattern.as_deref(), json).await,
        CacheCommand::Lock { key, ttl } => lock(&cache, &key, ttl).await,
        CacheCommand::Unlock { key, token } => unlock(&cache, &key, &token).await,
        CacheCommand::Clear { pattern } => {
            let cleared = cache.clear(pattern.as_deref().unwrap_or("*")).await?;
            eprintln!("cleared {cleared} key(s)");
            Ok(())
        }
        CacheCommand::Dump { file } => {
            let written = cache.dump(&file).await?;
            eprintln!("dumped {written} key(s) to {}", file.display());
            Ok(())
        }
        CacheCommand::Restore { file } => {
            let restored = cache.restore(&file).await?;
            eprintln!("restored {restored} key(s) from {}", file.display());
            Ok(())
        }
    }
}

/// The cluster's cache, straight on its Redis (no bus: the cache needs none).
async fn connect(config: &Config) -> Result<Cache> {
    let Some(redis) = RedisConfig::from_config(config) else {
        bail!(
            "`stellar cache` needs the cluster's Redis: pass --redis URL or set STELLAR_REDIS_URL \
             (the embedded backend's cache lives inside its node's process)"
        );
    };
    let pool = RedisPool::connect(redis).await?;
    let store = Arc::new(RedisCacheStore::new(pool));
    let client_id = NodeId::new(format!("stellar-cli-{}", NodeId::from_host()))?;
    Ok(Cache::new(store, client_id, CacheConfig::default()))
}

async fn set(cache: &Cache, key: &str, value: &str, ttl: Option<u64>) -> Result<()> {
    let value: Value =
        serde_json::from_str(value).with_context(|| format!("VALUE is not JSON: {value}"))?;
    cache
        .save(key, &value, ttl.map(Duration::from_millis))
        .await?;
    Ok(())
}

async fn get(cache: &Cache, key: &str, as_json: bool) -> Result<()> {
    let entry = cache.load::<Value>(key).await?;
    if !as_json {
        line(&entry.value.to_string());
        return Ok(());
    }
    let ms = |time: Option<SystemTime>| time.map(stellar_core::time::epoch_ms);
    output::json(&json!({
        "key": key,
        "value": entry.value,
        "created_at_ms": ms(entry.created_at),
        "expires_at_ms": ms(entry.expires_at),
        "last_read_at_ms": ms(entry.last_read_at),
    }))
}

async fn del(cache: &Cache, key: &str) -> Result<()> {
    if !cache.destroy(key).await? {
        bail!("no value at key {key:?}");
    }
    Ok(())
}

async fn keys(cache: &Cache, pattern: Option<&str>, as_json: bool) -> Result<()> {
    let keys = cache.keys(pattern.unwrap_or("*")).await?;
    if as_json {
        return output::json(&keys);
    }
    for key in keys {
        line(&key);
    }
    Ok(())
}

async fn lock(cache: &Cache, key: &str, ttl: u64) -> Result<()> {
    let guard = cache.lock(key, Duration::from_millis(ttl)).await?;
    line(guard.token());
    eprintln!(
        "locked {key:?} for {ttl} ms (fencing token {})",
        guard.fence()
    );
    Ok(())
}

async fn unlock(cache: &Cache, key: &str, token: &str) -> Result<()> {
    if !cache.unlock_token(key, token).await? {
        bail!(
            "the lock of {key:?} is not held by that token (it expired, or another owner holds it)"
        );
    }
    Ok(())
}

//! `stellar cache …`: read and write the shared cache of a running cluster.

use std::{sync::Arc, time::Duration, time::UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, RedisCacheStore};
use stellar_core::{Config, NodeId};

use crate::cli::CacheCommand;

/// Runs one cache command against the configured Redis.
pub(crate) async fn run(config: Config, command: CacheCommand) -> Result<()> {
    let Some(redis) = RedisConfig::from_config(&config) else {
        bail!(
            "`stellar cache` needs the cluster's Redis: pass --redis URL or set STELLAR_REDIS_URL \
             (the embedded backend's cache lives inside its node's process)"
        );
    };
    let pool = RedisPool::connect(redis)
        .await
        .context("connecting to redis")?;
    let store = Arc::new(RedisCacheStore::new(pool));
    let client_id = NodeId::new(format!("stellar-cli-{}", NodeId::from_host()))?;
    let cache = Cache::new(store, client_id, CacheConfig::default());
    match command {
        CacheCommand::Set { key, value, ttl } => {
            let value: Value = serde_json::from_str(&value)
                .with_context(|| format!("the value is not JSON: {value}"))?;
            cache
                .save(&key, &value, ttl.map(Duration::from_millis))
                .await?;
        }
        CacheCommand::Get { key, json } => {
            let entry = cache.load::<Value>(&key).await?;
            if json {
                let ms = |time: Option<std::time::SystemTime>| {
                    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64)
                };
                let out = json!({
                    "key": key,
                    "value": entry.value,
                    "created_at_ms": ms(entry.created_at),
                    "expires_at_ms": ms(entry.expires_at),
                    "last_read_at_ms": ms(entry.last_read_at),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", entry.value);
            }
        }
        CacheCommand::Del { key } => {
            if !cache.destroy(&key).await? {
                bail!("no value at key {key:?}");
            }
        }
        CacheCommand::Keys { pattern } => {
            for key in cache.keys(pattern.as_deref().unwrap_or("*")).await? {
                println!("{key}");
            }
        }
        CacheCommand::Lock { key, ttl } => {
            let guard = cache.lock(&key, Duration::from_millis(ttl)).await?;
            println!("{}", guard.token());
            eprintln!(
                "locked {key:?} for {ttl} ms (fencing token {})",
                guard.fence()
            );
        }
        CacheCommand::Unlock { key, token } => {
            if !cache.unlock_token(&key, &token).await? {
                bail!(
                    "the lock of {key:?} is not held by that token (it expired, or another owner holds it)"
                );
            }
        }
        CacheCommand::Clear { pattern } => {
            let cleared = cache.clear(pattern.as_deref().unwrap_or("*")).await?;
            eprintln!("cleared {cleared} key(s)");
        }
        CacheCommand::Dump { file } => {
            let written = cache.dump(&file).await?;
            eprintln!("dumped {written} key(s) to {}", file.display());
        }
        CacheCommand::Restore { file } => {
            let restored = cache.restore(&file).await?;
            eprintln!("restored {restored} key(s) from {}", file.display());
        }
    }
    Ok(())
}

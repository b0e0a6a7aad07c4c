//! `stellar migrate`: moves the keys of the layout before hash tags (see docs/redis-keys.md) to
//! today's names, in place (`RENAME`) or copied to another Redis, such as a Redis Cluster
//! (`DUMP`, `RESTORE` with the key's remaining TTL). A key whose new name exists already is left
//! where it is and reported: nothing is overwritten, so running it twice is safe. Nothing moves
//! while nodes run on the Redis the keys move to (every node must be stopped first); a copy is
//! made once, before the nodes start on the new Redis: a later copy would bring back keys they
//! have since deleted.

use anyhow::{Context, Result, bail};
use stellar_bus::{
    MembershipStore, RedisConfig, RedisMembershipStore, RedisPool, ScanCursor, TransportError,
};
use stellar_core::Config;

use crate::cli::MigrateArgs;

/// Keys per SCAN step.
const SCAN_COUNT: u64 = 1000;

/// The legacy key families: their SCAN patterns and the new name of each key.
type Family = (&'static [&'static str], fn(&str) -> Option<String>);

/// Every crate's legacy keys. Membership records and connection owners are not moved: they are
/// rewritten within seconds by the nodes of this release.
const FAMILIES: &[Family] = &[
    (stellar_tasks::LEGACY_PATTERNS, stellar_tasks::migrated_key),
    (stellar_cache::LEGACY_PATTERNS, stellar_cache::migrated_key),
];

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    moved: u64,
    /// Keys left alone because their new name exists.
    conflicts: Vec<String>,
    /// Keys that vanished between the scan and the move (expired or deleted).
    vanished: u64,
}

/// Runs `stellar migrate`.
pub(crate) async fn run(config: Config, args: MigrateArgs) -> Result<()> {
    let Some(redis) = RedisConfig::from_config(&config) else {
        bail!(
            "`stellar migrate` needs the Redis to migrate: pass --redis URL or set STELLAR_REDIS_URL"
        );
    };
    if args.to.as_deref() == Some(redis.url.as_str()) {
        bail!(
            "--to names the Redis being migrated: leave --to out to rename the keys in place there"
        );
    }
    let source = RedisPool::connect(redis.clone()).await?;
    let target = match &args.to {
        Some(url) => Some(
            RedisPool::connect(RedisConfig {
                url: url.clone(),
                ..redis
            })
            .await
            .context("connecting to the --to Redis")?,
        ),
        None => None,
    };
    if target.is_none() && source.is_cluster() {
        bail!(
            "a Redis Cluster holds no keys of the old layout (it never ran on one); migrate from the single Redis with --to"
        );
    }
    let destination = target.as_ref().unwrap_or(&source);
    let running = live_nodes(destination)
        .await
        .context("listing the nodes running on the Redis the keys move to")?;
    if !running.is_empty() {
        let problem = format!(
            "node(s) {} run on {}: stop every node first (a killed node's record expires within \
             heartbeat_ttl_ms)",
            running.join(", "),
            destination.redacted_url()
        );
        if !args.dry_run {
            bail!(problem);
        }
        eprintln!("note: {problem}");
    }
    let old_release = legacy_live_nodes(&source)
        .await
        .context("listing the nodes of an old release on the Redis the keys come from")?;
    if !old_release.is_empty() {
        let problem = format!(
            "node(s) {} of a release before hash tags run on {}: stop every node first (they \
             would keep writing keys of the old layout)",
            old_release.join(", "),
            source.redacted_url()
        );
        if !args.dry_run {
            bail!(problem);
        }
        eprintln!("note: {problem}");
    }
    let report = migrate(&source, target.as_ref(), args.dry_run).await?;
    let (moved, left) = if args.dry_run {
        ("would move", "would be left")
    } else {
        ("moved", "left")
    };
    eprintln!(
        "{moved} {} key(s){}; {} key(s) {left} because their new name exists{}",
        report.moved,
        match &args.to {
            Some(_) => " to the --to Redis (the originals are kept)",
            None => "",
        },
        report.conflicts.len(),
        if report.vanished > 0 {
            format!("; {} expired meanwhile", report.vanished)
        } else {
            String::new()
        },
    );
    for key in &report.conflicts {
        eprintln!("  {left}: {key:?}");
    }
    Ok(())
}

/// The ids of the nodes with a live membership record on `pool`. Keys must not move under live
/// nodes: in place they would race the renames, and on a `--to` Redis they may have consumed
/// (deleted) keys, such as an emptied queue or a released lock, that a copy would bring back.
async fn live_nodes(pool: &RedisPool) -> Result<Vec<String>> {
    let live = RedisMembershipStore::new(pool.clone()).live().await?;
    Ok(live
        .records
        .into_iter()
        .map(|record| record.id.to_string())
        .collect())
}

/// The nodes the old layout's live set (`stellar:nodes`, scored by when each record expires, in
/// Redis time) still holds a live record of.
async fn legacy_live_nodes(pool: &RedisPool) -> Result<Vec<String>> {
    let (seconds, micros): (u64, u64) = pool.query("TIME", &redis::cmd("TIME")).await?;
    let now_ms = seconds * 1000 + micros / 1000;
    let live = redis::cmd("ZRANGEBYSCORE")
        .arg(stellar_bus::LEGACY_NODES)
        .arg(now_ms)
        .arg("+inf")
        .clone();
    Ok(pool.query("ZRANGEBYSCORE", &live).await?)
}

/// Moves every legacy key of `source`: renamed in place, or copied to `target`.
async fn migrate(source: &RedisPool, target: Option<&RedisPool>, dry_run: bool) -> Result<Report> {
    let mut report = Report::default();
    for (patterns, rename) in FAMILIES {
        for pattern in *patterns {
            let mut cursor = Some(ScanCursor::default());
            while let Some(at) = cursor.take() {
                let (keys, next) = source.scan_step(at, pattern, SCAN_COUNT).await?;
                cursor = next;
                for key in keys {
                    let Some(new) = rename(&key) else { continue };
                    if dry_run {
                        would_move(target.unwrap_or(source), &key, &new, &mut report).await?;
                    } else if let Some(target) = target {
                        copy(source, target, &key, &new, &mut report).await?;
                    } else {
                        rename_in_place(source, &key, &new, &mut report).await?;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Counts `key` as it would be moved to `new` on `destination`: a conflict if `new` exists
/// there, as the real run would find it.
async fn would_move(
    destination: &RedisPool,
    key: &str,
    new: &str,
    report: &mut Report,
) -> Result<()> {
    if exists(destination, new).await? {
        report.conflicts.push(key.to_owned());
    } else {
        report.moved += 1;
    }
    Ok(())
}

/// Renames `key` to `new` unless `new` exists (`RENAMENX`).
async fn rename_in_place(
    pool: &RedisPool,
    key: &str,
    new: &str,
    report: &mut Report,
) -> Result<()> {
    let renamed = pool
        .query::<u8>("RENAMENX", redis::cmd("RENAMENX").arg(key).arg(new))
        .await;
    match renamed {
        Ok(1) => report.moved += 1,
        Ok(_) => report.conflicts.push(key.to_owned()),
        // ERR no such key: it expired after the scan saw it.
        Err(TransportError::Backend { .. }) if !exists(pool, key).await? => {
            report.vanished += 1;
        }
        Err(err) => return Err(err).with_context(|| format!("renaming {key:?}")),
    }
    Ok(())
}

/// Whether `key` exists on `pool`.
async fn exists(pool: &RedisPool, key: &str) -> Result<bool> {
    Ok(pool
        .query::<u8>("EXISTS", redis::cmd("EXISTS").arg(key))
        .await?
        == 1)
}

/// Copies `key` of `source` to `new` on `target` with its remaining TTL, unless `new` exists
/// there (`RESTORE` without `REPLACE` answers `BUSYKEY`).
async fn copy(
    source: &RedisPool,
    target: &RedisPool,
    key: &str,
    new: &str,
    report: &mut Report,
) -> Result<()> {
    let mut read = redis::pipe();
    read.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
    let (payload, pttl): (Option<Vec<u8>>, i64) = source
        .run("DUMP", source.config().op_timeout, async |conn| {
            read.query_async(conn).await
        })
        .await?;
    // PTTL -2: the key expired between the two reads (a pipeline is not atomic on every
    // server); copying it with no expiry would make a lock or a claim reply eternal.
    let (Some(payload), false) = (payload, pttl == -2) else {
        report.vanished += 1;
        return Ok(());
    };
    // RESTORE takes 0 for no expiry (PTTL -1); a key about to expire keeps at least 1 ms.
    let ttl = if pttl < 0 { 0 } else { pttl.max(1) };
    let restored = target
        .query::<String>(
            "RESTORE",
            redis::cmd("RESTORE").arg(new).arg(ttl).arg(payload),
        )
        .await;
    match restored {
        Ok(_) => report.moved += 1,
        Err(err) if format!("{err:?}").contains("BUSYKEY") => report.conflicts.push(key.to_owned()),
        Err(err) => return Err(err).with_context(|| format!("restoring {key:?} as {new:?}")),
    }
    Ok(())
}

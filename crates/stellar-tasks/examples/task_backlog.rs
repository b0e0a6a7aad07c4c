//! How long each task script holds Redis with a large backlog: fills a queue (default 1,000,000
//! tasks), then runs every script against it and reads the longest execution of each from Redis's
//! `SLOWLOG` (server-side time, so the client's build mode does not matter).
//!
//! ```text
//! cargo run --release -p stellar-tasks --example task_backlog -- [TASKS]
//! ```

use std::{sync::Arc, time::Duration};

use stellar_bus::{RedisConfig, RedisPool};
use stellar_core::NodeId;
use stellar_tasks::{
    RedisTaskStore,
    store::{ClaimRequest, NewTask, TaskInspector, TaskMaintenance, TaskQueue},
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |n| n.parse())?;
    let (_owned, url) = stellar_testkit::bench::redis();
    let pool = RedisPool::connect(RedisConfig::new(url)).await?;
    let store = Arc::new(RedisTaskStore::new(pool.clone()));
    fill(&store, total).await?;
    // A stale tail: deleted tasks whose ids stay in the list until a claim drops them.
    for n in 0..5_000 {
        store.delete(&format!("t{n}")).await?;
    }
    command(&pool, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]).await?;
    command(&pool, &["CONFIG", "SET", "slowlog-max-len", "100000"]).await?;
    let node = NodeId::new("backlog")?;
    let request = |max: usize, n: usize| ClaimRequest {
        queues: vec!["default".to_owned()],
        node: node.clone(),
        lease: Duration::from_millis(200),
        max,
        names: vec!["work".to_owned()].into(),
        request_id: format!("backlog-{n}"),
    };
    let mut rows = Vec::new();

    reset(&pool).await?;
    store.enqueue(&task("one-more", None)).await?;
    rows.push(("enqueue", slowest(&pool).await?));

    reset(&pool).await?;
    let mut claimed = Vec::new();
    for n in 0..50 {
        claimed.extend(store.claim(&request(32, n)).await?);
    }
    rows.push(("claim (32, past 5,000 stale ids)", slowest(&pool).await?));

    reset(&pool).await?;
    for chunk in claimed.chunks(64).take(10) {
        store.complete_many(chunk, Duration::from_secs(60)).await?;
    }
    rows.push(("complete_many (64)", slowest(&pool).await?));

    reset(&pool).await?;
    let more = store.claim(&request(32, 1000)).await?;
    for one in &more[..8] {
        store.renew(one, Duration::from_secs(30)).await?;
    }
    rows.push(("renew", slowest(&pool).await?));
    reset(&pool).await?;
    for one in &more[8..16] {
        store.fail(one, "boom", Duration::from_millis(1)).await?;
    }
    rows.push(("fail", slowest(&pool).await?));
    reset(&pool).await?;
    for one in &more[16..24] {
        store.release(one).await?;
    }
    rows.push(("release", slowest(&pool).await?));

    reset(&pool).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while store.reap(200).await?.len() == 200 {}
    rows.push(("reap (200)", slowest(&pool).await?));
    reset(&pool).await?;
    while store.promote(200).await? == 200 {}
    rows.push(("promote (200)", slowest(&pool).await?));

    reset(&pool).await?;
    store.delete(&format!("t{}", total / 2)).await?;
    rows.push(("delete (mid-queue)", slowest(&pool).await?));

    reset(&pool).await?;
    let deleted = store.delete_queue("default").await?;
    rows.push(("delete_queue (per call of 250)", slowest(&pool).await?));

    println!("backlog {total} tasks; deleted with the queue: {deleted}");
    println!(
        "{:<36} {:>12} {:>12} {:>6}",
        "script", "longest (us)", "median (us)", "calls"
    );
    for (name, (longest, median, calls)) in &rows {
        println!("{name:<36} {longest:>12} {median:>12} {calls:>6}");
    }
    let worst = rows
        .iter()
        .max_by_key(|(_, (longest, _, _))| *longest)
        .expect("rows");
    println!("slowest: {} at {} us", worst.0, worst.1.0);
    Ok(())
}

fn task(id: &str, due_at_ms: Option<u64>) -> NewTask {
    NewTask {
        id: id.to_owned(),
        name: "work".to_owned(),
        queue: "default".to_owned(),
        args: "null".to_owned(),
        max_attempts: 3,
        due_at_ms,
        slot: None,
        signature: String::new(),
        replace: false,
        trace: None,
    }
}

async fn fill(store: &Arc<RedisTaskStore>, total: usize) -> Result<(), Box<dyn std::error::Error>> {
    const CALLERS: usize = 64;
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let store = store.clone();
        callers.push(tokio::spawn(async move {
            let mut n = caller;
            while n < total {
                store.enqueue(&task(&format!("t{n}"), None)).await?;
                n += CALLERS;
            }
            Ok::<_, stellar_tasks::StoreError>(())
        }));
    }
    for caller in callers {
        caller.await??;
    }
    Ok(())
}

async fn command(pool: &RedisPool, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    pool.query::<redis::Value>("command", &cmd).await?;
    Ok(())
}

async fn reset(pool: &RedisPool) -> Result<(), Box<dyn std::error::Error>> {
    command(pool, &["SLOWLOG", "RESET"]).await
}

/// The longest and the median `EVALSHA` (or `EVAL`) in the slow log, in microseconds, and how many.
async fn slowest(pool: &RedisPool) -> Result<(u64, u64, usize), Box<dyn std::error::Error>> {
    let entries: Vec<redis::Value> = pool
        .query("SLOWLOG", redis::cmd("SLOWLOG").arg("GET").arg(100_000))
        .await?;
    let mut durations = Vec::new();
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let (Some(redis::Value::Int(micros)), Some(redis::Value::Array(args))) =
            (fields.get(2), fields.get(3))
        else {
            continue;
        };
        let is_script = matches!(
            args.first(),
            Some(redis::Value::BulkString(name)) if name.eq_ignore_ascii_case(b"evalsha") || name.eq_ignore_ascii_case(b"eval")
        );
        if is_script {
            durations.push(u64::try_from(*micros).unwrap_or(0));
        }
    }
    durations.sort_unstable();
    let median = durations.get(durations.len() / 2).copied().unwrap_or(0);
    Ok((
        durations.last().copied().unwrap_or(0),
        median,
        durations.len(),
    ))
}

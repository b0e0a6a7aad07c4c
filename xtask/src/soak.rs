//! `cargo xtask soak [--minutes N] [--rate R]`: one release-built `stellar run` node on its own
//! redis-server runs `R` no-op tasks a second (`stellar.log`, enqueued once a second in one
//! `stellar tasks enqueue --stdin` batch) for `N` minutes (default 60 at 1000/s), and the node's
//! resident memory (VmRSS) is sampled every 10 s. It prints RSS after the first minute (the
//! start: allocator pools and caches warmed) and at the end, the peak, and the tasks run, and
//! writes every sample to `target/soak/samples.json`. Fails when a task is lost (processed <
//! enqueued after a drain grace) or the node exits. The node logs at `warn` (its own start-up lines at `info`): 2,000 info lines a
//! second would fill the disk in an hour, not test the node.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::cluster::{
    Env,
    harness::{self, Node, Redis},
};

/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>())
            .transpose()
            .with_context(|| format!("{flag} takes a whole number"))
    };
    let minutes = value_of("--minutes")?.unwrap_or(60);
    let rate = value_of("--rate")?.unwrap_or(1000);
    if minutes == 0 || rate == 0 {
        bail!("--minutes and --rate must be at least 1");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "-p", "stellar-cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building stellar-cli failed");
    }
    let dir = root.join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        bin: root.join("target/release/stellar"),
        dir: dir.clone(),
    };
    let redis = Redis::start(&env, &[])?;
    let node = Node::start(
        &env,
        &redis,
        "soak-1",
        &[("STELLAR_LOG", "warn,stellar_cli=info")],
    )?;
    let pid = node.pid().context("the node has no pid")?;
    println!("soak: {minutes} min at {rate} tasks/s on one node (pid {pid}); samples every 10 s");

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let mut next_batch = started;
    let mut next_sample = started;
    let mut enqueued = 0_u64;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let rss = rss_kib(pid).context("the node exited during the soak")?;
            samples.push((started.elapsed().as_secs_f64(), rss));
            if samples.len() % 6 == 1 {
                println!(
                    "soak: {:>4.0} s  RSS {:.1} MiB  {enqueued} enqueued",
                    started.elapsed().as_secs_f64(),
                    rss as f64 / 1024.0
                );
            }
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_batch {
            enqueue(&env, &redis, rate)?;
            enqueued += rate;
            next_batch += Duration::from_secs(1);
        }
        std::thread::sleep(
            next_batch
                .min(next_sample)
                .saturating_duration_since(Instant::now()),
        );
    }
    // Let the last batches run.
    let processed = drained(&env, &redis, enqueued, Duration::from_secs(30))?;
    let end_rss = rss_kib(pid).context("the node exited during the soak")?;
    // The heap and stacks alone (the rest of RSS is pages of the binary and libraries).
    let end_anon = status_kib(pid, "RssAnon:").unwrap_or(0);
    samples.push((started.elapsed().as_secs_f64(), end_rss));
    let start_rss = samples
        .iter()
        .find(|(at, _)| *at >= 60.0)
        .or(samples.first())
        .map_or(0, |(_, rss)| *rss);
    let peak = samples.iter().map(|(_, rss)| *rss).max().unwrap_or(0);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "soak: RSS at 1 min {:.1} MiB, at the end {:.1} MiB (peak {:.1} MiB, anonymous at the \
         end {:.1} MiB); {processed} of {enqueued} tasks run in {:.0} s",
        mib(start_rss),
        mib(end_rss),
        mib(peak),
        mib(end_anon),
        started.elapsed().as_secs_f64()
    );
    let report = json!({
        "minutes": minutes,
        "rate": rate,
        "enqueued": enqueued,
        "processed": processed,
        "rss_start_kib": start_rss,
        "rss_end_kib": end_rss,
        "rss_peak_kib": peak,
        "anon_end_kib": end_anon,
        "samples": samples.iter().map(|(at, rss)| json!([at, rss])).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("samples.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    drop(node);
    if processed < enqueued {
        bail!("{} of {enqueued} tasks were not run", enqueued - processed);
    }
    Ok(())
}

/// The resident memory of process `pid`, in KiB; `None` once it has exited.
fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `field` of `/proc/<pid>/status` given in kB; `None` once the process has exited.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `n` no-op `stellar.log` tasks in one CLI batch (ids made up by the CLI).
fn enqueue(env: &Env, redis: &Redis, n: u64) -> Result<()> {
    let line = json!({"name": "stellar.log", "args": {"message": "soak"}}).to_string() + "\n";
    let mut child = Command::new(&env.bin)
        .args(["tasks", "enqueue", "--stdin"])
        .env("STELLAR_REDIS_URL", redis.url())
        .env("STELLAR_SERVER_TOKEN", harness::TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the stellar CLI")?;
    child
        .stdin
        .take()
        .context("piped stdin")?
        .write_all(line.repeat(n as usize).as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "enqueue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Waits until `stellar.log` has been processed `enqueued` times, or `grace` passes; the count.
fn drained(env: &Env, redis: &Redis, enqueued: u64, grace: Duration) -> Result<u64> {
    let deadline = Instant::now() + grace;
    loop {
        let stats = harness::cli_json(env, redis, &["tasks", "stats", "--json"])?;
        let processed = stats["tasks"]["stellar.log"]["processed"]
            .as_u64()
            .unwrap_or(0);
        if processed >= enqueued || Instant::now() >= deadline {
            return Ok(processed);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

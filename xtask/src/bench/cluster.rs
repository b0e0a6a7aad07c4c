//! `cargo xtask bench --redis-cluster`: the task drain over 3 queues on a 3-master Redis Cluster
//! (started by stellar-testkit, on this machine), beside the same drain on one redis-server in the
//! same round. On one machine (2 cores here) this measures what the cluster costs, not what it
//! scales to: the masters share the cores with the node. And every task key carries the `{tasks}`
//! hash tag (docs/redis-keys.md), so the 3 queues live on one master whatever the cluster's size.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::json;
use stellar_testkit::RedisCluster;

use super::{Options, Sample, TASK_CONCURRENCY, bench_env, build, stats, write_results};
use crate::cluster::harness::Redis;

/// The queues the drain spreads its tasks over.
const QUEUES: &str = "3";

pub(super) fn run(root: &Path, options: &Options) -> Result<()> {
    build(
        root,
        &["-p", "stellar-tasks", "--example", "task_throughput"],
    )?;
    let env = bench_env(root)?;
    let total = if options.quick { "15000" } else { "60000" };
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        eprintln!(
            "xtask bench --redis-cluster: round {round} of {}",
            options.rounds
        );
        let single = {
            let redis = Redis::start(&env, &[])?;
            drain(root, &redis.url(), total)?
        };
        let clustered = {
            let cluster = RedisCluster::start();
            drain(root, &cluster.url(), total)?
        };
        samples.push(Sample::new(
            "cluster.tasks.drain_3q_per_s",
            "tasks/s",
            clustered,
            "single.tasks.drain_3q_per_s",
            single,
        ));
    }
    let figures = stats::figures(&samples);
    stats::print_table(&figures);
    println!(
        "{total} tasks over {QUEUES} queues, one node, {TASK_CONCURRENCY} workers; a 3-master \
         cluster on this machine's cores: overhead, not scale (the {{tasks}} tag keeps every queue \
         on one master)"
    );
    let results = json!({
        "rounds": options.rounds,
        "quick": options.quick,
        "figures": figures.iter().map(stats::Figure::to_json).collect::<Vec<_>>(),
    });
    write_results(&env.dir, "cluster.json", &results)
}

/// The drain rate of `total` tasks over [`QUEUES`] queues on the Redis at `url`.
fn drain(root: &Path, url: &str, total: &str) -> Result<f64> {
    let example = root.join("target/release/examples/task_throughput");
    eprintln!("xtask bench: task_throughput --queues {QUEUES} {total} on {url}");
    let output = Command::new(&example)
        .args(["--queues", QUEUES, total, TASK_CONCURRENCY])
        .env("STELLAR_BENCH_REDIS", url)
        .output()
        .context("running task_throughput")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "task_throughput failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let name = format!("tasks.drain_{QUEUES}q_per_s");
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("BENCH "))
        .map(Sample::parse)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .find(|sample| sample.name == name)
        .map(|sample| sample.value)
        .with_context(|| format!("task_throughput printed no {name}: {stdout}"))
}

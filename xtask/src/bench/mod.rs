//! `cargo xtask bench [--quick] [--rounds N] [--redis URL] [--only PREFIX] [--backlog N,N,…]`:
//! every figure beside a baseline measured in the same run (raw Redis, a bare hyper server, a
//! trivial route), as a ratio, repeated over rounds (5, `--quick` 2) and reported as the median
//! with min–max. `--only PREFIX` runs only the measurements whose figures start with it
//! (`metrics`, `tasks`, `web`, …); `--backlog` measures the task drain and pickup at each backlog
//! size instead (`backlog.rs`), `--redis-cluster` the task drain on a Redis Cluster beside one
//! Redis (`cluster.rs`). The measurements live in release-built examples of each crate
//! (they print `BENCH {json}` lines); this runs them round-robin, adds the node's start-up time
//! and idle memory, prints a table and writes `target/bench/results.json` with every round
//! (`backlog.json` in the backlog mode).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::cluster::{Env, harness::Redis};

use self::stats::Sample;

mod backlog;
mod cluster;
mod stats;
pub(crate) mod web;

/// What the command line asked for.
#[derive(Debug)]
pub(super) struct Options {
    quick: bool,
    /// A Redis to measure against instead of a fresh one per example.
    external: Option<String>,
    only: Option<String>,
    rounds: usize,
    /// Backlog sizes: measure the task queue at each instead of the usual figures.
    backlog: Option<Vec<u64>>,
    /// Measure the task drain on a Redis Cluster beside one Redis instead (`cluster.rs`).
    redis_cluster: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let value_of = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let quick = args.iter().any(|a| a == "--quick");
        let backlog = value_of("--backlog")
            .map(|sizes| {
                sizes
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .context("--backlog takes sizes separated by commas, e.g. 10000,100000")?;
        // The backlog mode is long (a million tasks fill and drain in about a minute): one round
        // unless asked for more.
        let default_rounds = match (&backlog, quick) {
            (Some(_), _) => 1,
            (None, true) => 2,
            (None, false) => 5,
        };
        let rounds = value_of("--rounds")
            .map(|n| n.parse::<usize>())
            .transpose()
            .context("--rounds takes a number")?
            .unwrap_or(default_rounds);
        if rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        Ok(Self {
            quick,
            external: value_of("--redis"),
            only: value_of("--only"),
            rounds,
            backlog,
            redis_cluster: args.iter().any(|a| a == "--redis-cluster"),
        })
    }

    /// A measurement is run when its figures' prefix and the filter agree as far as both go.
    fn wanted(&self, figures: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| figures.starts_with(only.as_str()) || only.starts_with(figures))
    }
}

/// A benchmark example: its name, the package it lives in, its arguments and its figures' prefix.
#[derive(Debug)]
struct Example {
    name: &'static str,
    package: &'static str,
    args: Vec<String>,
    prefix: &'static str,
}

fn examples(quick: bool) -> Vec<Example> {
    let size =
        |quick_size: &str, full_size: &str| if quick { quick_size } else { full_size }.to_owned();
    let example = |name, package, args, prefix| Example {
        name,
        package,
        args,
        prefix,
    };
    vec![
        example(
            "bus_throughput",
            "stellar-bus",
            vec![size("20000", "100000")],
            "bus",
        ),
        example(
            "rpc_latency",
            "stellar-rpc",
            vec![size("500", "3000")],
            "rpc",
        ),
        example(
            "cache_throughput",
            "stellar-cache",
            vec![size("1", "3")],
            "cache",
        ),
        example(
            "task_throughput",
            "stellar-tasks",
            vec![size("5000", "20000"), TASK_CONCURRENCY.to_owned()],
            "tasks",
        ),
        example(
            "metrics_scrape",
            "stellar-node",
            vec![size("50", "300")],
            "metrics",
        ),
    ]
}

/// Worker concurrency of the task figures, the same in the backlog mode.
const TASK_CONCURRENCY: &str = "50";

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    if let Some(sizes) = &options.backlog {
        return backlog::run(root, &options, sizes);
    }
    if options.redis_cluster {
        return cluster::run(root, &options);
    }
    let examples: Vec<Example> = examples(options.quick)
        .into_iter()
        .filter(|e| options.wanted(e.prefix))
        .collect();
    let (node_wanted, web_wanted) = (options.wanted("node"), options.wanted("web"));
    build_all(root, &examples, node_wanted, web_wanted)?;
    let env = bench_env(root)?;
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        eprintln!("xtask bench: round {round} of {}", options.rounds);
        samples.extend(run_round(root, &env, &options, &examples, round)?);
    }
    let figures = stats::figures(&samples);
    stats::print_table(&figures);
    let results = json!({
        "rounds": options.rounds,
        "quick": options.quick,
        "figures": figures.iter().map(stats::Figure::to_json).collect::<Vec<_>>(),
    });
    write_results(&env.dir, "results.json", &results)
}

/// Every wanted measurement once, in a fixed order: the examples, the node, the web figures.
fn run_round(
    root: &Path,
    env: &Env,
    options: &Options,
    examples: &[Example],
    round: usize,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for example in examples {
        samples.extend(run_example(
            root,
            env,
            options,
            example.name,
            &example.args,
        )?);
    }
    if options.wanted("node") {
        samples.extend(node_figures(env)?);
    }
    if options.wanted("web") {
        // The rolling restart takes a cluster start-up and a restart: once, in round 1.
        samples.extend(web::figures(root, env, options.quick, round == 1)?);
    }
    Ok(samples)
}

/// Release builds of what will run: the examples, the web baseline, the `stellar` binary.
fn build_all(root: &Path, examples: &[Example], node: bool, web: bool) -> Result<()> {
    for example in examples {
        build(root, &["-p", example.package, "--example", example.name])?;
    }
    if web {
        build(root, &["-p", "stellar-web", "--example", "web_baseline"])?;
    }
    if node || web {
        build(root, &["-p", "stellar-cli"])?;
    }
    Ok(())
}

fn build(root: &Path, extra: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet"])
        .args(extra)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build {} failed", extra.join(" "));
    }
    Ok(())
}

/// Where the runs keep their logs and results: `target/bench`.
fn bench_env(root: &Path) -> Result<Env> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    Ok(Env {
        bin: root.join("target/release/stellar"),
        dir,
    })
}

/// Runs one example once, on a fresh Redis unless `--redis` named one, and collects its samples.
fn run_example(
    root: &Path,
    env: &Env,
    options: &Options,
    example: &str,
    args: &[String],
) -> Result<Vec<Sample>> {
    let server = match options.external {
        Some(_) => None,
        None => Some(Redis::start(env, &[])?),
    };
    let url = options
        .external
        .clone()
        .unwrap_or_else(|| server.as_ref().map(Redis::url).unwrap_or_default());
    eprintln!("xtask bench: {example} {}", args.join(" "));
    let output = Command::new(root.join("target/release/examples").join(example))
        .args(args)
        .env("STELLAR_BENCH_REDIS", &url)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {example}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("{example} failed: {stdout}");
    }
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("BENCH "))
        .map(|json| Sample::parse(json).with_context(|| format!("{example} printed {json}")))
        .collect()
}

fn write_results(dir: &Path, name: &str, results: &serde_json::Value) -> Result<()> {
    let file: PathBuf = dir.join(name);
    std::fs::write(&file, serde_json::to_string_pretty(results)?)?;
    println!("wrote {}", file.display());
    Ok(())
}

/// Start-up time to `node ready` and resident memory of an idle embedded node, beside a
/// redis-server's start-up time to `PING` and its resident memory: all of it (`VmRSS`, mostly
/// pages of the binary and libraries, which the kernel shares between processes and can drop),
/// and its anonymous part (`RssAnon`: heap and stacks, what the process itself allocated).
fn node_figures(env: &Env) -> Result<Vec<Sample>> {
    let (ready, rss, anon) = node_startup(env)?;
    let redis_started = Instant::now();
    let redis = Redis::start(env, &[])?;
    let redis_ready = redis_started.elapsed();
    let redis_rss = redis
        .pid()
        .map(|pid| proc_mib(pid, "VmRSS:"))
        .transpose()?
        .unwrap_or(0.0);
    let redis_anon = redis
        .pid()
        .map(|pid| proc_mib(pid, "RssAnon:"))
        .transpose()?
        .unwrap_or(0.0);
    Ok(vec![
        Sample::new(
            "node.startup_ms",
            "ms",
            ready.as_secs_f64() * 1000.0,
            "redis.startup_ms",
            redis_ready.as_secs_f64() * 1000.0,
        ),
        Sample::new(
            "node.idle_rss_mib",
            "MiB",
            rss,
            "redis.idle_rss_mib",
            redis_rss,
        ),
        Sample::new(
            "node.idle_anon_mib",
            "MiB",
            anon,
            "redis.idle_anon_mib",
            redis_anon,
        ),
    ])
}

/// An embedded `stellar run`: from spawn to its `node ready` line, and its RSS and anonymous RSS
/// a second later.
fn node_startup(env: &Env) -> Result<(Duration, f64, f64)> {
    let started = Instant::now();
    let mut node = Command::new(&env.bin)
        .args(["run", "--id", "bench-node"])
        .env_remove("STELLAR_REDIS_URL")
        .env("STELLAR_HTTP_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = node.stderr.take().context("node stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("node ready") => break started.elapsed(),
            Some(_) => {}
            None => bail!("the node exited before it was ready"),
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    let rss = proc_mib(node.id(), "VmRSS:");
    let anon = proc_mib(node.id(), "RssAnon:");
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    let _ = node.wait();
    Ok((ready, rss?, anon?))
}

/// A `field` of `/proc/<pid>/status` given in kB (`VmRSS:`, `RssAnon:`), in MiB.
fn proc_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} in /proc/<pid>/status"))?;
    Ok(kib / 1024.0)
}

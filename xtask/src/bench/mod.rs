//! `cargo xtask bench [--quick] [--redis URL] [--only PREFIX]`: every figure beside a baseline
//! measured in the same run (raw Redis, a bare hyper server, a trivial route), as a ratio.
//! `--only PREFIX` runs only the measurements whose figures start with it (`metrics`, `tasks`,
//! `web`, …). The measurements live in release-built examples of each crate
//! (they print `BENCH {json}` lines); this collects them, adds the node's start-up time and idle
//! memory, prints a table and writes `target/bench/results.json`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cluster::{Env, harness::Redis};

pub(crate) mod web;

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let external = args
        .iter()
        .position(|a| a == "--redis")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // A measurement is run when its figures' prefix and the filter agree as far as both go.
    let wanted = |figures: &str| {
        only.as_ref()
            .is_none_or(|only| figures.starts_with(only.as_str()) || only.starts_with(figures))
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let build = |extra: &[&str]| -> Result<()> {
        let status = Command::new(&cargo)
            .args(["build", "--release", "--quiet"])
            .args(extra)
            .current_dir(root)
            .status()?;
        if !status.success() {
            bail!("cargo build {} failed", extra.join(" "));
        }
        Ok(())
    };
    // Each example, the package it lives in, its arguments and the prefix of its figures.
    let runs: [(&str, &str, Vec<&str>, &str); 5] = [
        (
            "bus_throughput",
            "stellar-bus",
            vec![if quick { "20000" } else { "100000" }],
            "bus",
        ),
        (
            "rpc_latency",
            "stellar-rpc",
            vec![if quick { "500" } else { "3000" }],
            "rpc",
        ),
        (
            "cache_throughput",
            "stellar-cache",
            vec![if quick { "1" } else { "3" }],
            "cache",
        ),
        (
            "task_throughput",
            "stellar-tasks",
            vec![if quick { "5000" } else { "20000" }, "50"],
            "tasks",
        ),
        (
            "metrics_scrape",
            "stellar-node",
            vec![if quick { "50" } else { "300" }],
            "metrics",
        ),
    ];
    let runs: Vec<_> = runs.into_iter().filter(|run| wanted(run.3)).collect();
    let (node_wanted, web_wanted) = (wanted("node"), wanted("web"));
    for (example, package, _, _) in &runs {
        build(&["-p", package, "--example", example])?;
    }
    if web_wanted {
        build(&["-p", "stellar-web", "--example", "web_baseline"])?;
    }
    if node_wanted || web_wanted {
        build(&["-p", "stellar-cli"])?;
    }
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let env = Env {
        bin: root.join("target/release/stellar"),
        dir: out.clone(),
    };
    let mut results: Vec<Value> = Vec::new();
    for (example, _, example_args, _) in runs {
        // A fresh Redis per example, unless the caller named one.
        let server = if external.is_none() {
            Some(Redis::start(&env, &[])?)
        } else {
            None
        };
        let url = external
            .clone()
            .unwrap_or_else(|| server.as_ref().map(Redis::url).unwrap_or_default());
        eprintln!("xtask bench: {example} {}", example_args.join(" "));
        let output = Command::new(root.join("target/release/examples").join(example))
            .args(&example_args)
            .env("STELLAR_BENCH_REDIS", &url)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {example}"))?;
        if !output.status.success() {
            bail!(
                "{example} failed: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some(json) = line.strip_prefix("BENCH ") {
                results.push(
                    serde_json::from_str(json)
                        .with_context(|| format!("{example} printed {line}"))?,
                );
            }
        }
    }
    if node_wanted {
        results.extend(node_figures(&env)?);
    }
    if web_wanted {
        results.extend(web::figures(root, &env, quick)?);
    }
    println!(
        "{:<22} {:>12} {:<8} {:<34} {:>12} {:>7}",
        "name", "value", "unit", "baseline", "baseline", "ratio"
    );
    for r in &results {
        println!(
            "{:<22} {:>12.3} {:<8} {:<34} {:>12.3} {:>7.2}",
            r["name"].as_str().unwrap_or(""),
            r["value"].as_f64().unwrap_or(0.0),
            r["unit"].as_str().unwrap_or(""),
            r["baseline_name"].as_str().unwrap_or(""),
            r["baseline_value"].as_f64().unwrap_or(0.0),
            r["ratio"].as_f64().unwrap_or(0.0),
        );
    }
    let file = out.join("results.json");
    std::fs::write(&file, serde_json::to_string_pretty(&results)?)?;
    println!("wrote {}", file.display());
    Ok(())
}

/// Start-up time to `node ready` and resident memory of an idle embedded node, beside a
/// redis-server's start-up time to `PING` and its resident memory.
fn node_figures(env: &Env) -> Result<Vec<Value>> {
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
    let rss = rss_mib(node.id())?;
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    let _ = node.wait();

    let redis_started = Instant::now();
    let redis = Redis::start(env, &[])?;
    let redis_ready = redis_started.elapsed();
    let redis_rss = redis.pid().map(rss_mib).transpose()?.unwrap_or(0.0);
    let figure = |name: &str, unit: &str, value: f64, baseline_name: &str, baseline: f64| {
        json!({ "name": name, "unit": unit, "value": value, "baseline_name": baseline_name, "baseline_value": baseline,
                "ratio": if baseline == 0.0 { 0.0 } else { value / baseline } })
    };
    Ok(vec![
        figure(
            "node.startup_ms",
            "ms",
            ready.as_secs_f64() * 1000.0,
            "redis.startup_ms",
            redis_ready.as_secs_f64() * 1000.0,
        ),
        figure(
            "node.idle_rss_mib",
            "MiB",
            rss,
            "redis.idle_rss_mib",
            redis_rss,
        ),
    ])
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

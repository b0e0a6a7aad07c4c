//! Project automation, run as `cargo xtask <command>` (see matklad's cargo-xtask).
//!
//! - `cargo xtask test`: the whole test suite, as CI runs it: format check, clippy with warnings
//!   denied, then every test of the workspace (unit, integration against real `redis-server`s,
//!   end-to-end against the real `stellar` binary, doc tests), then the cluster fault suite.
//! - `cargo xtask bench [--quick] [--rounds N] [--redis URL] [--only PREFIX] [--backlog N,…]`:
//!   each figure beside its raw-Redis baseline, as a ratio, median [min–max] over rounds;
//!   `target/bench/results.json`; `--redis-cluster`: the task drain on a 3-master Redis Cluster
//!   beside one Redis (`bench/cluster.rs`).
//! - `cargo xtask cluster-test [FILTER]`: the fault scenarios (`cluster/scenarios.rs`) with real
//!   processes, a real redis-server and real signals; logs under `target/cluster-test/`.
//! - `cargo xtask soak [--minutes N] [--rate R]`: one node running R no-op tasks a second for N
//!   minutes, its memory sampled (`soak.rs`); `target/soak/samples.json`.
//! - `cargo xtask metrics`: function lengths, doc share and trait sizes of the library code.

mod bench;
mod cluster;
mod metrics;
mod soak;
mod source;
mod tidy;

use std::{
    env,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    match run(env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `cargo xtask help` prints: every command.
const HELP: &str = "\
usage: cargo xtask test                            fmt check, clippy -D warnings, all tests
       cargo xtask bench [--quick] [--rounds N] [--redis URL] [--only PREFIX]
                                                   figures beside baselines, median [min–max] of
                                                   5 rounds (--quick: 2) (target/bench/results.json);
                                                   --only: figures named PREFIX* (metrics, tasks, web, …)
       cargo xtask bench --backlog 10000,100000,1000000 [--rounds N]
                                                   task drain rate and pickup at each backlog size
       cargo xtask bench --redis-cluster [--quick] [--rounds N]
                                                   task drain over 3 queues on a 3-master Redis
                                                   Cluster beside one Redis (target/bench/cluster.json)
       cargo xtask cluster-test [FILTER]           fault scenarios with real processes
       cargo xtask soak [--minutes N] [--rate R]   one node running R tasks/s for N minutes (60,
                                                   1000): its RSS after 1 min and at the end
       cargo xtask help                            this text";

fn run(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => bench::run(&tidy::workspace_root(), &args[1..]),
        Some("cluster-test") => {
            cluster::run(&tidy::workspace_root(), args.get(1).map(String::as_str))
        }
        Some("soak") => soak::run(&tidy::workspace_root(), &args[1..]),
        Some("metrics") => {
            metrics::run(&tidy::workspace_root());
            Ok(())
        }
        Some("help" | "--help" | "-h") | None => {
            println!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`; try `cargo xtask help`"),
    }
}

fn test() -> Result<()> {
    let started = Instant::now();
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace", "--locked"])?;
    cluster::run(&tidy::workspace_root(), None)?;
    eprintln!("xtask: test passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Runs `cargo ARGS…` from the workspace root, failing if it fails.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(tidy::workspace_root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

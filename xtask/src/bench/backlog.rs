//! `cargo xtask bench --backlog 10000,100000,1000000`: for each backlog size, `task_throughput
//! --backlog N` fills a fresh Redis with N no-op tasks (`enqueue_many`, 1000 a batch), then one
//! node drains them with the same worker concurrency as the usual task figures while probes go
//! to a higher-priority queue one at a time; it reports the drain rate and the probes' pickup
//! p50/p99, measured with that backlog in the queue. Sizes run round-robin over the rounds
//! (default 1 here; `--rounds N`). The goal is that the figures stay within 10 % across
//! sizes: this reports, it asserts nothing. Every round goes to `target/bench/backlog.json`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{Options, TASK_CONCURRENCY, build, stats};

/// The figures one size reports, as the example names them after `tasks.backlog_<N>.`.
const FIGURES: [&str; 4] = [
    "drain_per_s",
    "pickup_p50_ms",
    "pickup_p99_ms",
    "pickup_samples",
];

pub(super) fn run(root: &Path, options: &Options, sizes: &[u64]) -> Result<()> {
    build(
        root,
        &["-p", "stellar-tasks", "--example", "task_throughput"],
    )?;
    let env = super::bench_env(root)?;
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        for size in sizes {
            eprintln!(
                "xtask bench: backlog {size}, round {round} of {}",
                options.rounds
            );
            let args = [
                "--backlog".to_owned(),
                size.to_string(),
                TASK_CONCURRENCY.to_owned(),
            ];
            samples.extend(super::run_example(
                root,
                &env,
                options,
                "task_throughput",
                &args,
            )?);
        }
    }
    let figures = stats::figures(&samples);
    print_rows(sizes, &figures);
    let results = json!({
        "rounds": options.rounds,
        "backlog": sizes,
        "figures": figures.iter().map(stats::Figure::to_json).collect::<Vec<_>>(),
    });
    super::write_results(&env.dir, "backlog.json", &results)
}

/// One row per size: drain rate, pickup p50 and p99 as `median [min–max]`, and probe count.
fn print_rows(sizes: &[u64], figures: &[stats::Figure]) {
    println!(
        "{:>10} {:>30} {:>24} {:>24} {:>8} {:>6}",
        "backlog", "drain tasks/s", "pickup p50 ms", "pickup p99 ms", "probes", "rounds"
    );
    for size in sizes {
        let find = |figure: &str| {
            let name = format!("tasks.backlog_{size}.{figure}");
            figures.iter().find(|f| f.first.name == name)
        };
        let [Some(drain), Some(p50), Some(p99), Some(probes)] = FIGURES.map(find) else {
            println!("{size:>10} (no figures)");
            continue;
        };
        println!(
            "{size:>10} {:>30} {:>24} {:>24} {:>8.0} {:>6}",
            drain.value().show(0),
            p50.value().show(3),
            p99.value().show(3),
            probes.value().median,
            drain.rounds.len(),
        );
    }
}

//! `cargo xtask cluster-test`: real `stellar` processes on a real redis-server (or a Redis Cluster,
//! or Sentinel), real signals, faults injected while a workload of uniquely identified tasks runs;
//! then checks.

mod chaos;
mod failover;
pub(crate) mod harness;
mod history;
mod scenarios;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub(crate) use harness::Env;

/// One row of the report.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub(crate) enqueued: usize,
    pub(crate) completed: usize,
    pub(crate) lost: usize,
    pub(crate) duplicate_completions: u64,
    pub(crate) reexecutions: usize,
    pub(crate) recovery: Option<Duration>,
    /// Why the scenario failed, if it did.
    pub(crate) failure: Option<String>,
}

type Scenario = fn(&Env) -> Result<Row>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("1-scale-up-down", scenarios::scale_up_and_down),
    ("2-sigkill-random", scenarios::sigkill_random_nodes),
    ("3-sigstop-past-lease", scenarios::sigstop_past_lease),
    ("4-redis-restart", chaos::redis_restart_recovery),
    ("5-leader-kill", scenarios::leader_kill),
    ("6-poison-task", scenarios::poison_task),
    (
        "7-do-cluster-stopped-node",
        scenarios::do_cluster_with_a_stopped_node,
    ),
    ("8-supervisor", scenarios::supervisor),
    ("9-bad-input", scenarios::bad_input),
    ("10-supervisor-ctrl-c", scenarios::supervisor_ctrl_c),
    ("11-supervisor-sigkill", scenarios::supervisor_sigkill),
    ("12-id-reuse", chaos::id_reuse_after_completion),
    ("13-partition-heal", chaos::partition_past_lease),
    ("14-chaos-10k", chaos::long_chaos),
    (
        "15-rolling-restart-http",
        chaos::rolling_restart_under_http_load,
    ),
    ("16-cluster-master-kill", failover::cluster_master_kill),
    ("17-cluster-reshard", failover::cluster_reshard),
    ("18-sentinel-failover", failover::sentinel_failover),
    (
        "19-sentinel-failover-wait",
        failover::sentinel_failover_wait,
    ),
];

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace root) or `target/`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Runs a scenario; a panic (a stellar-testkit fixture that did not settle, say) is its failure,
/// by the first line of its message (the panic hook has printed all of it). Unwinding has dropped
/// the scenario's guards, so its processes are gone either way.
fn run_scenario(scenario: Scenario, env: &Env) -> Result<Row> {
    catch_unwind(AssertUnwindSafe(|| scenario(env))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        bail!("panicked: {}", message.lines().next().unwrap_or_default())
    })
}

pub(crate) fn run(root: &Path, filter: Option<&str>) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "stellar-cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building stellar-cli failed");
    }
    let target = target_dir(root);
    let bin = target.join("debug/stellar");
    let base = target.join("cluster-test");
    println!(
        "{:<28} {:>8} {:>9} {:>5} {:>10} {:>7} {:>9}  verdict",
        "scenario", "enqueued", "completed", "lost", "dup-compl", "re-exec", "recovery"
    );
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in SCENARIOS
        .iter()
        .filter(|(name, _)| filter.is_none_or(|f| name.contains(f)))
    {
        let dir = base.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let env = Env {
            bin: bin.clone(),
            dir: dir.clone(),
        };
        let started = Instant::now();
        let mut row = run_scenario(*scenario, &env).unwrap_or_else(|err| Row {
            failure: Some(format!("{err:#}")),
            ..Row::default()
        });
        // The scenario's guards are gone: whatever still runs was left behind. Workers whose
        // supervisor was killed get a few seconds to notice and stop.
        let left = harness::leftovers(&env, Duration::from_secs(10));
        if !left.is_empty() && row.failure.is_none() {
            row.failure = Some(format!("process(es) left behind: {left:?}"));
        }
        let recovery = row
            .recovery
            .map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
        let verdict = match &row.failure {
            None => {
                passed += 1;
                format!("pass ({:.0}s)", started.elapsed().as_secs_f64())
            }
            Some(reason) => {
                failed += 1;
                format!("FAIL: {reason} (logs: {})", dir.display())
            }
        };
        println!(
            "{name:<28} {:>8} {:>9} {:>5} {:>10} {:>7} {recovery:>9}  {verdict}",
            row.enqueued, row.completed, row.lost, row.duplicate_completions, row.reexecutions
        );
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} cluster scenario(s) failed");
    }
    Ok(())
}

//! The fault scenarios. Each runs in about a minute or less and returns its row.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::{
    Row,
    harness::{Backend, Env, Node, Redis, cli, cli_json, enqueue, is_running, tally},
};

/// Fills a row from a tally and applies the usual pass criteria.
pub(crate) fn row_from(tally: super::harness::Tally, max_reexecutions: usize) -> Row {
    let mut failure = None;
    if tally.lost > 0 {
        failure = Some(format!("{} task(s) lost", tally.lost));
    } else if tally.duplicate_completions > 0 {
        failure = Some(format!(
            "{} duplicate completion(s)",
            tally.duplicate_completions
        ));
    } else if tally.reexecutions > max_reexecutions {
        failure = Some(format!(
            "{} re-execution(s), at most {max_reexecutions} allowed",
            tally.reexecutions
        ));
    }
    Row {
        enqueued: tally.enqueued,
        completed: tally.completed,
        lost: tally.lost,
        duplicate_completions: tally.duplicate_completions,
        reexecutions: tally.reexecutions,
        recovery: None,
        failure,
    }
}

/// Enqueues in the background while the scenario injects faults.
pub(crate) fn stream(
    env: &Env,
    backend: &dyn Backend,
    prefix: &'static str,
    count: usize,
    ms: u64,
) -> thread::JoinHandle<Result<Vec<String>>> {
    let (env, url) = (env.clone(), backend.url());
    thread::spawn(move || {
        let mut ids = Vec::new();
        for k in 0..count {
            // Retried: enqueues fail while Redis restarts.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match enqueue(&env, &url, prefix, k..k + 1, ms) {
                    Ok(mut one) => {
                        ids.append(&mut one);
                        break;
                    }
                    Err(_) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(100))
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(ids)
    })
}

pub(crate) fn scale_up_and_down(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let mut nodes = vec![Node::start(env, &redis, "n1", &[])?];
    let producer = stream(env, &redis, "scale", 150, 20);
    for name in ["n2", "n3", "n4"] {
        thread::sleep(Duration::from_millis(300));
        nodes.push(Node::start(env, &redis, name, &[])?);
    }
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(400));
        let mut node = nodes.pop().context("a node to stop")?;
        node.signal(Signal::SIGTERM);
        if node.wait_exit(Duration::from_secs(10))? != Some(0) {
            bail!("{} did not exit 0 on SIGTERM", node.name);
        }
    }
    let ids = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    Ok(row_from(
        tally(env, &redis, &ids, Duration::from_secs(60))?,
        0,
    ))
}

pub(crate) fn sigkill_random_nodes(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let lease = [("STELLAR_TASK_LEASE_MS", "1500")];
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| Node::start(env, &redis, &format!("n{n}"), &lease))
        .collect::<Result<_>>()?;
    let producer = stream(env, &redis, "kill", 150, 300);
    let mut killed_at = Instant::now();
    for round in 0..3 {
        thread::sleep(Duration::from_millis(1500));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let victim = (nanos as usize + round) % nodes.len();
        let mut node = nodes.remove(victim);
        node.signal(Signal::SIGKILL);
        let _ = node.wait_exit(Duration::from_secs(5));
        killed_at = Instant::now();
        nodes.push(Node::start(env, &redis, &format!("r{round}"), &lease)?);
    }
    let ids = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let tally = tally(env, &redis, &ids, Duration::from_secs(60))?;
    let mut row = row_from(tally, 3 * 10);
    row.recovery = Some(killed_at.elapsed());
    Ok(row)
}

pub(crate) fn sigstop_past_lease(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let lease = [("STELLAR_TASK_LEASE_MS", "1000")];
    let stopped = Node::start(env, &redis, "stopped", &lease)?;
    let _healthy = Node::start(env, &redis, "healthy", &lease)?;
    let ids = enqueue(env, &redis, "stop", 0..40, 1000)?;
    thread::sleep(Duration::from_millis(400));
    stopped.signal(Signal::SIGSTOP);
    let paused_at = Instant::now();
    thread::sleep(Duration::from_millis(2500));
    stopped.signal(Signal::SIGCONT);
    let tally = tally(env, &redis, &ids, Duration::from_secs(60))?;
    thread::sleep(Duration::from_millis(500));
    let mut row = row_from(tally, 10);
    let rejected = stopped
        .output()
        .lines()
        .filter(|l| l.contains("lost the lease") || l.contains("lease lost"))
        .count();
    if row.failure.is_none() && rejected == 0 {
        row.failure = Some("the paused node's late answers were not rejected (none seen)".into());
    }
    row.recovery = Some(paused_at.elapsed());
    Ok(row)
}

fn leader(env: &Env, redis: &Redis) -> Option<String> {
    let output = cli(env, redis, &["tasks", "workers"]).ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("scheduler leader: "))?;
    let name = line
        .trim_start_matches("scheduler leader: ")
        .split_whitespace()
        .next()?;
    (name != "none").then(|| name.to_owned())
}

/// The scheduler leader is SIGKILLed while a stream of tasks keeps every node busy: no slot may be
/// missed or doubled (a slot running on the killed node runs again after the lease, so the check
/// waits for the queue to drain).
pub(crate) fn leader_kill(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let lease = [("STELLAR_TASK_LEASE_MS", "1500")];
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for n in 1..=3 {
        let name = format!("n{n}");
        nodes.insert(name.clone(), Node::start(env, &redis, &name, &lease)?);
    }
    let producer = stream(env, &redis, "load", 150, 40);
    let schedule = cli(
        env,
        &redis,
        &[
            "tasks",
            "enqueue",
            "stellar.log",
            r#"{"message":"tick"}"#,
            "--every",
            "500",
        ],
    )?;
    if !schedule.status.success() {
        bail!(
            "scheduling failed: {}",
            String::from_utf8_lossy(&schedule.stderr)
        );
    }
    thread::sleep(Duration::from_secs(3));
    let old = leader(env, &redis).context("no scheduler leader")?;
    let mut victim = nodes.remove(&old).context("the leader is one of ours")?;
    victim.signal(Signal::SIGKILL);
    let _ = victim.wait_exit(Duration::from_secs(5));
    let killed_at = Instant::now();
    let takeover = loop {
        if leader(env, &redis).is_some_and(|new| new != old) {
            break killed_at.elapsed();
        }
        if killed_at.elapsed() > Duration::from_secs(15) {
            bail!("no new leader within 15 s");
        }
        thread::sleep(Duration::from_millis(100));
    };
    thread::sleep(Duration::from_secs(3));
    let _ = cli(env, &redis, &["tasks", "unschedule", "stellar.log"])?;
    let load = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let load = tally(env, &redis, &load, Duration::from_secs(60))?;
    // The slots run `stellar.log` too, so the stream's duplicate count is not meaningful here.
    if load.lost > 0 {
        bail!("the task stream lost {} task(s)", load.lost);
    }
    thread::sleep(Duration::from_millis(800));
    // Slots from the task ids of every run, in every log.
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(&env.dir)? {
        let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("stellar.log task started"))
        {
            let slot = line
                .split("task_id=recur:stellar.log:")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
            if let Some(slot) = slot {
                *runs.entry(slot).or_default() += 1;
            }
        }
    }
    let slots: Vec<u64> = runs.keys().copied().collect();
    let missed: usize = slots
        .windows(2)
        .map(|w| ((w[1] - w[0]) / 500).saturating_sub(1) as usize)
        .sum();
    let doubled = runs.values().filter(|n| **n > 1).count();
    let mut row = Row {
        enqueued: slots.len(),
        completed: slots.len(),
        reexecutions: doubled,
        recovery: Some(takeover),
        ..Row::default()
    };
    if slots.len() < 8 {
        row.failure = Some(format!("only {} slots ran", slots.len()));
    } else if missed > 0 || doubled > 0 {
        row.failure = Some(format!(
            "{missed} slot(s) missed, {doubled} doubled after takeover"
        ));
    } else if takeover > Duration::from_secs(3 + 2) {
        row.failure = Some(format!("takeover took {takeover:?}, over the 3 s lease"));
    }
    row.lost = missed;
    Ok(row)
}

pub(crate) fn poison_task(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let _nodes: Vec<Node> = (1..=2)
        .map(|n| Node::start(env, &redis, &format!("n{n}"), &[]))
        .collect::<Result<_>>()?;
    let poison = cli(
        env,
        &redis,
        &[
            "tasks",
            "enqueue",
            "stellar.fail",
            r#"{"message":"poison"}"#,
            "--id",
            "poison",
        ],
    )?;
    if !poison.status.success() {
        bail!("enqueue poison failed");
    }
    let ids = enqueue(env, &redis, "good", 0..50, 10)?;
    let mut row = row_from(tally(env, &redis, &ids, Duration::from_secs(60))?, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let failed = cli_json(env, &redis, &["tasks", "failed", "--json"])?;
        if failed
            .as_array()
            .is_some_and(|f| f.iter().any(|t| t["id"] == "poison" && t["attempts"] == 3))
        {
            break;
        }
        if Instant::now() > deadline {
            row.failure
                .get_or_insert_with(|| "the poison task never reached the failed set".into());
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(row)
}

pub(crate) fn do_cluster_with_a_stopped_node(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let nodes: Vec<Node> = (1..=3)
        .map(|n| Node::start(env, &redis, &format!("n{n}"), &[]))
        .collect::<Result<_>>()?;
    nodes[1].signal(Signal::SIGSTOP);
    let started = Instant::now();
    let output = cli(
        env,
        &redis,
        &[
            "cluster",
            "do",
            "api.ping",
            "--wait",
            "all",
            "--timeout",
            "1000",
            "--json",
        ],
    )?;
    let elapsed = started.elapsed();
    nodes[1].signal(Signal::SIGCONT);
    let replies: Value = serde_json::from_slice(&output.stdout).context("replies as JSON")?;
    let ok = |id: &str| {
        replies
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["node"] == id && x["ok"]["pong"] == true))
    };
    let timed_out = replies.as_array().is_some_and(|r| {
        r.iter().any(|x| {
            x["node"] == "n2" && x["error"].as_str().is_some_and(|e| e.contains("no reply"))
        })
    });
    let mut row = Row {
        enqueued: 3,
        completed: 2,
        recovery: Some(elapsed),
        ..Row::default()
    };
    if output.status.success() || !ok("n1") || !ok("n3") || !timed_out {
        row.failure = Some(format!(
            "unexpected replies (exit {:?}): {replies}",
            output.status.code()
        ));
    } else if elapsed > Duration::from_secs(4) {
        row.failure = Some(format!("the call took {elapsed:?}, not its 1 s timeout"));
    }
    thread::sleep(Duration::from_millis(300));
    let status = cli_json(env, &redis, &["cluster", "do", "api.status", "--json"])?;
    let all_answer = status
        .as_array()
        .is_some_and(|r| r.len() == 3 && r.iter().all(|x| x["ok"]["pending_calls"] == 0));
    if row.failure.is_none() && !all_answer {
        row.failure = Some(format!(
            "after SIGCONT not every node answers with nothing pending: {status}"
        ));
    }
    Ok(row)
}

pub(crate) fn supervisor(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let pid_file = env.dir.join("stellar.pid").display().to_string();
    let mut supervisor = Node::spawn(
        env,
        &redis,
        "supervisor",
        &["run", "--cluster", "3", "--pid-file", &pid_file],
        // A task in flight on the SIGKILLed worker runs again after the lease.
        &[("STELLAR_TASK_LEASE_MS", "3000")],
    )?;
    for n in 1..=3 {
        supervisor.wait_for(&format!("[stellar-worker-{n}]"), Duration::from_secs(15))?;
    }
    supervisor.wait_for(
        "worker ready worker=stellar-worker-3",
        Duration::from_secs(15),
    )?;
    let producer = stream(env, &redis, "sup", 100, 30);
    thread::sleep(Duration::from_millis(800));
    let status = cli_json(
        env,
        &redis,
        &[
            "cluster",
            "do",
            "api.status",
            "--node",
            "stellar-worker-2",
            "--json",
        ],
    )?;
    let pid = status[0]["ok"]["pid"].as_u64().context("worker 2's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        Signal::SIGKILL,
    )?;
    let killed_at = Instant::now();
    loop {
        let back = cli_json(
            env,
            &redis,
            &[
                "cluster",
                "do",
                "api.status",
                "--node",
                "stellar-worker-2",
                "--json",
            ],
        )
        .ok();
        if back
            .and_then(|b| b[0]["ok"]["pid"].as_u64())
            .is_some_and(|new| new != pid)
        {
            break;
        }
        if killed_at.elapsed() > Duration::from_secs(15) {
            bail!("stellar-worker-2 did not come back");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let recovery = killed_at.elapsed();
    supervisor.signal(Signal::SIGUSR2);
    supervisor.wait_for("rolling restart done", Duration::from_secs(30))?;
    let ids = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let tally = tally(env, &redis, &ids, Duration::from_secs(60))?;
    supervisor.signal(Signal::SIGTERM);
    let exit = supervisor.wait_exit(Duration::from_secs(20))?;
    // A SIGKILLed worker's in-flight tasks run again; a rolling restart hands tasks back only if
    // they outlive the drain, which 30 ms tasks do not.
    let mut row = row_from(tally, 10);
    row.recovery = Some(recovery);
    if row.failure.is_none() && exit != Some(0) {
        row.failure = Some(format!("the supervisor exited with {exit:?}"));
    }
    if row.failure.is_none() && supervisor.output().contains("did not stop in time") {
        row.failure = Some("a worker had to be killed at shutdown".into());
    }
    Ok(row)
}

pub(crate) fn bad_input(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| Node::start(env, &redis, &format!("n{n}"), &[]))
        .collect::<Result<_>>()?;
    let port = redis.port.to_string();
    // `redis-cli -x` takes the payload from stdin: large payloads do not fit on a command line.
    let publish = |payload: &[u8]| -> Result<()> {
        use std::io::Write;
        let mut child = std::process::Command::new("redis-cli")
            .args(["-p", &port, "-x", "PUBLISH", "stellar:bus"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .context("redis-cli stdin")?
            .write_all(payload)?;
        if !child.wait()?.success() {
            bail!("redis-cli failed");
        }
        Ok(())
    };
    publish(b"garbage")?;
    publish(&[0xff, 0x00, 0x01])?;
    publish("[".repeat(100_000).as_bytes())?;
    publish(&vec![b'x'; 2 * 1024 * 1024])?;
    // Forged: signed with another token.
    let forged = std::process::Command::new(&env.bin)
        .args(["cluster", "publish", "api.stop", "{}"])
        .env("STELLAR_REDIS_URL", redis.url())
        .env("STELLAR_SERVER_TOKEN", "not-the-cluster-token")
        .output()?;
    if !forged.status.success() {
        bail!("the forger could not publish");
    }
    let unknown = cli(env, &redis, &["cluster", "do", "no.such.method"])?;
    if unknown.status.success() {
        bail!("an unknown RPC method succeeded");
    }
    thread::sleep(Duration::from_millis(500));
    let status = cli_json(env, &redis, &["cluster", "do", "api.status", "--json"])?;
    let mut row = Row {
        enqueued: 6,
        completed: 6,
        ..Row::default()
    };
    let counters: Vec<&Value> = status
        .as_array()
        .map(|r| r.iter().map(|x| &x["ok"]["bus"]).collect())
        .unwrap_or_default();
    let every = |field: &str, at_least: u64| {
        counters.len() == 3
            && counters
                .iter()
                .all(|c| c[field].as_u64().is_some_and(|n| n >= at_least))
    };
    if !(every("malformed", 3) && every("oversized", 1) && every("bad_signature", 1)) {
        row.failure = Some(format!(
            "not every rejection was counted on every node: {status}"
        ));
    }
    for node in &mut nodes {
        if node.wait_exit(Duration::from_millis(1)).is_ok() {
            row.failure = Some(format!("{} died", node.name));
        }
    }
    Ok(row)
}

/// `stellar run --cluster 3` in its own process group, once its three workers are ready.
fn supervisor_of_three(env: &Env, redis: &Redis) -> Result<Node> {
    let pid_file = env.dir.join("stellar.pid").display().to_string();
    let mut supervisor = Node::spawn(
        env,
        redis,
        "supervisor",
        &["run", "--cluster", "3", "--pid-file", &pid_file],
        &[],
    )?;
    for n in 1..=3 {
        supervisor.wait_for(
            &format!("worker ready worker=stellar-worker-{n}"),
            Duration::from_secs(15),
        )?;
    }
    Ok(supervisor)
}

/// Every live worker's pid, from `api.status`.
fn worker_pids(env: &Env, redis: &Redis) -> Result<Vec<u32>> {
    let status = cli_json(env, redis, &["cluster", "do", "api.status", "--json"])?;
    status
        .as_array()
        .context("replies")?
        .iter()
        .map(|reply| {
            let pid = reply["ok"]["pid"].as_u64().context("a worker's pid")?;
            Ok(u32::try_from(pid)?)
        })
        .collect()
}

/// Ctrl-C in the supervisor's terminal: SIGINT to its whole process group while tasks run. Every
/// worker drains and exits 0, the supervisor exits 0, nothing is left running (the harness checks
/// that for every scenario), and a node started afterwards finds nothing lost.
pub(crate) fn supervisor_ctrl_c(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let mut supervisor = supervisor_of_three(env, &redis)?;
    let producer = stream(env, &redis, "ctrlc", 40, 1000);
    thread::sleep(Duration::from_millis(1500));
    let group = nix::unistd::Pid::from_raw(i32::try_from(supervisor.pid().context("pid")?)?);
    nix::sys::signal::killpg(group, Signal::SIGINT)?;
    let signalled_at = Instant::now();
    let exit = supervisor.wait_exit(Duration::from_secs(20))?;
    let stopped_in = signalled_at.elapsed();
    let output = supervisor.output();
    let clean = output
        .lines()
        .filter(|l| l.contains("worker stopped") && l.contains("exited with code 0"))
        .count();
    // Whatever was handed back, or enqueued since, runs on a node started afterwards.
    let _finisher = Node::start(env, &redis, "finisher", &[])?;
    let ids = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let mut row = row_from(tally(env, &redis, &ids, Duration::from_secs(60))?, 0);
    row.recovery = Some(stopped_in);
    if row.failure.is_none() && exit != Some(0) {
        row.failure = Some(format!("the supervisor exited with {exit:?}"));
    }
    if row.failure.is_none() && (clean != 3 || output.contains("exiting now")) {
        row.failure = Some(format!("{clean} of 3 workers exited 0"));
    }
    Ok(row)
}

/// SIGKILL of the supervisor while tasks run: its workers notice (their control socket closes),
/// stop gracefully within 5 s, and a node started afterwards finds nothing lost.
pub(crate) fn supervisor_sigkill(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let supervisor = supervisor_of_three(env, &redis)?;
    let workers = worker_pids(env, &redis)?;
    if workers.len() != 3 {
        bail!("expected 3 workers, found {workers:?}");
    }
    let producer = stream(env, &redis, "orphan", 40, 1000);
    thread::sleep(Duration::from_millis(1500));
    supervisor.signal(Signal::SIGKILL);
    let killed_at = Instant::now();
    while workers.iter().any(|pid| is_running(*pid)) {
        if killed_at.elapsed() > Duration::from_secs(5) {
            bail!("workers still running 5 s after the supervisor was killed");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let gone_in = killed_at.elapsed();
    let _finisher = Node::start(env, &redis, "finisher", &[])?;
    let ids = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let mut row = row_from(tally(env, &redis, &ids, Duration::from_secs(60))?, 0);
    row.recovery = Some(gone_in);
    Ok(row)
}

//! Fault scenarios for fencing and idempotency: id reuse, a node cut off from Redis through a
//! freezing proxy, a Redis restart under load, and a long chaos run checked against its history.

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use super::{
    Row,
    harness::{Env, Node, Redis, TOKEN, cli, cli_json, enqueue, tally},
    history::History,
};

/// A TCP proxy in front of Redis that can freeze traffic (both ways, connections held open, as a
/// network partition would) and heal.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    pub(crate) fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (frozen, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (frozen_a, stop_a) = (frozen.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if stop_a.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (frozen, stop) = (frozen_a.clone(), stop_a.clone());
                    thread::spawn(move || pump(from, to, &frozen, &stop));
                }
            }
        });
        Ok(Self {
            port,
            frozen,
            stop,
            accept: Some(accept),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub(crate) fn heal(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

/// Copies bytes from `from` to `to` unless frozen; ends when either side closes or on stop.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buffer = [0_u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if frozen.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn processed(env: &Env, redis: &Redis, name: &str) -> Result<u64> {
    let stats = cli_json(env, redis, &["tasks", "stats", "--json"])?;
    Ok(stats["tasks"][name]["processed"].as_u64().unwrap_or(0))
}

/// Enqueues `count` tasks `prefix-k` of `name` in one CLI process (`{id}` in `args` is each id).
fn enqueue_many(
    env: &Env,
    redis: &Redis,
    name: &str,
    args: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<String>> {
    let output = cli(
        env,
        redis,
        &[
            "tasks",
            "enqueue",
            name,
            args,
            "--id",
            prefix,
            "--count",
            &count.to_string(),
        ],
    )?;
    if !output.status.success() {
        bail!(
            "enqueue of {prefix}-* failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Completed ids are kept as idempotency keys, and a stalled worker's late answer is refused once
/// its task ran elsewhere.
pub(crate) fn id_reuse_after_completion(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let lease = [("STELLAR_TASK_LEASE_MS", "1000")];
    let stale = Node::start(env, &redis, "stale", &lease)?;
    let ids = enqueue(env, &redis, "reuse", 0..20, 10)?;
    let first = tally(env, &redis, &ids, Duration::from_secs(30))?;
    if first.completed != ids.len() {
        bail!("only {} of {} completed", first.completed, ids.len());
    }
    for id in &ids {
        let args = format!(r#"{{"message":"{id}","ms":10}}"#);
        let again = cli(
            env,
            &redis,
            &["tasks", "enqueue", "stellar.log", &args, "--id", id],
        )?;
        if !String::from_utf8_lossy(&again.stderr).contains("exists (completed)") {
            bail!("enqueueing the completed id {id} again did not report it");
        }
    }
    // A worker stalls mid-task past its lease; the task runs on another node; the stalled worker
    // comes back and answers late.
    enqueue(env, &redis, "victim", 0..1, 2500)?;
    let mut stale = stale;
    stale.wait_for("text=victim-0", Duration::from_secs(10))?;
    stale.signal(Signal::SIGSTOP);
    let fresh = Node::start(env, &redis, "fresh", &lease)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fresh.output().contains("stellar.log task ran") {
        if Instant::now() > deadline {
            stale.signal(Signal::SIGCONT);
            bail!("the victim task did not run on the fresh node");
        }
        thread::sleep(Duration::from_millis(100));
    }
    stale.signal(Signal::SIGCONT);
    // Refused either way: its renewal fails (`lease lost while running`) or its completion is
    // rejected (`this worker lost the lease`), depending on which it tries first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stale
        .output()
        .lines()
        .any(|l| l.contains("lost the lease") || l.contains("lease lost"))
    {
        if Instant::now() > deadline {
            bail!("the stalled worker's late answer was not refused (none seen)");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut all = ids.clone();
    all.push("victim-0".to_owned());
    let tally = tally(env, &redis, &all, Duration::from_secs(30))?;
    let mut row = super::scenarios::row_from(tally, 1);
    if row.failure.is_none() && processed(env, &redis, "stellar.log")? != all.len() as u64 {
        row.failure = Some("a task was completed twice".into());
    }
    drop(fresh);
    Ok(row)
}

/// One node loses Redis (traffic frozen, connections held) for longer than the lease while it runs
/// tasks; the others take over; when the partition heals, its late answers are refused.
pub(crate) fn partition_past_lease(env: &Env) -> Result<Row> {
    let redis = Redis::start(env, &[])?;
    let proxy = Proxy::start(redis.port)?;
    let lease = ("STELLAR_TASK_LEASE_MS", "1500");
    let proxied = proxy.url();
    let cut = Node::start(
        env,
        &redis,
        "cut",
        &[lease, ("STELLAR_REDIS_URL", proxied.as_str())],
    )?;
    let _ok = Node::start(env, &redis, "ok", &[lease])?;
    let ids = enqueue_many(
        env,
        &redis,
        "stellar.log",
        r#"{"message":"{id}","ms":300}"#,
        "cut",
        80,
    )?;
    thread::sleep(Duration::from_millis(500));
    proxy.freeze();
    thread::sleep(Duration::from_secs(4));
    proxy.heal();
    let healed_at = Instant::now();
    let tally = tally(env, &redis, &ids, Duration::from_secs(60))?;
    let recovery = healed_at.elapsed();
    thread::sleep(Duration::from_secs(2));
    let mut row = super::scenarios::row_from(tally, 20);
    let refused = cut
        .output()
        .lines()
        .filter(|l| l.contains("lost the lease") || l.contains("lease lost"))
        .count();
    if row.failure.is_none() && refused == 0 {
        row.failure = Some("the cut-off node's late answers were not refused (none seen)".into());
    }
    row.recovery = Some(recovery);
    Ok(row)
}

/// Redis restarts (AOF, fsync always) while tasks run and a stream enqueues: the figure is how long
/// after Redis is back every task that was running or queued when it died is done. A claim or an
/// acknowledgement whose reply was lost is asked again, not left to its 30 s lease.
pub(crate) fn redis_restart_recovery(env: &Env) -> Result<Row> {
    let mut redis = Redis::start(env, &["--appendonly", "yes", "--appendfsync", "always"])?;
    let _nodes: Vec<Node> = (1..=2)
        .map(|n| Node::start(env, &redis, &format!("n{n}"), &[]))
        .collect::<Result<_>>()?;
    let producer = super::scenarios::stream(env, &redis, "restart", 100, 20);
    let batch = enqueue_many(env, &redis, "stellar.sleep", r#"{"ms":200}"#, "batch", 40)?;
    thread::sleep(Duration::from_millis(250));
    redis.kill();
    thread::sleep(Duration::from_millis(500));
    redis.restart()?;
    let restarted_at = Instant::now();
    let recovery = loop {
        if processed(env, &redis, "stellar.sleep").unwrap_or(0) >= batch.len() as u64 {
            break restarted_at.elapsed();
        }
        if restarted_at.elapsed() > Duration::from_secs(60) {
            bail!("the batch running at the restart did not finish within 60 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let ids = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    let mut row =
        super::scenarios::row_from(tally(env, &redis, &ids, Duration::from_secs(60))?, 20);
    row.enqueued += batch.len();
    row.completed += batch.len();
    row.recovery = Some(recovery);
    if row.failure.is_none() && recovery > Duration::from_secs(2) {
        row.failure = Some(format!(
            "recovery took {recovery:?}: a lost reply waited for its lease"
        ));
    }
    Ok(row)
}

/// 10,000 tasks on `--cluster 3`, a random worker SIGKILLed every 2 s and one Redis restart (AOF,
/// fsync always); every enqueue acknowledgement, start and accepted completion is recorded, then
/// checked: lost (acknowledged, never completed), duplicated (completed twice), unexpected (ran
/// but never enqueued).
pub(crate) fn long_chaos(env: &Env) -> Result<Row> {
    const COUNT: usize = 10_000;
    let mut redis = Redis::start(env, &["--appendonly", "yes", "--appendfsync", "always"])?;
    let pid_file = env.dir.join("stellar.pid").display().to_string();
    let log = [
        ("STELLAR_LOG", "info,stellar_tasks=debug"),
        ("STELLAR_TASK_LEASE_MS", "2000"),
    ];
    let mut supervisor = Node::spawn(
        env,
        &redis,
        "supervisor",
        &["run", "--cluster", "3", "--pid-file", &pid_file],
        &log,
    )?;
    for n in 1..=3 {
        supervisor.wait_for(
            &format!("node ready node_id=stellar-worker-{n}"),
            Duration::from_secs(20),
        )?;
    }
    let acks = env.dir.join("acks.txt");
    let mut client = Client::enqueue(env, &redis, &acks, COUNT)?;
    let started = Instant::now();
    let (mut kills, mut restarted) = (0, false);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() as u64 | 1);
    loop {
        thread::sleep(Duration::from_secs(2));
        if !restarted && started.elapsed() > Duration::from_secs(10) {
            redis.kill();
            thread::sleep(Duration::from_millis(500));
            redis.restart()?;
            restarted = true;
            continue;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if let Some(pid) = worker_pid(env, &redis, 1 + (seed % 3) as usize) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            kills += 1;
        }
        let done = processed(env, &redis, "stellar.log").unwrap_or(0);
        let client_done = client.finished()?;
        if (client_done && done >= line_count(&acks) as u64)
            || started.elapsed() > Duration::from_secs(240)
        {
            break;
        }
    }
    let drained = wait_drained(env, &redis, &acks, Duration::from_secs(60));
    supervisor.signal(Signal::SIGTERM);
    let _ = supervisor.wait_exit(Duration::from_secs(30));
    let acked = std::fs::read_to_string(&acks)?
        .lines()
        .map(str::to_owned)
        .collect();
    let attempted = (0..COUNT).map(|k| format!("chaos-{k}")).collect();
    let history = History::read(&env.dir, acked, attempted)?;
    let mut row = Row {
        enqueued: history.acked.len(),
        recovery: Some(started.elapsed()),
        ..Row::default()
    };
    // An acknowledged id whose completion the logs lack (a worker killed between Redis accepting
    // its completion and the log line) is looked up in Redis.
    let mut completed = 0;
    for id in &history.acked {
        let logged = history.completions.get(id).copied().unwrap_or(0) > 0;
        if logged || task_state(env, &redis, id).as_deref() == Some("completed") {
            completed += 1;
        } else {
            row.lost += 1;
        }
    }
    row.completed = completed;
    row.duplicate_completions = history.completions.values().filter(|n| **n > 1).count() as u64;
    let distinct = history.completions.len() as u64;
    let counted = processed(env, &redis, "stellar.log")?;
    row.duplicate_completions += counted.saturating_sub(distinct.max(completed as u64));
    row.reexecutions = history.starts.values().map(|n| n - 1).sum();
    let unexpected = history.unexpected();
    row.failure = if history.acked.len() < COUNT / 2 {
        Some(format!(
            "only {} enqueues acknowledged",
            history.acked.len()
        ))
    } else if row.lost > 0 {
        Some(format!("{} acknowledged task(s) lost", row.lost))
    } else if row.duplicate_completions > 0 {
        Some(format!(
            "{} duplicate completion(s)",
            row.duplicate_completions
        ))
    } else if !unexpected.is_empty() {
        Some(format!(
            "{} unexpected task(s), e.g. {}",
            unexpected.len(),
            unexpected[0]
        ))
    } else if let Err(err) = drained {
        Some(format!("{err:#}"))
    } else if kills < 5 {
        Some(format!("only {kills} kills happened"))
    } else {
        None
    };
    std::fs::write(
        env.dir.join("history.txt"),
        format!(
            "acked {} attempted {} completed {} lost {} duplicated {} unexpected {} starts {} kills {kills}\n",
            history.acked.len(),
            history.attempted.len(),
            completed,
            row.lost,
            row.duplicate_completions,
            unexpected.len(),
            history.starts.values().sum::<usize>(),
        ),
    )?;
    client.stop();
    Ok(row)
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn task_state(env: &Env, redis: &Redis, id: &str) -> Option<String> {
    let record = cli_json(env, redis, &["tasks", "show", id, "--json"]).ok()?;
    record["state"].as_str().map(str::to_owned)
}

fn wait_drained(env: &Env, redis: &Redis, acks: &Path, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let stats = cli_json(env, redis, &["tasks", "stats", "--json"])?;
        let done = stats["tasks"]["stellar.log"]["processed"]
            .as_u64()
            .unwrap_or(0);
        let idle = stats["in_flight"].as_u64() == Some(0)
            && stats["queues"]["default"]["depth"].as_u64().unwrap_or(0) == 0
            && stats["delayed"].as_u64() == Some(0);
        if idle && done >= line_count(acks) as u64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not drained within {within:?}: {stats}");
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// The pid of `stellar-worker-N`, from the membership.
fn worker_pid(env: &Env, redis: &Redis, n: usize) -> Option<i32> {
    let status = cli_json(env, redis, &["cluster", "status", "--json"]).ok()?;
    let name = format!("stellar-worker-{n}");
    status["nodes"]
        .as_array()
        .or_else(|| status.as_array())?
        .iter()
        .find(|node| node["id"] == name.as_str())
        .and_then(|node| node["pid"].as_i64())
        .and_then(|pid| i32::try_from(pid).ok())
}

/// The enqueueing client of the chaos run, in the background, its acknowledgements in a file.
struct Client {
    child: Option<Child>,
}

impl Client {
    fn enqueue(env: &Env, redis: &Redis, acks: &Path, count: usize) -> Result<Self> {
        let child = Command::new(&env.bin)
            .args([
                "tasks",
                "enqueue",
                "stellar.log",
                r#"{"message":"{id}","ms":50}"#,
                "--id",
                "chaos",
                "--count",
                &count.to_string(),
            ])
            .env("STELLAR_REDIS_URL", redis.url())
            .env("STELLAR_SERVER_TOKEN", TOKEN)
            .env("STELLAR_TASK_ENQUEUE_RETRY_MS", "20000")
            .stdin(Stdio::null())
            .stdout(Stdio::from(File::create(acks)?))
            .stderr(Stdio::from(File::create(env.dir.join("client.log"))?))
            .spawn()
            .context("starting the enqueueing client")?;
        Ok(Self { child: Some(child) })
    }

    fn finished(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?.is_some()),
            None => Ok(true),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `--cluster 3` serving one port under constant HTTP load (wrk, 32 keep-alive connections) while
/// a SIGUSR2 rolling restart replaces every worker: no request may fail.
pub(crate) fn rolling_restart_under_http_load(env: &Env) -> Result<Row> {
    let run = crate::bench::web::rolling_restart(env, 6)?;
    let requests = (run.requests_per_s * 6.0) as usize;
    let mut row = Row {
        enqueued: requests,
        completed: requests.saturating_sub(run.failed as usize),
        lost: run.failed as usize,
        ..Row::default()
    };
    if requests == 0 {
        row.failure = Some("no request was served".into());
    } else if run.failed > 0 {
        row.failure = Some(format!(
            "{} request(s) failed during the rolling restart",
            run.failed
        ));
    }
    Ok(row)
}

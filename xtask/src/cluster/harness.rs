//! Real processes for the fault suite: a redis-server, `stellar` nodes and CLI calls, each owned
//! by a guard that kills it on drop, with logs under `target/cluster-test/<scenario>/`. Nodes and
//! CLI calls run on any [`Backend`]: the single server here, or stellar-testkit's Redis Cluster
//! and Sentinel set-ups.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt;

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;
use stellar_testkit::{RedisCluster, RedisSentinel};

pub(crate) const TOKEN: &str = "cluster-test-token";
/// Set on every process a scenario starts (and inherited by the workers a supervisor starts), with
/// the scenario's log folder as value: how [`leftovers`] finds processes left behind.
const OWNER_ENV: &str = "CLUSTER_TEST_OWNER";

/// Where one scenario keeps its logs, and the binary it runs.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
}

/// What a scenario's processes connect to: its URL is the `STELLAR_REDIS_URL` of every node and
/// CLI call. A [`Redis`], a stellar-testkit [`RedisCluster`] (`redis+cluster://` naming its
/// masters) or [`RedisSentinel`] (`redis+sentinel://` naming its sentinels), or a URL as is.
pub(crate) trait Backend {
    /// The URL processes are given.
    fn url(&self) -> String;
}

impl Backend for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }
}

impl Backend for String {
    fn url(&self) -> String {
        self.clone()
    }
}

impl Backend for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
}

impl Backend for RedisSentinel {
    fn url(&self) -> String {
        RedisSentinel::url(self)
    }
}

/// A redis-server on a free port.
pub(crate) struct Redis {
    pub(crate) port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub(crate) fn start(env: &Env, args: &[&str]) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut redis = Self {
            port,
            dir: env.dir.clone(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        redis.spawn()?;
        Ok(redis)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new(
            std::env::var("STELLAR_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
        )
        .args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .arg("--logfile")
        .arg(self.dir.join("redis.log"))
        .args(&self.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (install it: apt-get install -y redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(5));
        }
        bail!("redis-server did not listen on port {}", self.port)
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis on `port` answers `PING` (it may still be loading its AOF otherwise).
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0_u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A `stellar` process (a node or a supervisor) writing to its own log file.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `stellar run --id NAME` on `backend`, with `extra` environment.
    pub(crate) fn start(
        env: &Env,
        backend: &dyn Backend,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        let mut node = Self::spawn(env, backend, name, &["run", "--id", name], extra)?;
        node.wait_for("node ready", Duration::from_secs(15))?;
        Ok(node)
    }

    pub(crate) fn spawn(
        env: &Env,
        backend: &dyn Backend,
        name: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<Self> {
        let log = env.dir.join(format!("{name}.log"));
        let file = File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(&env.bin);
        command
            .args(args)
            .env(OWNER_ENV, &env.dir)
            // Its own process group, as a shell runs a job: a scenario can signal the group.
            .process_group(0)
            .env("STELLAR_REDIS_URL", backend.url())
            .env("STELLAR_SERVER_TOKEN", TOKEN)
            .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
            .env("STELLAR_HEARTBEAT_TTL_MS", "1500")
            .env("STELLAR_SHUTDOWN_TIMEOUT_MS", "4000")
            // No HTTP unless a scenario asks (every node would want port 8080).
            .env("STELLAR_HTTP_ADDR", "")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            log,
            child: Some(child),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_for(&mut self, needle: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited ({status}) before printing {needle:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{} did not print {needle:?} within {within:?}; see {}",
            self.name,
            self.log.display()
        )
    }

    pub(crate) fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Waits for the process to exit; its exit code, or `None` if it died by a signal.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().context("process already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} still running after {within:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `stellar ARGS…` as a client of `backend`.
pub(crate) fn cli(env: &Env, backend: &dyn Backend, args: &[&str]) -> Result<Output> {
    Command::new(&env.bin)
        .args(args)
        .env(OWNER_ENV, &env.dir)
        .env("STELLAR_REDIS_URL", backend.url())
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .context("running the stellar CLI")
}

pub(crate) fn cli_json(env: &Env, backend: &dyn Backend, args: &[&str]) -> Result<Value> {
    let output = cli(env, backend, args)?;
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "`stellar {}` printed no JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Enqueues `stellar.log` tasks `<prefix>-<k>` (id and message alike), each working `ms`, in one
/// `stellar tasks enqueue --stdin` batch: all of them are waiting when this returns.
pub(crate) fn enqueue(
    env: &Env,
    backend: &dyn Backend,
    prefix: &str,
    range: std::ops::Range<usize>,
    ms: u64,
) -> Result<Vec<String>> {
    let ids: Vec<String> = range.map(|k| format!("{prefix}-{k}")).collect();
    enqueue_ids(env, backend, &ids, ms, &[])?;
    Ok(ids)
}

/// Enqueues one `stellar.log` task per id (id and message alike), each working `ms`, in one
/// `stellar tasks enqueue --stdin` batch, the CLI given `extra` environment. `Ok` means the CLI
/// exited 0: the batch is acknowledged.
pub(crate) fn enqueue_ids(
    env: &Env,
    backend: &dyn Backend,
    ids: &[String],
    ms: u64,
    extra: &[(&str, &str)],
) -> Result<()> {
    let lines: String = ids
        .iter()
        .map(|id| {
            let task = serde_json::json!({
                "name": "stellar.log",
                "args": {"message": id, "ms": ms},
                "id": id,
            });
            format!("{task}\n")
        })
        .collect();
    let mut child = Command::new(&env.bin)
        .args(["tasks", "enqueue", "--stdin"])
        .env(OWNER_ENV, &env.dir)
        .env("STELLAR_REDIS_URL", backend.url())
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .envs(extra.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the stellar CLI")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(lines.as_bytes())
        .context("writing the batch")?;
    let output = child.wait_with_output().context("waiting for the CLI")?;
    if !output.status.success() {
        bail!(
            "enqueue of {}.. failed: {}",
            ids.first().map_or("", String::as_str),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What the logs and the store say about a workload.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) enqueued: usize,
    pub(crate) completed: usize,
    pub(crate) lost: usize,
    pub(crate) duplicate_completions: u64,
    pub(crate) reexecutions: usize,
}

/// Waits until every id is completed (or `within` passes), then counts.
pub(crate) fn tally(
    env: &Env,
    backend: &dyn Backend,
    ids: &[String],
    within: Duration,
) -> Result<Tally> {
    let deadline = Instant::now() + within;
    loop {
        let stats = cli_json(env, backend, &["tasks", "stats", "--json"])?;
        let processed = stats["tasks"]["stellar.log"]["processed"]
            .as_u64()
            .unwrap_or(0);
        if processed as usize >= ids.len() || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let mut completed = 0;
    for id in ids {
        let record =
            cli_json(env, backend, &["tasks", "show", id, "--json"]).unwrap_or(Value::Null);
        if record["state"] == "completed" {
            completed += 1;
        }
    }
    let stats = cli_json(env, backend, &["tasks", "stats", "--json"])?;
    let processed = stats["tasks"]["stellar.log"]["processed"]
        .as_u64()
        .unwrap_or(0);
    let starts = starts(&env.dir)?;
    let reexecutions = ids
        .iter()
        .map(|id| starts.get(id).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    Ok(Tally {
        enqueued: ids.len(),
        completed,
        lost: ids.len() - completed,
        duplicate_completions: processed.saturating_sub(completed as u64),
        reexecutions,
    })
}

/// How many times each `stellar.log` message started, across every log of the scenario.
pub(crate) fn starts(dir: &Path) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("stellar.log task started"))
        {
            if let Some(message) = line
                .split("text=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                *counts.entry(message.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(counts)
}

/// Whether `pid` is a running process (not gone, not a zombie waiting to be reaped).
pub(crate) fn is_running(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`: comm may hold spaces and parentheses.
    text.rfind(')')
        .and_then(|end| text.get(end + 1..)?.split_whitespace().next())
        .is_some_and(|state| !matches!(state, "Z" | "X"))
}

/// The running processes a scenario started, directly or not (workers of its supervisors), found
/// by the owner mark in their environment.
fn owned_by(env: &Env) -> Vec<u32> {
    let mark = format!("{OWNER_ENV}={}", env.dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && is_running(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
        })
        .collect()
}

/// After a scenario (its guards dropped): the processes it left running after `grace`. They are
/// killed, so one scenario's leftovers never disturb the next, and reported.
pub(crate) fn leftovers(env: &Env, grace: Duration) -> Vec<u32> {
    let deadline = Instant::now() + grace;
    loop {
        let left = owned_by(env);
        if left.is_empty() {
            return left;
        }
        if Instant::now() > deadline {
            for pid in &left {
                if let Ok(pid) = i32::try_from(*pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            return left;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

//! `stellar run --cluster N`: a supervisor that runs N worker nodes as child processes, restarts
//! the ones that die under the same name, and obeys SIGINT/SIGTERM (stop all), SIGUSR2 (rolling
//! restart), SIGTTIN/SIGTTOU (add/remove one worker).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use stellar_bus::Membership;
use stellar_core::{Api, Config, NodeId};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::Instant,
};
use tracing::{error, info, warn};

use crate::{
    cli::{GlobalArgs, RunArgs},
    node,
};

/// A worker that exits this many times within [`CRASH_WINDOW`] is not restarted again.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long a rolling restart waits for a replacement to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the child watchers report.
#[derive(Debug)]
enum Event {
    Ready {
        generation: u64,
    },
    Exited {
        generation: u64,
        status: Option<ExitStatus>,
    },
}

#[derive(Debug)]
struct Worker {
    number: u32,
    name: String,
    pid: u32,
    generation: u64,
    /// Set once we asked it to stop: its exit is not a crash.
    stopping: bool,
}

struct Supervisor {
    prefix: String,
    exe: PathBuf,
    child_args: Vec<String>,
    child_env: Vec<(String, String)>,
    membership: Membership,
    workers: BTreeMap<u64, Worker>,
    next_generation: u64,
    events: mpsc::UnboundedSender<Event>,
    /// Exit times per worker number, for crash-loop detection.
    exits: BTreeMap<u32, VecDeque<Instant>>,
    /// Workers to start again, by number, at a time.
    restarts: BTreeMap<u32, Instant>,
    /// Old workers still to replace in a rolling restart, and the replacement being awaited.
    rolling: VecDeque<u64>,
    awaiting: Option<(u64, u64, Instant)>,
}

/// Runs the supervisor until SIGINT/SIGTERM.
pub(crate) async fn run(config: Config, global: &GlobalArgs, run: RunArgs) -> Result<()> {
    if config.redis_url.is_none() {
        bail!(
            "`stellar run --cluster` needs a shared backend: its workers are separate processes and \
             share state only through Redis; pass --redis URL or set STELLAR_REDIS_URL"
        );
    }
    config.check_shared_backend()?;
    let wanted = match run.cluster {
        Some(0) | None => std::thread::available_parallelism().map_or(1, usize::from),
        Some(n) => n,
    };
    let _pid_file = PidFile::acquire(&run.pid_file)?;
    let supervisor_id = NodeId::new(format!("stellar-supervisor-{}", NodeId::from_host()))?;
    let api = Api::new(Config {
        id: Some(supervisor_id),
        ..config.clone()
    });
    let backend = node::connect(&api).await?;
    let (events, mut received) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        prefix: run.worker_prefix.clone(),
        exe: std::env::current_exe().context("finding this program to start workers")?,
        child_args: child_args(global),
        child_env: child_env(&config),
        membership: Membership::new(backend.store, &api),
        workers: BTreeMap::new(),
        next_generation: 0,
        events,
        exits: BTreeMap::new(),
        restarts: BTreeMap::new(),
        rolling: VecDeque::new(),
        awaiting: None,
    };
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut ttin = signal(SignalKind::from_raw(nix::libc::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(nix::libc::SIGTTOU))?;
    info!(workers = wanted, prefix = %run.worker_prefix, pid = std::process::id(), "supervisor starting");
    for _ in 0..wanted {
        supervisor.spawn_new().await?;
    }
    let reason = loop {
        let next_restart = supervisor.restarts.values().min().copied();
        let ready_deadline = supervisor.awaiting.map(|(_, _, deadline)| deadline);
        tokio::select! {
            _ = interrupt.recv() => break "SIGINT",
            _ = terminate.recv() => break "SIGTERM",
            _ = usr2.recv() => supervisor.begin_rolling_restart().await?,
            _ = ttin.recv() => {
                info!("SIGTTIN: adding a worker");
                supervisor.spawn_new().await?;
            }
            _ = ttou.recv() => supervisor.remove_one(),
            Some(event) = received.recv() => supervisor.on_event(event).await?,
            () = sleep_until(next_restart) => supervisor.restart_due().await?,
            () = sleep_until(ready_deadline) => {
                warn!("a rolling-restart replacement was not ready in time; continuing with the next worker");
                supervisor.awaiting = None;
                supervisor.continue_rolling_restart().await?;
            }
        }
        if supervisor.workers.is_empty() && supervisor.restarts.is_empty() {
            bail!("every worker stopped restarting (crash loop); the supervisor gives up");
        }
    };
    info!(%reason, workers = supervisor.workers.len(), "supervisor stopping all workers");
    let clean = supervisor
        .stop_all(
            &mut received,
            config.shutdown_timeout + Duration::from_secs(5),
        )
        .await;
    let _ = api.shutdown().await;
    if !clean {
        bail!("some workers did not stop cleanly");
    }
    info!("supervisor stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The flags every worker gets: the same config file and log filter as the supervisor.
fn child_args(global: &GlobalArgs) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(config) = &global.config {
        args.extend(["--config".to_owned(), config.display().to_string()]);
    }
    if let Some(log) = &global.log {
        args.extend(["--log".to_owned(), log.clone()]);
    }
    args
}

/// The resolved settings workers must share, passed by environment (the token stays out of `ps`).
fn child_env(config: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "STELLAR_SERVER_TOKEN".to_owned(),
            config.server_token.expose().to_owned(),
        ),
        (
            "STELLAR_SHUTDOWN_TIMEOUT_MS".to_owned(),
            config.shutdown_timeout.as_millis().to_string(),
        ),
    ];
    if let Some(url) = &config.redis_url {
        env.push(("STELLAR_REDIS_URL".to_owned(), url.clone()));
    }
    env
}

impl Supervisor {
    /// The lowest `n` whose name no worker of ours, no pending restart and no live member uses.
    async fn free_number(&self) -> u32 {
        let live: BTreeSet<String> = self
            .membership
            .nodes()
            .await
            .map(|nodes| nodes.into_iter().map(|n| n.id.to_string()).collect())
            .unwrap_or_default();
        let ours: BTreeSet<u32> = self
            .workers
            .values()
            .map(|w| w.number)
            .chain(self.restarts.keys().copied())
            .collect();
        (1..)
            .find(|n| !ours.contains(n) && !live.contains(&format!("{}-{n}", self.prefix)))
            .expect("some number is free")
    }

    async fn spawn_new(&mut self) -> Result<u64> {
        let number = self.free_number().await;
        self.spawn(number)
    }

    fn spawn(&mut self, number: u32) -> Result<u64> {
        let name = format!("{}-{number}", self.prefix);
        let child = Command::new(&self.exe)
            .args(&self.child_args)
            .args(["run", "--id", &name])
            .envs(self.child_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        let pid = child.id().context("a just-spawned worker has a pid")?;
        self.next_generation += 1;
        let generation = self.next_generation;
        info!(worker = %name, pid, "worker started");
        watch(name.clone(), generation, child, self.events.clone());
        self.workers.insert(
            generation,
            Worker {
                number,
                name,
                pid,
                generation,
                stopping: false,
            },
        );
        Ok(generation)
    }

    async fn on_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Ready { generation } => {
                if let Some(worker) = self.workers.get(&generation) {
                    info!(worker = %worker.name, "worker ready");
                }
                if self.awaiting.is_some_and(|(new, _, _)| new == generation) {
                    let (_, old, _) = self.awaiting.take().expect("checked above");
                    self.stop(old);
                    self.continue_rolling_restart().await?;
                }
            }
            Event::Exited { generation, status } => {
                let Some(worker) = self.workers.remove(&generation) else {
                    return Ok(());
                };
                if worker.stopping {
                    info!(worker = %worker.name, ?status, "worker stopped");
                    return Ok(());
                }
                self.on_crash(worker, status);
            }
        }
        Ok(())
    }

    fn on_crash(&mut self, worker: Worker, status: Option<ExitStatus>) {
        let now = Instant::now();
        let exits = self.exits.entry(worker.number).or_default();
        exits.push_back(now);
        while exits
            .front()
            .is_some_and(|at| now.duration_since(*at) > CRASH_WINDOW)
        {
            exits.pop_front();
        }
        if exits.len() >= CRASH_LIMIT {
            error!(worker = %worker.name, exits = exits.len(), window_s = CRASH_WINDOW.as_secs(), "worker is crash-looping; not restarting it");
            return;
        }
        let delay = Duration::from_millis(100 * (1 << exits.len().min(6)));
        warn!(worker = %worker.name, ?status, restart_in_ms = delay.as_millis() as u64, "worker died; restarting it under the same name");
        self.restarts.insert(worker.number, now + delay);
    }

    async fn restart_due(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<u32> = self
            .restarts
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| *n)
            .collect();
        for number in due {
            self.restarts.remove(&number);
            self.spawn(number)?;
        }
        Ok(())
    }

    fn stop(&mut self, generation: u64) {
        if let Some(worker) = self.workers.get_mut(&generation) {
            worker.stopping = true;
            info!(worker = %worker.name, pid = worker.pid, "stopping worker");
            send(worker.pid, Signal::SIGTERM);
        }
    }

    fn remove_one(&mut self) {
        let newest = self
            .workers
            .values()
            .filter(|w| !w.stopping)
            .max_by_key(|w| w.number)
            .map(|w| w.generation);
        match newest {
            Some(generation) if self.workers.values().filter(|w| !w.stopping).count() > 1 => {
                info!("SIGTTOU: removing a worker");
                self.stop(generation);
            }
            _ => warn!("SIGTTOU ignored: the last worker stays"),
        }
    }

    async fn begin_rolling_restart(&mut self) -> Result<()> {
        if self.awaiting.is_some() || !self.rolling.is_empty() {
            warn!("SIGUSR2 ignored: a rolling restart is already running");
            return Ok(());
        }
        info!(workers = self.workers.len(), "SIGUSR2: rolling restart");
        self.rolling = self
            .workers
            .values()
            .filter(|w| !w.stopping)
            .map(|w| w.generation)
            .collect();
        self.continue_rolling_restart().await
    }

    /// Starts the replacement of the next old worker; the old one stops once it is ready.
    async fn continue_rolling_restart(&mut self) -> Result<()> {
        while let Some(old) = self.rolling.pop_front() {
            if !self.workers.contains_key(&old) {
                continue;
            }
            let new = self.spawn_new().await?;
            self.awaiting = Some((new, old, Instant::now() + READY_TIMEOUT));
            return Ok(());
        }
        info!("rolling restart done");
        Ok(())
    }

    /// SIGTERM to every worker, then wait; SIGKILL whoever is left at the deadline.
    async fn stop_all(
        &mut self,
        received: &mut mpsc::UnboundedReceiver<Event>,
        deadline: Duration,
    ) -> bool {
        self.restarts.clear();
        let generations: Vec<u64> = self.workers.keys().copied().collect();
        for generation in generations {
            self.stop(generation);
        }
        let mut clean = true;
        let until = Instant::now() + deadline;
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(until, received.recv()).await {
                Ok(Some(Event::Exited { generation, status })) => {
                    if let Some(worker) = self.workers.remove(&generation) {
                        let ok = status.is_some_and(|s| s.success());
                        clean &= ok;
                        info!(worker = %worker.name, ?status, "worker stopped");
                    }
                }
                Ok(Some(Event::Ready { .. })) => {}
                Ok(None) | Err(_) => {
                    for worker in self.workers.values() {
                        warn!(worker = %worker.name, "worker did not stop in time; killing it");
                        send(worker.pid, Signal::SIGKILL);
                    }
                    return false;
                }
            }
        }
        clean
    }
}

fn send(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // The process may have exited already; then there is nothing to signal.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Prefixes the child's output with its name, reports readiness, and reports its exit.
fn watch(name: String, generation: u64, mut child: Child, events: mpsc::UnboundedSender<Event>) {
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward(name.clone(), generation, stdout, events.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward(name.clone(), generation, stderr, events.clone()));
    }
    tokio::spawn(async move {
        let status = child.wait().await.ok();
        let _ = events.send(Event::Exited { generation, status });
    });
}

async fn forward(
    name: String,
    generation: u64,
    pipe: impl AsyncRead + Unpin,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("node ready") {
            let _ = events.send(Event::Ready { generation });
        }
        eprintln!("[{name}] {line}");
    }
}

/// The supervisor's pid file, removed when it stops.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn acquire(path: &Path) -> Result<Self> {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<u32>()
            && pid != std::process::id()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            bail!(
                "another supervisor (pid {pid}) runs with pid file {}; stop it first, or pass another --pid-file",
                path.display()
            );
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

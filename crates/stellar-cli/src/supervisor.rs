//! `stellar run --cluster N`: a supervisor that runs N worker nodes as child processes, restarts
//! the ones that die under the same name, and obeys SIGINT/SIGTERM/SIGHUP (stop all; a second one
//! forces the stop), SIGUSR2 (rolling restart), SIGTTIN/SIGTTOU (add/remove one worker).
//!
//! Each worker runs in its own process group, so a Ctrl-C in the terminal reaches only the
//! supervisor, which then asks each worker once. Workers report to the supervisor over its control
//! socket ([`crate::control`]): hello (name, pid, incarnation), then ready. Every way out of the
//! supervisor stops its workers, and a worker whose supervisor died stops by itself when the
//! socket closes.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use stellar_bus::Membership;
use stellar_core::{Config, NodeId};
use stellar_node::Client;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::Instant,
};
use tracing::{debug, error, info, warn};

use crate::{
    app::{EXIT_CONFIG, EXIT_FORCED, ExitWith},
    cli::{GlobalArgs, RunArgs},
    control::{self, ControlServer, Message, Report},
};

/// The first restart delay of a worker that died; it doubles with each quick death in a row.
const BASE_DELAY: Duration = Duration::from_millis(200);
/// The longest restart delay: a crash-looping worker is still tried this often.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A worker that ran this long before it died starts its backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// After this many quick deaths in a row a worker is reported as crash-looping (and still
/// restarted).
const CRASH_LOOP_AFTER: u32 = 5;
/// When no worker runs at all, the next restart waits at most this long, whatever its backoff.
const ALONE_DELAY: Duration = Duration::from_secs(1);
/// How long a rolling restart waits for a replacement to be ready before it stops it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A worker process ended.
#[derive(Debug)]
struct Exited {
    generation: u64,
    status: Option<ExitStatus>,
}

/// Where the supervisor hears from its workers: exits from the child watchers, reports from the
/// control socket.
struct Inbox {
    exits: mpsc::UnboundedReceiver<Exited>,
    reports: mpsc::UnboundedReceiver<Report>,
}

/// The signals the supervisor obeys.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// The terminal closed (or someone asks, as for SIGTERM): a graceful stop.
    hangup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    ttin: tokio::signal::unix::Signal,
    ttou: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
            ttin: signal(SignalKind::from_raw(nix::libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(nix::libc::SIGTTOU))?,
        })
    }
}

#[derive(Debug)]
struct Worker {
    number: u32,
    name: String,
    pid: u32,
    generation: u64,
    started: Instant,
    /// From the worker's hello; handed to its replacement in a rolling restart.
    incarnation: Option<u64>,
    /// Set once we asked it to stop: its exit is not a crash.
    stopping: bool,
    /// Stopped with SIGKILL before it said hello (it had nothing to drain, and its signal
    /// handlers may not be installed yet): its death is a clean stop.
    killed_unstarted: bool,
    /// When to SIGKILL its process group if it has not stopped by then.
    kill_at: Option<Instant>,
    /// Start a worker under the same name once this one has stopped (a rolling restart of a
    /// worker that had not said hello, so there was no incarnation to hand over).
    respawn_on_exit: bool,
}

/// A rolling-restart replacement being awaited.
#[derive(Debug, Clone, Copy)]
struct Replacement {
    new: u64,
    old: u64,
    deadline: Instant,
}

/// Why the supervision loop ended.
#[derive(Debug)]
enum Stop {
    Signal(&'static str),
    /// No worker runs and none is due to restart: each failed on its configuration (exit 78).
    NothingToRun,
}

/// How the workers stopped.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Clean,
    Unclean,
    Forced,
}

struct Supervisor {
    prefix: String,
    exe: PathBuf,
    child_args: Vec<String>,
    child_env: Vec<(String, String)>,
    membership: Membership,
    control: ControlServer,
    workers: BTreeMap<u64, Worker>,
    next_generation: u64,
    exits: mpsc::UnboundedSender<Exited>,
    /// Quick deaths in a row, per worker number: the backoff exponent.
    failures: BTreeMap<u32, u32>,
    /// Workers to start again, by number, at a time.
    restarts: BTreeMap<u32, Instant>,
    /// Worker numbers given up on because they exited 78 (configuration error), until started
    /// again (SIGTTIN).
    config_failed: BTreeSet<u32>,
    /// Old workers still to replace in a rolling restart, and the replacement being awaited.
    rolling: VecDeque<u64>,
    awaiting: Option<Replacement>,
    /// How long a stopped worker gets before its process group is killed.
    stop_timeout: Duration,
    /// The one HTTP listener of the cluster, handed to every worker as its stdin: all workers
    /// accept from the same socket, so a worker that stops loses no queued connection (with
    /// SO_REUSEPORT each would have its own queue, reset when it closes).
    listener: Option<std::net::TcpListener>,
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
    let client = Client::connect_as(supervisor_id, config.clone(), &[]).await?;
    let (exits, exits_received) = mpsc::unbounded_channel();
    let (reports, reports_received) = mpsc::unbounded_channel();
    let mut inbox = Inbox {
        exits: exits_received,
        reports: reports_received,
    };
    let mut signals = Signals::install()?;
    let mut supervisor = Supervisor {
        prefix: run.worker_prefix.clone(),
        exe: std::env::current_exe().context("finding this program to start workers")?,
        child_args: child_args(global),
        child_env: child_env(&config),
        membership: client.membership().clone(),
        control: ControlServer::start(reports)?,
        workers: BTreeMap::new(),
        next_generation: 0,
        exits,
        failures: BTreeMap::new(),
        restarts: BTreeMap::new(),
        config_failed: BTreeSet::new(),
        rolling: VecDeque::new(),
        awaiting: None,
        stop_timeout: config.shutdown_timeout + Duration::from_secs(5),
        listener: bind_listener(&config)?,
    };
    info!(workers = wanted, prefix = %run.worker_prefix, pid = std::process::id(), "supervisor starting");
    let result = supervisor.supervise(wanted, &mut signals, &mut inbox).await;
    log_stop(&result, supervisor.workers.len());
    // Every way out of the loop, an error included, stops the workers first.
    let outcome = supervisor.stop_all(&mut signals, &mut inbox).await;
    client.close().await;
    finish(result?, outcome)
}

/// The cluster's one HTTP listener, bound by the supervisor for every worker; `None` when the
/// configuration serves no HTTP.
fn bind_listener(config: &Config) -> Result<Option<std::net::TcpListener>> {
    let Some(addr) = config.http_addr else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the cluster's HTTP address {addr}"))?;
    info!(addr = %listener.local_addr()?, "the workers serve HTTP and WebSocket here");
    Ok(Some(listener))
}

fn log_stop(result: &Result<Stop>, workers: usize) {
    match result {
        Ok(Stop::Signal(signal)) => {
            info!(%signal, workers, "supervisor stopping all workers")
        }
        Ok(Stop::NothingToRun) => error!("no worker left to run; the supervisor stops"),
        Err(err) => {
            error!(error = %format!("{err:#}"), workers, "supervisor failed; stopping all workers")
        }
    }
}

/// The supervisor's own result, from why it stopped and how its workers did.
fn finish(stop: Stop, outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Forced => {
            return Err(ExitWith {
                code: EXIT_FORCED,
                message: "workers stopped by force on a second signal".to_owned(),
            }
            .into());
        }
        Outcome::Unclean => bail!("some workers did not stop cleanly"),
        Outcome::Clean => {}
    }
    if matches!(stop, Stop::NothingToRun) {
        return Err(ExitWith {
            code: EXIT_CONFIG,
            message: "every worker failed on its configuration (exit code 78); fix it and start \
                      the supervisor again"
                .to_owned(),
        }
        .into());
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
    // Every worker serves the one address (SO_REUSEPORT): the supervisor itself binds nothing.
    env.push((
        "STELLAR_HTTP_ADDR".to_owned(),
        config.http_addr.map(|a| a.to_string()).unwrap_or_default(),
    ));
    // Flags of `stellar run` that workers must share (from any source: a flag is not inherited).
    if let Some(secret) = &config.dashboard_secret {
        env.push((
            "STELLAR_DASHBOARD_SECRET".to_owned(),
            secret.expose().to_owned(),
        ));
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        env.push(("STELLAR_OTLP_ENDPOINT".to_owned(), endpoint.clone()));
    }
    env
}

/// The delay before restarting a worker after its `failures`-th quick death in a row: 200 ms
/// doubling, at most 30 s.
fn restart_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BASE_DELAY * 2_u32.pow(doublings)).min(MAX_DELAY)
}

/// An exit status as a person reads it: `exited with code 130`, `killed by SIGKILL`.
fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = status else {
        return "exit status unknown".to_owned();
    };
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(number) => {
            let name = Signal::try_from(number)
                .map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_owned());
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            format!("killed by {name}{core}")
        }
        None => format!("{status}"),
    }
}

impl Supervisor {
    /// Starts `wanted` workers, then obeys signals and reacts to workers until a stop signal.
    async fn supervise(
        &mut self,
        wanted: usize,
        signals: &mut Signals,
        inbox: &mut Inbox,
    ) -> Result<Stop> {
        for _ in 0..wanted {
            self.spawn_new().await;
        }
        loop {
            let next_restart = self.restarts.values().min().copied();
            let ready_deadline = self.awaiting.map(|r| r.deadline);
            let next_kill = self.workers.values().filter_map(|w| w.kill_at).min();
            tokio::select! {
                _ = signals.interrupt.recv() => return Ok(Stop::Signal("SIGINT")),
                _ = signals.terminate.recv() => return Ok(Stop::Signal("SIGTERM")),
                _ = signals.hangup.recv() => return Ok(Stop::Signal("SIGHUP")),
                _ = signals.usr2.recv() => self.begin_rolling_restart(),
                _ = signals.ttin.recv() => {
                    info!("SIGTTIN: adding a worker");
                    self.spawn_new().await;
                }
                _ = signals.ttou.recv() => self.remove_one(),
                Some(report) = inbox.reports.recv() => self.on_report(report),
                Some(exited) = inbox.exits.recv() => self.on_exit(exited),
                () = sleep_until(next_restart) => self.restart_due(),
                () = sleep_until(ready_deadline) => self.replacement_timed_out(),
                () = sleep_until(next_kill) => self.kill_overdue(),
            }
            if self.workers.is_empty() && self.restarts.is_empty() {
                if !self.config_failed.is_empty() {
                    return Ok(Stop::NothingToRun);
                }
                // Not reached by any path we know of; if it is, keep a worker running rather
                // than exit claiming a configuration error.
                error!("no worker runs and none is due to start; starting one");
                self.restarts.insert(1, Instant::now() + ALONE_DELAY);
            }
        }
    }

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

    /// Starts a worker under the lowest free number; if it cannot be started, its restart is
    /// scheduled as after a crash.
    async fn spawn_new(&mut self) {
        let number = self.free_number().await;
        self.config_failed.remove(&number);
        self.start(number);
    }

    /// Starts worker `number`; a spawn error (fork's EAGAIN, a missing program) counts as a
    /// crash of that slot: it is retried with backoff, and the rest of the cluster runs on.
    fn start(&mut self, number: u32) {
        if let Err(err) = self.spawn(number, None) {
            let name = format!("{}-{number}", self.prefix);
            error!(worker = %name, error = %format!("{err:#}"), "could not start worker");
            self.on_crash(number, &name, Instant::now(), "could not be started");
        }
    }

    /// The command that starts worker `name` (number `number`), in its own process group.
    fn worker_command(&self, name: &str, number: u32, replaces: Option<u64>) -> Result<Command> {
        let mut command = Command::new(&self.exe);
        command
            .args(&self.child_args)
            .args(["run", "--id", name])
            .envs(self.child_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(control::SOCKET_ENV, self.control.path())
            .env_remove(control::REPLACES_ENV)
            .env_remove(control::RESTARTS_ENV)
            // Its own group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches only
            // the supervisor, which then asks each worker once.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        if let Some(listener) = &self.listener {
            let shared = listener.try_clone().context("sharing the HTTP listener")?;
            command
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(shared)))
                .env(control::LISTENER_ENV, "stdin");
        } else {
            command.env_remove(control::LISTENER_ENV);
        }
        if let Some(incarnation) = replaces {
            command.env(control::REPLACES_ENV, incarnation.to_string());
        }
        if let Some(failures) = self.failures.get(&number).filter(|f| **f > 0) {
            command.env(control::RESTARTS_ENV, failures.to_string());
        }
        Ok(command)
    }

    /// Starts worker `number`, in its own process group; `replaces` is the incarnation of the
    /// running worker of the same name it takes over from.
    fn spawn(&mut self, number: u32, replaces: Option<u64>) -> Result<u64> {
        let name = format!("{}-{number}", self.prefix);
        let mut command = self.worker_command(&name, number, replaces)?;
        let child = command
            .spawn()
            .with_context(|| format!("starting worker {name}"))?;
        let pid = child.id().context("a just-spawned worker has a pid")?;
        self.next_generation += 1;
        let generation = self.next_generation;
        info!(worker = %name, pid, replaces = ?replaces, "worker started");
        watch(name.clone(), generation, child, self.exits.clone());
        self.workers.insert(
            generation,
            Worker {
                number,
                name,
                pid,
                generation,
                started: Instant::now(),
                incarnation: None,
                stopping: false,
                killed_unstarted: false,
                kill_at: None,
                respawn_on_exit: false,
            },
        );
        Ok(generation)
    }

    fn on_report(&mut self, report: Report) {
        let Some(worker) = self.workers.values_mut().find(|w| w.pid == report.pid) else {
            warn!(
                pid = report.pid,
                "control socket: a report from a process that is not one of our workers; ignored"
            );
            return;
        };
        match report.message {
            Message::Hello {
                name,
                pid,
                incarnation,
            } => {
                if name != worker.name || pid != report.pid {
                    warn!(worker = %worker.name, pid = worker.pid, said_name = %name, said_pid = pid, "control socket: a hello that does not match the worker; using the kernel's pid");
                }
                debug!(worker = %worker.name, pid = worker.pid, incarnation, "worker said hello");
                worker.incarnation = Some(incarnation);
            }
            Message::Ready => {
                info!(worker = %worker.name, pid = worker.pid, "worker ready");
                let generation = worker.generation;
                if let Some(replacement) = self.awaiting.filter(|r| r.new == generation) {
                    self.awaiting = None;
                    self.stop(replacement.old);
                    self.continue_rolling_restart();
                }
            }
        }
    }

    /// Whether a worker we have not asked to stop runs as number `number`.
    fn holds(&self, number: u32) -> bool {
        self.workers
            .values()
            .any(|w| w.number == number && !w.stopping)
    }

    fn on_exit(&mut self, exited: Exited) {
        let Some(worker) = self.workers.remove(&exited.generation) else {
            return;
        };
        let status = describe(exited.status);
        if worker.respawn_on_exit {
            info!(worker = %worker.name, %status, "worker stopped; starting it again");
            self.restarts.insert(worker.number, Instant::now());
            return;
        }
        if worker.stopping {
            info!(worker = %worker.name, %status, "worker stopped");
            return;
        }
        let replacement = self.awaiting.is_some_and(|r| r.new == worker.generation);
        if replacement {
            self.awaiting = None;
        }
        if self.holds(worker.number) {
            if replacement {
                warn!(worker = %worker.name, %status, "the rolling-restart replacement died before it was ready; keeping the old worker");
            } else {
                // Its replacement (or the worker it was replacing) runs under the name.
                warn!(worker = %worker.name, %status, "worker died; another process already runs under its name");
            }
        } else if exited
            .status
            .and_then(|s| s.code())
            .is_some_and(|code| code == i32::from(EXIT_CONFIG))
        {
            error!(worker = %worker.name, %status, "worker failed on its configuration (exit code 78, EX_CONFIG); not restarting it: fix the configuration, then SIGTTIN adds a worker");
            self.config_failed.insert(worker.number);
        } else {
            if replacement {
                warn!(worker = %worker.name, %status, "the rolling-restart replacement died before it was ready, and the worker it replaced is gone too");
            }
            self.on_crash(worker.number, &worker.name, worker.started, &status);
        }
        if replacement {
            self.continue_rolling_restart();
        }
    }

    /// Schedules the restart of worker `number` (`name`, started at `started`) that died or
    /// could not be started, with capped exponential backoff; never gives up on it, and never
    /// leaves the cluster without a worker for long.
    fn on_crash(&mut self, number: u32, name: &str, started: Instant, status: &str) {
        let now = Instant::now();
        let failures = self.failures.entry(number).or_default();
        if now.duration_since(started) >= STABLE_AFTER {
            *failures = 0;
        }
        *failures += 1;
        let failures = *failures;
        let mut at = now + restart_delay(failures);
        if !self.workers.values().any(|w| !w.stopping) {
            at = at.min(now + ALONE_DELAY);
        }
        let restart_in_ms = at.duration_since(now).as_millis() as u64;
        if failures >= CRASH_LOOP_AFTER {
            error!(worker = %name, exits = failures, %status, restart_in_ms, "worker is crash-looping: it died {failures} times in a row soon after starting; restarting it with backoff");
        } else {
            warn!(worker = %name, %status, restart_in_ms, "worker died; restarting it under the same name");
        }
        self.restarts.insert(number, at);
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .restarts
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| *n)
            .collect();
        for number in due {
            self.restarts.remove(&number);
            if self.holds(number) {
                continue;
            }
            self.start(number);
        }
    }

    /// SIGTERM to one worker, once; its process group is killed if it is still there after
    /// `stop_timeout`. A worker that has not said hello yet has nothing to drain and may not
    /// handle SIGTERM yet (it would die of it): its process group is killed at once.
    fn stop(&mut self, generation: u64) {
        if let Some(worker) = self.workers.get_mut(&generation)
            && !worker.stopping
        {
            worker.stopping = true;
            if worker.incarnation.is_none() {
                info!(worker = %worker.name, pid = worker.pid, "stopping worker (still starting: killing it)");
                worker.killed_unstarted = true;
                kill_group(worker.pid);
                return;
            }
            worker.kill_at = Some(Instant::now() + self.stop_timeout);
            info!(worker = %worker.name, pid = worker.pid, "stopping worker");
            send(worker.pid, Signal::SIGTERM);
        }
    }

    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for worker in self.workers.values_mut() {
            if worker.kill_at.is_some_and(|at| at <= now) {
                warn!(worker = %worker.name, pid = worker.pid, "worker did not stop in time; killing it");
                kill_group(worker.pid);
                worker.kill_at = None;
            }
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

    fn begin_rolling_restart(&mut self) {
        if self.awaiting.is_some() || !self.rolling.is_empty() {
            warn!("SIGUSR2 ignored: a rolling restart is already running");
            return;
        }
        info!(workers = self.workers.len(), "SIGUSR2: rolling restart");
        self.rolling = self
            .workers
            .values()
            .filter(|w| !w.stopping)
            .map(|w| w.generation)
            .collect();
        self.continue_rolling_restart()
    }

    /// Starts the replacement of the next old worker under the same name, handing it the old
    /// one's incarnation; the old one stops once the replacement is ready.
    fn continue_rolling_restart(&mut self) {
        while let Some(old) = self.rolling.pop_front() {
            let Some(worker) = self.workers.get_mut(&old).filter(|w| !w.stopping) else {
                continue;
            };
            let Some(incarnation) = worker.incarnation else {
                // Not started far enough to say hello: nothing to hand over, and nothing ready to
                // keep. Stop it and start it again.
                warn!(worker = %worker.name, "rolling restart: worker not started yet; restarting it in place");
                worker.respawn_on_exit = true;
                self.stop(old);
                continue;
            };
            let (number, name) = (worker.number, worker.name.clone());
            match self.spawn(number, Some(incarnation)) {
                Ok(new) => {
                    self.awaiting = Some(Replacement {
                        new,
                        old,
                        deadline: Instant::now() + READY_TIMEOUT,
                    });
                    return;
                }
                Err(err) => {
                    error!(worker = %name, error = %format!("{err:#}"), "rolling restart: could not start the replacement; keeping the old worker");
                }
            }
        }
        info!("rolling restart done");
    }

    /// A replacement that did not become ready in time is stopped; the old worker stays. If
    /// the old worker is gone meanwhile (it died while the replacement started), the number is
    /// started afresh once the replacement has stopped.
    fn replacement_timed_out(&mut self) {
        let Some(replacement) = self.awaiting.take() else {
            return;
        };
        self.stop(replacement.new);
        if let Some(worker) = self.workers.get(&replacement.new) {
            let number = worker.number;
            if self.holds(number) {
                error!(worker = %worker.name, pid = worker.pid, timeout_s = READY_TIMEOUT.as_secs(), "rolling-restart replacement not ready in time; stopping it and keeping the old worker");
            } else {
                error!(worker = %worker.name, pid = worker.pid, timeout_s = READY_TIMEOUT.as_secs(), "rolling-restart replacement not ready in time and the worker it replaced is gone; stopping it and starting the worker again");
                if let Some(worker) = self.workers.get_mut(&replacement.new) {
                    worker.respawn_on_exit = true;
                }
            }
        }
        self.continue_rolling_restart();
    }

    /// SIGTERM to every worker, once, then wait. A second SIGINT/SIGTERM forces them out
    /// (SIGQUIT), a third kills them; at the deadline the stragglers' groups are killed.
    async fn stop_all(&mut self, signals: &mut Signals, inbox: &mut Inbox) -> Outcome {
        self.restarts.clear();
        self.rolling.clear();
        self.awaiting = None;
        let generations: Vec<u64> = self.workers.keys().copied().collect();
        for generation in generations {
            if let Some(worker) = self.workers.get_mut(&generation) {
                worker.respawn_on_exit = false;
            }
            self.stop(generation);
        }
        let mut clean = true;
        let mut insisted = 0;
        let deadline = Instant::now() + self.stop_timeout;
        while !self.workers.is_empty() {
            tokio::select! {
                Some(exited) = inbox.exits.recv() => {
                    if let Some(worker) = self.workers.remove(&exited.generation) {
                        clean &= worker.killed_unstarted || exited.status.is_some_and(|s| s.success());
                        info!(worker = %worker.name, status = %describe(exited.status), "worker stopped");
                    }
                }
                Some(_) = inbox.reports.recv() => {}
                _ = signals.interrupt.recv() => self.insist(&mut insisted, "SIGINT"),
                _ = signals.terminate.recv() => self.insist(&mut insisted, "SIGTERM"),
                _ = signals.hangup.recv() => self.insist(&mut insisted, "SIGHUP"),
                () = tokio::time::sleep_until(deadline) => {
                    for worker in self.workers.values() {
                        warn!(worker = %worker.name, pid = worker.pid, "worker did not stop in time; killing it");
                        kill_group(worker.pid);
                    }
                    self.workers.clear();
                    return Outcome::Unclean;
                }
            }
        }
        match (insisted, clean) {
            (0, true) => Outcome::Clean,
            (0, false) => Outcome::Unclean,
            _ => Outcome::Forced,
        }
    }

    /// Another stop signal while stopping: the person insists. The first time every worker gets
    /// SIGQUIT (exit now), after that their groups are killed.
    fn insist(&mut self, insisted: &mut u32, signal: &str) {
        *insisted += 1;
        if *insisted == 1 {
            warn!(%signal, "stop signal again: forcing every worker out now (SIGQUIT)");
            for worker in self.workers.values() {
                // SIGQUIT is handled only once a worker said hello; before, it would dump core.
                if worker.incarnation.is_some() {
                    send(worker.pid, Signal::SIGQUIT);
                } else {
                    kill_group(worker.pid);
                }
            }
        } else {
            warn!(%signal, "stop signal again: killing every worker");
            for worker in self.workers.values() {
                kill_group(worker.pid);
            }
        }
    }
}

impl Drop for Supervisor {
    /// The last guard: workers still recorded here (a panic on the way out) are killed with their
    /// groups. Normal exits have stopped and reaped them already.
    fn drop(&mut self) {
        for worker in self.workers.values() {
            kill_group(worker.pid);
        }
    }
}

fn send(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // The process may have exited already; then there is nothing to signal.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// SIGKILL to a worker's process group (each worker leads its own), so its children go too.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Prefixes the child's output with its name, and reports its exit.
fn watch(name: String, generation: u64, mut child: Child, events: mpsc::UnboundedSender<Exited>) {
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward(name.clone(), stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward(name, stderr));
    }
    tokio::spawn(async move {
        let status = child.wait().await.ok();
        let _ = events.send(Exited { generation, status });
    });
}

async fn forward(name: String, pipe: impl AsyncRead + Unpin) {
    use std::io::Write;
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Not `eprintln!`: after a hang-up the terminal refuses writes, and the worker's pipe must
        // still be drained, or the worker blocks on its next log line.
        let _ = writeln!(std::io::stderr(), "[{name}] {line}");
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exit_statuses_read_as_codes_and_signals() {
        assert_eq!(
            describe(Some(ExitStatus::from_raw(33280))),
            "exited with code 130"
        );
        assert_eq!(
            describe(Some(ExitStatus::from_raw(0))),
            "exited with code 0"
        );
        assert_eq!(describe(Some(ExitStatus::from_raw(9))), "killed by SIGKILL");
        assert_eq!(
            describe(Some(ExitStatus::from_raw(3 | 0x80))),
            "killed by SIGQUIT (core dumped)"
        );
        assert_eq!(describe(None), "exit status unknown");
    }

    #[test]
    fn workers_get_the_run_flags_they_must_share() {
        let config = Config {
            dashboard_secret: Some(stellar_core::DashboardSecret::new("0123456789abcdef")),
            otlp_endpoint: Some("http://127.0.0.1:4318/v1/traces".to_owned()),
            ..Config::default()
        };
        let env = child_env(&config);
        let value = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(value("STELLAR_DASHBOARD_SECRET"), Some("0123456789abcdef"));
        assert_eq!(
            value("STELLAR_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(value("STELLAR_HTTP_ADDR"), Some(""));
        let unset = child_env(&Config::default());
        assert!(
            unset
                .iter()
                .all(|(key, _)| key != "STELLAR_DASHBOARD_SECRET" && key != "STELLAR_OTLP_ENDPOINT")
        );
    }

    #[test]
    fn restart_delays_double_up_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=10)
            .map(|failures| restart_delay(failures).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [
                200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000
            ]
        );
        assert_eq!(restart_delay(u32::MAX), MAX_DELAY);
    }
}

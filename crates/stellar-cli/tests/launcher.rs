//! `stellar run --cluster N`: a real supervisor with real worker processes and real signals.

mod support;

use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt,
    time::{Duration, Instant},
};

use stellar_testkit::{Process, RedisServer};
use support::{children, is_running, stellar};

const TOKEN: &str = "launcher-token";

struct Launched {
    redis: RedisServer,
    supervisor: Process,
    _dir: tempfile::TempDir,
    pid_file: String,
}

fn launch(workers: &str) -> Launched {
    launch_with(workers, &[], &[])
}

/// A supervisor in its own process group (as a shell runs a foreground job), with `env` and
/// `flags` added.
fn launch_with(workers: &str, env: &[(&str, &str)], flags: &[&str]) -> Launched {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let pid_file = dir.path().join("stellar.pid").display().to_string();
    let url = redis.url();
    let mut args = flags.to_vec();
    args.extend([
        "run",
        "--cluster",
        workers,
        "--redis",
        &url,
        "--pid-file",
        &pid_file,
    ]);
    let mut command = stellar(&args);
    command
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000")
        .envs(env.iter().copied())
        .process_group(0);
    let supervisor = Process::spawn("supervisor", command);
    Launched {
        redis,
        supervisor,
        _dir: dir,
        pid_file,
    }
}

impl Launched {
    /// Live workers: name -> pid, from `api.status` on every node.
    fn workers(&self) -> BTreeMap<String, u64> {
        let output = stellar(&[
            "cluster",
            "--redis",
            &self.redis.url(),
            "do",
            "api.status",
            "--json",
            "--timeout",
            "2000",
        ])
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .output()
        .expect("cluster do");
        let replies: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        replies
            .as_array()
            .map(|replies| {
                replies
                    .iter()
                    .filter_map(|r| {
                        Some((r["node"].as_str()?.to_owned(), r["ok"]["pid"].as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let workers = self.workers();
            if check(&workers) {
                return workers;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: workers are {workers:?}\n{}",
                self.supervisor.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Launched {
    /// `stellar ARGS…` as a client of this cluster.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        stellar(args)
            .env("STELLAR_REDIS_URL", self.redis.url())
            .env("STELLAR_SERVER_TOKEN", TOKEN)
            .output()
            .expect("stellar client")
    }

    fn task_stats(&self) -> serde_json::Value {
        let output = self.cli(&["tasks", "stats", "--json"]);
        serde_json::from_slice(&output.stdout).expect("tasks stats as JSON")
    }

    /// Enqueues `n` tasks of `ms` each and waits until the workers run at least `busy` of them.
    fn keep_busy(&self, n: usize, ms: u64, busy: u64) {
        for _ in 0..n {
            let args = format!(r#"{{"ms":{ms}}}"#);
            let output = self.cli(&["tasks", "enqueue", "stellar.sleep", &args]);
            assert!(output.status.success(), "{output:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.task_stats()["in_flight"].as_u64().unwrap_or(0) < busy {
            assert!(Instant::now() < deadline, "the workers took no tasks");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The supervisor's worker processes, checked against the cluster's view.
    fn worker_pids(&self, n: usize) -> Vec<u32> {
        let pids = children(self.supervisor.pid());
        assert_eq!(pids.len(), n, "worker processes: {pids:?}");
        pids
    }

    /// After a stop: every worker exited 0 having drained (no task left running, none failed),
    /// and no worker process is left.
    fn assert_drained(&self, workers: &[u32]) {
        let output = self.supervisor.output();
        let clean = output
            .lines()
            .filter(|l| l.contains("worker stopped") && l.contains("exited with code 0"))
            .count();
        assert_eq!(clean, workers.len(), "not every worker exited 0:\n{output}");
        assert!(
            !output.contains("exiting now"),
            "a worker was forced out:\n{output}"
        );
        let stats = self.task_stats();
        assert_eq!(stats["in_flight"], 0, "tasks left running: {stats}");
        assert_eq!(stats["failed"], 0, "tasks failed: {stats}");
        assert_gone(workers, Duration::from_secs(1));
    }
}

impl Launched {
    /// Waits until every worker of `before` was replaced, checking all along that the names stay
    /// `before`'s (no drift to higher numbers) and that capacity holds.
    fn wait_rolled(&self, before: &BTreeMap<String, u64>) {
        let expected = names(before);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let now = self.workers();
            let live = names(&now);
            // Capacity: the supervisor stops an old worker only once its replacement is ready,
            // so there are never fewer worker processes than workers.
            let processes = children(self.supervisor.pid()).len();
            assert!(
                processes >= expected.len(),
                "only {processes} worker processes during the rolling restart\n{}",
                self.supervisor.output()
            );
            // Names: exactly `expected` all along. A replacement takes over its predecessor's
            // record (STELLAR_REPLACES_INCARNATION) and the predecessor's leave, which compares
            // incarnations, leaves it in place: no name is ever missing or added.
            assert_eq!(
                live,
                expected,
                "names drifted or went missing during the rolling restart: {now:?}\n{}",
                self.supervisor.output()
            );
            if live == expected
                && now
                    .values()
                    .all(|pid| !before.values().any(|old| old == pid))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rolling restart did not finish: {now:?}\n{}",
                self.supervisor.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `kill -SIGNAL -- TARGETS…` (a negative target is a process group).
fn kill(signal: &str, targets: &[String]) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .args(targets)
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill -{signal} -- {targets:?}");
}

/// Panics unless every process of `pids` is gone within `within`.
fn assert_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| is_running(*p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes still running after {within:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(workers: &BTreeMap<String, u64>) -> Vec<&str> {
    workers.keys().map(String::as_str).collect()
}

#[test]
fn a_supervised_cluster_restarts_scales_rolls_and_stops() {
    let mut launched = launch("3");
    let start = launched.wait_for("three workers", |w| w.len() == 3);
    assert_eq!(
        names(&start),
        ["stellar-worker-1", "stellar-worker-2", "stellar-worker-3"]
    );
    launched.supervisor.wait_for_line(
        &["[stellar-worker-2]", "node ready"],
        Duration::from_secs(5),
    );

    // SIGKILL one worker: it comes back under the same name, as a new process.
    let killed = start["stellar-worker-2"];
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &killed.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let back = launched.wait_for("worker 2 back", |w| {
        w.get("stellar-worker-2").is_some_and(|pid| *pid != killed) && w.len() == 3
    });
    assert_eq!(names(&back), names(&start));

    // SIGTTIN adds one, SIGTTOU removes one.
    launched.supervisor.signal("TTIN");
    launched.wait_for("a fourth worker", |w| w.contains_key("stellar-worker-4"));
    launched.supervisor.signal("TTOU");
    launched.wait_for("back to three", |w| {
        w.len() == 3 && !w.contains_key("stellar-worker-4")
    });

    // SIGUSR2: every worker replaced under its own name, capacity kept while it rolls.
    let before = launched.workers();
    launched.supervisor.signal("USR2");
    launched.wait_rolled(&before);
    launched
        .supervisor
        .wait_for_line(&["rolling restart done"], Duration::from_secs(10));

    launched.supervisor.signal("TERM");
    let status = launched.supervisor.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", launched.supervisor.output());
    assert!(
        !std::path::Path::new(&launched.pid_file).exists(),
        "the pid file was left behind"
    );
    assert_eq!(
        launched.workers().len(),
        0,
        "workers outlived the supervisor"
    );
}

#[test]
fn a_second_supervisor_on_the_same_pid_file_refuses_to_start() {
    let launched = launch("1");
    launched.wait_for("one worker", |w| w.len() == 1);
    let second = stellar(&[
        "run",
        "--cluster",
        "1",
        "--redis",
        &launched.redis.url(),
        "--pid-file",
        &launched.pid_file,
    ])
    .env("STELLAR_SERVER_TOKEN", TOKEN)
    .output()
    .expect("second supervisor");
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another supervisor"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[test]
fn the_launcher_needs_a_shared_backend() {
    let output = stellar(&["run", "--cluster", "2"]).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shared backend") && stderr.contains("--redis"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_to_the_process_group_drains_every_worker_and_the_supervisor_exits_0() {
    let mut launched = launch_with("3", &[("STELLAR_SHUTDOWN_TIMEOUT_MS", "6000")], &[]);
    launched.wait_for("three workers", |w| w.len() == 3);
    let workers = launched.worker_pids(3);
    launched.keep_busy(6, 1500, 3);
    // What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
    kill("INT", &[format!("-{}", launched.supervisor.pid())]);
    let status = launched.supervisor.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", launched.supervisor.output());
    launched.assert_drained(&workers);
}

#[test]
fn sigterm_to_every_process_at_once_drains_every_worker_and_the_supervisor_exits_0() {
    let mut launched = launch_with("3", &[("STELLAR_SHUTDOWN_TIMEOUT_MS", "6000")], &[]);
    launched.wait_for("three workers", |w| w.len() == 3);
    let workers = launched.worker_pids(3);
    launched.keep_busy(6, 1500, 3);
    // What systemd's KillMode=control-group does: SIGTERM to every process of the unit at once.
    let mut targets = vec![launched.supervisor.pid().to_string()];
    targets.extend(workers.iter().map(u32::to_string));
    kill("TERM", &targets);
    let status = launched.supervisor.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", launched.supervisor.output());
    launched.assert_drained(&workers);
}

#[test]
fn a_second_ctrl_c_forces_the_workers_out() {
    let mut launched = launch_with("2", &[("STELLAR_SHUTDOWN_TIMEOUT_MS", "20000")], &[]);
    launched.wait_for("two workers", |w| w.len() == 2);
    let workers = launched.worker_pids(2);
    launched.keep_busy(4, 15_000, 2);
    let group = format!("-{}", launched.supervisor.pid());
    kill("INT", std::slice::from_ref(&group));
    launched
        .supervisor
        .wait_for_line(&["stopping worker"], Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    kill("INT", &[group]);
    let status = launched.supervisor.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", launched.supervisor.output());
    assert_gone(&workers, Duration::from_secs(1));
}

#[test]
fn workers_stop_by_themselves_when_the_supervisor_is_killed() {
    let mut launched = launch("3");
    launched.wait_for("three workers", |w| w.len() == 3);
    let workers = launched.worker_pids(3);
    launched.supervisor.signal("KILL");
    launched.supervisor.wait_exit(Duration::from_secs(5));
    assert_gone(&workers, Duration::from_secs(5));
    // They left the cluster on their way out rather than expiring.
    assert_eq!(launched.workers().len(), 0, "workers still registered");
}

#[test]
fn a_crash_looping_worker_keeps_being_restarted_with_backoff() {
    let mut launched = launch("2");
    launched.wait_for("two workers", |w| w.len() == 2);
    let mut pid = 0;
    for _ in 0..5 {
        let workers = launched.wait_for("worker 1 up", |w| {
            w.get("stellar-worker-1").is_some_and(|new| *new != pid)
        });
        pid = workers["stellar-worker-1"];
        kill("KILL", &[pid.to_string()]);
    }
    // The fifth quick death in a row is reported loudly, and the backoff has grown to 3.2 s.
    let line = launched.supervisor.wait_for_line(
        &["crash-looping", "stellar-worker-1"],
        Duration::from_secs(10),
    );
    assert!(
        line.contains("exits=5")
            && line.contains("killed by SIGKILL")
            && line.contains("restart_in_ms=3200"),
        "{line}"
    );
    let back = launched.wait_for("worker 1 restarted after its backoff", |w| {
        w.get("stellar-worker-1").is_some_and(|new| *new != pid) && w.len() == 2
    });
    assert_eq!(names(&back), ["stellar-worker-1", "stellar-worker-2"]);
    // The restarted worker says how often its slot was restarted.
    let status = launched.cli(&[
        "cluster",
        "do",
        "api.status",
        "--node",
        "stellar-worker-1",
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        status[0]["ok"]["gauges"]["supervisor_restarts"], 5,
        "{status}"
    );
    assert!(launched.supervisor.is_running());
}

#[test]
fn a_worker_failing_on_its_configuration_is_not_restarted() {
    let config_dir = tempfile::tempdir().expect("dir");
    let config = config_dir.path().join("stellar.toml");
    std::fs::write(&config, "task_concurrency = 4\n").expect("write config");
    let config_flag = config.display().to_string();
    let mut launched = launch_with("2", &[], &["--config", &config_flag]);
    let start = launched.wait_for("two workers", |w| w.len() == 2);
    // Someone breaks the file, then a worker dies: its restart cannot read the configuration.
    std::fs::write(&config, "no_such_key = 1\n").expect("write config");
    kill("KILL", &[start["stellar-worker-1"].to_string()]);
    launched.supervisor.wait_for_line(
        &[
            "stellar-worker-1",
            "exited with code 78",
            "not restarting it",
        ],
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(names(&launched.workers()), ["stellar-worker-2"]);
    assert_eq!(
        launched
            .supervisor
            .output()
            .matches("worker started worker=stellar-worker-1")
            .count(),
        2,
        "worker 1 was restarted again:\n{}",
        launched.supervisor.output()
    );
    assert!(launched.supervisor.is_running());
}

#[test]
fn a_rolling_restart_at_log_level_warn_keeps_names_and_capacity() {
    let mut launched = launch_with("3", &[("STELLAR_LOG", "warn")], &[]);
    let before = launched.wait_for("three workers", |w| w.len() == 3);
    let expected = ["stellar-worker-1", "stellar-worker-2", "stellar-worker-3"];
    assert_eq!(names(&before), expected);
    launched.supervisor.signal("USR2");
    launched.wait_rolled(&before);
    // Every old worker is gone and none was kept beside its replacement.
    let old: Vec<u32> = before.values().map(|pid| *pid as u32).collect();
    assert_gone(&old, Duration::from_secs(15));
    launched.worker_pids(3);
    launched.supervisor.signal("TERM");
    let status = launched.supervisor.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", launched.supervisor.output());
}

/// Sends `signal` to `pid` directly (no `kill(1)` to start: these race a starting process).
fn signal_pid(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Whether `pid` runs a worker's command line (`run --id …`): it has exec'd. Stopped before
/// that, it would hold up the supervisor's spawn, which waits for the exec.
fn execed_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"--id"))
}

/// Waits for a child of the supervisor that is not in `known` and stops it (SIGSTOP) as soon
/// as it has exec'd: long before it can say hello or be ready.
fn catch_new_worker(launched: &Launched, known: &[u32]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = children(launched.supervisor.pid())
            .into_iter()
            .find(|pid| !known.contains(pid) && execed_worker(*pid))
        {
            signal_pid(pid, nix::sys::signal::Signal::SIGSTOP);
            return pid;
        }
        assert!(Instant::now() < deadline, "no new worker was started");
        std::thread::sleep(Duration::from_micros(100));
    }
}

impl Launched {
    /// The cluster's members as `cluster status --json` lists them: name -> (pid, incarnation).
    fn members(&self) -> BTreeMap<String, (u64, u64)> {
        let output = self.cli(&["cluster", "status", "--json"]);
        let nodes: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        nodes
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| {
                        Some((
                            n["id"].as_str()?.to_owned(),
                            (n["pid"].as_u64()?, n["incarnation"].as_u64()?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn a_handover_whose_replacement_dies_leaves_the_old_worker_listed_and_serving() {
    let mut launched = launch("1");
    launched.wait_for("one worker", |w| w.len() == 1);
    let (old_pid, old_incarnation) = launched.members()["stellar-worker-1"];
    // A replacement under the same name, as a rolling restart starts it: it takes the name over
    // from the old worker (STELLAR_REPLACES_INCARNATION), then is killed before it stops the old.
    let mut command = stellar(&["run", "--id", "stellar-worker-1"]);
    command
        .env("STELLAR_REDIS_URL", launched.redis.url())
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000")
        .env("STELLAR_REPLACES_INCARNATION", old_incarnation.to_string());
    let mut replacement = Process::spawn("replacement", command);
    replacement.wait_for_line(&["node ready"], Duration::from_secs(10));
    let new_pid = u64::from(replacement.pid());
    assert_eq!(launched.members()["stellar-worker-1"].0, new_pid);
    // Several of the old worker's heartbeats see the takeover.
    std::thread::sleep(Duration::from_millis(600));
    replacement.signal("KILL");
    replacement.wait_exit(Duration::from_secs(5));
    // The old worker is listed again within a couple of heartbeats, and serves calls.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while launched.members().get("stellar-worker-1").map(|m| m.0) != Some(old_pid) {
        assert!(
            Instant::now() < deadline,
            "the old worker is not listed: {:?}\n{}",
            launched.members(),
            launched.supervisor.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the replacement's TTL too: the old worker renews its record again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        launched.workers(),
        BTreeMap::from([("stellar-worker-1".to_owned(), old_pid)])
    );
    assert!(launched.supervisor.is_running());
}

#[test]
fn a_rolling_restart_whose_old_worker_and_replacement_both_die_restarts_the_worker() {
    let mut launched = launch("1");
    let start = launched.wait_for("one worker", |w| w.len() == 1);
    let old = start["stellar-worker-1"] as u32;
    launched.supervisor.signal("USR2");
    let replacement = catch_new_worker(&launched, &[old]);
    // The old worker crashes while its replacement is still starting; then the replacement dies
    // before it is ready.
    signal_pid(old, nix::sys::signal::Signal::SIGKILL);
    launched.supervisor.wait_for_line(
        &["another process already runs under its name"],
        Duration::from_secs(5),
    );
    signal_pid(replacement, nix::sys::signal::Signal::SIGKILL);
    launched.supervisor.wait_for_line(
        &["the rolling-restart replacement died before it was ready"],
        Duration::from_secs(5),
    );
    let back = launched.wait_for("worker 1 restarted", |w| {
        w.get("stellar-worker-1")
            .is_some_and(|pid| ![old, replacement].contains(&(*pid as u32)))
    });
    assert_eq!(names(&back), ["stellar-worker-1"]);
    assert!(
        launched.supervisor.is_running(),
        "{}",
        launched.supervisor.output()
    );
}

#[test]
fn a_worker_that_cannot_be_started_is_retried_and_the_cluster_runs_on() {
    // The supervisor runs from a copy of the program that the test can take away, so starting a
    // worker fails as a spawn error (like fork's EAGAIN) would.
    let bin = tempfile::tempdir().expect("dir");
    let exe = bin.path().join("stellar");
    std::fs::copy(env!("CARGO_BIN_EXE_stellar"), &exe).expect("copy the program");
    let redis = RedisServer::start();
    let pid_file = bin.path().join("stellar.pid").display().to_string();
    let mut command = std::process::Command::new(&exe);
    support::scrub(&mut command);
    command
        .args([
            "run",
            "--cluster",
            "2",
            "--redis",
            &redis.url(),
            "--pid-file",
            &pid_file,
        ])
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000")
        .process_group(0);
    let mut launched = Launched {
        redis,
        supervisor: Process::spawn("supervisor", command),
        _dir: tempfile::tempdir().expect("dir"),
        pid_file,
    };
    let start = launched.wait_for("two workers", |w| w.len() == 2);
    let hidden = bin.path().join("stellar.away");
    std::fs::rename(&exe, &hidden).expect("take the program away");
    kill("KILL", &[start["stellar-worker-1"].to_string()]);
    launched.supervisor.wait_for_line(
        &["could not start worker", "stellar-worker-1"],
        Duration::from_secs(10),
    );
    // The rest of the cluster runs on, and the restart is retried with backoff.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        launched.supervisor.is_running(),
        "{}",
        launched.supervisor.output()
    );
    assert_eq!(names(&launched.workers()), ["stellar-worker-2"]);
    std::fs::rename(&hidden, &exe).expect("put the program back");
    let back = launched.wait_for("worker 1 back", |w| w.len() == 2);
    assert_eq!(names(&back), ["stellar-worker-1", "stellar-worker-2"]);
    launched.supervisor.signal("TERM");
    let status = launched.supervisor.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", launched.supervisor.output());
}

#[test]
fn sighup_stops_the_supervisor_gracefully() {
    let mut launched = launch_with("2", &[("STELLAR_SHUTDOWN_TIMEOUT_MS", "6000")], &[]);
    launched.wait_for("two workers", |w| w.len() == 2);
    let workers = launched.worker_pids(2);
    launched.keep_busy(4, 1500, 2);
    // What a terminal does when it closes: SIGHUP to the foreground process group.
    kill("HUP", &[format!("-{}", launched.supervisor.pid())]);
    let status = launched.supervisor.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", launched.supervisor.output());
    launched.assert_drained(&workers);
}

#[test]
fn a_stop_while_a_worker_is_still_starting_kills_it_and_exits_0() {
    let mut launched = launch_with("1", &[("STELLAR_SHUTDOWN_TIMEOUT_MS", "20000")], &[]);
    // Caught as it is forked: it has not said hello, nor installed its signal handlers.
    let worker = catch_new_worker(&launched, &[]);
    launched
        .supervisor
        .wait_for_line(&["worker started"], Duration::from_secs(5));
    launched.supervisor.signal("INT");
    let status = launched.supervisor.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", launched.supervisor.output());
    let output = launched.supervisor.output();
    assert!(output.contains("killing it"), "{output}");
    assert!(!output.contains("core dumped"), "{output}");
    assert_gone(&[worker], Duration::from_secs(1));
}

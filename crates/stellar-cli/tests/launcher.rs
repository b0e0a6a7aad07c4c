//! `stellar run --cluster N`: a real supervisor with real worker processes and real signals.

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use stellar_testkit::{Process, RedisServer};
use support::stellar;

const TOKEN: &str = "launcher-token";

struct Launched {
    redis: RedisServer,
    supervisor: Process,
    _dir: tempfile::TempDir,
    pid_file: String,
}

fn launch(workers: &str) -> Launched {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let pid_file = dir.path().join("stellar.pid").display().to_string();
    let mut command = stellar(&[
        "run",
        "--cluster",
        workers,
        "--redis",
        &redis.url(),
        "--pid-file",
        &pid_file,
    ]);
    command
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000");
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
                        Some((r["node_id"].as_str()?.to_owned(), r["ok"]["pid"].as_u64()?))
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

    // SIGUSR2: every worker replaced, never fewer than three live while it rolls.
    let before = launched.workers();
    launched.supervisor.signal("USR2");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = launched.workers();
        assert!(
            now.len() >= 3,
            "capacity dropped during the rolling restart: {now:?}"
        );
        if now.len() == 3
            && now
                .values()
                .all(|pid| !before.values().any(|old| old == pid))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rolling restart did not finish: {now:?}\n{}",
            launched.supervisor.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
fn a_crash_looping_worker_is_not_restarted_forever() {
    let mut launched = launch("2");
    launched.wait_for("two workers", |w| w.len() == 2);
    for round in 0..5 {
        let workers = launched.wait_for("worker 1 up", |w| w.contains_key("stellar-worker-1"));
        let pid = workers["stellar-worker-1"];
        assert!(
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill")
                .success()
        );
        if round < 4 {
            launched.wait_for("worker 1 restarted", |w| {
                w.get("stellar-worker-1").is_some_and(|new| *new != pid)
            });
        }
    }
    launched.supervisor.wait_for_line(
        &["crash-looping", "stellar-worker-1"],
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    let left = launched.workers();
    assert_eq!(
        names(&left),
        ["stellar-worker-2"],
        "the others keep running"
    );
    assert!(
        launched.supervisor.is_running(),
        "the supervisor gave up on everyone"
    );
}

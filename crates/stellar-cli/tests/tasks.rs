//! Tasks across real `stellar run` processes: exactly once, SIGKILL, SIGSTOP past the lease,
//! poison tasks, and the `stellar tasks` commands.

mod support;

use std::{
    collections::HashMap,
    process::Output,
    sync::Arc,
    time::{Duration, Instant},
};

use stellar_bus::{RecordSigner, RedisConfig, RedisPool, RedisTransport};
use stellar_core::{CancellationToken, NodeId, ServerToken};
use stellar_tasks::{
    EnqueueOptions, RedisTaskStore, TaskConfig, TaskDefinition, TaskState, Tasks, WorkSignal,
};
use stellar_testkit::{Process, RedisServer};
use support::stellar;

const TOKEN: &str = "tasks-test-token";

fn node(redis: &RedisServer, id: &str, lease_ms: u64) -> Process {
    let mut command = stellar(&["run", "--id", id, "--redis", &redis.url()]);
    command
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .env("STELLAR_TASK_LEASE_MS", lease_ms.to_string())
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000");
    let process = Process::spawn(id, command);
    process.wait_for_line(&["node ready", id], Duration::from_secs(10));
    process
}

/// A client of the cluster's tasks, in this test process, knowing the built-in task names.
async fn client(redis: &RedisServer, cancel: &CancellationToken) -> Tasks {
    let pool = RedisPool::connect(RedisConfig::new(redis.url()))
        .await
        .expect("redis");
    let transport = Arc::new(
        RedisTransport::connect(pool.clone(), cancel.clone())
            .await
            .expect("subscriber"),
    );
    let tasks = Tasks::new(
        Arc::new(RedisTaskStore::new(pool)),
        WorkSignal::subscribed(transport),
        NodeId::new("test-client").expect("id"),
        TaskConfig {
            signer: RecordSigner::new(&ServerToken::new(TOKEN), None),
            ..TaskConfig::default()
        },
    );
    for name in ["stellar.sleep", "stellar.log", "stellar.fail"] {
        tasks.register(
            TaskDefinition::new(name, |_, _: serde_json::Value| async { Ok(()) }).max_attempts(3),
        );
    }
    tasks
}

async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn state(tasks: &Tasks, id: &str) -> Option<TaskState> {
    tasks.show(id).await.expect("show").map(|t| t.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_on_three_nodes_each_run_exactly_once() {
    let redis = RedisServer::start();
    let nodes: Vec<Process> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(&redis, id, 30_000))
        .collect();
    let cancel = CancellationToken::new();
    let tasks = client(&redis, &cancel).await;
    for n in 0..1000 {
        let message = serde_json::json!({ "message": format!("job-{n:04}") });
        tasks
            .enqueue("stellar.log", &message, EnqueueOptions::default())
            .await
            .expect("enqueue");
    }
    wait_until("all processed", Duration::from_secs(60), async || {
        tasks.stats().await.expect("stats").processed == 1000
    })
    .await;
    let mut runs: HashMap<String, u32> = HashMap::new();
    let mut per_node = Vec::new();
    for node in &nodes {
        let output = node.output();
        let lines: Vec<&str> = output
            .lines()
            .filter(|line| line.contains("stellar.log task ran"))
            .collect();
        per_node.push(lines.len());
        for line in lines {
            let message = line
                .split("text=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("message field");
            *runs.entry(message.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(runs.len(), 1000, "lost tasks");
    assert!(runs.values().all(|n| *n == 1), "a task ran twice");
    assert!(
        per_node.iter().all(|n| *n > 0),
        "a node did no work: {per_node:?}"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_killed_node_runs_again_elsewhere() {
    let redis = RedisServer::start();
    let mut victim = node(&redis, "victim", 1500);
    let cancel = CancellationToken::new();
    let tasks = client(&redis, &cancel).await;
    let id = tasks
        .enqueue(
            "stellar.sleep",
            &serde_json::json!({ "ms": 1000 }),
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    wait_until("the victim runs it", Duration::from_secs(10), async || {
        state(&tasks, &id).await == Some(TaskState::Running)
    })
    .await;
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(5));
    let killed_at = Instant::now();
    let _rescuer = node(&redis, "rescuer", 1500);
    wait_until(
        "another node finishes it",
        Duration::from_secs(15),
        async || state(&tasks, &id).await == Some(TaskState::Completed),
    )
    .await;
    let recovery = killed_at.elapsed();
    assert!(
        recovery < Duration::from_millis(1500 + 3000),
        "recovered after {recovery:?}"
    );
    let record = tasks.show(&id).await.expect("show").expect("record");
    assert_eq!(
        (record.node.as_deref(), record.attempts),
        (Some("rescuer"), 2)
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_cannot_complete() {
    let redis = RedisServer::start();
    let paused = node(&redis, "paused", 1000);
    let cancel = CancellationToken::new();
    let tasks = client(&redis, &cancel).await;
    let id = tasks
        .enqueue(
            "stellar.sleep",
            &serde_json::json!({ "ms": 600 }),
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    wait_until("it runs", Duration::from_secs(10), async || {
        state(&tasks, &id).await == Some(TaskState::Running)
    })
    .await;
    paused.signal("STOP");
    let _other = node(&redis, "other", 1000);
    wait_until(
        "the other node completes it",
        Duration::from_secs(15),
        async || state(&tasks, &id).await == Some(TaskState::Completed),
    )
    .await;
    paused.signal("CONT");
    // Its late answer is refused, whichever it notices first: a failed renewal or a rejected completion.
    std::thread::sleep(Duration::from_millis(1500));
    let output = paused.output();
    assert!(
        output.contains("lost the lease") || output.contains("lease lost"),
        "{output}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = tasks.stats().await.expect("stats");
    assert_eq!(stats.processed, 1, "completed twice: {stats:?}");
    assert_eq!(
        tasks
            .show(&id)
            .await
            .expect("show")
            .expect("record")
            .node
            .as_deref(),
        Some("other")
    );
    cancel.cancel();
}

fn run_cli(redis: &RedisServer, args: &[&str]) -> Output {
    let url = redis.url();
    let mut full = vec!["tasks", "--redis", &url];
    full.extend_from_slice(args);
    stellar(&full)
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .output()
        .expect("run stellar tasks")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_poison_task_fails_while_others_flow_and_the_cli_shows_it() {
    let redis = RedisServer::start();
    let _n1 = node(&redis, "n1", 30_000);
    let poison = stdout(&run_cli(
        &redis,
        &["enqueue", "stellar.fail", r#"{"message":"poison"}"#],
    ))
    .trim()
    .to_owned();
    let mut good = Vec::new();
    for n in 0..5 {
        good.push(
            stdout(&run_cli(
                &redis,
                &[
                    "enqueue",
                    "stellar.log",
                    &format!(r#"{{"message":"good-{n}"}}"#),
                ],
            ))
            .trim()
            .to_owned(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let failed: serde_json::Value =
            serde_json::from_slice(&run_cli(&redis, &["failed", "--json"]).stdout).expect("json");
        if failed.as_array().is_some_and(|a| a.len() == 1) {
            assert_eq!(failed[0]["id"], serde_json::json!(poison));
            assert_eq!(failed[0]["attempts"], 3);
            assert_eq!(failed[0]["error"], "poison");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the poison task never reached the failed set"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &good {
        let shown: serde_json::Value =
            serde_json::from_slice(&run_cli(&redis, &["show", id, "--json"]).stdout).expect("json");
        assert_eq!(shown["state"], "completed", "{shown}");
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&run_cli(&redis, &["stats", "--json"]).stdout).expect("json");
    assert_eq!(
        (stats["processed"].as_u64(), stats["failed"].as_u64()),
        (Some(5), Some(1)),
        "{stats}"
    );
    assert_eq!(
        run_cli(&redis, &["show", "no-such-id"]).status.code(),
        Some(1)
    );
    assert!(run_cli(&redis, &["remove", &poison]).status.success());
    assert_eq!(
        run_cli(&redis, &["retry", &poison]).status.code(),
        Some(1),
        "removed tasks cannot be retried"
    );
    let unknown = run_cli(&redis, &["enqueue", "no.such.task"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown task"));
    let idempotent = stdout(&run_cli(
        &redis,
        &[
            "enqueue",
            "stellar.sleep",
            r#"{"ms":1}"#,
            "--id",
            "once",
            "--in",
            "60000",
        ],
    ));
    let again = stdout(&run_cli(
        &redis,
        &[
            "enqueue",
            "stellar.sleep",
            r#"{"ms":1}"#,
            "--id",
            "once",
            "--in",
            "60000",
        ],
    ));
    assert_eq!((idempotent.trim(), again.trim()), ("once", "once"));
    let workers = stdout(&run_cli(&redis, &["workers"]));
    assert!(
        workers.contains("scheduler leader: n1")
            && workers
                .lines()
                .any(|l| l.starts_with("n1  ") && l.contains("default")),
        "{workers}"
    );
}

/// Schedules from the command line: two of one task with their own ids, a cron expression in a
/// time zone, and bad input refused with the bad part named, nothing written.
#[test]
fn schedules_have_ids_cron_expressions_and_refuse_bad_input() {
    let redis = RedisServer::start();
    for (id, every) in [("tick-a", "60000"), ("tick-b", "30000")] {
        let output = run_cli(
            &redis,
            &[
                "enqueue",
                "stellar.log",
                r#"{"message":"tick"}"#,
                "--every",
                every,
                "--id",
                id,
            ],
        );
        assert!(output.status.success(), "{output:?}");
        assert_eq!(stdout(&output).trim(), id);
    }
    let cron = run_cli(
        &redis,
        &[
            "enqueue",
            "stellar.log",
            "--cron",
            "0 9 * * 1-5",
            "--tz",
            "Europe/Paris",
            "--id",
            "weekdays",
        ],
    );
    assert!(cron.status.success(), "{cron:?}");
    for (args, says) in [
        (
            ["--cron", "61 9 * * *", "--tz", "UTC"],
            r#"the minute field "61""#,
        ),
        (
            ["--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
            r#"unknown time zone "Mars/Olympus""#,
        ),
    ] {
        let mut full = vec!["enqueue", "stellar.log", "--id", "bad"];
        full.extend_from_slice(&args);
        let output = run_cli(&redis, &full);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let listed = run_cli(&redis, &["schedules", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["tick-a", "tick-b", "weekdays"], "{listed}");
    let weekdays = &listed[2];
    assert_eq!(weekdays["cron"], "0 9 * * 1-5");
    assert_eq!(weekdays["tz"], "Europe/Paris");
    assert!(weekdays["next_run_at_ms"].as_u64().is_some(), "{weekdays}");
    assert_eq!(listed[1]["every_ms"], 30000);
    assert!(run_cli(&redis, &["unschedule", "tick-a"]).status.success());
    let again = run_cli(&redis, &["unschedule", "tick-a"]);
    assert_eq!(again.status.code(), Some(1));
    let table = stdout(&run_cli(&redis, &["schedules"]));
    assert!(
        !table.contains("tick-a") && table.contains("tick-b"),
        "{table}"
    );
}

/// A task's reported progress shows in `tasks show`, text and JSON (`stellar.sleep` reports it).
#[test]
fn tasks_show_prints_the_progress_a_task_reported() {
    let redis = RedisServer::start();
    let _n1 = node(&redis, "n1", 30_000);
    let id = stdout(&run_cli(
        &redis,
        &["enqueue", "stellar.sleep", r#"{"ms": 300}"#],
    ))
    .trim()
    .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let record = loop {
        let record: serde_json::Value =
            serde_json::from_slice(&run_cli(&redis, &["show", &id, "--json"]).stdout)
                .expect("json");
        if record["state"] == "completed" {
            break record;
        }
        assert!(Instant::now() < deadline, "not completed: {record}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(record["progress"], 100, "{record}");
    let text = stdout(&run_cli(&redis, &["show", &id]));
    assert!(
        text.lines()
            .any(|l| l.starts_with("progress") && l.trim_end().ends_with("100 %")),
        "{text}"
    );
}

//! `stellar run` as a user runs it: the real binary, real signals, a real Redis.

use std::{process::Command, time::Duration};

mod support;

use stellar_testkit::{Process, RedisServer};
use support::{scrub, stellar};

const READY_WITHIN: Duration = Duration::from_secs(10);
const EXITS_WITHIN: Duration = Duration::from_secs(5);

fn spawn(name: &str, command: Command) -> Process {
    Process::spawn(name, command)
}

#[test]
fn embedded_node_logs_ready_with_its_id_and_exits_0_on_sigterm() {
    let mut node = spawn("node", stellar(&["run", "--id", "solo-1"]));
    node.wait_for_line(&["ready", "solo-1"], READY_WITHIN);
    let warning = node.wait_for_line(&["in-memory"], READY_WITHIN);
    assert!(
        warning.contains("not shared") && warning.contains("--redis"),
        "{warning}"
    );
    node.signal("TERM");
    assert!(node.wait_exit(EXITS_WITHIN).success(), "{}", node.output());
    node.wait_for_line(&["shutdown begun", "SIGTERM"], EXITS_WITHIN);
}

#[test]
fn embedded_node_exits_0_on_sigint() {
    let mut node = spawn("node", stellar(&["run", "--id", "solo-2"]));
    node.wait_for_line(&["ready", "solo-2"], READY_WITHIN);
    node.signal("INT");
    assert!(node.wait_exit(EXITS_WITHIN).success(), "{}", node.output());
}

#[test]
fn node_id_defaults_to_hostname_and_pid() {
    let mut node = spawn("node", stellar(&["run"]));
    let pid = node.pid().to_string();
    let ready = node.wait_for_line(&["ready"], READY_WITHIN);
    assert!(ready.contains(&format!("-{pid} ")), "{ready}");
    node.signal("TERM");
    assert!(node.wait_exit(EXITS_WITHIN).success());
}

#[test]
fn id_flag_beats_env_and_env_beats_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("stellar.toml");
    std::fs::write(&file, "id = \"from-file\"\n").expect("write config");
    let file = file.to_str().expect("utf-8 path");

    let mut from_file = spawn("file", stellar(&["run", "--config", file]));
    from_file.wait_for_line(&["ready", "from-file"], READY_WITHIN);
    let mut env = stellar(&["run", "--config", file]);
    env.env("STELLAR_ID", "from-env");
    let mut from_env = spawn("env", env);
    from_env.wait_for_line(&["ready", "from-env"], READY_WITHIN);
    let mut flag = stellar(&["run", "--config", file, "--id", "from-flag"]);
    flag.env("STELLAR_ID", "from-env");
    let mut from_flag = spawn("flag", flag);
    from_flag.wait_for_line(&["ready", "from-flag"], READY_WITHIN);
    for node in [&mut from_file, &mut from_env, &mut from_flag] {
        node.signal("TERM");
        assert!(node.wait_exit(EXITS_WITHIN).success());
    }
}

#[test]
fn invalid_config_value_names_the_key_and_exits_78() {
    let mut command = stellar(&["run"]);
    command.env("STELLAR_SHUTDOWN_TIMEOUT_MS", "soon");
    let mut node = spawn("node", command);
    // EX_CONFIG: a supervisor does not restart a worker that exits with it.
    assert_eq!(node.wait_exit(EXITS_WITHIN).code(), Some(78));
    let output = node.output();
    assert!(
        output.contains("shutdown_timeout_ms") && output.contains("STELLAR_SHUTDOWN_TIMEOUT_MS"),
        "{output}"
    );
}

#[test]
fn redis_node_refuses_the_default_token_and_says_how_to_set_one() {
    let mut node = spawn("node", stellar(&["run", "--redis", "redis://127.0.0.1:1"]));
    assert_eq!(node.wait_exit(EXITS_WITHIN).code(), Some(78));
    let output = node.output();
    assert!(
        output.contains("change-me") && output.contains("STELLAR_SERVER_TOKEN"),
        "{output}"
    );
    assert!(!output.contains("ready"), "{output}");
}

#[test]
fn unreachable_redis_fails_start_up_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("redis://:pa55word@127.0.0.1:{port}");
    let mut node = spawn(
        "node",
        stellar(&["run", "--redis", &url, "--server-token", "s3cret"]),
    );
    assert!(
        !node.wait_exit(EXITS_WITHIN).success(),
        "must not retry silently"
    );
    let output = node.output();
    assert!(
        output.contains(&format!("redis://:***@127.0.0.1:{port}")),
        "{output}"
    );
    assert!(!output.contains("pa55word"), "password leaked: {output}");
    assert!(!output.contains("ready"), "{output}");
}

#[test]
fn redis_node_survives_a_redis_restart_and_logs_the_reconnect() {
    let mut redis = RedisServer::start();
    let mut command = stellar(&[
        "run",
        "--id",
        "shared-1",
        "--redis",
        &redis.url(),
        "--log",
        "debug",
    ]);
    command.env("STELLAR_SERVER_TOKEN", "t0ken-never-logged");
    let mut node = spawn("node", command);
    node.wait_for_line(&["ready", "shared-1", "redis"], READY_WITHIN);

    redis.kill();
    node.wait_for_line(
        &["redis subscriber connection lost"],
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    node.wait_for_line(&["redis subscriber reconnected"], Duration::from_secs(15));
    assert!(
        node.is_running(),
        "the node died with its redis:\n{}",
        node.output()
    );

    node.signal("TERM");
    assert!(node.wait_exit(EXITS_WITHIN).success(), "{}", node.output());
    assert!(
        !node.output().contains("t0ken-never-logged"),
        "the server token reached the logs"
    );
}

/// The `draining_node` example: `stellar` plus a component that takes `drain_ms` to stop.
fn draining_node(args: &[&str], drain_ms: u64) -> Command {
    let deps = std::env::current_exe().expect("test binary path");
    let examples = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir")
        .join("examples");
    let binary = examples.join("draining_node");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds it (with `--test run` alone, run `cargo build -p stellar-cli --examples` first)",
        binary.display()
    );
    let mut command = Command::new(binary);
    scrub(&mut command);
    command.env("DRAIN_MS", drain_ms.to_string()).args(args);
    command
}

#[test]
fn a_users_binary_runs_its_component_and_drains_it_before_exiting() {
    let mut node = spawn("draining", draining_node(&["run", "--id", "custom"], 300));
    node.wait_for_line(&["component started", "custom"], READY_WITHIN);
    node.wait_for_line(&["ready", "custom"], READY_WITHIN);
    node.signal("TERM");
    assert!(node.wait_exit(EXITS_WITHIN).success(), "{}", node.output());
    let output = node.output();
    let drained = output
        .find("drained")
        .expect("the component finished its work");
    let stopped = output
        .find("node stopped")
        .expect("the node reported its stop");
    assert!(
        drained < stopped,
        "the node stopped before its component drained:\n{output}"
    );
}

#[test]
fn shutdown_gives_up_at_its_deadline_and_exits_non_zero() {
    let args = ["run", "--id", "slow", "--shutdown-timeout-ms", "500"];
    let mut node = spawn("draining", draining_node(&args, 60_000));
    node.wait_for_line(&["ready"], READY_WITHIN);
    node.signal("TERM");
    let status = node.wait_exit(EXITS_WITHIN);
    assert!(!status.success(), "{}", node.output());
    node.wait_for_line(&["shutdown deadline"], EXITS_WITHIN);
}

#[test]
fn a_second_signal_during_shutdown_exits_at_once() {
    let args = ["run", "--id", "stubborn", "--shutdown-timeout-ms", "60000"];
    let mut node = spawn("draining", draining_node(&args, 60_000));
    node.wait_for_line(&["ready"], READY_WITHIN);
    node.signal("TERM");
    node.wait_for_line(&["draining"], EXITS_WITHIN);
    node.signal("INT");
    let status = node.wait_exit(EXITS_WITHIN);
    assert_eq!(status.code(), Some(130), "{}", node.output());
}

//! The command line as people type it: flags in any position, and the messages a person meets.

mod support;

use std::{process::Output, time::Duration};

use stellar_testkit::{Process, RedisServer};
use support::stellar;

const TOKEN: &str = "usage-test-token";

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn backend_flags_are_accepted_after_the_subcommand() {
    let redis = RedisServer::start();
    let url = redis.url();
    let set = stellar(&["cache", "set", "foo", "42", "--redis", &url])
        .output()
        .expect("run");
    assert!(set.status.success(), "{:?}", text(&set));
    let get = stellar(&[
        "cache",
        "get",
        "foo",
        "--redis",
        &url,
        "--server-token",
        TOKEN,
    ])
    .output()
    .expect("run");
    assert!(get.status.success(), "{:?}", text(&get));
    assert_eq!(text(&get).0.trim(), "42");
    // Before the subcommand's name too, and on `tasks`, which checks the token.
    let stats = stellar(&["--redis", &url, "tasks", "stats", "--server-token", TOKEN])
        .output()
        .expect("run");
    assert!(stats.status.success(), "{:?}", text(&stats));
}

/// `stellar run --id ID` on `redis` with `token`, ready.
fn node(redis: &RedisServer, id: &str, token: &str) -> Process {
    let mut command = stellar(&["run", "--id", id, "--redis", &redis.url()]);
    command
        .env("STELLAR_SERVER_TOKEN", token)
        .env("STELLAR_HEARTBEAT_INTERVAL_MS", "200")
        .env("STELLAR_HEARTBEAT_TTL_MS", "1000");
    let process = Process::spawn(id, command);
    process.wait_for_line(&["node ready", id], Duration::from_secs(10));
    process
}

/// `stellar cluster ARGS…` on `redis` with `token`.
fn cluster(redis: &RedisServer, token: &str, args: &[&str]) -> Output {
    let url = redis.url();
    let mut full = vec!["cluster"];
    full.extend_from_slice(args);
    full.extend(["--redis", &url, "--server-token", token]);
    stellar(&full).output().expect("run stellar cluster")
}

#[test]
fn cluster_do_without_a_live_node_fails() {
    let redis = RedisServer::start();
    let output = cluster(&redis, TOKEN, &["do", "api.ping"]);
    assert!(!output.status.success(), "{:?}", text(&output));
    assert!(
        text(&output).1.contains("no live nodes"),
        "{:?}",
        text(&output)
    );
    let status = cluster(&redis, TOKEN, &["status"]);
    assert!(status.status.success(), "{:?}", text(&status));
    assert!(text(&status).0.contains("0 node(s)"), "{:?}", text(&status));
}

#[test]
fn a_wrong_token_is_not_mistaken_for_an_empty_cluster() {
    let redis = RedisServer::start();
    let _node = node(&redis, "n1", TOKEN);
    for args in [&["status"][..], &["status", "--json"], &["do", "api.ping"]] {
        let output = cluster(&redis, "not-the-token", args);
        assert!(!output.status.success(), "{args:?}: {:?}", text(&output));
        assert!(
            text(&output)
                .1
                .contains("1 node record is signed with another token"),
            "{args:?}: {:?}",
            text(&output)
        );
    }
    let right = cluster(&redis, TOKEN, &["do", "api.ping"]);
    assert!(right.status.success(), "{:?}", text(&right));
}

#[test]
fn completions_and_the_man_page_are_generated_without_a_configuration() {
    for (shell, marker) in [
        ("bash", "_stellar()"),
        ("zsh", "#compdef stellar"),
        ("fish", "complete -c stellar"),
    ] {
        let output = stellar(&["completions", shell])
            .env("STELLAR_SHUTDOWN_TIMEOUT_MS", "not a number")
            .output()
            .expect("run");
        assert!(output.status.success(), "{shell}: {:?}", text(&output));
        let script = text(&output).0;
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("server-token"), "{shell}: no global flag");
    }
    let man = stellar(&["man"]).output().expect("run");
    assert!(man.status.success(), "{:?}", text(&man));
    let page = text(&man).0;
    assert!(
        page.starts_with(".ie") && page.contains(".TH stellar 1"),
        "{page}"
    );
    assert!(
        page.contains("completions") && page.contains("cluster"),
        "{page}"
    );
}

#[test]
fn run_help_shows_the_workers_alias() {
    let help = stellar(&["run", "--help"]).output().expect("run");
    assert!(help.status.success());
    assert!(text(&help).0.contains("--workers"), "{:?}", text(&help));
}

/// `stellar tasks ARGS…` on `redis` with the test token.
fn tasks(redis: &RedisServer, args: &[&str]) -> Output {
    let url = redis.url();
    let mut full = vec!["tasks"];
    full.extend_from_slice(args);
    full.extend(["--redis", &url, "--server-token", TOKEN]);
    stellar(&full).output().expect("run stellar tasks")
}

#[test]
fn an_unknown_task_names_what_the_cluster_runs_and_bad_args_are_called_args() {
    let redis = RedisServer::start();
    let _node = node(&redis, "n1", TOKEN);
    let unknown = tasks(&redis, &["enqueue", "no.such.task"]);
    assert_eq!(unknown.status.code(), Some(1), "{:?}", text(&unknown));
    let said = text(&unknown).1;
    assert!(said.contains("register it with Tasks::register"), "{said}");
    assert!(
        said.contains("the cluster's workers run: stellar.fail, stellar.log"),
        "{said}"
    );
    let bad = tasks(&redis, &["enqueue", "stellar.log", "{not json"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).1.contains("ARGS is not JSON: {not json"),
        "{:?}",
        text(&bad)
    );
    let bad = cluster(&redis, TOKEN, &["do", "api.log", "{not json"]);
    assert!(
        text(&bad).1.contains("ARGS is not JSON"),
        "{:?}",
        text(&bad)
    );
    // A clean exit of a client logs nothing at WARN (the default level of client commands).
    for output in [&unknown, &bad] {
        assert!(!text(output).1.contains("WARN"), "{:?}", text(output));
    }
}

#[test]
fn a_refused_connection_is_said_once() {
    for args in [&["cache", "get", "k"][..], &["tasks", "stats"]] {
        let mut full = args.to_vec();
        full.extend(["--redis", "redis://127.0.0.1:1", "--server-token", TOKEN]);
        let output = stellar(&full).output().expect("run");
        assert_eq!(output.status.code(), Some(1));
        let said = text(&output).1;
        assert_eq!(said.matches("Connection refused").count(), 1, "{said}");
        assert!(said.contains("redis://127.0.0.1:1"), "{said}");
    }
}

#[test]
fn a_client_with_the_default_token_is_told_to_set_the_clusters() {
    for args in [&["tasks", "stats"][..], &["cluster", "status"]] {
        let mut full = args.to_vec();
        full.extend(["--redis", "redis://127.0.0.1:1"]);
        let output = stellar(&full).output().expect("run");
        assert_eq!(output.status.code(), Some(78), "{:?}", text(&output));
        let said = text(&output).1;
        assert!(
            said.contains("set --server-token or STELLAR_SERVER_TOKEN to the cluster's token"),
            "{said}"
        );
        assert!(!said.contains("refusing to start"), "{said}");
    }
    // `run` keeps its wording: it is the node that refuses.
    let run = stellar(&["run", "--redis", "redis://127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(
        text(&run).1.contains("refusing to start"),
        "{:?}",
        text(&run)
    );
}

/// `stellar tasks enqueue --stdin` fed `input`.
fn enqueue_stdin(redis: &RedisServer, input: &str) -> Output {
    use std::{io::Write, process::Stdio};
    let url = redis.url();
    let mut child = stellar(&["tasks", "enqueue", "--stdin", "--redis", &url])
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

fn queued_ids(redis: &RedisServer) -> Vec<String> {
    let output = tasks(redis, &["queued", "default", "--json"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let records: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    records
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn enqueue_stdin_checks_every_line_before_enqueueing_any() {
    let redis = RedisServer::start();
    let bad = enqueue_stdin(
        &redis,
        concat!(
            r#"{"name": "stellar.log", "args": {"message": "a"}, "id": "first"}"#,
            "\n",
            r#"{"name": "stellar.log", "in": 5, "at": "2026-11-28T09:00:00Z"}"#,
            "\n",
        ),
    );
    assert_eq!(bad.status.code(), Some(1), "{:?}", text(&bad));
    assert!(text(&bad).1.contains("line 2: "), "{:?}", text(&bad));
    assert!(
        text(&bad).1.contains("nothing enqueued"),
        "{:?}",
        text(&bad)
    );
    assert!(queued_ids(&redis).is_empty(), "a bad batch enqueued a task");
    assert_eq!(tasks(&redis, &["show", "first"]).status.code(), Some(1));

    let good = enqueue_stdin(
        &redis,
        concat!(
            r#"{"name": "stellar.log", "args": {"message": "a"}, "id": "first"}"#,
            "\n\n",
            r#"{"name": "stellar.sleep", "args": {"ms": 1}, "in": 60000, "id": "later"}"#,
            "\n",
            r#"{"name": "stellar.log", "args": {"message": "b"}}"#,
            "\n",
        ),
    );
    assert!(good.status.success(), "{:?}", text(&good));
    let printed: Vec<String> = text(&good).0.lines().map(str::to_owned).collect();
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(
        (printed[0].as_str(), printed[1].as_str()),
        ("first", "later")
    );
    assert_eq!(queued_ids(&redis), [printed[0].clone(), printed[2].clone()]);
    let later = tasks(&redis, &["show", "later", "--json"]);
    let later: serde_json::Value = serde_json::from_slice(&later.stdout).expect("JSON");
    assert_eq!(later["state"], "delayed", "{later}");
}

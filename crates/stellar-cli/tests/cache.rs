//! `stellar cache …` against a spawned Redis, as separate processes.

mod support;

use std::process::{Output, Stdio};

use stellar_testkit::RedisServer;
use support::stellar;

fn cache(redis: &RedisServer, args: &[&str]) -> Output {
    let url = redis.url();
    let mut full = vec!["cache", "--redis", &url];
    full.extend_from_slice(args);
    stellar(&full).output().expect("run stellar cache")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn set_get_keys_and_del_round_trip() {
    let redis = RedisServer::start();
    assert!(
        cache(&redis, &["set", "user:1", r#"{"name":"ada"}"#])
            .status
            .success()
    );
    assert!(
        cache(&redis, &["set", "user:2", "2", "--ttl", "60000"])
            .status
            .success()
    );
    let got = cache(&redis, &["get", "user:1"]);
    assert!(got.status.success());
    assert_eq!(text(&got).0.trim(), r#"{"name":"ada"}"#);
    let meta: serde_json::Value =
        serde_json::from_slice(&cache(&redis, &["get", "user:2", "--json"]).stdout).expect("json");
    assert_eq!(meta["value"], 2);
    assert!(
        meta["expires_at_ms"].as_u64().expect("ttl")
            > meta["created_at_ms"].as_u64().expect("created")
    );
    assert_eq!(
        text(&cache(&redis, &["keys", "user:*"])).0,
        "user:1\nuser:2\n"
    );
    assert!(cache(&redis, &["del", "user:1"]).status.success());

    let missing = cache(&redis, &["get", "user:1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).1.contains("no value at key \"user:1\""),
        "{:?}",
        text(&missing)
    );
    assert_eq!(cache(&redis, &["del", "user:1"]).status.code(), Some(1));
    let bad = cache(&redis, &["set", "k", "not json"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("not JSON"), "{:?}", text(&bad));
}

#[test]
fn lock_prints_a_token_and_refuses_a_second_owner() {
    let redis = RedisServer::start();
    let first = cache(&redis, &["lock", "deploy", "--ttl", "60000"]);
    assert!(first.status.success(), "{:?}", text(&first));
    let token = text(&first).0.trim().to_owned();
    assert_eq!(token.len(), 32, "{token}");
    let second = cache(&redis, &["lock", "deploy"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second).1.contains("locked by another owner"),
        "{:?}",
        text(&second)
    );
    assert!(
        !cache(&redis, &["set", "deploy", "1"]).status.success(),
        "writes to a locked key fail"
    );
    assert_eq!(
        cache(&redis, &["unlock", "deploy", "wrong-token"])
            .status
            .code(),
        Some(1)
    );
    assert!(
        cache(&redis, &["unlock", "deploy", &token])
            .status
            .success()
    );
    assert!(
        cache(&redis, &["lock", "deploy"]).status.success(),
        "free again"
    );
}

#[test]
fn twenty_processes_race_for_one_lock_and_one_wins() {
    let redis = RedisServer::start();
    let url = redis.url();
    let racers: Vec<_> = (0..20)
        .map(|_| {
            stellar(&[
                "cache", "--redis", &url, "lock", "the-one", "--ttl", "60000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    let winners = racers
        .into_iter()
        .map(|racer| racer.wait_with_output().expect("wait"))
        .filter(|out| out.status.success())
        .count();
    assert_eq!(winners, 1);
}

#[test]
fn dump_and_restore_through_a_file() {
    let redis = RedisServer::start();
    assert!(
        cache(&redis, &["set", "a", "1", "--ttl", "100000"])
            .status
            .success()
    );
    assert!(cache(&redis, &["set", "b", "[true]"]).status.success());
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("dump.jsonl");
    let file = file.to_str().expect("utf-8");
    assert!(cache(&redis, &["dump", file]).status.success());
    assert!(cache(&redis, &["clear"]).status.success());
    assert_eq!(text(&cache(&redis, &["keys"])).0, "");
    let restored = cache(&redis, &["restore", file]);
    assert!(
        text(&restored).1.contains("restored 2 key(s)"),
        "{:?}",
        text(&restored)
    );
    assert_eq!(text(&cache(&redis, &["get", "b"])).0.trim(), "[true]");
    let meta: serde_json::Value =
        serde_json::from_slice(&cache(&redis, &["get", "a", "--json"]).stdout).expect("json");
    assert!(meta["expires_at_ms"].is_u64(), "the ttl survived: {meta}");
}

#[test]
fn cache_commands_need_redis() {
    let output = stellar(&["cache", "get", "k"]).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("--redis"), "{:?}", text(&output));
}

/// `save`/`load`/`destroy` are the original framework's names (`api.cache.save/load/destroy`);
/// the flags work after the subcommand too.
#[test]
fn save_load_destroy_aliases_with_flags_after_the_subcommand() {
    let redis = RedisServer::start();
    let url = redis.url();
    let run = |args: &[&str]| {
        let mut full = vec!["cache"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--redis", &url]);
        stellar(&full).output().expect("run stellar cache")
    };
    assert!(run(&["save", "greeting", "\"hi\""]).status.success());
    let loaded = run(&["load", "greeting"]);
    assert!(loaded.status.success(), "{:?}", text(&loaded));
    assert_eq!(text(&loaded).0.trim(), "\"hi\"");
    assert!(run(&["destroy", "greeting"]).status.success());
    assert_eq!(run(&["load", "greeting"]).status.code(), Some(1));
}

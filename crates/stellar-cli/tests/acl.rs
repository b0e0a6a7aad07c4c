//! A node and the CLI run as the least-privilege Redis ACL user of `docs/security.md`: only
//! `stellar:*` keys and channels, no dangerous command (no KEYS, CONFIG, FLUSHALL…).

mod support;

use std::{
    process::Output,
    sync::Arc,
    time::{Duration, Instant},
};

use stellar_bus::{RedisConfig, RedisPool};
use stellar_cache::{Cache, CacheConfig, RedisCacheStore, store::NearCacheLimits};
use stellar_core::NodeId;
use stellar_testkit::{Process, RedisServer};
use support::stellar;

const TOKEN: &str = "acl-test-token";

/// The ACL rule of `docs/security.md`, word for word.
const RULE: &[&str] = &[
    "stellar",
    "on",
    ">acl-secret",
    "resetkeys",
    "~stellar:*",
    "resetchannels",
    "&stellar:*",
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@pubsub",
    "+@connection",
    "+@keyspace",
    "+@transaction",
    "+time",
    "-@dangerous",
];

fn url(redis: &RedisServer) -> String {
    format!("redis://stellar:acl-secret@127.0.0.1:{}", redis.port())
}

fn cli(redis: &RedisServer, args: &[&str]) -> Output {
    let mut command = stellar(args);
    command
        .env("STELLAR_REDIS_URL", url(redis))
        .env("STELLAR_SERVER_TOKEN", TOKEN);
    command.output().expect("run stellar")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_and_the_cli_work_as_the_least_privilege_acl_user() {
    let redis = RedisServer::start();
    let admin = RedisPool::connect(RedisConfig::new(redis.url()))
        .await
        .expect("redis");
    let mut rule = redis::cmd("ACL");
    rule.arg("SETUSER").arg(RULE);
    admin
        .query::<()>("ACL SETUSER", &rule)
        .await
        .expect("acl setuser");
    let docs = include_str!("../../../docs/security.md");
    assert!(
        docs.contains(&RULE.join(" ")),
        "docs/security.md shows another rule than the one tested"
    );

    let mut command = stellar(&["run", "--id", "acl-1"]);
    command
        .env("STELLAR_REDIS_URL", url(&redis))
        .env("STELLAR_SERVER_TOKEN", TOKEN);
    let node = Process::spawn("acl-1", command);
    node.wait_for_line(&["node ready", "acl-1"], Duration::from_secs(10));

    ok(&cli(
        &redis,
        &[
            "tasks",
            "enqueue",
            "stellar.log",
            r#"{"message":"under acl"}"#,
            "--id",
            "acl-task",
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = cli(&redis, &["tasks", "show", "acl-task", "--json"]);
        if String::from_utf8_lossy(&shown.stdout).contains("\"completed\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the task did not complete");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&cli(&redis, &["tasks", "stats"]));
    ok(&cli(&redis, &["tasks", "workers"]));
    ok(&cli(&redis, &["cache", "set", "greeting", r#""hi""#]));
    assert_eq!(
        ok(&cli(&redis, &["cache", "get", "greeting"])).trim(),
        r#""hi""#
    );
    assert!(ok(&cli(&redis, &["cache", "keys"])).contains("greeting"));
    ok(&cli(&redis, &["cache", "lock", "job", "--ttl", "5000"]));
    assert!(ok(&cli(&redis, &["cluster", "status"])).contains("acl-1"));
    ok(&cli(
        &redis,
        &["cluster", "do", "api.ping", "--wait", "all"],
    ));

    // The rule is in force: the user cannot run KEYS or touch keys outside `stellar:*`.
    let user = RedisPool::connect(RedisConfig::new(url(&redis)))
        .await
        .expect("redis as the acl user");
    loads_and_restores_in_one_process(&user).await;
    assert!(
        user.query::<Vec<String>>("KEYS", redis::cmd("KEYS").arg("*"))
            .await
            .is_err()
    );
    assert!(
        user.query::<Option<String>>("GET", redis::cmd("GET").arg("other:key"))
            .await
            .is_err()
    );
    drop(node);
}

/// What one CLI call per load never exercises: a second load of a key within a second (a plain
/// `MULTI`/`EXEC` read, with and without a near cache) and a restore (`MULTI`/`EXEC` too).
async fn loads_and_restores_in_one_process(user: &RedisPool) {
    let limits = NearCacheLimits {
        max_entries: 100,
        max_bytes: 1 << 20,
    };
    for store in [
        RedisCacheStore::new(user.clone()),
        RedisCacheStore::new(user.clone()).with_near_cache(limits),
    ] {
        let cache = Cache::new(
            Arc::new(store),
            NodeId::new("acl-test").expect("id"),
            CacheConfig::default(),
        );
        for _ in 0..3 {
            let entry = cache.load::<String>("greeting").await.expect("load");
            assert_eq!(entry.value, "hi");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache.dump");
        assert_eq!(cache.dump(&path).await.expect("dump"), 1);
        assert_eq!(cache.restore(&path).await.expect("restore"), 1);
    }
}

//! `stellar migrate` on real state: tasks, cache values and a lock made by this release, renamed
//! by hand to the layout before hash tags, then moved back in place or copied to a Redis Cluster,
//! and served by a `stellar run` node afterwards.

mod support;

use std::{
    collections::BTreeSet,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::Value;
use stellar_testkit::{Process, RedisCluster, RedisServer, Reply};
use support::stellar;

const TOKEN: &str = "migrate-test-token";
/// The TTL of the cache value that has one, and of the lock.
const TTL_MS: u64 = 600_000;

/// `stellar ARGS… --redis URL` with the test's token.
fn cli(url: &str, args: &[&str]) -> Output {
    stellar(args)
        .args(["--redis", url])
        .env("STELLAR_SERVER_TOKEN", TOKEN)
        .output()
        .expect("run stellar")
}

/// As [`cli`], asserting success, and returning stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let output = cli(url, args);
    assert!(output.status.success(), "{args:?}: {}", describe(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// As [`ok`], parsing stdout as JSON.
fn json(url: &str, args: &[&str]) -> Value {
    let stdout = ok(url, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("{args:?}: not JSON ({err}): {stdout}"))
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `stellar migrate ARGS… --redis URL`: its report (stderr), after asserting success.
fn migrate(url: &str, args: &[&str]) -> String {
    let mut full = vec!["migrate"];
    full.extend_from_slice(args);
    let output = cli(url, &full);
    assert!(output.status.success(), "{full:?}: {}", describe(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every key of `server`.
fn all_keys(server: &RedisServer) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = server.command(&["SCAN", &cursor, "COUNT", "1000"]);
        let [next, batch] = reply.array().expect("SCAN answers [cursor, keys]") else {
            panic!("SCAN: {reply:?}");
        };
        keys.extend(batch.array().expect("keys").iter().filter_map(Reply::text));
        cursor = next.text().expect("cursor");
        if cursor == "0" {
            return keys;
        }
    }
}

/// The name `key` had before hash tags, written out from the old `keys.rs` files rather than
/// from the mapping `stellar migrate` uses; `None` for a key that is not migrated (membership).
fn old_name(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("stellar:{tasks}:") {
        return Some(if let Some(id) = rest.strip_prefix("task:") {
            format!("stellar:task:{id}")
        } else if let Some(queue) = rest.strip_prefix("queue:") {
            format!("stellar:queue:{queue}")
        } else {
            format!("stellar:tasks:{rest}")
        });
    }
    for prefix in ["stellar:cache:", "stellar:lock:"] {
        if let Some(tagged) = key.strip_prefix(prefix) {
            let (tag, rest) = tagged
                .strip_prefix('{')
                .and_then(|t| t.split_once('}'))
                .unwrap_or_else(|| panic!("an untagged key of this release: {key:?}"));
            return Some(format!("{prefix}{tag}{rest}"));
        }
    }
    None
}

/// Whether `key` is a name of the layout before hash tags.
fn is_old(key: &str) -> bool {
    ["stellar:task:", "stellar:queue:", "stellar:tasks:"]
        .iter()
        .any(|prefix| key.starts_with(prefix))
        || ["stellar:cache:", "stellar:lock:"].iter().any(|prefix| {
            key.strip_prefix(prefix)
                .is_some_and(|n| !n.starts_with('{'))
        })
}

/// What [`legacy_state`] made.
struct Legacy {
    /// A task ready to run.
    ready: String,
    /// A task due in an hour, and its due time.
    delayed: (String, u64),
    /// `cache get with-ttl --json` before the move.
    with_ttl: Value,
    /// The token of the lock on `job`.
    lock_token: String,
    /// How many keys were renamed to their old names.
    n_keys: usize,
}

/// State made with this release's CLI on `server` (a ready task, a delayed one, a value with a
/// TTL, one without, a lock), then every key renamed by hand to its name before hash tags: the
/// layout an older release left behind.
fn legacy_state(server: &RedisServer) -> Legacy {
    let url = server.url();
    let ready = ok(
        &url,
        &["tasks", "enqueue", "stellar.log", r#"{"message":"ready"}"#],
    );
    let delayed = ok(
        &url,
        &[
            "tasks",
            "enqueue",
            "stellar.log",
            r#"{"message":"later"}"#,
            "--in",
            "3600000",
        ],
    );
    let due_at = json(&url, &["tasks", "show", &delayed, "--json"])["due_at_ms"]
        .as_u64()
        .expect("a delayed task has a due time");
    ok(
        &url,
        &[
            "cache",
            "set",
            "with-ttl",
            r#""kept""#,
            "--ttl",
            &TTL_MS.to_string(),
        ],
    );
    ok(&url, &["cache", "set", "forever", r#"{"n":1}"#]);
    let with_ttl = json(&url, &["cache", "get", "with-ttl", "--json"]);
    let lock_token = ok(
        &url,
        &["cache", "lock", "job", "--ttl", &TTL_MS.to_string()],
    );
    let keys = all_keys(server);
    let mut n_keys = 0;
    for key in &keys {
        let Some(old) = old_name(key) else { continue };
        assert_eq!(
            server.command(&["RENAME", key, &old]),
            Reply::Status("OK".into())
        );
        n_keys += 1;
    }
    let old = all_keys(server);
    for expected in [
        format!("stellar:task:{ready}"),
        format!("stellar:task:{delayed}"),
        "stellar:queue:default".to_owned(),
        "stellar:tasks:delayed".to_owned(),
        "stellar:cache:with-ttl".to_owned(),
        "stellar:cache:forever".to_owned(),
        "stellar:lock:job".to_owned(),
        "stellar:lock:job\u{1f}fence".to_owned(),
    ] {
        assert!(old.contains(&expected), "no {expected:?} in {old:?}");
    }
    Legacy {
        ready,
        delayed: (delayed, due_at),
        with_ttl,
        lock_token,
        n_keys,
    }
}

/// `stellar run` on `url`, ready.
fn node(url: &str, id: &str) -> Process {
    let mut command = stellar(&["run", "--id", id, "--redis", url]);
    command.env("STELLAR_SERVER_TOKEN", TOKEN);
    let process = Process::spawn(id, command);
    process.wait_for_line(&["node ready", id], Duration::from_secs(20));
    process
}

/// Waits until `tasks show ID` on `url` says `state`.
fn wait_for_state(url: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let record = json(url, &["tasks", "show", id, "--json"]);
        if record["state"] == state {
            return record;
        }
        assert!(Instant::now() < deadline, "{id} is not {state}: {record}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a node of this release finds on `url` after the move: the ready task runs, the delayed
/// one keeps its due time, the values read back with their TTLs, the lock is still held. Then
/// `while_running` runs, and the node stops gracefully (its membership record goes with it).
fn assert_served(url: &str, legacy: &Legacy, while_running: impl FnOnce()) {
    let mut node = node(url, "after-migrate");
    wait_for_state(url, &legacy.ready, "completed");
    let (delayed, due_at) = &legacy.delayed;
    let record = json(url, &["tasks", "show", delayed, "--json"]);
    assert_eq!(record["state"], "delayed", "{record}");
    assert_eq!(record["due_at_ms"].as_u64(), Some(*due_at), "{record}");
    let with_ttl = json(url, &["cache", "get", "with-ttl", "--json"]);
    assert_eq!(with_ttl["value"], "kept");
    assert_eq!(with_ttl["created_at_ms"], legacy.with_ttl["created_at_ms"]);
    let expires = |entry: &Value| entry["expires_at_ms"].as_u64().expect("a TTL");
    // The TTL is read as a remaining time, so the expiry moves by a few ms between reads.
    assert!(
        expires(&with_ttl).abs_diff(expires(&legacy.with_ttl)) < 2000,
        "TTL not kept: {with_ttl} vs {}",
        legacy.with_ttl
    );
    let forever = json(url, &["cache", "get", "forever", "--json"]);
    assert_eq!(
        (&forever["value"]["n"], &forever["expires_at_ms"]),
        (&Value::from(1), &Value::Null)
    );
    let taken = cli(url, &["cache", "lock", "job"]);
    assert_eq!(
        taken.status.code(),
        Some(1),
        "the lock moved free: {}",
        describe(&taken)
    );
    ok(url, &["cache", "unlock", "job", &legacy.lock_token]);
    while_running();
    node.signal("TERM");
    assert!(node.wait_exit(Duration::from_secs(15)).success());
}

/// Asserts that `stellar migrate ARGS… --redis URL` refuses to run while the node runs on `on`.
fn refused_under_a_live_node(url: &str, args: &[&str], on: &str) {
    let mut full = vec!["migrate"];
    full.extend_from_slice(args);
    let output = cli(url, &full);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "node(s) after-migrate run on {on}: stop every node first"
        )),
        "{stderr}"
    );
}

#[test]
fn migrate_renames_the_old_layout_in_place_and_a_second_run_moves_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let legacy = legacy_state(&redis);
    let report = migrate(&url, &[]);
    assert!(
        report.starts_with(&format!(
            "moved {} key(s); 0 key(s) left because their new name exists\n",
            legacy.n_keys
        )),
        "{report}"
    );
    let left: Vec<String> = all_keys(&redis).into_iter().filter(|k| is_old(k)).collect();
    assert!(left.is_empty(), "old names left: {left:?}");
    assert_served(&url, &legacy, || {
        refused_under_a_live_node(&url, &[], &url);
        let dry_run = migrate(&url, &["--dry-run"]);
        assert!(
            dry_run.starts_with("note: node(s) after-migrate run on")
                && dry_run.contains("\nwould move 0 key(s)"),
            "{dry_run}"
        );
    });
    let again = migrate(&url, &[]);
    assert_eq!(
        again,
        "moved 0 key(s); 0 key(s) left because their new name exists\n"
    );
}

#[test]
fn a_dry_run_counts_what_would_move_and_moves_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let legacy = legacy_state(&redis);
    let before = all_keys(&redis);
    let report = migrate(&url, &["--dry-run"]);
    assert_eq!(
        report,
        format!(
            "would move {} key(s); 0 key(s) would be left because their new name exists\n",
            legacy.n_keys
        )
    );
    assert_eq!(all_keys(&redis), before);
}

#[test]
fn a_key_whose_new_name_exists_is_left_and_reported() {
    let redis = RedisServer::start();
    let url = redis.url();
    let legacy = legacy_state(&redis);
    // A node of this release wrote the value under its new name meanwhile.
    ok(&url, &["cache", "set", "forever", r#""newer""#]);
    let expected = format!(
        "{} key(s){{to}}; 1 key(s) {{left}} because their new name exists\n  {{left}}: \"stellar:cache:forever\"\n",
        legacy.n_keys - 1
    );
    let expect = |verb: &str, to: &str, left: &str| {
        format!(
            "{verb} {}",
            expected.replace("{to}", to).replace("{left}", left)
        )
    };
    let copy = RedisServer::start();
    ok(
        &copy.url(),
        &["cache", "set", "forever", r#""on the copy""#],
    );
    assert_eq!(
        migrate(&url, &["--dry-run"]),
        expect("would move", "", "would be left")
    );
    let to = " to the --to Redis (the originals are kept)";
    assert_eq!(
        migrate(&url, &["--to", &copy.url()]),
        expect("moved", to, "left")
    );
    assert_eq!(migrate(&url, &[]), expect("moved", "", "left"));
    assert_eq!(ok(&url, &["cache", "get", "forever"]), r#""newer""#);
    assert_eq!(
        ok(&copy.url(), &["cache", "get", "forever"]),
        r#""on the copy""#
    );
    let old = redis.command(&["HGET", "stellar:cache:forever", "value"]);
    assert_eq!(
        old.text().as_deref(),
        Some(r#"{"n":1}"#),
        "the old value was touched"
    );
}

#[test]
fn migrate_copies_the_old_layout_to_a_redis_cluster() {
    let single = RedisServer::start();
    let legacy = legacy_state(&single);
    let cluster = RedisCluster::start();
    let refused = cli(&cluster.url(), &["migrate"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("with --to"),
        "{}",
        describe(&refused)
    );
    let before = all_keys(&single);
    let report = migrate(&single.url(), &["--to", &cluster.url()]);
    assert_eq!(
        report,
        format!(
            "moved {} key(s) to the --to Redis (the originals are kept); 0 key(s) left because their new name exists\n",
            legacy.n_keys
        )
    );
    assert_eq!(all_keys(&single), before, "the source changed");
    let again = migrate(&single.url(), &["--to", &cluster.url()]);
    assert!(
        again.starts_with(&format!(
            "moved 0 key(s) to the --to Redis (the originals are kept); {} key(s) left because their new name exists\n",
            legacy.n_keys
        )),
        "{again}"
    );
    assert_eq!(
        again.matches("\n  left: ").count(),
        legacy.n_keys,
        "{again}"
    );
    // Once nodes run on the cluster, a copy would bring back what they consumed (the emptied
    // queue, the released lock): it is refused.
    assert_served(&cluster.url(), &legacy, || {
        refused_under_a_live_node(&single.url(), &["--to", &cluster.url()], &cluster.url());
    });
}

#[test]
fn migrate_refuses_to_copy_a_redis_onto_itself() {
    let redis = RedisServer::start();
    let legacy = legacy_state(&redis);
    let before = all_keys(&redis);
    let output = cli(&redis.url(), &["migrate", "--to", &redis.url()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("leave --to out"),
        "{}",
        describe(&output)
    );
    assert_eq!(all_keys(&redis), before);
    assert!(legacy.n_keys > 0);
}

#[test]
fn migrate_refuses_while_a_node_of_the_old_release_is_alive() {
    let redis = RedisServer::start();
    let legacy = legacy_state(&redis);
    // A node of a release before hash tags: its record in the old live set expires in a minute.
    let time = redis.command(&["TIME"]);
    let seconds: u64 = time
        .array()
        .and_then(|t| t.first()?.text())
        .expect("TIME")
        .parse()
        .expect("seconds");
    let expires = (seconds * 1000 + 60_000).to_string();
    redis.command(&["ZADD", "stellar:nodes", &expires, "old-node"]);
    let before = all_keys(&redis);
    let output = cli(&redis.url(), &["migrate"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("node(s) old-node of a release before hash tags run on"),
        "{}",
        describe(&output)
    );
    assert_eq!(all_keys(&redis), before, "nothing moved");
    // Its record gone (expired), the same run goes ahead.
    redis.command(&["ZADD", "stellar:nodes", "1", "old-node"]);
    let report = migrate(&redis.url(), &[]);
    assert!(
        report.starts_with(&format!("moved {} key(s)", legacy.n_keys)),
        "{report}"
    );
}

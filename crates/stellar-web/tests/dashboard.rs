//! The dashboard over HTTP: read-only without a secret, login, session cookie, CSRF on every
//! mutation, and the live event stream.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use stellar_core::DashboardSecret;
use stellar_tasks::{EnqueueOptions, HandlerError, TaskDefinition, Tasks};
use stellar_web::{WebConfig, always_ready};
use support::{Cluster, Node, Response, http};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECRET: &str = "dash-s3cret-value";

async fn node_with_secret(cluster: &Cluster, name: &str, secret: Option<&str>) -> Node {
    let config = WebConfig::default().with_dashboard_secret(secret.map(DashboardSecret::new));
    cluster.node_with(name, config, always_ready(), true).await
}

fn tasks(node: &Node) -> Tasks {
    node.web.context().services().tasks.clone()
}

/// Starts the workers of `node` with a task `boom` that always fails, once, and returns the id of
/// one such task once it is in the failed set.
async fn failed_task(node: &Node) -> String {
    let tasks = tasks(node);
    tasks.register(
        TaskDefinition::new("boom", |_ctx, _: Value| async move {
            Err::<(), HandlerError>("kaput".into())
        })
        .max_attempts(1),
    );
    tasks.start(&node.api);
    let id = tasks
        .enqueue("boom", &json!({}), EnqueueOptions::default())
        .await
        .expect("enqueue");
    stellar_testkit::eventually_within("the task fails", Duration::from_secs(5), async || {
        tasks
            .failed()
            .await
            .expect("failed")
            .iter()
            .any(|t| t.id == id)
    })
    .await;
    id
}

/// Logs in with `secret`: the response, and the session cookie (`name=value`) if one was set.
async fn login(node: &Node, secret: &str) -> (Response, Option<String>) {
    let body = format!("secret={secret}");
    let response = http(
        node.addr,
        "POST",
        "/dashboard/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .await;
    let cookie = response
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    (response, cookie)
}

/// The CSRF token of the session behind `cookie`.
async fn csrf(node: &Node, cookie: &str) -> String {
    let session = get(node, "/dashboard/api/session", Some(cookie)).await;
    assert_eq!(session.body["logged_in"], true, "{session:?}");
    session.body["csrf"]
        .as_str()
        .expect("a csrf token")
        .to_owned()
}

/// `GET path` on `node`, with the session `cookie` if any.
async fn get(node: &Node, path: &str, cookie: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    http(node.addr, "GET", path, &headers, b"").await
}

async fn post(node: &Node, path: &str, headers: &[(&str, &str)], body: Value) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    http(node.addr, "POST", path, &all, body.to_string().as_bytes()).await
}

#[tokio::test]
async fn without_a_secret_the_dashboard_shows_the_cluster_and_refuses_every_action() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-ro", None).await;
    let _other = node_with_secret(&cluster, "dash-ro-2", None).await;
    let id = failed_task(&node).await;

    let page = get(&node, "/dashboard", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(page.header("content-security-policy").is_some());
    let script = get(&node, "/dashboard/app.js", None).await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .is_some_and(|t| t.contains("javascript"))
    );

    let session = get(&node, "/dashboard/api/session", None).await;
    assert_eq!(session.body["mode"], "read-only");
    let snapshot = get(&node, "/dashboard/api/snapshot", None).await;
    assert_eq!(snapshot.status, 200, "{snapshot:?}");
    let nodes: Vec<&str> = snapshot.body["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    assert_eq!(nodes, ["dash-ro", "dash-ro-2"]);
    assert_eq!(snapshot.body["tasks"]["failed_now"], 1);
    let failed = get(&node, "/dashboard/api/failed", None).await;
    assert_eq!(failed.body["items"][0]["id"], id.as_str());
    assert_eq!(failed.body["items"][0]["error"], "kaput");

    for (path, body) in [
        ("/dashboard/api/failed/retry", json!({ "id": id })),
        ("/dashboard/api/failed/remove", json!({ "id": id })),
        ("/dashboard/api/failed/retry-all", json!({})),
        ("/dashboard/api/failed/remove-all", json!({})),
        ("/dashboard/api/queues/pause", json!({ "queue": "default" })),
        ("/dashboard/api/nodes/quiet", json!({ "node": "dash-ro" })),
        ("/dashboard/api/nodes/stop", json!({ "node": "dash-ro" })),
        ("/dashboard/api/scheduled/run-now", json!({ "id": id })),
        ("/dashboard/api/scheduled/delete", json!({ "id": id })),
        ("/dashboard/api/schedules/run-now", json!({ "id": "x" })),
        ("/dashboard/api/schedules/unschedule", json!({ "id": "x" })),
        ("/dashboard/api/cache/delete", json!({ "key": "k" })),
    ] {
        let response = post(&node, path, &[], body).await;
        assert_eq!(response.status, 403, "{path}: {response:?}");
        let message = response.body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("read-only") && message.contains("dashboard_secret"),
            "{message}"
        );
    }
    let (response, cookie) = login(&node, "anything").await;
    assert_eq!(response.status, 403);
    assert!(cookie.is_none());
    let tasks = tasks(&node);
    assert_eq!(
        tasks.failed().await.expect("failed").len(),
        1,
        "nothing changed"
    );
    assert!(tasks.paused_queues().await.expect("paused").is_empty());
    assert!(!tasks.is_quiet());
}

#[tokio::test]
async fn a_login_opens_an_http_only_strict_session_and_the_secret_is_never_shown() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-login", Some(SECRET)).await;

    let session = get(&node, "/dashboard/api/session", None).await;
    assert_eq!(
        session.body,
        json!({ "mode": "login", "logged_in": false, "node_id": "dash-login" })
    );
    for path in [
        "/dashboard/api/snapshot",
        "/dashboard/api/failed",
        "/dashboard/api/events",
    ] {
        let response = get(&node, path, None).await;
        assert_eq!(response.status, 403, "{path} needs a session: {response:?}");
    }

    let (wrong, cookie) = login(&node, "not-the-secret").await;
    assert_eq!(wrong.status, 401);
    assert!(cookie.is_none(), "{wrong:?}");

    let (right, cookie) = login(&node, SECRET).await;
    assert_eq!(right.status, 303, "{right:?}");
    assert_eq!(right.header("location"), Some("/dashboard"));
    let set_cookie = right.header("set-cookie").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains(SECRET));
    let cookie = cookie.expect("cookie");
    let token = cookie.split_once('=').expect("name=value").1;
    assert_eq!(token.len(), 64, "a 256-bit random token");

    let csrf = csrf(&node, &cookie).await;
    assert_ne!(csrf, token);
    let snapshot = get(&node, "/dashboard/api/snapshot", Some(&cookie)).await;
    assert_eq!(snapshot.status, 200);
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/dashboard/app.css",
        "/dashboard/api/session",
        "/dashboard/api/snapshot",
    ] {
        let response = get(&node, path, Some(&cookie)).await;
        assert!(
            !format!("{response:?}").contains(SECRET),
            "{path} shows the secret"
        );
    }
    let forged = get(
        &node,
        "/dashboard/api/snapshot",
        Some("stellar_dashboard=00ff"),
    )
    .await;
    assert_eq!(forged.status, 403);

    // Logging out (itself CSRF-checked) ends the session on the server.
    let refused = post(
        &node,
        "/dashboard/logout",
        &[("cookie", &cookie)],
        json!({}),
    )
    .await;
    assert_eq!(refused.status, 403);
    let out = post(
        &node,
        "/dashboard/logout",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        json!({}),
    )
    .await;
    assert_eq!(out.status, 200, "{out:?}");
    let after = get(&node, "/dashboard/api/snapshot", Some(&cookie)).await;
    assert_eq!(after.status, 403);
}

#[tokio::test]
async fn every_mutation_needs_a_session_and_its_csrf_token_and_changes_nothing_without() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-csrf", Some(SECRET)).await;
    let id = failed_task(&node).await;
    let tasks = tasks(&node);
    let (_, cookie) = login(&node, SECRET).await;
    let cookie = cookie.expect("cookie");
    let (_, other_cookie) = login(&node, SECRET).await;
    let other_csrf = csrf(&node, other_cookie.as_deref().expect("cookie")).await;
    let csrf = csrf(&node, &cookie).await;

    let mutations = [
        ("/dashboard/api/failed/retry", json!({ "id": id })),
        ("/dashboard/api/failed/remove", json!({ "id": id })),
        ("/dashboard/api/failed/retry-all", json!({})),
        ("/dashboard/api/failed/remove-all", json!({})),
        ("/dashboard/api/queues/pause", json!({ "queue": "default" })),
        (
            "/dashboard/api/queues/resume",
            json!({ "queue": "default" }),
        ),
        ("/dashboard/api/nodes/quiet", json!({ "node": "dash-csrf" })),
        ("/dashboard/api/nodes/stop", json!({ "node": "dash-csrf" })),
        ("/dashboard/api/scheduled/run-now", json!({ "id": id })),
        ("/dashboard/api/scheduled/delete", json!({ "id": id })),
        ("/dashboard/api/schedules/run-now", json!({ "id": "x" })),
        ("/dashboard/api/schedules/unschedule", json!({ "id": "x" })),
        ("/dashboard/api/cache/delete", json!({ "key": "k" })),
    ];
    let refusals: [(&str, Vec<(&str, &str)>); 4] = [
        ("no session", vec![("x-csrf-token", &csrf)]),
        ("no csrf token", vec![("cookie", &cookie)]),
        (
            "a wrong csrf token",
            vec![("cookie", &cookie), ("x-csrf-token", "0123")],
        ),
        (
            "another session's token",
            vec![("cookie", &cookie), ("x-csrf-token", &other_csrf)],
        ),
    ];
    for (path, body) in &mutations {
        for (why, headers) in &refusals {
            let response = post(&node, path, headers, body.clone()).await;
            assert_eq!(response.status, 403, "{path} with {why}: {response:?}");
        }
    }
    assert_eq!(
        tasks.failed().await.expect("failed").len(),
        1,
        "nothing changed"
    );
    assert!(tasks.paused_queues().await.expect("paused").is_empty());
    assert!(!tasks.is_quiet());
    assert!(
        node.api.state() < stellar_core::NodeState::Stopping,
        "not stopped"
    );

    let ok = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let paused = post(
        &node,
        "/dashboard/api/queues/pause",
        &ok,
        json!({ "queue": "mail" }),
    )
    .await;
    assert_eq!(
        (paused.status, &paused.body["paused"]),
        (200, &json!(true)),
        "{paused:?}"
    );
    assert!(
        tasks
            .paused_queues()
            .await
            .expect("paused")
            .contains("mail")
    );
    let snapshot = get(&node, "/dashboard/api/snapshot", Some(&cookie)).await;
    let mail = snapshot.body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "mail")
        .cloned();
    assert_eq!(
        mail,
        Some(json!({ "name": "mail", "depth": 0, "oldest_ms": 0, "paused": true }))
    );
    let resumed = post(
        &node,
        "/dashboard/api/queues/resume",
        &ok,
        json!({ "queue": "mail" }),
    )
    .await;
    assert_eq!(resumed.body["resumed"], true);
    assert!(tasks.paused_queues().await.expect("paused").is_empty());

    let quiet = post(
        &node,
        "/dashboard/api/nodes/quiet",
        &ok,
        json!({ "node": "dash-csrf" }),
    )
    .await;
    assert_eq!(
        quiet.body,
        json!({ "node_id": "dash-csrf", "quiet": true }),
        "{quiet:?}"
    );
    assert!(tasks.is_quiet());
    let snapshot = get(&node, "/dashboard/api/snapshot", Some(&cookie)).await;
    assert_eq!(snapshot.body["nodes"][0]["state"], "quiet", "{snapshot:?}");
    let loud = post(
        &node,
        "/dashboard/api/nodes/quiet",
        &ok,
        json!({ "node": "dash-csrf", "quiet": false }),
    )
    .await;
    assert_eq!(loud.body["quiet"], false);
    assert!(!tasks.is_quiet());

    let retried = post(
        &node,
        "/dashboard/api/failed/retry",
        &ok,
        json!({ "id": id }),
    )
    .await;
    assert_eq!(retried.body["retried"], true, "{retried:?}");
    stellar_testkit::eventually_within("it fails again", Duration::from_secs(5), async || {
        tasks.failed().await.expect("failed").len() == 1
    })
    .await;
    let removed = post(&node, "/dashboard/api/failed/remove-all", &ok, json!({})).await;
    assert_eq!(removed.body["removed"], 1, "{removed:?}");
    assert!(tasks.failed().await.expect("failed").is_empty());
}

#[tokio::test]
async fn the_event_stream_pushes_a_snapshot_every_second() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-sse", Some(SECRET)).await;
    let (_, cookie) = login(&node, SECRET).await;
    let cookie = cookie.expect("cookie");
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    let request = format!(
        "GET /dashboard/api/events HTTP/1.1\r\nHost: test\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut seen = String::new();
    let read = async {
        let mut buf = [0_u8; 4096];
        while seen.matches("event: snapshot").count() < 2 {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(Duration::from_secs(4), read)
        .await
        .expect("two snapshots within 4 s");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    let data = seen
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data line");
    let snapshot: Value = serde_json::from_str(data).expect("json");
    assert_eq!(snapshot["nodes"][0]["id"], "dash-sse");
    assert_eq!(snapshot["nodes"][0]["state"], "running");

    // The stream ends with its session, not only when the browser leaves.
    let csrf = csrf(&node, &cookie).await;
    let out = http(
        node.addr,
        "POST",
        "/dashboard/logout",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        b"",
    )
    .await;
    assert!(out.status < 400, "{out:?}");
    let ended = async {
        let mut buf = [0_u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            let text = String::from_utf8_lossy(&buf[..n]);
            if n == 0 || text.contains("\r\n0\r\n\r\n") || text.starts_with("0\r\n") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(4), ended)
        .await
        .expect("the stream ends after logout");
}

/// Parallel guesses share one node-wide budget of failed logins a second: past it a login is
/// refused (429) without being checked, and the right secret works again a second later.
#[tokio::test]
async fn parallel_login_guesses_are_throttled_node_wide() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-throttle", Some(SECRET)).await;
    let guesses: Vec<_> = (0..12)
        .map(|n| {
            let node = &node;
            async move { login(node, &format!("guess-number-{n:04}")).await.0.status }
        })
        .collect();
    let statuses = futures_util::future::join_all(guesses).await;
    assert!(
        statuses.contains(&429),
        "no guess was throttled: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (right, cookie) = login(&node, SECRET).await;
    assert_eq!(right.status, 303, "{right:?}");
    assert!(cookie.is_some());
}

/// User data on `node`: a task `later` delayed by an hour with `task_args`, its schedule
/// `hourly` with `schedule_args`, and the cache entry `key` holding `value`. Returns the task
/// system, the delayed task's id and the cache.
async fn user_data(
    node: &Node,
    task_args: Value,
    schedule_args: Value,
    (key, value): (&str, &str),
) -> (Tasks, String, stellar_cache::Cache) {
    let tasks = tasks(node);
    tasks.register(TaskDefinition::new("later", |_ctx, _: Value| async move {
        Ok::<(), HandlerError>(())
    }));
    let later = tasks
        .enqueue_in(
            Duration::from_secs(3600),
            "later",
            &task_args,
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    let hourly = stellar_tasks::Recurrence::every(Duration::from_secs(3600));
    let options = stellar_tasks::ScheduleOptions::default().id("hourly");
    tasks
        .schedule("later", &schedule_args, hourly, options)
        .await
        .expect("schedule");
    let cache = node.web.context().services().cache.clone();
    cache
        .save(key, &value, Some(Duration::from_secs(60)))
        .await
        .expect("save");
    (tasks, later, cache)
}

/// The tasks, scheduled and cache pages: reads need a session, each mutation its CSRF token;
/// with both, run now, delete and unschedule act.
#[tokio::test]
async fn the_task_scheduled_and_cache_endpoints_read_with_a_session_and_act_with_csrf() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-pages", Some(SECRET)).await;
    let (tasks, later, cache) = user_data(
        &node,
        json!({ "to": "<b>ada</b>" }),
        json!(1),
        ("page:k", "v"),
    )
    .await;

    let reads = [
        format!("/dashboard/api/task?id={later}"),
        "/dashboard/api/scheduled".to_owned(),
        "/dashboard/api/cache/keys?prefix=page%3A".to_owned(),
        "/dashboard/api/cache/value?key=page%3Ak".to_owned(),
    ];
    for path in &reads {
        let response = get(&node, path, None).await;
        assert_eq!(response.status, 403, "{path} needs a session: {response:?}");
    }
    let (_, cookie) = login(&node, SECRET).await;
    let cookie = cookie.expect("cookie");
    let csrf = csrf(&node, &cookie).await;
    let read = async |path: &str| get(&node, path, Some(&cookie)).await;

    let found = read(&reads[0]).await;
    assert_eq!(found.body["task"]["state"], "delayed", "{found:?}");
    assert_eq!(found.body["task"]["args"], r#"{"to":"<b>ada</b>"}"#);
    assert_eq!(found.body["task"]["args_hidden"], false);
    let events: Vec<&Value> = found.body["task"]["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| &e["event"])
        .collect();
    assert_eq!(events, ["enqueued", "due"]);
    let missing = read("/dashboard/api/task?id=nope").await;
    assert_eq!(missing.body, json!({ "id": "nope", "task": null }));
    let scheduled = read(&reads[1]).await;
    assert_eq!(scheduled.body["delayed"][0]["id"], later.as_str());
    assert_eq!(scheduled.body["schedules"][0]["id"], "hourly");
    assert_eq!(
        scheduled.body["schedules"][0]["args"], "1",
        "a session sees arguments"
    );
    assert!(
        scheduled.body["schedules"][0]["next_run_at_ms"]
            .as_u64()
            .is_some()
    );
    let keys = read(&reads[2]).await;
    assert_eq!(keys.body["keys"][0]["key"], "page:k", "{keys:?}");
    assert_eq!(keys.body["truncated"], false);
    let value = read(&reads[3]).await;
    assert_eq!(
        (&value.body["text"], &value.body["kind"]),
        (&json!(r#""v""#), &json!("value"))
    );

    let no_csrf = [("cookie", cookie.as_str())];
    let ok = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let run = post(
        &node,
        "/dashboard/api/scheduled/run-now",
        &no_csrf,
        json!({ "id": later }),
    )
    .await;
    assert_eq!(run.status, 403);
    let run = post(
        &node,
        "/dashboard/api/scheduled/run-now",
        &ok,
        json!({ "id": later }),
    )
    .await;
    assert_eq!(run.body["queued"], true, "{run:?}");
    assert_eq!(
        tasks.show(&later).await.expect("show").map(|t| t.state),
        Some(stellar_tasks::TaskState::Queued)
    );
    // No longer delayed: deleting it as a delayed task is refused (409) and leaves it queued.
    let refused = post(
        &node,
        "/dashboard/api/scheduled/delete",
        &ok,
        json!({ "id": later }),
    )
    .await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "conflict");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no longer delayed")),
        "{refused:?}"
    );
    assert_eq!(
        tasks.show(&later).await.expect("show").map(|t| t.state),
        Some(stellar_tasks::TaskState::Queued)
    );
    let doomed = tasks
        .enqueue_in(
            Duration::from_secs(3600),
            "later",
            &json!(2),
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue");
    let deleted = post(
        &node,
        "/dashboard/api/scheduled/delete",
        &ok,
        json!({ "id": doomed }),
    )
    .await;
    assert_eq!(deleted.body["deleted"], true, "{deleted:?}");
    assert!(tasks.show(&doomed).await.expect("show").is_none());
    let deleted = post(
        &node,
        "/dashboard/api/cache/delete",
        &ok,
        json!({ "key": "page:k" }),
    )
    .await;
    assert_eq!(deleted.body["deleted"], true, "{deleted:?}");
    assert!(cache.peek("page:k").await.expect("peek").is_none());
    let gone = post(
        &node,
        "/dashboard/api/schedules/unschedule",
        &ok,
        json!({ "id": "hourly" }),
    )
    .await;
    assert_eq!(gone.body["removed"], true, "{gone:?}");
    assert!(tasks.schedules().await.expect("schedules").is_empty());
}

/// Read-only mode (no secret) answers anyone who reaches the port: it shows the cluster's shape,
/// never user data. Task and schedule arguments are left out (and said to be hidden), a cache
/// value is refused; the key listing (names, kinds, sizes) stays readable.
#[tokio::test]
async fn a_read_only_dashboard_never_shows_arguments_or_cache_values() {
    let cluster = Cluster::new();
    let node = node_with_secret(&cluster, "dash-ro-data", None).await;
    let (_, later, _) = user_data(
        &node,
        json!({ "card": "4111-secret" }),
        json!({ "token": "schedule-secret" }),
        ("ro:k", "cache-secret"),
    )
    .await;

    let task = get(&node, &format!("/dashboard/api/task?id={later}"), None).await;
    assert_eq!(task.status, 200, "{task:?}");
    assert_eq!(task.body["task"]["state"], "delayed");
    assert_eq!(task.body["task"]["args"], Value::Null);
    assert_eq!(task.body["task"]["args_hidden"], true);
    assert!(!task.body.to_string().contains("4111-secret"), "{task:?}");

    let scheduled = get(&node, "/dashboard/api/scheduled", None).await;
    assert_eq!(scheduled.status, 200, "{scheduled:?}");
    assert_eq!(scheduled.body["delayed"][0]["id"], later.as_str());
    let schedule = &scheduled.body["schedules"][0];
    assert_eq!(schedule["id"], "hourly");
    assert_eq!(
        (&schedule["args"], &schedule["args_hidden"]),
        (&Value::Null, &json!(true))
    );
    let all = scheduled.body.to_string();
    assert!(
        !all.contains("schedule-secret") && !all.contains("4111-secret"),
        "{all}"
    );

    let keys = get(&node, "/dashboard/api/cache/keys?prefix=ro%3A", None).await;
    assert_eq!(keys.body["keys"][0]["key"], "ro:k", "{keys:?}");
    let value = get(&node, "/dashboard/api/cache/value?key=ro%3Ak", None).await;
    assert_eq!(value.status, 403, "{value:?}");
    let message = value.body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("logged-in") && message.contains("dashboard_secret"),
        "{message}"
    );
    assert!(!value.body.to_string().contains("cache-secret"));
}

//! `GET /metrics` on a running node, parsed with a Prometheus text parser: values move as tasks
//! run, requests are served and forged bus messages arrive; the cluster-wide gauges come from
//! the scheduler leader only; expired leases are counted as reaped.

mod support;

use std::{collections::HashSet, time::Duration};

use prometheus_parse::Scrape;
use stellar_bus::{Bus, BusSettings, RedisConfig, RedisPool};
use stellar_core::{Api, Config, NodeId, ServerToken};
use stellar_tasks::{
    RedisTaskStore, TaskState,
    store::{ClaimRequest, TaskQueue},
};
use stellar_testkit::RedisServer;
use support::{
    config, enqueue, get, histogram_count, scrape, scrape_until, start, value, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_tasks_run_requests_arrive_and_forgeries_are_refused() {
    let node = start("metrics-a", None).await;
    let before = scrape(&node).await;
    assert_eq!(value(&before, "stellar_node_ready", &[]), Some(1.0));
    assert_eq!(
        value(
            &before,
            "stellar_node_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    let ok = [("queue", "default"), ("task", "metrics.ok")];
    assert_eq!(value(&before, "stellar_tasks_processed_total", &ok), None);

    let ids = enqueue(&node, "metrics.ok", 5, None).await;
    let failing = enqueue(&node, "metrics.fail", 1, None).await;
    wait_for(&node, &ids, TaskState::Completed).await;
    wait_for(&node, &failing, TaskState::Failed).await;
    let (status, _) = get(node.http_addr().expect("http"), "/api/status").await;
    assert_eq!(status, 200);
    let (status, _) = get(node.http_addr().expect("http"), "/api/no.such.action").await;
    assert_eq!(status, 404);

    // A message signed with another token: the bus refuses it as badly signed.
    let forger = Api::new(Config {
        server_token: ServerToken::new("not-the-token"),
        ..config("forger", None)
    });
    let forged = Bus::start(
        &forger,
        node.transport().clone(),
        BusSettings::from(forger.config()),
    )
    .await
    .expect("forger's bus");
    forged
        .publish("stellar.test", &"forged")
        .await
        .expect("publish");
    let bad = [("reason", "bad_signature")];
    let after = scrape_until(&node, "forgery not counted", |s| {
        value(s, "stellar_bus_messages_rejected_total", &bad) == Some(1.0)
    })
    .await;

    assert_eq!(
        value(&after, "stellar_tasks_processed_total", &ok),
        Some(5.0)
    );
    assert_eq!(
        histogram_count(&after, "stellar_task_run_duration_seconds", &ok),
        Some(5.0)
    );
    assert_eq!(
        value(&after, "stellar_task_run_duration_seconds_count", &ok),
        Some(5.0)
    );
    assert_eq!(
        histogram_count(&after, "stellar_task_queue_wait_seconds", &ok),
        Some(5.0)
    );
    let fail = [("queue", "default"), ("task", "metrics.fail")];
    assert_eq!(
        value(&after, "stellar_tasks_retried_total", &fail),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "stellar_tasks_failed_total", &fail),
        Some(1.0)
    );
    assert_eq!(
        histogram_count(&after, "stellar_task_run_duration_seconds", &fail),
        Some(2.0)
    );
    assert_eq!(
        value(
            &after,
            "stellar_http_requests_total",
            &[("action", "status"), ("status", "200")]
        ),
        Some(1.0)
    );
    // A name no action has is not a label value of its own.
    assert_eq!(
        value(
            &after,
            "stellar_http_requests_total",
            &[("action", "unknown"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &after,
            "stellar_http_requests_total",
            &[("action", "/metrics")]
        )
        .is_some_and(|v| v >= 1.0),
        "scrapes are counted"
    );
    assert_eq!(value(&after, "stellar_scheduler_leader", &[]), Some(1.0));
    assert_eq!(value(&after, "stellar_tasks_running", &[]), Some(0.0));
    assert!(value(&after, "stellar_bus_messages_accepted_total", &[]).is_some());

    // No label value is a task id (nor any other per-task or per-request value).
    let ids: HashSet<&String> = ids.iter().chain(&failing).collect();
    for sample in &after.samples {
        for (label, value) in sample.labels.iter() {
            assert!(
                !ids.contains(value),
                "{} has the task id {value} as {label}",
                sample.metric
            );
        }
    }
    forger.shutdown().await.expect("forger stops");
    node.shutdown().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_gauges_come_from_the_scheduler_leader_only() {
    let server = RedisServer::start();
    let a = start("metrics-leader-a", Some(server.url())).await;
    let b = start("metrics-leader-b", Some(server.url())).await;
    // Tasks in a queue neither node serves wait there; a failing task lands in the failed set.
    enqueue(&a, "metrics.ok", 3, Some("unserved")).await;
    let failing = enqueue(&a, "metrics.fail", 1, None).await;
    wait_for(&a, &failing, TaskState::Failed).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let depth = [("queue", "unserved")];
    let (leader, follower) = loop {
        let (sa, sb) = (scrape(&a).await, scrape(&b).await);
        let leads = |s: &Scrape| value(s, "stellar_scheduler_leader", &[]) == Some(1.0);
        let settled = |s: &Scrape| {
            value(s, "stellar_queue_depth", &depth) == Some(3.0)
                && value(s, "stellar_tasks_failed_set_size", &[]) == Some(1.0)
        };
        match (leads(&sa), leads(&sb)) {
            (true, false) if settled(&sa) => break (sa, sb),
            (false, true) if settled(&sb) => break (sb, sa),
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader exported the backlog"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        value(&leader, "stellar_queue_oldest_task_age_seconds", &depth)
            .is_some_and(|age| age >= 0.0)
    );
    assert!(value(&leader, "stellar_tasks_in_flight", &[]).is_some());
    assert!(value(&leader, "stellar_tasks_delayed", &[]).is_some());
    for family in [
        "stellar_queue_depth",
        "stellar_queue_oldest_task_age_seconds",
        "stellar_tasks_failed_set_size",
        "stellar_tasks_in_flight",
        "stellar_tasks_delayed",
    ] {
        assert!(
            follower.samples.iter().all(|s| s.metric != family),
            "{family} exported by a node that does not lead"
        );
    }
    // Redis families exist on a Redis node.
    assert!(
        value(
            &leader,
            "stellar_redis_command_errors_total",
            &[("kind", "timeout")]
        )
        .is_some()
    );
    a.shutdown().await.expect("a stops");
    b.shutdown().await.expect("b stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_lease_expires_is_counted_as_reaped_by_queue_and_task() {
    let server = RedisServer::start();
    let node = start("metrics-reaper", Some(server.url())).await;
    // A task in a queue the node does not serve, claimed straight through the store by a node
    // that then vanishes (never renews): the running node's maintenance takes it back.
    let id = enqueue(&node, "metrics.ok", 1, Some("lost"))
        .await
        .remove(0);
    let pool = RedisPool::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    let claimed = RedisTaskStore::new(pool)
        .claim(&ClaimRequest {
            queues: vec!["lost".to_owned()],
            node: NodeId::new("vanished").expect("id"),
            lease: Duration::from_millis(100),
            max: 1,
            names: vec!["metrics.ok".to_owned()].into(),
            request_id: "vanished-claim".to_owned(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "the task was claimed");

    let reaped = [
        ("queue", "lost"),
        ("task", "metrics.ok"),
        ("outcome", "requeued"),
    ];
    let after = scrape_until(&node, "the expired lease was not counted", |s| {
        value(s, "stellar_tasks_reaped_total", &reaped) == Some(1.0)
    })
    .await;
    assert_eq!(
        value(
            &after,
            "stellar_tasks_reaped_total",
            &[("outcome", "failed")]
        ),
        None,
        "it had attempts left"
    );
    let shown = node
        .tasks()
        .show(&id)
        .await
        .expect("show")
        .expect("a record");
    assert_eq!(shown.state, TaskState::Queued, "back in its queue");
    node.shutdown().await.expect("node stops");
}

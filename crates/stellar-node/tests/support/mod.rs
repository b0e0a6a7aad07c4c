//! Helpers of the node's metrics tests: a node on HTTP, a plain GET, scrapes parsed with a
//! Prometheus text parser, and the lookups the tests make in them.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use prometheus_parse::{Sample, Scrape, Value};
use stellar_core::{Config, NodeId, ServerToken};
use stellar_node::Node;
use stellar_tasks::{EnqueueOptions, TaskDefinition, TaskState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) fn config(id: &str, redis_url: Option<String>) -> Config {
    Config {
        id: Some(NodeId::new(id).expect("valid id")),
        server_token: ServerToken::new("metrics-test-token"),
        redis_url,
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        shutdown_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

pub(crate) fn task_types() -> Vec<TaskDefinition> {
    vec![
        TaskDefinition::new("metrics.ok", |_ctx, _args: serde_json::Value| async {
            Ok(())
        }),
        TaskDefinition::new("metrics.fail", |_ctx, _args: serde_json::Value| async {
            Err("failing on purpose".into())
        })
        .max_attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(10)),
    ]
}

pub(crate) async fn start(id: &str, redis_url: Option<String>) -> Node {
    Node::builder(config(id, redis_url))
        .tasks(task_types())
        .start()
        .await
        .expect("node starts")
}

/// A plain HTTP/1.1 GET; the status and body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// Scrapes `node` and parses the exposition.
pub(crate) async fn scrape(node: &Node) -> Scrape {
    let (status, body) = get(node.http_addr().expect("serves HTTP"), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).expect("valid exposition")
}

/// The value of the counter, gauge or untyped sample `metric` whose labels include `labels`.
pub(crate) fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && has(s, labels))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

pub(crate) fn has(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
}

/// The `+Inf` bucket of the histogram `metric` with `labels`.
pub(crate) fn histogram_count(
    scrape: &Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && has(s, labels))
        .and_then(|s| match &s.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        })
}

/// Scrapes `node` until `settled` holds for the scrape (or panics after 10 s, naming `what`).
pub(crate) async fn scrape_until(
    node: &Node,
    what: &str,
    settled: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = scrape(node).await;
        if settled(&scrape) {
            return scrape;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn wait_for(node: &Node, ids: &[String], state: TaskState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for id in ids {
        loop {
            let shown = node.tasks().show(id).await.expect("show");
            if shown.map(|t| t.state) == Some(state) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} not {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) async fn enqueue(node: &Node, name: &str, n: usize, queue: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let options = EnqueueOptions {
            queue: queue.map(str::to_owned),
            ..EnqueueOptions::default()
        };
        let id = node
            .tasks()
            .enqueue(name, &serde_json::json!({ "i": i }), options)
            .await
            .expect("enqueue");
        ids.push(id);
    }
    ids
}

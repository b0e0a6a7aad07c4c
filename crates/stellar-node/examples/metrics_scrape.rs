//! Measures a scrape of `GET /metrics` on a node that has run tasks of 20 names across 50
//! queues (every pair once: 1000 label pairs per task family), beside a `GET /healthz` on the
//! same node: both over a fresh loopback connection each, as Prometheus scrapes.
//!
//! ```text
//! cargo run --release -p stellar-node --example metrics_scrape -- [SCRAPES]
//! ```
//!
//! Prints the p50 of each in ms as a `BENCH` line (`cargo xtask bench` collects it).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use stellar_core::{Config, NodeId, ServerToken};
use stellar_node::Node;
use stellar_tasks::{EnqueueOptions, TaskDefinition};
use stellar_testkit::bench::report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUEUES: usize = 50;
const NAMES: usize = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scrapes: usize = std::env::args().nth(1).map_or(Ok(200), |n| n.parse())?;
    let (_owned, url) = stellar_testkit::bench::redis();
    let queues: Vec<String> = (0..QUEUES).map(|q| format!("q{q:02}")).collect();
    let names: Vec<String> = (0..NAMES).map(|n| format!("bench.t{n:02}")).collect();
    let config = Config {
        id: Some(NodeId::new("bench-metrics")?),
        server_token: ServerToken::new("bench-metrics-token"),
        redis_url: Some(url),
        http_addr: Some("127.0.0.1:0".parse()?),
        task_queues: queues.clone(),
        ..Config::default()
    };
    let definitions = names.iter().map(|name| {
        TaskDefinition::new(name.clone(), |_ctx, _args: serde_json::Value| async {
            Ok(())
        })
    });
    let node = Node::builder(config).tasks(definitions).start().await?;
    let addr = node.http_addr().ok_or("the node serves no HTTP")?;
    for queue in &queues {
        for name in &names {
            let options = EnqueueOptions {
                queue: Some(queue.clone()),
                ..EnqueueOptions::default()
            };
            node.tasks()
                .enqueue(name, &serde_json::Value::Null, options)
                .await?;
        }
    }
    let total = (QUEUES * NAMES) as u64;
    while node.tasks().stats().await?.processed < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Until the leader exports every queue's gauges (it reads the backlog every 2 s).
    let last = format!("stellar_queue_depth{{queue=\"q{:02}\"}}", QUEUES - 1);
    while !get(addr, "/metrics").await?.contains(&last) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = get(addr, "/metrics").await?;
    eprintln!(
        "metrics_scrape: {} bytes, {} lines after {total} tasks",
        body.len(),
        body.lines().count()
    );

    let metrics = measure(addr, "/metrics", scrapes).await?;
    let healthz = measure(addr, "/healthz", scrapes).await?;
    report(
        "metrics.scrape_ms",
        "ms",
        metrics,
        "web.healthz_ms",
        healthz,
    );
    node.shutdown().await?;
    Ok(())
}

/// The p50 of `n` GETs of `path`, in ms (after a few untimed ones).
async fn measure(
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    for _ in 0..10 {
        get(addr, path).await?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        get(addr, path).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A plain HTTP/1.1 GET on a fresh connection; the body of a 200 answer.
async fn get(addr: SocketAddr, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {head}").into());
    }
    Ok(body.to_owned())
}

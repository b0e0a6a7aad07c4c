//! Measures `do_cluster` round trips on loopback: three nodes in this process, each with its own
//! Redis connections, on a `redis-server` started for the run.
//!
//! ```text
//! cargo run --release -p stellar-rpc --example rpc_latency -- [CALLS]
//! ```
//!
//! Prints p50/p99 for a call to one node and to all three, next to a raw
//! PUBLISH -> SUBSCRIBE -> PUBLISH round trip through the same Redis.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::Value;
use stellar_bus::{
    Bus, BusSettings, Membership, MembershipSettings, RedisConfig, RedisMembershipStore, RedisPool,
    RedisTransport,
};
use stellar_core::{Api, Config, NodeId, ServerToken};
use stellar_rpc::{Rpc, RpcSettings, Target, Wait};
use stellar_testkit::bench::report;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: usize = std::env::args().nth(1).map_or(Ok(2000), |n| n.parse())?;
    let (_owned, url) = stellar_testkit::bench::redis();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(node(id, &url.clone()).await?);
    }
    let caller = &nodes[0].1;
    let n2 = NodeId::new("n2")?;
    for _ in 0..200 {
        caller
            .do_cluster(
                "api.ping",
                Value::Null,
                Target::Node(n2.clone()),
                Wait::First,
                None,
            )
            .await?;
    }
    let one = measure(calls, || async {
        caller
            .do_cluster(
                "api.ping",
                Value::Null,
                Target::Node(n2.clone()),
                Wait::First,
                None,
            )
            .await
            .map(drop)
    })
    .await?;
    let all = measure(calls, || async {
        caller
            .do_cluster("api.ping", Value::Null, Target::All, Wait::All, None)
            .await
            .map(drop)
    })
    .await?;
    let raw = raw_round_trip(&url.clone(), calls).await?;
    let (raw50, raw99) = (percentile(&raw, 50.0), percentile(&raw, 99.0));
    let baseline = (
        "redis.pubsub_round_trip_p50_ms",
        "redis.pubsub_round_trip_p99_ms",
    );
    report(
        "rpc.one_p50_ms",
        "ms",
        percentile(&one, 50.0),
        baseline.0,
        raw50,
    );
    report(
        "rpc.one_p99_ms",
        "ms",
        percentile(&one, 99.0),
        baseline.1,
        raw99,
    );
    report(
        "rpc.all_p50_ms",
        "ms",
        percentile(&all, 50.0),
        baseline.0,
        raw50,
    );
    report(
        "rpc.all_p99_ms",
        "ms",
        percentile(&all, 99.0),
        baseline.1,
        raw99,
    );
    println!("calls per figure: {calls}");
    println!("{:<32} {:>10} {:>10}", "figure", "p50 ms", "p99 ms");
    for (name, samples) in [
        ("raw publish->subscribe->publish", &raw),
        ("rpc one node (n1 -> n2)", &one),
        ("rpc all 3 nodes (wait all)", &all),
    ] {
        println!(
            "{name:<32} {:>10.3} {:>10.3}",
            percentile(samples, 50.0),
            percentile(samples, 99.0)
        );
    }
    println!(
        "ratio one/raw p50: {:.2}   all/raw p50: {:.2}",
        percentile(&one, 50.0) / percentile(&raw, 50.0),
        percentile(&all, 50.0) / percentile(&raw, 50.0)
    );
    for (api, _) in &nodes {
        api.shutdown().await?;
    }
    Ok(())
}

async fn node(id: &str, url: &str) -> Result<(Api, Rpc), Box<dyn std::error::Error>> {
    let api = Api::new(Config {
        id: Some(NodeId::new(id)?),
        server_token: ServerToken::new("bench"),
        redis_url: Some(url.to_owned()),
        ..Config::default()
    });
    let pool = RedisPool::connect(RedisConfig::new(url)).await?;
    let transport = RedisTransport::connect(pool.clone(), api.cancellation_token()).await?;
    let bus = Bus::start(&api, Arc::new(transport), BusSettings::from(api.config())).await?;
    let store = Arc::new(RedisMembershipStore::new(pool));
    let membership = Membership::new(store, &api, MembershipSettings::from(api.config()));
    membership.join(&api).await?;
    let rpc = Rpc::new(bus, membership, RpcSettings::from(api.config()));
    rpc.serve();
    Ok((api, rpc))
}

async fn measure<F, Fut, E>(calls: usize, mut call: F) -> Result<Vec<f64>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

/// A request and its reply as bare pub/sub: PUBLISH on one channel, an echo task that
/// SUBSCRIBEs and PUBLISHes back, and the caller waiting on the reply channel.
async fn raw_round_trip(url: &str, calls: usize) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let (mut echo_sink, mut echo_stream) = client.get_async_pubsub().await?.split();
    echo_sink.subscribe("raw:request").await?;
    let mut echo_conn = client.get_multiplexed_async_connection().await?;
    let echo = tokio::spawn(async move {
        while let Some(message) = echo_stream.next().await {
            let payload = message.get_payload_bytes().to_vec();
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg("raw:reply")
                .arg(payload)
                .query_async(&mut echo_conn)
                .await;
        }
    });
    let (mut sink, mut replies) = client.get_async_pubsub().await?.split();
    sink.subscribe("raw:reply").await?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let payload = vec![7_u8; 200];
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls + 200 {
        let started = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("raw:request")
            .arg(&payload)
            .query_async(&mut conn)
            .await?;
        tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await?
            .ok_or("reply stream ended")?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    echo.abort();
    Ok(samples.split_off(200))
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index]
}

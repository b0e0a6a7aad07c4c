//! `stellar run`: one node, from start to a graceful stop.

use std::sync::Arc;

use anyhow::{Context, Result};
use stellar_bus::{MemoryTransport, RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, Config, StopSignals};
use tracing::{error, info, warn};

use crate::app::{NodeContext, Setup};

/// Starts a node, waits for a stop signal (or a stop from inside), and stops it gracefully.
pub(crate) async fn run(config: Config, setups: &[Setup]) -> Result<()> {
    config.check_shared_backend()?;
    let api = Api::new(config);
    let node = connect(&api).await?;
    api.insert(node.transport.clone());
    for setup in setups {
        setup(&node).context("node set-up hook failed")?;
    }
    let mut signals = StopSignals::install().context("installing signal handlers")?;
    api.set_ready();
    let backend = if node.shared { "redis" } else { "memory" };
    info!(node_id = %api.node_id(), backend, pid = std::process::id(), "node ready");

    let reason = tokio::select! {
        signal = signals.recv() => signal.to_string(),
        () = api.stop_requested() => "stop requested".to_owned(),
    };
    info!(node_id = %api.node_id(), %reason, timeout_ms = api.config().shutdown_timeout.as_millis() as u64, "shutdown begun");
    tokio::spawn(async move {
        let signal = signals.recv().await;
        error!(%signal, "second signal during shutdown, exiting now");
        std::process::exit(130);
    });
    api.shutdown().await.context("graceful shutdown")?;
    Ok(())
}

/// Connects the node's backend: Redis if a URL is configured, the embedded one otherwise.
async fn connect(api: &Api) -> Result<NodeContext> {
    let Some(redis) = RedisConfig::from_config(api.config()) else {
        warn!(
            node_id = %api.node_id(),
            "running on the embedded in-memory backend: state is not shared with other nodes; \
             to join a cluster, start every node with --redis URL (or STELLAR_REDIS_URL) and the same server token"
        );
        let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
        return Ok(NodeContext {
            api: api.clone(),
            transport,
            shared: false,
        });
    };
    let pool = RedisPool::connect(redis)
        .await
        .context("starting the node")?;
    let url = pool.redacted_url().to_owned();
    let transport = RedisTransport::connect(pool, api.cancellation_token())
        .await
        .context("starting the node's subscriber")?;
    info!(node_id = %api.node_id(), %url, "connected to redis");
    Ok(NodeContext {
        api: api.clone(),
        transport: Arc::new(transport),
        shared: true,
    })
}

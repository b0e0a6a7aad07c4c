//! The methods every node serves: `api.ping`, `api.status`, `api.log`, `api.stop`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stellar_bus::{BusStats, HandlerError};
use tracing::{debug, error, info, trace, warn};

use crate::{CallContext, Rpc};

/// `api.ping`: answers with the node's id.
pub const PING: &str = "api.ping";
/// `api.status`: the node's id, uptime, memory and bus counters.
pub const STATUS: &str = "api.status";
/// `api.log`: logs a message on the node.
pub const LOG: &str = "api.log";
/// `api.stop`: stops the node gracefully, after answering.
pub const STOP: &str = "api.stop";

/// What `api.status` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its Stellar version.
    pub version: String,
    /// How long it has run, in ms.
    pub uptime_ms: u64,
    /// Its resident memory in bytes, where the OS reports it.
    pub rss_bytes: Option<u64>,
    /// Its bus counters.
    pub bus: BusStats,
    /// RPC calls it is waiting on.
    pub pending_calls: usize,
    /// What the node's components report, e.g. `tasks_in_flight`.
    #[serde(default)]
    pub gauges: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct LogArgs {
    message: String,
    #[serde(default = "default_level")]
    level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

/// Registers every built-in method on `rpc`.
pub(crate) fn register(rpc: &Rpc) {
    rpc.register(PING, ping);
    let status_rpc = rpc.clone();
    rpc.register(STATUS, move |ctx, _: serde_json::Value| {
        let rpc = status_rpc.clone();
        async move { Ok(status(&ctx, &rpc)) }
    });
    rpc.register(LOG, log);
    rpc.register(STOP, stop);
}

async fn ping(ctx: CallContext, _: serde_json::Value) -> Result<serde_json::Value, HandlerError> {
    Ok(serde_json::json!({ "pong": true, "node_id": ctx.api.node_id() }))
}

fn status(ctx: &CallContext, rpc: &Rpc) -> NodeStatus {
    NodeStatus {
        node_id: ctx.api.node_id().to_string(),
        host: stellar_core::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_ms: ctx.api.uptime().as_millis() as u64,
        rss_bytes: rss_bytes(),
        bus: rpc.bus().stats(),
        pending_calls: rpc.pending_calls(),
        gauges: ctx
            .api
            .gauges()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    }
}

async fn log(ctx: CallContext, args: LogArgs) -> Result<bool, HandlerError> {
    let (node_id, caller, message) = (ctx.api.node_id(), &ctx.caller, args.message);
    match args.level.as_str() {
        "error" => error!(%node_id, %caller, "{message}"),
        "warn" => warn!(%node_id, %caller, "{message}"),
        "info" => info!(%node_id, %caller, "{message}"),
        "debug" => debug!(%node_id, %caller, "{message}"),
        "trace" => trace!(%node_id, %caller, "{message}"),
        other => {
            return Err(format!(
                "unknown log level {other:?}: use error, warn, info, debug or trace"
            )
            .into());
        }
    }
    Ok(true)
}

async fn stop(ctx: CallContext, _: serde_json::Value) -> Result<serde_json::Value, HandlerError> {
    info!(node_id = %ctx.api.node_id(), caller = %ctx.caller, "stop requested over rpc");
    let api = ctx.api.clone();
    // On the node's tracker: shutdown waits for it (100 ms at most).
    ctx.api.spawn(async move {
        // Give the reply a moment to leave before the bus stops.
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.stop();
    });
    Ok(serde_json::json!({ "stopping": true }))
}

/// Resident memory from `/proc/self/status` (Linux); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

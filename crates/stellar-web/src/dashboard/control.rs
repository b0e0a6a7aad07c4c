//! Acting on queues and nodes: pause and resume a queue, quiet or stop a node (over RPC).

use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use serde::Deserialize;
use serde_json::{Value, json};
use stellar_bus::HandlerError;
use stellar_core::NodeId;
use stellar_rpc::{CallContext, Rpc};
use stellar_tasks::Tasks;
use tracing::info;

use super::{AppState, authorised, forget_snapshot};
use crate::ActionError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/api/queues/pause", post(pause_queue))
        .route("/dashboard/api/queues/resume", post(resume_queue))
        .route("/dashboard/api/nodes/quiet", post(quiet_node))
        .route("/dashboard/api/nodes/stop", post(stop_node))
}

/// A queue name in a mutating request's body.
#[derive(Deserialize)]
struct QueueName {
    queue: String,
}

/// A node and whether it should be quiet.
#[derive(Deserialize)]
struct Quiet {
    node: String,
    #[serde(default = "yes")]
    quiet: bool,
}

fn yes() -> bool {
    true
}

async fn pause_queue(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let QueueName { queue } = authorised(&shared, &headers, &body)?;
    let paused = shared
        .services
        .tasks
        .pause_queue(&queue)
        .await
        .map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), %queue, "dashboard: pause queue");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "queue": queue, "paused": paused })))
}

async fn resume_queue(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let QueueName { queue } = authorised(&shared, &headers, &body)?;
    let resumed = shared
        .services
        .tasks
        .resume_queue(&queue)
        .await
        .map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), %queue, "dashboard: resume queue");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "queue": queue, "resumed": resumed })))
}

/// Quiets a node (or lets it take tasks again) over RPC (`tasks.quiet`).
async fn quiet_node(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let Quiet { node, quiet } = authorised(&shared, &headers, &body)?;
    let node_id = parse_node(&node)?;
    let answer = shared
        .services
        .rpc
        .call(
            &node_id,
            stellar_tasks::QUIET_METHOD,
            json!({ "quiet": quiet }),
        )
        .await
        .map_err(|err| ActionError::failed(format!("node {node}: {err}")))?;
    info!(node_id = %shared.services.api.node_id(), target = %node, quiet, "dashboard: quiet node");
    forget_snapshot(&shared).await;
    Ok(Json(answer))
}

/// A node in a mutating request's body.
#[derive(Deserialize)]
struct NodeName {
    node: String,
}

/// Stops a node gracefully over RPC (`api.stop`): it answers, then drains and leaves the
/// cluster.
async fn stop_node(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let NodeName { node } = authorised(&shared, &headers, &body)?;
    let node_id = parse_node(&node)?;
    let answer = shared
        .services
        .rpc
        .call(&node_id, stellar_rpc::builtins::STOP, Value::Null)
        .await
        .map_err(|err| ActionError::failed(format!("node {node}: {err}")))?;
    info!(node_id = %shared.services.api.node_id(), target = %node, "dashboard: stop node");
    forget_snapshot(&shared).await;
    Ok(Json(answer))
}

fn parse_node(node: &str) -> Result<NodeId, ActionError> {
    NodeId::new(node).map_err(|err| ActionError::invalid("node", err.to_string()))
}

/// What `tasks.quiet` takes.
#[derive(Deserialize)]
struct QuietArgs {
    #[serde(default = "yes")]
    quiet: bool,
}

/// What `tasks.quiet` answers.
#[derive(serde::Serialize)]
struct QuietAnswer {
    node_id: String,
    quiet: bool,
}

/// Serves [`stellar_tasks::QUIET_METHOD`] on `rpc`: quiets this node's workers
/// ([`Tasks::set_quiet`]), or lets them take tasks again. A node calls it once at start, whether
/// or not it serves HTTP, so the dashboard and `stellar cluster quiet` reach every node.
pub fn serve_quiet(rpc: &Rpc, tasks: &Tasks) {
    let tasks = tasks.clone();
    rpc.register(
        stellar_tasks::QUIET_METHOD,
        move |ctx: CallContext, args: QuietArgs| {
            let tasks = tasks.clone();
            async move {
                tasks.set_quiet(args.quiet);
                info!(node_id = %ctx.api.node_id(), caller = %ctx.caller, quiet = args.quiet, "tasks quiet set");
                Ok::<_, HandlerError>(QuietAnswer {
                    node_id: ctx.api.node_id().to_string(),
                    quiet: args.quiet,
                })
            }
        },
    );
}

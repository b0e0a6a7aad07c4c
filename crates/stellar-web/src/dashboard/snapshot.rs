//! The snapshot of the cluster the pages show, and the event stream that pushes it every
//! second: nodes with their status and bus counters, task counters, queues.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
    routing::get,
};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use stellar_core::{NodeId, NodeState, time::now_ms};
use stellar_rpc::{Target, Wait, builtins::NodeStatus};

use super::{AppState, MAX_EVENT_STREAMS, may_read};
use crate::{ActionError, web::Shared};

/// How often the event stream pushes a snapshot.
const TICK: Duration = Duration::from_secs(1);
/// How long a snapshot is reused (by every stream and request of this node).
const SNAPSHOT_REUSE: Duration = Duration::from_millis(900);
/// How long the snapshot waits for other nodes' status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/api/snapshot", get(snapshot))
        .route("/dashboard/api/events", get(events))
}

/// `GET /dashboard/api/snapshot`: the cluster now (as the event stream pushes it).
async fn snapshot(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ActionError> {
    may_read(&shared, &headers)?;
    Ok(Json(current(&shared).await?))
}

/// `GET /dashboard/api/events`: a `snapshot` event every second until the client leaves or
/// the node drains.
async fn events(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ActionError> {
    may_read(&shared, &headers)?;
    let permit = shared
        .dashboard
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ActionError::TooManyConnections {
            max: MAX_EVENT_STREAMS,
        })?;
    let stop = shared.stop.clone();
    let node_stop = shared.services.api.cancellation_token();
    let state = (shared, headers, permit, true);
    let stream = stream::unfold(state, move |(shared, headers, permit, first)| {
        let (stop, node_stop) = (stop.clone(), node_stop.clone());
        async move {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = node_stop.cancelled() => return None,
                    () = tokio::time::sleep(TICK) => {}
                }
                // A stream ends with its session (logout or expiry), not only at connect.
                may_read(&shared, &headers).ok()?;
            }
            let event = match current(&shared).await {
                Ok(snapshot) => Event::default()
                    .event("snapshot")
                    .data(snapshot.to_string()),
                Err(err) => Event::default()
                    .event("trouble")
                    .data(json!({ "error": err.to_string() }).to_string()),
            };
            Some((Ok(event), (shared, headers, permit, false)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The snapshot, reused for [`SNAPSHOT_REUSE`].
pub(super) async fn current(shared: &Shared) -> Result<Value, ActionError> {
    let mut cached = shared.dashboard.snapshot.lock().await;
    if let Some((at, snapshot)) = cached.as_ref()
        && at.elapsed() < SNAPSHOT_REUSE
    {
        return Ok(snapshot.clone());
    }
    let fresh = build_snapshot(shared).await?;
    *cached = Some((Instant::now(), fresh.clone()));
    Ok(fresh)
}

/// Nodes (with their status), task counters, queues with their depth, age and pause.
async fn build_snapshot(shared: &Shared) -> Result<Value, ActionError> {
    let services = &shared.services;
    let tasks = &services.tasks;
    let stats = tasks.stats().await.map_err(ActionError::internal)?;
    let paused = tasks.paused_queues().await.map_err(ActionError::internal)?;
    let names: BTreeSet<&String> = stats.queues.keys().chain(paused.iter()).collect();
    let queues: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let queue = stats.queues.get(name).copied().unwrap_or_default();
            json!({
                "name": name,
                "depth": queue.depth,
                "oldest_ms": queue.oldest_ms,
                "paused": paused.contains(name),
            })
        })
        .collect();
    Ok(json!({
        "node_id": services.api.node_id(),
        "at_ms": now_ms(),
        "nodes": nodes(shared).await?,
        "tasks": {
            "processed": stats.processed,
            "failed": stats.failed,
            "retried": stats.retried,
            "delayed": stats.delayed,
            "in_flight": stats.in_flight,
            "failed_now": stats.failed_now,
        },
        "queues": queues,
        // This node's own bus counters, read here (not over RPC): always there.
        "bus": services.bus.stats(),
    }))
}

/// Every live node with its status (`api.status`), or `unreachable` when it did not answer.
async fn nodes(shared: &Shared) -> Result<Vec<Value>, ActionError> {
    let members = shared
        .services
        .membership
        .nodes()
        .await
        .map_err(ActionError::internal)?;
    let statuses = statuses(shared).await;
    Ok(members
        .into_iter()
        .map(|member| node(shared, &member, statuses.get(&member.id)))
        .collect())
}

/// Every node's `api.status` that answered within [`STATUS_TIMEOUT`].
async fn statuses(shared: &Shared) -> BTreeMap<NodeId, NodeStatus> {
    let replies = shared
        .services
        .rpc
        .do_cluster(
            stellar_rpc::builtins::STATUS,
            Value::Null,
            Target::All,
            Wait::All,
            Some(STATUS_TIMEOUT),
        )
        .await
        .unwrap_or_default();
    replies
        .into_iter()
        .filter_map(|reply| {
            let status = serde_json::from_value::<NodeStatus>(reply.result.ok()?).ok()?;
            Some((reply.node_id, status))
        })
        .collect()
}

/// One node as the pages show it: membership, status, state, bus counters.
fn node(shared: &Shared, member: &stellar_bus::NodeInfo, status: Option<&NodeStatus>) -> Value {
    let api = &shared.services.api;
    let gauge = |name: &str| status.and_then(|s| s.gauges.get(name).copied());
    let state = match (status, gauge("tasks_quiet")) {
        _ if &member.id == api.node_id() && api.state() >= NodeState::Stopping => "stopping",
        (None, _) => "unreachable",
        (Some(_), Some(1)) => "quiet",
        (Some(_), _) => "running",
    };
    json!({
        "id": member.id,
        "version": status.map_or(member.version.clone(), |s| s.version.clone()),
        "host": member.host,
        "started_at_ms": member.started_at_ms,
        "uptime_ms": status.map(|s| s.uptime_ms),
        "in_flight": gauge("tasks_in_flight"),
        "state": state,
        "bus": status.map(|s| s.bus),
    })
}

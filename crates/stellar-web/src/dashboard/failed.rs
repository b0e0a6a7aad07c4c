//! The failed page: the failed set, a page at a time; retry, remove, retry all, remove all.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::HeaderMap,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::{AppState, TaskId, authorised, forget_snapshot, may_act, may_read};
use crate::ActionError;

/// Failed tasks per page unless the page asks otherwise, and at most.
const PER_PAGE: usize = 25;
const MAX_PER_PAGE: usize = 500;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/api/failed", get(failed))
        .route("/dashboard/api/failed/retry", post(retry_failed))
        .route("/dashboard/api/failed/remove", post(remove_failed))
        .route("/dashboard/api/failed/retry-all", post(retry_all))
        .route("/dashboard/api/failed/remove-all", post(remove_all))
}

/// The failed list's page.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
}

/// `GET /dashboard/api/failed?page=&per_page=`: failed tasks, latest failure first.
async fn failed(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ActionError> {
    may_read(&shared, &headers)?;
    let per_page = page.per_page.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE);
    let page = page.page.unwrap_or(1).max(1);
    // Only this page's records are read, however large the failed set.
    let offset = (page - 1).saturating_mul(per_page) as u64;
    let (records, total) = shared
        .services
        .tasks
        .failed_page(offset, per_page as u64)
        .await
        .map_err(ActionError::internal)?;
    let items: Vec<Value> = records
        .into_iter()
        .map(|record| {
            json!({
                "id": record.id,
                "name": record.name,
                "queue": record.queue,
                "attempts": record.attempts,
                "max_attempts": record.max_attempts,
                "error": record.error,
                "node": record.node,
                "failed_at_ms": record.finished_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({
        "total": total,
        "page": page,
        "per_page": per_page,
        "pages": total.div_ceil(per_page as u64).max(1),
        "items": items,
    })))
}

async fn retry_failed(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let TaskId { id } = authorised(&shared, &headers, &body)?;
    let retried = shared
        .services
        .tasks
        .retry_failed(&id)
        .await
        .map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), task_id = %id, retried, "dashboard: retry failed task");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "id": id, "retried": retried })))
}

async fn remove_failed(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let TaskId { id } = authorised(&shared, &headers, &body)?;
    let removed = shared
        .services
        .tasks
        .remove_failed(&id)
        .await
        .map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), task_id = %id, removed, "dashboard: remove failed task");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "id": id, "removed": removed })))
}

async fn retry_all(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ActionError> {
    may_act(&shared, &headers)?;
    let tasks = &shared.services.tasks;
    let mut retried = 0_u64;
    for record in tasks.failed().await.map_err(ActionError::internal)? {
        if tasks
            .retry_failed(&record.id)
            .await
            .map_err(ActionError::internal)?
        {
            retried += 1;
        }
    }
    info!(node_id = %shared.services.api.node_id(), retried, "dashboard: retry every failed task");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "retried": retried })))
}

async fn remove_all(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ActionError> {
    may_act(&shared, &headers)?;
    let tasks = &shared.services.tasks;
    let mut removed = 0_u64;
    for record in tasks.failed().await.map_err(ActionError::internal)? {
        if tasks
            .remove_failed(&record.id)
            .await
            .map_err(ActionError::internal)?
        {
            removed += 1;
        }
    }
    info!(node_id = %shared.services.api.node_id(), removed, "dashboard: remove every failed task");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "removed": removed })))
}

//! The tasks page (one task by id: state, arguments, attempts, progress, timeline) and the
//! scheduled page (delayed tasks and recurring schedules; run now, delete, unschedule).

use axum::{
    Json, Router,
    extract::{Query, State},
    http::HeaderMap,
    routing::{get, post},
};
use serde_json::{Value, json};
use stellar_tasks::{ScheduleInfo, TaskRecord, TaskState};
use tracing::info;

use super::{AppState, TaskId, authorised, forget_snapshot, may_read, may_see_user_data};
use crate::ActionError;

/// Delayed tasks the scheduled page lists at most (soonest first).
const MAX_DELAYED: usize = 200;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/api/task", get(task))
        .route("/dashboard/api/scheduled", get(scheduled))
        .route("/dashboard/api/scheduled/run-now", post(run_delayed_now))
        .route("/dashboard/api/scheduled/delete", post(delete_delayed))
        .route("/dashboard/api/schedules/run-now", post(run_schedule_now))
        .route("/dashboard/api/schedules/unschedule", post(unschedule))
}

/// `GET /dashboard/api/task?id=`: the task's record, or `"task": null` when there is none. Its
/// arguments only to a live session: otherwise `"args": null, "args_hidden": true`.
async fn task(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Query(TaskId { id }): Query<TaskId>,
) -> Result<Json<Value>, ActionError> {
    may_read(&shared, &headers)?;
    let show_args = may_see_user_data(&shared, &headers);
    let record = shared
        .services
        .tasks
        .show(&id)
        .await
        .map_err(ActionError::internal)?;
    Ok(Json(
        json!({ "id": id, "task": record.map(|r| task_json(&r, show_args)) }),
    ))
}

/// A task record for the page, its timestamps as a timeline in order; its arguments only if
/// `show_args`.
fn task_json(record: &TaskRecord, show_args: bool) -> Value {
    let ended = match record.state {
        TaskState::Completed => "completed",
        TaskState::Failed => "failed",
        _ => "last attempt ended",
    };
    let timeline: Vec<Value> = [
        ("enqueued", record.enqueued_at_ms),
        ("due", record.due_at_ms),
        ("last attempt started", record.started_at_ms),
        (ended, record.finished_at_ms),
    ]
    .into_iter()
    .filter_map(|(event, at)| Some(json!({ "event": event, "at_ms": at? })))
    .collect();
    json!({
        "id": record.id,
        "name": record.name,
        "queue": record.queue,
        "state": record.state,
        "args": show_args.then_some(&record.args),
        "args_hidden": !show_args,
        "attempts": record.attempts,
        "max_attempts": record.max_attempts,
        "node": record.node,
        "error": record.error,
        "progress": record.progress,
        "trace_id": record.trace_id,
        "timeline": timeline,
    })
}

/// `GET /dashboard/api/scheduled`: delayed tasks (the first [`MAX_DELAYED`], soonest first)
/// and every recurring schedule with its next run (its arguments only to a live session).
async fn scheduled(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ActionError> {
    may_read(&shared, &headers)?;
    let show_args = may_see_user_data(&shared, &headers);
    let tasks = &shared.services.tasks;
    let (delayed, delayed_total) = tasks
        .delayed_page(MAX_DELAYED as u64)
        .await
        .map_err(ActionError::internal)?;
    let schedules = tasks.schedules().await.map_err(ActionError::internal)?;
    let listed: Vec<Value> = delayed
        .iter()
        .map(|record| {
            json!({
                "id": record.id,
                "name": record.name,
                "queue": record.queue,
                "due_at_ms": record.due_at_ms,
                "attempts": record.attempts,
                "max_attempts": record.max_attempts,
            })
        })
        .collect();
    Ok(Json(json!({
        "delayed": listed,
        "delayed_total": delayed_total,
        "schedules": schedules
            .iter()
            .map(|info| schedule_json(info, show_args))
            .collect::<Vec<_>>(),
    })))
}

fn schedule_json(info: &ScheduleInfo, show_args: bool) -> Value {
    let schedule = &info.schedule;
    json!({
        "id": schedule.id,
        "task": schedule.task,
        "queue": schedule.queue,
        "args": show_args.then_some(&schedule.args),
        "args_hidden": !show_args,
        "recurrence": schedule.recurrence.to_string(),
        "next_run_at_ms": info.next_run_at_ms,
        "problem": info.problem,
    })
}

/// `POST /dashboard/api/scheduled/run-now {"id"}`: a delayed task runs now.
async fn run_delayed_now(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let TaskId { id } = authorised(&shared, &headers, &body)?;
    let tasks = &shared.services.tasks;
    let moved = tasks.run_now(&id).await.map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), task_id = %id, moved, "dashboard: run delayed task now");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "id": id, "queued": moved })))
}

/// `POST /dashboard/api/scheduled/delete {"id"}`: deletes a delayed task, in one store step and
/// only while it is still delayed; 409 if it is gone or no longer delayed (promoted, claimed,
/// finished) by then.
async fn delete_delayed(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let TaskId { id } = authorised(&shared, &headers, &body)?;
    let tasks = &shared.services.tasks;
    let deleted = tasks
        .del_delayed(&id)
        .await
        .map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), task_id = %id, deleted, "dashboard: delete delayed task");
    forget_snapshot(&shared).await;
    if !deleted {
        return Err(ActionError::Conflict {
            message: format!("task {id} is no longer delayed (or gone): nothing deleted"),
        });
    }
    Ok(Json(json!({ "id": id, "deleted": true })))
}

/// `POST /dashboard/api/schedules/run-now {"id"}`: one extra run of a schedule's task, now.
async fn run_schedule_now(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let TaskId { id } = authorised(&shared, &headers, &body)?;
    let tasks = &shared.services.tasks;
    let task_id = tasks.run_schedule_now(&id).await.map_err(|err| match err {
        stellar_tasks::Error::Store(_) => ActionError::internal(err),
        other => ActionError::failed(other.to_string()),
    })?;
    info!(node_id = %shared.services.api.node_id(), schedule = %id, task_id = ?task_id, "dashboard: run schedule now");
    forget_snapshot(&shared).await;
    Ok(Json(json!({ "id": id, "task_id": task_id })))
}

/// `POST /dashboard/api/schedules/unschedule {"id"}`: removes a recurring schedule.
async fn unschedule(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ActionError> {
    let TaskId { id } = authorised(&shared, &headers, &body)?;
    let tasks = &shared.services.tasks;
    let removed = tasks.unschedule(&id).await.map_err(ActionError::internal)?;
    info!(node_id = %shared.services.api.node_id(), schedule = %id, removed, "dashboard: unschedule");
    Ok(Json(json!({ "id": id, "removed": removed })))
}

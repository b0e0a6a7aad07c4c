//! `GET /dashboard`: a small single-page app served from the binary (its HTML, script and style
//! sheet are embedded at build time), its JSON endpoints under `/dashboard/api/`, and a
//! server-sent event stream that pushes a snapshot of the cluster every second.
//!
//! Reading needs a session when a secret is configured, and nothing otherwise; every mutating
//! endpoint needs a session and its CSRF token, and is refused outright when no secret is
//! configured (see [`auth`]).

mod auth;

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use stellar_bus::HandlerError;
use stellar_core::{NodeId, NodeState, time::now_ms};
use stellar_rpc::{CallContext, Rpc, Target, Wait, builtins::NodeStatus};
use stellar_tasks::Tasks;
use tracing::{info, warn};

use crate::{ActionError, web::Shared};

pub(crate) use auth::Auth;
use auth::{Access, CSRF_HEADER};

type AppState = Arc<Shared>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// How often the event stream pushes a snapshot.
const TICK: Duration = Duration::from_secs(1);
/// How long a snapshot is reused (by every stream and request of this node).
const SNAPSHOT_REUSE: Duration = Duration::from_millis(900);
/// How long the snapshot waits for other nodes' status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);
/// Failed tasks per page unless the page asks otherwise, and at most.
const PER_PAGE: usize = 25;
const MAX_PER_PAGE: usize = 500;
/// How long a wrong secret makes its login wait, to slow down guessing.
const LOGIN_FAILURE_DELAY: Duration = Duration::from_millis(250);

/// What the dashboard of one node keeps: who is logged in, and the last snapshot.
#[derive(Debug)]
pub(crate) struct Dashboard {
    pub(crate) auth: Auth,
    snapshot: tokio::sync::Mutex<Option<(Instant, Value)>>,
    /// Event streams open at once on this node, at most [`MAX_EVENT_STREAMS`].
    streams: Arc<tokio::sync::Semaphore>,
}

/// How many dashboard event streams a node serves at once.
const MAX_EVENT_STREAMS: usize = 64;

impl Dashboard {
    pub(crate) fn new(secret: Option<&stellar_core::DashboardSecret>) -> Self {
        Self {
            auth: Auth::new(secret),
            snapshot: tokio::sync::Mutex::new(None),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }
}

/// Every dashboard route.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/api/session", get(session))
        .route("/dashboard/api/snapshot", get(snapshot))
        .route("/dashboard/api/events", get(events))
        .route("/dashboard/api/failed", get(failed))
        .route("/dashboard/api/failed/retry", post(retry_failed))
        .route("/dashboard/api/failed/remove", post(remove_failed))
        .route("/dashboard/api/failed/retry-all", post(retry_all))
        .route("/dashboard/api/failed/remove-all", post(remove_all))
        .route("/dashboard/api/queues/pause", post(pause_queue))
        .route("/dashboard/api/queues/resume", post(resume_queue))
        .route("/dashboard/api/nodes/quiet", post(quiet_node))
}

/// An embedded asset with its type; never cached, so a new binary serves its own.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The login form's fields.
#[derive(Deserialize)]
struct Login {
    secret: String,
}

/// `POST /dashboard/login` (a form): the right secret opens a session and goes back to the
/// dashboard; a wrong one gets 401 after a short delay.
async fn login(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    let auth = &shared.dashboard.auth;
    if !auth.has_secret() {
        return refuse_read_only();
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Login>(&body) else {
        return ActionError::BadRequest {
            message: "expected a form with the field secret".into(),
        }
        .into_response();
    };
    if auth.throttle() == auth::Throttle::Refuse {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many failed logins: try again in a second",
        )
            .into_response();
    }
    if !auth.check(&form.secret) {
        if auth.failed() {
            warn!(node_id = %shared.services.api.node_id(), "dashboard login refused (further failures this second are not logged)");
        }
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><title>Stellar</title><p>Wrong secret. \
             <a href=\"/dashboard\">Try again</a></p>",
        )
            .into_response();
    }
    let (token, _) = auth.open();
    info!(node_id = %shared.services.api.node_id(), "dashboard login");
    let cookie = HeaderValue::from_str(&auth::set_cookie(&token)).expect("hex is a valid header");
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, HeaderValue::from_static("/dashboard")),
        ],
    )
        .into_response()
}

/// `POST /dashboard/logout`: ends the session (CSRF-checked like every mutation).
async fn logout(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(err) = may_act(&shared, &headers) {
        return err.into_response();
    }
    shared.dashboard.auth.close(&headers);
    let cookie = HeaderValue::from_str(&auth::clear_cookie()).expect("a valid header");
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "logged_out": true })),
    )
        .into_response()
}

/// `GET /dashboard/api/session`: the access mode, and the CSRF token of a live session.
async fn session(State(shared): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let node_id = shared.services.api.node_id();
    Json(match shared.dashboard.auth.access(&headers) {
        Access::ReadOnly => json!({ "mode": "read-only", "logged_in": false, "node_id": node_id }),
        Access::LoggedOut => json!({ "mode": "login", "logged_in": false, "node_id": node_id }),
        Access::LoggedIn(session) => json!({
            "mode": "login", "logged_in": true, "csrf": session.csrf, "node_id": node_id,
        }),
    })
}

/// The 403 of a mutation on a dashboard without a secret.
fn refuse_read_only() -> Response {
    ActionError::Forbidden {
        message: "the dashboard is read-only: set dashboard_secret (STELLAR_DASHBOARD_SECRET) \
                  on the node to log in and act"
            .into(),
    }
    .into_response()
}

/// Whether the request may read: always without a secret, with a live session otherwise.
fn may_read(shared: &Shared, headers: &HeaderMap) -> Result<(), ActionError> {
    match shared.dashboard.auth.access(headers) {
        Access::ReadOnly | Access::LoggedIn(_) => Ok(()),
        Access::LoggedOut => Err(ActionError::Forbidden {
            message: "log in to the dashboard first".into(),
        }),
    }
}

/// Whether the request may act: a live session and its CSRF token in [`CSRF_HEADER`].
fn may_act(shared: &Shared, headers: &HeaderMap) -> Result<(), ActionError> {
    match shared.dashboard.auth.access(headers) {
        Access::ReadOnly => Err(ActionError::Forbidden {
            message: "the dashboard is read-only: set dashboard_secret (STELLAR_DASHBOARD_SECRET) \
                      on the node to log in and act"
                .into(),
        }),
        Access::LoggedOut => Err(ActionError::Forbidden {
            message: "log in to the dashboard first".into(),
        }),
        Access::LoggedIn(session) if !session.csrf_matches(headers) => {
            Err(ActionError::Forbidden {
                message: format!("missing or wrong {CSRF_HEADER} header"),
            })
        }
        Access::LoggedIn(_) => Ok(()),
    }
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
async fn current(shared: &Shared) -> Result<Value, ActionError> {
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
    }))
}

/// Every live node with its status (`api.status`), or `unreachable` when it did not answer.
async fn nodes(shared: &Shared) -> Result<Vec<Value>, ActionError> {
    let services = &shared.services;
    let members = services
        .membership
        .nodes()
        .await
        .map_err(ActionError::internal)?;
    let replies = services
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
    let mut statuses: BTreeMap<NodeId, NodeStatus> = BTreeMap::new();
    for reply in replies {
        if let Ok(value) = reply.result
            && let Ok(status) = serde_json::from_value::<NodeStatus>(value)
        {
            statuses.insert(reply.node_id, status);
        }
    }
    let this = services.api.node_id();
    Ok(members
        .into_iter()
        .map(|member| {
            let status = statuses.get(&member.id);
            let gauge = |name: &str| status.and_then(|s| s.gauges.get(name).copied());
            let state = match (status, gauge("tasks_quiet")) {
                _ if &member.id == this && services.api.state() >= NodeState::Stopping => {
                    "stopping"
                }
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
            })
        })
        .collect())
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

/// A task id in a mutating request's body.
#[derive(Deserialize)]
struct TaskId {
    id: String,
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

/// Parses a mutating request's JSON body, after checking who may act.
fn authorised<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ActionError> {
    may_act(shared, headers)?;
    serde_json::from_slice(body).map_err(|err| ActionError::MalformedJson {
        message: err.to_string(),
    })
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
    let node_id =
        NodeId::new(node.as_str()).map_err(|err| ActionError::invalid("node", err.to_string()))?;
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

/// Makes the next snapshot fresh, so an action shows at once.
async fn forget_snapshot(shared: &Shared) {
    *shared.dashboard.snapshot.lock().await = None;
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

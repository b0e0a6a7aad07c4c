//! `GET /dashboard`: a small single-page app served from the binary (its HTML, script and style
//! sheet are embedded at build time), its JSON endpoints under `/dashboard/api/`, and a
//! server-sent event stream that pushes a snapshot of the cluster every second.
//!
//! Reading needs a session when a secret is configured, and nothing otherwise; every mutating
//! endpoint needs a session and its CSRF token, and is refused outright when no secret is
//! configured (see [`auth`]). One module per page family: [`snapshot`] (overview, nodes, queues
//! and bus health all read it), [`failed`], [`control`] (queues and nodes), [`tasks`] (search,
//! scheduled and recurring), [`cache`].

mod auth;
mod cache;
mod control;
mod failed;
mod snapshot;
mod tasks;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::{ActionError, web::Shared};

pub(crate) use auth::Auth;
use auth::{Access, CSRF_HEADER};
pub use control::serve_quiet;

type AppState = Arc<Shared>;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

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

/// Every dashboard route: the page and session here, the JSON API from each page's module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/api/session", get(session))
        .merge(snapshot::routes())
        .merge(failed::routes())
        .merge(control::routes())
        .merge(tasks::routes())
        .merge(cache::routes())
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
    // The check is counted before the secret is compared (see `Auth::throttle`).
    let auth::Throttle::Check { first } = auth.throttle() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many failed logins: try again in a second",
        )
            .into_response();
    };
    if !auth.check(&form.secret) {
        if first {
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
    auth.succeeded();
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

/// Whether the request may see user data (task and schedule arguments, cache values): only with
/// a live session. A read-only dashboard (no secret) answers anyone who reaches the port, so it
/// shows the cluster's shape but never what users put in it.
fn may_see_user_data(shared: &Shared, headers: &HeaderMap) -> bool {
    matches!(shared.dashboard.auth.access(headers), Access::LoggedIn(_))
}

/// The 403 of a read of user data without a session.
fn refuse_user_data() -> ActionError {
    ActionError::Forbidden {
        message: "cache values are user data: the dashboard shows them only to a logged-in \
                  session (set dashboard_secret, STELLAR_DASHBOARD_SECRET, on the node and log in)"
            .into(),
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

/// An id (of a task, a schedule) in a request.
#[derive(Deserialize)]
struct TaskId {
    id: String,
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

/// Makes the next snapshot fresh, so an action shows at once.
async fn forget_snapshot(shared: &Shared) {
    *shared.dashboard.snapshot.lock().await = None;
}

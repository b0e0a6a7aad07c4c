//! The HTTP routes: actions, health, and the layers every request goes through.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Path, RawQuery, Request, State, rejection::BytesRejection},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use stellar_core::{TraceParent, trace::TRACEPARENT};
use tower::{BoxError, ServiceBuilder};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};
use tracing::{info_span, warn};

use crate::{
    ActionError, Web, action::Params, error::ErrorCode, metrics, stats::bump, web::Shared, ws,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const NODE_ID: HeaderName = HeaderName::from_static("x-node-id");

type AppState = Arc<Shared>;

impl Web {
    /// Every route of the web layer (`/api/{action}`, `/ws`, `/healthz`, `/readyz`, `/dashboard`) behind its
    /// layers (request ids, tracing, node id header, counters, panics, timeout, body limit).
    /// [`Web::serve`] serves it; a node may also nest it in a router of its own.
    pub fn router(&self) -> Router {
        let shared = self.shared.clone();
        let config = &shared.config;
        let node_id = HeaderValue::from_str(shared.services.api.node_id().as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let timeout = config.request_timeout;
        let routes = Router::new()
            .merge(actions_routes())
            .merge(health_routes())
            .merge(ws::routes())
            .merge(crate::dashboard::routes())
            .fallback(not_found)
            // On the routes (and the fallback), so it sees which one matched.
            .layer(middleware::from_fn_with_state(
                shared.clone(),
                metrics::observe,
            ));
        let layers = ServiceBuilder::new()
            .layer(middleware::map_request(sanitize_request_id))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeId { shared: shared.clone() }))
            .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let span = info_span!("request", method = %request.method(), uri = %request.uri(), request_id = %request_id, trace_id = tracing::field::Empty);
                // A caller's `traceparent` makes the request (and all it causes) part of its trace.
                let parent = request
                    .headers()
                    .get(TRACEPARENT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(TraceParent::parse);
                stellar_core::trace::follow(&span, parent);
                span
            }))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(SetResponseHeaderLayer::overriding(NODE_ID, node_id))
            .layer(middleware::from_fn_with_state(shared.clone(), count))
            .layer(CatchPanicLayer::custom(|_panic| {
                ActionError::failed("internal error").into_response()
            }))
            .layer(HandleErrorLayer::new(move |err: BoxError| async move {
                timeout_error(err, timeout)
            }))
            .timeout(timeout)
            .layer(DefaultBodyLimit::max(config.body_limit));
        routes.layer(layers).with_state(shared)
    }
}

/// `/api/{action}`; other methods than GET and POST get 405.
fn actions_routes() -> Router<AppState> {
    Router::new().route(
        "/api/{action}",
        get(call_action)
            .post(call_action)
            .fallback(|| async { ActionError::MethodNotAllowed }),
    )
}

/// `/healthz` (the process answers), `/readyz` (the node takes traffic) and `/metrics`
/// (Prometheus).
fn health_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::serve))
}

/// `GET|POST /api/{action}`: a JSON body when there is one, the query string otherwise.
async fn call_action(
    State(shared): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    request_id: Option<axum::Extension<RequestId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ActionError> {
    let body = body.map_err(|rejection| body_error(&rejection, shared.config.body_limit))?;
    let params = if method == Method::POST && !body.trim_ascii().is_empty() {
        let value = serde_json::from_slice(&body).map_err(|err| ActionError::MalformedJson {
            message: err.to_string(),
        })?;
        Params::Json(value)
    } else {
        Params::Query(query.unwrap_or_default())
    };
    let request_id = request_id.and_then(|id| id.0.header_value().to_str().ok().map(str::to_owned));
    let ctx = shared.context(None, request_id);
    shared.actions.call_with(ctx, &name, params).await.map(Json)
}

/// The error for a body that could not be read: 413 over `limit`, 400 otherwise.
fn body_error(rejection: &BytesRejection, limit: usize) -> ActionError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ActionError::BodyTooLarge { limit }
    } else {
        ActionError::BadRequest {
            message: rejection.body_text(),
        }
    }
}

/// `GET /readyz`: 200 when the node is ready and its backend answers; 503 while starting or
/// draining, so a load balancer stops sending before the node leaves.
async fn readyz(State(shared): State<AppState>) -> Result<Json<Value>, ActionError> {
    use stellar_core::NodeState;
    if shared.stop.is_cancelled() {
        return Err(ActionError::Draining);
    }
    match shared.services.api.state() {
        NodeState::Ready => {}
        NodeState::Starting => {
            return Err(ActionError::NotReady {
                reason: "starting".into(),
            });
        }
        NodeState::Stopping | NodeState::Stopped => return Err(ActionError::Draining),
    }
    let check = (shared.readiness)();
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => Ok(Json(json!({
            "status": "ready",
            "node_id": shared.services.api.node_id(),
        }))),
        Ok(Err(reason)) => {
            warn!(node_id = %shared.services.api.node_id(), %reason, "backend unreachable");
            Err(ActionError::NotReady {
                reason: "backend unreachable".into(),
            })
        }
        Err(_) => Err(ActionError::NotReady {
            reason: "backend did not answer in time".into(),
        }),
    }
}

/// The JSON 404 of every path no route matches.
async fn not_found(request: Request) -> ActionError {
    ActionError::NotFound {
        path: request.uri().path().to_owned(),
    }
}

/// The error for a failure of the timeout layer: 504 when the deadline passed, 500 otherwise.
fn timeout_error(err: BoxError, after: Duration) -> ActionError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ActionError::Timeout { after }
    } else {
        ActionError::internal(err)
    }
}

/// Counts every response, and every error by its code.
async fn count(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    bump(&shared.counters.requests);
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        shared.counters.error(code);
    }
    response
}

/// Drops a client's `x-request-id` that is not 1 to 64 of `[A-Za-z0-9._-]`, so a fresh one is made:
/// the id goes into every log line of the request, where spaces or a huge value would forge
/// fields or bloat the log.
async fn sanitize_request_id(mut request: Request) -> Request {
    let valid = request.headers().get(REQUEST_ID).is_none_or(|value| {
        let bytes = value.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    if !valid {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Request ids for requests that come without one: unique in the cluster.
#[derive(Clone)]
struct MakeId {
    shared: AppState,
}

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = stellar_bus::unique_token(self.shared.services.api.node_id(), 12);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

//! The web layer's metrics: HTTP requests by action and status with their latency, WebSocket
//! connections and room members, and `GET /metrics` itself.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use stellar_core::{Metrics, metrics::Samples};

use crate::{hub::Hub, stats::Counters, web::Shared};

/// Labels of an HTTP request: which action (or route) and the status answered.
type RequestLabels = [(&'static str, String); 2];
/// Labels of a request's latency: which action (or route).
type ActionLabel = [(&'static str, String); 1];

/// The live HTTP families of one node's web layer.
#[derive(Debug, Clone)]
pub(crate) struct WebMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<ActionLabel, Histogram, fn() -> Histogram>,
}

impl WebMetrics {
    /// Registers the web layer's families on `metrics`: the live HTTP ones, and the counters and
    /// gauges of `counters` and `hub` read at scrape time.
    pub(crate) fn register(metrics: &Metrics, counters: Arc<Counters>, hub: Hub) -> Self {
        let this = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(stellar_core::metrics::duration_buckets())
            }),
        };
        metrics.register(
            "stellar_http_requests",
            "HTTP requests answered, by action (or route) and status",
            this.requests.clone(),
        );
        metrics.register(
            "stellar_http_request_duration_seconds",
            "Time to answer an HTTP request, by action (or route)",
            this.duration.clone(),
        );
        metrics.snapshot(move |out| snapshot(out, &counters, &hub));
        this
    }
}

/// The web layer's numbers kept as counters and in the hub, read at a scrape.
fn snapshot(out: &mut Samples, counters: &Counters, hub: &Hub) {
    let stats = counters.snapshot();
    let (rooms, members) = hub.room_stats();
    out.gauge(
        "stellar_ws_connections",
        "WebSocket connections open on this node",
        &[],
        stats.ws_open as f64,
    );
    out.counter(
        "stellar_ws_connections_accepted",
        "WebSocket connections accepted by this node",
        &[],
        stats.ws_accepted,
    );
    let refused = "WebSocket connections, frames and calls refused, by reason";
    for (reason, value) in [
        ("too_many_connections", stats.ws_refused),
        ("too_large", stats.ws_too_large),
        ("bad_frame", stats.ws_bad_frames),
        ("idle", stats.ws_idle_closed),
        ("too_many_pending", stats.ws_too_many_pending),
    ] {
        out.counter("stellar_ws_refused", refused, &[("reason", reason)], value);
    }
    out.counter(
        "stellar_ws_messages_dropped",
        "Messages not delivered to a WebSocket client that fell too far behind",
        &[],
        stats.ws_dropped,
    );
    out.gauge(
        "stellar_web_rooms",
        "Rooms with at least one member on this node",
        &[],
        rooms as f64,
    );
    out.gauge(
        "stellar_web_room_members",
        "Room memberships of this node's connections (a sum over nodes is the cluster's)",
        &[],
        members as f64,
    );
    out.counter(
        "stellar_http_connections",
        "HTTP connections accepted",
        &[],
        stats.http_connections,
    );
    out.counter(
        "stellar_http_connection_errors",
        "HTTP connections closed for a slow or idle client or a protocol error",
        &[],
        stats.http_connection_errors,
    );
}

/// The `action` label of a request: the action's name for `/api/{action}` when it exists
/// (`unknown` otherwise, so a client cannot mint label values), else the matched route, else
/// `unmatched`.
fn action_label(shared: &Shared, request: &Request) -> String {
    let Some(route) = request.extensions().get::<MatchedPath>() else {
        return "unmatched".to_owned();
    };
    if route.as_str() == "/api/{action}" {
        let name = request.uri().path().trim_start_matches("/api/");
        return match shared.actions.get(name) {
            Some(_) => name.to_owned(),
            None => "unknown".to_owned(),
        };
    }
    route.as_str().to_owned()
}

/// Counts and times every request by its action and status.
pub(crate) async fn observe(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let action = action_label(&shared, &request);
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &shared.metrics;
    metrics
        .duration
        .get_or_create(&[("action", action.clone())])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&[
            ("action", action),
            ("status", response.status().as_u16().to_string()),
        ])
        .inc();
    response
}

/// `GET /metrics`: the node's registry in the Prometheus text format.
pub(crate) async fn serve(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.services.api.metrics().encode();
    (
        [(header::CONTENT_TYPE, stellar_core::METRICS_CONTENT_TYPE)],
        body,
    )
        .into_response()
}

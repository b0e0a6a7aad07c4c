//! Counters of what the web layer served and refused.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What the web layer served and refused so far, on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WebStats {
    /// HTTP requests answered (WebSocket upgrades included).
    pub requests: u64,
    /// Requests answered 400 for a malformed JSON body.
    pub malformed_json: u64,
    /// Requests for an action that does not exist.
    pub unknown_action: u64,
    /// Requests whose body was over the limit.
    pub body_too_large: u64,
    /// Requests and WebSocket calls whose input did not fit the action.
    pub invalid_input: u64,
    /// Requests and WebSocket calls whose handler failed (or panicked).
    pub handler_failures: u64,
    /// Requests that ran past the request timeout.
    pub timeouts: u64,
    /// Requests refused because the node is draining or not ready.
    pub unavailable: u64,
    /// HTTP connections accepted.
    pub http_connections: u64,
    /// HTTP connections closed for a slow or idle client (header timeout) or a protocol error.
    pub http_connection_errors: u64,
    /// WebSocket connections open now.
    pub ws_open: u64,
    /// WebSocket connections accepted so far.
    pub ws_accepted: u64,
    /// WebSocket upgrades refused past the connection limit.
    pub ws_refused: u64,
    /// WebSockets closed for a message over the limit.
    pub ws_too_large: u64,
    /// WebSocket frames that were not JSON or not a known request.
    pub ws_bad_frames: u64,
    /// WebSockets closed for silence past the idle timeout.
    pub ws_idle_closed: u64,
    /// Messages not delivered to a WebSocket client that fell too far behind.
    pub ws_dropped: u64,
    /// WebSocket calls refused past the per-connection in-flight limit.
    pub ws_too_many_pending: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) malformed_json: AtomicU64,
    pub(crate) unknown_action: AtomicU64,
    pub(crate) body_too_large: AtomicU64,
    pub(crate) invalid_input: AtomicU64,
    pub(crate) handler_failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) http_connections: AtomicU64,
    pub(crate) http_connection_errors: AtomicU64,
    pub(crate) ws_open: AtomicU64,
    pub(crate) ws_accepted: AtomicU64,
    pub(crate) ws_refused: AtomicU64,
    pub(crate) ws_too_large: AtomicU64,
    pub(crate) ws_bad_frames: AtomicU64,
    pub(crate) ws_idle_closed: AtomicU64,
    pub(crate) ws_dropped: AtomicU64,
    pub(crate) ws_too_many_pending: AtomicU64,
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts an error by its code, wherever it was answered (HTTP or WebSocket).
    pub(crate) fn error(&self, code: &str) {
        let counter = match code {
            "malformed_json" => &self.malformed_json,
            "unknown_action" => &self.unknown_action,
            "body_too_large" => &self.body_too_large,
            "invalid_input" => &self.invalid_input,
            "server_error" => &self.handler_failures,
            "timeout" => &self.timeouts,
            "shutting_down" | "not_ready" => &self.unavailable,
            "too_many_connections" => &self.ws_refused,
            "too_many_pending" => &self.ws_too_many_pending,
            _ => return,
        };
        bump(counter);
    }

    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> WebStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WebStats {
            requests: get(&self.requests),
            malformed_json: get(&self.malformed_json),
            unknown_action: get(&self.unknown_action),
            body_too_large: get(&self.body_too_large),
            invalid_input: get(&self.invalid_input),
            handler_failures: get(&self.handler_failures),
            timeouts: get(&self.timeouts),
            unavailable: get(&self.unavailable),
            http_connections: get(&self.http_connections),
            http_connection_errors: get(&self.http_connection_errors),
            ws_open: get(&self.ws_open),
            ws_accepted: get(&self.ws_accepted),
            ws_refused: get(&self.ws_refused),
            ws_too_large: get(&self.ws_too_large),
            ws_bad_frames: get(&self.ws_bad_frames),
            ws_idle_closed: get(&self.ws_idle_closed),
            ws_dropped: get(&self.ws_dropped),
            ws_too_many_pending: get(&self.ws_too_many_pending),
        }
    }
}

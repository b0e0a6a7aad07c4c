//! Limits and timeouts of the web layer.

use std::time::Duration;

use stellar_core::DashboardSecret;

/// Limits and timeouts of the web layer. Every field has a default ([`WebConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebConfig {
    /// Largest request body, in bytes; a larger one gets 413.
    pub body_limit: usize,
    /// Longest a request may take, body included; a slower one gets 504.
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers. It also bounds how long an idle
    /// keep-alive connection waits for its next request: hyper starts the same timer whenever
    /// it waits for a request head.
    pub header_timeout: Duration,
    /// Longest a WebSocket may stay silent (no frame, no pong) before it is closed. The server
    /// pings every half of it, so a live client never hits it.
    pub idle_timeout: Duration,
    /// Most WebSocket connections this node serves at once; an upgrade past it gets 503.
    pub max_ws_connections: usize,
    /// Largest WebSocket message (and frame) a client may send; a larger one closes the socket
    /// with 1009 (message too big).
    pub max_ws_frame_bytes: usize,
    /// Most action calls one WebSocket connection may have in flight; more are refused.
    pub max_ws_pending: usize,
    /// After the node starts stopping, how long to keep accepting (with `/readyz` at 503) before
    /// the listener closes, so a load balancer sees the node leave. Zero for `SO_REUSEPORT`
    /// groups, where the kernel stops routing to a closed listener at once.
    pub drain_delay: Duration,
    /// How long the drain waits for requests in flight and WebSockets to close before giving up.
    pub drain_timeout: Duration,
    /// The dashboard's login secret; `None` serves `/dashboard` read-only.
    pub dashboard_secret: Option<DashboardSecret>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_ws_connections: 10_000,
            max_ws_frame_bytes: 64 * 1024,
            max_ws_pending: 16,
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            dashboard_secret: None,
        }
    }
}

impl WebConfig {
    /// Sets [`WebConfig::body_limit`].
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets [`WebConfig::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`WebConfig::header_timeout`].
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets [`WebConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`WebConfig::max_ws_connections`].
    pub fn with_max_ws_connections(mut self, max: usize) -> Self {
        self.max_ws_connections = max;
        self
    }

    /// Sets [`WebConfig::max_ws_frame_bytes`].
    pub fn with_max_ws_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_ws_frame_bytes = bytes;
        self
    }

    /// Sets [`WebConfig::drain_delay`].
    pub fn with_drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Sets [`WebConfig::dashboard_secret`].
    pub fn with_dashboard_secret(mut self, secret: Option<DashboardSecret>) -> Self {
        self.dashboard_secret = secret;
        self
    }

    /// Sets [`WebConfig::drain_timeout`].
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

//! [`Web`]: the web layer of one node, and the state its handlers share.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use serde_json::Value;
use stellar_core::NodeState;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    ActionContext, ActionError, Actions, ConnectionId, Rooms, Services, WebConfig, WebStats,
    builtins, dashboard::Dashboard, hub::Hub, metrics::WebMetrics, stats::Counters,
};

/// Whether the node's backend answers (a Redis PING): `Err` with a reason for the logs.
pub type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A [`Readiness`] that is always ready: for the in-memory backend.
pub fn always_ready() -> Readiness {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// The web layer of one node: actions over HTTP and WebSocket, its client connections, and the
/// cluster's rooms as it serves them. Cloning it is cheap.
///
/// Make one per node: it registers the `connection.send` and `room.*` RPC methods on
/// [`Services::rpc`] and the room message handler on [`Services::bus`].
#[derive(Clone)]
pub struct Web {
    pub(crate) shared: Arc<Shared>,
}

/// What every handler reads: the node, the actions, limits, counters, connections.
pub(crate) struct Shared {
    pub(crate) services: Services,
    pub(crate) actions: Actions,
    pub(crate) config: WebConfig,
    pub(crate) readiness: Readiness,
    pub(crate) counters: Arc<Counters>,
    /// HTTP requests and latencies by action, registered on the node's metrics.
    pub(crate) metrics: WebMetrics,
    pub(crate) hub: Hub,
    pub(crate) rooms: Rooms,
    /// One permit per WebSocket this node may still accept.
    pub(crate) ws_permits: Arc<Semaphore>,
    /// Every WebSocket session and the action calls it spawned, so the drain can wait for them.
    pub(crate) ws_tasks: TaskTracker,
    /// Starts the drain: [`Web::stop`], or the node's own stop.
    pub(crate) stop: CancellationToken,
    /// Cancelled once the drain is over (or there was nothing to serve).
    pub(crate) drained: CancellationToken,
    /// The dashboard's sessions and last snapshot.
    pub(crate) dashboard: Dashboard,
}

impl fmt::Debug for Web {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Web")
            .field("node_id", self.shared.services.api.node_id())
            .field("actions", &self.shared.actions)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Web {
    /// The web layer of the node `services`, serving `actions` (the built-ins `status`,
    /// `documentation` and `room.*` are added unless `actions` has its own of that name).
    pub fn new(
        services: Services,
        actions: Actions,
        config: WebConfig,
        readiness: Readiness,
    ) -> Self {
        builtins::register(&actions);
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(counters.clone());
        let metrics = WebMetrics::register(services.api.metrics(), counters.clone(), hub.clone());
        let rooms = Rooms::new(
            hub.clone(),
            services.api.clone(),
            services.bus.clone(),
            services.rpc.clone(),
        );
        rooms.install();
        let ws_permits = Arc::new(Semaphore::new(config.max_ws_connections));
        let dashboard = Dashboard::new(config.dashboard_secret.as_ref());
        Self {
            shared: Arc::new(Shared {
                services,
                actions,
                config,
                readiness,
                counters,
                metrics,
                hub,
                rooms,
                ws_permits,
                ws_tasks: TaskTracker::new(),
                stop: CancellationToken::new(),
                drained: CancellationToken::new(),
                dashboard,
            }),
        }
    }

    /// Starts draining (see [`Web::serve`]) before the rest of the node stops, so requests in
    /// flight can still use the bus, RPC and the stores. A node stops its web server this way
    /// first, waits for [`Web::drained`], then stops everything else.
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// Waits until the drain is over.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn drained(&self) {
        self.shared.drained.cancelled().await;
    }

    /// The actions this node serves.
    pub fn actions(&self) -> &Actions {
        &self.shared.actions
    }

    /// The cluster's rooms: join, leave, say, broadcast, members.
    pub fn rooms(&self) -> &Rooms {
        &self.shared.rooms
    }

    /// The limits in force.
    pub fn config(&self) -> &WebConfig {
        &self.shared.config
    }

    /// What was served and refused so far.
    pub fn stats(&self) -> WebStats {
        self.shared.counters.snapshot()
    }

    /// How many WebSocket connections this node holds now.
    pub fn connections(&self) -> usize {
        self.shared.hub.len()
    }

    /// Pushes `message` to `connection`, held by this node or any other.
    ///
    /// # Errors
    ///
    /// [`ActionError::Failed`] if no live node holds it.
    pub async fn send(&self, connection: &ConnectionId, message: Value) -> Result<(), ActionError> {
        self.shared.rooms.send(connection, message).await
    }

    /// A context for calling actions from app code (no connection, no request).
    pub fn context(&self) -> ActionContext {
        self.shared.context(None, None)
    }
}

impl Shared {
    /// The context an action runs with: for a WebSocket `connection`, or an HTTP request.
    pub(crate) fn context(
        &self,
        connection: Option<ConnectionId>,
        request_id: Option<String>,
    ) -> ActionContext {
        ActionContext {
            services: self.services.clone(),
            rooms: self.rooms.clone(),
            connection,
            request_id,
        }
    }

    /// True once the web server or the node started stopping.
    pub(crate) fn draining(&self) -> bool {
        self.stop.is_cancelled() || self.services.api.state() >= NodeState::Stopping
    }
}

//! A node: every component, assembled from one `Config`.

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use stellar_bus::{Bus, Membership, RecordSigner, RedisPool, Transport};
use stellar_cache::{Cache, CacheConfig};
use stellar_core::{Api, Config};
use stellar_rpc::{Rpc, RpcSettings};
use stellar_tasks::{TaskConfig, TaskDefinition, Tasks};
use stellar_web::{Action, Actions, Readiness, Services, Web, WebConfig};
use tracing::{info, warn};

use crate::{Error, Result, backend::Backend};

/// A set-up hook: runs on the node once its components are up and before it is ready, e.g. to
/// register RPC methods, bus handlers or components of your own.
pub type SetupHook = Box<
    dyn Fn(&Node) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync,
>;

/// A running node: its [`Api`] and its components. Cloning it is cheap.
#[derive(Clone)]
pub struct Node {
    api: Api,
    transport: Arc<dyn Transport>,
    bus: Bus,
    membership: Membership,
    rpc: Rpc,
    cache: Cache,
    tasks: Tasks,
    pool: Option<RedisPool>,
    web: Option<Web>,
    http_addr: Option<std::net::SocketAddr>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("node_id", self.api.node_id())
            .field("shared", &self.is_shared())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A builder for a node configured by `config`.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder {
            api: Api::new(config),
            tasks: Vec::new(),
            setups: Vec::new(),
            replaces: None,
            actions: Actions::new(),
            listener: None,
        }
    }

    /// The node's handle: id, config, components, cancellation and task tracking.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The transport the node's bus runs on.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The node's authenticated bus: publish messages, register handlers per message type.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The cluster's live members.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The node's RPC: register your own methods, call other nodes.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The shared cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The node's task system: enqueue, inspect, register more task types.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Whether the node shares state with others (Redis) or runs embedded (memory).
    pub fn is_shared(&self) -> bool {
        self.pool.is_some()
    }

    /// The node's web front door (actions over HTTP and WebSocket, connections, rooms), when it
    /// serves HTTP.
    pub fn web(&self) -> Option<&Web> {
        self.web.as_ref()
    }

    /// Where the node serves HTTP and WebSocket, if it does.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// Whether the node's backend answers now (a Redis `PING`; always true when embedded).
    ///
    /// # Errors
    ///
    /// Says why Redis did not answer.
    pub async fn check_backend(&self) -> std::result::Result<(), String> {
        match &self.pool {
            None => Ok(()),
            Some(pool) => pool.ping().await.map_err(|err| err.to_string()),
        }
    }

    /// Stops the node gracefully: the web server drains (requests in flight finish, keep-alive
    /// clients leave, WebSockets get 1001), then components stop taking work, tasks drain and are
    /// handed back, the node leaves the cluster, each within the configured `shutdown_timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] when the deadline passed with work still running.
    pub async fn shutdown(&self) -> Result<()> {
        // The web server drains first, while the bus, RPC and the stores still run: a request in
        // flight may need them. Then everything else stops.
        if let Some(web) = &self.web {
            web.stop();
            let deadline = self.api.config().shutdown_timeout;
            if tokio::time::timeout(deadline, web.drained()).await.is_err() {
                warn!(node_id = %self.api.node_id(), "the web drain passed the shutdown deadline");
            }
        }
        Ok(self.api.shutdown().await?)
    }
}

/// Assembles a [`Node`]: add task types and set-up hooks, then [`NodeBuilder::start`].
pub struct NodeBuilder {
    api: Api,
    tasks: Vec<TaskDefinition>,
    setups: Vec<SetupHook>,
    replaces: Option<u64>,
    actions: Actions,
    listener: Option<std::net::TcpListener>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("node_id", self.api.node_id())
            .field("tasks", &self.tasks.len())
            .field("setups", &self.setups.len())
            .finish()
    }
}

impl NodeBuilder {
    /// The node's handle, before it starts: to stop a start-up from outside (a signal).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Adds a task type (beside the built-in `stellar.sleep`, `stellar.log`, `stellar.fail`).
    pub fn task(mut self, definition: TaskDefinition) -> Self {
        self.tasks.push(definition);
        self
    }

    /// Adds task types.
    pub fn tasks(mut self, definitions: impl IntoIterator<Item = TaskDefinition>) -> Self {
        self.tasks.extend(definitions);
        self
    }

    /// Adds a set-up hook (see [`SetupHook`]).
    pub fn setup(mut self, hook: SetupHook) -> Self {
        self.setups.push(hook);
        self
    }

    /// Adds an action, reachable over HTTP (`/api/{name}`) and WebSocket.
    pub fn action(self, action: Action) -> Self {
        self.actions.register(action);
        self
    }

    /// Serves HTTP on `listener` (e.g. one a supervisor shares between its workers) instead of
    /// binding the configured `http_addr`.
    pub fn http_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Takes over the membership record of the live run `incarnation` of this node id (a
    /// supervised handover; see `Membership::join_replacing`).
    pub fn replaces(mut self, incarnation: Option<u64>) -> Self {
        self.replaces = incarnation;
        self
    }

    /// Connects the backend, starts the bus, joins the cluster, serves RPC, opens the cache and
    /// the task system, runs the set-up hooks, starts the task workers and marks the node ready.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (the default token on a shared Redis), [`Error::Connect`], [`Error::Bus`]
    /// (including a live node holding this id), [`Error::Setup`].
    pub async fn start(self) -> Result<Node> {
        let api = self.api;
        let config = api.config().clone();
        config.check_shared_backend()?;
        let cache_config = CacheConfig::default();
        let backend = connect(&api, &config).await?;
        let bus = backend.start_bus(&api).await?;
        let membership = backend.membership(&api);
        join(&api, &membership, self.replaces).await?;
        let rpc = Rpc::new(
            bus.clone(),
            membership.clone(),
            RpcSettings::from(api.config()),
        );
        rpc.serve();
        let cache = backend.cache(&api, cache_config);
        cache.register_metrics(api.metrics());
        let tasks = backend.tasks(&api, self.tasks);
        stellar_web::serve_quiet(&rpc, &tasks);
        api.insert(cache.clone());
        api.insert(tasks.clone());
        api.insert(backend.transport.clone());
        api.insert(bus.clone());
        api.insert(membership.clone());
        api.insert(rpc.clone());
        let (listener, http_addr) = listen(self.listener, &config)?;
        let web = listener.is_some().then(|| {
            let services = Services {
                api: api.clone(),
                bus: bus.clone(),
                membership: membership.clone(),
                rpc: rpc.clone(),
                cache: cache.clone(),
                tasks: tasks.clone(),
            };
            Web::new(
                services,
                self.actions.clone(),
                web_config(&config),
                readiness(&backend.pool),
            )
        });
        let mut node = Node {
            api: api.clone(),
            transport: backend.transport,
            bus,
            membership,
            rpc,
            cache,
            tasks,
            pool: backend.pool,
            web,
            http_addr,
        };
        for setup in &self.setups {
            setup(&node).map_err(Error::Setup)?;
        }
        // After the hooks, so tasks they register run too.
        node.tasks.start(&api);
        match (node.web.clone(), listener) {
            (Some(web), Some(listener)) => serve(&api, web, listener, node.http_addr)?,
            _ => node.http_addr = None,
        }
        api.set_ready();
        Ok(node)
    }
}

/// The Redis backend the config names, or the embedded in-memory one (with a warning that
/// nothing is shared).
async fn connect(api: &Api, config: &Config) -> Result<Backend> {
    if let Some(backend) = Backend::redis(config, api, api.cancellation_token()).await? {
        return Ok(backend);
    }
    warn!(
        node_id = %api.node_id(),
        "running on the embedded in-memory backend: state is not shared with other nodes; \
         to join a cluster, start every node with --redis URL (or STELLAR_REDIS_URL) and the same server token"
    );
    Ok(Backend::memory())
}

/// Joins the cluster (taking over the live run `replaces` in a supervised handover) and forgets
/// the client connections a dead previous run of this id left behind.
async fn join(api: &Api, membership: &Membership, replaces: Option<u64>) -> Result<()> {
    match replaces {
        Some(old) => membership.join_replacing(api, old).await,
        None => membership.join(api).await,
    }
    .map_err(|source| Error::Bus {
        what: "joining the cluster",
        source,
    })?;
    // This run holds no client connection yet: whatever is recorded under its id was held by
    // a run that died without releasing it. Not in a supervised handover: the run it replaces
    // still serves its connections until it stops (and releases them).
    if replaces.is_some() {
        return Ok(());
    }
    match membership.forget_connections(api).await {
        Ok(0) => {}
        Ok(forgotten) => {
            info!(node_id = %api.node_id(), forgotten, "forgot the connections of this node's previous run")
        }
        Err(err) => {
            warn!(node_id = %api.node_id(), error = %err, "could not forget the connections of this node's previous run")
        }
    }
    Ok(())
}

/// The HTTP listener: the one handed in, else one bound on `http_addr`, else none; with the
/// address it listens on.
fn listen(
    given: Option<std::net::TcpListener>,
    config: &Config,
) -> Result<(Option<std::net::TcpListener>, Option<SocketAddr>)> {
    let listener = match (given, config.http_addr) {
        (Some(listener), _) => listener,
        (None, Some(addr)) => {
            std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?
        }
        (None, None) => return Ok((None, None)),
    };
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.http_addr.unwrap_or(stellar_core::DEFAULT_HTTP_ADDR),
        source,
    })?;
    if config.http_request_timeout >= config.shutdown_timeout {
        warn!(
            request_timeout_ms = config.http_request_timeout.as_millis() as u64,
            shutdown_timeout_ms = config.shutdown_timeout.as_millis() as u64,
            "http_request_timeout_ms is not below shutdown_timeout_ms: a request that long is cut off when the node stops"
        );
    }
    Ok((Some(listener), Some(addr)))
}

/// Serves `web` on `listener` on the node's tracker.
fn serve(
    api: &Api,
    web: Web,
    listener: std::net::TcpListener,
    addr: Option<SocketAddr>,
) -> Result<()> {
    let bind_error = |source| Error::Bind {
        addr: addr.unwrap_or(stellar_core::DEFAULT_HTTP_ADDR),
        source,
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
    api.spawn(async move {
        if let Err(err) = web.serve(listener).await {
            warn!(error = %err, "the web server stopped");
        }
    });
    if let Some(addr) = addr {
        info!(node_id = %api.node_id(), %addr, "serving actions over HTTP and WebSocket: try `curl http://{addr}/api/status`");
    }
    Ok(())
}

/// The web settings of a node, from its config.
fn web_config(config: &Config) -> WebConfig {
    WebConfig::default()
        .with_body_limit(config.http_body_limit)
        .with_request_timeout(config.http_request_timeout)
        .with_header_timeout(config.http_header_timeout)
        .with_max_ws_connections(config.ws_max_connections)
        .with_dashboard_secret(config.dashboard_secret.clone())
        // In-flight requests finish within the node's own shutdown deadline.
        .with_drain_timeout(
            config
                .shutdown_timeout
                .saturating_sub(Duration::from_secs(1)),
        )
}

/// `/readyz`'s backend check: a Redis `PING`, or always ready when embedded.
fn readiness(pool: &Option<RedisPool>) -> Readiness {
    match pool.clone() {
        None => stellar_web::always_ready(),
        Some(pool) => std::sync::Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.ping().await.map_err(|err| err.to_string()) })
        }),
    }
}

/// The task settings of a node, from its config.
pub(crate) fn task_config(config: &Config) -> TaskConfig {
    TaskConfig {
        queues: config.task_queues.clone(),
        concurrency: config.task_concurrency,
        lease: config.task_lease,
        keep_completed: config.task_keep_completed,
        enqueue_retry: config.task_enqueue_retry,
        signer: RecordSigner::new(&config.server_token, config.previous_server_token.as_ref()),
        // Leave a margin inside the shutdown deadline to hand unfinished tasks back.
        drain_timeout: config
            .shutdown_timeout
            .saturating_sub(Duration::from_secs(1))
            .max(config.shutdown_timeout / 2),
        ..TaskConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_on_the_embedded_backend_runs_tasks_and_stops() {
        let node = Node::builder(Config::default())
            .setup(Box::new(|node: &Node| {
                node.api().register_gauge("hooked", || 1);
                Ok(())
            }))
            .start()
            .await
            .expect("starts");
        assert!(!node.is_shared());
        assert_eq!(node.check_backend().await, Ok(()));
        let id = node
            .tasks()
            .enqueue(
                "stellar.sleep",
                &serde_json::json!({"ms": 1}),
                Default::default(),
            )
            .await
            .expect("enqueue");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while node.tasks().show(&id).await.expect("show").map(|t| t.state)
            != Some(stellar_tasks::TaskState::Completed)
        {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.shutdown().await.expect("stops");
    }

    #[tokio::test]
    async fn a_failing_hook_stops_the_start_up_with_its_error() {
        let started = Node::builder(Config::default())
            .setup(Box::new(|_: &Node| Err("no database".into())))
            .start()
            .await;
        let err = started.expect_err("the hook failed");
        assert!(matches!(err, Error::Setup(_)), "{err:?}");
    }
}

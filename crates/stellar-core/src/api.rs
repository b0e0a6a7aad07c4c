//! The `Api` handle: a node's identity, configuration, components and lifecycle.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    fmt,
    future::Future,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{Config, NodeId, ShutdownError, metrics::Metrics};

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// Components are being started.
    Starting,
    /// Every component is up.
    Ready,
    /// A stop was requested; components are draining.
    Stopping,
    /// Every tracked task has ended, or the shutdown deadline passed.
    Stopped,
}

/// The handle every component of a node hangs off. Cloning it is cheap.
///
/// It carries the node's id and configuration, a type map of components (the bus, RPC, cache,
/// tasks insert themselves here so others can find them), the root of the node's cancellation
/// tree, and a tracker of every task spawned through [`Api::spawn`].
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    config: Config,
    /// Tells this run of the node from every other run under the same id.
    incarnation: u64,
    started_at: SystemTime,
    started: Instant,
    /// The root of the cancellation tree: cancelling it asks every component to stop.
    cancel: CancellationToken,
    /// Every task spawned through [`Api::spawn`], so shutdown can wait for them.
    tracker: TaskTracker,
    state: watch::Sender<NodeState>,
    /// Components by type; values are `Clone` handles so lookups hand out copies.
    components: RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// Named numbers components report for `api.status`, read when asked.
    gauges: RwLock<Vec<(&'static str, Gauge)>>,
    /// The node's metric registry, served as `GET /metrics`.
    metrics: Metrics,
}

type Gauge = Box<dyn Fn() -> u64 + Send + Sync>;

/// A fresh incarnation: the process id, the time and a per-process count, hashed with the
/// randomly keyed SipHash of the standard library, so runs (and `Api`s of one process) differ.
fn new_incarnation() -> u64 {
    use std::{
        hash::{BuildHasher, Hasher},
        sync::atomic::{AtomicU64, Ordering},
    };
    static MADE: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(MADE.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish().max(1)
}

/// The node's own families: `stellar_node_info` (1, with the version), `stellar_node_ready`
/// and `stellar_node_uptime_seconds`, read from the state channel (not the `Api`, which owns
/// the registry).
fn register_node_metrics(metrics: &Metrics, state: watch::Receiver<NodeState>, started: Instant) {
    metrics.snapshot(move |out| {
        out.gauge(
            "stellar_node_info",
            "Always 1 while the node answers; the version label names its build",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        let ready = *state.borrow() == NodeState::Ready;
        out.gauge(
            "stellar_node_ready",
            "1 when the node is ready (takes traffic), 0 while starting or stopping",
            &[],
            if ready { 1.0 } else { 0.0 },
        );
        out.gauge(
            "stellar_node_uptime_seconds",
            "Seconds since the node started",
            &[],
            started.elapsed().as_secs_f64(),
        );
    });
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("node_id", &self.inner.node_id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Creates the handle of a node in [`NodeState::Starting`]. The node id is
    /// [`Config::node_id`].
    pub fn new(config: Config) -> Self {
        let (state, _) = watch::channel(NodeState::Starting);
        let metrics = Metrics::new();
        register_node_metrics(&metrics, state.subscribe(), Instant::now());
        Self {
            inner: Arc::new(Inner {
                node_id: config.node_id(),
                config,
                incarnation: new_incarnation(),
                started_at: SystemTime::now(),
                started: Instant::now(),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
                state,
                components: RwLock::new(HashMap::new()),
                gauges: RwLock::new(Vec::new()),
                metrics,
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// This node's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A random number, never 0, that tells this run of the node from every other run under the
    /// same id: bus messages carry it, and the membership record shows it, so a supervisor can
    /// name the run a replacement takes over from.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// When the node was created.
    pub fn started_at(&self) -> SystemTime {
        self.inner.started_at
    }

    /// How long ago the node was created.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// A child of the node's root cancellation token: it is cancelled when the node stops.
    /// Components select on it in their loops.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inner.cancel.child_token()
    }

    /// Spawns a task that [`Api::shutdown`] waits for.
    ///
    /// The task should end soon after [`Api::cancellation_token`] is cancelled.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.tracker.spawn(task)
    }

    /// Registers a component, replacing any earlier one of the same type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, component: T) {
        self.components_mut()
            .insert(TypeId::of::<T>(), Box::new(component));
    }

    /// Returns a clone of the component of type `T`, if one was inserted.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        crate::sync::read(&self.inner.components)
            .get(&TypeId::of::<T>())
            .and_then(|c| c.downcast_ref::<T>())
            .cloned()
    }

    fn components_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<TypeId, Box<dyn Any + Send + Sync>>> {
        // A panic while holding this lock cannot leave the map half-updated: inserts are single
        // calls, so a poisoned lock is still consistent.
        crate::sync::write(&self.inner.components)
    }

    /// Registers a number a component reports about itself (e.g. `tasks_in_flight`), so status
    /// reports can show it without depending on the component.
    pub fn register_gauge(
        &self,
        name: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let mut gauges = crate::sync::write(&self.inner.gauges);
        gauges.retain(|(existing, _)| *existing != name);
        gauges.push((name, Box::new(read)));
    }

    /// The current value of every registered gauge.
    pub fn gauges(&self) -> Vec<(&'static str, u64)> {
        crate::sync::read(&self.inner.gauges)
            .iter()
            .map(|(name, read)| (*name, read()))
            .collect()
    }

    /// The node's metric registry: components register their families here when they are
    /// built; the web layer serves it as `GET /metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The node's current state.
    pub fn state(&self) -> NodeState {
        *self.inner.state.borrow()
    }

    /// Marks the node ready, if it is still starting.
    pub fn set_ready(&self) {
        self.inner.state.send_if_modified(|state| {
            let starting = *state == NodeState::Starting;
            if starting {
                *state = NodeState::Ready;
            }
            starting
        });
    }

    /// Waits until the node has reached at least `state`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn reached(&self, state: NodeState) {
        let mut receiver = self.inner.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(|current| *current >= state).await;
    }

    /// Asks the node to stop: cancels the root token. Returns at once; see [`Api::shutdown`].
    pub fn stop(&self) {
        self.inner.state.send_if_modified(|state| {
            let running = *state < NodeState::Stopping;
            if running {
                *state = NodeState::Stopping;
            }
            running
        });
        self.inner.cancel.cancel();
    }

    /// Waits until someone calls [`Api::stop`] (or [`Api::shutdown`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stop_requested(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// Stops the node gracefully: cancels every component, then waits for the tracked tasks,
    /// at most `shutdown_timeout`.
    ///
    /// # Errors
    ///
    /// Returns [`ShutdownError::DeadlineExceeded`] if tasks were still running at the deadline.
    /// The node is [`NodeState::Stopped`] either way.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        self.stop();
        let tracker = &self.inner.tracker;
        tracker.close();
        let deadline = self.inner.config.shutdown_timeout;
        let started = Instant::now();
        let result = tokio::time::timeout(deadline, tracker.wait()).await;
        self.inner.state.send_replace(NodeState::Stopped);
        match result {
            Ok(()) => {
                info!(node_id = %self.node_id(), elapsed_ms = started.elapsed().as_millis() as u64, "node stopped");
                Ok(())
            }
            Err(_) => {
                let still_running = tracker.len();
                warn!(node_id = %self.node_id(), still_running, "shutdown deadline passed");
                Err(ShutdownError::DeadlineExceeded {
                    after: deadline,
                    still_running,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn api_with_deadline(ms: u64) -> Api {
        Api::new(Config {
            shutdown_timeout: Duration::from_millis(ms),
            ..Config::default()
        })
    }

    #[test]
    fn every_api_is_a_new_incarnation() {
        let (a, b) = (api_with_deadline(1), api_with_deadline(1));
        assert_ne!(a.incarnation(), b.incarnation());
        assert_ne!(a.incarnation(), 0);
        assert_eq!(a.incarnation(), a.clone().incarnation());
    }

    #[tokio::test]
    async fn lifecycle_goes_starting_ready_stopping_stopped() {
        let api = api_with_deadline(1000);
        assert_eq!(api.state(), NodeState::Starting);
        api.set_ready();
        api.reached(NodeState::Ready).await;
        assert_eq!(api.state(), NodeState::Ready);
        api.stop();
        assert_eq!(api.state(), NodeState::Stopping);
        api.set_ready();
        assert_eq!(
            api.state(),
            NodeState::Stopping,
            "a stopping node never becomes ready again"
        );
        api.shutdown().await.expect("nothing to wait for");
        assert_eq!(api.state(), NodeState::Stopped);
    }

    #[tokio::test]
    async fn shutdown_cancels_children_and_waits_for_tracked_tasks() {
        let api = api_with_deadline(1000);
        let finished = Arc::new(AtomicBool::new(false));
        let (cancel, flag) = (api.cancellation_token(), finished.clone());
        api.spawn(async move {
            cancel.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
        });
        api.shutdown().await.expect("task ends in time");
        assert!(
            finished.load(Ordering::SeqCst),
            "shutdown returned before the task ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_at_the_deadline() {
        let api = api_with_deadline(500);
        api.spawn(std::future::pending::<()>());
        let err = api.shutdown().await.expect_err("task never ends");
        assert!(
            matches!(
                err,
                ShutdownError::DeadlineExceeded {
                    still_running: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(api.state(), NodeState::Stopped);
    }

    #[tokio::test]
    async fn stop_requested_resolves_after_stop() {
        let api = api_with_deadline(1000);
        let waiter = tokio::spawn({
            let api = api.clone();
            async move { api.stop_requested().await }
        });
        api.stop();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("stop_requested resolved")
            .expect("waiter did not panic");
    }

    #[test]
    fn components_are_found_by_type() {
        #[derive(Clone, Debug, PartialEq)]
        struct Counter(u32);
        let api = Api::new(Config::default());
        assert_eq!(api.get::<Counter>(), None);
        api.insert(Counter(1));
        api.insert(Arc::new(String::from("shared")));
        assert_eq!(api.get::<Counter>(), Some(Counter(1)));
        api.insert(Counter(2));
        assert_eq!(api.get::<Counter>(), Some(Counter(2)));
        assert_eq!(
            api.get::<Arc<String>>().as_deref().map(String::as_str),
            Some("shared")
        );
    }

    #[test]
    fn gauges_are_read_when_asked_and_replaced_by_name() {
        let api = Api::new(Config::default());
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let read = counter.clone();
        api.register_gauge("things", move || read.load(Ordering::SeqCst));
        counter.store(5, Ordering::SeqCst);
        assert_eq!(api.gauges(), [("things", 5)]);
        api.register_gauge("things", || 7);
        assert_eq!(api.gauges(), [("things", 7)]);
    }

    #[test]
    fn node_id_comes_from_config_or_host() {
        let named = Api::new(Config {
            id: Some(NodeId::new("a").expect("valid")),
            ..Config::default()
        });
        assert_eq!(named.node_id().as_str(), "a");
        let unnamed = Api::new(Config::default());
        assert!(
            unnamed
                .node_id()
                .as_str()
                .ends_with(&std::process::id().to_string())
        );
    }
}

//! `stellar run`: one node, from start to a graceful stop.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use stellar_bus::{
    Bus, BusConfig, Membership, MembershipStore, MemoryMembershipStore, MemoryTransport,
    RecordSigner, RedisConfig, RedisMembershipStore, RedisPool, RedisTransport, Transport,
};
use stellar_cache::{Cache, CacheConfig, CacheStore, MemoryCacheStore, RedisCacheStore};
use stellar_core::{Api, Config, StopSignals};
use stellar_rpc::Rpc;
use stellar_tasks::{
    MemoryTaskStore, RedisTaskStore, TaskConfig, TaskDefinition, TaskStore, Tasks,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    app::{EXIT_FORCED, NodeContext, Setup},
    control::{self, Control},
};

/// Starts a node, waits for a stop signal (or a stop from inside), and stops it gracefully.
///
/// Under a supervisor ([`control::SOCKET_ENV`] set) the node reports to it, stops when it goes
/// away, and treats a repeated SIGINT/SIGTERM as the same request: only SIGQUIT, which the
/// supervisor sends when its operator insists, forces it out. Run alone, a second SIGINT/SIGTERM
/// forces it out.
pub(crate) async fn run(
    config: Config,
    setups: &[Setup],
    definitions: &[TaskDefinition],
) -> Result<()> {
    config.check_shared_backend()?;
    let replaces = replaced_incarnation(std::env::var(REPLACES_INCARNATION).ok())?;
    let api = Api::new(config);
    let incarnation = api.incarnation();
    let mut control = Control::connect(api.node_id().as_str(), incarnation).await?;
    // Installed before the supervisor could ever send it, so it never dumps core.
    let quit = match control {
        Some(_) => Some(signal(SignalKind::quit()).context("installing the SIGQUIT handler")?),
        None => None,
    };
    if let Some(control) = &mut control {
        control.stop_when_supervisor_exits(&api);
    }
    register_restarts_gauge(&api);
    let mut signals = StopSignals::install().context("installing signal handlers")?;
    // A stop signal during start-up abandons the start-up: there is nothing to drain yet.
    let node = tokio::select! {
        node = start_with_hooks(&api, setups, definitions, replaces) => node?,
        signal = signals.recv() => {
            info!(node_id = %api.node_id(), %signal, "stopped during start-up");
            let _ = api.shutdown().await;
            return Ok(());
        }
    };
    api.set_ready();
    let backend = if node.shared { "redis" } else { "memory" };
    info!(node_id = %api.node_id(), backend, pid = std::process::id(), incarnation, "node ready");
    if let Some(control) = &mut control {
        control.ready().await?;
    }

    let reason = tokio::select! {
        signal = signals.recv() => signal.to_string(),
        () = api.stop_requested() => "stop requested".to_owned(),
    };
    info!(node_id = %api.node_id(), %reason, timeout_ms = api.config().shutdown_timeout.as_millis() as u64, "shutdown begun");
    tokio::spawn(force_on(signals, quit));
    api.shutdown().await.context("graceful shutdown")?;
    // Held until here: the supervisor sees the connection close when the node has stopped.
    drop(control);
    Ok(())
}

/// Exits at once on the signal that means "stop now": SIGQUIT under a supervisor (a repeated
/// SIGTERM is then the same request again, as when systemd signals every process of the group
/// and the supervisor forwards its own), a second SIGINT/SIGTERM otherwise.
async fn force_on(mut signals: StopSignals, quit: Option<Signal>) {
    let Some(mut quit) = quit else {
        let signal = signals.recv().await;
        error!(%signal, "second signal during shutdown, exiting now");
        std::process::exit(i32::from(EXIT_FORCED));
    };
    loop {
        tokio::select! {
            signal = signals.recv() => {
                info!(%signal, "already stopping; a supervised worker is forced out only by SIGQUIT");
            }
            _ = quit.recv() => {
                error!("SIGQUIT from the supervisor during shutdown, exiting now");
                std::process::exit(i32::from(EXIT_FORCED));
            }
        }
    }
}

async fn start_with_hooks(
    api: &Api,
    setups: &[Setup],
    definitions: &[TaskDefinition],
    replaces: Option<u64>,
) -> Result<NodeContext> {
    let node = start(api, definitions, replaces).await?;
    for setup in setups {
        setup(&node).context("node set-up hook failed")?;
    }
    // After the hooks, so tasks they register run too.
    node.tasks.start(api);
    Ok(node)
}

/// Reports how often the supervisor had to restart this worker's slot, so a crash loop shows in
/// `api.status` (`gauges.supervisor_restarts`).
fn register_restarts_gauge(api: &Api) {
    let restarts = std::env::var(control::RESTARTS_ENV)
        .ok()
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(restarts) = restarts {
        api.register_gauge("supervisor_restarts", move || restarts);
    }
}

/// Names the incarnation of a live run of this node id that this run takes over (a supervised
/// handover; see `Membership::join_replacing`). Without it, a live run under the same id makes
/// start-up fail.
const REPLACES_INCARNATION: &str = "STELLAR_REPLACES_INCARNATION";

/// The incarnation named by [`REPLACES_INCARNATION`]: decimal, or hex with `0x`; unset or
/// empty is none.
fn replaced_incarnation(value: Option<String>) -> Result<Option<u64>> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    };
    parsed
        .map(Some)
        .with_context(|| format!("{REPLACES_INCARNATION}={value:?} is not an incarnation (a u64)"))
}

/// The backend of a node or client: Redis if a URL is configured, the embedded one otherwise.
pub(crate) struct Backend {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn MembershipStore>,
    pub(crate) cache: Arc<dyn CacheStore>,
    pub(crate) tasks: Arc<dyn TaskStore>,
    pub(crate) shared: bool,
}

/// Connects the backend of `api`.
pub(crate) async fn connect(api: &Api) -> Result<Backend> {
    let Some(redis) = RedisConfig::from_config(api.config()) else {
        return Ok(Backend {
            transport: Arc::new(MemoryTransport::new()),
            store: Arc::new(MemoryMembershipStore::new()),
            cache: Arc::new(MemoryCacheStore::new()),
            tasks: Arc::new(MemoryTaskStore::new()),
            shared: false,
        });
    };
    let pool = RedisPool::connect(redis)
        .await
        .context("connecting to redis")?;
    let transport = RedisTransport::connect(pool.clone(), api.cancellation_token())
        .await
        .context("opening the redis subscriber connection")?;
    info!(node_id = %api.node_id(), url = %pool.redacted_url(), "connected to redis");
    let transport: Arc<dyn Transport> = Arc::new(transport);
    Ok(Backend {
        transport: transport.clone(),
        store: Arc::new(RedisMembershipStore::new(pool.clone())),
        cache: Arc::new(RedisCacheStore::new(pool.clone(), &CacheConfig::default())),
        tasks: Arc::new(RedisTaskStore::new(pool, transport)),
        shared: true,
    })
}

/// The task system of `api` on `store`, with the built-in and the app's task definitions.
pub(crate) fn tasks(api: &Api, store: Arc<dyn TaskStore>, definitions: &[TaskDefinition]) -> Tasks {
    let config = api.config();
    let task_config = TaskConfig {
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
    };
    let tasks = Tasks::new(store, api.node_id().clone(), task_config);
    for definition in crate::builtin_tasks::definitions()
        .into_iter()
        .chain(definitions.iter().cloned())
    {
        tasks.register(definition);
    }
    tasks
}

/// Connects the backend and starts the node's bus, membership, RPC and cache; tasks are made here
/// and started once the set-up hooks ran.
async fn start(
    api: &Api,
    definitions: &[TaskDefinition],
    replaces: Option<u64>,
) -> Result<NodeContext> {
    let backend = connect(api).await.context("starting the node")?;
    if !backend.shared {
        warn!(
            node_id = %api.node_id(),
            "running on the embedded in-memory backend: state is not shared with other nodes; \
             to join a cluster, start every node with --redis URL (or STELLAR_REDIS_URL) and the same server token"
        );
    }
    let bus = Bus::start(api, backend.transport.clone(), BusConfig::default())
        .await
        .context("starting the bus")?;
    let membership = Membership::new(backend.store, api);
    match replaces {
        Some(old) => membership.join_replacing(api, old).await,
        None => membership.join(api).await,
    }
    .context("joining the cluster")?;
    let rpc = Rpc::new(bus.clone(), membership.clone());
    rpc.serve();
    let cache = Cache::new(backend.cache, api.node_id().clone(), CacheConfig::default());
    api.insert(cache.clone());
    let tasks = tasks(api, backend.tasks, definitions);
    api.insert(tasks.clone());
    api.insert(backend.transport.clone());
    api.insert(bus.clone());
    api.insert(membership.clone());
    api.insert(rpc.clone());
    Ok(NodeContext {
        api: api.clone(),
        transport: backend.transport,
        bus,
        membership,
        rpc,
        cache,
        tasks,
        shared: backend.shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replaced_incarnation_is_decimal_or_hex() {
        assert_eq!(replaced_incarnation(None).expect("unset"), None);
        assert_eq!(replaced_incarnation(Some(" ".into())).expect("empty"), None);
        assert_eq!(
            replaced_incarnation(Some("18446744073709551615".into())).expect("decimal"),
            Some(u64::MAX)
        );
        assert_eq!(
            replaced_incarnation(Some("0x2a".into())).expect("hex"),
            Some(42)
        );
        let err = replaced_incarnation(Some("worker-1".into())).expect_err("not a number");
        assert!(
            err.to_string().contains("STELLAR_REPLACES_INCARNATION"),
            "{err}"
        );
    }
}

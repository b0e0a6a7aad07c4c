//! The stores a node or client runs on: Redis when a URL is configured, memory otherwise.

use std::sync::Arc;

use stellar_bus::{
    Bus, BusSettings, Membership, MembershipSettings, MembershipStore, MemoryMembershipStore,
    MemoryTransport, RedisConfig, RedisMembershipStore, RedisPool, RedisTransport, Transport,
};
use stellar_cache::{
    Cache, CacheConfig, MemoryCacheStore, RedisCacheStore,
    store::{CacheStore, NearCacheLimits},
};
use stellar_core::{Api, CancellationToken, Config};
use stellar_tasks::{
    MemoryTaskStore, RedisTaskStore, TaskDefinition, TaskStore, Tasks, WorkSignal,
};
use tracing::info;

use crate::{Error, Result, builtin_tasks, node::task_config};

/// The backend of a node or client.
pub(crate) struct Backend {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) membership: Arc<dyn MembershipStore>,
    pub(crate) cache: Arc<dyn CacheStore>,
    pub(crate) tasks: Arc<dyn TaskStore>,
    /// What wakes idle task workers when work becomes ready.
    pub(crate) work_signal: WorkSignal,
    /// The Redis pool, for a readiness check; `None` on the embedded backend.
    pub(crate) pool: Option<RedisPool>,
}

impl Backend {
    /// The embedded in-memory backend: state shared by nothing outside this process.
    pub(crate) fn memory() -> Self {
        let tasks = MemoryTaskStore::new();
        Self {
            transport: Arc::new(MemoryTransport::new()),
            membership: Arc::new(MemoryMembershipStore::new()),
            cache: Arc::new(MemoryCacheStore::new()),
            work_signal: tasks.signal(),
            tasks: Arc::new(tasks),
            pool: None,
        }
    }

    /// Connects to the Redis of `config`; `None` when it names none.
    pub(crate) async fn redis(
        config: &Config,
        api: &Api,
        cancel: CancellationToken,
    ) -> Result<Option<Self>> {
        let Some(redis) = RedisConfig::from_config(config) else {
            return Ok(None);
        };
        let pool = RedisPool::connect(redis).await.map_err(Error::Connect)?;
        let transport = RedisTransport::connect(pool.clone(), cancel)
            .await
            .map_err(Error::Connect)?;
        info!(node_id = %api.node_id(), url = %pool.redacted_url(), "connected to redis");
        pool.register_metrics(api.metrics());
        // Shutdown waits for the subscriber connection to close.
        api.spawn(transport.stopped());
        let transport: Arc<dyn Transport> = Arc::new(transport);
        Ok(Some(Self {
            transport: transport.clone(),
            membership: Arc::new(RedisMembershipStore::new(pool.clone())),
            cache: Arc::new(
                RedisCacheStore::new(pool.clone()).with_near_cache(NearCacheLimits {
                    max_entries: config.cache_near_entries,
                    max_bytes: config.cache_near_bytes,
                }),
            ),
            tasks: Arc::new(
                RedisTaskStore::new(pool.clone())
                    .with_enqueue_wait(config.task_enqueue_wait_replicas, config.task_enqueue_wait),
            ),
            work_signal: WorkSignal::subscribed(transport),
            pool: Some(pool),
        }))
    }

    /// The bus of `api` on this backend's transport (settings from its config), started.
    pub(crate) async fn start_bus(&self, api: &Api) -> Result<Bus> {
        Bus::start(api, self.transport.clone(), BusSettings::from(api.config()))
            .await
            .map_err(|source| Error::Bus {
                what: "starting the bus",
                source,
            })
    }

    /// The membership of `api` on this backend's store (settings from its config); not joined.
    pub(crate) fn membership(&self, api: &Api) -> Membership {
        Membership::new(
            self.membership.clone(),
            api,
            MembershipSettings::from(api.config()),
        )
    }

    /// The shared cache, as `api`'s node id sees it.
    pub(crate) fn cache(&self, api: &Api, config: CacheConfig) -> Cache {
        Cache::new(self.cache.clone(), api.node_id().clone(), config)
    }

    /// The task system of `api` (settings from its config), with the built-in task types and
    /// `definitions`; not started.
    pub(crate) fn tasks(
        &self,
        api: &Api,
        definitions: impl IntoIterator<Item = TaskDefinition>,
    ) -> Tasks {
        let tasks = Tasks::new(
            self.tasks.clone(),
            self.work_signal.clone(),
            api.node_id().clone(),
            task_config(api.config()),
        );
        for definition in builtin_tasks().into_iter().chain(definitions) {
            tasks.register(definition);
        }
        tasks
    }
}

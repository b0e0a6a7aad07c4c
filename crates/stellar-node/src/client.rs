//! A client of a running cluster: RPC, bus, shared cache and tasks, without joining it.

use std::fmt;

use stellar_bus::{Bus, Membership};
use stellar_cache::{Cache, CacheConfig};
use stellar_core::{Api, Config, NodeId};
use stellar_rpc::{Rpc, RpcSettings};
use stellar_tasks::{TaskDefinition, Tasks};

use crate::{Error, Result, backend::Backend};

/// A short-lived client of a cluster (what `stellar cluster`, `cache` and `tasks` use). It talks
/// on the bus under its own id (`stellar-client-<host>-<pid>`) to receive RPC replies, but never
/// joins the membership, runs no task workers and no maintenance: it never shows as a node.
pub struct Client {
    api: Api,
    bus: Bus,
    rpc: Rpc,
    cache: Cache,
    tasks: Tasks,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", self.api.node_id())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the cluster's Redis named by `config`. `definitions` are the app's task types
    /// (beside the built-in ones), so that tasks can be enqueued by name.
    ///
    /// # Errors
    ///
    /// [`Error::NoSharedBackend`] when `config` names no Redis, [`Error::Config`] for the default
    /// token, [`Error::Connect`], [`Error::Bus`].
    pub async fn connect(config: Config, definitions: &[TaskDefinition]) -> Result<Self> {
        let id = NodeId::new(format!("stellar-client-{}", NodeId::from_host()))
            .expect("a host-derived id is valid");
        Self::connect_as(id, config, definitions).await
    }

    /// Like [`Client::connect`], under the bus id `id` (e.g. a supervisor's). Never a node's id:
    /// the client would receive that node's direct messages.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect_as(
        id: NodeId,
        config: Config,
        definitions: &[TaskDefinition],
    ) -> Result<Self> {
        config.check_shared_backend()?;
        let api = Api::new(Config {
            id: Some(id),
            ..config
        });
        let cache_config = CacheConfig::default();
        let backend = Backend::redis(api.config(), &api, api.cancellation_token())
            .await?
            .ok_or(Error::NoSharedBackend)?;
        let bus = backend.start_bus(&api).await?;
        let rpc = Rpc::new(
            bus.clone(),
            backend.membership(&api),
            RpcSettings::from(api.config()),
        );
        let cache = backend.cache(&api, cache_config);
        let tasks = backend.tasks(&api, definitions.iter().cloned());
        Ok(Self {
            api,
            bus,
            rpc,
            cache,
            tasks,
        })
    }

    /// The client's bus (publish to the cluster).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The cluster's membership (read only: the client is not a member).
    pub fn membership(&self) -> &Membership {
        self.rpc.membership()
    }

    /// Call methods on the cluster's nodes.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The shared cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cluster's tasks: enqueue and inspect (this client runs none).
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Closes the client's connections.
    pub async fn close(self) {
        // Nothing of the client's needs draining; a late stop changes nothing for the caller.
        let _ = self.api.shutdown().await;
    }
}

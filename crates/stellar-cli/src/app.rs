//! The library entry point behind the `stellar` binary.

use std::{ffi::OsString, fmt, process::ExitCode, sync::Arc};

use anyhow::Result;
use clap::Parser;
use stellar_bus::{Bus, Membership, Transport};
use stellar_cache::Cache;
use stellar_core::{Api, Config};
use stellar_rpc::Rpc;
use stellar_tasks::{TaskDefinition, Tasks};

use crate::{
    cache_cmd,
    cli::{Cli, Command},
    cluster, logging, node, supervisor, tasks_cmd,
};

/// A set-up hook: runs on every node this process starts, before the node is ready.
pub(crate) type Setup = Box<dyn Fn(&NodeContext) -> Result<()> + Send + Sync>;

/// The `stellar` command line. Add your components with [`App::setup`], then call
/// [`App::main`] from `main`.
#[derive(Default)]
pub struct App {
    setups: Vec<Setup>,
    tasks: Vec<TaskDefinition>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("setups", &self.setups.len())
            .finish()
    }
}

/// What a set-up hook gets: the node's [`Api`], bus, membership and RPC.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub(crate) api: Api,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) bus: Bus,
    pub(crate) membership: Membership,
    pub(crate) rpc: Rpc,
    pub(crate) cache: Cache,
    pub(crate) tasks: Tasks,
    pub(crate) shared: bool,
}

impl NodeContext {
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
        self.shared
    }
}

impl App {
    /// An app with no hooks: exactly the `stellar` binary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hook that runs on each node start, after its backend is connected and before it is
    /// ready. A hook error stops the start-up with that error.
    pub fn setup(
        mut self,
        hook: impl Fn(&NodeContext) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.setups.push(Box::new(hook));
        self
    }

    /// Adds a task type: every node runs it, and `stellar tasks enqueue` accepts its name.
    pub fn task(mut self, definition: TaskDefinition) -> Self {
        self.tasks.push(definition);
        self
    }

    /// Runs with this process's arguments, prints any error, and returns the exit code.
    pub fn main(self) -> ExitCode {
        match self.run(std::env::args_os()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("stellar: error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// Parses `args` (the first is the program name) and runs the command.
    ///
    /// # Errors
    ///
    /// Any error of the command: invalid flags or configuration, an unreachable backend, a
    /// failed hook, or a shutdown that passed its deadline. Usage errors and `--help` exit the
    /// process through clap, as a command line should.
    pub fn run<I, T>(self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::parse_from(args);
        let sources = cli.config_sources();
        let config = Config::load(&sources)?;
        // A client command prints results on stdout; its own lifecycle logs are noise unless the
        // user asked for a log level.
        let asked = sources.flags.iter().any(|(key, _)| *key == "log")
            || sources.env.iter().any(|(name, _)| name == "STELLAR_LOG");
        let filter = match cli.command {
            Command::Cluster(_) | Command::Cache(_) | Command::Tasks(_) if !asked => "warn",
            _ => config.log.as_str(),
        };
        logging::init(filter)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        match cli.command {
            Command::Run(run) if run.cluster.is_some() => {
                runtime.block_on(supervisor::run(config, &cli.global, run))
            }
            Command::Run(_) => runtime.block_on(node::run(config, &self.setups, &self.tasks)),
            Command::Tasks(tasks) => {
                runtime.block_on(tasks_cmd::run(config, tasks.command, &self.tasks))
            }
            Command::Cluster(cluster) => runtime.block_on(cluster::run(config, cluster.command)),
            Command::Cache(cache) => runtime.block_on(cache_cmd::run(config, cache.command)),
        }
    }
}

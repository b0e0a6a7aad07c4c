//! The library entry point behind the `stellar` binary.

use std::{ffi::OsString, fmt, io::Write, process::ExitCode};

use anyhow::Result;
use clap::Parser;
use stellar_core::{Config, ConfigError};
use stellar_tasks::TaskDefinition;

use crate::{
    cache_cmd,
    cli::{Cli, Command},
    cluster, logging, migrate, node, supervisor, tasks_cmd,
};

/// The exit code of a start-up that failed on its configuration (`EX_CONFIG` in sysexits.h): an
/// invalid file, variable or flag. A supervisor does not restart a worker that exits with it.
pub(crate) const EXIT_CONFIG: u8 = 78;
/// The exit code of a forced stop: a second Ctrl-C, or SIGQUIT to a supervised worker.
pub(crate) const EXIT_FORCED: u8 = 130;

/// An error that ends the process with a chosen exit code rather than 1.
#[derive(Debug)]
pub(crate) struct ExitWith {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitWith {}

/// The exit code for `err`: [`EXIT_CONFIG`] for a configuration error, the code an [`ExitWith`]
/// carries, 1 otherwise.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    if let Some(exit) = err.downcast_ref::<ExitWith>() {
        return ExitCode::from(exit.code);
    }
    let config_error = |cause: &(dyn std::error::Error + 'static)| {
        cause.is::<ConfigError>()
            || matches!(
                cause.downcast_ref::<stellar_node::Error>(),
                Some(stellar_node::Error::Config(_))
            )
    };
    if err.chain().any(config_error) {
        return ExitCode::from(EXIT_CONFIG);
    }
    ExitCode::FAILURE
}

/// `err` and its causes, `: `-separated, each said once: a cause whose text its parent's already
/// ends with (an I/O error that a Redis error quotes and also gives as its source) is skipped.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || parts.last().is_some_and(|last| last.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// A client command's connection error as its user should read it: the default token is a
/// missing `--server-token`, not a refusal to start.
pub(crate) fn client_error(err: stellar_node::Error) -> anyhow::Error {
    match err {
        stellar_node::Error::Config(ConfigError::DefaultTokenOnSharedBackend { redis_url }) => {
            ExitWith {
                code: EXIT_CONFIG,
                message: format!(
                    "the server token is the default `change-me`, which no cluster on a shared \
                     Redis ({redis_url}) uses: set --server-token or STELLAR_SERVER_TOKEN to the \
                     cluster's token"
                ),
            }
            .into()
        }
        other => other.into(),
    }
}

/// Prints what `completions` and `man` generate from the command line's definition; `None` for
/// every other command. Needs no configuration.
fn print_generated(command: &Command) -> Option<Result<()>> {
    let mut definition = <Cli as clap::CommandFactory>::command();
    // Generated in memory, then written: a closed stdout (`stellar man | head`) is no error.
    let mut text = Vec::new();
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut definition, "stellar", &mut text);
        }
        Command::Man => {
            if let Err(err) = clap_mangen::Man::new(definition).render(&mut text) {
                return Some(Err(err.into()));
            }
        }
        _ => return None,
    }
    match std::io::stdout().lock().write_all(&text) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Some(Err(err.into())),
        _ => Some(Ok(())),
    }
}

/// A set-up hook: runs on every node this process starts, before the node is ready.
pub(crate) type Setup = std::sync::Arc<dyn Fn(&NodeContext) -> Result<()> + Send + Sync>;

/// The `stellar` command line. Add your components with [`App::setup`], then call
/// [`App::main`] from `main`.
#[derive(Default)]
pub struct App {
    setups: Vec<Setup>,
    tasks: Vec<TaskDefinition>,
    actions: Vec<stellar_node::Action>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("setups", &self.setups.len())
            .finish()
    }
}

/// What a set-up hook gets: the node, with its [`Api`](stellar_core::Api), bus, membership, RPC,
/// cache and tasks (see [`stellar_node::Node`]).
pub type NodeContext = stellar_node::Node;

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
        self.setups.push(std::sync::Arc::new(hook));
        self
    }

    /// Adds an action: every node serves it over HTTP (`GET|POST /api/{name}`) and WebSocket.
    pub fn action(mut self, action: stellar_node::Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Adds a task type: every node runs it, and `stellar tasks enqueue` accepts its name.
    pub fn task(mut self, definition: TaskDefinition) -> Self {
        self.tasks.push(definition);
        self
    }

    /// Runs with this process's arguments, prints any error, and returns the exit code: 0, 78
    /// (`EX_CONFIG`) for an invalid configuration, 130 for a forced stop, 1 for any other error.
    pub fn main(self) -> ExitCode {
        match self.run(std::env::args_os()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                // Not `eprintln!`: it panics when stderr is a closed pipe (a worker whose
                // supervisor died).
                let _ = writeln!(std::io::stderr(), "stellar: error: {}", error_text(&err));
                exit_code(&err)
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
        if let Some(printed) = print_generated(&cli.command) {
            return printed;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        // The span exporter is set up with the subscriber and runs on the runtime.
        let (config, telemetry) = {
            let _entered = runtime.enter();
            configure(&cli)?
        };
        let result = runtime.block_on(self.execute(cli, config));
        if let Some(telemetry) = telemetry {
            telemetry.shutdown();
        }
        result
    }

    /// Runs the command `cli` names, with `config`.
    async fn execute(&self, cli: Cli, config: Config) -> Result<()> {
        match cli.command {
            Command::Run(run) if run.cluster.is_some() => {
                supervisor::run(config, &cli.global, run).await
            }
            Command::Run(_) => node::run(config, &self.setups, &self.tasks, &self.actions).await,
            Command::Tasks(tasks) => tasks_cmd::run(config, tasks.command, &self.tasks).await,
            Command::Cluster(cluster) => cluster::run(config, cluster.command).await,
            Command::Cache(cache) => cache_cmd::run(config, cache.command).await,
            Command::Migrate(args) => migrate::run(config, args).await,
            Command::Completions { .. } | Command::Man => Ok(()),
        }
    }
}

/// Loads the configuration `cli` points at and installs the log subscriber (and span exporter).
fn configure(cli: &Cli) -> Result<(Config, Option<logging::Telemetry>)> {
    let sources = cli.config_sources();
    let config = Config::load(&sources)?;
    // A client command prints results on stdout; its own lifecycle logs are noise unless the
    // user asked for a log level.
    let asked = sources.flags.iter().any(|(key, _)| *key == "log")
        || sources.env.iter().any(|(name, _)| name == "STELLAR_LOG");
    let filter = match cli.command {
        Command::Cluster(_) | Command::Cache(_) | Command::Tasks(_) | Command::Migrate(_)
            if !asked =>
        {
            "warn"
        }
        _ => config.log.as_str(),
    };
    // An invalid log filter is a configuration error like any other, naming where it came from.
    let otlp_endpoint = match cli.command {
        Command::Run(_) => config.otlp_endpoint.as_deref(),
        _ => None,
    };
    let filter = logging::filter(filter)
        .map_err(|err| config.invalid("log", format!("{filter:?} ({})", err.root_cause())))?;
    let telemetry = logging::init(filter, otlp_endpoint).map_err(|err| {
        let shown = otlp_endpoint
            .map(stellar_core::redact_url)
            .unwrap_or_default();
        config.invalid("otlp_endpoint", format!("{shown:?} ({})", err.root_cause()))
    })?;
    Ok((config, telemetry))
}

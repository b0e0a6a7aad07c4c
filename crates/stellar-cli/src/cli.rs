//! Command-line syntax. Flags only carry values; `stellar_core::Config` decides precedence.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use stellar_core::ConfigSources;

/// Run a service as a cluster of nodes that share state through Redis.
#[derive(Debug, Parser)]
#[command(name = "stellar", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// A TOML config file (overrides STELLAR_CONFIG); see docs/configuration.md.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `stellar_bus=debug,info` (config key `log`).
    #[arg(long, global = true, value_name = "FILTER")]
    pub(crate) log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one node: embedded in-memory backend, or a shared Redis with --redis.
    Run(RunArgs),
}

/// Flags of `stellar run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// This node's id (config key `id`; default `<hostname>-<pid>`).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
    /// The shared Redis, e.g. redis://127.0.0.1:6379/0 (config key `redis_url`).
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// The cluster's secret (config key `server_token`). Prefer STELLAR_SERVER_TOKEN: flags
    /// show in `ps`.
    #[arg(long, value_name = "TOKEN")]
    pub(crate) server_token: Option<String>,
    /// How long a graceful stop may take (config key `shutdown_timeout_ms`).
    #[arg(long, value_name = "MS")]
    pub(crate) shutdown_timeout_ms: Option<String>,
}

impl Cli {
    /// The configuration sources: this process's environment, then the flags given.
    pub(crate) fn config_sources(&self) -> ConfigSources {
        let mut sources = ConfigSources::from_process_env();
        if let Some(path) = &self.global.config {
            sources = sources.with_file(path);
        }
        let mut flag = |key: &'static str, value: &Option<String>| {
            if let Some(value) = value {
                sources.flags.push((key, value.clone()));
            }
        };
        flag("log", &self.global.log);
        match &self.command {
            Command::Run(run) => {
                flag("id", &run.id);
                flag("redis_url", &run.redis);
                flag("server_token", &run.server_token);
                flag("shutdown_timeout_ms", &run.shutdown_timeout_ms);
            }
        }
        sources
    }
}

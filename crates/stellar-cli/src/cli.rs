//! Command-line syntax. Flags only carry values; `stellar_core::Config` decides precedence.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
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
    /// The shared Redis, e.g. redis://127.0.0.1:6379/0 (config key `redis_url`).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// The cluster's secret (config key `server_token`). Prefer STELLAR_SERVER_TOKEN: flags
    /// show in `ps`.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub(crate) server_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one node: embedded in-memory backend, or a shared Redis with --redis.
    Run(RunArgs),
    /// Inspect and drive a running cluster (needs its Redis and server token).
    Cluster(ClusterArgs),
    /// Read and write the shared cache (needs the cluster's Redis).
    Cache(CacheArgs),
    /// Enqueue and inspect tasks (needs the cluster's Redis).
    Tasks(TasksArgs),
    /// Move the keys of the layout before hash tags (releases before Redis Cluster support) to
    /// today's names: renamed in place, or copied to another Redis with --to (e.g. a Redis
    /// Cluster). Stop every node first; see docs/redis-keys.md.
    Migrate(MigrateArgs),
    /// Print a shell completion script, e.g. `stellar completions bash > ~/.local/share/bash-completion/completions/stellar`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `stellar man > stellar.1`.
    Man,
}

/// `stellar migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Copy the keys to this Redis (any URL form, e.g. redis+cluster://…) instead of renaming
    /// them in place; the originals are kept.
    #[arg(long, value_name = "URL")]
    pub(crate) to: Option<String>,
    /// Count what would move, and move nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `stellar tasks …`.
#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    #[command(subcommand)]
    pub(crate) command: TasksCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Enqueue a task and print its id (or schedule it with --every, or many with --stdin).
    Enqueue(EnqueueArgs),
    /// Remove a recurring schedule.
    Unschedule {
        /// The schedule's id (the task name unless it was given `--id`).
        id: String,
    },
    /// The recurring schedules: id, task, arguments, when, next run.
    Schedules {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Totals, queue lengths, delayed and in-flight tasks.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One task's record (exit code 1 if unknown).
    Show {
        /// The task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tasks waiting in a queue, next first.
    Queued {
        /// The queue.
        queue: String,
        /// How many to list.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tasks in the failed set.
    Failed {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a failed task back to its queue.
    Retry {
        /// The task id.
        id: String,
        /// Sign the record again with this token first: for a task refused as `unsigned` that you
        /// vouch for (enqueued before an upgrade, or signed with a token this node did not accept
        /// yet). Look at it first (`tasks show`): a record written by hand would run too.
        #[arg(long)]
        resign: bool,
    },
    /// Delete a failed task.
    Remove {
        /// The task id.
        id: String,
    },
    /// Pause a queue on every node: workers stop claiming from it within a second (tasks still
    /// enqueue and wait).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// What each node serves and is running now, and who leads the scheduler.
    Workers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `stellar tasks enqueue`.
#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// The task name, e.g. `stellar.sleep`.
    #[arg(required_unless_present = "stdin")]
    pub(crate) name: Option<String>,
    /// The arguments, as JSON (default `null`).
    pub(crate) args: Option<String>,
    /// The queue (default: the task's).
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Run after this many milliseconds.
    #[arg(long = "in", value_name = "MS", conflicts_with_all = ["at", "every", "cron"])]
    pub(crate) in_ms: Option<u64>,
    /// Run at this time, RFC 3339 (e.g. 2026-11-28T09:00:00Z).
    #[arg(long, value_name = "RFC3339", conflicts_with_all = ["every", "cron"])]
    pub(crate) at: Option<String>,
    /// Run once every this many milliseconds, cluster wide, until unscheduled: a recurring
    /// schedule, named by --id (default: the task name).
    #[arg(long, value_name = "MS", conflicts_with = "cron")]
    pub(crate) every: Option<u64>,
    /// Run at every time this cron expression matches, cluster wide, until unscheduled
    /// (e.g. "0 9 * * 1-5": 09:00 on weekdays; 5 fields, or 6 with seconds first): a recurring
    /// schedule, named by --id (default: the task name).
    #[arg(long, value_name = "EXPR")]
    pub(crate) cron: Option<String>,
    /// With --cron: the IANA time zone it is read in, daylight saving time included (default
    /// UTC).
    #[arg(long, value_name = "ZONE", requires = "cron", conflicts_with = "every")]
    pub(crate) tz: Option<String>,
    /// The task id, an idempotency key: while a task with this id has a record (pending,
    /// running, failed, or completed within task_keep_completed_ms), nothing is added and
    /// its state is reported. With --every or --cron: the schedule's id, so one task can have
    /// several schedules (an existing schedule with this id is replaced).
    #[arg(long)]
    pub(crate) id: Option<String>,
    /// With --id: run a completed or failed task with this id again (a fresh record).
    #[arg(long, requires = "id", conflicts_with_all = ["every", "cron"])]
    pub(crate) replace: bool,
    /// With --id: enqueue N tasks with ids `ID-0` .. `ID-<N-1>` (`{id}` in ARGS becomes each
    /// task's id), printing each id once it is acknowledged.
    #[arg(long, value_name = "N", requires = "id", conflicts_with_all = ["every", "cron"])]
    pub(crate) count: Option<u64>,
    /// Read tasks from standard input, one JSON object a line: `{"name": NAME, "args": ARGS}`
    /// with optional "id", "queue", "in" (ms) and "at" (RFC 3339). Every line is checked
    /// first: a bad line is reported with its number and nothing is enqueued.
    #[arg(
        long,
        conflicts_with_all = ["name", "args", "queue", "in_ms", "at", "every", "cron", "id", "count"]
    )]
    pub(crate) stdin: bool,
}

/// `stellar cache …`.
#[derive(Debug, Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    pub(crate) command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Save a JSON value (alias: save, as `api.cache.save`).
    #[command(visible_alias = "save")]
    Set {
        /// The key.
        key: String,
        /// The value, as JSON.
        value: String,
        /// Expire after this many milliseconds (default: never).
        #[arg(long, value_name = "MS")]
        ttl: Option<u64>,
    },
    /// Print a value (exit code 1 if absent; alias: load).
    #[command(visible_alias = "load")]
    Get {
        /// The key.
        key: String,
        /// Print the value with its metadata as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a value (exit code 1 if absent; alias: destroy).
    #[command(visible_alias = "destroy")]
    Del {
        /// The key.
        key: String,
    },
    /// List keys matching a glob pattern.
    Keys {
        /// The pattern (default `*`).
        pattern: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Take a lock and print its token (exit code 1 if another owner holds it).
    Lock {
        /// The key.
        key: String,
        /// Hold it this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        ttl: u64,
    },
    /// Release a lock taken with `lock`, given its token.
    Unlock {
        /// The key.
        key: String,
        /// The token `lock` printed.
        token: String,
    },
    /// Delete every key matching a glob pattern (locks are kept).
    Clear {
        /// The pattern (default `*`).
        pattern: Option<String>,
    },
    /// Write every key, with its TTL, to a file (JSON lines).
    Dump {
        /// The file.
        file: PathBuf,
    },
    /// Write back a file made by `dump`.
    Restore {
        /// The file.
        file: PathBuf,
    },
}

/// Flags of `stellar run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// This node's id (config key `id`; default `<hostname>-<pid>`).
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,
    /// How long a graceful stop may take (config key `shutdown_timeout_ms`).
    #[arg(long, value_name = "MS")]
    pub(crate) shutdown_timeout_ms: Option<String>,
    /// Serve HTTP and WebSocket on ADDR (config key `http_addr`, default 127.0.0.1:8080; an empty
    /// ADDR serves nothing). With --cluster, every worker serves this one address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// The dashboard's login secret (config key `dashboard_secret`; unset: read-only
    /// dashboard). Prefer STELLAR_DASHBOARD_SECRET: flags show in `ps`.
    #[arg(long, value_name = "SECRET")]
    pub(crate) dashboard_secret: Option<String>,
    /// Export spans to this OpenTelemetry collector (OTLP/HTTP, e.g. http://127.0.0.1:4318;
    /// config key `otlp_endpoint`; unset: spans only name the trace in log lines).
    #[arg(long, value_name = "URL")]
    pub(crate) otlp_endpoint: Option<String>,
    /// Run N worker nodes under a supervisor (default N: the number of CPUs). Needs Redis.
    #[arg(long, visible_alias = "workers", value_name = "N", num_args = 0..=1, default_missing_value = "0", conflicts_with = "id")]
    pub(crate) cluster: Option<usize>,
    /// Worker names are `<PREFIX>-<n>`, with the lowest free n.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "stellar-worker",
        requires = "cluster"
    )]
    pub(crate) worker_prefix: String,
    /// The supervisor's pid file: a second supervisor on the same file refuses to start.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "stellar-cluster.pid",
        requires = "cluster"
    )]
    pub(crate) pid_file: std::path::PathBuf,
}

/// `stellar cluster …`.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    pub(crate) command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// List the live nodes.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Call a method on every node, or on one with --node, and print each reply.
    Do(DoArgs),
    /// Quiet a node: it stops taking new tasks (those running finish), e.g. before a deploy;
    /// `--undo` lets it take tasks again.
    Quiet {
        /// The node's id.
        node: String,
        /// Let the node take tasks again.
        #[arg(long)]
        undo: bool,
    },
    /// Broadcast a message of type TYPE with a JSON body to every node.
    Publish {
        /// The message type handlers are registered for.
        message_type: String,
        /// The body, as JSON.
        body: String,
    },
}

/// Flags of `stellar cluster do`.
#[derive(Debug, Args)]
pub(crate) struct DoArgs {
    /// The method, e.g. `api.ping`, `api.status`, `api.log`, `api.stop`.
    pub(crate) method: String,
    /// The arguments, as JSON (default `null`).
    pub(crate) args: Option<String>,
    /// Call only this node.
    #[arg(long, value_name = "ID", conflicts_with = "connection")]
    pub(crate) node: Option<String>,
    /// Call only the node holding this client connection.
    #[arg(long, value_name = "ID")]
    pub(crate) connection: Option<String>,
    /// Wait for no reply, the first, or every live node's.
    #[arg(long, value_enum, default_value_t = WaitArg::All)]
    pub(crate) wait: WaitArg,
    /// How long to wait for replies (default: config key `rpc_timeout_ms`).
    #[arg(long, value_name = "MS")]
    pub(crate) timeout: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--wait` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WaitArg {
    None,
    First,
    All,
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
        flag("redis_url", &self.global.redis);
        flag("server_token", &self.global.server_token);
        if let Command::Run(run) = &self.command {
            flag("id", &run.id);
            flag("shutdown_timeout_ms", &run.shutdown_timeout_ms);
            flag("http_addr", &run.http);
            flag("dashboard_secret", &run.dashboard_secret);
            flag("otlp_endpoint", &run.otlp_endpoint);
        }
        sources
    }
}

//! Node configuration: a TOML file, then `STELLAR_*` environment variables, then flags.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use crate::{ConfigError, NodeId};

/// The server token every node starts with unless told otherwise. Allowed only on the embedded
/// in-memory backend, where nothing leaves the process.
pub const DEFAULT_SERVER_TOKEN: &str = "change-me";

/// One configuration key: its name in every source, its default, the form its value must have,
/// and how a value is parsed into [`Config`]. [`KEYS`] lists them all; a new key is one entry
/// there plus its field in [`Config`].
#[derive(Clone, Copy)]
pub struct ConfigKey {
    /// The key as written in the TOML file, e.g. `redis_url`.
    pub name: &'static str,
    /// The environment variable that sets it, e.g. `STELLAR_REDIS_URL`.
    pub env: &'static str,
    /// The `stellar` flag that sets it, if there is one.
    pub flag: Option<&'static str>,
    /// The default, as text.
    pub default: &'static str,
    /// The form a value must have.
    pub expected: &'static str,
    /// Writes a trimmed value into the configuration, or says what was rejected (quoted, or
    /// described: "an empty string"; never a secret).
    parse: Parse,
    /// The value as `Config`'s `Debug` shows it, secrets hidden.
    show: Show,
}

type Parse = fn(&str, &mut Config) -> Result<(), String>;
type Show = fn(&Config) -> String;

impl fmt::Debug for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigKey")
            .field("name", &self.name)
            .field("env", &self.env)
            .field("flag", &self.flag)
            .field("default", &self.default)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

const MS: &str = "a positive whole number of milliseconds";
const NON_EMPTY: &str = "a non-empty string";

/// Where a loaded configuration serves HTTP when `http_addr` is not set.
pub const DEFAULT_HTTP_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// A key that only the config file and its environment variable set, in milliseconds.
macro_rules! ms_key {
    ($name:literal, $env:literal, $flag:expr, $default:literal, $field:ident) => {
        ConfigKey {
            name: $name,
            env: $env,
            flag: $flag,
            default: $default,
            expected: MS,
            parse: |value, config| {
                config.$field = millis(value)?;
                Ok(())
            },
            show: |config| format!("{:?}", config.$field),
        }
    };
}

/// Every configuration key, in the order `docs/configuration.md` lists them.
pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "id",
        env: "STELLAR_ID",
        flag: Some("--id"),
        default: "<hostname>-<pid>",
        expected: "1 to 128 printable characters without whitespace",
        parse: |value, config| {
            config.id = Some(NodeId::new(value).map_err(|_| quote(value))?);
            Ok(())
        },
        show: |config| format!("{:?}", config.id),
    },
    ConfigKey {
        name: "server_token",
        env: "STELLAR_SERVER_TOKEN",
        flag: Some("--server-token"),
        default: DEFAULT_SERVER_TOKEN,
        expected: NON_EMPTY,
        parse: |value, config| {
            config.server_token = ServerToken::new(non_empty(value)?);
            Ok(())
        },
        show: |config| format!("{:?}", config.server_token),
    },
    ConfigKey {
        name: "previous_server_token",
        env: "STELLAR_PREVIOUS_SERVER_TOKEN",
        flag: None,
        default: "(none)",
        expected: NON_EMPTY,
        parse: |value, config| {
            config.previous_server_token = Some(ServerToken::new(non_empty(value)?));
            Ok(())
        },
        show: |config| format!("{:?}", config.previous_server_token),
    },
    ConfigKey {
        name: "redis_url",
        env: "STELLAR_REDIS_URL",
        flag: Some("--redis"),
        default: "(none: embedded in-memory backend)",
        expected: "a redis://, rediss://, unix://, redis+sentinel://host:port[,host:port…]/master or redis+cluster://host:port[,host:port…] URL",
        parse: |value, config| {
            config.redis_url = redis_url(value)?;
            Ok(())
        },
        show: |config| format!("{:?}", config.redis_url.as_deref().map(redact_url)),
    },
    ConfigKey {
        name: "redis_pool_size",
        env: "STELLAR_REDIS_POOL_SIZE",
        flag: None,
        default: "16",
        expected: "a whole number from 1 to 1024",
        parse: |value, config| {
            config.redis_pool_size = number(value, 1..=1024)?;
            Ok(())
        },
        show: |config| config.redis_pool_size.to_string(),
    },
    ms_key!(
        "redis_connect_timeout_ms",
        "STELLAR_REDIS_CONNECT_TIMEOUT_MS",
        None,
        "2000",
        redis_connect_timeout
    ),
    ms_key!(
        "redis_op_timeout_ms",
        "STELLAR_REDIS_OP_TIMEOUT_MS",
        None,
        "2000",
        redis_op_timeout
    ),
    ConfigKey {
        name: "cache_near_entries",
        env: "STELLAR_CACHE_NEAR_ENTRIES",
        flag: None,
        default: "0",
        expected: "a whole number from 0 to 10000000 (0: no near cache)",
        parse: |value, config| {
            config.cache_near_entries = number(value, 0..=10_000_000)?;
            Ok(())
        },
        show: |config| config.cache_near_entries.to_string(),
    },
    ConfigKey {
        name: "cache_near_bytes",
        env: "STELLAR_CACHE_NEAR_BYTES",
        flag: None,
        default: "67108864",
        expected: "a whole number of bytes from 1 to 68719476736",
        parse: |value, config| {
            config.cache_near_bytes = number(value, 1..=1 << 36)?;
            Ok(())
        },
        show: |config| config.cache_near_bytes.to_string(),
    },
    ms_key!(
        "rpc_timeout_ms",
        "STELLAR_RPC_TIMEOUT_MS",
        None,
        "5000",
        rpc_timeout
    ),
    ms_key!(
        "heartbeat_interval_ms",
        "STELLAR_HEARTBEAT_INTERVAL_MS",
        None,
        "1000",
        heartbeat_interval
    ),
    ms_key!(
        "heartbeat_ttl_ms",
        "STELLAR_HEARTBEAT_TTL_MS",
        None,
        "5000",
        heartbeat_ttl
    ),
    ConfigKey {
        name: "task_queues",
        env: "STELLAR_TASK_QUEUES",
        flag: None,
        default: "default",
        expected: "comma-separated queue names, highest priority first",
        parse: |value, config| {
            config.task_queues = queue_names(value)?;
            Ok(())
        },
        show: |config| format!("{:?}", config.task_queues),
    },
    ConfigKey {
        name: "task_concurrency",
        env: "STELLAR_TASK_CONCURRENCY",
        flag: None,
        default: "10",
        expected: "a whole number from 0 to 10000 (0: this node runs no tasks)",
        parse: |value, config| {
            config.task_concurrency = number(value, 0..=10_000)?;
            Ok(())
        },
        show: |config| config.task_concurrency.to_string(),
    },
    ms_key!(
        "task_lease_ms",
        "STELLAR_TASK_LEASE_MS",
        None,
        "30000",
        task_lease
    ),
    ms_key!(
        "task_keep_completed_ms",
        "STELLAR_TASK_KEEP_COMPLETED_MS",
        None,
        "3600000",
        task_keep_completed
    ),
    ms_key!(
        "task_enqueue_retry_ms",
        "STELLAR_TASK_ENQUEUE_RETRY_MS",
        None,
        "10000",
        task_enqueue_retry
    ),
    ConfigKey {
        name: "task_enqueue_wait_replicas",
        env: "STELLAR_TASK_ENQUEUE_WAIT_REPLICAS",
        flag: None,
        default: "0",
        expected: "a whole number from 0 to 16 (0: an enqueue does not wait for replicas)",
        parse: |value, config| {
            config.task_enqueue_wait_replicas = number(value, 0..=16)?;
            Ok(())
        },
        show: |config| config.task_enqueue_wait_replicas.to_string(),
    },
    ms_key!(
        "task_enqueue_wait_ms",
        "STELLAR_TASK_ENQUEUE_WAIT_MS",
        None,
        "1000",
        task_enqueue_wait
    ),
    ms_key!(
        "shutdown_timeout_ms",
        "STELLAR_SHUTDOWN_TIMEOUT_MS",
        Some("--shutdown-timeout-ms"),
        "10000",
        shutdown_timeout
    ),
    ConfigKey {
        name: "http_addr",
        env: "STELLAR_HTTP_ADDR",
        flag: Some("--http"),
        default: "127.0.0.1:8080",
        expected: "an address such as 127.0.0.1:8080 or 0.0.0.0:80, or an empty string to serve no HTTP",
        parse: |value, config| {
            config.http_addr = match value {
                "" => None,
                value => Some(value.parse().map_err(|_| quote(value))?),
            };
            Ok(())
        },
        show: |config| format!("{:?}", config.http_addr),
    },
    ConfigKey {
        name: "http_body_limit_bytes",
        env: "STELLAR_HTTP_BODY_LIMIT_BYTES",
        flag: None,
        default: "1048576",
        expected: "a whole number of bytes from 1 to 1073741824",
        parse: |value, config| {
            config.http_body_limit = number(value, 1..=1 << 30)?;
            Ok(())
        },
        show: |config| config.http_body_limit.to_string(),
    },
    ms_key!(
        "http_request_timeout_ms",
        "STELLAR_HTTP_REQUEST_TIMEOUT_MS",
        None,
        "30000",
        http_request_timeout
    ),
    ms_key!(
        "http_header_timeout_ms",
        "STELLAR_HTTP_HEADER_TIMEOUT_MS",
        None,
        "10000",
        http_header_timeout
    ),
    ConfigKey {
        name: "ws_max_connections",
        env: "STELLAR_WS_MAX_CONNECTIONS",
        flag: None,
        default: "10000",
        expected: "a whole number from 0 to 1000000 (0: no WebSocket)",
        parse: |value, config| {
            config.ws_max_connections = number(value, 0..=1_000_000)?;
            Ok(())
        },
        show: |config| config.ws_max_connections.to_string(),
    },
    ConfigKey {
        name: "dashboard_secret",
        env: "STELLAR_DASHBOARD_SECRET",
        flag: Some("--dashboard-secret"),
        default: "(none: the dashboard is read-only)",
        expected: "a secret of at least 16 characters",
        parse: |value, config| {
            // Short secrets fall to guessing; the login only slows each guess down.
            if value.chars().count() < 16 {
                return Err(format!(
                    "a secret of {} character(s)",
                    value.chars().count()
                ));
            }
            config.dashboard_secret = Some(DashboardSecret::new(value));
            Ok(())
        },
        show: |config| format!("{:?}", config.dashboard_secret),
    },
    ConfigKey {
        name: "log",
        env: "STELLAR_LOG",
        flag: Some("--log"),
        default: "info",
        expected: "a tracing filter such as `info` or `stellar_bus=debug,info`",
        parse: |value, config| {
            non_empty(value)?.clone_into(&mut config.log);
            Ok(())
        },
        show: |config| format!("{:?}", config.log),
    },
    ConfigKey {
        name: "bus_trace_context",
        env: "STELLAR_BUS_TRACE_CONTEXT",
        flag: None,
        default: "false",
        expected: "`true` or `false`",
        parse: |value, config| {
            config.bus_trace_context = match value {
                "true" => true,
                "false" => false,
                other => return Err(format!("{other:?}")),
            };
            Ok(())
        },
        show: |config| config.bus_trace_context.to_string(),
    },
    ConfigKey {
        name: "otlp_endpoint",
        env: "STELLAR_OTLP_ENDPOINT",
        flag: Some("--otlp-endpoint"),
        default: "(none: spans are not exported)",
        expected: "the http:// URL of an OpenTelemetry collector's OTLP/HTTP receiver, such as `http://127.0.0.1:4318`",
        parse: |value, config| {
            config.otlp_endpoint = Some(otlp_endpoint(value)?);
            Ok(())
        },
        show: |config| format!("{:?}", config.otlp_endpoint.as_deref().map(redact_url)),
    },
];

/// The traces URL of an OTLP/HTTP collector: `/v1/traces` is added to a bare `http://host:port`.
fn otlp_endpoint(value: &str) -> Result<String, String> {
    let value = non_empty(value)?;
    let Some(rest) = value.strip_prefix("http://") else {
        return Err(format!(
            "{value:?} (only plain http:// is supported: export to a local collector or agent)"
        ));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("{value:?} (no host)"));
    }
    Ok(if path.is_empty() {
        format!("http://{authority}/v1/traces")
    } else {
        value.to_owned()
    })
}

/// The password of the web dashboard (`GET /dashboard`): an operator logs in with it to act on
/// the cluster. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardSecret(String);

impl DashboardSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, to compare a login against; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DashboardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DashboardSecret(<hidden>)")
    }
}

/// A secret shared by every node of a cluster. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerToken(String);

impl ServerToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself. Pass it to whatever signs messages; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether this is the well-known [`DEFAULT_SERVER_TOKEN`].
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_SERVER_TOKEN
    }
}

impl Default for ServerToken {
    fn default() -> Self {
        Self::new(DEFAULT_SERVER_TOKEN)
    }
}

impl fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerToken(<hidden>)")
    }
}

/// The configuration of one node. Each field is documented in `docs/configuration.md`.
///
/// `Debug` hides the tokens and the credentials in the Redis URL.
#[derive(Clone)]
pub struct Config {
    /// This node's id; `None` means `<hostname>-<pid>`, see [`Config::node_id`].
    pub id: Option<NodeId>,
    /// The cluster's shared secret.
    pub server_token: ServerToken,
    /// An older secret still accepted (never used to sign) while a cluster rolls to a new one.
    pub previous_server_token: Option<ServerToken>,
    /// Where the shared Redis is; `None` runs the embedded in-memory backend.
    pub redis_url: Option<String>,
    /// Where the node serves HTTP and WebSocket; `None` serves nothing. `Config::load` defaults
    /// to [`DEFAULT_HTTP_ADDR`]; `Config::default()` (for libraries and tests) to `None`.
    pub http_addr: Option<std::net::SocketAddr>,
    /// The largest request body accepted, in bytes (larger: 413).
    pub http_body_limit: usize,
    /// How long one HTTP request may take.
    pub http_request_timeout: Duration,
    /// How long a client may take to send its request headers, and how long an idle keep-alive
    /// connection is kept.
    pub http_header_timeout: Duration,
    /// How many WebSocket connections the node holds at most.
    pub ws_max_connections: usize,
    /// The dashboard's login secret; `None` serves the dashboard read-only.
    pub dashboard_secret: Option<DashboardSecret>,
    /// How many pooled Redis connections a node may open for commands.
    pub redis_pool_size: usize,
    /// How long to wait for a new Redis connection.
    pub redis_connect_timeout: Duration,
    /// How long to wait for one Redis command (or for a pooled connection).
    pub redis_op_timeout: Duration,
    /// How many cache entries a node keeps in its near cache (in memory, kept coherent by Redis
    /// client tracking); 0 turns it off.
    pub cache_near_entries: usize,
    /// How many bytes of keys and values the near cache holds at most.
    pub cache_near_bytes: usize,
    /// How long an RPC call waits for replies unless the call says otherwise.
    pub rpc_timeout: Duration,
    /// How often a node renews its membership record.
    pub heartbeat_interval: Duration,
    /// How long a membership record lives without renewal: a node that dies unannounced drops
    /// out of the cluster after this long.
    pub heartbeat_ttl: Duration,
    /// The task queues this node's workers serve, highest priority first.
    pub task_queues: Vec<String>,
    /// How many tasks this node runs at once; 0 runs none (an enqueue-only node).
    pub task_concurrency: usize,
    /// How long a task claim lasts without renewal; a task on a dead node runs again after it.
    pub task_lease: Duration,
    /// How long a completed task's record is kept; while it is, its id is not enqueued again.
    pub task_keep_completed: Duration,
    /// How long an enqueue with an id retries transient Redis errors before it fails.
    pub task_enqueue_retry: Duration,
    /// How many replicas must hold an enqueue before it is acknowledged (Redis `WAIT` after the
    /// enqueue); 0 does not wait. Without it a failover may lose enqueues Redis acknowledged.
    pub task_enqueue_wait_replicas: usize,
    /// How long an enqueue waits for those replicas before it fails.
    pub task_enqueue_wait: Duration,
    /// How long a graceful stop may take before the node gives up on its tasks.
    pub shutdown_timeout: Duration,
    /// The log filter.
    pub log: String,
    /// Where spans are exported (OTLP/HTTP), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// Whether bus messages sent inside a trace carry its context (envelope version 2, which
    /// nodes of builds before trace context drop).
    pub bus_trace_context: bool,
    /// Where each value came from; see [`Config::origin`].
    pub origins: Origins,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = f.debug_struct("Config");
        for key in KEYS {
            shown.field(key.name, &format_args!("{}", (key.show)(self)));
        }
        shown.finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            id: None,
            server_token: ServerToken::default(),
            previous_server_token: None,
            redis_url: None,
            http_addr: None,
            http_body_limit: 1024 * 1024,
            http_request_timeout: Duration::from_millis(30_000),
            http_header_timeout: Duration::from_millis(10_000),
            ws_max_connections: 10_000,
            dashboard_secret: None,
            redis_pool_size: 16,
            redis_connect_timeout: Duration::from_millis(2000),
            redis_op_timeout: Duration::from_millis(2000),
            cache_near_entries: 0,
            cache_near_bytes: 64 * 1024 * 1024,
            rpc_timeout: Duration::from_millis(5000),
            heartbeat_interval: Duration::from_millis(1000),
            heartbeat_ttl: Duration::from_millis(5000),
            task_queues: vec!["default".to_owned()],
            task_concurrency: 10,
            task_lease: Duration::from_millis(30_000),
            task_enqueue_wait_replicas: 0,
            task_enqueue_wait: Duration::from_millis(1000),
            task_keep_completed: Duration::from_millis(3_600_000),
            task_enqueue_retry: Duration::from_millis(10_000),
            shutdown_timeout: Duration::from_millis(10_000),
            log: "info".to_owned(),
            otlp_endpoint: None,
            bus_trace_context: false,
            origins: Origins::default(),
        }
    }
}

/// Where each value of a [`Config`] came from: a flag, an environment variable, the file, or
/// the default. Messages about a value name its origin, so a user knows what to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<&'static str, String>);

impl Origins {
    /// Where the value of `key` came from, e.g. `flag --log`, `environment variable STELLAR_LOG`
    /// or `` `log` in /etc/stellar.toml ``; `the default` for a key nobody set.
    pub fn of(&self, key: &str) -> &str {
        self.0.get(key).map_or("the default", String::as_str)
    }
}

/// Where configuration values come from, in rising order of precedence: `file`, `env`, `flags`.
///
/// `Debug` shows the names of the variables and flags, never their values (tokens, URLs).
#[derive(Clone, Default)]
pub struct ConfigSources {
    /// A TOML file; `None` means no file.
    pub file: Option<PathBuf>,
    /// Environment variables; only `STELLAR_*` names matter.
    pub env: Vec<(String, String)>,
    /// Values given as flags, by config key name (e.g. `("redis_url", "redis://…")`).
    pub flags: Vec<(&'static str, String)>,
}

impl fmt::Debug for ConfigSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        let flags: Vec<&str> = self.flags.iter().map(|(name, _)| *name).collect();
        f.debug_struct("ConfigSources")
            .field("file", &self.file)
            .field("env", &env)
            .field("flags", &flags)
            .finish()
    }
}

impl ConfigSources {
    /// Sources from this process's environment: the `STELLAR_*` variables, and the file named by
    /// `STELLAR_CONFIG` if set.
    pub fn from_process_env() -> Self {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("STELLAR_"))
            .collect();
        let file = env
            .iter()
            .find(|(name, value)| name == "STELLAR_CONFIG" && !value.is_empty())
            .map(|(_, value)| PathBuf::from(value));
        Self {
            file,
            env,
            flags: Vec::new(),
        }
    }

    /// Sets the config file, overriding `STELLAR_CONFIG`.
    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Adds a flag value for the config key `key`.
    ///
    /// # Panics
    ///
    /// Panics if `key` is not one of [`KEYS`]: that is a programming error in the caller.
    pub fn with_flag(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.flags.push((key_doc(key).name, value.into()));
        self
    }
}

/// One raw value and where it came from, before it is parsed.
struct Raw {
    value: String,
    origin: String,
}

impl Config {
    /// Loads the configuration from `sources`: defaults, then the file, then environment
    /// variables, then flags.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] naming the key, its origin and the expected form when a value is
    /// invalid, and when the file cannot be read, is not TOML, or holds an unknown key.
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        if let Some(path) = &sources.file {
            read_file(path, &mut raw)?;
        }
        for key in KEYS {
            if let Some((_, value)) = sources.env.iter().rev().find(|(name, _)| name == key.env) {
                let origin = format!("environment variable {}", key.env);
                raw.insert(
                    key.name,
                    Raw {
                        value: value.clone(),
                        origin,
                    },
                );
            }
        }
        for (name, value) in &sources.flags {
            let key = key_doc(name);
            let origin = format!("flag {}", key.flag.unwrap_or(key.name));
            raw.insert(
                key.name,
                Raw {
                    value: value.clone(),
                    origin,
                },
            );
        }
        Self::from_raw(raw)
    }

    fn from_raw(raw: BTreeMap<&'static str, Raw>) -> Result<Self, ConfigError> {
        // A loaded configuration (what `stellar run` uses) serves HTTP on the documented default
        // address unless told otherwise; `Config::default()` (a library's) serves none.
        let mut config = Self {
            http_addr: Some(DEFAULT_HTTP_ADDR),
            ..Self::default()
        };
        for (name, raw) in raw {
            let key = key_doc(name);
            (key.parse)(raw.value.trim(), &mut config).map_err(|got| ConfigError::Invalid {
                key: key.name,
                origin: raw.origin.clone(),
                expected: key.expected,
                got,
            })?;
            config.origins.0.insert(key.name, raw.origin);
        }
        Ok(config)
    }

    /// Where the value of `key` came from, as [`ConfigError`] messages name it; `the default`
    /// for a key no source set (and for every key of a `Config` built in code).
    pub fn origin(&self, key: &str) -> &str {
        self.origins.of(key)
    }

    /// The error for a value of `key` that a later check refused (one this crate cannot make,
    /// such as parsing the `log` filter): it names the key, the value's origin and the expected
    /// form, as every error of [`Config::load`] does. `got` is the rejected value, quoted, or a
    /// description of it; never a secret.
    ///
    /// # Panics
    ///
    /// Panics if `key` is not one of [`KEYS`]: that is a programming error in the caller.
    pub fn invalid(&self, key: &str, got: impl Into<String>) -> ConfigError {
        let key = key_doc(key);
        ConfigError::Invalid {
            key: key.name,
            origin: self.origin(key.name).to_owned(),
            expected: key.expected,
            got: got.into(),
        }
    }

    /// This node's id: the configured one, or `<hostname>-<pid>`.
    pub fn node_id(&self) -> NodeId {
        self.id.clone().unwrap_or_else(NodeId::from_host)
    }

    /// Checks that this configuration may join a shared backend.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::DefaultTokenOnSharedBackend`] when a Redis URL is set and the
    /// server token is still the default `change-me`.
    pub fn check_shared_backend(&self) -> Result<(), ConfigError> {
        match &self.redis_url {
            Some(url) if self.server_token.is_default() => {
                Err(ConfigError::DefaultTokenOnSharedBackend {
                    redis_url: redact_url(url),
                })
            }
            _ => Ok(()),
        }
    }
}

fn key_doc(name: &str) -> &'static ConfigKey {
    KEYS.iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("unknown config key {name}"))
}

fn read_file(path: &PathBuf, raw: &mut BTreeMap<&'static str, Raw>) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|err: toml::de::Error| ConfigError::ParseFile {
                path: path.clone(),
                message: err.to_string().trim().to_owned(),
            })?;
    for (name, value) in table {
        let Some(key) = KEYS.iter().find(|k| k.name == name) else {
            let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            return Err(ConfigError::UnknownKey {
                key: name,
                path: path.clone(),
                known: known.join(", "),
            });
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => format!("a TOML {}", other.type_str()),
        };
        let origin = format!("`{}` in {}", key.name, path.display());
        raw.insert(key.name, Raw { value, origin });
    }
    Ok(())
}

/// A positive whole number of milliseconds.
fn millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| quote(value))
}

/// A whole number within `range`.
fn number(value: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| quote(value))
}

/// Any text but an empty one.
fn non_empty(value: &str) -> Result<&str, String> {
    if value.is_empty() {
        return Err("an empty string".to_owned());
    }
    Ok(value)
}

/// A Redis URL of a known scheme; empty means none (the embedded backend). A rejected URL is
/// shown with its password hidden.
fn redis_url(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let schemes = [
        "redis://",
        "rediss://",
        "unix://",
        "redis+unix://",
        "redis+sentinel://",
        "redis+cluster://",
    ];
    if !schemes.iter().any(|scheme| value.starts_with(scheme)) {
        return Err(quote(&redact_url(value)));
    }
    Ok(Some(value.to_owned()))
}

/// Comma-separated queue names, none empty or holding whitespace.
fn queue_names(value: &str) -> Result<Vec<String>, String> {
    let queues: Vec<String> = value.split(',').map(|q| q.trim().to_owned()).collect();
    if queues
        .iter()
        .any(|q| q.is_empty() || q.chars().any(char::is_whitespace))
    {
        return Err(quote(value));
    }
    Ok(queues)
}

fn quote(value: &str) -> String {
    format!("{value:?}")
}

/// Hides every credential in a Redis URL, so the URL can be logged: the password of
/// `scheme://user:password@host` (the user info ends at the *last* `@`, so a password holding
/// `/`, `?`, `#` or `@`, encoded or not, is hidden whole), and the value of every `pass=` or
/// `password=` query parameter (`unix:///path.sock?pass=secret`). Anything that cannot be told
/// apart is hidden rather than shown.
pub fn redact_url(url: &str) -> String {
    let url = redact_query_secrets(url);
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url.as_str()),
    };
    let Some(at) = rest.rfind('@') else {
        return url.clone();
    };
    let userinfo = &rest[..at];
    let host = &rest[at + 1..];
    // `redis://secret@host` carries the password alone, without a user.
    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
    format!("{scheme}{user}:***@{host}")
}

/// Replaces the value of each `pass`/`password` parameter (after `?` or `&`, any case) with
/// `***`, up to the next `&`. Names are compared after percent-decoding (and `+` as a space), as
/// redis-rs reads them: `?%70ass=secret` is a password too.
fn redact_query_secrets(url: &str) -> String {
    const SECRET_PARAMS: [&str; 2] = ["pass", "password"];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(['?', '&']) {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let name_end = rest.find(['=', '&']).unwrap_or(rest.len());
        let has_value = rest[name_end..].starts_with('=');
        let name = percent_decode(&rest[..name_end]);
        let secret = SECRET_PARAMS
            .iter()
            .any(|param| name.eq_ignore_ascii_case(param));
        if secret && has_value {
            out.push_str(&rest[..=name_end]);
            out.push_str("***");
            rest = &rest[name_end + 1..];
            rest = &rest[rest.find('&').unwrap_or(rest.len())..];
        }
    }
    out.push_str(rest);
    out
}

/// `text` with `%XX` escapes decoded and `+` read as a space (form encoding, as in a query);
/// invalid escapes and bytes that do not make UTF-8 are kept or replaced, never an error.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .map(|d| d as u8)
        };
        match bytes[i] {
            b'%' if let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write temp file");
        file
    }

    #[test]
    fn defaults_without_any_source() {
        let config = Config::load(&ConfigSources::default()).expect("defaults load");
        assert_eq!(config.id, None);
        assert!(config.server_token.is_default());
        assert_eq!(config.redis_url, None);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    }

    #[test]
    fn flags_beat_env_and_env_beats_file() {
        let toml = file(
            "id = \"from-file\"\nserver_token = \"file-token\"\nredis_url = \"redis://file\"\nshutdown_timeout_ms = 100\n",
        );
        let sources = ConfigSources {
            file: Some(toml.path().to_owned()),
            env: env(&[
                ("STELLAR_ID", "from-env"),
                ("STELLAR_REDIS_URL", "redis://env"),
            ]),
            flags: vec![("id", "from-flag".into())],
        };
        let config = Config::load(&sources).expect("valid config");
        assert_eq!(config.id.as_ref().map(NodeId::as_str), Some("from-flag"));
        assert_eq!(config.redis_url.as_deref(), Some("redis://env"));
        assert_eq!(config.server_token.expose(), "file-token");
        assert_eq!(config.shutdown_timeout, Duration::from_millis(100));
    }

    #[test]
    fn invalid_values_name_key_origin_and_expected_form() {
        let sources = ConfigSources {
            env: env(&[("STELLAR_SHUTDOWN_TIMEOUT_MS", "soon")]),
            ..ConfigSources::default()
        };
        let err = Config::load(&sources)
            .expect_err("not a number")
            .to_string();
        assert!(err.contains("`shutdown_timeout_ms`"), "{err}");
        assert!(err.contains("STELLAR_SHUTDOWN_TIMEOUT_MS"), "{err}");
        assert!(err.contains("milliseconds"), "{err}");
        assert!(err.contains("\"soon\""), "{err}");

        let zero = ConfigSources::default().with_flag("shutdown_timeout_ms", "0");
        assert!(Config::load(&zero).is_err());
        let bad_id = ConfigSources::default().with_flag("id", "has space");
        assert!(
            Config::load(&bad_id)
                .expect_err("bad id")
                .to_string()
                .contains("flag --id")
        );
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let toml = file("idd = \"typo\"\n");
        let err = Config::load(&ConfigSources::default().with_file(toml.path()))
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown key `idd`"), "{err}");

        let toml = file("redis_pool_size = true\n");
        let err = Config::load(&ConfigSources::default().with_file(toml.path())).expect_err("bool");
        assert!(err.to_string().contains("`redis_pool_size`"), "{err}");

        let toml = file("id = \n");
        let err =
            Config::load(&ConfigSources::default().with_file(toml.path())).expect_err("syntax");
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");

        let missing = ConfigSources::default().with_file("/nonexistent/stellar.toml");
        assert!(matches!(
            Config::load(&missing),
            Err(ConfigError::ReadFile { .. })
        ));
    }

    #[test]
    fn empty_redis_url_means_embedded_and_bad_scheme_is_rejected() {
        let empty = ConfigSources {
            env: env(&[("STELLAR_REDIS_URL", "")]),
            ..Default::default()
        };
        assert_eq!(
            Config::load(&empty).expect("empty is unset").redis_url,
            None
        );
        let http = ConfigSources::default().with_flag("redis_url", "http://user:pw@host");
        let err = Config::load(&http).expect_err("wrong scheme").to_string();
        assert!(err.contains("redis://"), "{err}");
        assert!(!err.contains("pw"), "password leaked: {err}");
    }

    #[test]
    fn default_token_is_refused_only_with_redis() {
        let mut config = Config::default();
        assert!(config.check_shared_backend().is_ok());
        config.redis_url = Some("redis://:hunter2@127.0.0.1:6379".into());
        let err = config
            .check_shared_backend()
            .expect_err("default token")
            .to_string();
        assert!(
            err.contains("STELLAR_SERVER_TOKEN") && err.contains("--server-token"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        config.server_token = ServerToken::new("s3cret");
        assert!(config.check_shared_backend().is_ok());
    }

    #[test]
    fn token_never_shows_in_debug_output() {
        let config = Config {
            server_token: ServerToken::new("s3cret"),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://user:pw@host:1/2"),
            "redis://user:***@host:1/2"
        );
        assert_eq!(redact_url("rediss://:pw@host"), "rediss://:***@host");
        assert_eq!(redact_url("redis://pw@host"), "redis://:***@host");
    }

    #[test]
    fn redact_url_hides_passwords_with_reserved_characters_and_query_passwords() {
        let cases = [
            (
                "redis://:a/b?c#d@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "redis://user:a/b+c==@127.0.0.1:6379/0",
                "redis://user:***@127.0.0.1:6379/0",
            ),
            ("redis://:p@ss@host:1", "redis://:***@host:1"),
            (
                "redis://:a%2Fb%3Fc%23d@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "unix:///tmp/r.sock?pass=secret",
                "unix:///tmp/r.sock?pass=***",
            ),
            (
                "redis+unix:///tmp/r.sock?db=2&PASSWORD=secret&user=me",
                "redis+unix:///tmp/r.sock?db=2&PASSWORD=***&user=me",
            ),
            (
                "unix:/tmp/r.sock?pass=se#cr?et",
                "unix:/tmp/r.sock?pass=***",
            ),
            (
                "redis://host:1/0?password=secret",
                "redis://host:1/0?password=***",
            ),
            // Parameter names are percent-decoded before they are compared, as redis-rs does.
            ("unix:///s.sock?%70ass=secret", "unix:///s.sock?%70ass=***"),
            (
                "unix:///s.sock?db=1&%50%41%53%53%57%4f%52%44=secret",
                "unix:///s.sock?db=1&%50%41%53%53%57%4f%52%44=***",
            ),
            ("unix:///s.sock?passx=1&pass", "unix:///s.sock?passx=1&pass"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
        for leaky in ["a/b?c#d", "secret", "se#cr", "p@ss"] {
            for (url, _) in cases {
                if url.contains(leaky) {
                    assert!(!redact_url(url).contains(leaky), "{url}");
                }
            }
        }
    }

    #[test]
    fn config_and_sources_debug_hide_urls_and_the_environment() {
        let url = "redis://:a/b?c#d@127.0.0.1:6379/0";
        let config = Config {
            redis_url: Some(url.to_owned()),
            previous_server_token: Some(ServerToken::new("old-s3cret")),
            dashboard_secret: Some(DashboardSecret::new("dash-s3cret")),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("a/b?c#d")
                && !shown.contains("old-s3cret")
                && !shown.contains("dash-s3cret"),
            "{shown}"
        );
        assert!(shown.contains("redis://:***@127.0.0.1:6379/0"), "{shown}");
        let sources = ConfigSources {
            env: env(&[
                ("STELLAR_SERVER_TOKEN", "s3cret"),
                ("STELLAR_REDIS_URL", url),
            ]),
            ..Default::default()
        }
        .with_flag("redis_url", "unix:///tmp/r.sock?pass=flag-s3cret");
        let shown = format!("{sources:?}");
        for secret in ["s3cret", "a/b?c#d", "flag-s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("STELLAR_SERVER_TOKEN"), "{shown}");
    }

    #[test]
    fn each_documented_default_is_the_loaded_default() {
        let loaded = Config::load(&ConfigSources::default()).expect("defaults load");
        for key in KEYS {
            // Placeholders such as `<hostname>-<pid>` or `(none)` describe an unset value.
            if key.default.starts_with(['<', '(']) {
                continue;
            }
            let mut parsed = loaded.clone();
            (key.parse)(key.default, &mut parsed)
                .unwrap_or_else(|got| panic!("{}: default {got} does not parse", key.name));
            assert_eq!(
                (key.show)(&parsed),
                (key.show)(&loaded),
                "{}: the table's default differs from Config::default()",
                key.name
            );
        }
    }

    #[test]
    fn origins_are_kept_and_later_checks_name_them() {
        let toml = file("log = \"debug\"\n");
        let sources = ConfigSources {
            file: Some(toml.path().to_owned()),
            env: env(&[("STELLAR_RPC_TIMEOUT_MS", "700")]),
            flags: vec![("id", "a".into())],
        };
        let config = Config::load(&sources).expect("valid config");
        assert_eq!(config.origin("id"), "flag --id");
        assert_eq!(
            config.origin("rpc_timeout_ms"),
            "environment variable STELLAR_RPC_TIMEOUT_MS"
        );
        assert!(
            config.origin("log").starts_with("`log` in "),
            "{}",
            config.origin("log")
        );
        assert_eq!(config.origin("task_lease_ms"), "the default");
        let err = config.invalid("log", "\"debug\"").to_string();
        assert!(
            err.contains("`log`") && err.contains("tracing filter"),
            "{err}"
        );
        assert!(err.contains(&toml.path().display().to_string()), "{err}");
        let flagged = Config::load(&ConfigSources::default().with_flag("log", "x[")).expect("load");
        let err = flagged.invalid("log", "\"x[\"").to_string();
        assert!(err.contains("(from flag --log)"), "{err}");
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../../docs/configuration.md");
        for key in KEYS {
            assert!(
                doc.contains(&format!("`{}`", key.name)),
                "{} missing from docs",
                key.name
            );
            assert!(doc.contains(key.env), "{} missing from docs", key.env);
        }
    }
}

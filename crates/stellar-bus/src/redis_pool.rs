//! The one place where Redis connections are made: URL parsing, credentials, database, pool and
//! timeouts. The bus, the cache and the task stores all connect through [`RedisPool`].

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use deadpool::{
    Runtime,
    managed::{Object, Pool, PoolError},
};
use redis::{AsyncConnectionConfig, FromRedisValue};
use stellar_core::{redact_url, sync};

use crate::{
    DEFAULT_SUBSCRIPTION_CAPACITY, TransportError,
    redis_target::{BlockingManager, RedisConnection, Target},
};

/// How to reach Redis, and how long to wait for it.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, `unix:///path/to.sock[?db=N&pass=P]`,
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db]` (the master
    /// the Sentinels name, found again after a failover; the credentials are the data nodes'),
    /// or `redis+cluster://[user:password@]host:port[,host:port…]` (a Redis Cluster, through
    /// any of these seed nodes; database 0 only). Reserved characters in a user or password are percent-encoded (`/` as `%2F`, `?` as
    /// `%3F`, `#` as `%23`, `@` as `%40`, `+` as `%2B`), as redis-rs decodes them.
    pub url: String,
    /// The most pooled command connections.
    pub pool_size: usize,
    /// How long to wait for a new connection.
    pub connect_timeout: Duration,
    /// How long to wait for one command, or for a free pooled connection.
    pub op_timeout: Duration,
    /// How many messages each subscription buffers before it drops new ones.
    pub subscription_capacity: usize,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .field("subscription_capacity", &self.subscription_capacity)
            .finish()
    }
}

impl RedisConfig {
    /// Settings for `url` with the defaults of [`stellar_core::Config`].
    pub fn new(url: impl Into<String>) -> Self {
        let defaults = stellar_core::Config::default();
        Self {
            url: url.into(),
            pool_size: defaults.redis_pool_size,
            connect_timeout: defaults.redis_connect_timeout,
            op_timeout: defaults.redis_op_timeout,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
        }
    }

    /// The Redis settings of a node's configuration, or `None` if it runs without Redis.
    pub fn from_config(config: &stellar_core::Config) -> Option<Self> {
        let url = config.redis_url.clone()?;
        Some(Self {
            pool_size: config.redis_pool_size,
            connect_timeout: config.redis_connect_timeout,
            op_timeout: config.redis_op_timeout,
            ..Self::new(url)
        })
    }

    /// Sets the operation timeout.
    pub fn with_op_timeout(mut self, op_timeout: Duration) -> Self {
        self.op_timeout = op_timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets the per-subscription buffer.
    pub fn with_subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity;
        self
    }
}

/// A pool of Redis connections with a timeout on every operation. Cloning it is cheap.
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    /// The URL with any password hidden: the only form that is logged or put in errors.
    redacted_url: String,
    /// Connections for blocking commands (`BLPOP`), which must not share a connection.
    pool: Pool<BlockingManager>,
    /// What the URL names: opens the shared, pooled and subscriber connections.
    target: Arc<Target>,
    /// One multiplexed connection shared by every non-blocking command: redis-rs pipelines
    /// concurrent requests on it, and unlike a pool checkout it costs no health-check `PING`.
    /// `None` until first use and after a connection error, so the next command reconnects.
    shared: std::sync::RwLock<Option<(u64, RedisConnection)>>,
    /// How many shared connections were made: the number of the current one, so that a command
    /// that failed drops only the connection it used, not a newer one another command made.
    shared_made: AtomicU64,
    /// Serialises reconnects of the shared connection, so a burst of commands opens one.
    reconnecting: tokio::sync::Mutex<()>,
    connection_config: AsyncConnectionConfig,
    /// Failed operations and reconnects, for the node's metrics.
    counters: Arc<PoolCounters>,
    /// Whether the shared connection was made once: the next ones are reconnects.
    made_shared: AtomicBool,
}

/// Failed operations by kind, and reconnects, of one pool (and the transport on it).
#[derive(Debug, Default)]
struct PoolCounters {
    timeouts: AtomicU64,
    connect_errors: AtomicU64,
    backend_errors: AtomicU64,
    /// New shared connections after the first (the previous one broke).
    reconnects: AtomicU64,
    /// New subscriber connections after a lost one.
    subscriber_reconnects: AtomicU64,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("url", &self.inner.redacted_url)
            .field("status", &self.inner.pool.status())
            .finish()
    }
}

impl RedisPool {
    /// Parses the URL, builds the pool and checks that Redis answers `PING`.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidUrl`] for a malformed URL (or `rediss://`, which this build does
    /// not support), [`TransportError::Connect`] or [`TransportError::Timeout`] when Redis does
    /// not answer in time. Every error names the URL with its password hidden.
    pub async fn connect(config: RedisConfig) -> Result<Self, TransportError> {
        let redacted_url = redact_url(&config.url);
        let invalid = |reason: String| TransportError::InvalidUrl {
            url: redacted_url.clone(),
            reason,
        };
        if config.url.starts_with("rediss://") {
            return Err(invalid(
                "TLS (rediss://) is not supported by this build; connect over a TLS tunnel or use redis://"
                    .into(),
            ));
        }
        let target = Arc::new(Target::parse(&config.url, config.connect_timeout).map_err(invalid)?);
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            // Every command gets its own deadline from `RedisPool::run`, so blocking commands
            // can wait longer than the default.
            .set_response_timeout(None);
        let manager = BlockingManager {
            target: target.clone(),
            config: connection_config.clone(),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.op_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.op_timeout))
            .build()
            .map_err(|err| invalid(err.to_string()))?;
        let pool = Self {
            inner: Arc::new(Inner {
                config,
                redacted_url,
                pool,
                target,
                shared: std::sync::RwLock::new(None),
                shared_made: AtomicU64::new(0),
                reconnecting: tokio::sync::Mutex::new(()),
                connection_config,
                counters: Arc::default(),
                made_shared: AtomicBool::new(false),
            }),
        };
        let pong: String = pool.query("PING", &redis::cmd("PING")).await?;
        debug_assert_eq!(pong, "PONG");
        Ok(pool)
    }

    /// The settings this pool was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The URL with any password hidden, for logs and errors.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted_url
    }

    /// Whether the URL names a Redis Cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.inner.target.is_cluster()
    }

    /// One `SCAN` step for keys matching the glob `pattern`, from `cursor` (start with
    /// [`ScanCursor::default`]): the keys found and the cursor of the next step, `None` once every
    /// key was seen. On a Redis Cluster the scan walks every master in turn (the masters are
    /// listed by the first step), so it sees every key, not one shard's.
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`].
    pub async fn scan_step(
        &self,
        cursor: ScanCursor,
        pattern: &str,
        count: u64,
    ) -> Result<(Vec<String>, Option<ScanCursor>), TransportError> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor.cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        if !self.is_cluster() {
            let (next, keys): (u64, Vec<String>) = self.query("SCAN", &scan).await?;
            let next = (next != 0).then_some(ScanCursor {
                cursor: next,
                ..cursor
            });
            return Ok((keys, next));
        }
        let masters = match cursor.masters {
            Some(masters) => masters,
            None => self.masters().await?,
        };
        let Some((host, port)) = masters.get(cursor.master).cloned() else {
            return Ok((Vec::new(), None));
        };
        let routing = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress { host, port },
        );
        let reply = self
            .run("SCAN", self.config().op_timeout, async |conn| match conn {
                RedisConnection::Cluster(cluster) => {
                    let value = cluster.route_command(scan, routing).await?;
                    redis::from_redis_value::<(u64, Vec<String>)>(value)
                        .map_err(redis::RedisError::from)
                }
                RedisConnection::Single(single) => scan.query_async(single).await,
            })
            .await;
        let (next, keys) = reply?;
        let next = if next != 0 {
            Some(ScanCursor {
                masters: Some(masters),
                master: cursor.master,
                cursor: next,
            })
        } else if cursor.master + 1 < masters.len() {
            Some(ScanCursor {
                masters: Some(masters),
                master: cursor.master + 1,
                cursor: 0,
            })
        } else {
            None
        };
        Ok((keys, next))
    }

    /// The address of every master of the Redis Cluster, from `CLUSTER SLOTS`.
    async fn masters(&self) -> Result<Arc<[(String, u16)]>, TransportError> {
        let slots: Vec<redis::Value> = self
            .query("CLUSTER SLOTS", &redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await?;
        let mut masters = std::collections::BTreeSet::new();
        for range in slots {
            // [start, end, [host, port, id, …] (the master), replicas…]
            let redis::Value::Array(range) = range else {
                continue;
            };
            if let Some(redis::Value::Array(master)) = range.get(2) {
                let host = master
                    .first()
                    .and_then(|h| redis::from_redis_value::<String>(h.clone()).ok());
                let port = master
                    .get(1)
                    .and_then(|p| redis::from_redis_value::<u16>(p.clone()).ok());
                if let (Some(host), Some(port)) = (host, port) {
                    masters.insert((host, port));
                }
            }
        }
        Ok(masters.into_iter().collect())
    }

    /// Whether Redis answers a `PING` within the operation timeout (a readiness check).
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`].
    pub async fn ping(&self) -> Result<(), TransportError> {
        self.query::<String>("PING", &redis::cmd("PING"))
            .await
            .map(drop)
    }

    /// Runs one command on a pooled connection, within the operation timeout.
    ///
    /// # Errors
    ///
    /// [`TransportError::Timeout`] naming `op`, [`TransportError::Connect`] if no connection can
    /// be made, or [`TransportError::Backend`] if Redis answers with an error.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, TransportError> {
        self.run(op, self.config().op_timeout, async |conn| {
            cmd.query_async(conn).await
        })
        .await
    }

    /// Runs `f` on the shared multiplexed connection with a deadline of `timeout` for the whole
    /// operation. Use it for pipelines and scripts; never for blocking commands (see
    /// [`RedisPool::run_blocking`]): they would hold up every other command on the connection.
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`].
    pub async fn run<T, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, TransportError>
    where
        F: AsyncFnOnce(&mut RedisConnection) -> redis::RedisResult<T>,
    {
        let used = std::sync::atomic::AtomicU64::new(0);
        let work = async {
            let (number, mut conn, made_here) = self.shared_connection().await?;
            if !made_here {
                // A connection this call made (and spent part of the deadline on) is not
                // dropped for this call's timeout: under load that would rebuild it forever.
                used.store(number, Ordering::Relaxed);
            }
            match f(&mut conn).await {
                Ok(value) => Ok(value),
                Err(err) => {
                    if must_reconnect(&err) {
                        // Reconnect on the next command instead of failing forever (after a
                        // Sentinel failover: to the new master).
                        self.drop_shared(number);
                    }
                    Err(self.backend_error(op, err))
                }
            }
        };
        let result = self.timed(op, timeout, work).await;
        if let Err(TransportError::Timeout { .. }) = &result {
            // No answer in time: the server may be frozen or cut off (a master the Sentinels or
            // the cluster replaced while its TCP connection stays open). The next command
            // connects again instead of queueing behind it; commands in flight on the old
            // connection finish or time out on their own.
            self.drop_shared(used.load(Ordering::Relaxed));
        }
        result
    }

    /// Drops the shared connection if it is still number `number` (0: none was made yet).
    fn drop_shared(&self, number: u64) {
        let mut shared = sync::write(&self.inner.shared);
        if number != 0
            && shared
                .as_ref()
                .is_some_and(|(current, _)| *current == number)
        {
            shared.take();
        }
    }

    /// Runs a Lua script by SHA (loading it on `NOSCRIPT`) with `keys` and `args`, within the
    /// operation timeout.
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`].
    pub async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, TransportError> {
        self.run(op, self.config().op_timeout, async |conn| {
            let mut call = script.prepare_invoke();
            for key in keys {
                call.key(*key);
            }
            for arg in args {
                call.arg(*arg);
            }
            call.invoke_async(conn).await
        })
        .await
    }

    /// Runs a Lua script as [`RedisPool::invoke`] does, then `INCR fence` and `WAIT replicas
    /// wait` (of `replication`) on the same connection (on a Redis Cluster, on the master of `fence`'s slot, which
    /// must be the script's), so that everything the master wrote up to then (the script's writes,
    /// and an earlier try's, made on another connection) is on at least `replicas` replicas when
    /// this returns `Ok`: the script's reply and how many replicas acknowledged. (Asynchronous
    /// replication: a failover otherwise may lose a write Redis acknowledged. `WAIT` counts the
    /// writes of its own connection only; the fence write makes it count every earlier one.) On a
    /// pooled connection of its own, as a blocking command: `WAIT` holds up its connection until
    /// the replicas answer.
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`]; the deadline is the operation timeout plus `wait`.
    pub async fn invoke_replicated<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
        replication: Replication<'_>,
    ) -> Result<(T, u64), TransportError> {
        let Replication {
            fence,
            replicas,
            wait,
        } = replication;
        let timeout = self.config().op_timeout + wait;
        // The script, the fence write and the WAIT go as one pipeline, so they always share a
        // connection and a server: a cluster connection that resends a request after a
        // connection error (to the promoted replica, after a failover) resends all three, and the
        // WAIT never answers for a script another server ran. A cluster routes the pipeline by
        // its first key, the script's, in the fence's slot.
        let pipeline = |hash: &str| {
            let mut pipe = redis::pipe();
            pipe.cmd("EVALSHA")
                .arg(hash)
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            pipe.cmd("INCR")
                .arg(fence)
                .ignore()
                .cmd("WAIT")
                .arg(replicas)
                .arg(wait.as_millis().max(1) as u64);
            pipe
        };
        self.run_blocking(op, timeout, async |conn| {
            let first = pipeline(script.get_hash()).query_async(conn).await;
            match first {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // Not loaded on this server yet (a new or promoted one): load it, once more.
                    let mut call = script.prepare_invoke();
                    let hash = call
                        .key(keys.first().copied().unwrap_or_default())
                        .load_async(conn)
                        .await?;
                    pipeline(&hash).query_async(conn).await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs a blocking command (`BLPOP`, `BRPOP`, …) on a pooled connection of its own, with a
    /// deadline of `timeout` that must cover the command's own wait.
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`].
    pub async fn run_blocking<T, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, TransportError>
    where
        F: AsyncFnOnce(&mut RedisConnection) -> redis::RedisResult<T>,
    {
        // The checkout has its own deadline, so a slow one (a connection to a frozen server
        // failing its check) does not eat into the command's own wait.
        let pooled = self
            .timed(op, self.config().op_timeout, self.connection(op))
            .await?;
        let mut checkout = Checkout {
            pooled: Some(pooled),
            done: false,
        };
        let work = async {
            // A clone shares the pooled connection, which stays checked out until the command
            // is done: no other command uses it meanwhile.
            let mut conn = checkout.connection();
            let result = f(&mut conn).await;
            // Back into the pool only after a reply: a connection whose command failed on the
            // connection, or never answered (timed out, or the caller gave up), may still run it
            // later (a BLPOP would pop an item for nobody), so it is closed instead.
            checkout.done = !matches!(&result, Err(err) if must_reconnect(err));
            result.map_err(|err| self.backend_error(op, err))
        };
        self.timed(op, timeout, work).await
    }

    /// Runs `f` on `conn`, a connection of the caller's own ([`RedisPool::push_connection`]),
    /// with a deadline of `timeout`; failures are mapped and counted as every other operation's.
    ///
    /// # Errors
    ///
    /// As [`RedisPool::query`].
    pub async fn run_on<T, F>(
        &self,
        conn: &mut RedisConnection,
        op: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, TransportError>
    where
        F: AsyncFnOnce(&mut RedisConnection) -> redis::RedisResult<T>,
    {
        let work = async { f(conn).await.map_err(|err| self.backend_error(op, err)) };
        self.timed(op, timeout, work).await
    }

    /// The shared connection, its number, and whether this call made it (there was none).
    async fn shared_connection(&self) -> Result<(u64, RedisConnection, bool), TransportError> {
        // The fast path is a read lock and a clone: no await, no contention between commands.
        if let Some((number, conn)) = sync::read(&self.inner.shared).as_ref() {
            return Ok((*number, conn.clone(), false));
        }
        let _turn = self.inner.reconnecting.lock().await;
        if let Some((number, conn)) = sync::read(&self.inner.shared).as_ref() {
            return Ok((*number, conn.clone(), false));
        }
        let conn = self
            .inner
            .target
            .connect(&self.inner.connection_config)
            .await
            .map_err(|err| self.connect_error(err))?;
        if self.inner.made_shared.swap(true, Ordering::Relaxed) {
            self.inner
                .counters
                .reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        let number = self.inner.shared_made.fetch_add(1, Ordering::Relaxed) + 1;
        *sync::write(&self.inner.shared) = Some((number, conn.clone()));
        Ok((number, conn, true))
    }

    /// Opens a dedicated connection for SUBSCRIBE, outside the pool (a subscribed connection
    /// can run no other command).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, TransportError> {
        let per_node = self.config().connect_timeout;
        let connect = async {
            self.inner
                .target
                .pubsub(per_node)
                .await
                .map_err(|err| self.connect_error(err))
        };
        // Each seed node of a cluster gets the whole connect timeout.
        let nodes = u32::try_from(self.inner.target.nodes()).unwrap_or(u32::MAX);
        self.timed("SUBSCRIBE connect", per_node.saturating_mul(nodes), connect)
            .await
    }

    /// Opens a dedicated RESP3 connection, outside the pool and the shared connection, whose
    /// server pushes (client-tracking invalidations, and the library's disconnection notice when
    /// it breaks) go to `on_push`. `on_push` runs on the connection's reader, in the order the
    /// pushes and replies arrive, so it must not block: a push is handled before any reply that
    /// follows it on the wire is handed to its caller.
    ///
    /// # Errors
    ///
    /// [`TransportError::Connect`] or [`TransportError::Timeout`] when Redis does not answer
    /// within the connect timeout (a server older than Redis 6 refuses RESP3);
    /// [`TransportError::Unsupported`] on a Redis Cluster, which has no one server to track
    /// keys on.
    pub async fn push_connection(
        &self,
        on_push: impl Fn(redis::PushInfo) + Send + Sync + 'static,
    ) -> Result<RedisConnection, TransportError> {
        let server = self
            .timed("RESP3 connect", self.config().connect_timeout, async {
                self.inner
                    .target
                    .server()
                    .await
                    .map_err(|err| self.connect_error(err))
            })
            .await?;
        let Some(server) = server else {
            return Err(TransportError::Unsupported {
                what: "a connection with server pushes (client tracking) on a Redis Cluster",
            });
        };
        let info = server.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|err| self.connect_error(err))?;
        let config =
            self.inner
                .connection_config
                .clone()
                .set_push_sender(move |push: redis::PushInfo| {
                    on_push(push);
                    Ok::<(), std::convert::Infallible>(())
                });
        let connect = async {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(RedisConnection::Single)
                .map_err(|err| self.connect_error(err))
        };
        self.timed("RESP3 connect", self.config().connect_timeout, connect)
            .await
    }

    async fn connection(
        &self,
        op: &'static str,
    ) -> Result<Object<BlockingManager>, TransportError> {
        self.inner.pool.get().await.map_err(|err| match err {
            PoolError::Backend(err) => self.connect_error(err),
            PoolError::Timeout(_) => TransportError::Timeout {
                op,
                after: self.config().op_timeout,
            },
            PoolError::Closed => TransportError::Closed,
            other => TransportError::Connect {
                url: self.inner.redacted_url.clone(),
                source: Box::new(other),
            },
        })
    }

    fn connect_error(&self, err: redis::RedisError) -> TransportError {
        TransportError::Connect {
            url: self.inner.redacted_url.clone(),
            source: Box::new(err),
        }
    }

    fn backend_error(&self, op: &'static str, err: redis::RedisError) -> TransportError {
        if err.is_connection_refusal() || err.is_io_error() {
            self.connect_error(err)
        } else {
            TransportError::Backend {
                op,
                source: Box::new(err),
            }
        }
    }
}

/// What [`RedisPool::invoke_replicated`] waits for: `replicas` replicas within `wait`, counted
/// after a write to `fence` (a key in the script's slot).
#[derive(Debug, Clone, Copy)]
pub struct Replication<'a> {
    /// A counter key in the slot of the script's keys, written before the `WAIT`.
    pub fence: &'a str,
    /// How many replicas must acknowledge.
    pub replicas: usize,
    /// How long `WAIT` waits for them.
    pub wait: Duration,
}

/// Whether a command that failed with `err` should drop its connection, so that the next
/// command connects again: the connection broke, or the server became a replica (`READONLY`,
/// after a Sentinel failover demoted it), so the next connection goes to the new master.
fn must_reconnect(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// A connection checked out of the blocking pool: back into the pool when dropped after its
/// command answered (`done`), closed otherwise.
struct Checkout {
    pooled: Option<Object<BlockingManager>>,
    done: bool,
}

impl Checkout {
    /// A handle on the checked-out connection.
    fn connection(&self) -> RedisConnection {
        self.pooled
            .as_ref()
            .map(|pooled| RedisConnection::clone(pooled))
            .expect("checked out until dropped")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.done
            && let Some(pooled) = self.pooled.take()
        {
            drop(Object::take(pooled));
        }
    }
}

/// A position in a [`RedisPool::scan_step`] walk of the keyspace (of every master, on a Redis
/// Cluster).
#[derive(Debug, Clone, Default)]
pub struct ScanCursor {
    /// The masters being walked, from the first step (a Redis Cluster only).
    masters: Option<Arc<[(String, u16)]>>,
    /// Which of them.
    master: usize,
    /// The SCAN cursor on it.
    cursor: u64,
}

impl RedisPool {
    /// Runs `work` with a deadline of `after`, counting a failure by its kind.
    async fn timed<T>(
        &self,
        op: &'static str,
        after: Duration,
        work: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let result = tokio::time::timeout(after, work)
            .await
            .unwrap_or(Err(TransportError::Timeout { op, after }));
        if let Err(err) = &result {
            let counters = &self.inner.counters;
            let counter = match err {
                TransportError::Timeout { .. } => &counters.timeouts,
                TransportError::Backend { .. } => &counters.backend_errors,
                _ => &counters.connect_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Counts a new subscriber connection after a lost one.
    pub(crate) fn subscriber_reconnected(&self) {
        let counters = &self.inner.counters;
        counters
            .subscriber_reconnects
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Registers this pool's failed operations (by kind: `timeout`, `connect`, `backend`) and
    /// reconnects (of the shared connection and the subscriber connection) on `metrics`.
    pub fn register_metrics(&self, metrics: &stellar_core::Metrics) {
        let counters = self.inner.counters.clone();
        metrics.snapshot(move |out| {
            let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            let help = "Redis operations that failed, by kind (timeout, connect, backend: an error reply)";
            for (kind, counter) in [
                ("timeout", &counters.timeouts),
                ("connect", &counters.connect_errors),
                ("backend", &counters.backend_errors),
            ] {
                out.counter("stellar_redis_command_errors", help, &[("kind", kind)], get(counter));
            }
            let help = "Redis connections made again after one broke, by connection (shared: every non-blocking command; subscriber: the bus)";
            for (connection, counter) in [
                ("shared", &counters.reconnects),
                ("subscriber", &counters.subscriber_reconnects),
            ] {
                out.counter("stellar_redis_reconnects", help, &[("connection", connection)], get(counter));
            }
        });
    }
}

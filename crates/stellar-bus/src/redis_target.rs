//! What a Redis URL points at, and the connections made to it: one server (`redis://`,
//! `unix://`), the master a set of Sentinels names (`redis+sentinel://`), or a Redis Cluster
//! (`redis+cluster://`). [`RedisPool`](crate::RedisPool) holds one [`Target`] and asks it for
//! every connection, so a reconnect after a Sentinel failover finds the new master.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

/// The scheme of a Redis Cluster URL.
pub(crate) const CLUSTER_SCHEME: &str = "redis+cluster://";
/// The scheme of a Sentinel URL.
pub(crate) const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// A connection to whatever the URL names: a multiplexed connection to one server (or to the
/// master a Sentinel named when it was made), or a cluster connection that sends each command
/// to the master of its key's slot and follows `MOVED` and `ASK` redirections. Cloning it is
/// cheap and shares the connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What a URL names, with a client for it.
pub(crate) enum Target {
    /// One server.
    Single(redis::Client),
    /// The master of `master` as the Sentinels report it, asked again for every new connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster, reached through any of its seed nodes.
    Cluster {
        client: ClusterClient,
        /// The seed nodes' URLs (with credentials), for the subscriber connection.
        seeds: Vec<String>,
    },
}

impl Target {
    /// Parses `url`; the error says what is wrong with it (never echoing a password).
    pub(crate) fn parse(url: &str, connect_timeout: Duration) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            let (userinfo, hosts, path) = split_multi_host(rest)?;
            if !path.is_empty() {
                return Err(format!(
                    "a Redis Cluster has only database 0 (SELECT is refused): remove `/{path}` \
                     from the URL; the form is {CLUSTER_SCHEME}[user:password@]host:port[,host:port…]"
                ));
            }
            let seeds: Vec<String> = hosts
                .iter()
                .map(|host| format!("redis://{userinfo}{host}"))
                .collect();
            // The error of a seed URL would quote it, credentials and all: name the rule instead.
            let client = ClusterClient::builder(seeds.clone())
                .connection_timeout(connect_timeout)
                .build()
                .map_err(|_| {
                    "a seed node's address or the user and password do not parse (percent-encode \
                     reserved characters in a password: / as %2F, ? as %3F, # as %23, @ as %40, \
                     + as %2B)"
                        .to_owned()
                })?;
            return Ok(Self::Cluster { client, seeds });
        }
        if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            let (userinfo, hosts, path) = split_multi_host(rest)?;
            let form = format!(
                "the form is {SENTINEL_SCHEME}[user:password@]host:port[,host:port…]/master-name[/db]"
            );
            let mut parts = path.split('/');
            let master = parts.next().unwrap_or_default();
            if master.is_empty() {
                return Err(format!(
                    "no master name after the Sentinel addresses; {form}"
                ));
            }
            let db = match parts.next() {
                None | Some("") => 0,
                Some(db) => db
                    .parse::<i64>()
                    .map_err(|_| format!("database `{db}` is not a number; {form}"))?,
            };
            if parts.next().is_some() {
                return Err(form);
            }
            // The credentials are the data nodes'; Sentinels are asked without them.
            let sentinels: Vec<String> = hosts.iter().map(|h| format!("redis://{h}")).collect();
            // The user and password are read the way redis-rs reads them in a `redis://` URL
            // (percent-decoded); an error names neither.
            let node = format!("redis://{userinfo}127.0.0.1/{db}")
                .into_connection_info()
                .map(|info| info.redis_settings().clone())
                .map_err(|_| {
                    format!(
                        "the user or password does not parse (percent-encode reserved characters: \
                         / as %2F, ? as %3F, # as %23, @ as %40, + as %2B); {form}"
                    )
                })?;
            let client = SentinelClient::build(
                sentinels,
                master.to_owned(),
                Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
                SentinelServerType::Master,
            )
            .map_err(|err| err.to_string())?;
            return Ok(Self::Sentinel(tokio::sync::Mutex::new(client)));
        }
        let info = url.into_connection_info().map_err(|err| {
            format!(
                "{err} (percent-encode reserved characters in a password: / as %2F, ? as \
                 %3F, # as %23, @ as %40, + as %2B)"
            )
        })?;
        redis::Client::open(info)
            .map(Self::Single)
            .map_err(|err| err.to_string())
    }

    /// How many servers a new connection may have to try: a cluster's seed nodes, else 1.
    pub(crate) fn nodes(&self) -> usize {
        match self {
            Self::Cluster { seeds, .. } => seeds.len().max(1),
            _ => 1,
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A client for the one server commands go to: the server, or the master the Sentinels
    /// name now. `None` on a Redis Cluster, which has no one such server.
    pub(crate) async fn server(&self) -> redis::RedisResult<Option<redis::Client>> {
        match self {
            Self::Single(client) => Ok(Some(client.clone())),
            Self::Sentinel(sentinel) => {
                let mut sentinel = sentinel.lock().await;
                Box::pin(sentinel.async_get_client()).await.map(Some)
            }
            Self::Cluster { .. } => Ok(None),
        }
    }

    /// A new connection.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> redis::RedisResult<RedisConnection> {
        match self {
            Self::Cluster { client, .. } => Box::pin(client.get_async_connection())
                .await
                .map(RedisConnection::Cluster),
            _ => {
                let client = Box::pin(self.server()).await?.expect("not a cluster");
                Box::pin(client.get_multiplexed_async_connection_with_config(config))
                    .await
                    .map(RedisConnection::Single)
            }
        }
    }

    /// A new subscriber connection: to the server, the master, or the first seed node of a
    /// cluster that answers within `per_seed` (a `PUBLISH` on any node of a Redis Cluster reaches
    /// every node), so a frozen seed does not keep the others from being tried.
    pub(crate) async fn pubsub(
        &self,
        per_seed: Duration,
    ) -> redis::RedisResult<redis::aio::PubSub> {
        match self {
            Self::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    match redis::Client::open(seed.as_str()) {
                        Ok(client) => {
                            let connect = Box::pin(client.get_async_pubsub());
                            match tokio::time::timeout(per_seed, connect).await {
                                Ok(Ok(pubsub)) => return Ok(pubsub),
                                Ok(Err(err)) => last = Some(err),
                                Err(_) => {
                                    last = Some(redis::RedisError::from((
                                        redis::ErrorKind::Io,
                                        "no answer from a seed node in time",
                                    )));
                                }
                            }
                        }
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Client, "no seed node"))
                }))
            }
            _ => {
                let client = Box::pin(self.server()).await?.expect("not a cluster");
                Box::pin(client.get_async_pubsub()).await
            }
        }
    }
}

/// Splits `[userinfo@]host:port,host:port[/path]` into `"userinfo@"` (or ""), the hosts and the
/// path after the first `/` that follows them (or ""). The credentials end at the last `@`, so a
/// `/` in a password is not taken for the path (and never shows in an error).
fn split_multi_host(rest: &str) -> Result<(String, Vec<String>, String), String> {
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (format!("{userinfo}@"), after),
        None => (String::new(), rest),
    };
    let (hosts, path) = after.split_once('/').unwrap_or((after, ""));
    let hosts: Vec<String> = hosts.split(',').map(str::trim).map(str::to_owned).collect();
    if hosts.iter().any(|h| h.is_empty() || h.contains('?')) {
        return Err("expected a comma-separated list of host:port after the scheme".to_owned());
    }
    Ok((userinfo, hosts, path.to_owned()))
}

/// Makes and checks the connections of the pool that blocking commands take one of each.
pub(crate) struct BlockingManager {
    pub(crate) target: std::sync::Arc<Target>,
    pub(crate) config: AsyncConnectionConfig,
}

impl deadpool::managed::Manager for BlockingManager {
    type Type = RedisConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<RedisConnection, redis::RedisError> {
        // Boxed: a cluster connection's set-up future is too deep to nest in the pool's.
        Box::pin(self.target.connect(&self.config)).await
    }

    async fn recycle(
        &self,
        conn: &mut RedisConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<redis::RedisError> {
        // PING, not ROLE (which least-privilege ACLs deny with @dangerous): a connection to a
        // master that became a replica answers PING, but its first write fails with READONLY,
        // and `run_blocking` then drops it instead of putting it back.
        redis::cmd("PING")
            .query_async::<String>(conn)
            .await
            .map(drop)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn a_cluster_url_lists_its_seed_nodes_with_their_credentials() {
        let Ok(Target::Cluster { seeds, .. }) =
            Target::parse("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001", T)
        else {
            panic!("a cluster target");
        };
        assert_eq!(
            seeds,
            [
                "redis://u:p%40ss@10.0.0.1:7000",
                "redis://u:p%40ss@10.0.0.2:7001"
            ]
        );
    }

    #[test]
    fn a_cluster_url_with_a_database_is_refused_naming_the_form() {
        let Err(err) = Target::parse("redis+cluster://h:7000,h:7001/2", T) else {
            panic!("refused");
        };
        assert!(
            err.contains("only database 0") && err.contains("/2"),
            "{err}"
        );
    }

    #[test]
    fn a_sentinel_url_needs_a_master_name() {
        let Err(err) = Target::parse("redis+sentinel://h:26379,h:26380", T) else {
            panic!("refused");
        };
        assert!(err.contains("no master name"), "{err}");
        let Err(err) = Target::parse("redis+sentinel://h:26379/main/x", T) else {
            panic!("refused");
        };
        assert!(err.contains("database `x`"), "{err}");
        assert!(matches!(
            Target::parse("redis+sentinel://u:p@h:26379,h:26380/main/3", T),
            Ok(Target::Sentinel(_))
        ));
    }

    #[test]
    fn a_password_never_shows_in_an_error_and_a_slash_in_it_is_not_a_path() {
        let Ok(Target::Cluster { seeds, .. }) =
            Target::parse("redis+cluster://:pa%2Fss@h:7000,h:7001", T)
        else {
            panic!("a percent-encoded slash is part of the password");
        };
        assert_eq!(seeds[0], "redis://:pa%2Fss@h:7000");
        for url in [
            "redis+cluster://:zq/xy9@h:7000,h:7001",
            "redis+cluster://:zq/xy9@h:7000/2",
            "redis+sentinel://:a7/b8/c9@h:1/m/x",
            "redis+sentinel://u:sq#rt@h:1/m",
        ] {
            let Err(err) = Target::parse(url, T) else {
                panic!("{url} is refused");
            };
            for secret in ["zq/xy9", "xy9", "a7/b8", "b8/c9", "sq#rt"] {
                assert!(!err.contains(secret), "{err} shows the password");
            }
        }
    }

    #[test]
    fn an_empty_host_is_refused() {
        assert!(Target::parse("redis+cluster://h:1,,h:2", T).is_err());
        assert!(Target::parse("redis+sentinel:///main", T).is_err());
    }
}

//! What can stop a node from starting, or a client from connecting.

/// A node or client error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used as it is (e.g. the default token on a shared Redis).
    #[error(transparent)]
    Config(#[from] stellar_core::ConfigError),
    /// The backend could not be reached.
    #[error("connecting the backend")]
    Connect(#[source] stellar_bus::TransportError),
    /// The bus could not start, or the node could not join the cluster.
    #[error("{what}")]
    Bus {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: stellar_bus::Error,
    },
    /// A client command needs the cluster's Redis and none is configured.
    #[error(
        "this needs the cluster's Redis: pass --redis URL or set STELLAR_REDIS_URL (the embedded \
         backend's state lives inside its node's process)"
    )]
    NoSharedBackend,
    /// The HTTP address could not be bound (in use, or not this host's).
    #[error(
        "cannot serve HTTP on {addr} (set http_addr, --http or STELLAR_HTTP_ADDR to another address, or to an empty string to serve none)"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A set-up hook failed.
    #[error("node set-up hook failed")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A task operation failed.
    #[error(transparent)]
    Tasks(#[from] stellar_tasks::Error),
    /// The graceful stop passed its deadline.
    #[error(transparent)]
    Shutdown(#[from] stellar_core::ShutdownError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

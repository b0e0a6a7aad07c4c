//! Node identity, configuration and lifecycle for a Stellar cluster node.
//!
//! A node is one process of a Stellar cluster. It has a [`NodeId`], a [`Config`] read from a TOML
//! file, `STELLAR_*` environment variables and command-line flags (in rising order of precedence),
//! and an [`Api`] handle that every component of the node hangs off: the bus, RPC, the cache and the
//! task workers all receive a clone of it.
//!
//! The [`Api`] also owns the node's lifecycle. It starts in [`NodeState::Starting`], becomes
//! [`NodeState::Ready`] once every component is up, and on [`Api::shutdown`] cancels the root of a
//! [`CancellationToken`] tree, waits for every task it spawned, and gives up after the configured
//! `shutdown_timeout`.
//!
//! Each key of the configuration is one [`ConfigKey`] of [`KEYS`] (its TOML name, environment
//! variable, flag, default, expected form and parser); a loaded [`Config`] remembers where each
//! value came from ([`Config::origin`]), so every message about a value names its source.
//! Components do not read the configuration themselves: the node builds each one's settings from
//! it (`BusSettings::from(&config)` and so on) and passes them at construction.
//!
//! Small helpers every crate shares live here once: [`time::now_ms`] and [`time::jitter`], and
//! poison-tolerant locking in [`sync`].
//!
//! This crate has no Redis dependency: backends live in `stellar-bus` and above.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use stellar_core::{Api, Config, NodeId, NodeState};
//!
//! let config = Config { id: Some(NodeId::new("node-a")?), ..Config::default() };
//! let api = Api::new(config);
//! let cancel = api.cancellation_token();
//! api.spawn(async move { cancel.cancelled().await });
//! api.set_ready();
//! assert_eq!(api.state(), NodeState::Ready);
//!
//! api.shutdown().await?;
//! assert_eq!(api.state(), NodeState::Stopped);
//! # Ok(())
//! # }
//! ```

mod api;
mod config;
mod error;
pub mod metrics;
mod node_id;
mod signal;
pub mod sync;
pub mod time;
pub mod trace;

pub use crate::{
    api::{Api, NodeState},
    config::{
        Config, ConfigKey, ConfigSources, DEFAULT_HTTP_ADDR, DEFAULT_SERVER_TOKEN, DashboardSecret,
        KEYS, Origins, ServerToken, redact_url,
    },
    error::{ConfigError, ShutdownError},
    metrics::{METRICS_CONTENT_TYPE, Metrics},
    node_id::{InvalidNodeId, NodeId, hostname},
    signal::{StopSignal, StopSignals},
    trace::TraceParent,
};
pub use tokio_util::sync::CancellationToken;

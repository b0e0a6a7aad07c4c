//! The `stellar` command line, as a library your own binary can extend.
//!
//! The `stellar` binary is `App::new().main()`. A service built on Stellar writes the same two
//! lines with its own set-up hooks, and gets the same commands, flags and configuration:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     stellar_cli::App::new()
//!         .setup(|node| {
//!             let api = node.api().clone();
//!             let cancel = api.cancellation_token();
//!             node.api().spawn(async move {
//!                 // Your component: runs until the node stops.
//!                 cancel.cancelled().await;
//!             });
//!             Ok(())
//!         })
//!         .main()
//! }
//! ```
//!
//! `stellar run` starts one node: on the embedded in-memory backend when no Redis URL is
//! configured, or on a shared Redis with `--redis URL` (or `STELLAR_REDIS_URL`). It logs a line
//! with `ready` and the node id once up, and stops gracefully on SIGINT or SIGTERM.

mod app;
mod batch;
mod cache_cmd;
mod cli;
mod cluster;
mod control;
mod logging;
mod migrate;
mod node;
mod output;
mod supervisor;
mod tasks_cmd;

pub use crate::app::{App, NodeContext};
pub use stellar_node::{Client, Node};

//! Test support for Stellar: a real `redis-server` per test.
//!
//! [`RedisServer::start`] runs `redis-server --port <free> --save ""` in a temporary directory,
//! waits until it answers `PING`, and kills it when dropped. A test can [`RedisServer::kill`] it
//! and [`RedisServer::restart`] it on the same port to exercise reconnects. One server per test
//! keeps tests isolated and parallel: no shared state, no `FLUSHALL`.
//!
//! The binary is `redis-server` from `PATH`, or the path in `STELLAR_REDIS_SERVER`. If it is
//! missing, [`RedisServer::start`] panics with instructions, so a missing dependency never looks
//! like a pass.
//!
//! [`RedisCluster::start`] runs a Redis Cluster of such servers (3 masters, or more with
//! replicas) made with `redis-cli --cluster create`, and can kill, restart, fail over and
//! reshard its nodes. [`RedisSentinel::start`] runs a master, its replica and three sentinels
//! that fail over when the master dies. [`RedisServer::command`] and [`RedisCluster::command`]
//! send a command with a tiny blocking client and return its [`Reply`].
//!
//! Contract suites run every case on every backend: [`contract_cases!`] expands each case into
//! one test per [`BackendKind`] (memory, Redis, Redis Cluster), and [`eventually`] waits for
//! what should happen.
//!
//! [`Process`] owns a spawned process (a `stellar` node, say), collects its output lines, sends
//! it signals, and kills it on drop.

pub mod bench;
mod contract;
mod process;
mod redis_cluster;
mod redis_sentinel;
mod redis_server;
mod resp;

pub use crate::{
    contract::{
        ARRIVES_WITHIN, BackendKind, QUIET_FOR, eventually, eventually_async, eventually_within,
    },
    process::Process,
    redis_cluster::{ClusterNode, RedisCluster, Role},
    redis_sentinel::RedisSentinel,
    redis_server::RedisServer,
    resp::Reply,
};

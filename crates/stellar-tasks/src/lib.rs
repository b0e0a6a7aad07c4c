//! Reliable cluster tasks for a Stellar cluster.
//!
//! Define tasks in code ([`TaskDefinition`]: name, typed async handler, queue, attempts, backoff,
//! timeout), enqueue them from any node ([`Tasks::enqueue`], `enqueue_at`, `enqueue_in`, with an
//! optional id as idempotency key), and every node that called [`Tasks::start`] runs them with a
//! pool of workers.
//!
//! Delivery is at least once, completion is accepted once: a claim moves a task atomically under a
//! lease (on the store's clock) with a claim token; workers renew the lease; only the current
//! token can complete, fail or hand back the task, so the late answer of a worker that lost its
//! lease is rejected. Expired leases are returned to the queue by a reaper any node runs; delayed
//! tasks and retries are promoted atomically. A graceful stop lets in-flight tasks finish within
//! the shutdown deadline and hands the rest back at once without counting an attempt.
//!
//! A [`TaskStore`] holds the queues: [`RedisTaskStore`] (one Lua script per step, see `lua/`) or
//! [`MemoryTaskStore`]. Backend authors find its capability traits (`TaskQueue`,
//! `TaskMaintenance`, `TaskInspector`, `QueueControl`, `Leadership`, `Schedules`,
//! `WorkerRegistry`) and the types they exchange in [`store`]. Idle workers wake up on a
//! [`WorkSignal`]: the memory store's own, or one subscribed to the wake-ups the Redis scripts
//! publish.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use stellar_core::{Api, Config};
//! use stellar_tasks::{EnqueueOptions, MemoryTaskStore, TaskConfig, TaskDefinition, TaskState, Tasks};
//!
//! let api = Api::new(Config::default());
//! let store = MemoryTaskStore::new();
//! let tasks = Tasks::new(Arc::new(store.clone()), store.signal(), api.node_id().clone(), TaskConfig::default());
//! tasks.register(TaskDefinition::new("email.send", |_ctx, to: String| async move {
//!     assert_eq!(to, "ada@example.com");
//!     Ok(())
//! }));
//! tasks.start(&api);
//! let id = tasks.enqueue("email.send", &"ada@example.com", EnqueueOptions::default()).await?;
//! while tasks.show(&id).await?.map(|t| t.state) != Some(TaskState::Completed) {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//! }
//! api.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod coalesce;
mod error;
mod keys;
mod maintenance;
mod memory_store;
mod metrics;
mod redis_store;
mod retry;
mod scheduler;
mod signal;
pub mod store;
mod tasks;
mod timetable;
mod types;
mod worker;

pub use crate::keys::{LEGACY_PATTERNS, migrated_key};
pub use crate::{
    error::{Error, HandlerError, Result, StoreError, TaskError},
    memory_store::MemoryTaskStore,
    redis_store::RedisTaskStore,
    signal::WorkSignal,
    store::TaskStore,
    tasks::{
        BatchTask, DEFAULT_QUEUE, EnqueueOptions, MAX_BATCH, MAX_BATCH_BYTES, MAX_RETRY_DELAY,
        PAUSE_REFRESH, QUIET_METHOD, ScheduleOptions, Submitted, TaskConfig, TaskContext,
        TaskDefinition, Tasks,
    },
    types::{
        Counters, Enqueued, QueueStats, Recurrence, Schedule, ScheduleInfo, Stats, TaskRecord,
        TaskState, WorkerInfo,
    },
};

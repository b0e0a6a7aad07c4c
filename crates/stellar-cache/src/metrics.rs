//! Cache metrics: operations by kind and result, and lock waits.

use std::time::Duration;

use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use stellar_core::{Metrics, metrics::duration_buckets};

use crate::{Error, Result};

type OpResult = [(&'static str, &'static str); 2];

/// The live cache families of one node. Cloning it is cheap.
#[derive(Debug, Clone)]
pub(crate) struct CacheMetrics {
    operations: Family<OpResult, Counter>,
    lock_waits: Histogram,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self {
            operations: Family::default(),
            lock_waits: Histogram::new(duration_buckets()),
        }
    }
}

impl CacheMetrics {
    pub(crate) fn register(&self, metrics: &Metrics) {
        metrics.register(
            "stellar_cache_operations",
            "Cache operations on this node, by op (save, load, destroy, increment, lock, unlock, push, pop) and result (ok, miss, locked, error)",
            self.operations.clone(),
        );
        metrics.register(
            "stellar_cache_lock_wait_seconds",
            "How long lock checks on this node waited for another owner's lock (checks that waited only)",
            self.lock_waits.clone(),
        );
    }

    /// Counts one `op` by how it ended, and hands `result` back.
    pub(crate) fn count<T>(&self, op: &'static str, result: Result<T>) -> Result<T> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::NotFound { .. }) => "miss",
            Err(Error::Locked { .. }) => "locked",
            Err(_) => "error",
        };
        self.operations
            .get_or_create(&[("op", op), ("result", outcome)])
            .inc();
        result
    }

    /// A lock check waited `waited` for another owner's lock.
    pub(crate) fn lock_waited(&self, waited: Duration) {
        self.lock_waits.observe(waited.as_secs_f64());
    }
}

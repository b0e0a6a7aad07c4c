//! Small helpers the crate shares, written once here. `stellar_core` may offer the same later
//! (`time::now_ms`, `sync::lock`); until then this is the crate's single copy.

use std::{
    sync::{Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Wall-clock microseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_us() -> u64 {
    since_epoch().as_micros() as u64
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Locks `mutex`, taking the data even if a panicking holder poisoned it: every critical section
/// in this crate leaves its data consistent before anything in it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

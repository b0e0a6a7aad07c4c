//! Every Redis key and channel of the task queue, all under `stellar:` (see `docs/tasks.md`).
//!
//! One function per key. The scripts in `lua/` build the keys of ids they only learn inside
//! Redis (a task popped from a queue, its queue's list) by appending to a prefix they are given:
//! those prefixes are the `*_PREFIX` constants here, so the names are still made in this module.

/// Wake-up channel prefix: `stellar:tasks:wake:<queue>`, published when work becomes ready.
pub(crate) const WAKE_PREFIX: &str = "stellar:tasks:wake:";

/// The wake-up channel of `queue`.
pub(crate) fn wake(queue: &str) -> String {
    format!("{WAKE_PREFIX}{queue}")
}

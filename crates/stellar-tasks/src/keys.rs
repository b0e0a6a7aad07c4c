//! Every Redis key and channel of the task queue (see `docs/redis-keys.md`).
//!
//! Every key is under `stellar:{tasks}:`: the hash tag `{tasks}` puts them all in one slot of a
//! Redis Cluster, so each script's keys share a slot (a script may touch keys of one slot only).
//! Wake-up channels are pub/sub channels, not keys, and carry no tag.
//!
//! One function per key. The scripts in `lua/` build the keys of ids they only learn inside
//! Redis (a task popped from a queue, its queue's list) by appending to a prefix they are given
//! in KEYS (so the slot they touch is declared): those prefixes are the `*_PREFIX` constants
//! here, so the names are still made in this module.

/// Task record prefix: `stellar:{tasks}:task:<id>`, a HASH.
pub(crate) const TASK_PREFIX: &str = "stellar:{tasks}:task:";
/// Ready list prefix: `stellar:{tasks}:queue:<queue>`, a LIST (LPUSH in, RPOP out).
pub(crate) const QUEUE_PREFIX: &str = "stellar:{tasks}:queue:";
/// Wake-up channel prefix: `stellar:tasks:wake:<queue>`, published when work becomes ready.
pub(crate) const WAKE_PREFIX: &str = "stellar:tasks:wake:";
/// Parked list prefix: `stellar:{tasks}:parked:<queue> <name>`, a LIST of tasks set aside.
pub(crate) const PARKED_PREFIX: &str = "stellar:{tasks}:parked:";
/// Per-node counter prefix: `stellar:{tasks}:stats:node:<node>`, a HASH that expires.
pub(crate) const NODE_STATS_PREFIX: &str = "stellar:{tasks}:stats:node:";

/// The record of task `id`.
pub(crate) fn task(id: &str) -> String {
    format!("{TASK_PREFIX}{id}")
}

/// The ready list of `queue`.
pub(crate) fn queue(queue: &str) -> String {
    format!("{QUEUE_PREFIX}{queue}")
}

/// The wake-up channel of `queue`.
pub(crate) fn wake(queue: &str) -> String {
    format!("{WAKE_PREFIX}{queue}")
}

/// The names with parked tasks in `queue`, a SET.
pub(crate) fn parked_names(queue: &str) -> String {
    format!("stellar:{{tasks}}:parked-names:{queue}")
}

/// The parked tasks of `name` in `queue`.
pub(crate) fn parked(queue: &str, name: &str) -> String {
    format!("{PARKED_PREFIX}{queue} {name}")
}

/// The counters of node `node`.
pub(crate) fn node_stats(node: &str) -> String {
    format!("{NODE_STATS_PREFIX}{node}")
}

/// The saved reply of claim request `request`, for a re-ask.
pub(crate) fn claim_reply(request: &str) -> String {
    format!("stellar:{{tasks}}:claim-reply:{request}")
}

/// Slot marker prefix: `stellar:{tasks}:slot:<schedule>:<ms>`, a STRING with a TTL.
pub(crate) const SLOT_PREFIX: &str = "stellar:{tasks}:slot:";

/// The part of a recurring slot's marker after [`SLOT_PREFIX`].
pub(crate) fn slot_suffix(schedule: &str, at_ms: u64) -> String {
    format!("{schedule}:{at_ms}")
}

/// The announcement of node `node`'s worker pool, a STRING with a TTL.
pub(crate) fn worker(node: &str) -> String {
    format!("stellar:{{tasks}}:worker:{node}")
}

/// Every queue name, a SET.
pub(crate) const QUEUES: &str = "stellar:{tasks}:queues";
/// The paused queues, a SET of queue names: no worker claims from them.
pub(crate) const PAUSED: &str = "stellar:{tasks}:paused";
/// Delayed tasks and retries, a ZSET id -> due time (ms).
pub(crate) const DELAYED: &str = "stellar:{tasks}:delayed";
/// Running tasks, a ZSET id -> lease deadline (ms, Redis time).
pub(crate) const INFLIGHT: &str = "stellar:{tasks}:inflight";
/// The failed set, a ZSET id -> failed time.
pub(crate) const FAILED: &str = "stellar:{tasks}:failed";
/// Processed, failed and retried counters, in all and per task name, a HASH.
pub(crate) const STATS: &str = "stellar:{tasks}:stats";
/// The nodes whose counters changed lately, a ZSET node -> last update (ms).
pub(crate) const NODE_STATS_INDEX: &str = "stellar:{tasks}:stats:nodes";
/// Each schedule's latest enqueued slot, a HASH schedule -> ms.
pub(crate) const LAST_SLOT: &str = "stellar:{tasks}:last-slot";
/// Recurring schedules, a HASH name -> JSON.
pub(crate) const SCHEDULES: &str = "stellar:{tasks}:schedules";
/// Announcing nodes, a ZSET node -> last announcement (ms).
pub(crate) const WORKERS: &str = "stellar:{tasks}:workers";
/// The scheduler leader, a STRING `"<node> <epoch>"` with a TTL.
pub(crate) const LEADER: &str = "stellar:{tasks}:leader";
/// The leadership epoch counter.
pub(crate) const LEADER_EPOCH: &str = "stellar:{tasks}:leader-epoch";
/// A counter every enqueue that waits for replicas bumps before its `WAIT`, so the wait covers
/// every write the master made before it (see `RedisPool::invoke_replicated`).
pub(crate) const REPLICATION_FENCE: &str = "stellar:{tasks}:replication-fence";
/// The claim token counter.
pub(crate) const CLAIM_SEQ: &str = "stellar:{tasks}:claim-seq";

/// `SCAN` patterns of the layout before hash tags (releases before issue 15), for `stellar
/// migrate`.
pub const LEGACY_PATTERNS: &[&str] = &["stellar:task:*", "stellar:queue:*", "stellar:tasks:*"];

/// The name a task key of the layout before hash tags has now (`stellar:task:<id>` becomes
/// `stellar:{tasks}:task:<id>`, `stellar:queue:<q>` `stellar:{tasks}:queue:<q>` and
/// `stellar:tasks:<name>` `stellar:{tasks}:<name>`); `None` for any other key.
pub fn migrated_key(legacy: &str) -> Option<String> {
    if let Some(id) = legacy.strip_prefix("stellar:task:") {
        return Some(format!("{TASK_PREFIX}{id}"));
    }
    if let Some(queue) = legacy.strip_prefix("stellar:queue:") {
        return Some(format!("{QUEUE_PREFIX}{queue}"));
    }
    legacy
        .strip_prefix("stellar:tasks:")
        .map(|rest| format!("stellar:{{tasks}}:{rest}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn legacy_keys_map_to_the_tagged_layout() {
        use super::migrated_key;
        assert_eq!(
            migrated_key("stellar:task:a:b").as_deref(),
            Some("stellar:{tasks}:task:a:b")
        );
        assert_eq!(
            migrated_key("stellar:queue:q").as_deref(),
            Some(super::queue("q").as_str())
        );
        assert_eq!(
            migrated_key("stellar:tasks:parked:q n").as_deref(),
            Some(super::parked("q", "n").as_str())
        );
        assert_eq!(
            migrated_key("stellar:tasks:inflight").as_deref(),
            Some(super::INFLIGHT)
        );
        assert_eq!(migrated_key("stellar:{tasks}:inflight"), None);
        assert_eq!(migrated_key("stellar:cache:x"), None);
    }

    use std::path::{Path, PathBuf};

    /// Every source file under `dir`, recursively.
    fn sources(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files.extend(sources(&path));
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// Every key is named here: no other source file spells a `stellar:` key.
    #[test]
    fn key_names_are_made_only_in_this_module() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let files = sources(&src);
        assert!(
            files.len() > 5 && files.iter().any(|f| f.ends_with("redis_store.rs")),
            "found only {files:?}"
        );
        for file in files.iter().filter(|f| !f.ends_with("keys.rs")) {
            let text = std::fs::read_to_string(file).expect("readable");
            assert!(
                !text.contains(concat!("\"", "stellar:")),
                "{} spells a Redis key; build it in keys.rs",
                file.display()
            );
        }
    }
}

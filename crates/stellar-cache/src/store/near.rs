//! The near cache of [`RedisCacheStore`](super::RedisCacheStore): hot entries in this process's
//! memory, kept coherent by Redis client tracking (see `tracking.rs` for the connection).
//!
//! Every entry comes from a read on the tracking connection, so Redis remembers that this node
//! holds the key and pushes an invalidation when anyone changes it. The pushes are handled on the
//! connection's reader, before any reply that follows them on the wire. What remains is the race
//! between a reply and a push for the same key that this process's tasks see in either order: a
//! reader captures a [`Ticket`] (the key's invalidation epoch and the connection's generation)
//! before it sends, and its reply is admitted only if neither moved meanwhile. A stale value is
//! therefore never inserted, and an entry inserted just before its push is evicted by that push.
//!
//! Bounds: at most `max_entries` entries and `max_bytes` bytes (first in, first out), and no
//! entry outlives its TTL (the deadline counts from before the read was sent). Hits are served
//! only while the connection proved itself recently ([`CONFIRMED_FOR`]): a reply received means
//! every push Redis sent before it was handled, so a half-open connection cannot keep serving.

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
    sync::Mutex,
    time::Duration,
};

use redis::{PushInfo, PushKind, Value};
use tokio::time::Instant;

use super::RawEntry;

/// How long after the last reply on the tracking connection entries may still be served.
pub(crate) const CONFIRMED_FOR: Duration = Duration::from_secs(1);

/// How many invalidation epochs there are: keys share one by hash, which only makes a reader
/// give up an insert it could have made.
const EPOCH_SLOTS: usize = 4096;

/// What an entry costs beyond its key and JSON (the map's slot, the FIFO slot, the fields).
const ENTRY_OVERHEAD: usize = 96;

/// How many entries and bytes a near cache holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCacheLimits {
    /// Entries; 0 turns the near cache off.
    pub max_entries: usize,
    /// Bytes of keys and values (plus a small overhead per entry).
    pub max_bytes: usize,
}

/// Counters of a near cache, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearCacheStats {
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now.
    pub bytes: usize,
    /// Loads served from memory.
    pub hits: u64,
    /// Keys invalidated by Redis or by this node's own writes.
    pub invalidations: u64,
    /// Times everything was dropped: a flush of the database, or a lost tracking connection.
    pub clears: u64,
}

/// What a reader captured before it sent its read: the reply is admitted only if neither moved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    slot: usize,
    epoch: u64,
    generation: u64,
    sent_at: Instant,
}

pub(crate) struct NearCache {
    limits: NearCacheLimits,
    state: Mutex<State>,
}

struct State {
    entries: HashMap<String, Held>,
    /// Insertion order for eviction; an item whose sequence number no longer matches its entry
    /// is a leftover of an evicted or replaced entry and is skipped.
    order: VecDeque<(String, u64)>,
    next_seq: u64,
    bytes: usize,
    /// Bumped for every key invalidated (by hash slot), and all at once when everything is.
    epochs: Box<[u64]>,
    /// The tracking connection's generation: bumped when one is lost.
    generation: u64,
    /// When the latest command answered on the tracking connection was sent.
    confirmed_at: Option<Instant>,
    stats: NearCacheStats,
}

struct Held {
    raw: RawEntry,
    deadline: Option<Instant>,
    size: usize,
    seq: u64,
}

impl NearCache {
    pub(crate) fn new(limits: NearCacheLimits) -> Self {
        let state = State {
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            bytes: 0,
            epochs: vec![0; EPOCH_SLOTS].into_boxed_slice(),
            generation: 0,
            confirmed_at: None,
            stats: NearCacheStats::default(),
        };
        Self {
            limits,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        stellar_core::sync::lock(&self.state)
    }

    /// The entry of the Redis key `key`, if held, unexpired, and the connection proved alive.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<RawEntry> {
        let mut state = self.state();
        let alive = state
            .confirmed_at
            .is_some_and(|at| now.saturating_duration_since(at) <= CONFIRMED_FOR);
        if !alive {
            return None;
        }
        let held = state.entries.get(key)?;
        if held.deadline.is_some_and(|deadline| now >= deadline) {
            state.remove(key);
            return None;
        }
        let raw = held.raw.clone();
        state.stats.hits += 1;
        Some(raw)
    }

    /// The current generation of the tracking connection.
    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Captures what a read of `key` on the connection of `generation` must find unchanged to
    /// be admitted. Take it just before sending.
    pub(crate) fn ticket(&self, key: &str, generation: u64) -> Ticket {
        let slot = slot(key.as_bytes());
        let state = self.state();
        Ticket {
            slot,
            epoch: state.epochs[slot],
            generation,
            sent_at: Instant::now(),
        }
    }

    /// Takes in the reply of a tracked read of `key`: the entry (`None`: absent) and its PTTL in
    /// ms (negative: none). The connection counts as alive as of the ticket. Whatever was held
    /// for the key is dropped; the reply is held in its place only if nothing invalidated the key
    /// since the ticket was taken. A read that `wrote` (recorded its time, slid the TTL) moves
    /// the key's epoch, since Redis pushes nothing to this connection for it (`NOLOOP`): replies
    /// sent before it, with the older TTL or read time, are refused. Whether it was inserted.
    pub(crate) fn admit(
        &self,
        key: &str,
        raw: Option<&RawEntry>,
        pttl: i64,
        wrote: bool,
        ticket: Ticket,
    ) -> bool {
        let mut state = self.state();
        if state.generation != ticket.generation {
            return false;
        }
        if state.confirmed_at.is_none_or(|at| at < ticket.sent_at) {
            state.confirmed_at = Some(ticket.sent_at);
        }
        let fresh = state.epochs[ticket.slot] == ticket.epoch;
        if wrote {
            state.epochs[ticket.slot] += 1;
        }
        // The reply is newer than what is held: an absent or expired key, or a refused reply,
        // must not leave the older entry to be served.
        state.remove(key);
        let Some(raw) = raw else { return false };
        if !fresh || self.limits.max_entries == 0 {
            return false;
        }
        // Counted from before the read was sent, so the entry dies no later than in Redis.
        let deadline = u64::try_from(pttl)
            .ok()
            .map(|ms| ticket.sent_at + Duration::from_millis(ms));
        if deadline.is_some_and(|deadline| deadline <= Instant::now()) {
            return false;
        }
        let size = key.len() + raw.json.len() + ENTRY_OVERHEAD;
        if size > self.limits.max_bytes {
            return false;
        }
        state.remove(key);
        while state.entries.len() >= self.limits.max_entries
            || state.bytes + size > self.limits.max_bytes
        {
            state.evict_oldest();
        }
        state.insert(key, raw.clone(), deadline, size);
        true
    }

    /// Drops the Redis keys `keys` and moves their epochs: an invalidation pushed by Redis, or
    /// one of this node's own writes.
    pub(crate) fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let mut state = self.state();
        for key in keys {
            state.epochs[slot(key)] += 1;
            state.stats.invalidations += 1;
            if let Ok(key) = std::str::from_utf8(key) {
                state.remove(key);
            }
        }
    }

    /// Drops every entry and moves every epoch (the database was flushed, or imported into).
    pub(crate) fn clear(&self) {
        let dropped = self.state().clear();
        // Freed after the lock is released: a big map takes a while to free.
        drop(dropped);
    }

    /// The tracking connection of `generation` is gone: pushes may have been lost, so drop
    /// everything and refuse the replies still in flight on it. A later connection's loss is not
    /// this one's.
    pub(crate) fn lost(&self, generation: u64) {
        let mut state = self.state();
        if state.generation == generation {
            state.generation += 1;
            state.confirmed_at = None;
            let dropped = state.clear();
            drop(state);
            drop(dropped);
        }
    }

    /// Handles a push of the tracking connection of `generation`.
    pub(crate) fn on_push(&self, push: &PushInfo, generation: u64) {
        match (&push.kind, push.data.first()) {
            (PushKind::Invalidate, Some(Value::Array(keys)))
                if keys.iter().all(|key| matches!(key, Value::BulkString(_))) =>
            {
                self.invalidate(keys.iter().filter_map(|key| match key {
                    Value::BulkString(bytes) => Some(bytes.as_slice()),
                    _ => None,
                }));
            }
            // Redis sends a null instead of keys when the database is flushed; a key in another
            // form than a bulk string cannot be matched, so everything goes too.
            (PushKind::Invalidate, _) => self.clear(),
            (PushKind::Disconnection, _) => self.lost(generation),
            _ => {}
        }
    }

    /// Whether the Redis key `key` is held (expired or not).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.state().entries.contains_key(key)
    }

    pub(crate) fn stats(&self) -> NearCacheStats {
        let state = self.state();
        NearCacheStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            ..state.stats
        }
    }
}

impl State {
    fn insert(&mut self, key: &str, raw: RawEntry, deadline: Option<Instant>, size: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key.to_owned(), seq));
        self.bytes += size;
        let held = Held {
            raw,
            deadline,
            size,
            seq,
        };
        self.entries.insert(key.to_owned(), held);
        // Leftovers of replaced entries pile up in `order` under churn; drop them now and then.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|held| held.seq == *seq));
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(held) = self.entries.remove(key) {
            self.bytes -= held.size;
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|held| held.seq == seq) {
                self.remove(&key);
                return;
            }
        }
    }

    /// Empties the cache and moves every epoch; what it held, for the caller to free once the
    /// lock is released.
    fn clear(&mut self) -> (HashMap<String, Held>, VecDeque<(String, u64)>) {
        let dropped = (
            std::mem::take(&mut self.entries),
            std::mem::take(&mut self.order),
        );
        self.bytes = 0;
        for epoch in self.epochs.iter_mut() {
            *epoch += 1;
        }
        self.stats.clears += 1;
        dropped
    }
}

fn slot(key: &[u8]) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    // The remainder is below EPOCH_SLOTS, which fits a usize.
    (hasher.finish() % EPOCH_SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(max_entries: usize, max_bytes: usize) -> NearCache {
        NearCache::new(NearCacheLimits {
            max_entries,
            max_bytes,
        })
    }

    fn raw(json: &str) -> RawEntry {
        RawEntry {
            json: json.to_owned(),
            created_at_ms: Some(1),
            last_read_at_ms: None,
            expires_at_ms: None,
        }
    }

    /// Reads `key` the way the store does: ticket, reply, admit.
    fn read(cache: &NearCache, key: &str, json: &str) -> bool {
        let ticket = cache.ticket(key, cache.generation());
        cache.admit(key, Some(&raw(json)), -1, false, ticket)
    }

    fn push(kind: PushKind, data: Vec<Value>) -> PushInfo {
        PushInfo { kind, data }
    }

    fn invalidation(key: &str) -> PushInfo {
        let keys = vec![Value::BulkString(key.as_bytes().to_vec())];
        push(PushKind::Invalidate, vec![Value::Array(keys)])
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_overtaken_by_its_invalidation_is_never_inserted() {
        let cache = near(10, 1 << 20);
        // The read is sent, Redis answers "v1", another node writes "v2": the push is handled
        // before this task gets to insert the reply it already holds.
        let ticket = cache.ticket("k", cache.generation());
        cache.on_push(&invalidation("k"), 0);
        assert!(!cache.admit("k", Some(&raw("\"v1\"")), -1, false, ticket));
        assert_eq!(
            cache.get("k", Instant::now()),
            None,
            "v1 is stale: not held"
        );

        // In the other order the entry goes in and the push takes it out.
        assert!(read(&cache, "k", "\"v1\""));
        assert!(cache.get("k", Instant::now()).is_some());
        cache.on_push(&invalidation("k"), 0);
        assert_eq!(cache.get("k", Instant::now()), None);
        assert!(
            read(&cache, "k", "\"v2\""),
            "a read after the push is fresh"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_or_a_lost_connection_drops_everything_and_refuses_replies_in_flight() {
        let cache = near(10, 1 << 20);
        assert!(read(&cache, "a", "1"));
        let in_flight = cache.ticket("b", 0);
        cache.on_push(&push(PushKind::Invalidate, vec![Value::Nil]), 0);
        assert_eq!(cache.stats().entries, 0, "a flush drops everything");
        assert!(!cache.admit("b", Some(&raw("2")), -1, false, in_flight));

        assert!(read(&cache, "a", "1"));
        let in_flight = cache.ticket("b", 0);
        cache.on_push(&push(PushKind::Disconnection, Vec::new()), 0);
        assert_eq!(
            cache.stats().entries,
            0,
            "a lost connection drops everything"
        );
        assert_eq!(cache.generation(), 1);
        assert!(!cache.admit("b", Some(&raw("2")), -1, false, in_flight));
        assert_eq!(cache.get("a", Instant::now()), None);

        // The loss of an older connection is not the current one's.
        assert!(read(&cache, "a", "1"));
        cache.on_push(&push(PushKind::Disconnection, Vec::new()), 0);
        assert!(cache.get("a", Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_never_outlive_their_ttl_nor_a_silent_connection() {
        let cache = near(10, 1 << 20);
        let ticket = cache.ticket("short", 0);
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(cache.admit("short", Some(&raw("1")), 100, false, ticket));
        tokio::time::advance(Duration::from_millis(94)).await;
        assert!(cache.get("short", Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            cache.get("short", Instant::now()),
            None,
            "the deadline counts from before the read was sent"
        );

        assert!(read(&cache, "forever", "1"));
        tokio::time::advance(CONFIRMED_FOR + Duration::from_millis(1)).await;
        assert_eq!(
            cache.get("forever", Instant::now()),
            None,
            "no reply for a while: the connection may be half open"
        );
        assert!(
            cache.contains("forever"),
            "still held for when it answers again"
        );
        let ticket = cache.ticket("other", 0);
        cache.admit("other", None, -2, false, ticket);
        assert!(cache.get("forever", Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalidation_naming_a_key_in_another_form_drops_everything() {
        let cache = near(10, 1 << 20);
        assert!(read(&cache, "a", "1"));
        let keys = vec![Value::SimpleString("a".to_owned())];
        cache.on_push(&push(PushKind::Invalidate, vec![Value::Array(keys)]), 0);
        assert!(!cache.contains("a"));
        assert_eq!(cache.stats().clears, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_saying_the_key_is_gone_drops_the_held_entry() {
        let cache = near(10, 1 << 20);
        assert!(read(&cache, "k", "1"));
        // The key expired in Redis (or was deleted without a push reaching this node yet).
        let ticket = cache.ticket("k", 0);
        assert!(!cache.admit("k", None, -2, false, ticket));
        assert!(!cache.contains("k"));
        assert_eq!(cache.get("k", Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_wrote_refuses_replies_sent_before_it() {
        let cache = near(10, 1 << 20);
        // A plain read is sent, then a sliding load cuts the TTL to 100 ms; the sliding load's
        // reply comes in first, the plain one (no TTL yet) after it.
        let plain = cache.ticket("k", 0);
        let sliding = cache.ticket("k", 0);
        assert!(cache.admit("k", Some(&raw("1")), 100, true, sliding));
        assert!(!cache.admit("k", Some(&raw("1")), -1, false, plain));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            cache.get("k", Instant::now()),
            None,
            "the slide's deadline holds"
        );

        // A read sent after the write's reply arrived sees the write.
        let after = cache.ticket("k", 0);
        assert!(cache.admit("k", Some(&raw("1")), 100, false, after));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_entries_make_room_within_both_bounds() {
        let cache = near(2, 1 << 20);
        for key in ["a", "b", "c"] {
            assert!(read(&cache, key, "1"));
        }
        assert!(!cache.contains("a"));
        assert!(cache.contains("b") && cache.contains("c"));

        let per_entry = 1 + 3 + ENTRY_OVERHEAD;
        let cache = near(100, 2 * per_entry);
        for key in ["a", "b", "c"] {
            assert!(read(&cache, key, "123"));
        }
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(cache.stats().bytes, 2 * per_entry);
        assert!(
            !read(&cache, "big", &"x".repeat(3 * per_entry)),
            "never held"
        );

        // Replacing and invalidating keys leaves no leftovers behind in the byte count.
        for _ in 0..5000 {
            assert!(read(&cache, "b", "123"));
            cache.invalidate([b"c".as_slice()]);
        }
        assert_eq!(cache.stats().bytes, per_entry);
        assert!(cache.state().order.len() < 2100);
    }
}

//! The cache in this process's memory: the embedded backend, with the same semantics as Redis.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::Notify, time::Instant};

use super::{
    CacheDump, CacheLists, CacheLocks, CacheValues, DumpItem, ItemKind, KeyInfo, LockInfo,
    RawEntry, StoreError, Written,
};
use stellar_core::{
    sync,
    time::{now_ms, now_us},
};

/// How long a fencing token is remembered after its last use, as on Redis.
const FENCE_MEMORY: Duration = Duration::from_secs(86_400);

/// Past this many remembered fencing tokens, the ones older than [`FENCE_MEMORY`] are dropped.
const FENCE_SWEEP_AT: usize = 1024;

#[derive(Debug)]
enum Item {
    Value {
        json: String,
        created_at_ms: u64,
        read_at_ms: Option<u64>,
        expires: Option<Instant>,
    },
    List {
        items: VecDeque<String>,
        expires: Option<Instant>,
    },
}

impl Item {
    fn expires(&self) -> Option<Instant> {
        match self {
            Self::Value { expires, .. } | Self::List { expires, .. } => *expires,
        }
    }

    fn counter() -> Self {
        Self::Value {
            json: "0".to_owned(),
            created_at_ms: now_ms(),
            read_at_ms: None,
            expires: None,
        }
    }

    fn from_dump(item: &DumpItem) -> Self {
        let expires = |ttl_ms: &Option<u64>| {
            ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms.max(1)))
        };
        match item {
            DumpItem::Value {
                json,
                created_at_ms,
                ttl_ms,
                ..
            } => Self::Value {
                json: json.clone(),
                created_at_ms: created_at_ms.unwrap_or(0),
                read_at_ms: None,
                expires: expires(ttl_ms),
            },
            DumpItem::List { items, ttl_ms, .. } => Self::List {
                items: items.iter().cloned().collect(),
                expires: expires(ttl_ms),
            },
        }
    }

    fn describe(&self, key: &str) -> KeyInfo {
        let (kind, size) = match self {
            Self::Value { json, .. } => (ItemKind::Value, json.len() as u64),
            Self::List { items, .. } => (ItemKind::List, items.len() as u64),
        };
        KeyInfo {
            key: key.to_owned(),
            kind,
            ttl_ms: remaining_ms(self.expires()),
            size,
        }
    }

    fn to_dump(&self, key: &str) -> DumpItem {
        match self {
            Self::Value {
                json,
                created_at_ms,
                expires,
                ..
            } => DumpItem::Value {
                key: key.to_owned(),
                json: json.clone(),
                created_at_ms: Some(*created_at_ms),
                ttl_ms: remaining_ms(*expires),
            },
            Self::List { items, expires } => DumpItem::List {
                key: key.to_owned(),
                items: items.iter().cloned().collect(),
                ttl_ms: remaining_ms(*expires),
            },
        }
    }
}

#[derive(Debug, Default)]
struct State {
    items: HashMap<String, Item>,
    locks: HashMap<String, (String, Instant)>,
    /// The last fencing token per key and when it was last used.
    fences: HashMap<String, (u64, Instant)>,
}

impl State {
    /// Drops whatever expired; called under the lock before every operation.
    fn expire(&mut self, now: Instant) {
        self.items
            .retain(|_, item| item.expires().is_none_or(|at| at > now));
        self.locks.retain(|_, (_, at)| *at > now);
    }

    fn foreign_lock(&self, key: &str, token: Option<&str>) -> bool {
        self.locks
            .get(key)
            .is_some_and(|(holder, _)| Some(holder.as_str()) != token)
    }

    /// The list at `key`, created empty if absent.
    fn list_mut(&mut self, key: &str) -> Result<&mut VecDeque<String>, StoreError> {
        let item = self
            .items
            .entry(key.to_owned())
            .or_insert_with(|| Item::List {
                items: VecDeque::new(),
                expires: None,
            });
        match item {
            Item::List { items, .. } => Ok(items),
            Item::Value { .. } => Err(StoreError::wrong_kind(key, ItemKind::List)),
        }
    }

    /// The fencing token of a lock on `key` just taken (`refresh`: taken again by its holder).
    /// As on Redis: max(previous + 1, wall-clock microseconds), so an entry may be forgotten a
    /// day after its last use and later tokens still rise.
    fn next_fence(&mut self, key: &str, refresh: bool) -> u64 {
        let now = Instant::now();
        if self.fences.len() > FENCE_SWEEP_AT {
            self.fences
                .retain(|_, (_, used)| now.duration_since(*used) < FENCE_MEMORY);
        }
        let (fence, used) = self.fences.entry(key.to_owned()).or_insert((0, now));
        if !(refresh && *fence > 0) {
            *fence = (*fence + 1).max(now_us());
        }
        *used = now;
        *fence
    }
}

/// A cache store in memory. Clones share the same data. Time is Tokio's, so tests can pause it.
#[derive(Debug, Clone, Default)]
pub struct MemoryCacheStore {
    state: Arc<Mutex<State>>,
    /// Wakes blocking pops when something is pushed.
    pushed: Arc<Notify>,
}

impl MemoryCacheStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, with whatever expired dropped.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = sync::lock(&self.state);
        state.expire(Instant::now());
        state
    }
}

fn remaining_ms(expires: Option<Instant>) -> Option<u64> {
    expires.map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64)
}

/// Adds `by` to the counter `json` at `key`, in place.
fn add_to_counter(key: &str, json: &mut String, by: i64) -> Result<i64, StoreError> {
    let current: i64 = json.parse().map_err(|_| StoreError::NotACounter {
        key: key.to_owned(),
    })?;
    let next = current
        .checked_add(by)
        .ok_or_else(|| StoreError::CounterOverflow {
            key: key.to_owned(),
            by,
        })?;
    *json = next.to_string();
    Ok(next)
}

#[async_trait]
impl CacheValues for MemoryCacheStore {
    async fn save(
        &self,
        key: &str,
        json: &str,
        ttl: Option<Duration>,
        token: Option<&str>,
    ) -> Result<Written, StoreError> {
        let mut state = self.state();
        if state.foreign_lock(key, token) {
            return Ok(Written::Locked);
        }
        let item = Item::Value {
            json: json.to_owned(),
            created_at_ms: now_ms(),
            read_at_ms: None,
            expires: ttl.map(|ttl| Instant::now() + ttl),
        };
        state.items.insert(key.to_owned(), item);
        Ok(Written::Yes)
    }

    async fn load(
        &self,
        key: &str,
        slide: Option<Duration>,
    ) -> Result<Option<RawEntry>, StoreError> {
        let mut state = self.state();
        let (json, created_at_ms, read_at_ms, expires) = match state.items.get_mut(key) {
            None => return Ok(None),
            Some(Item::List { .. }) => return Err(StoreError::wrong_kind(key, ItemKind::Value)),
            Some(Item::Value {
                json,
                created_at_ms,
                read_at_ms,
                expires,
            }) => (json, created_at_ms, read_at_ms, expires),
        };
        let now = now_ms();
        let last_read_at_ms = read_at_ms.replace(now);
        if let Some(slide) = slide {
            *expires = Some(Instant::now() + slide);
        }
        Ok(Some(RawEntry {
            json: json.clone(),
            created_at_ms: Some(*created_at_ms),
            last_read_at_ms,
            expires_at_ms: remaining_ms(*expires).map(|left| now + left),
        }))
    }

    async fn destroy(&self, key: &str, token: Option<&str>) -> Result<Option<bool>, StoreError> {
        let mut state = self.state();
        if state.foreign_lock(key, token) {
            return Ok(None);
        }
        Ok(Some(state.items.remove(key).is_some()))
    }

    async fn increment(
        &self,
        key: &str,
        by: i64,
        token: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let mut state = self.state();
        if state.foreign_lock(key, token) {
            return Ok(None);
        }
        match state
            .items
            .entry(key.to_owned())
            .or_insert_with(Item::counter)
        {
            Item::Value { json, .. } => add_to_counter(key, json, by).map(Some),
            Item::List { .. } => Err(StoreError::wrong_kind(key, ItemKind::Value)),
        }
    }
}

#[async_trait]
impl CacheLocks for MemoryCacheStore {
    async fn lock(&self, key: &str, token: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let mut state = self.state();
        let refresh = match state.locks.get(key) {
            Some((holder, _)) if holder != token => return Ok(None),
            Some(_) => true,
            None => false,
        };
        let expires = Instant::now() + ttl;
        state
            .locks
            .insert(key.to_owned(), (token.to_owned(), expires));
        Ok(Some(state.next_fence(key, refresh)))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        let held = state
            .locks
            .get(key)
            .is_some_and(|(holder, _)| holder == token);
        if held {
            state.locks.remove(key);
        }
        Ok(held)
    }

    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut state = self.state();
        match state.locks.get_mut(key) {
            Some((holder, expires)) if holder == token => {
                *expires = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn lock_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let state = self.state();
        Ok(state.locks.get(key).map(|(holder, _)| holder.clone()))
    }

    async fn locks(&self) -> Result<Vec<LockInfo>, StoreError> {
        let mut locks: Vec<LockInfo> = self
            .state()
            .locks
            .iter()
            .map(|(key, (token, expires))| LockInfo {
                key: key.clone(),
                token: token.clone(),
                ttl_ms: remaining_ms(Some(*expires)),
            })
            .collect();
        locks.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(locks)
    }
}

#[async_trait]
impl CacheLists for MemoryCacheStore {
    async fn push(&self, key: &str, json: &str) -> Result<u64, StoreError> {
        let length = {
            let mut state = self.state();
            let items = state.list_mut(key)?;
            items.push_back(json.to_owned());
            items.len() as u64
        };
        self.pushed.notify_waiters();
        Ok(length)
    }

    async fn pop(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut state = self.state();
        let items = match state.items.get_mut(key) {
            None => return Ok(None),
            Some(Item::Value { .. }) => return Err(StoreError::wrong_kind(key, ItemKind::List)),
            Some(Item::List { items, .. }) => items,
        };
        let item = items.pop_front();
        if items.is_empty() {
            state.items.remove(key);
        }
        Ok(item)
    }

    async fn pop_blocking(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before checking, so a push between the check and the wait is not missed.
            let pushed = self.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            if let Some(item) = self.pop(key).await? {
                return Ok(Some(item));
            }
            if tokio::time::timeout_at(deadline, pushed).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn list_length(&self, key: &str) -> Result<u64, StoreError> {
        match self.state().items.get(key) {
            None => Ok(0),
            Some(Item::List { items, .. }) => Ok(items.len() as u64),
            Some(Item::Value { .. }) => Err(StoreError::wrong_kind(key, ItemKind::List)),
        }
    }

    async fn list_range(
        &self,
        key: &str,
        start: u64,
        stop: u64,
    ) -> Result<Vec<String>, StoreError> {
        match self.state().items.get(key) {
            None => Ok(Vec::new()),
            Some(Item::List { items, .. }) => Ok(items
                .iter()
                .skip(usize::try_from(start).unwrap_or(usize::MAX))
                .take(usize::try_from(stop.saturating_sub(start) + 1).unwrap_or(usize::MAX))
                .cloned()
                .collect()),
            Some(Item::Value { .. }) => Err(StoreError::wrong_kind(key, ItemKind::List)),
        }
    }
}

#[async_trait]
impl CacheDump for MemoryCacheStore {
    async fn keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = self
            .state()
            .items
            .keys()
            .filter(|key| matches(pattern, key))
            .cloned()
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn keys_bounded(
        &self,
        pattern: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let mut keys = self.keys(pattern).await?;
        let complete = keys.len() <= max;
        keys.truncate(max);
        Ok((keys, complete))
    }

    async fn describe(&self, keys: &[String]) -> Result<Vec<KeyInfo>, StoreError> {
        let state = self.state();
        Ok(keys
            .iter()
            .filter_map(|key| Some(state.items.get(key)?.describe(key)))
            .collect())
    }

    async fn clear(&self, pattern: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        let before = state.items.len();
        state.items.retain(|key, _| !matches(pattern, key));
        Ok((before - state.items.len()) as u64)
    }

    async fn export(&self, pattern: &str) -> Result<Vec<DumpItem>, StoreError> {
        let mut items: Vec<DumpItem> = self
            .state()
            .items
            .iter()
            .filter(|(key, _)| matches(pattern, key))
            .map(|(key, item)| item.to_dump(key))
            .collect();
        items.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(items)
    }

    async fn import(&self, items: &[DumpItem]) -> Result<(), StoreError> {
        let mut state = self.state();
        for item in items {
            state
                .items
                .insert(item.key().to_owned(), Item::from_dump(item));
        }
        Ok(())
    }
}

/// Whether `key` matches the Redis-style glob `pattern`.
fn matches(pattern: &str, key: &str) -> bool {
    let (pattern, key): (Vec<char>, Vec<char>) = (pattern.chars().collect(), key.chars().collect());
    glob(&pattern, &key)
}

/// Redis-style glob: `*` any run, `?` one character, `\` escapes the next.
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some(('?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some(('\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob(&rest[1..], &text[1..])
        }
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_like_redis() {
        assert!(matches("*", "anything"));
        assert!(matches("user:*", "user:1"));
        assert!(!matches("user:*", "session:1"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("a\\*", "a*"));
        assert!(!matches("a\\*", "ab"));
    }
}

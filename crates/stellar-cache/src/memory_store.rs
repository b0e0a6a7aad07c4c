//! The cache in this process's memory: the embedded backend, with the same semantics as Redis.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use stellar_bus::TransportError;
use tokio::{sync::Notify, time::Instant};

use crate::store::{CacheStore, DumpItem, LockInfo, RawEntry, Written};

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
}

/// A [`CacheStore`] in memory. Clones share the same data. Time is Tokio's, so tests can pause it.
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

    fn state(&self) -> MutexGuard<'_, State> {
        // Each operation leaves the state consistent before it can panic: a poisoned lock is fine.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.expire(Instant::now());
        state
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn remaining_ms(expires: Option<Instant>) -> Option<u64> {
    expires.map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64)
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

fn matches(pattern: &str, key: &str) -> bool {
    let (pattern, key): (Vec<char>, Vec<char>) = (pattern.chars().collect(), key.chars().collect());
    glob(&pattern, &key)
}

#[async_trait]
impl CacheStore for MemoryCacheStore {
    async fn save(
        &self,
        key: &str,
        json: &str,
        ttl: Option<Duration>,
        token: Option<&str>,
    ) -> Result<Written, TransportError> {
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
    ) -> Result<Option<RawEntry>, TransportError> {
        let mut state = self.state();
        let Some(Item::Value {
            json,
            created_at_ms,
            read_at_ms,
            expires,
        }) = state.items.get_mut(key)
        else {
            return Ok(None);
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

    async fn destroy(
        &self,
        key: &str,
        token: Option<&str>,
    ) -> Result<Option<bool>, TransportError> {
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
    ) -> Result<Option<i64>, TransportError> {
        let mut state = self.state();
        if state.foreign_lock(key, token) {
            return Ok(None);
        }
        let item = state
            .items
            .entry(key.to_owned())
            .or_insert_with(|| Item::Value {
                json: "0".to_owned(),
                created_at_ms: now_ms(),
                read_at_ms: None,
                expires: None,
            });
        let Item::Value { json, .. } = item else {
            return Err(wrong_type("HINCRBY"));
        };
        let current: i64 = json.parse().map_err(|_| wrong_type("HINCRBY"))?;
        let next = current
            .checked_add(by)
            .ok_or_else(|| wrong_type("HINCRBY"))?;
        *json = next.to_string();
        Ok(Some(next))
    }

    async fn lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, TransportError> {
        let mut state = self.state();
        let refresh = match state.locks.get(key) {
            Some((holder, _)) if holder != token => return Ok(None),
            Some(_) => true,
            None => false,
        };
        state
            .locks
            .insert(key.to_owned(), (token.to_owned(), Instant::now() + ttl));
        // As on Redis: max(previous + 1, wall-clock microseconds), so an entry may be forgotten a
        // day after its last use and later tokens still rise.
        let now = Instant::now();
        if state.fences.len() > 1024 {
            state
                .fences
                .retain(|_, (_, used)| now.duration_since(*used) < Duration::from_secs(86_400));
        }
        let entry = state.fences.entry(key.to_owned()).or_insert((0, now));
        if !(refresh && entry.0 > 0) {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            entry.0 = (entry.0 + 1).max(micros);
        }
        entry.1 = now;
        Ok(Some(entry.0))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<bool, TransportError> {
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

    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, TransportError> {
        let mut state = self.state();
        match state.locks.get_mut(key) {
            Some((holder, expires)) if holder == token => {
                *expires = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn lock_holder(&self, key: &str) -> Result<Option<String>, TransportError> {
        Ok(self
            .state()
            .locks
            .get(key)
            .map(|(holder, _)| holder.clone()))
    }

    async fn push(&self, key: &str, json: &str) -> Result<u64, TransportError> {
        let length = {
            let mut state = self.state();
            let item = state
                .items
                .entry(key.to_owned())
                .or_insert_with(|| Item::List {
                    items: VecDeque::new(),
                    expires: None,
                });
            let Item::List { items, .. } = item else {
                return Err(wrong_type("RPUSH"));
            };
            items.push_back(json.to_owned());
            items.len() as u64
        };
        self.pushed.notify_waiters();
        Ok(length)
    }

    async fn pop(&self, key: &str) -> Result<Option<String>, TransportError> {
        let mut state = self.state();
        let Some(Item::List { items, .. }) = state.items.get_mut(key) else {
            return Ok(None);
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
    ) -> Result<Option<String>, TransportError> {
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

    async fn list_length(&self, key: &str) -> Result<u64, TransportError> {
        Ok(match self.state().items.get(key) {
            Some(Item::List { items, .. }) => items.len() as u64,
            _ => 0,
        })
    }

    async fn keys(&self, pattern: &str) -> Result<Vec<String>, TransportError> {
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

    async fn clear(&self, pattern: &str) -> Result<u64, TransportError> {
        let mut state = self.state();
        let before = state.items.len();
        state.items.retain(|key, _| !matches(pattern, key));
        Ok((before - state.items.len()) as u64)
    }

    async fn locks(&self) -> Result<Vec<LockInfo>, TransportError> {
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

    async fn export(&self, pattern: &str) -> Result<Vec<DumpItem>, TransportError> {
        let state = self.state();
        let mut items: Vec<DumpItem> = state
            .items
            .iter()
            .filter(|(key, _)| matches(pattern, key))
            .map(|(key, item)| match item {
                Item::Value {
                    json,
                    created_at_ms,
                    expires,
                    ..
                } => DumpItem::Value {
                    key: key.clone(),
                    json: json.clone(),
                    created_at_ms: Some(*created_at_ms),
                    ttl_ms: remaining_ms(*expires),
                },
                Item::List { items, expires } => DumpItem::List {
                    key: key.clone(),
                    items: items.iter().cloned().collect(),
                    ttl_ms: remaining_ms(*expires),
                },
            })
            .collect();
        items.sort_by(|a, b| dump_key(a).cmp(dump_key(b)));
        Ok(items)
    }

    async fn import(&self, items: &[DumpItem]) -> Result<(), TransportError> {
        let mut state = self.state();
        let expires = |ttl_ms: &Option<u64>| {
            ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms.max(1)))
        };
        for item in items {
            match item {
                DumpItem::Value {
                    key,
                    json,
                    created_at_ms,
                    ttl_ms,
                } => {
                    let value = Item::Value {
                        json: json.clone(),
                        created_at_ms: created_at_ms.unwrap_or(0),
                        read_at_ms: None,
                        expires: expires(ttl_ms),
                    };
                    state.items.insert(key.clone(), value);
                }
                DumpItem::List { key, items, ttl_ms } => {
                    let list = Item::List {
                        items: items.iter().cloned().collect(),
                        expires: expires(ttl_ms),
                    };
                    state.items.insert(key.clone(), list);
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn dump_key(item: &DumpItem) -> &str {
    match item {
        DumpItem::Value { key, .. } | DumpItem::List { key, .. } => key,
    }
}

fn wrong_type(op: &'static str) -> TransportError {
    TransportError::Backend {
        op,
        source: "WRONGTYPE operation against a key holding the wrong kind of value".into(),
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

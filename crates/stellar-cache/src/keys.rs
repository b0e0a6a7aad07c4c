//! The key schema: every Redis key of the cache is built here, and nowhere else.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<entry prefix>{<key>}` (default `stellar:cache:{<key>}`) | HASH | a value: `value` (JSON), `created_at`, `read_at` (ms) |
//! | `<entry prefix>{<key>}` | LIST | a list's items, oldest first |
//! | `<lock prefix>{<key>}` (default `stellar:lock:{<key>}`) | STRING | the lock holder's token, with the lock's TTL |
//! | `<lock prefix>{<key>}\x1ffence` | STRING | the last fencing token of `key`, kept a day |
//!
//! The caller's key is the hash tag of each of its Redis keys, so on Redis Cluster an entry, its
//! lock and its fencing counter share one slot (a script may touch them together), while
//! different keys spread over the shards. Prefixes hold no `{` or `}` (so the tag is the one the
//! schema adds), and a key is neither empty nor starts with `}` (either would leave the tag
//! empty, and Redis would hash each whole name instead): [`Keys::new`] and the cache's key check
//! refuse them.
//!
//! The cache's own companion keys (fencing counters, fill locks) append [`SEPARATOR`] and a suffix
//! to the caller's key; callers' keys may not contain the separator, so the two never meet.

use stellar_core::ConfigError;

/// Separates a caller's key from the suffix of a companion key.
pub(crate) const SEPARATOR: char = '\u{1f}';

/// The default prefix of entry and list keys.
pub(crate) const ENTRY_PREFIX: &str = "stellar:cache:";

/// The default prefix of lock keys.
pub(crate) const LOCK_PREFIX: &str = "stellar:lock:";

/// The suffix of a fencing counter, after [`SEPARATOR`].
const FENCE: &str = "fence";

/// The name of the lock `get_or_set_with` takes to fill `key`: a cache key (on every store), not
/// a Redis key.
pub(crate) fn fill_lock(key: &str) -> String {
    format!("{key}{SEPARATOR}fill")
}

/// The Redis key names of one cache, from its two prefixes.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    entry_prefix: String,
    lock_prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            entry_prefix: ENTRY_PREFIX.to_owned(),
            lock_prefix: LOCK_PREFIX.to_owned(),
        }
    }
}

impl Keys {
    /// The schema under `entry_prefix` (values, counters, lists) and `lock_prefix` (locks).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`], naming the prefix, if one holds `{` or `}`: the schema adds the
    /// hash tag itself.
    pub(crate) fn new(
        entry_prefix: impl Into<String>,
        lock_prefix: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            entry_prefix: checked_prefix("entry_prefix", entry_prefix.into())?,
            lock_prefix: checked_prefix("lock_prefix", lock_prefix.into())?,
        })
    }

    /// HASH (a value or counter) or LIST at `key`.
    pub(crate) fn entry(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.entry_prefix)
    }

    /// STRING holding the token of `key`'s lock holder.
    pub(crate) fn lock(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.lock_prefix)
    }

    /// STRING holding the last fencing token issued for `key`'s lock.
    pub(crate) fn fence(&self, key: &str) -> String {
        format!("{}{{{key}}}{SEPARATOR}{FENCE}", self.lock_prefix)
    }

    /// A SCAN `MATCH` pattern for the entries whose keys match the glob `pattern`.
    pub(crate) fn entry_pattern(&self, pattern: &str) -> String {
        format!("{}{{{pattern}}}", escape_glob(&self.entry_prefix))
    }

    /// A SCAN `MATCH` pattern for every lock key (fencing counters end after the tag, so they
    /// do not match).
    pub(crate) fn lock_pattern(&self) -> String {
        format!("{}{{*}}", escape_glob(&self.lock_prefix))
    }

    /// The caller's key of an entry's Redis key; `None` if it is not one.
    pub(crate) fn entry_name<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        untag(redis_key.strip_prefix(&self.entry_prefix)?)
    }

    /// The caller's key of a lock's Redis key; `None` if it is not a lock (a fencing counter).
    pub(crate) fn lock_name<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        untag(redis_key.strip_prefix(&self.lock_prefix)?)
    }
}

/// The key inside `{<key>}`; `None` if `tagged` is not wrapped so (a fencing counter ends after
/// the tag).
fn untag(tagged: &str) -> Option<&str> {
    tagged.strip_prefix('{')?.strip_suffix('}')
}

/// `prefix`, unless it holds a brace: the prefix `name` of [`Keys::new`] is refused then.
fn checked_prefix(name: &'static str, prefix: String) -> Result<String, ConfigError> {
    if !prefix.contains(['{', '}']) {
        return Ok(prefix);
    }
    Err(ConfigError::Invalid {
        key: name,
        origin: "RedisCacheStore::with_prefixes".to_owned(),
        expected: "a key prefix without `{` or `}` (the cache adds the hash tag `{<key>}` \
                   itself), e.g. `app:cache:`",
        got: format!("{prefix:?}"),
    })
}

/// `SCAN` patterns of the layout before hash tags (releases before issue 15), with the default
/// prefixes, for `stellar migrate`.
pub const LEGACY_PATTERNS: &[&str] = &["stellar:cache:*", "stellar:lock:*"];

/// The name a cache key of the layout before hash tags has now, with the default prefixes
/// (`stellar:cache:<key>` becomes `stellar:cache:{<key>}`, `stellar:lock:<key>` and its fencing
/// counter `stellar:lock:<key>\x1ffence` become `stellar:lock:{<key>}` and
/// `stellar:lock:{<key>}\x1ffence`); `None` for a key in today's layout (its name right after the
/// prefix is a `{…}` tag) or any other key.
pub fn migrated_key(legacy: &str) -> Option<String> {
    let keys = Keys::default();
    let tagged = |name: &str| name.starts_with('{') && name.contains('}');
    if let Some(name) = legacy.strip_prefix(ENTRY_PREFIX) {
        return (!tagged(name) && !name.is_empty()).then(|| keys.entry(name));
    }
    let name = legacy.strip_prefix(LOCK_PREFIX)?;
    if tagged(name) || name.is_empty() {
        return None;
    }
    let fence_suffix = format!("{SEPARATOR}{FENCE}");
    Some(match name.strip_suffix(&fence_suffix) {
        Some(key) => keys.fence(key),
        None => keys.lock(name),
    })
}

/// Escapes glob characters of a literal prefix, so only the caller's pattern matches patterns.
pub(crate) fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn legacy_keys_map_to_the_tagged_layout() {
        use super::migrated_key;
        assert_eq!(
            migrated_key("stellar:cache:user:1").as_deref(),
            Some("stellar:cache:{user:1}")
        );
        assert_eq!(
            migrated_key("stellar:lock:job").as_deref(),
            Some("stellar:lock:{job}")
        );
        assert_eq!(
            migrated_key("stellar:lock:job\u{1f}fence").as_deref(),
            Some("stellar:lock:{job}\u{1f}fence")
        );
        assert_eq!(migrated_key("stellar:cache:{user:1}"), None);
        assert_eq!(migrated_key("stellar:lock:{job}\u{1f}fence"), None);
        assert_eq!(migrated_key("stellar:{tasks}:queues"), None);
    }

    use redis::cluster_routing::Slot;
    use stellar_core::ConfigError;

    use super::{ENTRY_PREFIX, Keys, LOCK_PREFIX};

    #[test]
    fn keys_follow_the_documented_schema() {
        let keys = Keys::default();
        assert_eq!(keys.entry("user:1"), "stellar:cache:{user:1}");
        assert_eq!(keys.lock("user:1"), "stellar:lock:{user:1}");
        assert_eq!(keys.fence("job"), "stellar:lock:{job}\u{1f}fence");
        assert_eq!(keys.lock_name(&keys.fence("job")), None);
        assert_eq!(keys.lock_name("stellar:lock:{job}"), Some("job"));
        assert_eq!(keys.entry_name("stellar:cache:{a}"), Some("a"));
        assert_eq!(keys.entry_name("stellar:lock:{a}"), None);
        assert_eq!(
            keys.entry_name("stellar:cache:a"),
            None,
            "untagged: not ours"
        );
        assert_eq!(keys.entry_pattern("user:*"), "stellar:cache:{user:*}");
        assert_eq!(keys.lock_pattern(), "stellar:lock:{*}");
    }

    #[test]
    fn names_round_trip_keys_with_braces() {
        let keys = Keys::default();
        for key in ["a}b", "{x}", "a{b", "x}"] {
            assert_eq!(keys.entry_name(&keys.entry(key)), Some(key));
            assert_eq!(keys.lock_name(&keys.lock(key)), Some(key));
            assert_eq!(keys.lock_name(&keys.fence(key)), None, "{key:?}");
        }
    }

    #[test]
    fn an_entry_its_lock_and_its_fence_share_a_cluster_slot() {
        let keys = Keys::default();
        // Braces inside a key do not move its tag: the first `{` is the schema's, and the first
        // `}` after it ends the tag the same way in all three names.
        for key in ["user:1", "job", "a}b", "{x}", "a{b}c", "ü", "x}"] {
            let slot = Slot::for_key(keys.entry(key));
            assert_eq!(Slot::for_key(keys.lock(key)), slot, "{key:?}");
            assert_eq!(Slot::for_key(keys.fence(key)), slot, "{key:?}");
        }
        // An empty tag is no tag: Redis hashes each whole name, so the names of `""` or of a key
        // starting with `}` would land apart (the cache's key check refuses both).
        for key in ["", "}x"] {
            assert_ne!(
                Slot::for_key(keys.entry(key)),
                Slot::for_key(keys.lock(key)),
                "{key:?}"
            );
        }
        // Different keys spread over the slots.
        assert_ne!(
            Slot::for_key(keys.entry("user:1")),
            Slot::for_key(keys.entry("user:2"))
        );
    }

    #[test]
    fn prefixes_with_braces_are_refused_by_name() {
        assert!(Keys::new("app:", "app-lock:").is_ok());
        let err = Keys::new("app:{a}:", LOCK_PREFIX).expect_err("entry prefix has braces");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "entry_prefix",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = Keys::new(ENTRY_PREFIX, "lock}").expect_err("lock prefix has a brace");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "lock_prefix",
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("`lock_prefix`"), "{message}");
        assert!(message.contains("without `{` or `}`"), "{message}");
        assert!(message.contains("\"lock}\""), "{message}");
    }

    #[test]
    fn glob_characters_in_prefixes_are_literal() {
        let keys = Keys::new("app*1:", "lock?:").expect("prefixes");
        assert_eq!(keys.entry_pattern("user:*"), "app\\*1:{user:*}");
        assert_eq!(keys.lock_pattern(), "lock\\?:{*}");
    }
}

//! The key schema: every Redis key of the cache is built here, and nowhere else.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<entry prefix><key>` (default `stellar:cache:`) | HASH | a value: `value` (JSON), `created_at`, `read_at` (ms) |
//! | `<entry prefix><key>` | LIST | a list's items, oldest first |
//! | `<lock prefix><key>` (default `stellar:lock:`) | STRING | the lock holder's token, with the lock's TTL |
//! | `<lock prefix><key>\x1ffence` | STRING | the last fencing token of `key`, kept a day |
//!
//! The cache's own companion keys (fencing counters, fill locks) append [`SEPARATOR`] and a suffix
//! to the caller's key; callers' keys may not contain the separator, so the two never meet.

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
        Self::new(ENTRY_PREFIX, LOCK_PREFIX)
    }
}

impl Keys {
    /// The schema under `entry_prefix` (values, counters, lists) and `lock_prefix` (locks).
    pub(crate) fn new(entry_prefix: impl Into<String>, lock_prefix: impl Into<String>) -> Self {
        Self {
            entry_prefix: entry_prefix.into(),
            lock_prefix: lock_prefix.into(),
        }
    }

    /// HASH (a value or counter) or LIST at `key`.
    pub(crate) fn entry(&self, key: &str) -> String {
        format!("{}{key}", self.entry_prefix)
    }

    /// STRING holding the token of `key`'s lock holder.
    pub(crate) fn lock(&self, key: &str) -> String {
        format!("{}{key}", self.lock_prefix)
    }

    /// STRING holding the last fencing token issued for `key`'s lock.
    pub(crate) fn fence(&self, key: &str) -> String {
        format!("{}{key}{SEPARATOR}{FENCE}", self.lock_prefix)
    }

    /// A SCAN `MATCH` pattern for the entries whose keys match the glob `pattern`.
    pub(crate) fn entry_pattern(&self, pattern: &str) -> String {
        format!("{}{pattern}", escape_glob(&self.entry_prefix))
    }

    /// A SCAN `MATCH` pattern for every lock key (and fencing counter).
    pub(crate) fn lock_pattern(&self) -> String {
        format!("{}*", escape_glob(&self.lock_prefix))
    }

    /// The caller's key of an entry's Redis key; `None` if it is not one.
    pub(crate) fn entry_name<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        redis_key.strip_prefix(&self.entry_prefix)
    }

    /// The caller's key of a lock's Redis key; `None` if it is not a lock (a fencing counter).
    pub(crate) fn lock_name<'a>(&self, redis_key: &'a str) -> Option<&'a str> {
        let name = redis_key.strip_prefix(&self.lock_prefix)?;
        let fence_suffix = name
            .strip_suffix(FENCE)
            .is_some_and(|rest| rest.ends_with(SEPARATOR));
        (!fence_suffix).then_some(name)
    }
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
    use super::Keys;

    #[test]
    fn keys_follow_the_documented_schema() {
        let keys = Keys::default();
        assert_eq!(keys.entry("user:1"), "stellar:cache:user:1");
        assert_eq!(keys.lock("user:1"), "stellar:lock:user:1");
        assert_eq!(keys.fence("job"), "stellar:lock:job\u{1f}fence");
        assert_eq!(keys.lock_name(&keys.fence("job")), None);
        assert_eq!(keys.lock_name("stellar:lock:job"), Some("job"));
        assert_eq!(keys.entry_name("stellar:cache:a"), Some("a"));
        assert_eq!(keys.entry_name("stellar:lock:a"), None);
    }

    #[test]
    fn glob_characters_in_prefixes_are_literal() {
        let keys = Keys::new("app*1:", "lock?:");
        assert_eq!(keys.entry_pattern("user:*"), "app\\*1:user:*");
        assert_eq!(keys.lock_pattern(), "lock\\?:*");
    }
}

//! When this node last recorded a read of each key: [`RedisCacheStore`](super::RedisCacheStore)
//! records the read time of an entry (a write, and a Lua script) at most once per
//! [`RECORD_EVERY`] per key, and reads it with plain commands in between.
//!
//! Recording every read made each `load` a script of five Redis calls, and with a near cache every
//! read would invalidate the key on every other node. Once a second keeps `last_read_at` useful
//! ("was this read lately?") at a second's resolution.

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;

/// How often at most a node records a read of one key.
pub(crate) const RECORD_EVERY: Duration = Duration::from_secs(1);

/// How many keys the clock remembers; keys it cannot remember are recorded on every read.
const MAX_KEYS: usize = 65_536;

pub(crate) struct ReadClock {
    recorded: HashMap<String, Instant>,
    max_keys: usize,
    /// When entries older than [`RECORD_EVERY`] were last dropped.
    pruned_at: Option<Instant>,
}

impl Default for ReadClock {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl ReadClock {
    fn with_max_keys(max_keys: usize) -> Self {
        Self {
            recorded: HashMap::new(),
            max_keys,
            pruned_at: None,
        }
    }

    /// Whether a read of `key` at `now` is due to be recorded; if so, it counts as recorded (so
    /// concurrent readers of a hot key record it once, not each).
    pub(crate) fn claim(&mut self, key: &str, now: Instant) -> bool {
        if let Some(last) = self.recorded.get_mut(key) {
            if now.saturating_duration_since(*last) < RECORD_EVERY {
                return false;
            }
            *last = now;
            return true;
        }
        if self.recorded.len() >= self.max_keys {
            self.prune(now);
        }
        // Full of keys read within the last second: this one is recorded every time, which is
        // slower but never wrong.
        if self.recorded.len() < self.max_keys {
            self.recorded.insert(key.to_owned(), now);
        }
        true
    }

    /// Forgets keys recorded over [`RECORD_EVERY`] ago: they are due anyway. At most once per
    /// [`RECORD_EVERY`], so a clock full of fresh keys costs no scan per read.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned_at
            .is_some_and(|at| now.saturating_duration_since(at) < RECORD_EVERY)
        {
            return;
        }
        self.pruned_at = Some(now);
        self.recorded
            .retain(|_, last| now.saturating_duration_since(*last) < RECORD_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_recorded_at_most_once_per_second() {
        let mut clock = ReadClock::default();
        assert!(
            clock.claim("a", Instant::now()),
            "the first read is recorded"
        );
        assert!(!clock.claim("a", Instant::now()));
        assert!(clock.claim("b", Instant::now()), "keys are independent");
        tokio::time::advance(RECORD_EVERY - Duration::from_millis(1)).await;
        assert!(!clock.claim("a", Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(clock.claim("a", Instant::now()));
        assert!(!clock.claim("a", Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_clock_records_unknown_keys_every_time_until_old_ones_age_out() {
        let mut clock = ReadClock::with_max_keys(2);
        assert!(clock.claim("a", Instant::now()));
        assert!(clock.claim("b", Instant::now()));
        assert!(clock.claim("c", Instant::now()));
        assert!(
            clock.claim("c", Instant::now()),
            "not remembered: recorded again"
        );
        assert!(!clock.claim("a", Instant::now()));
        tokio::time::advance(RECORD_EVERY).await;
        assert!(
            clock.claim("c", Instant::now()),
            "a and b aged out, c takes a place"
        );
        assert!(!clock.claim("c", Instant::now()));
        assert_eq!(clock.recorded.len(), 1);
    }
}

//! Replay and loss detection per sender: a sliding window of recent sequence numbers for each
//! (sender, channel, incarnation), as IPsec's anti-replay window does. Senders number each
//! channel separately, so messages sent to other nodes never look like gaps.

use std::{collections::HashMap, time::Duration};

/// How far back (in sequence numbers) out-of-order messages are still accepted. Concurrent
/// publishers on one node can put messages on the wire out of sequence order (measured: more than
/// 128 apart with 8 publishing tasks on 2 cores), so the window is wide.
const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// What the guard decided about one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New; `gap` messages before it were skipped (possibly lost), and `late` of the earlier
    /// gaps it filled (a negative correction of the loss count).
    Fresh { gap: u64, late: bool },
    /// Seen before, or too old to tell.
    Replayed,
}

#[derive(Debug)]
struct Window {
    highest: u64,
    /// A ring of bits: bit `seq % WINDOW` is set when `seq` (within the window) was seen.
    seen: Box<[u64; WORDS]>,
    last_seen_ms: u64,
}

impl Window {
    fn new(seq: u64, now_ms: u64) -> Self {
        let mut window = Self {
            highest: seq,
            seen: Box::new([0; WORDS]),
            last_seen_ms: now_ms,
        };
        window.mark(seq);
        window
    }

    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn is_marked(&self, seq: u64) -> bool {
        let (word, mask) = Self::bit(seq);
        self.seen[word] & mask != 0
    }

    fn mark(&mut self, seq: u64) {
        let (word, mask) = Self::bit(seq);
        self.seen[word] |= mask;
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::bit(seq);
        self.seen[word] &= !mask;
    }

    /// Moves the window up to `seq`, forgetting the slots it reuses.
    fn advance(&mut self, seq: u64) {
        if seq - self.highest >= WINDOW {
            self.seen.fill(0);
        } else {
            for passed in self.highest + 1..=seq {
                self.clear(passed);
            }
        }
        self.highest = seq;
    }
}

/// Remembers each sender's recent sequence numbers.
#[derive(Debug, Default)]
pub(crate) struct ReplayGuard {
    windows: HashMap<(String, String, u64), Window>,
}

impl ReplayGuard {
    /// Checks `seq` from `(sender, channel, incarnation)` at local time `now_ms`, and records it.
    pub(crate) fn check(
        &mut self,
        sender: &str,
        channel: &str,
        incarnation: u64,
        seq: u64,
        now_ms: u64,
    ) -> Verdict {
        let key = (sender.to_owned(), channel.to_owned(), incarnation);
        let Some(window) = self.windows.get_mut(&key) else {
            // A sender we join midway: nothing before this message is counted as lost.
            self.windows.insert(key, Window::new(seq, now_ms));
            return Verdict::Fresh {
                gap: 0,
                late: false,
            };
        };
        window.last_seen_ms = now_ms;
        if seq > window.highest {
            let gap = seq - window.highest - 1;
            window.advance(seq);
            window.mark(seq);
            return Verdict::Fresh { gap, late: false };
        }
        if window.highest - seq >= WINDOW || window.is_marked(seq) {
            return Verdict::Replayed;
        }
        window.mark(seq);
        Verdict::Fresh { gap: 0, late: true }
    }

    /// Forgets senders silent for longer than `keep`. Call it with at least twice the accepted
    /// clock window: an older replay is rejected by its timestamp alone.
    pub(crate) fn prune(&mut self, now_ms: u64, keep: Duration) {
        let keep_ms = keep.as_millis() as u64;
        self.windows
            .retain(|_, window| now_ms.saturating_sub(window.last_seen_ms) <= keep_ms);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_messages_are_fresh_and_repeats_are_replays() {
        let mut guard = ReplayGuard::default();
        for seq in 1..=10 {
            assert_eq!(
                guard.check("a", "c", 1, seq, 0),
                Verdict::Fresh {
                    gap: 0,
                    late: false
                }
            );
        }
        assert_eq!(guard.check("a", "c", 1, 10, 0), Verdict::Replayed);
        assert_eq!(guard.check("a", "c", 1, 3, 0), Verdict::Replayed);
    }

    #[test]
    fn gaps_are_reported_and_late_arrivals_fill_them_once() {
        let mut guard = ReplayGuard::default();
        guard.check("a", "c", 1, 1, 0);
        assert_eq!(
            guard.check("a", "c", 1, 5, 0),
            Verdict::Fresh {
                gap: 3,
                late: false
            }
        );
        assert_eq!(
            guard.check("a", "c", 1, 3, 0),
            Verdict::Fresh { gap: 0, late: true }
        );
        assert_eq!(guard.check("a", "c", 1, 3, 0), Verdict::Replayed);
        assert_eq!(
            guard.check("a", "c", 1, 5 + WINDOW, 0),
            Verdict::Fresh {
                gap: WINDOW - 1,
                late: false
            }
        );
        assert_eq!(
            guard.check("a", "c", 1, 5, 0),
            Verdict::Replayed,
            "older than the window"
        );
    }

    #[test]
    fn messages_reordered_within_the_window_are_all_accepted_once() {
        let mut guard = ReplayGuard::default();
        guard.check("a", "c", 1, 1, 0);
        assert_eq!(
            guard.check("a", "c", 1, 3000, 0),
            Verdict::Fresh {
                gap: 2998,
                late: false
            }
        );
        for seq in 2..3000 {
            assert_eq!(
                guard.check("a", "c", 1, seq, 0),
                Verdict::Fresh { gap: 0, late: true },
                "seq {seq}"
            );
        }
        for seq in [1, 2, 1500, 2999, 3000] {
            assert_eq!(
                guard.check("a", "c", 1, seq, 0),
                Verdict::Replayed,
                "seq {seq}"
            );
        }
        // Slots reused by the advancing window start clean.
        assert_eq!(
            guard.check("a", "c", 1, 3000 + WINDOW, 0),
            Verdict::Fresh {
                gap: WINDOW - 1,
                late: false
            }
        );
        assert_eq!(
            guard.check("a", "c", 1, 3001 + WINDOW - 10, 0),
            Verdict::Fresh { gap: 0, late: true }
        );
    }

    #[test]
    fn senders_and_incarnations_are_independent() {
        let mut guard = ReplayGuard::default();
        guard.check("a", "c", 1, 1, 0);
        assert_eq!(
            guard.check("b", "c", 1, 1, 0),
            Verdict::Fresh {
                gap: 0,
                late: false
            }
        );
        assert_eq!(
            guard.check("a", "c", 2, 1, 0),
            Verdict::Fresh {
                gap: 0,
                late: false
            },
            "a restarted sender"
        );
    }

    #[test]
    fn silent_senders_are_forgotten() {
        let mut guard = ReplayGuard::default();
        guard.check("old", "c", 1, 1, 0);
        guard.check("new", "c", 1, 1, 50_000);
        guard.prune(61_000, Duration::from_secs(60));
        assert_eq!(guard.len(), 1);
    }
}

//! Replay and loss detection per sender: a sliding window of recent sequence numbers for each
//! (sender, channel, incarnation), as IPsec's anti-replay window does. Senders number each
//! channel separately, so messages sent to other nodes never look like gaps.

use std::{collections::HashMap, time::Duration};

/// How far back (in sequence numbers) out-of-order messages are still accepted.
const WINDOW: u64 = 128;

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
    /// Bit `i` set: `highest - i` was seen.
    seen: u128,
    last_seen_ms: u64,
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
            self.windows.insert(
                key,
                Window {
                    highest: seq,
                    seen: 1,
                    last_seen_ms: now_ms,
                },
            );
            return Verdict::Fresh {
                gap: 0,
                late: false,
            };
        };
        window.last_seen_ms = now_ms;
        if seq > window.highest {
            let shift = seq - window.highest;
            window.seen = if shift >= WINDOW {
                1
            } else {
                (window.seen << shift) | 1
            };
            window.highest = seq;
            return Verdict::Fresh {
                gap: shift - 1,
                late: false,
            };
        }
        let age = window.highest - seq;
        if age >= WINDOW || window.seen & (1 << age) != 0 {
            return Verdict::Replayed;
        }
        window.seen |= 1 << age;
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

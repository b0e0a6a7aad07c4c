//! The fire times of a [`Recurrence`], in ms since the Unix epoch: what the scheduler leader
//! enqueues as slots, and what `stellar tasks schedules` shows as the next run.

use crate::{Error, Recurrence};

/// A [`Recurrence`] checked and ready to answer questions about its fire times.
#[derive(Debug, Clone)]
pub(crate) enum Timetable {
    /// Every this many ms, aligned to the Unix epoch.
    Every(u64),
}

impl Timetable {
    /// The timetable of `recurrence`.
    pub(crate) fn new(recurrence: &Recurrence) -> Result<Self, Error> {
        match recurrence {
            Recurrence::Every { every_ms } => Ok(Self::Every((*every_ms).max(1))),
        }
    }

    /// The latest fire time at or before `ms`.
    pub(crate) fn at_or_before(&self, ms: u64) -> Option<u64> {
        match self {
            Self::Every(every) => Some(ms / every * every),
        }
    }

    /// The latest fire time strictly before `ms`.
    pub(crate) fn before(&self, ms: u64) -> Option<u64> {
        self.at_or_before(ms.checked_sub(1)?)
    }

    /// The first fire time strictly after `ms`.
    pub(crate) fn after(&self, ms: u64) -> Option<u64> {
        match self {
            Self::Every(every) => (ms / every).checked_add(1)?.checked_mul(*every),
        }
    }

    /// Where a schedule no leader enqueued a slot of yet begins, at `now`: the slot under way for
    /// a period (so a new schedule runs at once), the next fire time for a cron expression (a
    /// past fire time of a weekly schedule is not run on creation).
    pub(crate) fn first(&self, now: u64) -> Option<u64> {
        match self {
            Self::Every(_) => self.at_or_before(now),
        }
    }

    /// The fire times at or after `from` and at or before `now`, oldest first: the latest `max`
    /// of them (catch-up is bounded however far back `from` lies).
    pub(crate) fn due(&self, from: u64, now: u64, max: usize) -> Vec<u64> {
        let mut due = Vec::new();
        let mut at = self.at_or_before(now);
        while let Some(time) = at {
            if time < from || due.len() == max {
                break;
            }
            due.push(time);
            at = self.before(time);
        }
        due.reverse();
        due
    }

    /// How long after fire time `at` the next one comes (a day if none does).
    pub(crate) fn gap_after(&self, at: u64) -> u64 {
        self.after(at)
            .map_or(86_400_000, |next| next.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_fires_at_its_multiples() {
        let table = Timetable::new(&Recurrence::Every { every_ms: 1000 }).expect("valid");
        assert_eq!(table.at_or_before(5_999), Some(5_000));
        assert_eq!(table.at_or_before(6_000), Some(6_000));
        assert_eq!(table.before(6_000), Some(5_000));
        assert_eq!(table.after(6_000), Some(7_000));
        assert_eq!(table.after(6_001), Some(7_000));
        assert_eq!(table.first(6_500), Some(6_000));
        assert_eq!(table.due(3_000, 6_500, 10), [3_000, 4_000, 5_000, 6_000]);
        assert_eq!(table.due(0, 6_500, 2), [5_000, 6_000]);
        assert_eq!(table.due(7_000, 6_500, 10), [] as [u64; 0]);
        assert_eq!(table.gap_after(6_000), 1_000);
    }
}

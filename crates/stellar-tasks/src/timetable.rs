//! The fire times of a [`Recurrence`], in ms since the Unix epoch: what the scheduler leader
//! enqueues as slots, and what `stellar tasks schedules` shows as the next run.

use std::str::FromStr;

use croner::Cron;
use jiff::{Timestamp, Zoned, tz::TimeZone};

use crate::{Error, Recurrence, store::now_ms};

/// A [`Recurrence`] checked and ready to answer questions about its fire times.
#[derive(Debug, Clone)]
pub(crate) enum Timetable {
    /// Every this many ms, aligned to the Unix epoch.
    Every(u64),
    /// The times (whole seconds) a cron expression matches in a time zone.
    Cron(Box<(Cron, TimeZone)>),
}

impl Timetable {
    /// The timetable of `recurrence`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRecurrence`] for a cron expression that does not parse or matches no time
    /// from now on, or an unknown time zone, naming the bad part.
    pub(crate) fn new(recurrence: &Recurrence) -> Result<Self, Error> {
        match recurrence {
            Recurrence::Every { every_ms } => Ok(Self::Every((*every_ms).max(1))),
            Recurrence::Cron { cron, tz } => {
                let zone = TimeZone::get(tz).map_err(|err| Error::InvalidRecurrence {
                    reason: format!(
                        "unknown time zone {tz:?} ({err}); give an IANA name such as \
                         Europe/Paris or UTC"
                    ),
                })?;
                let parsed = parse_cron(cron)?;
                let table = Self::Cron(Box::new((parsed, zone)));
                if table.after(now_ms()).is_none() {
                    return Err(Error::InvalidRecurrence {
                        reason: format!("cron expression {cron:?} matches no time from now on"),
                    });
                }
                Ok(table)
            }
        }
    }

    /// The latest fire time at or before `ms`.
    pub(crate) fn at_or_before(&self, ms: u64) -> Option<u64> {
        match self {
            Self::Every(every) => Some(ms / every * every),
            Self::Cron(cron) => {
                let (cron, tz) = &**cron;
                let found = cron.find_previous_occurrence(&zoned(ms, tz)?, true).ok()?;
                millis(&found)
            }
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
            Self::Cron(cron) => {
                let (cron, tz) = &**cron;
                let found = cron.find_next_occurrence(&zoned(ms, tz)?, false).ok()?;
                millis(&found)
            }
        }
    }

    /// Where a schedule no leader enqueued a slot of yet begins, at `now`: the slot under way for
    /// a period (so a new schedule runs at once), the next fire time for a cron expression (a
    /// past fire time of a weekly schedule is not run on creation).
    pub(crate) fn first(&self, now: u64) -> Option<u64> {
        match self {
            Self::Every(_) => self.at_or_before(now),
            Self::Cron(_) => self.after(now),
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

/// `ms` since the epoch in time zone `tz`, at the whole second (fire times are whole seconds).
fn zoned(ms: u64, tz: &TimeZone) -> Option<Zoned> {
    let seconds = i64::try_from(ms / 1000).ok()?;
    Some(Timestamp::from_second(seconds).ok()?.to_zoned(tz.clone()))
}

fn millis(at: &Zoned) -> Option<u64> {
    u64::try_from(at.timestamp().as_millisecond()).ok()
}

/// The names of a cron expression's fields, by how many it has.
fn field_names(count: usize) -> &'static [&'static str] {
    const FIVE: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    const SIX: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    const SEVEN: [&str; 7] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
        "year",
    ];
    match count {
        5 => &FIVE,
        6 => &SIX,
        7 => &SEVEN,
        _ => &[],
    }
}

/// Parses `expression`; an error names the field at fault when one field alone is (the
/// expression parses with that field made `*`).
fn parse_cron(expression: &str) -> Result<Cron, Error> {
    let err = match Cron::from_str(expression) {
        Ok(cron) => return Ok(cron),
        Err(err) => err,
    };
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let names = field_names(fields.len());
    let culprits: Vec<usize> = (0..names.len())
        .filter(|&i| {
            let mut fixed = fields.clone();
            fixed[i] = "*";
            Cron::from_str(&fixed.join(" ")).is_ok()
        })
        .collect();
    let reason = match culprits[..] {
        [i] => format!(
            "invalid cron expression {expression:?}: the {} field {:?} is wrong ({err})",
            names[i], fields[i]
        ),
        _ => format!(
            "invalid cron expression {expression:?} ({err}); it takes 5 fields (minute hour \
             day-of-month month day-of-week), or 6 with seconds first"
        ),
    };
    Err(Error::InvalidRecurrence { reason })
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

    fn ms(rfc3339: &str) -> u64 {
        let at: Timestamp = rfc3339.parse().expect("a time");
        at.as_millisecond() as u64
    }

    fn paris(cron: &str) -> Timetable {
        Timetable::new(&Recurrence::cron(cron, "Europe/Paris")).expect("valid")
    }

    /// Fire times follow the zone's wall clock: 09:00 in Paris is 08:00 UTC in winter and
    /// 07:00 UTC in summer; weekends are skipped.
    #[test]
    fn a_cron_expression_fires_on_the_zones_wall_clock() {
        let table = paris("0 9 * * 1-5");
        // Friday 2026-11-27, then Monday 2026-11-30.
        assert_eq!(
            table.after(ms("2026-11-27T07:00:00Z")),
            Some(ms("2026-11-27T08:00:00Z"))
        );
        assert_eq!(
            table.after(ms("2026-11-27T08:00:00Z")),
            Some(ms("2026-11-30T08:00:00Z"))
        );
        assert_eq!(
            table.after(ms("2026-06-01T00:00:00Z")),
            Some(ms("2026-06-01T07:00:00Z"))
        );
        assert_eq!(
            table.at_or_before(ms("2026-11-30T08:00:00.500Z")),
            Some(ms("2026-11-30T08:00:00Z"))
        );
        assert_eq!(
            table.before(ms("2026-11-30T08:00:00Z")),
            Some(ms("2026-11-27T08:00:00Z"))
        );
        assert_eq!(
            table.first(ms("2026-11-30T08:30:00Z")),
            Some(ms("2026-12-01T08:00:00Z"))
        );
    }

    /// Croner's documented rules across DST in Europe/Paris: on 2026-03-29 02:00 becomes 03:00,
    /// and a daily 02:30 (a fixed time in the gap) runs at the first time after the gap, 03:00
    /// CEST; on 2026-10-25 03:00 becomes 02:00 again, and 02:30 (repeated) runs once, at its
    /// first pass.
    #[test]
    fn daily_fire_times_across_dst_changes_follow_croners_rules() {
        let table = paris("30 2 * * *");
        let mut at = ms("2026-03-27T12:00:00Z");
        let mut spring = Vec::new();
        for _ in 0..4 {
            at = table.after(at).expect("fires");
            spring.push(at);
        }
        assert_eq!(
            spring,
            [
                ms("2026-03-28T02:30:00+01:00"),
                ms("2026-03-29T03:00:00+02:00"),
                ms("2026-03-30T02:30:00+02:00"),
                ms("2026-03-31T02:30:00+02:00"),
            ]
        );
        let mut autumn = Vec::new();
        at = ms("2026-10-24T12:00:00Z");
        for _ in 0..3 {
            at = table.after(at).expect("fires");
            autumn.push(at);
        }
        assert_eq!(
            autumn,
            [
                ms("2026-10-25T02:30:00+02:00"),
                ms("2026-10-26T02:30:00+01:00"),
                ms("2026-10-27T02:30:00+01:00"),
            ]
        );
    }

    /// The slots the leader enqueues, forwards one by one or as a catch-up, are strictly
    /// increasing across both DST changes, and both agree: a half-hourly schedule runs in both
    /// passes of the repeated hour and not in the skipped one.
    #[test]
    fn slots_across_dst_changes_are_strictly_increasing() {
        let table = paris("*/30 * * * *");
        for (from, to, expected) in [
            // 01:00 CET to 05:00 CEST: 3 real hours (02:00-03:00 never happens), 7 slots.
            ("2026-03-29T00:00:00Z", "2026-03-29T03:00:00Z", 7),
            // 01:00 CEST to 03:00 CET: 3 real hours (02:00-03:00 happens twice), 7 slots.
            ("2026-10-24T23:00:00Z", "2026-10-25T02:00:00Z", 7),
        ] {
            let (from, to) = (ms(from), ms(to));
            let mut forwards = vec![from];
            while let Some(next) = table.after(*forwards.last().expect("one")) {
                if next > to {
                    break;
                }
                forwards.push(next);
            }
            assert!(forwards.windows(2).all(|w| w[0] < w[1]), "{forwards:?}");
            assert!(
                forwards.windows(2).all(|w| w[1] - w[0] == 1_800_000),
                "{forwards:?}"
            );
            assert_eq!(forwards.len(), expected);
            assert_eq!(table.due(from, to, 100), forwards, "catch-up agrees");
            assert_eq!(table.due(from, to, 3), forwards[forwards.len() - 3..]);
        }
        // The repeated 02:30 runs in both passes.
        let both = table.due(ms("2026-10-25T00:00:00Z"), ms("2026-10-25T02:00:00Z"), 100);
        assert!(both.contains(&ms("2026-10-25T02:30:00+02:00")), "{both:?}");
        assert!(both.contains(&ms("2026-10-25T02:30:00+01:00")), "{both:?}");
    }

    #[test]
    fn a_bad_expression_or_zone_is_refused_naming_the_bad_part() {
        let reason = |cron: &str, tz: &str| match Timetable::new(&Recurrence::cron(cron, tz)) {
            Err(Error::InvalidRecurrence { reason }) => reason,
            other => panic!("{cron} {tz}: {other:?}"),
        };
        let minute = reason("61 9 * * *", "UTC");
        assert!(minute.contains(r#"the minute field "61""#), "{minute}");
        let weekday = reason("0 9 * * MOO", "UTC");
        assert!(
            weekday.contains(r#"the day-of-week field "MOO""#),
            "{weekday}"
        );
        let short = reason("0 9 *", "UTC");
        assert!(short.contains("5 fields"), "{short}");
        let never = reason("0 0 31 2 *", "UTC");
        assert!(never.contains("matches no time"), "{never}");
        let zone = reason("0 9 * * *", "Europe/Pariss");
        assert!(
            zone.contains(r#"unknown time zone "Europe/Pariss""#),
            "{zone}"
        );
    }
}

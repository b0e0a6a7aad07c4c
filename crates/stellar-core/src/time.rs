//! Wall-clock helpers shared by every crate of the workspace.

use std::{
    hash::{BuildHasher, Hasher},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Milliseconds since the Unix epoch on this machine's clock; 0 if the clock is set before 1970.
///
/// Timestamps on the wire (bus envelopes, membership records, task records) use this unit.
///
/// ```
/// let before = stellar_core::time::now_ms();
/// assert!(stellar_core::time::now_ms() >= before);
/// ```
pub fn now_ms() -> u64 {
    epoch_ms(SystemTime::now())
}

/// `at` in milliseconds since the Unix epoch; 0 for a time before it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// assert_eq!(stellar_core::time::epoch_ms(UNIX_EPOCH + Duration::from_millis(1500)), 1500);
/// ```
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch on this machine's clock; 0 if the clock is set before 1970.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `delay` plus or minus up to `fraction` of it (whole milliseconds), so that many nodes retrying
/// after one failure spread out instead of arriving together. `fraction` is clamped to `0..=1`.
///
/// The offset comes from the clock and the standard library's randomly keyed hasher: good enough
/// to spread retries, not for anything secret.
///
/// ```
/// use std::time::Duration;
/// use stellar_core::time::jitter;
///
/// let delay = jitter(Duration::from_secs(1), 0.2);
/// assert!(delay >= Duration::from_millis(800) && delay <= Duration::from_millis(1200));
/// assert_eq!(jitter(Duration::from_secs(1), 0.0), Duration::from_secs(1));
/// ```
pub fn jitter(delay: Duration, fraction: f64) -> Duration {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let spread = (delay.as_millis() as f64 * fraction) as u64;
    if spread == 0 {
        return delay;
    }
    let offset = random_u64() % (2 * spread + 1);
    (delay + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread))
}

/// A number that differs from call to call: the clock's nanoseconds through a randomly keyed
/// SipHash.
fn random_u64() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_fraction_and_varies() {
        let delay = Duration::from_millis(1000);
        let seen: std::collections::BTreeSet<Duration> =
            (0..200).map(|_| jitter(delay, 0.2)).collect();
        assert!(
            seen.iter().all(|d| (800..=1200).contains(&d.as_millis())),
            "{seen:?}"
        );
        assert!(seen.len() > 1, "jitter never varied");
        assert_eq!(
            jitter(Duration::from_millis(3), 0.2),
            Duration::from_millis(3)
        );
        assert!(jitter(delay, 5.0) <= Duration::from_millis(2000));
        assert_eq!(jitter(delay, f64::NAN), delay);
    }
}

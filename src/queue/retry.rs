//! Retry delays (SPEC §8): about 1m, 5m, 10m, 20m, 40m, then hourly, with jitter.

use std::time::Duration;

const MINUTE: u64 = 60;

/// `(age below, delay)`: the delay for a message whose first attempt was less than `age below`
/// ago. Ages are the sums of the earlier delays, so attempts land near 1m, 6m, 16m, 36m, 76m.
const SCHEDULE: [(u64, u64); 5] = [
    (MINUTE, MINUTE),
    (6 * MINUTE, 5 * MINUTE),
    (16 * MINUTE, 10 * MINUTE),
    (36 * MINUTE, 20 * MINUTE),
    (76 * MINUTE, 40 * MINUTE),
];
/// Once past the schedule: hourly.
const LAST_DELAY: u64 = 60 * MINUTE;
/// Jitter spreads retries by up to this fraction either way, so a burst of messages deferred
/// together does not retry in lockstep.
const JITTER_SPREAD: f64 = 0.1;

/// Delay before the next attempt for a message first tried `age` ago; `jitter` in [0, 1)
/// spreads retries (pass a random number; tests pass fixed ones).
pub fn next_delay(age: Duration, jitter: f64) -> Duration {
    let base = SCHEDULE
        .iter()
        .find(|(below, _)| age < Duration::from_secs(*below))
        .map_or(LAST_DELAY, |(_, delay)| *delay);
    Duration::from_secs(base).mul_f64(1.0 + JITTER_SPREAD * (clamp_jitter(jitter) * 2.0 - 1.0))
}

/// Clamps into [0, 1); NaN counts as 0.5 (no jitter) rather than poisoning the delay.
fn clamp_jitter(jitter: f64) -> f64 {
    if jitter.is_nan() {
        return 0.5;
    }
    jitter.clamp(0.0, 1.0 - f64::EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn schedule_by_age_without_jitter() {
        let cases = [
            (0, 60),
            (59, 60),
            (60, 300),
            (359, 300),
            (360, 600),
            (959, 600),
            (960, 1200),
            (2159, 1200),
            (2160, 2400),
            (4559, 2400),
            (4560, 3600),
            (86_400, 3600),
            (u64::MAX, 3600),
        ];
        for (age, want) in cases {
            assert_eq!(next_delay(secs(age), 0.5), secs(want), "age {age}s");
        }
    }

    #[test]
    fn jitter_is_within_ten_percent() {
        let cases = [
            (0.0, 54.0),
            (0.25, 57.0),
            (0.5, 60.0),
            (0.75, 63.0),
            (0.999_999, 65.999_99),
            // Out of range and NaN are clamped, never wild.
            (-3.0, 54.0),
            (1.0, 66.0),
            (42.0, 66.0),
            (f64::NAN, 60.0),
            (f64::INFINITY, 66.0),
        ];
        for (jitter, want) in cases {
            let got = next_delay(secs(0), jitter).as_secs_f64();
            assert!(
                (got - want).abs() < 1e-3,
                "jitter {jitter}: got {got}, want {want}"
            );
            // [0, 1) maps to [54, 66); nanosecond rounding may reach 66 itself.
            assert!(
                (54.0..=66.0).contains(&got),
                "jitter {jitter}: {got} out of [54, 66]"
            );
        }
    }

    #[test]
    fn hourly_jitter_bounds() {
        assert_eq!(next_delay(secs(10_000), 0.0), secs(3240));
        assert!(next_delay(secs(10_000), 1.0) <= secs(3960));
        assert!(next_delay(secs(10_000), 0.99) < secs(3960));
    }
}

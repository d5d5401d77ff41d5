//! Retry delays (SPEC §8): about 1m, 5m, 10m, 20m, 40m, then hourly, with jitter.

use std::time::Duration;

/// Delay before the next attempt for a message first tried `age` ago; `jitter` in [0, 1)
/// spreads retries (pass a random number; tests pass fixed ones).
pub fn next_delay(age: Duration, jitter: f64) -> Duration {
    todo!("{age:?}{jitter}")
}

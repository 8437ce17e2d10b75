//! Reconnection delays: the server's reconnection time, doubled for each consecutive failure up
//! to a cap, then spread by jitter so that a crowd of clients dropped at once does not come back
//! at once.

use std::time::Duration;

/// The delay before reconnection attempt number `failures` (0 right after a working connection
/// dropped) with base `retry`, capped at `max`, reduced by up to `jitter` (a fraction, 0..=1)
/// according to `random` (uniform in 0..1).
pub fn delay(retry: Duration, failures: u32, max: Duration, jitter: f64, random: f64) -> Duration {
    let factor = 2u32.saturating_pow(failures.min(31));
    let full = retry.saturating_mul(factor).min(max.max(retry));
    let jitter = jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
    full.mul_f64(1.0 - jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_then_caps() {
        let d = |n| delay(100 * MS, n, 1000 * MS, 0.0, 0.5);
        assert_eq!(
            [d(0), d(1), d(2), d(3), d(4), d(40)],
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
    }

    #[test]
    fn a_server_retry_above_the_cap_is_still_honoured() {
        assert_eq!(delay(5000 * MS, 3, 1000 * MS, 0.0, 0.0), 5000 * MS);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for r in [0.0, 0.3, 0.999] {
            let d = delay(1000 * MS, 0, 10_000 * MS, 0.5, r);
            assert!(d <= 1000 * MS && d >= 500 * MS, "{d:?}");
        }
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, 0.5, 1.0), 500 * MS);
    }
}

//! Reconnection delays: the reconnection time, doubled for each consecutive failure up to a cap,
//! then shortened by a random amount (jitter) so that a crowd of clients dropped at the same
//! moment (a hub restart) does not come back at the same moment.

use std::time::Duration;

/// The delay before the next attempt.
///
/// - `retry`: the reconnection time (the server's `retry:`, or the configured default);
/// - `failures`: consecutive failed attempts so far, 0 right after a working connection ended,
///   so that a clean drop waits `retry` exactly as a browser does;
/// - `max`: the cap on growth. It never shortens `retry` itself: a server that asks for a long
///   reconnection time gets it;
/// - `jitter`: the fraction (0..=1) of the delay that may be cut off; anything else, NaN
///   included, is clamped (NaN means no jitter) rather than allowed to panic in `mul_f64`;
/// - `random`: a uniform sample from 0..1, a parameter so that tests are deterministic.
///
/// The result is uniform in `[d * (1 - jitter), d]` where `d = min(retry * 2^failures, max)`.
pub(crate) fn delay(
    retry: Duration,
    failures: u32,
    max: Duration,
    jitter: f64,
    random: f64,
) -> Duration {
    let factor = 2u32.saturating_pow(failures.min(31));
    let full = retry.saturating_mul(factor).min(max.max(retry));
    let cut = unit(jitter) * unit(random);
    // Subtract the cut rather than multiply by `1 - cut`: the f64 round trip can round up, and
    // for a huge delay (a saturated `retry:`) `mul_f64` would panic past `Duration::MAX`.
    let cut = Duration::try_from_secs_f64(full.as_secs_f64() * cut).unwrap_or(full);
    full.saturating_sub(cut)
}

/// Clamps to 0..=1, NaN to 0.
pub(crate) fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_per_failure_then_caps() {
        let d = |n| delay(100 * MS, n, 1000 * MS, 0.0, 0.5);
        assert_eq!(
            [d(0), d(1), d(2), d(3), d(4), d(40), d(u32::MAX)],
            [
                100 * MS,
                200 * MS,
                400 * MS,
                800 * MS,
                1000 * MS,
                1000 * MS,
                1000 * MS
            ]
        );
    }

    #[test]
    fn a_server_retry_above_the_cap_is_still_honoured() {
        assert_eq!(delay(5000 * MS, 3, 1000 * MS, 0.0, 0.0), 5000 * MS);
    }

    #[test]
    fn zero_retry_stays_zero() {
        assert_eq!(
            delay(Duration::ZERO, 5, 1000 * MS, 0.5, 0.5),
            Duration::ZERO
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for r in [0.0, 0.3, 0.999] {
            let d = delay(1000 * MS, 0, 10_000 * MS, 0.5, r);
            assert!(d <= 1000 * MS && d >= 500 * MS, "{d:?}");
        }
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, 0.5, 0.0), 1000 * MS);
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, 0.5, 1.0), 500 * MS);
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, 0.25, 1.0), 750 * MS);
        // With the same sample, the cut scales with the (grown) delay.
        assert_eq!(delay(1000 * MS, 2, 10_000 * MS, 0.5, 1.0), 2000 * MS);
    }

    #[test]
    fn out_of_range_inputs_do_not_panic() {
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, f64::NAN, 1.0), 1000 * MS);
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, 7.0, 1.0), Duration::ZERO);
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, -1.0, 1.0), 1000 * MS);
        assert_eq!(delay(1000 * MS, 0, 10_000 * MS, 0.5, f64::NAN), 1000 * MS);
        // A saturated `retry:` (u64::MAX ms) and many failures.
        let huge = Duration::from_millis(u64::MAX);
        assert_eq!(delay(huge, 100, 60_000 * MS, 0.0, 0.0), huge);
        assert!(delay(huge, 100, 60_000 * MS, 0.5, 0.9) <= huge);
        assert_eq!(
            delay(Duration::MAX, 3, Duration::MAX, 0.0, 0.5),
            Duration::MAX
        );
        assert!(delay(Duration::MAX, 3, Duration::MAX, 1.0, 0.999) < Duration::MAX);
    }
}

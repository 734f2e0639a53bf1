//! The backoff of retried calls: exponential with full jitter (Notify calls', and the
//! proxy's).

use std::time::Duration;

use rand::Rng;

/// Retry policy of Notify calls: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry.
    pub base: Duration,
    /// Largest backoff.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempt`: uniform in
    /// `[0, min(cap, base × 2^(attempt-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.cap).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        for attempt in 1..40 {
            let ceiling = (100u64 << (attempt - 1).min(20)).min(1000);
            for _ in 0..20 {
                assert!(policy.backoff(attempt).as_millis() as u64 <= ceiling);
            }
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| policy.backoff(5).as_millis()).collect();
        assert!(spread.len() > 5, "backoff is not jittered: {spread:?}");
    }
}

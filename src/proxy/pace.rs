//! Per-account pacing of proxied calls: `proxy.per_minute` upstream attempts per account
//! (a GCRA from `governor`, bursts of up to `proxy.burst`), every retry included.
//!
//! A call over the pace waits for its turn instead of being refused, so a burst reaches
//! Zendesk spread out; only a call that would wait longer than `proxy.max_wait_ms` is
//! answered 429. The pace is per process: Zendesk's own general rate limit is the real
//! bound, and its 429s are retried or passed back by [`super::retry`].

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The pacer of every account.
pub struct Pacer {
    limiter: DefaultKeyedRateLimiter<String>,
    max_wait: Duration,
}

/// A call waited longer than the pacer allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBusy {
    /// How long it waited.
    pub waited: Duration,
}

impl Pacer {
    /// `per_minute` attempts per account and minute, bursts of `burst`; waits at most
    /// `max_wait`. Zero values are taken as 1.
    pub fn new(per_minute: u32, burst: u32, max_wait: Duration) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Pacer {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            max_wait,
        }
    }

    /// Waits until `account` may start an attempt, and takes that slot.
    pub async fn acquire(&self, account: &str) -> Result<(), TooBusy> {
        let key = account.to_string();
        if self.limiter.check_key(&key).is_ok() {
            return Ok(());
        }
        match tokio::time::timeout(self.max_wait, self.limiter.until_key_ready(&key)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(TooBusy {
                waited: self.max_wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn bursts_are_smoothed_by_waiting() {
        // 600 per minute = one every 100 ms, bursts of 2.
        let pacer = Pacer::new(600, 2, Duration::from_secs(5));
        let started = Instant::now();
        for _ in 0..5 {
            pacer.acquire("acme").await.unwrap();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(280), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        // Another account is not delayed by acme's backlog.
        let started = Instant::now();
        pacer.acquire("beta").await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_wait_over_the_limit_is_refused() {
        let pacer = Pacer::new(1, 1, Duration::from_millis(50));
        pacer.acquire("acme").await.unwrap();
        assert!(pacer.acquire("acme").await.is_err());
    }
}

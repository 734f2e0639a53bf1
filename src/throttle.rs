//! Per-client ingress throttling: a token bucket (GCRA, `governor`) per client key and
//! per webhook, in each process. A request over the budget gets 429 with `Retry-After`.
//!
//! The budget is per process on purpose: it protects the process and Redis from one noisy
//! caller; the global Notify budget per account is the queue's business.

use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::StatusCode;

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};

/// The limiters of every client and webhook.
pub struct Throttle {
    limiters: HashMap<String, DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limited", &self.limiters.len())
            .finish()
    }
}

fn quota(per_second: u32, burst: Option<u32>) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Throttle {
    /// Limiters for the clients and webhooks of `config`.
    pub fn from_config(config: &Config) -> Self {
        let t = &config.throttle;
        let mut limiters = HashMap::new();
        for client in &config.clients {
            let rate = client.requests_per_second.unwrap_or(t.requests_per_second);
            if let Some(q) = quota(rate, t.burst) {
                limiters.insert(format!("client:{}", client.name), RateLimiter::direct(q));
            }
        }
        if let Some(q) = quota(t.requests_per_second, t.burst) {
            for hook in &config.webhooks {
                limiters.insert(format!("webhook:{}", hook.name), RateLimiter::direct(q));
            }
        }
        Throttle {
            limiters,
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = self.limiters.get(key) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many requests from this client; slow down",
            )
            .with_retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// Takes one request from client `name`'s budget, or answers 429.
    pub fn client(&self, name: &str) -> Result<(), ApiError> {
        self.check(&format!("client:{name}"))
    }

    /// Takes one request from webhook `name`'s budget, or answers 429.
    pub fn webhook(&self, name: &str) -> Result<(), ApiError> {
        self.check(&format!("webhook:{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_burst_with_retry_after() {
        let config = Config::from_toml_with_env(
            r#"
[throttle]
requests_per_second = 1
burst = 2
[[clients]]
name = "a"
key = "aaaaaaaaaaaaaaaaaaaa"
[[clients]]
name = "free"
key = "bbbbbbbbbbbbbbbbbbbb"
requests_per_second = 0
"#,
            "t.toml",
            &[],
        )
        .unwrap();
        let t = Throttle::from_config(&config);
        assert!(t.client("a").is_ok());
        assert!(t.client("a").is_ok());
        let e = t.client("a").unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
        for _ in 0..100 {
            assert!(t.client("free").is_ok());
        }
    }
}

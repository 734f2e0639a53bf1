//! Per-client ingress throttling: a token bucket (GCRA, `governor`) per client key and
//! per webhook, in each process. A request over the budget gets 429 with `Retry-After`.
//!
//! The budget is per process on purpose: it protects the process and Redis from one noisy
//! caller; the global Notify budget per account is the queue's business.

use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::Config;

/// A request over its caller's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the caller may try again, in whole seconds (at least 1).
    pub retry_after_secs: u64,
}

impl std::fmt::Display for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("too many requests from this client; slow down")
    }
}

impl std::error::Error for Throttled {}

/// The limiters of every client and webhook.
pub struct Throttle {
    clients: HashMap<String, DefaultDirectRateLimiter>,
    webhooks: HashMap<String, DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("clients", &self.clients.len())
            .field("webhooks", &self.webhooks.len())
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
        let mut clients = HashMap::new();
        for client in &config.clients {
            let rate = client.requests_per_second.unwrap_or(t.requests_per_second);
            if let Some(q) = quota(rate, t.burst) {
                clients.insert(client.name.clone(), RateLimiter::direct(q));
            }
        }
        let mut webhooks = HashMap::new();
        if let Some(q) = quota(t.requests_per_second, t.burst) {
            for hook in &config.webhooks {
                webhooks.insert(hook.name.clone(), RateLimiter::direct(q));
            }
        }
        Throttle {
            clients,
            webhooks,
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, limiter: Option<&DefaultDirectRateLimiter>) -> Result<(), Throttled> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Throttled {
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            }
        })
    }

    /// Takes one request from client `name`'s budget, or says when to try again.
    pub fn client(&self, name: &str) -> Result<(), Throttled> {
        self.check(self.clients.get(name))
    }

    /// Takes one request from webhook `name`'s budget, or says when to try again.
    pub fn webhook(&self, name: &str) -> Result<(), Throttled> {
        self.check(self.webhooks.get(name))
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
[[accounts]]
id = "acme"
subdomain = "acme"
api_token = "t"
email = "ops@acme.example"
[[webhooks]]
name = "hook"
account = "acme"
signature = "none"
app_id = 1
event = "e"
"#,
            "t.toml",
            &[],
        )
        .unwrap();
        let t = Throttle::from_config(&config);
        assert!(t.client("a").is_ok());
        assert!(t.client("a").is_ok());
        assert_eq!(
            t.client("a"),
            Err(Throttled {
                retry_after_secs: 1
            })
        );
        for _ in 0..100 {
            assert!(t.client("free").is_ok());
        }
        // Webhooks have budgets of their own, at the default rate; an unknown name none.
        assert!(t.webhook("hook").is_ok());
        assert!(t.webhook("hook").is_ok());
        assert_eq!(
            t.webhook("hook"),
            Err(Throttled {
                retry_after_secs: 1
            })
        );
        assert!(t.webhook("unknown").is_ok());
    }
}

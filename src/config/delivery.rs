//! `[delivery]`: the Notify budget per account, retries, timeouts and retention.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::rules::positive;

/// `[delivery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Default per-account Notify budget per window.
    pub notify_per_minute: u32,
    /// Length of the rolling window, in seconds.
    pub notify_window_seconds: u64,
    /// Attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// Time to live of an event that names none.
    pub default_ttl_seconds: u64,
    /// Undelivered Notify calls an account may hold before ingress answers 429.
    pub max_queue_depth: u64,
    /// Timeout of one upstream call, in milliseconds.
    pub upstream_timeout_ms: u64,
    /// Upstream calls in flight per process.
    pub concurrency: usize,
    /// First retry delay (before jitter), in milliseconds.
    pub retry_base_ms: u64,
    /// Largest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// How long a claimed event stays leased to a process before another may take it, in
    /// milliseconds. Defaults to the upstream timeout plus 5 s.
    pub lease_ms: Option<u64>,
    /// Most Notify calls of one account leased together (a lease group), when its window
    /// has room for as many: sent one after another, in order, by one sender. 1: one call
    /// of an account in flight at a time.
    pub lease_group_max: u32,
    /// Idle polling interval of the worker, in milliseconds, while it is not notified of
    /// new work (the embedded backend, or Redis pub/sub down).
    pub poll_interval_ms: u64,
    /// Idle polling interval of the worker while Redis pub/sub notifies it of new work
    /// stored by any process, in milliseconds: a fallback (timed work wakes the worker
    /// when due), which also paces the retention sweeps of an idle queue.
    pub idle_poll_ms: u64,
    /// Margin added to the rolling window, in milliseconds. Each call counts from when its
    /// answer arrived, so transit time is already covered; the margin only absorbs clock
    /// granularity and differences in how upstream stamps arrivals. Defaults to 0.1% of
    /// the window, between 2 and 50 ms.
    pub window_margin_ms: Option<u64>,
    /// Whether the delivery worker runs in this process.
    pub enabled: bool,
    /// How long a dead letter keeps its body for inspection and replay, in seconds; then
    /// it is dropped.
    pub dead_letter_retention_seconds: u64,
    /// How long a finished event's record stays readable, in seconds.
    pub event_retention_seconds: u64,
    /// How long the record of an account with no events, no dead letters and no hold is
    /// kept after it became idle (its counters, limit and entry in `GET /v1/queues`), in
    /// seconds.
    pub account_retention_seconds: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            notify_per_minute: 100,
            notify_window_seconds: 60,
            max_attempts: 10,
            default_ttl_seconds: 86_400,
            max_queue_depth: 100_000,
            upstream_timeout_ms: 10_000,
            concurrency: 256,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            lease_ms: None,
            lease_group_max: 8,
            poll_interval_ms: 20,
            idle_poll_ms: 10_000,
            window_margin_ms: None,
            enabled: true,
            dead_letter_retention_seconds: 604_800,
            event_retention_seconds: 86_460,
            account_retention_seconds: 604_800,
        }
    }
}

impl DeliveryConfig {
    /// The upstream call timeout.
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    /// The lease given to a claimed event.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(
            self.lease_ms
                .unwrap_or(self.upstream_timeout_ms.saturating_add(5_000)),
        )
    }

    /// How long dead letters, finished events and idle accounts' records are kept, in
    /// milliseconds.
    pub fn retention(&self) -> crate::queue::Retention {
        let ms = |s: u64| s.saturating_mul(1000);
        crate::queue::Retention {
            dead_letters_ms: ms(self.dead_letter_retention_seconds),
            events_ms: ms(self.event_retention_seconds),
            accounts_ms: ms(self.account_retention_seconds),
        }
    }

    /// The rolling window, in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.notify_window_seconds.saturating_mul(1000)
    }

    /// The margin added to the window, in milliseconds.
    pub fn margin_ms(&self) -> u64 {
        self.window_margin_ms
            .unwrap_or_else(|| (self.window_ms() / 1000).clamp(2, 50))
    }
}

/// Longest retention a `delivery.*_retention_seconds` key takes: 100 years. The scripts
/// hand the milliseconds to Redis's `PEXPIRE` and compute with them as Lua numbers; far
/// larger values would overflow both.
const MAX_RETENTION_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// A retention key: at least a second, at most [`MAX_RETENTION_SECONDS`].
fn retention(key: &str, seconds: u64) -> Result<(), ConfigError> {
    positive(key, seconds)?;
    if seconds > MAX_RETENTION_SECONDS {
        return Err(ConfigError::invalid(
            key,
            format!("must be at most {MAX_RETENTION_SECONDS} (100 years)"),
        ));
    }
    Ok(())
}

impl DeliveryConfig {
    /// Checks the budget, attempts and sizes, then the timings.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        self.check_budget()?;
        self.check_timing()
    }

    /// The Notify budget and window, attempts, time to live and queue depth.
    fn check_budget(&self) -> Result<(), ConfigError> {
        positive("delivery.notify_per_minute", self.notify_per_minute.into())?;
        if self.notify_per_minute > 100_000 {
            return Err(ConfigError::invalid(
                "delivery.notify_per_minute",
                "must be at most 100000",
            ));
        }
        positive("delivery.notify_window_seconds", self.notify_window_seconds)?;
        positive("delivery.max_attempts", self.max_attempts.into())?;
        positive("delivery.default_ttl_seconds", self.default_ttl_seconds)?;
        positive("delivery.max_queue_depth", self.max_queue_depth)
    }

    /// Timeouts, retention, concurrency, retry delays, polling and the lease.
    fn check_timing(&self) -> Result<(), ConfigError> {
        positive("delivery.upstream_timeout_ms", self.upstream_timeout_ms)?;
        retention(
            "delivery.dead_letter_retention_seconds",
            self.dead_letter_retention_seconds,
        )?;
        retention(
            "delivery.event_retention_seconds",
            self.event_retention_seconds,
        )?;
        retention(
            "delivery.account_retention_seconds",
            self.account_retention_seconds,
        )?;
        positive("delivery.concurrency", self.concurrency as u64)?;
        if !(1..=64).contains(&self.lease_group_max) {
            return Err(ConfigError::invalid(
                "delivery.lease_group_max",
                "must be from 1 to 64",
            ));
        }
        positive("delivery.retry_base_ms", self.retry_base_ms)?;
        positive("delivery.poll_interval_ms", self.poll_interval_ms)?;
        positive("delivery.idle_poll_ms", self.idle_poll_ms)?;
        if self.retry_max_ms < self.retry_base_ms {
            return Err(ConfigError::invalid(
                "delivery.retry_max_ms",
                "must be at least delivery.retry_base_ms",
            ));
        }
        if self
            .lease_ms
            .is_some_and(|lease| lease <= self.upstream_timeout_ms)
        {
            return Err(ConfigError::invalid(
                "delivery.lease_ms",
                "must be longer than delivery.upstream_timeout_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{env, err, BASE};
    use crate::config::Config;

    #[test]
    fn bad_values_are_named() {
        let msg = err(&format!("{BASE}\n[delivery]\nmax_attempts = 0\n"), &env());
        assert!(msg.starts_with("delivery.max_attempts"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[delivery]\nretry_base_ms = 10\nretry_max_ms = 5\n"),
            &env(),
        );
        assert!(msg.starts_with("delivery.retry_max_ms"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[delivery]\nupstream_timeout_ms = 100\nlease_ms = 100\n"),
            &env(),
        );
        assert!(msg.starts_with("delivery.lease_ms"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[delivery]\nevent_retention_seconds = 18446744073709551\n"),
            &env(),
        );
        assert!(msg.starts_with("delivery.event_retention_seconds"), "{msg}");
        assert!(msg.contains("at most 3153600000"), "{msg}");
        for bad in [0, 65] {
            let msg = err(
                &format!("{BASE}\n[delivery]\nlease_group_max = {bad}\n"),
                &env(),
            );
            assert!(msg.starts_with("delivery.lease_group_max"), "{msg}");
            assert!(msg.contains("from 1 to 64"), "{msg}");
        }
    }

    #[test]
    fn derived_timings_follow_the_keys() {
        let config = Config::from_toml_with_env(BASE, "test.toml", &env()).unwrap();
        assert_eq!(config.delivery.margin_ms(), 50);
        assert_eq!(config.delivery.lease().as_millis(), 15_000);
        assert_eq!(config.delivery.retention().events_ms, 86_460_000);
    }
}

//! `[proxy]`: attempts, pacing and limits of the Apps API proxy.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::rules::positive;

/// `[proxy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Attempts of one proxied call (the first included).
    pub max_attempts: u32,
    /// Largest request body buffered for the proxy (so that it can be resent); larger
    /// requests get 413 before upstream is touched.
    pub max_body_bytes: usize,
    /// Account used when neither the path nor the `Host` names one.
    pub default_account: Option<String>,
    /// Proxied upstream calls per account and minute, retries included; a burst above it
    /// waits for its turn instead of being refused.
    pub per_minute: u32,
    /// Calls an idle account may start at once before pacing spaces them out.
    pub burst: u32,
    /// Longest a call waits for its pacing turn before it is answered 429, in milliseconds.
    pub max_wait_ms: u64,
    /// Timeout of one upstream attempt (connect, send, whole answer), in milliseconds.
    pub upstream_timeout_ms: u64,
    /// First retry delay (before jitter), in milliseconds.
    pub retry_base_ms: u64,
    /// Largest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Longest upstream `Retry-After` the proxy waits out itself, in seconds; a longer one
    /// is answered to the caller with upstream's status and `Retry-After`.
    pub retry_after_cap_seconds: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            max_body_bytes: 32 * 1024 * 1024,
            default_account: None,
            per_minute: 400,
            burst: 20,
            max_wait_ms: 30_000,
            upstream_timeout_ms: 30_000,
            retry_base_ms: 200,
            retry_max_ms: 5_000,
            retry_after_cap_seconds: 10,
        }
    }
}

impl ProxyConfig {
    /// The timeout of one upstream attempt.
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }
}

impl ProxyConfig {
    /// Checks attempts, sizes, pacing and retry delays.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive("proxy.max_attempts", self.max_attempts.into())?;
        if self.max_attempts > 20 {
            return Err(ConfigError::invalid(
                "proxy.max_attempts",
                "must be at most 20",
            ));
        }
        positive("proxy.max_body_bytes", self.max_body_bytes as u64)?;
        positive("proxy.per_minute", self.per_minute.into())?;
        positive("proxy.burst", self.burst.into())?;
        positive("proxy.upstream_timeout_ms", self.upstream_timeout_ms)?;
        positive("proxy.retry_base_ms", self.retry_base_ms)?;
        if self.retry_max_ms < self.retry_base_ms {
            return Err(ConfigError::invalid(
                "proxy.retry_max_ms",
                "must be at least proxy.retry_base_ms",
            ));
        }
        if self.retry_after_cap_seconds > 3600 {
            return Err(ConfigError::invalid(
                "proxy.retry_after_cap_seconds",
                "must be at most 3600",
            ));
        }
        Ok(())
    }

    /// `default_account` names a configured account (of `accounts`, their ids).
    pub(super) fn check_default_account(
        &self,
        accounts: &HashSet<&str>,
    ) -> Result<(), ConfigError> {
        match &self.default_account {
            Some(default) if !accounts.contains(default.as_str()) => Err(ConfigError::invalid(
                "proxy.default_account",
                format!("unknown account {default:?}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{env, err, BASE};
    use crate::config::Config;

    #[test]
    fn proxy_keys_are_typed_and_checked() {
        let text =
            format!("{BASE}\n[proxy]\nper_minute = 60\nburst = 2\nretry_after_cap_seconds = 5\n");
        let config = Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        assert_eq!(config.proxy.per_minute, 60);
        assert_eq!(config.proxy.burst, 2);
        assert_eq!(config.proxy.retry_after_cap_seconds, 5);
        let msg = err(&format!("{BASE}\n[proxy]\nper_minute = 0\n"), &env());
        assert!(msg.starts_with("proxy.per_minute"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[proxy]\nretry_base_ms = 10\nretry_max_ms = 5\n"),
            &env(),
        );
        assert!(msg.starts_with("proxy.retry_max_ms"), "{msg}");
        let msg = err(&format!("{BASE}\n[proxy]\npace = 1\n"), &env());
        assert!(msg.contains("pace"), "{msg}");
    }

    #[test]
    fn the_default_account_must_be_configured() {
        let text = format!("{BASE}\n[proxy]\ndefault_account = \"acme\"\n");
        Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        let msg = err(
            &format!("{BASE}\n[proxy]\ndefault_account = \"nope\"\n"),
            &env(),
        );
        assert_eq!(msg, "proxy.default_account: unknown account \"nope\"");
    }
}

//! `[metrics]`: the labels of the Prometheus series and the dashboard's history.

use serde::Deserialize;

use super::error::ConfigError;
use super::rules::positive;

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Series carry an `account` label only while the gateway knows at most this many
    /// accounts; aggregate series (no `account` label) are always exported.
    pub per_account_max: usize,
    /// Seconds between two points of the dashboard's history (`GET /v1/history`).
    pub history_interval_seconds: u64,
    /// Most accounts with a history ring at a time.
    pub history_accounts_max: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            per_account_max: 100,
            history_interval_seconds: 10,
            history_accounts_max: 1000,
        }
    }
}

impl MetricsConfig {
    /// Checks the history's interval.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        positive(
            "metrics.history_interval_seconds",
            self.history_interval_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{env, err, BASE};

    #[test]
    fn the_history_interval_is_checked() {
        let mut env = env();
        env.push((
            "ZENRELAY__METRICS__HISTORY_INTERVAL_SECONDS".into(),
            "0".into(),
        ));
        let msg = err(BASE, &env);
        assert!(msg.starts_with("metrics.history_interval_seconds"), "{msg}");
    }
}

//! `[[clients]]` and `[throttle]`: the internal callers, the accounts each key reaches (its
//! scope), and how fast each may call.

use std::collections::HashSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::ConfigError;

/// One `[[clients]]` entry: an internal caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Name shown in logs and metrics.
    pub name: String,
    /// The key the caller presents as `Authorization: Bearer KEY`.
    pub key: SecretString,
    /// Account ids this key reaches; `"*"` reaches all.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Whether the key may use the admin endpoints.
    #[serde(default)]
    pub admin: bool,
    /// Per-client override of `throttle.requests_per_second` (0 turns throttling off for
    /// this client).
    #[serde(default)]
    pub requests_per_second: Option<u32>,
}

/// `[throttle]`: requests each client may make per second at ingress (a token bucket per
/// client and process, via `governor`); beyond it, 429 with `Retry-After`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Sustained requests per second per client; 0 turns throttling off.
    pub requests_per_second: u32,
    /// Requests a client may make at once after being idle; defaults to one second's worth.
    pub burst: Option<u32>,
}

/// Checks every client: a unique name, a unique key of at least 16 characters, and a scope
/// of configured account ids (`accounts`) or `"*"`.
pub(super) fn check_clients(
    clients: &[ClientConfig],
    accounts: &HashSet<&str>,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, client) in clients.iter().enumerate() {
        let key = |field: &str| format!("clients[{i}].{field}");
        if client.name.is_empty() || !names.insert(client.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                "must be non-empty and unique",
            ));
        }
        if client.key.expose_secret().len() < 16 {
            return Err(ConfigError::invalid(
                key("key"),
                "must be at least 16 characters",
            ));
        }
        if !keys.insert(client.key.expose_secret()) {
            return Err(ConfigError::invalid(
                key("key"),
                "is used by another client",
            ));
        }
        for (j, account) in client.accounts.iter().enumerate() {
            if account != "*" && !accounts.contains(account.as_str()) {
                return Err(ConfigError::invalid(
                    format!("clients[{i}].accounts[{j}]"),
                    format!("unknown account {account:?}"),
                ));
            }
        }
    }
    Ok(())
}

impl ThrottleConfig {
    /// Checks the burst.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.burst == Some(0) {
            return Err(ConfigError::invalid(
                "throttle.burst",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{env, err, BASE};

    #[test]
    fn clients_are_checked() {
        let text = BASE.replace("accounts = [\"acme\"]", "accounts = [\"nope\"]");
        assert!(err(&text, &env()).starts_with("clients[0].accounts[0]"));
        let short = vec![
            ("ACME_TOKEN".to_string(), "tok-123".to_string()),
            ("BILLING_KEY".to_string(), "short".to_string()),
        ];
        assert!(err(BASE, &short).starts_with("clients[0].key: must be at least 16"));
        let twice =
            format!("{BASE}\n[[clients]]\nname = \"billing\"\nkey = \"another-key-0123456789\"\n");
        assert!(err(&twice, &env()).starts_with("clients[1].name"));
        let same_key =
            format!("{BASE}\n[[clients]]\nname = \"other\"\nkey = \"${{BILLING_KEY}}\"\n");
        let msg = err(&same_key, &env());
        assert_eq!(msg, "clients[1].key: is used by another client");
    }

    #[test]
    fn the_throttle_burst_is_checked() {
        let msg = err(
            &format!("{BASE}\n[throttle]\nrequests_per_second = 5\nburst = 0\n"),
            &env(),
        );
        assert!(msg.starts_with("throttle.burst"), "{msg}");
    }
}

//! `[[accounts]]` and `[runtime_accounts]`: the Zendesk accounts the gateway delivers to,
//! and the sealing of those registered at runtime.

use std::collections::HashSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::ConfigError;
use super::rules::{positive, valid_name};
use crate::seal::Sealer;

/// One `[[accounts]]` entry: a Zendesk account and its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The gateway's name for the account (used in URLs).
    pub id: String,
    /// Zendesk subdomain: upstream is `https://{subdomain}.zendesk.com`.
    pub subdomain: String,
    /// Upstream base URL overriding the one derived from `subdomain`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Extra `Host` names routed to this account by the proxy.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The Zendesk user the credentials belong to (Basic auth).
    #[serde(default)]
    pub email: Option<String>,
    /// API token: Basic `email/token:TOKEN`.
    #[serde(default)]
    pub api_token: Option<SecretString>,
    /// OAuth access token: `Bearer TOKEN`.
    #[serde(default)]
    pub oauth_token: Option<SecretString>,
    /// Password: Basic `email:password`.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Per-account override of `delivery.notify_per_minute`.
    #[serde(default)]
    pub notify_per_minute: Option<u32>,
}

impl AccountConfig {
    /// The upstream base URL, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("https://{}.zendesk.com", self.subdomain),
        }
    }

    /// Checks the fields of one account (not its id); the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.subdomain.is_empty()
            || self.subdomain.len() > 63
            || !self
                .subdomain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(("subdomain", "must be letters, digits and '-'".into()));
        }
        if let Some(url) = &self.base_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return Err(("base_url", "must be an http(s) URL".into())),
            }
        }
        let creds = [
            self.api_token.is_some(),
            self.oauth_token.is_some(),
            self.password.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if creds != 1 {
            return Err((
                "api_token",
                "exactly one of api_token, oauth_token or password must be set".into(),
            ));
        }
        if (self.api_token.is_some() || self.password.is_some())
            && self.email.as_deref().unwrap_or("").is_empty()
        {
            return Err(("email", "is required with api_token or password".into()));
        }
        if let Some(limit) = self.notify_per_minute {
            if limit == 0 || limit > 100_000 {
                return Err(("notify_per_minute", "must be between 1 and 100000".into()));
            }
        }
        Ok(())
    }
}

/// Checks every account (see [`AccountConfig::check`]) and that ids are valid and unique;
/// returns the ids.
pub(super) fn check_accounts(accounts: &[AccountConfig]) -> Result<HashSet<&str>, ConfigError> {
    let mut ids = HashSet::new();
    for (i, account) in accounts.iter().enumerate() {
        let key = |field: &str| format!("accounts[{i}].{field}");
        if !valid_name(&account.id) {
            return Err(ConfigError::invalid(
                key("id"),
                "must be 1-64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        if !ids.insert(account.id.as_str()) {
            return Err(ConfigError::invalid(
                key("id"),
                format!("duplicate account id {:?}", account.id),
            ));
        }
        account
            .check()
            .map_err(|(field, message)| ConfigError::invalid(key(field), message))?;
    }
    Ok(ids)
}

/// `[runtime_accounts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeAccountsConfig {
    /// 32-byte key, base64, encrypting runtime accounts' credentials in Redis
    /// (XChaCha20-Poly1305). Without it, runtime accounts cannot be created or used.
    pub encryption_key: Option<SecretString>,
    /// How long a process caches a runtime account lookup, in milliseconds; changes made
    /// by another process are seen after at most this long.
    pub cache_ms: u64,
    /// The sealer of `encryption_key`, built by validation.
    #[serde(skip)]
    sealer: Option<Sealer>,
}

impl Default for RuntimeAccountsConfig {
    fn default() -> Self {
        Self {
            encryption_key: None,
            cache_ms: 2000,
            sealer: None,
        }
    }
}

impl RuntimeAccountsConfig {
    /// The sealer validation built from `encryption_key`; `None` when no key is set
    /// (runtime accounts are off).
    pub fn sealer(&self) -> Result<Option<&Sealer>, ConfigError> {
        match (&self.encryption_key, &self.sealer) {
            (None, _) => Ok(None),
            (Some(_), Some(sealer)) => Ok(Some(sealer)),
            (Some(_), None) => Err(ConfigError::not_built("runtime_accounts.encryption_key")),
        }
    }

    /// Builds the sealer of `encryption_key` (the key is decoded here only) and checks
    /// the cache's lifetime.
    pub(super) fn build_sealer(&mut self) -> Result<(), ConfigError> {
        self.sealer = match &self.encryption_key {
            None => None,
            Some(key) => Some(Sealer::new(key.expose_secret()).map_err(|_| {
                ConfigError::invalid(
                    "runtime_accounts.encryption_key",
                    "must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)",
                )
            })?),
        };
        positive("runtime_accounts.cache_ms", self.cache_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{env, err, BASE};
    use crate::config::Config;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn account_credentials_are_checked() {
        let text = BASE.replace("api_token = \"${ACME_TOKEN}\"", "");
        assert!(err(&text, &env()).starts_with("accounts[0].api_token"));
        let text = BASE.replace("email = \"ops@acme.example\"", "");
        assert!(err(&text, &env()).starts_with("accounts[0].email"));
        let text = BASE.replace("id = \"acme\"", "id = \"a/b\"");
        assert!(err(&text, &env()).starts_with("accounts[0].id"));
    }

    #[test]
    fn the_encryption_key_is_decoded_into_the_sealer() {
        let msg = err(
            &format!("{BASE}\n[runtime_accounts]\nencryption_key = \"c2hvcnQ=\"\n"),
            &env(),
        );
        assert!(msg.starts_with("runtime_accounts.encryption_key"), "{msg}");
        let text = format!("{BASE}\n[runtime_accounts]\nencryption_key = \"{KEY}\"\n");
        let config = Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        let sealer = config.runtime_accounts.sealer().unwrap().expect("a sealer");
        let sealed = sealer.seal(b"secret", "acme").unwrap();
        let other = Sealer::new(KEY).unwrap();
        assert_eq!(other.open(&sealed, "acme").unwrap(), b"secret");
        assert!(!format!("{config:?}").contains("AAECAwQF"));
        assert!(Config::default()
            .runtime_accounts
            .sealer()
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_unvalidated_key_has_no_sealer() {
        let mut config = Config::default();
        config.runtime_accounts.encryption_key = Some(SecretString::from(KEY));
        let message = config.runtime_accounts.sealer().unwrap_err().to_string();
        assert!(
            message.starts_with("runtime_accounts.encryption_key: not built"),
            "{message}"
        );
    }
}

//! Typed, layered configuration.
//!
//! Loading order: built-in defaults → the TOML file → `ZENRELAY__SECTION__KEY=value`
//! environment overrides → `${VAR}` interpolation in string values → [`Config::validate`].
//! Each command reads only the tables it uses (its [`Scope`]): the others are dropped before
//! overrides and interpolation, so a variable only another command needs cannot stop it.
//! Unknown keys and invalid values are errors that name the key (`delivery.max_attempts`,
//! `accounts[1].api_token`, ...). Secrets are [`SecretString`](secrecy::SecretString)s:
//! they print as `[REDACTED]` and are exposed only where an HTTP header is built.
//!
//! Validation also builds what the runtime takes from the config, once: each webhook's
//! decoded secrets and compiled schema ([`WebhookConfig::parts`]), the runtime accounts'
//! sealer ([`RuntimeAccountsConfig::sealer`]) and the listener's TLS material
//! ([`ServerConfig::loaded_tls`]). None of them prints its secret.
//!
//! # Layout
//!
//! - `load`: [`Config`], finding and reading the file, [`Scope`], deserialization.
//! - `env`: environment overrides and `${VAR}` interpolation.
//! - `validate`: [`Config::validate`], its steps in order.
//! - `rules`: rules several tables share ([`valid_name`], positive numbers).
//! - `error`: [`ConfigError`].
//! - `server`, `redis`, `delivery`, `proxy`, `log`, `metrics`: one table each.
//! - `accounts`: `[[accounts]]` and `[runtime_accounts]` (the sealer).
//! - `clients`: `[[clients]]`, the accounts each key reaches, and `[throttle]`.
//! - `webhooks`: `[[webhooks]]`, their secrets and schemas.
//! - `sim`: `[sim]`, the simulator's settings (feature `sim`).

mod accounts;
mod clients;
mod delivery;
mod env;
mod error;
mod load;
mod log;
mod metrics;
mod proxy;
mod redis;
mod rules;
mod server;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(test)]
mod testing;
mod validate;
mod webhooks;

pub use accounts::{AccountConfig, RuntimeAccountsConfig};
pub use clients::{ClientConfig, ThrottleConfig};
pub use delivery::DeliveryConfig;
pub use env::ENV_PREFIX;
pub use error::ConfigError;
pub use load::{Config, Scope, DEFAULT_CONFIG_PATH};
pub use log::{LogConfig, LogFormat};
pub use metrics::MetricsConfig;
pub use proxy::ProxyConfig;
pub use redis::{RedisConfig, DEFAULT_PARTITIONS, MEMORY_URL};
pub use rules::valid_name;
pub use server::{ServerConfig, MAX_CONNECTIONS_CAP};
pub use webhooks::{
    secret_bytes, ConditionConfig, SecretError, SignatureKind, WebhookConfig, WebhookParts,
};

#[cfg(test)]
mod tests {
    use super::testing::{env, BASE};
    use super::Config;

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = Config::from_toml_with_env(BASE, "test.toml", &env()).unwrap();
        let dump = format!("{config:?}");
        assert!(!dump.contains("tok-123"));
        assert!(!dump.contains("billing-key-0123456789"));
    }
}

//! [`Config`] and its loading: the file (or built-in defaults), the tables of the command's
//! [`Scope`], environment overrides and `${VAR}` interpolation (module `env`),
//! deserialization into [`Config`], then [`Config::validate`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::accounts::{AccountConfig, RuntimeAccountsConfig};
use super::clients::{ClientConfig, ThrottleConfig};
use super::delivery::DeliveryConfig;
use super::env::{apply_override, interpolate, ENV_PREFIX};
use super::error::ConfigError;
use super::log::LogConfig;
use super::metrics::MetricsConfig;
use super::proxy::ProxyConfig;
use super::redis::RedisConfig;
use super::server::ServerConfig;
#[cfg(feature = "sim")]
use super::sim::SimConfig;
use super::webhooks::WebhookConfig;

/// Where the config file is looked for when neither `--config` nor `ZENRELAY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/zenrelay.toml";

/// The whole configuration of a gateway process.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listener.
    pub server: ServerConfig,
    /// Queue storage.
    pub redis: RedisConfig,
    /// Notify delivery.
    pub delivery: DeliveryConfig,
    /// Apps API proxy.
    pub proxy: ProxyConfig,
    /// Logging.
    pub log: LogConfig,
    /// Zendesk accounts the gateway delivers to.
    pub accounts: Vec<AccountConfig>,
    /// Internal callers and their keys.
    pub clients: Vec<ClientConfig>,
    /// Signed webhook sources mapped to Notify events.
    pub webhooks: Vec<WebhookConfig>,
    /// Per-client ingress throttling.
    pub throttle: ThrottleConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Accounts registered at runtime through the admin API.
    pub runtime_accounts: RuntimeAccountsConfig,
    /// The simulator's settings (`[sim]`), used by `zenrelay sim` and `zenrelay demo`.
    #[cfg(feature = "sim")]
    pub sim: Option<SimConfig>,
}

/// The top-level tables of the config file, as named in TOML.
const TABLES: [&str; 12] = [
    "server",
    "redis",
    "delivery",
    "proxy",
    "log",
    "accounts",
    "clients",
    "webhooks",
    "throttle",
    "metrics",
    "runtime_accounts",
    "sim",
];

/// Which tables of the config file a command reads. The others are dropped before
/// environment overrides and `${VAR}` interpolation and take their defaults, so a variable
/// only another command needs never stops this one. Unknown top-level keys are errors in
/// every scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every table (`zenrelay check-config`).
    All,
    /// Every table but `[sim]` (`zenrelay serve`).
    Gateway,
    /// `[sim]` and `[log]` (`zenrelay sim`).
    Sim,
    /// `[redis]`, `[delivery]` and `[log]` (`zenrelay demo --config`).
    Demo,
}

impl Scope {
    /// Whether this scope reads the top-level table `table`.
    pub fn reads(self, table: &str) -> bool {
        // A build without the simulator ignores its table.
        if table == "sim" && !cfg!(feature = "sim") {
            return false;
        }
        match self {
            Scope::All => true,
            Scope::Gateway => table != "sim",
            Scope::Sim => matches!(table, "sim" | "log"),
            Scope::Demo => matches!(table, "redis" | "delivery" | "log"),
        }
    }

    /// Whether a top-level key is kept: tables of this scope, and unknown keys (which then
    /// fail as unknown).
    fn keeps(self, key: &str) -> bool {
        !TABLES.contains(&key) || self.reads(key)
    }
}

impl Config {
    /// Loads the whole config ([`Scope::All`]); see [`Config::load_scoped`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_scoped(path, Scope::All)
    }

    /// Loads the tables of `scope`: `path`, else `ZENRELAY_CONFIG`, else
    /// [`DEFAULT_CONFIG_PATH`] if it exists, else built-in defaults; then environment
    /// overrides and interpolation.
    pub fn load_scoped(path: Option<&Path>, scope: Scope) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("ZENRELAY_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                default.exists().then_some(default)
            });
        let text = match &path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?,
            None => String::new(),
        };
        let name = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        Self::from_toml_scoped(&text, &name, &env, scope)
    }

    /// Parses `text` (named `source` in errors), applies the given environment, validates;
    /// every table is read ([`Scope::All`]).
    pub fn from_toml_with_env(
        text: &str,
        source: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        Self::from_toml_scoped(text, source, env, Scope::All)
    }

    /// Like [`Config::from_toml_with_env`], reading only the tables of `scope`: the others,
    /// and the environment overrides that address them, are ignored.
    pub fn from_toml_scoped(
        text: &str,
        source: &str,
        env: &[(String, String)],
        scope: Scope,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source.to_string(),
            message: e.to_string(),
        })?;
        table.retain(|key, _| scope.keeps(key));
        let mut value = toml::Value::Table(table);
        for (name, raw) in env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                let first = rest.split("__").next().unwrap_or_default();
                if scope.keeps(&first.to_ascii_lowercase()) {
                    apply_override(&mut value, rest, raw)?;
                }
            }
        }
        interpolate(&mut value, "", env)?;
        let partitions_set = value
            .get("redis")
            .and_then(|redis| redis.get("partitions"))
            .is_some();
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            ConfigError::invalid(if key == "." { String::new() } else { key }, message)
        })?;
        config.redis.partitions_set = partitions_set;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::config::testing::{env, err, BASE};
    use crate::config::LogFormat;

    #[test]
    fn loads_file_with_interpolation_and_defaults() {
        let config = Config::from_toml_with_env(BASE, "test.toml", &env()).unwrap();
        assert_eq!(
            config.accounts[0]
                .api_token
                .as_ref()
                .unwrap()
                .expose_secret(),
            "tok-123"
        );
        assert_eq!(config.delivery.notify_per_minute, 100);
        assert_eq!(config.delivery.notify_window_seconds, 60);
        assert_eq!(config.accounts[0].base_url(), "https://acme.zendesk.com");
        assert_eq!(config.delivery.margin_ms(), 50);
    }

    #[test]
    fn unknown_keys_are_named() {
        let msg = err(&format!("{BASE}\n[delivery]\nmax_attempt = 3\n"), &env());
        assert!(msg.contains("delivery"), "{msg}");
        assert!(msg.contains("max_attempt"), "{msg}");
        let msg = err(
            &BASE.replace("subdomain = \"acme\"", "subdomain = \"acme\"\ncolour = 1"),
            &env(),
        );
        assert!(
            msg.contains("accounts[0]") || msg.contains("accounts.0"),
            "{msg}"
        );
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn bad_values_are_named() {
        let msg = err(
            &format!("{BASE}\n[delivery]\nmax_attempts = \"many\"\n"),
            &env(),
        );
        assert!(msg.contains("delivery.max_attempts"), "{msg}");
        let msg = err(&format!("{BASE}\n[delivery]\nmax_attempts = 0\n"), &env());
        assert!(msg.starts_with("delivery.max_attempts"), "{msg}");
        let mut env2 = env();
        env2.push(("ZENRELAY__REDIS__URL".into(), "http://x".into()));
        assert!(err(BASE, &env2).starts_with("redis.url"));
    }

    #[cfg(feature = "sim")]
    const SIM: &str = r#"
[sim]
listen = "127.0.0.1:9091"

[[sim.accounts]]
subdomain = "acme"
[[sim.accounts.users]]
email = "admin@acme.example"
role = "admin"
api_token = "${SIM_TOKEN}"
"#;

    #[test]
    #[cfg(feature = "sim")]
    fn the_simulator_reads_only_sim_and_log() {
        let text = format!("{BASE}\n[log]\nformat = \"json\"\n{SIM}");
        let sim_env = vec![("SIM_TOKEN".to_string(), "sim-tok".to_string())];
        let config = Config::from_toml_scoped(&text, "test.toml", &sim_env, Scope::Sim).unwrap();
        let sim = config.sim.expect("[sim] is read");
        assert_eq!(sim.listen, "127.0.0.1:9091");
        assert_eq!(
            sim.accounts[0].users[0].api_token.as_deref(),
            Some("sim-tok")
        );
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(config.accounts.is_empty() && config.clients.is_empty());
        assert_eq!(config.redis.url.expose_secret(), "redis://127.0.0.1:6379/0");
        // A gateway-only file, with none of its variables set, does not stop the simulator.
        let config = Config::from_toml_scoped(BASE, "test.toml", &[], Scope::Sim).unwrap();
        assert!(config.sim.is_none());
        // Nor do overrides of tables it does not read.
        let overrides = vec![
            (
                "ZENRELAY__ACCOUNTS__0__BASE_URL".to_string(),
                "http://127.0.0.1:9".to_string(),
            ),
            ("ZENRELAY__REDIS__URL".to_string(), "http://x".to_string()),
            (
                "ZENRELAY__SIM__LISTEN".to_string(),
                "127.0.0.1:9092".to_string(),
            ),
        ];
        let config = Config::from_toml_scoped("", "test.toml", &overrides, Scope::Sim).unwrap();
        assert_eq!(config.sim.unwrap().listen, "127.0.0.1:9092");
        // Its own variables are still required, and named with their key.
        let message = Config::from_toml_scoped(&text, "test.toml", &env(), Scope::Sim)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "sim.accounts[0].users[0].api_token: environment variable SIM_TOKEN is not set"
        );
    }

    #[test]
    #[cfg(feature = "sim")]
    fn the_gateway_does_not_read_sim() {
        let text = format!("{BASE}{SIM}\n[sim.extra]\nx = 1\n");
        let config = Config::from_toml_scoped(&text, "test.toml", &env(), Scope::Gateway).unwrap();
        assert!(config.sim.is_none());
        assert_eq!(config.accounts.len(), 1);
        let mut overrides = env();
        overrides.push(("ZENRELAY__SIM__LISTEN".into(), "nowhere".into()));
        Config::from_toml_scoped(&text, "test.toml", &overrides, Scope::Gateway).unwrap();
        // The gateway's own variables are required, named with their key.
        let message = Config::from_toml_scoped(&text, "test.toml", &[], Scope::Gateway)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "accounts[0].api_token: environment variable ACME_TOKEN is not set"
        );
        // The whole file, as check-config reads it, needs both.
        let message = err(&format!("{BASE}{SIM}"), &env());
        assert!(
            message.starts_with("sim.accounts[0].users[0].api_token"),
            "{message}"
        );
    }

    #[test]
    #[cfg(feature = "sim")]
    fn the_demo_reads_redis_delivery_and_log() {
        let text = format!("{BASE}{SIM}\n[delivery]\nmax_attempts = 3\n");
        let config = Config::from_toml_scoped(&text, "test.toml", &[], Scope::Demo).unwrap();
        assert_eq!(config.delivery.max_attempts, 3);
        assert_eq!(config.redis.url.expose_secret(), "redis://127.0.0.1:6390/0");
        assert!(config.accounts.is_empty() && config.sim.is_none());
    }

    #[test]
    fn unknown_tables_are_errors_in_every_scope() {
        for scope in [Scope::All, Scope::Gateway, Scope::Sim, Scope::Demo] {
            let message = Config::from_toml_scoped("[delivry]\nx = 1\n", "t.toml", &[], scope)
                .unwrap_err()
                .to_string();
            assert!(message.contains("delivry"), "{scope:?}: {message}");
            let env = [("ZENRELAY__DELIVRY__X".to_string(), "1".to_string())];
            let message = Config::from_toml_scoped("", "t.toml", &env, scope)
                .unwrap_err()
                .to_string();
            assert!(message.contains("delivry"), "{scope:?}: {message}");
        }
    }
}

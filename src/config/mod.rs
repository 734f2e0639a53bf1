//! Typed, layered configuration.
//!
//! Loading order: built-in defaults → the TOML file → `ZENRELAY__SECTION__KEY=value`
//! environment overrides → `${VAR}` interpolation in string values → [`Config::validate`].
//! Each command reads only the tables it uses (its [`Scope`]): the others are dropped before
//! overrides and interpolation, so a variable only another command needs cannot stop it.
//! Unknown keys and invalid values are errors that name the key (`delivery.max_attempts`,
//! `accounts[1].api_token`, ...). Secrets are [`SecretString`]s: they print as `[REDACTED]`
//! and are exposed only where an HTTP header is built.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[cfg(feature = "sim")]
use crate::sim::config::SimConfig;
use crate::tls::TlsFiles;

/// Where the config file is looked for when neither `--config` nor `ZENRELAY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/zenrelay.toml";

/// Prefix of environment overrides: `ZENRELAY__DELIVERY__MAX_ATTEMPTS=5`.
pub const ENV_PREFIX: &str = "ZENRELAY__";

/// A configuration problem, naming the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a wrong type, an invalid value, or is unknown.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `accounts[0].email`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// An invalid value at `key` (a dotted path, e.g. `accounts[0].base_url`).
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

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

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body read at ingress, in bytes; larger requests get 413 before
    /// their body is read.
    pub max_body_bytes: usize,
    /// Largest number of events in one batch request.
    pub max_batch_events: usize,
    /// When set, `listen` serves HTTPS with these PEM files (for clients that only speak
    /// HTTPS, such as Zendesk's own CLI).
    pub tls: Option<TlsFiles>,
    /// Longest time for a whole request head, in milliseconds, from its first byte (from
    /// the accept for a connection's first request, TLS handshake included).
    pub header_timeout_ms: u64,
    /// Longest wait for the next request on a kept-alive connection, in milliseconds.
    pub keep_alive_timeout_ms: u64,
    /// Longest time for a whole request body to arrive after its head, in milliseconds,
    /// plus one second per 64 KiB received; a slower one is answered 408 and its
    /// connection closed.
    pub body_timeout_ms: u64,
    /// Longest time a write may wait for the client to accept any of it, in milliseconds
    /// (a client that does not read its answer is disconnected).
    pub send_timeout_ms: u64,
    /// Most connections open at once; one more is answered 503 and closed on plain HTTP
    /// (closed without an answer on TLS, or when 64 such answers are already being sent).
    pub max_connections: usize,
}

/// The largest `server.max_connections` accepted.
pub const MAX_CONNECTIONS_CAP: usize = 1_000_000;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 8 * 1024 * 1024,
            max_batch_events: 1000,
            tls: None,
            header_timeout_ms: 10_000,
            keep_alive_timeout_ms: 75_000,
            body_timeout_ms: 60_000,
            send_timeout_ms: 30_000,
            max_connections: 4096,
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`, `unix://`), or `memory://` for the
    /// in-memory queue (not durable; for `zenrelay demo` and trials).
    pub url: SecretString,
    /// Prefix of every key the gateway writes.
    pub key_prefix: String,
    /// Number of hash-tagged partitions accounts are spread over. Must not change while
    /// data exists under `key_prefix`; when not set, a gateway uses the count the data was
    /// written with ([`DEFAULT_PARTITIONS`] for a new store).
    pub partitions: u16,
    /// Whether `partitions` was set (in the file or the environment).
    #[serde(skip)]
    pub partitions_set: bool,
    /// Multiplexed connections of each process (concurrent commands are pipelined on them).
    pub pool_size: usize,
    /// Timeout of one Redis command, in milliseconds.
    pub timeout_ms: u64,
    /// Replicas that must hold a stored event before ingress answers 202 (`WAIT`); 0
    /// answers once the primary holds it.
    pub wait_replicas: u32,
    /// Longest wait for those replicas, in milliseconds; past it ingress answers 503.
    pub wait_timeout_ms: u64,
    /// The primary's name in Redis Sentinel's configuration: when set, the sentinels of
    /// `sentinel_nodes` say where the primary is (`url`'s address is not used, its
    /// credentials and database are), and a failover is followed.
    pub sentinel_master: Option<String>,
    /// The sentinels to ask (`redis://host:port`).
    pub sentinel_nodes: Vec<SecretString>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, with the credentials every node
    /// takes): when set, the queue runs on the cluster and `url` is not used.
    pub cluster_nodes: Vec<SecretString>,
}

/// Partitions of a new store when `redis.partitions` is not set: enough to spread evenly
/// over the masters of a Redis Cluster of 3 to 10 shards.
pub const DEFAULT_PARTITIONS: u16 = 64;

/// The `redis.url` that selects the in-memory queue (not durable).
pub const MEMORY_URL: &str = "memory://";

impl RedisConfig {
    /// Whether `url` selects the in-memory queue instead of Redis.
    pub fn is_memory(&self) -> bool {
        self.url.expose_secret().trim() == MEMORY_URL
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379/0"),
            key_prefix: "zenrelay".into(),
            partitions: DEFAULT_PARTITIONS,
            partitions_set: false,
            pool_size: 4,
            timeout_ms: 2000,
            wait_replicas: 0,
            wait_timeout_ms: 500,
            sentinel_master: None,
            sentinel_nodes: Vec::new(),
            cluster_nodes: Vec::new(),
        }
    }
}

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

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `zenrelay=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

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
}

impl AccountConfig {
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
}

impl Default for RuntimeAccountsConfig {
    fn default() -> Self {
        Self {
            encryption_key: None,
            cache_ms: 2000,
        }
    }
}

/// How a webhook source signs its requests.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureKind {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Delivery`.
    Github,
    /// No signature (only for trusted networks).
    None,
}

/// Which payloads of a webhook notify: the value at `pointer` must equal `equals`, be one
/// of `one_of`, or (with `exists`) be present or absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// JSON pointer into the payload.
    pub pointer: String,
    /// The value required.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The values allowed.
    #[serde(default)]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Whether the value must be present (true) or absent (false).
    #[serde(default)]
    pub exists: Option<bool>,
}

/// One `[[webhooks]]` entry: `POST /v1/webhooks/{name}` and how its payload becomes a
/// Notify event. Each target field is a literal (`app_id = 375`) or a JSON pointer into
/// the payload (`app_id_from = "/app"`); `body` defaults to the whole payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The name in the URL.
    pub name: String,
    /// The account notified.
    pub account: String,
    /// How requests are signed.
    pub signature: SignatureKind,
    /// The signing secret (`whsec_<base64>` for Standard Webhooks, the raw secret for
    /// GitHub).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// Secrets still accepted while a rotation is under way.
    #[serde(default)]
    pub previous_secrets: Vec<SecretString>,
    /// How far `webhook-timestamp` may be from now, in seconds (default 300).
    #[serde(default = "default_tolerance")]
    pub tolerance_seconds: u64,
    /// How long a delivery id is remembered to refuse replays, in seconds (default 86400).
    #[serde(default = "default_replay_window")]
    pub replay_window_seconds: u64,
    /// Path of a JSON Schema the payload must match.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Only payloads matching it notify; others are acknowledged and dropped.
    #[serde(default)]
    pub condition: Option<ConditionConfig>,
    /// Literal `app_id`.
    #[serde(default)]
    pub app_id: Option<serde_json::Value>,
    /// Pointer to `app_id`.
    #[serde(default)]
    pub app_id_from: Option<String>,
    /// Literal `event`.
    #[serde(default)]
    pub event: Option<serde_json::Value>,
    /// Pointer to `event`.
    #[serde(default)]
    pub event_from: Option<String>,
    /// Literal `body`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Pointer to `body` (default: the whole payload).
    #[serde(default)]
    pub body_from: Option<String>,
    /// Literal `agent_id`.
    #[serde(default)]
    pub agent_id: Option<serde_json::Value>,
    /// Pointer to `agent_id`.
    #[serde(default)]
    pub agent_id_from: Option<String>,
    /// Literal `agent_ids`.
    #[serde(default)]
    pub agent_ids: Option<serde_json::Value>,
    /// Pointer to `agent_ids`.
    #[serde(default)]
    pub agent_ids_from: Option<String>,
    /// Literal `ttl_seconds`.
    #[serde(default)]
    pub ttl_seconds: Option<serde_json::Value>,
    /// Pointer to `ttl_seconds`.
    #[serde(default)]
    pub ttl_seconds_from: Option<String>,
    /// Literal `priority`.
    #[serde(default)]
    pub priority: Option<serde_json::Value>,
    /// Pointer to `priority`.
    #[serde(default)]
    pub priority_from: Option<String>,
}

fn default_tolerance() -> u64 {
    300
}

fn default_replay_window() -> u64 {
    86_400
}

impl WebhookConfig {
    /// The mapping as (target field, literal, pointer) triples.
    pub fn mapping(&self) -> [(&'static str, Option<&serde_json::Value>, Option<&str>); 7] {
        [
            ("app_id", self.app_id.as_ref(), self.app_id_from.as_deref()),
            ("event", self.event.as_ref(), self.event_from.as_deref()),
            ("body", self.body.as_ref(), self.body_from.as_deref()),
            (
                "agent_id",
                self.agent_id.as_ref(),
                self.agent_id_from.as_deref(),
            ),
            (
                "agent_ids",
                self.agent_ids.as_ref(),
                self.agent_ids_from.as_deref(),
            ),
            (
                "ttl_seconds",
                self.ttl_seconds.as_ref(),
                self.ttl_seconds_from.as_deref(),
            ),
            (
                "priority",
                self.priority.as_ref(),
                self.priority_from.as_deref(),
            ),
        ]
    }
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

    /// Cross-field checks; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "server.listen",
                "must be an address like 127.0.0.1:8080",
            ));
        }
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        positive(
            "server.max_batch_events",
            self.server.max_batch_events as u64,
        )?;
        positive("server.header_timeout_ms", self.server.header_timeout_ms)?;
        positive(
            "server.keep_alive_timeout_ms",
            self.server.keep_alive_timeout_ms,
        )?;
        positive("server.body_timeout_ms", self.server.body_timeout_ms)?;
        positive("server.send_timeout_ms", self.server.send_timeout_ms)?;
        positive("server.max_connections", self.server.max_connections as u64)?;
        if self.server.max_connections > MAX_CONNECTIONS_CAP {
            return Err(ConfigError::invalid(
                "server.max_connections",
                format!("must be at most {MAX_CONNECTIONS_CAP}"),
            ));
        }
        let url = self.redis.url.expose_secret();
        if !(self.redis.is_memory()
            || url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "must start with redis://, rediss:// or unix://, or be memory:// (in-memory, not durable)",
            ));
        }
        let prefix = &self.redis.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must be non-empty, without spaces or braces",
            ));
        }
        if !(1..=4096).contains(&self.redis.partitions) {
            return Err(ConfigError::invalid(
                "redis.partitions",
                "must be between 1 and 4096",
            ));
        }
        positive("redis.pool_size", self.redis.pool_size as u64)?;
        positive("redis.timeout_ms", self.redis.timeout_ms)?;
        match (
            &self.redis.sentinel_master,
            self.redis.sentinel_nodes.is_empty(),
        ) {
            (Some(_), _) if self.redis.is_memory() => {
                return Err(ConfigError::invalid(
                    "redis.sentinel_master",
                    "cannot be used with memory:// (the in-memory queue)",
                ));
            }
            (Some(master), _) if master.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    "redis.sentinel_master",
                    "must not be empty",
                ));
            }
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    "redis.sentinel_nodes",
                    "must name at least one sentinel when redis.sentinel_master is set",
                ));
            }
            (None, false) => {
                return Err(ConfigError::invalid(
                    "redis.sentinel_master",
                    "must be set when redis.sentinel_nodes is (the primary's name at the sentinels)",
                ));
            }
            _ => {}
        }
        for (i, node) in self.redis.sentinel_nodes.iter().enumerate() {
            let key = format!("redis.sentinel_nodes[{i}]");
            let Some(rest) = node.expose_secret().strip_prefix("redis://") else {
                return Err(ConfigError::invalid(key, "must start with redis://"));
            };
            if rest
                .split_once('/')
                .is_some_and(|(_, path)| !path.is_empty())
            {
                return Err(ConfigError::invalid(
                    key,
                    "must name no database (a sentinel has none): redis://host:port",
                ));
            }
        }
        if !self.redis.cluster_nodes.is_empty() {
            if self.redis.is_memory() {
                return Err(ConfigError::invalid(
                    "redis.cluster_nodes",
                    "cannot be used with redis.url = \"memory://\" (the in-memory queue)",
                ));
            }
            if self.redis.sentinel_master.is_some() {
                return Err(ConfigError::invalid(
                    "redis.cluster_nodes",
                    "cannot be used with redis.sentinel_master (a Redis Cluster fails over by itself)",
                ));
            }
        }
        for (i, node) in self.redis.cluster_nodes.iter().enumerate() {
            let key = format!("redis.cluster_nodes[{i}]");
            let url = node.expose_secret();
            let Some(rest) = url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"))
            else {
                return Err(ConfigError::invalid(
                    key,
                    "must start with redis:// or rediss://",
                ));
            };
            if rest
                .split_once('/')
                .is_some_and(|(_, path)| !path.is_empty() && path != "0")
            {
                return Err(ConfigError::invalid(
                    key,
                    "must name no database but 0 (a Redis Cluster has only database 0)",
                ));
            }
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
                return Err(ConfigError::invalid(
                    key,
                    format!("is not a Redis URL: {e}"),
                ));
            }
        }
        if self.redis.wait_replicas > 0 {
            if self.redis.is_memory() {
                return Err(ConfigError::invalid(
                    "redis.wait_replicas",
                    "must be 0 with memory:// (the in-memory queue has no replicas)",
                ));
            }
            positive("redis.wait_timeout_ms", self.redis.wait_timeout_ms)?;
            if self.redis.wait_timeout_ms >= self.redis.timeout_ms {
                return Err(ConfigError::invalid(
                    "redis.wait_timeout_ms",
                    "must be shorter than redis.timeout_ms (the wait is one Redis command)",
                ));
            }
        }
        let d = &self.delivery;
        positive("delivery.notify_per_minute", d.notify_per_minute.into())?;
        if d.notify_per_minute > 100_000 {
            return Err(ConfigError::invalid(
                "delivery.notify_per_minute",
                "must be at most 100000",
            ));
        }
        positive("delivery.notify_window_seconds", d.notify_window_seconds)?;
        positive("delivery.max_attempts", d.max_attempts.into())?;
        positive("delivery.default_ttl_seconds", d.default_ttl_seconds)?;
        positive("delivery.max_queue_depth", d.max_queue_depth)?;
        positive("delivery.upstream_timeout_ms", d.upstream_timeout_ms)?;
        positive(
            "delivery.dead_letter_retention_seconds",
            d.dead_letter_retention_seconds,
        )?;
        positive(
            "delivery.event_retention_seconds",
            d.event_retention_seconds,
        )?;
        positive(
            "delivery.account_retention_seconds",
            d.account_retention_seconds,
        )?;
        positive("delivery.concurrency", d.concurrency as u64)?;
        positive("delivery.retry_base_ms", d.retry_base_ms)?;
        positive("delivery.poll_interval_ms", d.poll_interval_ms)?;
        positive("delivery.idle_poll_ms", d.idle_poll_ms)?;
        if d.retry_max_ms < d.retry_base_ms {
            return Err(ConfigError::invalid(
                "delivery.retry_max_ms",
                "must be at least delivery.retry_base_ms",
            ));
        }
        if let Some(lease) = d.lease_ms {
            if lease <= d.upstream_timeout_ms {
                return Err(ConfigError::invalid(
                    "delivery.lease_ms",
                    "must be longer than delivery.upstream_timeout_ms",
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            tls.validate("server.tls")
                .map_err(|e| ConfigError::invalid(e.key, "must name a PEM file"))?;
        }
        let p = &self.proxy;
        positive("proxy.max_attempts", p.max_attempts.into())?;
        if p.max_attempts > 20 {
            return Err(ConfigError::invalid(
                "proxy.max_attempts",
                "must be at most 20",
            ));
        }
        positive("proxy.max_body_bytes", p.max_body_bytes as u64)?;
        positive("proxy.per_minute", p.per_minute.into())?;
        positive("proxy.burst", p.burst.into())?;
        positive("proxy.upstream_timeout_ms", p.upstream_timeout_ms)?;
        positive("proxy.retry_base_ms", p.retry_base_ms)?;
        if p.retry_max_ms < p.retry_base_ms {
            return Err(ConfigError::invalid(
                "proxy.retry_max_ms",
                "must be at least proxy.retry_base_ms",
            ));
        }
        if p.retry_after_cap_seconds > 3600 {
            return Err(ConfigError::invalid(
                "proxy.retry_after_cap_seconds",
                "must be at most 3600",
            ));
        }

        let mut ids = HashSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
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
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
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
                if account != "*" && !ids.contains(account.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("clients[{i}].accounts[{j}]"),
                        format!("unknown account {account:?}"),
                    ));
                }
            }
        }
        if let Some(default) = &self.proxy.default_account {
            if !ids.contains(default.as_str()) {
                return Err(ConfigError::invalid(
                    "proxy.default_account",
                    format!("unknown account {default:?}"),
                ));
            }
        }
        self.validate_operations(&ids)?;
        #[cfg(feature = "sim")]
        if let Some(sim) = &self.sim {
            sim.validate()
                .map_err(|message| match message.split_once(": ") {
                    Some((key, message)) => ConfigError::invalid(key, message),
                    None => ConfigError::invalid("sim", message),
                })?;
        }
        Ok(())
    }
}

impl Config {
    /// Checks of webhooks, throttling, metrics and runtime accounts.
    fn validate_operations(&self, accounts: &HashSet<&str>) -> Result<(), ConfigError> {
        if let Some(key) = &self.runtime_accounts.encryption_key {
            if crate::seal::Sealer::new(key.expose_secret()).is_err() {
                return Err(ConfigError::invalid(
                    "runtime_accounts.encryption_key",
                    "must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)",
                ));
            }
        }
        positive("runtime_accounts.cache_ms", self.runtime_accounts.cache_ms)?;
        positive(
            "metrics.history_interval_seconds",
            self.metrics.history_interval_seconds,
        )?;
        if self.throttle.burst == Some(0) {
            return Err(ConfigError::invalid(
                "throttle.burst",
                "must be greater than 0",
            ));
        }
        let mut names = HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("webhooks[{i}].{field}");
            if !valid_name(&hook.name) || !names.insert(hook.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    "must be unique, 1-64 characters of letters, digits, '-', '_' or '.'",
                ));
            }
            if !valid_name(&hook.account) {
                return Err(ConfigError::invalid(
                    key("account"),
                    "is not a valid account id",
                ));
            }
            if !accounts.contains(hook.account.as_str())
                && self.runtime_accounts.encryption_key.is_none()
            {
                return Err(ConfigError::invalid(
                    key("account"),
                    format!("unknown account {:?}", hook.account),
                ));
            }
            match (hook.signature, &hook.secret) {
                (SignatureKind::None, _) => {}
                (_, None) => {
                    return Err(ConfigError::invalid(
                        key("secret"),
                        "is required unless signature = \"none\"",
                    ))
                }
                (kind, Some(secret)) => {
                    for (j, s) in std::iter::once(secret)
                        .chain(hook.previous_secrets.iter())
                        .enumerate()
                    {
                        let name = if j == 0 {
                            key("secret")
                        } else {
                            format!("webhooks[{i}].previous_secrets[{}]", j - 1)
                        };
                        secret_bytes(kind, s.expose_secret())
                            .map_err(|e| ConfigError::invalid(name, e.to_string()))?;
                    }
                }
            }
            positive(&key("tolerance_seconds"), hook.tolerance_seconds)?;
            positive(&key("replay_window_seconds"), hook.replay_window_seconds)?;
            for (field, literal, pointer) in hook.mapping() {
                if literal.is_some() && pointer.is_some() {
                    return Err(ConfigError::invalid(
                        key(field),
                        format!("set either {field} or {field}_from, not both"),
                    ));
                }
                if let Some(p) = pointer {
                    if !(p.is_empty() || p.starts_with('/')) {
                        return Err(ConfigError::invalid(
                            key(&format!("{field}_from")),
                            "must be a JSON pointer (\"\" or starting with '/')",
                        ));
                    }
                }
            }
            if hook.app_id.is_none() && hook.app_id_from.is_none() {
                return Err(ConfigError::invalid(
                    key("app_id"),
                    "set app_id or app_id_from",
                ));
            }
            if hook.event.is_none() && hook.event_from.is_none() {
                return Err(ConfigError::invalid(
                    key("event"),
                    "set event or event_from",
                ));
            }
            if let Some(c) = &hook.condition {
                let ops = [c.equals.is_some(), c.one_of.is_some(), c.exists.is_some()]
                    .iter()
                    .filter(|x| **x)
                    .count();
                if ops != 1 || !(c.pointer.is_empty() || c.pointer.starts_with('/')) {
                    return Err(ConfigError::invalid(
                        key("condition"),
                        "needs a JSON `pointer` and exactly one of equals, one_of or exists",
                    ));
                }
            }
            if let Some(path) = &hook.schema {
                crate::schema::load_schema(path)
                    .map_err(|e| ConfigError::invalid(key("schema"), e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Why a configured secret is no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A Standard Webhooks secret that is not base64 after `whsec_`.
    #[error("must be whsec_ followed by base64")]
    NotBase64,
    /// An empty secret.
    #[error("must not be empty")]
    Empty,
}

/// The key bytes of a configured secret: base64 after `whsec_` for Standard Webhooks,
/// the raw text for GitHub.
pub fn secret_bytes(kind: SignatureKind, secret: &str) -> Result<Vec<u8>, SecretError> {
    let bytes = match kind {
        SignatureKind::StandardWebhooks => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .map_err(|_| SecretError::NotBase64)?
        }
        SignatureKind::Github | SignatureKind::None => secret.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(bytes)
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Whether `name` is acceptable as an account id (it appears in URLs and Redis keys).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != ".."
}

/// Applies `SECTION__KEY[__KEY...]=raw` to the parsed file. Path segments are lowercased;
/// numeric segments index arrays (`ACCOUNTS__0__API_TOKEN`). The value is read as a TOML
/// literal when it is one (numbers, booleans, arrays), else as a string.
fn apply_override(root: &mut toml::Value, path: &str, raw: &str) -> Result<(), ConfigError> {
    let segments: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let dotted = segments.join(".");
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            format!("{ENV_PREFIX}{path}"),
            "malformed environment override name",
        ));
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut node = root;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        node = match node {
            toml::Value::Table(table) => {
                if last {
                    table.insert(segment.clone(), parsed);
                    return Ok(());
                }
                table
                    .entry(segment.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| {
                    ConfigError::invalid(&dotted, "expected an array index in the override")
                })?;
                let len = items.len();
                let item = items.get_mut(index).ok_or_else(|| {
                    ConfigError::invalid(
                        &dotted,
                        format!("index {index} is out of range (the array has {len} items)"),
                    )
                })?;
                if last {
                    *item = parsed;
                    return Ok(());
                }
                item
            }
            _ => {
                return Err(ConfigError::invalid(
                    &dotted,
                    "cannot override inside a non-table value",
                ))
            }
        };
    }
    Ok(())
}

/// Replaces `${VAR}` in every string value; an unset variable is an error naming the key.
fn interpolate(
    value: &mut toml::Value,
    key: &str,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = substitute(s, env).map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                interpolate(item, &child, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a `${VAR}` reference cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SubstituteError {
    #[error("unterminated ${{...}} reference")]
    Unterminated,
    #[error("invalid variable name {0:?} in ${{...}}")]
    InvalidName(String),
    #[error("environment variable {0} is not set")]
    NotSet(String),
}

fn substitute(input: &str, env: &[(String, String)]) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(SubstituteError::Unterminated)?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SubstituteError::InvalidName(name.to_string()));
        }
        let value = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| SubstituteError::NotSet(name.to_string()))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[redis]
url = "redis://127.0.0.1:6390/0"

[[accounts]]
id = "acme"
subdomain = "acme"
email = "ops@acme.example"
api_token = "${ACME_TOKEN}"

[[clients]]
name = "billing"
key = "${BILLING_KEY}"
accounts = ["acme"]
"#;

    fn env() -> Vec<(String, String)> {
        vec![
            ("ACME_TOKEN".into(), "tok-123".into()),
            ("BILLING_KEY".into(), "billing-key-0123456789".into()),
        ]
    }

    fn err(text: &str, env: &[(String, String)]) -> String {
        Config::from_toml_with_env(text, "test.toml", env)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn memory_url_selects_the_in_memory_queue() {
        let env = [("ZENRELAY__REDIS__URL".to_string(), "memory://".to_string())];
        let config = Config::from_toml_with_env("", "test.toml", &env).unwrap();
        assert!(config.redis.is_memory());
        assert!(!Config::default().redis.is_memory());
        let env = [("ZENRELAY__REDIS__URL".to_string(), "memory://x".to_string())];
        let message = err("", &env);
        assert!(message.starts_with("redis.url:"), "{message}");
    }

    #[test]
    fn waiting_for_replicas_needs_redis_and_a_wait_shorter_than_a_command() {
        let with = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config =
            Config::from_toml_with_env("[redis]\nwait_replicas = 1\n", "test.toml", &[]).unwrap();
        assert_eq!(config.redis.wait_replicas, 1);
        assert_eq!(config.redis.wait_timeout_ms, 500);
        let memory = with(&[("ZENRELAY__REDIS__URL", "memory://")]);
        let message = err("[redis]\nwait_replicas = 1\n", &memory);
        assert!(message.starts_with("redis.wait_replicas:"), "{message}");
        let message = err("[redis]\nwait_replicas = 1\nwait_timeout_ms = 2000\n", &[]);
        assert!(message.starts_with("redis.wait_timeout_ms:"), "{message}");
        let message = err("[redis]\nwait_replicas = 1\nwait_timeout_ms = 0\n", &[]);
        assert!(message.starts_with("redis.wait_timeout_ms:"), "{message}");
        // Without replicas to wait for, the wait is not used.
        Config::from_toml_with_env("[redis]\nwait_timeout_ms = 0\n", "test.toml", &[]).unwrap();
    }

    #[test]
    fn sentinel_keys_come_together() {
        let ok =
            "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://10.0.0.5:26379\"]\n";
        let config = Config::from_toml_with_env(ok, "test.toml", &[]).unwrap();
        assert_eq!(config.redis.sentinel_master.as_deref(), Some("m"));
        for (text, key) in [
            (
                "[redis]\nsentinel_master = \"m\"\n",
                "redis.sentinel_nodes:",
            ),
            (
                "[redis]\nsentinel_nodes = [\"redis://10.0.0.5:26379\"]\n",
                "redis.sentinel_master:",
            ),
            (
                "[redis]\nsentinel_master = \" \"\nsentinel_nodes = [\"redis://h:1\"]\n",
                "redis.sentinel_master:",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://h:1\", \"h:2\"]\n",
                "redis.sentinel_nodes[1]:",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://h:1/0\"]\n",
                "redis.sentinel_nodes[0]:",
            ),
        ] {
            let message = err(text, &[]);
            assert!(message.starts_with(key), "{text}: {message}");
        }
        let memory = [("ZENRELAY__REDIS__URL".to_string(), "memory://".to_string())];
        let message = err(ok, &memory);
        assert!(message.starts_with("redis.sentinel_master:"), "{message}");
    }

    #[test]
    fn cluster_nodes_are_checked() {
        let ok = "[redis]\ncluster_nodes = [\"redis://10.0.0.1:7000\", \"redis://u:p@h:7001/0\"]\n";
        let config = Config::from_toml_with_env(ok, "test.toml", &[]).unwrap();
        assert_eq!(config.redis.cluster_nodes.len(), 2);
        for (text, key) in [
            (
                "[redis]\ncluster_nodes = [\"redis://h:1\", \"h:2\"]\n",
                "redis.cluster_nodes[1]:",
            ),
            (
                "[redis]\ncluster_nodes = [\"redis://h:1/3\"]\n",
                "redis.cluster_nodes[0]:",
            ),
            (
                "[redis]\ncluster_nodes = [\"redis://h:1\", \"redis://h:port\"]\n",
                "redis.cluster_nodes[1]:",
            ),
            // This build has no TLS to Redis: said at once, not at the first connection.
            (
                "[redis]\ncluster_nodes = [\"rediss://h:1\"]\n",
                "redis.cluster_nodes[0]: is not a Redis URL",
            ),
            (
                "[redis]\ncluster_nodes = [\"redis://h:1\"]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://h:2\"]\n",
                "redis.cluster_nodes:",
            ),
        ] {
            let message = err(text, &[]);
            assert!(message.starts_with(key), "{text}: {message}");
        }
        let memory = [("ZENRELAY__REDIS__URL".to_string(), "memory://".to_string())];
        let message = err(ok, &memory);
        assert!(message.starts_with("redis.cluster_nodes:"), "{message}");
    }

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
    fn env_overrides_scalars_and_array_items() {
        let mut env = env();
        env.push(("ZENRELAY__DELIVERY__MAX_ATTEMPTS".into(), "3".into()));
        env.push((
            "ZENRELAY__ACCOUNTS__0__BASE_URL".into(),
            "http://127.0.0.1:9".into(),
        ));
        env.push(("ZENRELAY__LOG__FORMAT".into(), "json".into()));
        let config = Config::from_toml_with_env(BASE, "test.toml", &env).unwrap();
        assert_eq!(config.delivery.max_attempts, 3);
        assert_eq!(config.accounts[0].base_url(), "http://127.0.0.1:9");
        assert_eq!(config.log.format, LogFormat::Json);
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

    #[test]
    fn listener_and_history_limits_are_checked() {
        let with = |key: &str, value: &str| {
            let mut env = env();
            env.push((key.into(), value.into()));
            err(BASE, &env)
        };
        for key in [
            "header_timeout_ms",
            "keep_alive_timeout_ms",
            "body_timeout_ms",
            "send_timeout_ms",
            "max_connections",
        ] {
            let msg = with(&format!("ZENRELAY__SERVER__{}", key.to_uppercase()), "0");
            assert!(msg.starts_with(&format!("server.{key}")), "{msg}");
            assert!(msg.contains("greater than 0"), "{msg}");
        }
        let msg = with(
            "ZENRELAY__SERVER__MAX_CONNECTIONS",
            &(MAX_CONNECTIONS_CAP + 1).to_string(),
        );
        assert!(msg.starts_with("server.max_connections"), "{msg}");
        assert!(msg.contains("at most 1000000"), "{msg}");
        let msg = with("ZENRELAY__METRICS__HISTORY_INTERVAL_SECONDS", "0");
        assert!(msg.starts_with("metrics.history_interval_seconds"), "{msg}");
    }

    #[test]
    fn missing_variable_is_named() {
        let msg = err(BASE, &env()[..1]);
        assert!(msg.starts_with("clients[0].key"), "{msg}");
        assert!(msg.contains("BILLING_KEY"), "{msg}");
    }

    #[test]
    fn account_credentials_are_checked() {
        let text = BASE.replace("api_token = \"${ACME_TOKEN}\"", "");
        assert!(err(&text, &env()).starts_with("accounts[0].api_token"));
        let text = BASE.replace("email = \"ops@acme.example\"", "");
        assert!(err(&text, &env()).starts_with("accounts[0].email"));
        let text = BASE.replace("accounts = [\"acme\"]", "accounts = [\"nope\"]");
        assert!(err(&text, &env()).starts_with("clients[0].accounts[0]"));
    }

    #[test]
    fn operations_settings_are_checked() {
        let msg = err(
            &format!("{BASE}\n[runtime_accounts]\nencryption_key = \"c2hvcnQ=\"\n"),
            &env(),
        );
        assert!(msg.starts_with("runtime_accounts.encryption_key"), "{msg}");
        let hook = "\n[[webhooks]]\nname = \"h\"\naccount = \"elsewhere\"\nsignature = \"none\"\napp_id = 1\nevent = \"e\"\n";
        let msg = err(&format!("{BASE}{hook}"), &env());
        assert!(msg.starts_with("webhooks[0].account"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[throttle]\nrequests_per_second = 5\nburst = 0\n"),
            &env(),
        );
        assert!(msg.starts_with("throttle.burst"), "{msg}");
        let text = format!(
            "{BASE}\n[runtime_accounts]\nencryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n{hook}"
        );
        let config = Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        assert_eq!(
            config.webhooks[0].account, "elsewhere",
            "runtime accounts may be named"
        );
        assert!(!format!("{config:?}").contains("AAECAwQF"));
    }

    #[test]
    fn proxy_and_tls_keys_are_typed_and_checked() {
        let text = format!(
            "{BASE}\n[proxy]\nper_minute = 60\nburst = 2\nretry_after_cap_seconds = 5\n\
             [server]\ntls = {{ cert = \"c.pem\", key = \"k.pem\" }}\n"
        );
        let config = Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        assert_eq!(config.proxy.per_minute, 60);
        assert_eq!(config.proxy.burst, 2);
        assert_eq!(config.proxy.retry_after_cap_seconds, 5);
        assert_eq!(config.server.tls.as_ref().unwrap().cert, "c.pem");
        let msg = err(&format!("{BASE}\n[proxy]\nper_minute = 0\n"), &env());
        assert!(msg.starts_with("proxy.per_minute"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[proxy]\nretry_base_ms = 10\nretry_max_ms = 5\n"),
            &env(),
        );
        assert!(msg.starts_with("proxy.retry_max_ms"), "{msg}");
        let msg = err(&format!("{BASE}\n[proxy]\npace = 1\n"), &env());
        assert!(msg.contains("pace"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[server]\ntls = {{ cert = \"\", key = \"k\" }}\n"),
            &env(),
        );
        assert!(msg.starts_with("server.tls.cert"), "{msg}");
        let msg = err(
            &format!("{BASE}\n[server]\ntls = {{ cert = \"c\" }}\n"),
            &env(),
        );
        assert!(msg.contains("key"), "{msg}");
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

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = Config::from_toml_with_env(BASE, "test.toml", &env()).unwrap();
        let dump = format!("{config:?}");
        assert!(!dump.contains("tok-123"));
        assert!(!dump.contains("billing-key-0123456789"));
    }
}

//! Account lookup across configured and runtime accounts.
//!
//! Configured accounts (`[[accounts]]`) are fixed for the life of the process. Runtime
//! accounts are registered through the admin API and stored in the queue's storage (so
//! every process sharing it sees them) as JSON records whose credentials are sealed with
//! XChaCha20-Poly1305 under `runtime_accounts.encryption_key`, the account id being the
//! associated data (a record copied to another id does not open). Each process caches
//! lookups (hits and misses) for `runtime_accounts.cache_ms`, so a change made by any
//! process is in effect everywhere after at most that long; the process that made it sees
//! it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::{AccountConfig, Config, ConfigError};
use crate::hosts::{HostMap, Route};
use crate::queue::{Queue, QueueError, RateLimit};
use crate::zendesk::{Account, Accounts};

use crate::seal::{SealError, Sealer};

/// Why a runtime account's stored record makes no account.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record is not the JSON this release writes.
    #[error("malformed record: {0}")]
    Malformed(serde_json::Error),
    /// Its credential does not open.
    #[error(transparent)]
    Sealed(#[from] SealError),
    /// Its credential is not UTF-8 text.
    #[error("credential is not UTF-8")]
    NotUtf8,
    /// Its credential kind is unknown.
    #[error("unknown credential kind {0:?}")]
    Kind(String),
    /// The entry makes no account.
    #[error(transparent)]
    Account(#[from] crate::zendesk::AccountError),
}

/// The body of `PUT /v1/accounts/{id}`: an account as in `[[accounts]]`, without `id`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// Zendesk subdomain: upstream is `https://{subdomain}.zendesk.com`.
    #[schema(pattern = "^[A-Za-z0-9-]{1,63}$")]
    pub subdomain: String,
    /// Upstream base URL overriding the one derived from `subdomain`.
    #[serde(default)]
    #[schema(format = "uri")]
    pub base_url: Option<String>,
    /// Extra `Host` names routed to this account by the proxy.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The Zendesk user the credentials belong to (with `api_token` or `password`).
    #[serde(default)]
    pub email: Option<String>,
    /// API token (Basic `email/token:TOKEN`). Exactly one credential must be given.
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only)]
    pub api_token: Option<SecretString>,
    /// OAuth access token (Bearer).
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only)]
    pub oauth_token: Option<SecretString>,
    /// Password (Basic `email:password`).
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only)]
    pub password: Option<SecretString>,
    /// Notify budget per window, overriding `delivery.notify_per_minute`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub notify_per_minute: Option<u32>,
}

impl AccountSpec {
    /// The account as a config entry named `id`.
    pub fn to_config(&self, id: &str) -> AccountConfig {
        AccountConfig {
            id: id.to_string(),
            subdomain: self.subdomain.clone(),
            base_url: self.base_url.clone(),
            hosts: self.hosts.clone(),
            email: self.email.clone(),
            api_token: self.api_token.clone(),
            oauth_token: self.oauth_token.clone(),
            password: self.password.clone(),
            notify_per_minute: self.notify_per_minute,
        }
    }
}

/// What runtime account records say, without credentials: what `GET /v1/accounts/{id}`
/// answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AccountInfo {
    /// The account id.
    pub id: String,
    /// `config` or `runtime`.
    pub source: String,
    /// Zendesk subdomain.
    pub subdomain: String,
    /// Upstream base URL.
    pub base_url: String,
    /// Extra proxy host names.
    pub hosts: Vec<String>,
    /// The Zendesk user of the credentials.
    pub email: Option<String>,
    /// Which credential is stored: `api_token`, `oauth_token` or `password`.
    pub credential: String,
    /// Notify budget per window.
    pub notify_per_minute: u32,
    /// When the record was last written (RFC 3339; runtime accounts only).
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A runtime account as stored: [`AccountInfo`] plus the sealed credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: AccountInfo,
    /// Which `base_url` was given explicitly (so a reload rebuilds the same config).
    explicit_base_url: bool,
    notify_per_minute_override: Option<u32>,
    sealed: String,
}

/// Why an account could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum AccountStoreError {
    /// Runtime accounts need `runtime_accounts.encryption_key`.
    #[error("runtime accounts are disabled: set runtime_accounts.encryption_key")]
    Disabled,
    /// The id names a configured account.
    #[error("account {0:?} is configured in the config file and cannot be changed at runtime")]
    Configured(String),
    /// The spec is invalid: (field, message).
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// Storage failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

type CacheEntry = (Instant, Option<Arc<Account>>);

/// Every account the gateway can use: configured ones, then runtime ones (cached).
pub struct AccountDirectory {
    configured: Accounts,
    fixed: HashMap<String, Arc<Account>>,
    described: HashMap<String, (Option<String>, String)>,
    queue: Arc<dyn Queue>,
    sealer: Option<Sealer>,
    default_limit: RateLimit,
    ttl: Duration,
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// The host map of the configured accounts.
    configured_hosts: HostMap,
    /// The host map of the runtime accounts, when it was read (`None`: to be read again).
    runtime_hosts: Mutex<Option<(Option<Instant>, Arc<HostMap>)>>,
    /// Held by the caller re-reading the runtime accounts' host map.
    hosts_refresh: tokio::sync::Mutex<()>,
}

/// Most runtime lookups cached per process (misses included); the cache is cleared when full.
const CACHE_MAX: usize = 10_000;

impl AccountDirectory {
    /// The directory of `config`'s accounts plus the runtime accounts stored in `queue`.
    pub fn new(config: &Config, queue: Arc<dyn Queue>) -> Result<Self, ConfigError> {
        let configured = Accounts::from_config(config)?;
        let fixed = configured
            .iter()
            .map(|a| (a.id.clone(), Arc::new(a.clone())))
            .collect();
        let described = config
            .accounts
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    (a.email.clone(), credential_kind(a).to_string()),
                )
            })
            .collect();
        let sealer = config.runtime_accounts.sealer()?.cloned();
        Ok(AccountDirectory {
            configured,
            fixed,
            described,
            queue,
            sealer,
            default_limit: RateLimit {
                limit: config.delivery.notify_per_minute,
                window_ms: config.delivery.window_ms(),
            },
            ttl: Duration::from_millis(config.runtime_accounts.cache_ms),
            cache: Mutex::new(HashMap::new()),
            configured_hosts: HostMap::from_config(config),
            runtime_hosts: Mutex::new(None),
            hosts_refresh: tokio::sync::Mutex::new(()),
        })
    }

    /// The configured accounts.
    pub fn configured(&self) -> &Accounts {
        &self.configured
    }

    /// Whether runtime accounts are enabled.
    pub fn runtime_enabled(&self) -> bool {
        self.sealer.is_some()
    }

    /// The account `id`: a configured one, else a runtime one (cached).
    pub async fn resolve(&self, id: &str) -> Result<Option<Arc<Account>>, QueueError> {
        if let Some(account) = self.fixed.get(id) {
            return Ok(Some(account.clone()));
        }
        let Some(sealer) = &self.sealer else {
            return Ok(None);
        };
        if let Some((at, cached)) = self.cache_get(id) {
            if at.elapsed() < self.ttl {
                return Ok(cached);
            }
        }
        let account = match self.queue.get_account(id).await? {
            None => None,
            Some(raw) => match self.decode(sealer, id, &raw) {
                Ok(account) => Some(Arc::new(account)),
                Err(e) => {
                    tracing::error!(account = %id, error = %e, "unusable runtime account record");
                    None
                }
            },
        };
        self.cache_put(id, account.clone());
        Ok(account)
    }

    /// What a proxied request's `Host` value names (see [`crate::hosts`]): a configured
    /// account's name first, else a runtime account's. Runtime accounts' names are read at
    /// most every `runtime_accounts.cache_ms` (at once in the process that changed one);
    /// while they cannot be read, the last ones read serve.
    pub async fn resolve_host(&self, host: &str) -> Route {
        match self.configured_hosts.lookup(host) {
            Route::Nothing if self.sealer.is_some() => self.runtime_host_map().await.lookup(host),
            route => route,
        }
    }

    /// The runtime accounts' host map, re-read when older than `cache_ms`: by one caller,
    /// while the others use the map at hand (or, before the first read, wait for it).
    async fn runtime_host_map(&self) -> Arc<HostMap> {
        let read = || self.runtime_hosts.lock().ok().and_then(|c| c.clone());
        let fresh = |at: &Option<Instant>| at.is_some_and(|at| at.elapsed() < self.ttl);
        let current = read();
        let _refreshing = match (&current, self.hosts_refresh.try_lock()) {
            (Some((at, map)), _) if fresh(at) => return map.clone(),
            (_, Ok(guard)) => guard,
            (Some((_, map)), Err(_)) => return map.clone(),
            (None, Err(_)) => self.hosts_refresh.lock().await,
        };
        // Another caller may have read it meanwhile.
        let current = read();
        if let Some((at, map)) = &current {
            if fresh(at) {
                return map.clone();
            }
        }
        let map = match self.queue.list_accounts().await {
            Ok(records) => {
                let runtime: Vec<AccountInfo> = records
                    .iter()
                    .filter_map(|(_, raw)| serde_json::from_str::<Record>(raw).ok())
                    .map(|r| r.info)
                    .filter(|info| !self.fixed.contains_key(&info.id))
                    .collect();
                Arc::new(HostMap::build(runtime.iter().map(|i| {
                    (i.id.as_str(), i.subdomain.as_str(), i.hosts.as_slice())
                })))
            }
            Err(e) => {
                // Tried again after `cache_ms`, not on every request.
                tracing::warn!(error = %e, "cannot read runtime accounts' host names; using the last ones read");
                current.map_or_else(|| Arc::new(HostMap::default()), |(_, map)| map)
            }
        };
        if let Ok(mut cached) = self.runtime_hosts.lock() {
            *cached = Some((Some(Instant::now()), map.clone()));
        }
        map
    }

    /// Marks the runtime accounts' host map to be read again.
    fn runtime_hosts_changed(&self) {
        if let Ok(mut cached) = self.runtime_hosts.lock() {
            if let Some((at, _)) = cached.as_mut() {
                *at = None;
            }
        }
    }

    /// What `GET /v1/accounts/{id}` shows: never credentials.
    pub async fn info(&self, id: &str) -> Result<Option<AccountInfo>, QueueError> {
        if let Some(account) = self.fixed.get(id) {
            let (email, credential) = self.described.get(id).cloned().unwrap_or_default();
            return Ok(Some(AccountInfo {
                id: id.to_string(),
                source: "config".into(),
                subdomain: account.subdomain.clone(),
                base_url: account.base_url.clone(),
                hosts: account.hosts.clone(),
                email,
                credential,
                notify_per_minute: account.limit.limit,
                updated_at: None,
            }));
        }
        if self.sealer.is_none() {
            return Ok(None);
        }
        Ok(self
            .queue
            .get_account(id)
            .await?
            .and_then(|raw| serde_json::from_str::<Record>(&raw).ok())
            .map(|r| r.info))
    }

    /// Creates or replaces runtime account `id`; true when it was created.
    pub async fn put(&self, id: &str, spec: &AccountSpec) -> Result<bool, AccountStoreError> {
        let sealer = self.sealer.as_ref().ok_or(AccountStoreError::Disabled)?;
        if self.fixed.contains_key(id) {
            return Err(AccountStoreError::Configured(id.to_string()));
        }
        let config = spec.to_config(id);
        config
            .check()
            .map_err(|(field, message)| AccountStoreError::Invalid(field.into(), message))?;
        let account = Account::from_config(&config, self.default_limit)
            .map_err(|e| AccountStoreError::Invalid("credentials".into(), e.to_string()))?;
        let (credential, secret) = if let Some(t) = &spec.api_token {
            ("api_token", t)
        } else if let Some(t) = &spec.oauth_token {
            ("oauth_token", t)
        } else if let Some(p) = &spec.password {
            ("password", p)
        } else {
            return Err(AccountStoreError::Invalid(
                "api_token".into(),
                "exactly one of api_token, oauth_token or password must be set".into(),
            ));
        };
        let sealed = sealer
            .seal(secret.expose_secret().as_bytes(), id)
            .map_err(|e| AccountStoreError::Invalid("credentials".into(), e.to_string()))?;
        let record = Record {
            info: AccountInfo {
                id: id.to_string(),
                source: "runtime".into(),
                subdomain: spec.subdomain.clone(),
                base_url: account.base_url.clone(),
                hosts: spec.hosts.clone(),
                email: spec.email.clone(),
                credential: credential.into(),
                notify_per_minute: account.limit.limit,
                updated_at: Some(crate::queue::rfc3339_ms(now_ms())),
            },
            explicit_base_url: spec.base_url.is_some(),
            notify_per_minute_override: spec.notify_per_minute,
            sealed,
        };
        let raw = serde_json::to_string(&record)
            .map_err(|e| AccountStoreError::Invalid("record".into(), e.to_string()))?;
        let created = self.queue.put_account(id, &raw).await?;
        self.cache_put(id, Some(Arc::new(account)));
        self.runtime_hosts_changed();
        Ok(created)
    }

    /// Deletes runtime account `id`; true when it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, AccountStoreError> {
        if self.fixed.contains_key(id) {
            return Err(AccountStoreError::Configured(id.to_string()));
        }
        if self.sealer.is_none() {
            return Err(AccountStoreError::Disabled);
        }
        let existed = self.queue.delete_account(id).await?;
        self.cache_put(id, None);
        self.runtime_hosts_changed();
        Ok(existed)
    }

    fn decode(&self, sealer: &Sealer, id: &str, raw: &str) -> Result<Account, RecordError> {
        let record: Record = serde_json::from_str(raw).map_err(RecordError::Malformed)?;
        let secret = sealer.open(&record.sealed, id)?;
        let secret =
            SecretString::from(String::from_utf8(secret).map_err(|_| RecordError::NotUtf8)?);
        let info = record.info;
        let mut config = AccountConfig {
            id: id.to_string(),
            subdomain: info.subdomain,
            base_url: record.explicit_base_url.then_some(info.base_url),
            hosts: info.hosts,
            email: info.email,
            api_token: None,
            oauth_token: None,
            password: None,
            notify_per_minute: record.notify_per_minute_override,
        };
        match info.credential.as_str() {
            "api_token" => config.api_token = Some(secret),
            "oauth_token" => config.oauth_token = Some(secret),
            "password" => config.password = Some(secret),
            other => return Err(RecordError::Kind(other.to_string())),
        }
        Ok(Account::from_config(&config, self.default_limit)?)
    }

    fn cache_get(&self, id: &str) -> Option<CacheEntry> {
        self.cache.lock().ok()?.get(id).cloned()
    }

    fn cache_put(&self, id: &str, account: Option<Arc<Account>>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(id.to_string(), (Instant::now(), account));
        }
    }
}

fn credential_kind(config: &AccountConfig) -> &'static str {
    if config.api_token.is_some() {
        "api_token"
    } else if config.oauth_token.is_some() {
        "oauth_token"
    } else {
        "password"
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

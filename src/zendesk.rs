//! The upstream side: Zendesk accounts with their credentials, the Notify call, and the
//! classification of what upstream answered.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode};
use secrecy::ExposeSecret;

use crate::config::{AccountConfig, Config, ConfigError};
use crate::queue::RateLimit;

/// Pause applied after a 429 that carries no usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Longest pause a `Retry-After` may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A Zendesk account as the gateway uses it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The gateway's id of the account.
    pub id: String,
    /// Zendesk subdomain.
    pub subdomain: String,
    /// Extra host names (proxy routing).
    pub hosts: Vec<String>,
    /// Upstream base URL, without trailing slash.
    pub base_url: String,
    /// `{base_url}/api/v2/apps/notify`, parsed once rather than on every call.
    pub notify_url: reqwest::Url,
    /// The `Authorization` header carrying the account's credentials (marked sensitive,
    /// so it never prints).
    pub authorization: HeaderValue,
    /// The account's Notify budget.
    pub limit: RateLimit,
}

/// Why an account's entry makes no account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// None of `api_token`, `password` and `oauth_token` is set.
    #[error("account {0} has no credentials")]
    NoCredentials(String),
    /// The credentials cannot go in an `Authorization` header.
    #[error("account {0}: credentials contain invalid characters")]
    InvalidCredentials(String),
    /// `base_url` (or the subdomain's URL) makes no valid Notify URL.
    #[error("account {id}: base_url makes no valid URL: {reason}")]
    InvalidBaseUrl {
        /// The account.
        id: String,
        /// The URL parser's reason.
        reason: String,
    },
}

impl Account {
    /// Builds an account from its config entry.
    pub fn from_config(
        config: &AccountConfig,
        default_limit: RateLimit,
    ) -> Result<Self, AccountError> {
        let email = config.email.clone().unwrap_or_default();
        let raw = if let Some(token) = &config.api_token {
            basic(&format!("{email}/token:{}", token.expose_secret()))
        } else if let Some(password) = &config.password {
            basic(&format!("{email}:{}", password.expose_secret()))
        } else if let Some(token) = &config.oauth_token {
            format!("Bearer {}", token.expose_secret())
        } else {
            return Err(AccountError::NoCredentials(config.id.clone()));
        };
        let mut authorization = HeaderValue::from_str(&raw)
            .map_err(|_| AccountError::InvalidCredentials(config.id.clone()))?;
        authorization.set_sensitive(true);
        let base_url = config.base_url();
        let notify_url =
            reqwest::Url::parse(&format!("{base_url}/api/v2/apps/notify")).map_err(|e| {
                AccountError::InvalidBaseUrl {
                    id: config.id.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Account {
            id: config.id.clone(),
            subdomain: config.subdomain.clone(),
            hosts: config.hosts.clone(),
            notify_url,
            base_url,
            authorization,
            limit: RateLimit {
                limit: config.notify_per_minute.unwrap_or(default_limit.limit),
                window_ms: default_limit.window_ms,
            },
        })
    }
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// The configured accounts, by id.
#[derive(Debug, Default)]
pub struct Accounts {
    by_id: HashMap<String, Account>,
}

impl Accounts {
    /// Builds every account of the config; an error names the entry's key.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let default = RateLimit {
            limit: config.delivery.notify_per_minute,
            window_ms: config.delivery.window_ms(),
        };
        let mut by_id = HashMap::with_capacity(config.accounts.len());
        for (i, entry) in config.accounts.iter().enumerate() {
            let account = Account::from_config(entry, default).map_err(|e| {
                let key = match e {
                    AccountError::InvalidBaseUrl { .. } => format!("accounts[{i}].base_url"),
                    _ => format!("accounts[{i}]"),
                };
                ConfigError::invalid(key, e.to_string())
            })?;
            by_id.insert(account.id.clone(), account);
        }
        Ok(Accounts { by_id })
    }

    /// The account with this id.
    pub fn get(&self, id: &str) -> Option<&Account> {
        self.by_id.get(id)
    }

    /// Every account.
    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.by_id.values()
    }
}

/// What an upstream Notify call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyResult {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// 429: the account must pause for `retry_after`.
    RateLimited {
        /// From `Retry-After` (seconds or HTTP date), 60 s when absent.
        retry_after: Duration,
    },
    /// Connect error, timeout, 408 or 5xx: worth retrying.
    Transient {
        /// Upstream status, if one was received.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// 401/403: the credentials are refused.
    AuthFailed {
        /// The status.
        status: u16,
        /// Upstream's answer.
        error: String,
    },
    /// Any other 4xx: retrying cannot help.
    Rejected {
        /// The status.
        status: u16,
        /// Upstream's answer.
        error: String,
    },
}

impl NotifyResult {
    /// Classifies an HTTP answer.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let code = status.as_u16();
        let error = || {
            let text = String::from_utf8_lossy(&body[..body.len().min(1000)]);
            format!("HTTP {code}: {text}")
        };
        if status.is_success() {
            NotifyResult::Delivered { status: code }
        } else if code == 429 {
            NotifyResult::RateLimited {
                retry_after: retry_after(headers, SystemTime::now()).unwrap_or(DEFAULT_RETRY_AFTER),
            }
        } else if code == 408 || status.is_server_error() {
            NotifyResult::Transient {
                status: Some(code),
                error: error(),
            }
        } else if code == 401 || code == 403 {
            NotifyResult::AuthFailed {
                status: code,
                error: error(),
            }
        } else {
            NotifyResult::Rejected {
                status: code,
                error: error(),
            }
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date, capped at one hour.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let delay = if let Ok(secs) = raw.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(raw).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The pooled HTTP client used for upstream calls.
#[derive(Debug, Clone)]
pub struct ZendeskClient {
    http: reqwest::Client,
}

impl ZendeskClient {
    /// A client whose calls time out after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("zenrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ZendeskClient { http })
    }

    /// The underlying client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends one Notify call with exactly `body`.
    pub async fn notify(&self, account: &Account, body: Vec<u8>) -> NotifyResult {
        let sent = self
            .http
            .post(account.notify_url.clone())
            .header(http::header::AUTHORIZATION, account.authorization.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return NotifyResult::Transient {
                    status: None,
                    error: describe(&e),
                }
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => NotifyResult::from_response(status, &headers, &body),
            Err(e) if status.is_success() => {
                // Upstream accepted the call; only its answer was cut short.
                tracing::debug!(error = %describe(&e), "notify answer body unreadable");
                NotifyResult::Delivered {
                    status: status.as_u16(),
                }
            }
            Err(e) => NotifyResult::from_response(status, &headers, describe(&e).as_bytes()),
        }
    }
}

/// A short description of a transport error, without URLs' credentials.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request error"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn classifies_statuses() {
        let h = HeaderMap::new();
        let c = |s: u16| NotifyResult::from_response(StatusCode::from_u16(s).unwrap(), &h, b"x");
        assert_eq!(c(200), NotifyResult::Delivered { status: 200 });
        assert!(
            matches!(c(429), NotifyResult::RateLimited { retry_after } if retry_after == DEFAULT_RETRY_AFTER)
        );
        for s in [408, 500, 502, 503, 504] {
            assert!(matches!(c(s), NotifyResult::Transient { status: Some(x), .. } if x == s));
        }
        for s in [401, 403] {
            assert!(matches!(c(s), NotifyResult::AuthFailed { .. }));
        }
        for s in [400, 404, 413, 422] {
            assert!(matches!(c(s), NotifyResult::Rejected { .. }));
        }
    }

    #[test]
    fn parses_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&date), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("999999"), now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn builds_credentials() {
        let config: AccountConfig = toml::from_str(
            r#"id = "a"
subdomain = "a"
email = "ops@a.example"
api_token = "tok""#,
        )
        .unwrap();
        let limit = RateLimit {
            limit: 100,
            window_ms: 60_000,
        };
        let account = Account::from_config(&config, limit).unwrap();
        let expected = basic("ops@a.example/token:tok");
        assert_eq!(account.authorization.to_str().unwrap(), expected);
        assert!(account.authorization.is_sensitive());
        assert!(!format!("{account:?}").contains("dG9r"));
        assert_eq!(
            account.notify_url.as_str(),
            "https://a.zendesk.com/api/v2/apps/notify"
        );
    }
}

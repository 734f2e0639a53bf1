//! The Apps API proxy (SPEC §5): internal callers and existing Zendesk clients reach the
//! Support and Sell Apps API through the gateway without ever holding Zendesk credentials.
//!
//! A request that no other route takes comes here (its HTTP side is `crate::api::proxy`;
//! this module forwards and knows nothing of the gateway's state). In order:
//! 1. [`normalize`]: the target must be origin-form with a plain path (no encodings, dot or
//!    empty segments) and no rewrite headers — else 404 `route_not_allowed` (400
//!    `header_not_allowed` for headers). Paths other than `/zendesk/...` and `/api/...` get
//!    the router's plain 404.
//! 2. [`routes`]: the method and path must be on the allowlist — else 404
//!    `route_not_allowed`. Nothing refused ever reaches upstream.
//! 3. The account: `/zendesk/{account}/<path>`; else the `Host` (its first label is an
//!    account's `subdomain`, or the host or its first label is one of the account's
//!    `hosts`; configured and runtime accounts alike, see [`crate::hosts`]); else
//!    `proxy.default_account`.
//! 4. The caller: client key as Bearer, or as the Basic password (any user name); scopes as
//!    at ingress (401, 403, 404 `unknown_account`).
//! 5. `POST .../notify` is queued, not forwarded (`crate::api::proxy`).
//! 6. The body is buffered up to `proxy.max_body_bytes` (413 before upstream is touched),
//!    then [`forward`]ed with the account's credentials, each attempt paced per account
//!    ([`pace`]) and retried per SPEC §5 ([`retry`]). Upstream's answer passes through;
//!    a final timeout is 504 `upstream_timeout`, a final connection failure 502.
//!
//! Every answer of the proxy carries `X-Zenrelay-Attempts`: the upstream attempts made (0
//! when nothing was forwarded).

pub mod forward;
pub mod normalize;
pub mod pace;
pub mod retry;
pub mod routes;

use std::time::Duration;

use http::request::Parts;

use crate::config::Config;
use crate::delivery::RetryPolicy;
use crate::zendesk::Account;
use forward::{Failure, Upstream};
use normalize::Target;
use pace::Pacer;
use retry::ProxyRetry;
use routes::Route;

/// Header of every proxy answer: the upstream attempts made.
pub const ATTEMPTS_HEADER: &str = "x-zenrelay-attempts";

/// The proxy's shared parts, built once from config.
pub struct Proxy {
    http: reqwest::Client,
    pacer: Pacer,
    retry: ProxyRetry,
    default_account: Option<String>,
    max_body_bytes: usize,
}

/// What forwarding a request came to, after every attempt.
pub struct Forwarded {
    /// Upstream attempts made.
    pub attempts: u32,
    /// Upstream's last answer, or why there is none.
    pub result: Result<Upstream, Unanswered>,
}

/// Why a forwarded request has no upstream answer.
#[derive(Debug)]
pub enum Unanswered {
    /// The account's `base_url` makes no URL with this path.
    BadUrl,
    /// Too many calls are waiting for the account's pacing turn.
    Busy,
    /// The last attempt failed.
    Failed(Failure),
}

impl Proxy {
    /// Builds the proxy of `config`.
    pub fn from_config(config: &Config) -> Result<Self, reqwest::Error> {
        let p = &config.proxy;
        Ok(Proxy {
            http: forward::client(p.upstream_timeout())?,
            pacer: Pacer::new(p.per_minute, p.burst, Duration::from_millis(p.max_wait_ms)),
            retry: ProxyRetry {
                policy: RetryPolicy {
                    max_attempts: p.max_attempts,
                    base: Duration::from_millis(p.retry_base_ms),
                    cap: Duration::from_millis(p.retry_max_ms),
                },
                retry_after_cap: Duration::from_secs(p.retry_after_cap_seconds),
            },
            default_account: p.default_account.clone(),
            max_body_bytes: p.max_body_bytes,
        })
    }

    /// The account of requests that name none (`proxy.default_account`).
    pub fn default_account(&self) -> Option<&str> {
        self.default_account.as_deref()
    }

    /// The largest body forwarded (`proxy.max_body_bytes`).
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Forwards the request of `parts` to `account`'s Zendesk with its credentials, each
    /// attempt paced per account and retried per SPEC §5.
    pub async fn forward(
        &self,
        parts: &Parts,
        target: &Target<'_>,
        route: Route,
        account: &Account,
        body: bytes::Bytes,
    ) -> Forwarded {
        // Parsed once for every attempt; the path and query were checked, so parsing keeps them.
        let url = match reqwest::Url::parse(&forward::upstream_url(
            account,
            target.path,
            target.query,
        )) {
            Ok(url) => url,
            Err(e) => {
                tracing::error!(account = %account.id, error = %e, "the account's base_url makes no URL");
                return Forwarded {
                    attempts: 0,
                    result: Err(Unanswered::BadUrl),
                };
            }
        };
        let headers = forward::request_headers(&parts.headers, account);
        let method = &parts.method;
        let mut attempt = 0u32;
        loop {
            if self.pacer.acquire(&account.id).await.is_err() {
                return Forwarded {
                    attempts: attempt,
                    result: Err(Unanswered::Busy),
                };
            }
            attempt += 1;
            let outcome = forward::send(&self.http, method, &url, &headers, &body).await;
            let decision = self.retry.decide(method, &outcome);
            if let Some(wait) = self.retry.wait(decision, attempt) {
                tracing::debug!(
                    account = %account.id,
                    route = route.endpoint.name(),
                    attempt,
                    status = outcome.as_ref().ok().map(|u| u.status.as_u16()),
                    error = outcome.as_ref().err().map(Failure::text),
                    wait_ms = wait.as_millis() as u64,
                    "proxy attempt failed; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            match &outcome {
                Ok(up) => tracing::info!(
                    account = %account.id,
                    route = route.endpoint.name(),
                    status = up.status.as_u16(),
                    attempts = attempt,
                    "proxied"
                ),
                Err(failure) => tracing::warn!(
                    account = %account.id,
                    route = route.endpoint.name(),
                    error = failure.text(),
                    attempts = attempt,
                    "proxied call failed"
                ),
            }
            return Forwarded {
                attempts: attempt,
                result: outcome.map_err(Unanswered::Failed),
            };
        }
    }
}

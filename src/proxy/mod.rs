//! The Apps API proxy (SPEC §5): internal callers and existing Zendesk clients reach the
//! Support and Sell Apps API through the gateway without ever holding Zendesk credentials.
//!
//! A request that no other route takes comes here. In order:
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
//! 5. `POST .../notify` is queued, not forwarded ([`notify`]).
//! 6. The body is buffered up to `proxy.max_body_bytes` (413 before upstream is touched),
//!    then [`forward`]ed with the account's credentials, each attempt paced per account
//!    ([`pace`]) and retried per SPEC §5 ([`retry`]). Upstream's answer passes through;
//!    a final timeout is 504 `upstream_timeout`, a final connection failure 502.
//!
//! Every answer of the proxy carries `X-Zenrelay-Attempts`: the upstream attempts made (0
//! when nothing was forwarded).

pub mod forward;
pub mod normalize;
pub mod notify;
pub mod pace;
pub mod retry;
pub mod routes;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::app::AppState;
use crate::config::Config;
use crate::delivery::RetryPolicy;
use crate::error::{ApiError, ErrorCode};
use crate::hosts::Route as HostRoute;
use crate::ingress;
use crate::zendesk::Account;
use forward::Failure;
use normalize::{Refusal, Target};
use pace::Pacer;
use retry::ProxyRetry;
use routes::{Endpoint, Route};

/// Header giving the number of upstream attempts behind an answer.
pub const ATTEMPTS_HEADER: &str = "x-zenrelay-attempts";

/// The proxy's shared parts, built once from config.
pub struct Proxy {
    http: reqwest::Client,
    pacer: Pacer,
    retry: ProxyRetry,
    default_account: Option<String>,
    max_body_bytes: usize,
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
}

fn route_not_allowed(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::RouteNotAllowed, message)
}

fn refused(refusal: Refusal) -> ApiError {
    tracing::info!(reason = %refusal.message(), "proxy request refused");
    match refusal {
        Refusal::Header(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::HeaderNotAllowed,
            refusal.message(),
        ),
        _ => route_not_allowed(refusal.message()),
    }
}

/// Entry point: every request that no other route takes.
pub async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = match normalize::target(&parts.uri) {
        Ok(Some(target)) => target,
        Ok(None) => return ApiError::not_found().into_response(),
        Err(refusal) => return with_attempts(refused(refusal).into_response(), 0),
    };
    match proxy(&state, &parts, target, body).await {
        Ok(response) => response,
        Err(e) => {
            let unauthorized = e.status == StatusCode::UNAUTHORIZED;
            let mut response = with_attempts(e.into_response(), 0);
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"zenrelay\", Bearer realm=\"zenrelay\""),
                );
            }
            response
        }
    }
}

fn with_attempts(mut response: Response, attempts: u32) -> Response {
    response
        .headers_mut()
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    response
}

/// The account a request is for: named by the path, else by the `Host` (configured or
/// runtime accounts), else `proxy.default_account`.
async fn account_id(
    state: &AppState,
    target: &Target<'_>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    if let Some(id) = target.account {
        return Ok(id.to_string());
    }
    if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        match state.directory().resolve_host(host).await {
            HostRoute::Account(id) => return Ok(id),
            HostRoute::Ambiguous => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::UnknownAccount,
                    format!("several accounts claim the Host {host:?}; name the account in the path (/zendesk/{{account}}/...)"),
                ))
            }
            HostRoute::Nothing => {}
        }
    }
    state.proxy().default_account.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownAccount,
            "no account is named by the path (/zendesk/{account}/...) or the Host, and proxy.default_account is not set",
        )
    })
}

async fn proxy(
    state: &AppState,
    parts: &Parts,
    target: Target<'_>,
    body: Body,
) -> Result<Response, ApiError> {
    normalize::check_headers(&parts.headers).map_err(refused)?;
    let route = routes::resolve(&parts.method, target.path).ok_or_else(|| {
        route_not_allowed(format!(
            "{} {} is not an Apps API route the proxy allows",
            parts.method, target.path
        ))
    })?;
    let id = account_id(state, &target, &parts.headers).await?;
    let client = state.clients().authenticate_bearer_or_basic(&parts.headers);
    let (_, account) = ingress::authorize_client(state, client, &id).await?;
    let response = if route.endpoint == Endpoint::Notify {
        with_attempts(
            notify::handle(state, &account, &parts.headers, body).await,
            0,
        )
    } else {
        let body = ingress::read_body(&parts.headers, body, state.proxy().max_body_bytes).await?;
        forward_with_retries(state.proxy(), parts, &target, route, &account, body).await
    };
    state
        .metrics()
        .proxy_request(&account.id, response.status().as_u16());
    Ok(response)
}

async fn forward_with_retries(
    proxy: &Proxy,
    parts: &Parts,
    target: &Target<'_>,
    route: Route,
    account: &Account,
    body: bytes::Bytes,
) -> Response {
    // Parsed once for every attempt; the path and query were checked, so parsing keeps them.
    let url = match reqwest::Url::parse(&forward::upstream_url(account, target.path, target.query))
    {
        Ok(url) => url,
        Err(e) => {
            tracing::error!(account = %account.id, error = %e, "the account's base_url makes no URL");
            let e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::UpstreamUrl,
                "the account's upstream URL is invalid",
            );
            return with_attempts(e.into_response(), 0);
        }
    };
    let headers = forward::request_headers(&parts.headers, account);
    let method = &parts.method;
    let mut attempt = 0u32;
    loop {
        if proxy.pacer.acquire(&account.id).await.is_err() {
            let e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::ProxyBusy,
                format!(
                    "too many calls are waiting for account {:?}; retry later",
                    account.id
                ),
            )
            .with_retry_after(1);
            return with_attempts(e.into_response(), attempt);
        }
        attempt += 1;
        let outcome = forward::send(&proxy.http, method, &url, &headers, &body).await;
        let decision = proxy.retry.decide(method, &outcome);
        if let Some(wait) = proxy.retry.wait(decision, attempt) {
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
        let response = match outcome {
            Ok(up) => {
                tracing::info!(
                    account = %account.id,
                    route = route.endpoint.name(),
                    status = up.status.as_u16(),
                    attempts = attempt,
                    "proxied"
                );
                let mut response = Response::new(Body::from(up.body));
                *response.status_mut() = up.status;
                *response.headers_mut() = up.headers;
                response
            }
            Err(failure) => {
                tracing::warn!(
                    account = %account.id,
                    route = route.endpoint.name(),
                    error = failure.text(),
                    attempts = attempt,
                    "proxied call failed"
                );
                failure_error(&failure).into_response()
            }
        };
        return with_attempts(response, attempt);
    }
}

fn failure_error(failure: &Failure) -> ApiError {
    match failure {
        Failure::Timeout(text) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamTimeout,
            format!("Zendesk did not answer in time: {text}"),
        ),
        Failure::Connect(text) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUnreachable,
            format!("cannot connect to Zendesk: {text}"),
        ),
        Failure::Broken(text) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamError,
            format!("the connection to Zendesk broke: {text}"),
        ),
    }
}

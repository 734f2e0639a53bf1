//! The proxy's HTTP side: every request that no other route takes (see [`crate::proxy`]
//! for the order of checks). Finds the account and the caller, queues `POST
//! .../apps/notify` ([`crate::api::proxy_notify`]) and forwards the rest.
//!
//! Every answer carries `X-Zenrelay-Attempts`: the upstream attempts made (0 when nothing
//! was forwarded).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::api::extract::{authorize, read_body};
use crate::api::proxy_notify;
use crate::error::{ApiError, ErrorCode};
use crate::hosts::Route as HostRoute;
use crate::proxy::forward::Failure;
use crate::proxy::normalize::{self, Refusal, Target};
use crate::proxy::routes::{self, Endpoint};
use crate::proxy::{Forwarded, Unanswered, ATTEMPTS_HEADER};
use crate::state::AppState;

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
    let account = authorize(state, client, &id).await?;
    let response = if route.endpoint == Endpoint::Notify {
        with_attempts(
            proxy_notify::handle(state, &account, &parts.headers, body).await,
            0,
        )
    } else {
        let proxy = state.proxy();
        let body = read_body(&parts.headers, body, proxy.max_body_bytes()).await?;
        let forwarded = proxy.forward(parts, &target, route, &account, body).await;
        answer(forwarded, &account.id)
    };
    state
        .metrics()
        .proxy_request(&account.id, response.status().as_u16());
    Ok(response)
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
    state
        .proxy()
        .default_account()
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownAccount,
                "no account is named by the path (/zendesk/{account}/...) or the Host, and proxy.default_account is not set",
            )
        })
}

/// The answer to a forwarded request: upstream's, or the gateway's error.
fn answer(forwarded: Forwarded, account: &str) -> Response {
    let response = match forwarded.result {
        Ok(up) => {
            let mut response = Response::new(Body::from(up.body));
            *response.status_mut() = up.status;
            *response.headers_mut() = up.headers;
            response
        }
        Err(Unanswered::BadUrl) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUrl,
            "the account's upstream URL is invalid",
        )
        .into_response(),
        Err(Unanswered::Busy) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ProxyBusy,
            format!("too many calls are waiting for account {account:?}; retry later"),
        )
        .with_retry_after(1)
        .into_response(),
        Err(Unanswered::Failed(failure)) => failure_error(&failure).into_response(),
    };
    with_attempts(response, forwarded.attempts)
}

fn with_attempts(mut response: Response, attempts: u32) -> Response {
    response
        .headers_mut()
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    response
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

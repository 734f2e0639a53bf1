//! Who is calling and what they send: the extractors of the handlers, and the checks of a
//! request's headers and body that several handlers share.
//!
//! Extractors answer in the documented order of checks: the path (400), the key (401), the
//! client's throttle budget (429), admin rights (403), the account's scope (403), and the
//! account itself (404).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path};
use http::request::Parts;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::auth::Client;
use crate::config::valid_name;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::zendesk::Account;

/// An internal caller: a valid client key as `Authorization: Bearer <key>` (401 without
/// one), within its throttle budget (429).
pub struct Caller(pub Arc<Client>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = state.clients().authenticate(&parts.headers);
        admitted(state, client).cloned().map(Caller)
    }
}

/// A caller with an admin key (403 for another key).
pub struct Admin(pub Arc<Client>);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Caller(client) = Caller::from_request_parts(parts, state).await?;
        if !client.admin {
            return Err(forbidden("this endpoint needs an admin key"));
        }
        Ok(Admin(client))
    }
}

impl Admin {
    /// `account`, if this admin key reaches it (403) and it is configured or registered
    /// (404).
    pub async fn existing(&self, state: &AppState, account: &str) -> Result<(), ApiError> {
        self.reaching(account)?;
        if !valid_name(account) || state.directory().resolve(account).await?.is_none() {
            return Err(unregistered_account(account));
        }
        Ok(())
    }

    /// `account`, if this admin key reaches it (403), whether or not it exists.
    pub fn reaching(&self, account: &str) -> Result<(), ApiError> {
        if !self.0.reaches(account) {
            return Err(out_of_scope(account));
        }
        Ok(())
    }
}

/// The path's one parameter (400 `bad_path` when it does not decode).
pub struct PathParam(pub String);

impl FromRequestParts<AppState> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        path_value(parts, state).await.map(PathParam)
    }
}

/// The account of the path (`{account}`) that an admin key reaches, which exists.
pub struct AdminAccount(pub String);

impl FromRequestParts<AppState> for AdminAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let account = path_value(parts, state).await?;
        Admin::from_request_parts(parts, state)
            .await?
            .existing(state, &account)
            .await?;
        Ok(AdminAccount(account))
    }
}

/// The account of the path (`{account}`) that an admin key reaches, existing or not (to
/// register it).
pub struct AdminTarget(pub String);

impl FromRequestParts<AppState> for AdminTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let account = path_value(parts, state).await?;
        Admin::from_request_parts(parts, state)
            .await?
            .reaching(&account)?;
        Ok(AdminTarget(account))
    }
}

/// The account of the path (`{account}`) as a caller may use it: configured or runtime,
/// within the caller's scopes.
pub struct CallerAccount(pub Arc<Account>);

impl FromRequestParts<AppState> for CallerAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let account = path_value(parts, state).await?;
        let client = state.clients().authenticate(&parts.headers);
        authorize(state, client, &account).await.map(CallerAccount)
    }
}

/// The account `account` for an already identified caller (`None`: none): 401 without a
/// caller, 429 over its throttle budget, 403 outside its scopes, 404 for an account that
/// is neither configured nor registered.
pub async fn authorize(
    state: &AppState,
    client: Option<&Arc<Client>>,
    account: &str,
) -> Result<Arc<Account>, ApiError> {
    let client = admitted(state, client)?;
    if !client.reaches(account) {
        return Err(out_of_scope(account));
    }
    match state.directory().resolve(account).await? {
        Some(acc) => Ok(acc),
        None => Err(unknown_account(account)),
    }
}

/// A caller, if any, within its throttle budget.
fn admitted<'a>(
    state: &AppState,
    client: Option<&'a Arc<Client>>,
) -> Result<&'a Arc<Client>, ApiError> {
    let client = client.ok_or_else(ApiError::unauthorized)?;
    state.throttle().client(&client.name)?;
    Ok(client)
}

/// 404 for an account that is neither configured nor registered.
pub fn unknown_account(account: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownAccount,
        format!("no account {account:?} is configured"),
    )
}

/// 404 for an account an admin names that is neither configured nor registered.
pub fn unregistered_account(account: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownAccount,
        format!("no account {account:?} is configured or registered"),
    )
}

/// 403 for an account outside the key's scopes.
fn out_of_scope(account: &str) -> ApiError {
    forbidden(format!("this key may not use account {account:?}"))
}

/// 403 with `message`.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

/// The path's one parameter (400 when it does not decode).
pub async fn path_value(parts: &mut Parts, state: &AppState) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadPath, e.body_text()))
}

/// A JSON request body after the caller's checks, in the documented order: media type
/// (415), `Idempotency-Key` (400), size (413, at most `limit` bytes) and JSON (400).
pub async fn json_request(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Option<String>, Value), ApiError> {
    require_json(headers)?;
    let idempotency = idempotency_key(headers)?;
    let bytes = read_body(headers, body, limit).await?;
    Ok((idempotency, parse_json(&bytes)?))
}

/// Requires a JSON media type (415).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/json") => Ok(()),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON (Content-Type: application/json)",
        )),
    }
}

/// Reads at most `limit` bytes of body; a larger body (by `Content-Length` or as it
/// streams) is refused with 413 without being read further.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = |size: Option<u64>| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the request body exceeds {limit} bytes"),
        )
        .with_details(vec![json!({"limit": limit, "size": size})])
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > limit as u64 {
            return Err(too_large(Some(len)));
        }
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(declared)),
        Err(e) => Err(match crate::server::BodyTimeout::find(e.as_ref()) {
            Some(timeout) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BodyTimeout,
                timeout.to_string(),
            ),
            None => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnreadableBody,
                format!("could not read the request body: {e}"),
            ),
        }),
    }
}

/// Parses JSON, answering 400 with the parser's position on failure.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// The `Idempotency-Key` header, if any; 400 when malformed.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(v) if !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(v.to_string()))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadIdempotencyKey,
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )),
    }
}

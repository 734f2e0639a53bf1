//! Ingress for internal callers: `POST /v1/accounts/{account}/notify`, `.../notify/batch`
//! and `GET /v1/events/{id}`.
//!
//! Order of checks: key (401) → client throttle (429) → account (403/404) → media type
//! (415) → raw size (413, before the body is read) → JSON (400) → schema (422) → upstream
//! size (413) → idempotency and depth (422/429) → stored (202). Nothing is written unless every check
//! passes, and 202 is answered only once Redis has stored the event.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Client;
use crate::domain::{
    fingerprint, partition_of, EventError, EventId, NotifyEvent, NOTIFY_MAX_BYTES,
};
use crate::error::{ApiError, ErrorCode};
use crate::queue::{EnqueueBatch, EnqueueOutcome, NewEvent};
use crate::zendesk::Account;

/// How long an `Idempotency-Key` is remembered, in seconds.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// Authenticates the caller (401) and takes one request from its throttle budget (429).
pub fn authenticate<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Client, ApiError> {
    let client = state
        .clients()
        .authenticate(headers)
        .ok_or_else(ApiError::unauthorized)?;
    state.throttle().client(&client.name)?;
    Ok(client)
}

/// Authenticates the caller and resolves an account it may use (configured or runtime).
pub async fn authorize<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    account: &str,
) -> Result<(&'a Client, Arc<Account>), ApiError> {
    let client = state.clients().authenticate(headers);
    authorize_client(state, client, account).await
}

/// Resolves an account that an already identified caller (`None`: none) may use: 401
/// without a caller, 429 over its throttle budget, 403 outside its scopes, 404 for an
/// account that is neither configured nor registered.
pub async fn authorize_client<'a>(
    state: &'a AppState,
    client: Option<&'a Client>,
    account: &str,
) -> Result<(&'a Client, Arc<Account>), ApiError> {
    let client = client.ok_or_else(ApiError::unauthorized)?;
    state.throttle().client(&client.name)?;
    if !client.reaches(account) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("this key may not use account {account:?}"),
        ));
    }
    match state.directory().resolve(account).await? {
        Some(acc) => Ok((client, acc)),
        None => Err(unknown_account(account)),
    }
}

/// 404 for an account that is neither configured nor registered.
pub fn unknown_account(account: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownAccount,
        format!("no account {account:?} is configured"),
    )
}

fn path_value(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadPath, e.body_text()))
}

/// Requires a JSON media type.
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

/// Validates one event document and turns it into what the queue stores.
pub fn prepare(
    state: &AppState,
    account: &Account,
    value: &Value,
    idempotency: Option<String>,
) -> Result<NewEvent, ApiError> {
    let errors = state.notify_schema().check(value);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let event = match NotifyEvent::from_json(value) {
        Ok(event) => event,
        Err(EventError::Invalid(errors)) => return Err(ApiError::invalid(errors)),
        Err(EventError::TooLarge { size }) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::NotifyTooLarge,
                format!("the Notify request would be {size} bytes; Zendesk accepts at most {NOTIFY_MAX_BYTES}"),
            )
            .with_details(vec![json!({"size": size, "limit": NOTIFY_MAX_BYTES})]))
        }
    };
    let config = state.config();
    let ttl_seconds = event
        .ttl_seconds
        .unwrap_or(config.delivery.default_ttl_seconds);
    Ok(NewEvent {
        id: EventId::new(partition_of(&account.id, config.redis.partitions)),
        priority: event.priority,
        ttl_ms: ttl_seconds.saturating_mul(1000),
        payload: event.payload,
        agents: event.agents,
        idempotency: idempotency.map(|key| (key, fingerprint(value))),
    })
}

fn batch_for(state: &AppState, account: &Account, events: Vec<NewEvent>) -> EnqueueBatch {
    EnqueueBatch {
        account: account.id.clone(),
        limit: account.limit,
        max_depth: state.config().delivery.max_queue_depth,
        idempotency_ttl_secs: IDEMPOTENCY_TTL_SECS,
        events,
    }
}

fn queue_full(state: &AppState, account: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::QueueFull,
        format!("account {account:?} already holds the most undelivered events allowed"),
    )
    .with_retry_after(state.config().delivery.notify_window_seconds)
}

fn idempotency_mismatch() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used with a different request body",
    )
}

/// Stores one event and answers 202 once Redis holds it.
pub async fn enqueue_one(
    state: &AppState,
    account: &Account,
    event: NewEvent,
) -> Result<(String, u64), ApiError> {
    match store_one(state, account, event, IDEMPOTENCY_TTL_SECS).await? {
        Stored::New { id, deliveries } | Stored::Duplicate { id, deliveries } => {
            Ok((id, deliveries))
        }
        Stored::KeyReused => Err(idempotency_mismatch()),
    }
}

/// What storing one event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New {
        /// The event id.
        id: String,
        /// Its Notify calls.
        deliveries: u64,
    },
    /// An earlier request with the same idempotency key and body stored it.
    Duplicate {
        /// The earlier event's id.
        id: String,
        /// Its Notify calls.
        deliveries: u64,
    },
    /// The idempotency key was used with another body: nothing stored.
    KeyReused,
}

/// Stores one event, its idempotency key (if any) remembered for `idempotency_ttl_secs`.
pub async fn store_one(
    state: &AppState,
    account: &Account,
    event: NewEvent,
    idempotency_ttl_secs: u64,
) -> Result<Stored, ApiError> {
    let mut batch = batch_for(state, account, vec![event]);
    batch.idempotency_ttl_secs = idempotency_ttl_secs;
    let outcomes = state.queue().enqueue(batch).await?;
    match outcomes.into_iter().next() {
        Some(EnqueueOutcome::Stored { id, deliveries }) => {
            state.wake_worker_for(&account.id);
            state.metrics().events_accepted(&account.id, 1);
            tracing::debug!(event_id = %id, account = %account.id, deliveries, "event stored");
            Ok(Stored::New { id, deliveries })
        }
        Some(EnqueueOutcome::Duplicate { id, deliveries }) => {
            Ok(Stored::Duplicate { id, deliveries })
        }
        Some(EnqueueOutcome::IdempotencyMismatch) => Ok(Stored::KeyReused),
        Some(EnqueueOutcome::QueueFull) => Err(queue_full(state, &account.id)),
        None => Err(crate::queue::QueueError::Protocol("enqueue answered nothing".into()).into()),
    }
}

/// The body of a Notify event; its schema in the OpenAPI description is replaced by the
/// very JSON Schema ingress validates with ([`crate::domain::notify_schema`]).
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = NotifyEvent)]
pub struct NotifyEventDoc {
    /// Target app.
    pub app_id: u64,
    /// Event name.
    pub event: String,
}

/// `POST /v1/accounts/{account}/notify/batch` body.
#[derive(Debug, utoipa::ToSchema)]
pub struct BatchRequest {
    /// Up to `server.max_batch_events` events, stored independently.
    pub events: Vec<NotifyEventDoc>,
}

/// 202 answer: the event is stored.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The event id.
    pub id: String,
    /// The account.
    pub account: String,
    /// Notify calls it will make.
    pub deliveries: u64,
}

/// 200 answer of a batch: one result per item, `{"id", "deliveries"}` or `{"error"}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// The account.
    pub account: String,
    /// One result per item, in order.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

/// The common start of the notify handlers, in the documented order of checks: the
/// account the caller may use, its `Idempotency-Key`, and the JSON body.
async fn read_request(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Arc<Account>, Option<String>, Value), ApiError> {
    let account_id = path_value(path)?;
    let (_, account) = authorize(state, headers, &account_id).await?;
    require_json(headers)?;
    let idempotency = idempotency_key(headers)?;
    let bytes = read_body(headers, body, state.config().server.max_body_bytes).await?;
    let value = parse_json(&bytes)?;
    Ok((account, idempotency, value))
}

/// Stores one event for delivery to the account's Notify endpoint.
#[utoipa::path(post, path = "/v1/accounts/{account}/notify", tag = "ingress",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (1-255 visible ASCII)")),
    request_body(content = NotifyEventDoc, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored", body = Accepted),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Key not allowed for this account", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
        (status = 413, description = "Too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "Schema violation or reused idempotency key", body = crate::error::ErrorBody),
        (status = 429, description = "Queue full or client throttled", body = crate::error::ErrorBody),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn notify(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (account, idempotency, value) = read_request(&state, path, &headers, body).await?;
    let event = prepare(&state, &account, &value, idempotency)?;
    let (id, deliveries) = enqueue_one(&state, &account, event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "account": account.id, "deliveries": deliveries})),
    )
        .into_response())
}

/// `POST /v1/accounts/{account}/notify/batch`: `{"events": [...]}`; one result per item,
/// items stored independently.
#[utoipa::path(post, path = "/v1/accounts/{account}/notify/batch", tag = "ingress",
    security(("bearer" = [])),
    params(("account" = String, Path, description = "Account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key; item i uses KEY:i")),
    request_body(content = BatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per item", body = BatchAnswer),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 403, description = "Key not allowed for this account", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown account", body = crate::error::ErrorBody),
        (status = 413, description = "Too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "Not a list of events", body = crate::error::ErrorBody),
        (status = 429, description = "Client throttled", body = crate::error::ErrorBody),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn notify_batch(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (account, idempotency, value) = read_request(&state, path, &headers, body).await?;
    let max = state.config().server.max_batch_events;
    let items = match value.get("events") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= max => items,
        Some(Value::Array(items)) if items.len() > max => {
            return Err(ApiError::invalid(vec![crate::domain::FieldError::new(
                "/events",
                format!("at most {max} events per batch (got {})", items.len()),
            )]))
        }
        _ => {
            return Err(ApiError::invalid(vec![crate::domain::FieldError::new(
                "/events",
                "must be a non-empty array of events",
            )]))
        }
    };
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut ready = Vec::new();
    let mut positions = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = idempotency.as_ref().map(|k| format!("{k}:{i}"));
        match prepare(&state, &account, item, key) {
            Ok(event) => {
                positions.push(i);
                ready.push(event);
            }
            Err(e) => results[i] = Some(item_error(&e, i)),
        }
    }
    if !ready.is_empty() {
        let outcomes = state
            .queue()
            .enqueue(batch_for(&state, &account, ready))
            .await?;
        let mut stored = 0u64;
        for (i, outcome) in positions.into_iter().zip(outcomes) {
            results[i] = Some(match outcome {
                EnqueueOutcome::Stored { id, deliveries } => {
                    stored += 1;
                    json!({"id": id, "deliveries": deliveries})
                }
                EnqueueOutcome::Duplicate { id, deliveries } => {
                    json!({"id": id, "deliveries": deliveries})
                }
                EnqueueOutcome::IdempotencyMismatch => item_error(&idempotency_mismatch(), i),
                EnqueueOutcome::QueueFull => item_error(&queue_full(&state, &account.id), i),
            });
        }
        if stored > 0 {
            state.wake_worker_for(&account.id);
            state.metrics().events_accepted(&account.id, stored);
            tracing::debug!(account = %account.id, stored, "batch stored");
        }
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| json!({"error": {"code": "not_stored", "message": "not stored"}}))
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({"account": account.id, "results": results})),
    )
        .into_response())
}

/// An item's error in a batch answer: the error body with its status, pointers
/// prefixed with the item's position.
fn item_error(e: &ApiError, index: usize) -> Value {
    let details: Vec<Value> = e
        .details
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if let Some(p) = d.get("pointer").and_then(Value::as_str) {
                d["pointer"] = Value::String(format!("/events/{index}{p}"));
            }
            d
        })
        .collect();
    json!({"error": {"status": e.status.as_u16(), "code": e.code.as_str(), "message": e.message, "details": details}})
}

/// `GET /v1/events/{id}`: visible only to keys that reach the event's account.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "ingress",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event and its deliveries", body = crate::queue::EventRecord),
        (status = 401, description = "No or bad key", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown event", body = crate::error::ErrorBody),
        (status = 429, description = "Client throttled", body = crate::error::ErrorBody),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn event_status(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = path_value(path)?;
    let client = authenticate(&state, &headers)?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownEvent,
            "no such event",
        )
    };
    let id = EventId::parse(&raw).ok_or_else(missing)?;
    let record = state.queue().event(&id).await?.ok_or_else(missing)?;
    if !client.reaches(&record.account) {
        return Err(missing());
    }
    Ok(Json(record).into_response())
}

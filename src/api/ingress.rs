//! Ingress for internal callers: `POST /v1/accounts/{account}/notify`, `.../notify/batch`
//! and `GET /v1/events/{id}`.
//!
//! Order of checks: key (401) → client throttle (429) → account (403/404) → media type
//! (415) → raw size (413, before the body is read) → JSON (400) → schema (422) → upstream
//! size (413) → idempotency and depth (422/429) → stored (202). Nothing is written unless every check
//! passes, and 202 is answered only once Redis has stored the event.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::api::extract::{json_request, Caller, CallerAccount, PathParam};
use crate::domain::{EventId, FieldError};
use crate::error::{ApiError, ErrorCode};
use crate::intake::IDEMPOTENCY_TTL_SECS;
use crate::state::AppState;

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
    CallerAccount(account): CallerAccount,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.config().server.max_body_bytes;
    let (idempotency, value) = json_request(&headers, body, limit).await?;
    let intake = state.intake();
    let event = intake.prepare(&account.id, &value, idempotency)?;
    let stored = intake
        .store_one(&account, event, IDEMPOTENCY_TTL_SECS)
        .await?;
    let accepted = Accepted {
        id: stored.id,
        account: account.id.clone(),
        deliveries: stored.deliveries,
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
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
    CallerAccount(account): CallerAccount,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.config().server.max_body_bytes;
    let (idempotency, value) = json_request(&headers, body, limit).await?;
    let items = batch_items(&value, state.config().server.max_batch_events)?;
    let intake = state.intake();
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut ready = Vec::new();
    let mut positions = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = idempotency.as_ref().map(|k| format!("{k}:{i}"));
        match intake.prepare(&account.id, item, key) {
            Ok(event) => {
                positions.push(i);
                ready.push(event);
            }
            Err(e) => results[i] = Some(item_error(&e.into(), i)),
        }
    }
    if !ready.is_empty() {
        let outcomes = intake.store_batch(&account, ready).await?;
        for (i, outcome) in positions.into_iter().zip(outcomes) {
            results[i] = Some(match outcome {
                Ok(stored) => json!({"id": stored.id, "deliveries": stored.deliveries}),
                Err(e) => item_error(&e.into(), i),
            });
        }
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| json!({"error": {"code": "not_stored", "message": "not stored"}}))
        })
        .collect();
    let answer = BatchAnswer {
        account: account.id.clone(),
        results,
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// The events of a batch request: a non-empty array of at most `max` (422 otherwise).
fn batch_items(value: &Value, max: usize) -> Result<&Vec<Value>, ApiError> {
    match value.get("events") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= max => Ok(items),
        Some(Value::Array(items)) if items.len() > max => {
            Err(ApiError::invalid(vec![FieldError::new(
                "/events",
                format!("at most {max} events per batch (got {})", items.len()),
            )]))
        }
        _ => Err(ApiError::invalid(vec![FieldError::new(
            "/events",
            "must be a non-empty array of events",
        )])),
    }
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
    PathParam(raw): PathParam,
    Caller(client): Caller,
) -> Result<Response, ApiError> {
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

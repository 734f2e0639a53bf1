//! `POST /v1/webhooks/{name}`: a signed webhook stored as a Notify event of its account
//! (the checks and signatures are described in [`crate::webhooks`]).

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::api::extract::{parse_json, read_body, require_json, unknown_account, PathParam};
use crate::api::ingress::Accepted;
use crate::domain::FieldError;
use crate::error::{ApiError, ErrorCode};
use crate::intake::{IntakeError, Stored};
use crate::state::AppState;
use crate::webhooks::SignatureError;

/// Receives a signed webhook and stores the Notify event it maps to.
#[utoipa::path(post, path = "/v1/webhooks/{name}", tag = "webhooks",
    params(
        ("name" = String, Path, description = "Webhook name"),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks message id"),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks Unix time"),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks `v1,<base64>` signatures"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub `sha256=<hex>` signature"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "GitHub delivery id"),
    ),
    request_body(content = Object, content_type = "application/json", description = "The source's payload"),
    responses(
        (status = 202, description = "Stored", body = crate::api::ingress::Accepted),
        (status = 200, description = "The condition did not match: acknowledged, nothing stored"),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or bad signature, or stale timestamp", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown webhook or account", body = crate::error::ErrorBody),
        (status = 409, description = "Delivery id already accepted", body = crate::error::ErrorBody),
        (status = 413, description = "Too large", body = crate::error::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "Schema violation or unmappable payload", body = crate::error::ErrorBody),
        (status = 429, description = "Throttled or the account's queue is full", body = crate::error::ErrorBody),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    PathParam(name): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hook = state.webhooks().get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownWebhook,
            format!("no webhook {name:?}"),
        )
    })?;
    state.throttle().webhook(&hook.name)?;
    let bytes = read_body(&headers, body, state.config().server.max_body_bytes).await?;
    let delivery_id = hook
        .verify(&headers, &bytes, SystemTime::now())
        .map_err(|e| {
            tracing::info!(webhook = %hook.name, reason = ?e, "webhook signature refused");
            signature_refused(e)
        })?;
    require_json(&headers)?;
    let payload = parse_json(&bytes)?;
    if let Some(schema) = &hook.schema {
        let errors = schema.check(&payload);
        if !errors.is_empty() {
            return Err(ApiError::invalid(errors));
        }
    }
    if !hook.matches(&payload) {
        tracing::debug!(webhook = %hook.name, "webhook condition not met; nothing stored");
        return Ok((StatusCode::OK, Json(json!({"skipped": true}))).into_response());
    }
    let event_doc = hook.map(&payload).map_err(unmappable)?;
    let account = state
        .directory()
        .resolve(&hook.account)
        .await?
        .ok_or_else(|| unknown_account(&hook.account))?;
    // The delivery id is the event's idempotency key: storing and remembering it are one
    // atomic step, so a sender retrying after a failure is never refused as a replay.
    let idempotency = delivery_id.map(|id| replay_key(&hook.name, &id));
    let intake = state.intake();
    let event = intake.prepare(&account.id, &event_doc, idempotency)?;
    let replayed = || {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ReplayedWebhook,
            "this delivery id was already accepted",
        )
    };
    let ttl = hook.replay_window.as_secs().max(1);
    // A delivery id seen before is a replay, whether or not the body is the same.
    match intake.store_one(&account, event, ttl).await {
        Ok(Stored {
            id,
            deliveries,
            new: true,
        }) => {
            tracing::info!(webhook = %hook.name, event_id = %id, "webhook stored");
            let accepted = Accepted {
                id,
                account: account.id.clone(),
                deliveries,
            };
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        Ok(Stored { new: false, .. }) | Err(IntakeError::KeyReused) => Err(replayed()),
        Err(e) => Err(e.into()),
    }
}

/// The idempotency key under which a webhook delivery id is remembered. Its namespace is
/// one no client can reach: client `Idempotency-Key`s are visible ASCII only
/// ([`crate::api::extract::idempotency_key`]), and these contain a space. So no client key can make a
/// webhook delivery be refused as a replay, or learn whether one arrived.
fn replay_key(hook: &str, delivery_id: &str) -> String {
    format!("webhook {hook}:{delivery_id}")
}

/// 401 for a refused signature.
fn signature_refused(e: SignatureError) -> ApiError {
    let (code, message) = match e {
        SignatureError::Missing(h) => (
            ErrorCode::MissingSignature,
            format!("missing or malformed {h} header"),
        ),
        SignatureError::Stale => (
            ErrorCode::StaleTimestamp,
            "webhook-timestamp is too far from now".to_string(),
        ),
        SignatureError::Mismatch => (ErrorCode::BadSignature, "no signature matches".to_string()),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// 422 naming each payload pointer the webhook's mapping needs but the payload lacks.
fn unmappable(missing: Vec<FieldError>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::UnmappablePayload,
        "the payload lacks fields the webhook's mapping needs",
    )
    .with_details(
        missing
            .into_iter()
            .map(|e| json!({"pointer": e.pointer, "message": e.message}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::idempotency_key;
    use http::HeaderValue;

    #[test]
    fn replay_keys_are_out_of_every_client_key_s_reach() {
        for (hook, id) in [("statuspage", "msg_squat"), ("gh", "1-2-3"), ("h", "")] {
            let key = replay_key(hook, id);
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", HeaderValue::from_str(&key).unwrap());
            assert!(
                idempotency_key(&headers).is_err(),
                "a client could send {key:?}"
            );
        }
    }
}

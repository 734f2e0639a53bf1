//! `POST .../apps/notify` through the proxy: not forwarded, but validated and queued like an
//! ingress event (so it is delivered under the account's Notify limit, with retries), and
//! answered the way Zendesk answers: 200 with the JSON `null`, or 413 with the JSON string
//! `"Payload too large"`. `X-Zenrelay-Event-Id` names the queued event. Other problems
//! (malformed JSON, schema, queue full, storage down) keep the gateway's JSON errors.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::api::extract::json_request;
use crate::error::ApiError;
use crate::intake::IDEMPOTENCY_TTL_SECS;
use crate::state::AppState;
use crate::zendesk::Account;

/// Header naming the event a proxied Notify call was queued as.
pub const EVENT_ID_HEADER: &str = "x-zenrelay-event-id";

/// Validates, queues and answers one proxied Notify call.
pub async fn handle(
    state: &AppState,
    account: &Account,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match queue(state, account, headers, body).await {
        Ok(id) => {
            let mut resp = json_response(StatusCode::OK, "null");
            if let Ok(value) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert(EVENT_ID_HEADER, value);
            }
            resp
        }
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => {
            json_response(StatusCode::PAYLOAD_TOO_LARGE, "\"Payload too large\"")
        }
        Err(e) => e.into_response(),
    }
}

async fn queue(
    state: &AppState,
    account: &Account,
    headers: &HeaderMap,
    body: Body,
) -> Result<String, ApiError> {
    let config = state.config();
    let limit = config
        .server
        .max_body_bytes
        .min(config.proxy.max_body_bytes);
    let (idempotency, value) = json_request(headers, body, limit).await?;
    let intake = state.intake();
    let event = intake.prepare(&account.id, &value, idempotency)?;
    let stored = intake
        .store_one(account, event, IDEMPOTENCY_TTL_SECS)
        .await?;
    Ok(stored.id)
}

fn json_response(status: StatusCode, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

//! `POST /api/v2/apps/notify`: the rolling-window limit, the 1 MB cap, the documented body, and
//! the record of what arrived.
//!
//! Order of checks: the rate limit first (a 429 is not counted in the window), then the size
//! (more than 1,048,576 bytes is 413 `"Payload too large"`), then the body. Every request that
//! passes the limiter takes a slot, whatever its outcome, as Zendesk counts requests, not
//! successes. Every attempt is recorded with its status; accepted ones are also listed as
//! notifications.

use std::time::{Duration, Instant, SystemTime};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::Caller;
use super::clock::unix_ms;
use super::errors::{json_response, ApiError};
use super::state::{ReceivedNotification, Store, MAX_NOTIFICATIONS};

/// The largest Notify request body Zendesk accepts (1 MB = 1024 kB).
pub const MAX_NOTIFY_BODY: usize = 1_048_576;

fn check_body(body: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("Request body is not valid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("Request body must be a JSON object")?;
    match obj.get("app_id") {
        Some(v) if v.as_u64().is_some() => {}
        Some(_) => return Err("app_id must be a non-negative integer".into()),
        None => return Err("app_id is required".into()),
    }
    match obj.get("event") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err("event must be a non-empty string".into()),
        None => return Err("event is required".into()),
    }
    match obj.get("body") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err("body must be a string".into()),
    }
    match obj.get("agent_id") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => {}
        Some(_) => return Err("agent_id must be an integer".into()),
    }
    Ok(value)
}

fn rate_headers(resp: &mut Response, limit: u32, remaining: u32) {
    let h = resp.headers_mut();
    h.insert("x-rate-limit", HeaderValue::from(limit));
    h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
}

/// Handles one Notify request of an authenticated caller.
pub(crate) fn notify(store: &Store, caller: &Caller, headers: &HeaderMap, body: Bytes) -> Response {
    let config = store.config();
    let limit = config.notify_per_minute;
    let window = Duration::from_secs(config.notify_window_seconds);
    let now = Instant::now();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut state = store.lock();
    let Some(account) = state.accounts.get_mut(&caller.account) else {
        return ApiError::NotFound.into_response();
    };

    while account
        .notify_window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        account.notify_window.pop_front();
    }
    let mut record = ReceivedNotification {
        account: caller.account.clone(),
        raw_body: Bytes::new(),
        body_len: body.len(),
        json: Value::Null,
        authorization,
        received_at: now,
        received_at_unix_ms: unix_ms(SystemTime::now()),
        status: 200,
    };
    let push = |list: &mut std::collections::VecDeque<ReceivedNotification>,
                r: ReceivedNotification| {
        if list.len() >= MAX_NOTIFICATIONS {
            list.pop_front();
        }
        list.push_back(r);
    };

    if account.notify_window.len() >= limit as usize {
        let oldest = account.notify_window.front().copied().unwrap_or(now);
        let wait = (oldest + window).saturating_duration_since(now);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let retry_after = secs.max(1);
        record.status = 429;
        push(&mut account.notify_attempts, record);
        let mut resp = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "error": "TooManyRequests",
                "description": format!(
                    "Rate limit of {limit} requests per {} seconds exceeded. Retry after {retry_after} seconds.",
                    window.as_secs()
                ),
            }),
        );
        rate_headers(&mut resp, limit, 0);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return resp;
    }
    account.notify_window.push_back(now);
    let remaining = limit.saturating_sub(account.notify_window.len() as u32);

    let mut resp = if body.len() > MAX_NOTIFY_BODY {
        record.status = 413;
        ApiError::PayloadTooLarge.into_response()
    } else {
        match check_body(&body) {
            Ok(value) => {
                record.json = value;
                record.raw_body = body;
                push(&mut account.notifications, record.clone());
                json_response(StatusCode::OK, &Value::Null)
            }
            Err(message) => {
                record.status = 400;
                record.json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                record.raw_body = body;
                ApiError::BadRequest(message).into_response()
            }
        }
    };
    push(&mut account.notify_attempts, record);
    rate_headers(&mut resp, limit, remaining);
    resp
}

#[cfg(test)]
mod tests {
    use super::check_body;

    #[test]
    fn documented_body() {
        assert!(check_body(br#"{"app_id":375,"event":"e","body":"+6145","agent_id":534}"#).is_ok());
        assert!(check_body(br#"{"app_id":0,"event":"e"}"#).is_ok());
        assert!(check_body(br#"{"event":"e"}"#).is_err());
        assert!(check_body(br#"{"app_id":-1,"event":"e"}"#).is_err());
        assert!(check_body(br#"{"app_id":"1","event":"e"}"#).is_err());
        assert!(check_body(br#"{"app_id":1,"event":""}"#).is_err());
        assert!(check_body(br#"{"app_id":1}"#).is_err());
        assert!(check_body(br#"{"app_id":1,"event":"e","body":{}}"#).is_err());
        assert!(check_body(br#"{"app_id":1,"event":"e","agent_id":"x"}"#).is_err());
        assert!(check_body(b"[1]").is_err());
        assert!(check_body(b"nope").is_err());
    }
}

//! `POST /api/v2/apps/notify`: the rolling-window limit, the 1 MB cap, the documented body, and
//! the record of what arrived.
//!
//! Order of checks: the rate limit first (a 429 is not counted in the window), then the size
//! (more than 1,048,576 bytes is 413 `"Payload too large"`), then the body. Every request that
//! passes the limiter takes a slot, whatever its outcome, as Zendesk counts requests, not
//! successes. Every attempt is recorded with its status; accepted ones are also listed as
//! notifications.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::auth::Caller;
use super::clock::unix_ms;
use super::errors::{json_response, ApiError};
use super::state::{AccountState, ReceivedNotification, Store, MAX_NOTIFICATIONS};

/// The largest Notify request body Zendesk accepts (1 MB = 1024 kB).
pub const MAX_NOTIFY_BODY: usize = 1_048_576;

/// Why a Notify body is refused; shown as the 400's `description`.
#[derive(Debug, thiserror::Error)]
enum InvalidNotification {
    /// The body is not JSON.
    #[error("Request body is not valid JSON: {0}")]
    NotJson(serde_json::Error),
    /// The body is JSON but not an object.
    #[error("Request body must be a JSON object")]
    NotObject,
    /// A required field is absent.
    #[error("{field} is required")]
    Missing { field: &'static str },
    /// A field has the wrong type or an empty value.
    #[error("{field} must be {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
}

/// Checks a Notify body against the documented fields; answers the body as JSON.
fn check_body(body: &[u8]) -> Result<Value, InvalidNotification> {
    use InvalidNotification::{Invalid, Missing};
    let value: Value = serde_json::from_slice(body).map_err(InvalidNotification::NotJson)?;
    let obj = value.as_object().ok_or(InvalidNotification::NotObject)?;
    match obj.get("app_id") {
        Some(v) if v.as_u64().is_some() => {}
        Some(_) => {
            return Err(Invalid {
                field: "app_id",
                expected: "a non-negative integer",
            })
        }
        None => return Err(Missing { field: "app_id" }),
    }
    match obj.get("event") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => {
            return Err(Invalid {
                field: "event",
                expected: "a non-empty string",
            })
        }
        None => return Err(Missing { field: "event" }),
    }
    match obj.get("body") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => {
            return Err(Invalid {
                field: "body",
                expected: "a string",
            })
        }
    }
    match obj.get("agent_id") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64().is_some() => {}
        Some(_) => {
            return Err(Invalid {
                field: "agent_id",
                expected: "an integer",
            })
        }
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

    slide_window(&mut account.notify_window, now, window);
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
    if account.notify_window.len() >= limit as usize {
        let retry_after = retry_after(&account.notify_window, now, window);
        record.status = 429;
        remember(&mut account.notify_attempts, record);
        return too_many_requests(limit, window, retry_after);
    }
    account.notify_window.push_back(now);
    let remaining = limit.saturating_sub(account.notify_window.len() as u32);

    let mut resp = check_and_record(account, &mut record, body);
    remember(&mut account.notify_attempts, record);
    rate_headers(&mut resp, limit, remaining);
    resp
}

/// Drops the start times that have left the rolling window.
fn slide_window(starts: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while starts
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        starts.pop_front();
    }
}

/// Whole seconds (at least 1) until the oldest request in a full window leaves it.
fn retry_after(starts: &VecDeque<Instant>, now: Instant, window: Duration) -> u64 {
    let oldest = starts.front().copied().unwrap_or(now);
    let wait = (oldest + window).saturating_duration_since(now);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Zendesk's 429, with the rate headers and `Retry-After`.
fn too_many_requests(limit: u32, window: Duration, retry_after: u64) -> Response {
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
    resp
}

/// Checks the size and then the body of a request that took a slot in the window: 413, 400,
/// or 200 with the notification listed as accepted. `record` gets the status, body and JSON.
fn check_and_record(
    account: &mut AccountState,
    record: &mut ReceivedNotification,
    body: Bytes,
) -> Response {
    if body.len() > MAX_NOTIFY_BODY {
        record.status = 413;
        return ApiError::PayloadTooLarge.into_response();
    }
    match check_body(&body) {
        Ok(value) => {
            record.json = value;
            record.raw_body = body;
            remember(&mut account.notifications, record.clone());
            json_response(StatusCode::OK, &Value::Null)
        }
        Err(invalid) => {
            record.status = 400;
            record.json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            record.raw_body = body;
            ApiError::BadRequest(invalid.to_string()).into_response()
        }
    }
}

/// Appends to a bounded list, forgetting the oldest entry beyond [`MAX_NOTIFICATIONS`].
fn remember(list: &mut VecDeque<ReceivedNotification>, r: ReceivedNotification) {
    if list.len() >= MAX_NOTIFICATIONS {
        list.pop_front();
    }
    list.push_back(r);
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

    #[test]
    fn messages_name_the_field() {
        let message = |body: &[u8]| check_body(body).unwrap_err().to_string();
        assert_eq!(message(br#"{"event":"e"}"#), "app_id is required");
        assert_eq!(
            message(br#"{"app_id":-1,"event":"e"}"#),
            "app_id must be a non-negative integer"
        );
        assert_eq!(message(br#"{"app_id":1}"#), "event is required");
        assert_eq!(
            message(br#"{"app_id":1,"event":""}"#),
            "event must be a non-empty string"
        );
        assert_eq!(
            message(br#"{"app_id":1,"event":"e","body":{}}"#),
            "body must be a string"
        );
        assert_eq!(
            message(br#"{"app_id":1,"event":"e","agent_id":"x"}"#),
            "agent_id must be an integer"
        );
        assert_eq!(message(b"[1]"), "Request body must be a JSON object");
        assert!(message(b"nope").starts_with("Request body is not valid JSON: "));
    }
}

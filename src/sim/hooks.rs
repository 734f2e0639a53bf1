//! Test hooks under `/__sim/` (no authentication):
//!
//! | hook | what it does |
//! |---|---|
//! | `GET /__sim/notifications?account=SUB` | accepted Notify requests, oldest first (all accounts without `account`); `&include_rejected=true` lists every attempt with its status |
//! | `GET /__sim/requests?account=SUB` | every API request that reached the simulator: method, path, query, host, account, status, fault |
//! | `DELETE /__sim/requests` | clears the request log |
//! | `GET /__sim/faults` | the fault rules in force |
//! | `POST /__sim/faults` | adds a rule (see [`super::faults`]); 201 with the rule and its `id` |
//! | `DELETE /__sim/faults` | removes all rules (`?account=SUB`: that account's only) |
//! | `POST /__sim/reset` | forgets everything: apps, uploads, jobs, installations, notifications, rate windows, the request log and faults |

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::errors::json_response;
use super::faults::FaultRule;
use super::state::{ReceivedNotification, Store};

type Params = Query<HashMap<String, String>>;

/// The JSON view of a notification used by the hooks.
pub(crate) fn notification_json(n: &ReceivedNotification) -> Value {
    json!({
        "account": n.account,
        "status": n.status,
        "json": n.json,
        "raw_body": String::from_utf8_lossy(&n.raw_body),
        "body_len": n.body_len,
        "authorization": n.authorization,
        "received_at_unix_ms": n.received_at_unix_ms,
    })
}

fn bad(message: impl Into<String>) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": "InvalidValue", "description": message.into()}),
    )
}

pub(crate) async fn notifications(State(store): State<Arc<Store>>, Query(q): Params) -> Response {
    let all = q
        .get("include_rejected")
        .is_some_and(|v| v == "true" || v == "1");
    let state = store.lock();
    let mut list: Vec<&ReceivedNotification> = Vec::new();
    for (name, account) in &state.accounts {
        if q.get("account").is_some_and(|a| a != name) {
            continue;
        }
        if all {
            list.extend(account.notify_attempts.iter());
        } else {
            list.extend(account.notifications.iter());
        }
    }
    if let Some(a) = q.get("account") {
        if !state.accounts.contains_key(a) {
            return bad(format!("unknown account {a:?}"));
        }
    }
    list.sort_by_key(|n| n.received_at);
    let items: Vec<Value> = list.into_iter().map(notification_json).collect();
    json_response(
        StatusCode::OK,
        &json!({"count": items.len(), "notifications": items}),
    )
}

pub(crate) async fn requests(State(store): State<Arc<Store>>, Query(q): Params) -> Response {
    let state = store.lock();
    let items: Vec<Value> = state
        .requests
        .iter()
        .filter(|r| {
            q.get("account")
                .map_or(true, |a| r.account.as_ref() == Some(a))
        })
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"count": items.len(), "requests": items}),
    )
}

pub(crate) async fn clear_requests(State(store): State<Arc<Store>>) -> Response {
    store.lock().requests.clear();
    json_response(StatusCode::OK, &json!({"cleared": true}))
}

pub(crate) async fn list_faults(State(store): State<Arc<Store>>) -> Response {
    let state = store.lock();
    json_response(StatusCode::OK, &json!({"faults": state.faults}))
}

pub(crate) async fn add_fault(State(store): State<Arc<Store>>, body: Bytes) -> Response {
    let mut rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(format!("invalid fault rule: {e}")),
    };
    let accounts: Vec<&str> = store
        .config()
        .accounts
        .iter()
        .map(|a| a.subdomain.as_str())
        .collect();
    if let Err(e) = rule.check(&accounts) {
        return bad(e.to_string());
    }
    let mut state = store.lock();
    rule.id = state.ids.next();
    state.faults.push(rule.clone());
    json_response(StatusCode::CREATED, &json!(rule))
}

pub(crate) async fn clear_faults(State(store): State<Arc<Store>>, Query(q): Params) -> Response {
    let mut state = store.lock();
    match q.get("account") {
        Some(a) => state.faults.retain(|f| &f.account != a),
        None => state.faults.clear(),
    }
    json_response(StatusCode::OK, &json!({"faults": state.faults}))
}

pub(crate) async fn reset(State(store): State<Arc<Store>>) -> Response {
    store.reset();
    json_response(StatusCode::OK, &json!({"reset": true}))
}

pub(crate) async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

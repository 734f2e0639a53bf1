//! The Zendesk Apps API simulator, driven over real HTTP.

#[path = "sim_support.rs"]
mod sim_support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sim_support::*;
use zenrelay::sim::{SimConfig, MAX_NOTIFY_BODY};

const FORBIDDEN: &str = "You do not have access to this page. Please contact the account owner of this help desk for further help.";

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .expect("every response has a Content-Type")
        .to_str()
        .unwrap()
        .to_string()
}

/// A Notify body of exactly `size` bytes.
fn notify_body_of_size(size: usize) -> Vec<u8> {
    let head = br#"{"app_id":1,"event":"big","body":""#;
    let tail = br#""}"#;
    let pad = size - head.len() - tail.len();
    let mut body = head.to_vec();
    body.extend(std::iter::repeat(b'x').take(pad));
    body.extend_from_slice(tail);
    assert_eq!(body.len(), size);
    body
}

// ---------------------------------------------------------------------------------------------
// Notify

#[tokio::test]
async fn notify_accepts_the_documented_body_and_records_it() {
    let t = spawn(SimConfig::default()).await;
    let body = json!({"app_id": 375, "event": "updateUsersPhoneNumber", "body": "+61455534512", "agent_id": 534});
    let resp = t.notify(ADMIN, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(content_type(&resp).starts_with("application/json"));
    assert_eq!(resp.headers()["x-rate-limit"], "100");
    assert_eq!(resp.headers()["x-rate-limit-remaining"], "99");
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(resp.text().await.unwrap(), "null");

    // app_id 0 (a local ZAT server), no body, through the agent and without the suffix.
    let resp = t
        .post("/api/v2/apps/notify", AGENT)
        .json(&json!({"app_id": 0, "event": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-rate-limit-remaining"], "98");

    let got = t.sim.notifications("acme");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].json, body);
    assert_eq!(got[0].raw_body, serde_json::to_vec(&body).unwrap());
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(token_auth(ADMIN).as_str())
    );
    assert_eq!(got[1].json["app_id"], 0);
    assert!(got[0].received_at <= got[1].received_at);
    assert!(got[0].received_at_unix_ms > 1_600_000_000_000);

    let listed = t
        .hook(Method::GET, "/__sim/notifications?account=acme", None)
        .await;
    assert_eq!(listed["count"], 2);
    assert_eq!(
        listed["notifications"][0]["json"]["event"],
        "updateUsersPhoneNumber"
    );
    assert!(
        listed["notifications"][0]["received_at_unix_ms"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn notify_rejects_bad_bodies_with_400() {
    let t = spawn(SimConfig::default()).await;
    for body in [
        json!({"event": "x"}),
        json!({"app_id": 1}),
        json!({"app_id": -1, "event": "x"}),
        json!({"app_id": 1, "event": ""}),
        json!({"app_id": 1, "event": "x", "agent_id": "one"}),
        json!([1, 2]),
    ] {
        let resp = t.notify(ADMIN, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "InvalidValue");
    }
    let resp = t
        .post("/api/v2/apps/notify", ADMIN)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(t.sim.notifications("acme").is_empty());
    let attempts = t.sim.notify_attempts("acme");
    assert_eq!(attempts.len(), 7);
    assert!(attempts.iter().all(|a| a.status == 400));
}

#[tokio::test]
async fn notify_payload_cap_is_exactly_one_mebibyte() {
    let t = spawn(SimConfig::default()).await;
    let resp = t
        .post("/api/v2/apps/notify.json", ADMIN)
        .header("content-type", "application/json")
        .body(notify_body_of_size(MAX_NOTIFY_BODY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = t
        .post("/api/v2/apps/notify.json", ADMIN)
        .header("content-type", "application/json")
        .body(notify_body_of_size(MAX_NOTIFY_BODY + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(content_type(&resp).starts_with("application/json"));
    assert!(resp.headers().get("x-rate-limit").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!("Payload too large"));

    let accepted = t.sim.notifications("acme");
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].body_len, MAX_NOTIFY_BODY);
    let attempts = t.sim.notify_attempts("acme");
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![200, 413]
    );
    assert_eq!(attempts[1].body_len, MAX_NOTIFY_BODY + 1);
}

#[tokio::test]
async fn notify_rate_limit_is_a_rolling_window_per_account() {
    let mut config = two_accounts();
    config.notify_per_minute = 3;
    config.notify_window_seconds = 2;
    let t = spawn(config).await;
    let body = json!({"app_id": 1, "event": "e"});
    for remaining in ["2", "1", "0"] {
        let resp = t.notify(ADMIN, &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-rate-limit"], "3");
        assert_eq!(resp.headers()["x-rate-limit-remaining"], remaining);
        assert!(resp.headers().get("retry-after").is_none());
    }
    let resp = t.notify(ADMIN, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(content_type(&resp).starts_with("application/json"));
    assert_eq!(resp.headers()["x-rate-limit-remaining"], "0");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is an integer");
    assert!((1..=2).contains(&retry), "retry-after {retry}");

    // Another account has its own budget.
    let resp = t.notify(BETA_ADMIN, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-rate-limit-remaining"], "2");

    // Once the oldest request leaves the window, a slot frees.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let resp = t.notify(ADMIN, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);

    assert_eq!(t.sim.notifications("acme").len(), 4);
    let statuses: Vec<u16> = t
        .sim
        .notify_attempts("acme")
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 429, 200]);
    let listed = t
        .hook(
            Method::GET,
            "/__sim/notifications?account=acme&include_rejected=true",
            None,
        )
        .await;
    assert_eq!(listed["count"], 5);
    assert_eq!(listed["notifications"][3]["status"], 429);
}

// ---------------------------------------------------------------------------------------------
// Authentication, roles and error bodies

#[tokio::test]
async fn every_credential_kind_authenticates() {
    let t = spawn(two_accounts()).await;
    let ok = json!({"app_id": 1, "event": "e"});
    let cases = [
        token_auth(ADMIN),
        password_auth("admin@acme.example", "sim-admin-password"),
        "Bearer sim-admin-oauth".to_string(),
        "Bearer beta-oauth".to_string(),
    ];
    for auth in &cases {
        let resp = t
            .http
            .post(t.url("/api/v2/apps/notify"))
            .header("authorization", auth)
            .json(&ok)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{auth}");
    }
    assert_eq!(t.sim.notifications("acme").len(), 3);
    assert_eq!(t.sim.notifications("beta").len(), 1);
}

#[tokio::test]
async fn unauthenticated_requests_get_zendesk_401() {
    let t = spawn(two_accounts()).await;
    let body = json!({"app_id": 1, "event": "e"});
    let bad = [
        None,
        Some(token_auth(("admin@acme.example", "wrong"))),
        Some(password_auth("admin@acme.example", "sim-admin-token")),
        Some("Bearer nope".to_string()),
        Some("Digest abc".to_string()),
    ];
    for auth in bad {
        let mut req = t.http.post(t.url("/api/v2/apps/notify.json")).json(&body);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"Web Password\""
        );
        assert!(content_type(&resp).starts_with("application/json"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v, json!({"error": "Couldn't authenticate you"}));
    }
    assert!(t.sim.notify_attempts("acme").is_empty());
}

#[tokio::test]
async fn host_naming_another_account_is_401() {
    let t = spawn(two_accounts()).await;
    let body = json!({"app_id": 1, "event": "e"});
    let resp = t
        .post("/api/v2/apps/notify", ADMIN)
        .header("host", format!("beta.localhost:{}", t.addr.port()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = t
        .post("/api/v2/apps/notify", ADMIN)
        .header("host", format!("acme.localhost:{}", t.addr.port()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let log = t.sim.requests();
    assert_eq!(log[0].account.as_deref(), Some("beta"));
    assert_eq!(log[0].status, Some(401));
    assert_eq!(log[1].account.as_deref(), Some("acme"));
}

#[tokio::test]
async fn agents_get_403_on_admin_endpoints() {
    let t = spawn(SimConfig::default()).await;
    let admin_only = [
        (Method::GET, "/api/v2/apps/owned.json"),
        (Method::POST, "/api/v2/apps/uploads.json"),
        (Method::POST, "/api/v2/apps.json"),
        (Method::PUT, "/api/v2/apps/1.json"),
        (Method::DELETE, "/api/v2/apps/1.json"),
        (Method::GET, "/api/v2/apps/job_statuses/abc.json"),
        (Method::POST, "/api/v2/apps/installations.json"),
        (Method::PUT, "/api/v2/apps/installations/1.json"),
        (Method::DELETE, "/api/v2/apps/installations/1.json"),
        (
            Method::GET,
            "/api/v2/apps/installations/job_statuses/abc.json",
        ),
        (Method::POST, "/api/v2/apps/validate"),
        (Method::GET, "/api/sell/apps.json"),
        (Method::POST, "/api/apps.json"),
        (Method::GET, "/api/sell/apps/owned"),
    ];
    for (method, path) in admin_only {
        let resp = t
            .http
            .request(method.clone(), t.url(path))
            .header("authorization", token_auth(AGENT))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert!(content_type(&resp).starts_with("application/json"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v,
            json!({"error": {"title": "Forbidden", "message": FORBIDDEN}}),
            "{method} {path}"
        );
    }
    // Agent endpoints are open to agents.
    let resp = t
        .get("/api/v2/apps/installations.json", AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_get_zendesk_404() {
    let t = spawn(SimConfig::default()).await;
    for path in [
        "/api/v2/tickets.json",
        "/api/v2/apps/abc",
        "/api/sell/apps/notify",
        "/",
        "/__sim/nothing",
    ] {
        let resp = t.get(path, ADMIN).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(content_type(&resp).starts_with("application/json"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v,
            json!({"error": "RecordNotFound", "description": "Not found"})
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request log, faults, reset

#[tokio::test]
async fn request_log_records_every_api_request() {
    let t = spawn(SimConfig::default()).await;
    t.get("/api/v2/apps/installations.json?include=app", ADMIN)
        .send()
        .await
        .unwrap();
    t.http
        .delete(t.url("/api/v2/apps/99"))
        .send()
        .await
        .unwrap();
    let log = t.hook(Method::GET, "/__sim/requests", None).await;
    assert_eq!(log["count"], 2, "hooks are not logged: {log}");
    let first = &log["requests"][0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/v2/apps/installations.json");
    assert_eq!(first["query"], "include=app");
    assert_eq!(first["account"], "acme");
    assert_eq!(first["status"], 200);
    assert_eq!(first["host"], format!("127.0.0.1:{}", t.addr.port()));
    let second = &log["requests"][1];
    assert_eq!(second["method"], "DELETE");
    assert_eq!(second["account"], Value::Null);
    assert_eq!(second["status"], 401);

    t.hook(Method::DELETE, "/__sim/requests", None).await;
    assert!(t.sim.requests().is_empty());
}

#[tokio::test]
async fn fault_fail_next_with_status_and_retry_after() {
    let t = spawn(two_accounts()).await;
    let rule = t
        .add_fault(json!({"account": "acme", "route": "notify", "status": 503, "fail_next": 2, "retry_after": 3}))
        .await;
    assert!(rule["id"].as_u64().is_some());
    let body = json!({"app_id": 1, "event": "e"});
    for _ in 0..2 {
        let resp = t.notify(ADMIN, &body).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "3");
        assert!(content_type(&resp).starts_with("application/json"));
    }
    // Other accounts are untouched, and the rule is spent after two failures.
    assert_eq!(t.notify(BETA_ADMIN, &body).await.status(), StatusCode::OK);
    assert_eq!(t.notify(ADMIN, &body).await.status(), StatusCode::OK);
    let faults = t.hook(Method::GET, "/__sim/faults", None).await;
    assert_eq!(faults["faults"], json!([]));

    let log = t.sim.requests();
    assert_eq!(log.len(), 4);
    assert!(log[0].fault && log[1].fault && !log[2].fault && !log[3].fault);
    assert_eq!(log[0].status, Some(503));
    // Faulted requests never reached Notify: no rate slot, no attempt.
    assert_eq!(t.sim.notify_attempts("acme").len(), 1);
}

#[tokio::test]
async fn fault_status_applies_until_deleted_and_on_path_prefixes() {
    let t = spawn(SimConfig::default()).await;
    t.add_fault(json!({"route": "/api/v2/apps/installations", "status": 429, "retry_after": 7}))
        .await;
    for _ in 0..3 {
        let resp = t
            .get("/api/v2/apps/installations.json", ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "7");
    }
    // Other routes are not affected.
    let resp = t.notify(ADMIN, &json!({"app_id": 1, "event": "e"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    t.hook(Method::DELETE, "/__sim/faults", None).await;
    let resp = t
        .get("/api/v2/apps/installations.json", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn fault_error_rate_zero_and_one() {
    let t = spawn(SimConfig::default()).await;
    let body = json!({"app_id": 1, "event": "e"});
    t.add_fault(json!({"route": "*", "status": 500, "error_rate": 1.0}))
        .await;
    for _ in 0..5 {
        assert_eq!(
            t.notify(ADMIN, &body).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    t.hook(Method::DELETE, "/__sim/faults", None).await;
    t.add_fault(json!({"route": "*", "status": 500, "error_rate": 0.0}))
        .await;
    for _ in 0..5 {
        assert_eq!(t.notify(ADMIN, &body).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn fault_error_rate_half_fails_some_and_passes_some() {
    let t = spawn(SimConfig::default()).await;
    t.add_fault(json!({"route": "/api/v2/apps/installations", "status": 502, "error_rate": 0.5}))
        .await;
    let mut failed = 0;
    let n = 200;
    for _ in 0..n {
        let resp = t
            .get("/api/v2/apps/installations", ADMIN)
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::BAD_GATEWAY => failed += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
    }
    // With p = 0.5 over 200 tries, outside 40..160 has probability far below 1e-15.
    assert!((40..=160).contains(&failed), "{failed} of {n} failed");
}

#[tokio::test]
async fn fault_latency_delays_the_answer() {
    let t = spawn(SimConfig::default()).await;
    t.add_fault(json!({"account": "acme", "route": "notify", "latency_ms": 300}))
        .await;
    let started = Instant::now();
    let resp = t.notify(ADMIN, &json!({"app_id": 1, "event": "e"})).await;
    assert_eq!(resp.status(), StatusCode::OK, "latency alone does not fail");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(t.sim.notifications("acme").len(), 1);
}

#[tokio::test]
async fn fault_drop_connection_closes_without_a_response() {
    let t = spawn(SimConfig::default()).await;
    t.add_fault(json!({"route": "notify", "drop_connection": true, "fail_next": 1}))
        .await;
    let err = t
        .post("/api/v2/apps/notify.json", ADMIN)
        .json(&json!({"app_id": 1, "event": "e"}))
        .send()
        .await
        .expect_err("the connection must be dropped");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    let log = t.sim.requests();
    assert_eq!(log.len(), 1);
    assert!(log[0].fault);
    assert_eq!(log[0].status, None);
    assert!(t.sim.notify_attempts("acme").is_empty());
    // The next request is served normally.
    let resp = t.notify(ADMIN, &json!({"app_id": 1, "event": "e"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_fault_rules_are_400() {
    let t = spawn(SimConfig::default()).await;
    for rule in [
        json!({"status": 999}),
        json!({"error_rate": 1.5}),
        json!({"account": "nope"}),
        json!({"route": "api"}),
        json!({"unknown": 1}),
    ] {
        let resp = t
            .http
            .post(t.url("/__sim/faults"))
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{rule}");
    }
}

#[tokio::test]
async fn reset_forgets_everything() {
    let t = spawn(SimConfig::default()).await;
    t.notify(ADMIN, &json!({"app_id": 1, "event": "e"})).await;
    t.add_fault(json!({"route": "/api/v2/apps/owned", "status": 500}))
        .await;
    t.hook(Method::POST, "/__sim/reset", None).await;
    assert!(t.sim.notifications("acme").is_empty());
    assert!(t.sim.requests().is_empty());
    let resp = t.get("/api/v2/apps/owned", ADMIN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The rate window starts afresh too.
    let resp = t.notify(ADMIN, &json!({"app_id": 1, "event": "e"})).await;
    assert_eq!(resp.headers()["x-rate-limit-remaining"], "99");
    t.sim.reset();
    assert!(t.sim.notifications("acme").is_empty());
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let mut t = spawn(SimConfig::default()).await;
    t.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), &mut t.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(result.is_ok());
}

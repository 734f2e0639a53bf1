//! The Zendesk Apps API simulator, driven over real HTTP.

#[path = "sim_support.rs"]
pub(crate) mod sim_support;

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
async fn hooks_answer_wrong_methods_with_a_content_type() {
    let t = spawn(SimConfig::default()).await;
    let resp = t.http.put(t.url("/__sim/faults")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().get("content-type").is_some());
    let resp = t.http.get(t.url("/__sim/reset")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().get("content-type").is_some());
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

// ---------------------------------------------------------------------------------------------
// App lifecycle

fn assert_installation_shape(v: &Value, product: &str) {
    for key in [
        "app_id",
        "collapsible",
        "created_at",
        "enabled",
        "group_restrictions",
        "has_incomplete_subscription",
        "has_unpaid_subscription",
        "id",
        "paid",
        "pending_installation",
        "pending_job_id",
        "plan_information",
        "product",
        "recurring_payment",
        "redirect_path",
        "role_restrictions",
        "servable",
        "settings",
        "settings_objects",
        "stripe_account",
        "stripe_publishable_key",
        "stripe_subscription_id",
        "updated",
        "updated_at",
    ] {
        assert!(v.get(key).is_some(), "installation lacks {key}: {v}");
    }
    assert_eq!(v["product"], product);
    assert_eq!(v["redirect_path"], format!("/{product}/apps/manage"));
    assert!(v["id"].is_u64());
    assert!(v["app_id"].is_u64());
}

#[tokio::test]
async fn support_lifecycle_end_to_end() {
    let t = spawn(SimConfig::default()).await;
    let zip = fixture_zip(&fixture_manifest(), &[("requirements.json", REQUIREMENTS)]);

    // Upload → create → poll.
    let upload_id = t.upload("/api/v2/apps", zip).await;
    let resp = t
        .post("/api/v2/apps.json", ADMIN)
        .json(&json!({"name": "My App", "short_description": "My App description", "upload_id": upload_id.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let job_id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (seen, job, code) = t
        .poll_job(&format!("/api/v2/apps/job_statuses/{job_id}.json"))
        .await;
    assert_eq!(seen, vec!["queued", "working", "completed"]);
    assert_eq!(code, StatusCode::OK);
    let app_id = job["app_id"].as_u64().expect("numeric app_id");
    assert_eq!(job["id"], job_id);
    assert!(job["retry_in"].is_u64());
    assert!(job["message"]
        .as_str()
        .unwrap()
        .starts_with("Completed at "));
    assert_eq!(
        job["app_url"],
        format!("{}/api/v2/apps/{app_id}.json", t.base)
    );
    assert_eq!(
        job["url"],
        format!("{}/api/v2/apps/job_statuses/{job_id}.json", t.base)
    );

    // Show, list, owned (with and without parameters), anonymous.
    let app: Value = t
        .get(&format!("/api/v2/apps/{app_id}.json"), AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(app["id"], app_id);
    assert_eq!(app["name"], "My App");
    assert_eq!(app["short_description"], "My App description");
    assert_eq!(app["framework_version"], "2.0");
    assert_eq!(app["version"], "1.0.0");
    assert_eq!(app["author_name"], "Zenrelay Tests");
    assert_eq!(app["products"], json!(["sell", "support"]));
    assert_eq!(app["visibility"], "private");
    assert_eq!(app["parameters"][0]["name"], "api_token");
    assert_eq!(app["parameters"][0]["required"], true);
    assert_eq!(app["parameters"][0]["app_id"], app_id);
    assert_eq!(app["parameters"][1]["default_value"], "6");
    let listed: Value = t
        .get("/api/v2/apps", AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["apps"][0]["id"], app_id);
    let owned: Value = t
        .get("/api/support/apps/owned.json", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(owned["apps"][0].get("parameters").is_some());
    let owned: Value = t
        .get("/api/v2/apps/owned.json?exclude=parameters", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(owned["apps"][0]["id"], app_id);
    assert!(owned["apps"][0].get("parameters").is_none());
    let anonymous: Value = t
        .http
        .get(t.url("/api/v2/apps.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anonymous, json!({"apps": []}));

    // Public key: a real PEM key, stable across calls, in JSON and as .pem.
    use rsa::pkcs8::DecodePublicKey;
    let key: Value = t
        .get(&format!("/api/v2/apps/{app_id}/public_key.json"), AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pem = key.as_str().unwrap().to_string();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    rsa::RsaPublicKey::from_public_key_pem(&pem).expect("a real RSA public key");
    let resp = t
        .get(&format!("/api/v2/apps/{app_id}/public_key.pem"), AGENT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-pem-file");
    assert_eq!(resp.text().await.unwrap(), pem);

    // Install: required parameter enforced, app_id as a string, settings_objects merged.
    let resp = t
        .post("/api/v2/apps/installations.json", ADMIN)
        .json(&json!({"app_id": app_id.to_string(), "settings": {"name": "Fixture"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "RecordInvalid");
    assert_eq!(v["description"], "Record validation errors");
    assert!(v["details"]["settings"][0]["description"]
        .as_str()
        .unwrap()
        .contains("api_token"));
    let resp = t
        .post("/api/v2/apps/installations.json", ADMIN)
        .json(&json!({
            "app_id": app_id.to_string(),
            "settings": {"name": "Fixture", "api_token": "from-settings"},
            "settings_objects": [{"name": "api_token", "value": "from-objects"}, {"name": "items_per_page", "value": "9"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let inst: Value = resp.json().await.unwrap();
    assert_installation_shape(&inst, "support");
    let inst_id = inst["id"].as_u64().unwrap();
    assert_eq!(inst["app_id"], app_id);
    assert_eq!(inst["settings"]["api_token"], "from-settings");
    assert_eq!(inst["settings"]["items_per_page"], "9");
    assert_eq!(inst["pending_installation"], true);
    assert_eq!(inst["enabled"], false, "disabled until requirements are in");
    let pending_job = inst["pending_job_id"].as_str().unwrap().to_string();

    // Requirements job.
    let (seen, job, _) = t
        .poll_job(&format!(
            "/api/v2/apps/installations/job_statuses/{pending_job}.json"
        ))
        .await;
    assert_eq!(seen.last().unwrap(), "completed");
    assert_eq!(job["installation_id"], inst_id);
    let reqs: Value = t
        .get(
            &format!("/api/v2/apps/installations/{inst_id}/requirements.json"),
            AGENT,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut kinds: Vec<(String, String)> = reqs["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["requirement_id"].is_u64());
            (
                r["requirement_type"].as_str().unwrap().to_string(),
                r["identifier"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("targets".to_string(), "an_email_target".to_string()),
            (
                "ticket_fields".to_string(),
                "sample_ticket_field".to_string()
            )
        ]
    );

    // Show, list with the app side-loaded, update.
    let shown: Value = t
        .get(&format!("/api/v2/apps/installations/{inst_id}.json"), AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["enabled"], true);
    assert_eq!(shown["pending_installation"], false);
    let listed: Value = t
        .get("/api/v2/apps/installations.json?include=app", AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["installations"][0]["id"], inst_id);
    assert_eq!(listed["apps"][0]["id"], app_id);
    let resp = t
        .put(&format!("/api/v2/apps/installations/{inst_id}.json"), ADMIN)
        .json(&json!({"settings": {"name": "Helpful App - Updated"}, "enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["settings"]["name"], "Helpful App - Updated");
    assert_eq!(updated["settings"]["api_token"], "from-settings");
    assert_eq!(updated["enabled"], false);
    let resp = t
        .put(&format!("/api/v2/apps/installations/{inst_id}"), ADMIN)
        .json(&json!({"settings": {"api_token": ""}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Notify the installed app.
    let resp = t
        .notify(
            ADMIN,
            &json!({"app_id": app_id, "event": "ping", "body": "{\"a\":1}"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(t.sim.notifications("acme")[0].json["app_id"], app_id);

    // Update the app with a new version: same id, new version.
    let mut manifest = fixture_manifest();
    manifest["version"] = json!("1.1.0");
    let upload2 = t.upload("/api/v2/apps", fixture_zip(&manifest, &[])).await;
    let resp = t
        .put(&format!("/api/v2/apps/{app_id}.json"), ADMIN)
        .json(&json!({"upload_id": upload2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let job2 = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, job, _) = t
        .poll_job(&format!("/api/v2/apps/job_statuses/{job2}"))
        .await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["app_id"], app_id);
    let app: Value = t
        .get(&format!("/api/v2/apps/{app_id}"), ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(app["version"], "1.1.0");
    assert_eq!(app["name"], "My App");

    // Uninstall, delete.
    let resp = t
        .delete(&format!("/api/v2/apps/installations/{inst_id}.json"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.headers().get("content-type").is_some());
    let resp = t
        .get(&format!("/api/v2/apps/installations/{inst_id}.json"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = t
        .delete(&format!("/api/v2/apps/{app_id}.json"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = t
        .get(&format!("/api/v2/apps/{app_id}.json"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sell_lifecycle_end_to_end() {
    let t = spawn(SimConfig::default()).await;
    let zip = fixture_zip(&fixture_manifest(), &[("requirements.json", REQUIREMENTS)]);
    let upload_id = t.upload("/api/sell/apps", zip).await;

    // Sell's create is POST /api/apps and answers 202.
    let resp = t
        .post("/api/apps.json", ADMIN)
        .json(&json!({"name": "Sell App", "short_description": "d", "upload_id": upload_id.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job_id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, job, _) = t
        .poll_job(&format!("/api/sell/apps/job_statuses/{job_id}.json"))
        .await;
    assert_eq!(job["status"], "completed");
    let app_id = job["app_id"].as_u64().unwrap();
    assert_eq!(
        job["app_url"],
        format!("{}/api/sell/apps/{app_id}.json", t.base)
    );

    // Sell's app shape.
    let app: Value = t
        .get(&format!("/api/sell/apps/{app_id}.json"), AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(app["name"], "Sell App");
    assert!(app.get("products").is_none(), "Sell apps have no products");
    assert_eq!(
        app["large_icon"],
        format!("/api/sell/apps/{app_id}/assets/logo.png")
    );
    let listed: Value = t
        .get("/api/sell/apps.json", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["apps"][0]["id"], app_id);
    let owned: Value = t
        .get("/api/sell/apps/owned.json?exclude=parameters", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(owned["apps"][0].get("parameters").is_none());

    // Install answers 201 on Sell.
    let resp = t
        .post("/api/sell/apps/installations.json", ADMIN)
        .json(&json!({"app_id": app_id, "settings": {"name": "Helpful App", "api_token": "53xjt93n6tn4321p"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let inst: Value = resp.json().await.unwrap();
    assert_installation_shape(&inst, "sell");
    let inst_id = inst["id"].as_u64().unwrap();
    let pending = inst["pending_job_id"].as_str().unwrap().to_string();
    let (_, job, _) = t
        .poll_job(&format!(
            "/api/sell/apps/installations/job_statuses/{pending}.json"
        ))
        .await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["installation_id"], inst_id);
    assert_eq!(
        job["url"],
        format!(
            "{}/api/sell/apps/installations/job_statuses/{pending}.json",
            t.base
        )
    );

    // Sell's show-installation wrapper and fields.
    let shown: Value = t
        .get(
            &format!("/api/sell/apps/installations/{inst_id}.json"),
            AGENT,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &shown["installation"];
    assert_eq!(s["id"], inst_id);
    assert_eq!(s["app_id"], app_id);
    assert_eq!(s["agent_count"], 0);
    assert_eq!(s["email"], "admin@acme.example");
    assert_eq!(
        s["framework_versions"],
        json!({"current": "2.0", "version": "2.0"})
    );
    assert_eq!(
        s["locations"],
        json!([{"name": "deal_card", "visible": true}])
    );
    assert_eq!(s["new_installation"], false);
    assert_eq!(s["version"], "1.0.0");
    assert_eq!(s["settings"][0]["api_token"], "53xjt93n6tn4321p");
    assert!(s.get("settings_objects").is_none());

    // Installations are per family.
    let support: Value = t
        .get("/api/v2/apps/installations.json", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(support["installations"], json!([]));
    let resp = t
        .get(&format!("/api/v2/apps/installations/{inst_id}.json"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let sell: Value = t
        .get("/api/sell/apps/installations.json?include=app", AGENT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sell["installations"][0]["id"], inst_id);
    assert_eq!(sell["apps"][0]["id"], app_id);
    let reqs: Value = t
        .get(
            &format!("/api/sell/apps/installations/{inst_id}/requirements"),
            AGENT,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reqs["requirements"].as_array().unwrap().len(), 2);

    // Update, uninstall, update the app, delete.
    let resp = t
        .put(
            &format!("/api/sell/apps/installations/{inst_id}.json"),
            ADMIN,
        )
        .json(&json!({"settings": {"name": "Helpful App - Updated"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["settings"]["name"],
        "Helpful App - Updated"
    );
    let resp = t
        .delete(
            &format!("/api/sell/apps/installations/{inst_id}.json"),
            ADMIN,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let upload2 = t
        .upload("/api/sell/apps", fixture_zip(&fixture_manifest(), &[]))
        .await;
    let resp = t
        .put(&format!("/api/sell/apps/{app_id}.json"), ADMIN)
        .json(&json!({"upload_id": upload2.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.json::<Value>().await.unwrap()["job_id"].is_string());
    let resp = t
        .delete(&format!("/api/sell/apps/{app_id}.json"), ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_client_polling_every_second_sees_the_outcome_at_once() {
    let t = spawn(SimConfig::default()).await;
    let upload_id = t
        .upload("/api/v2/apps", fixture_zip(&fixture_manifest(), &[]))
        .await;
    let resp: Value = t
        .post("/api/v2/apps", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = resp["job_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Even before any poll the app exists once the job's time has passed.
    let apps: Value = t
        .get("/api/v2/apps/owned", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps["apps"].as_array().unwrap().len(), 1);
    let job: Value = t
        .get(&format!("/api/v2/apps/job_statuses/{job_id}.json"), ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["app_id"], apps["apps"][0]["id"]);
    assert_eq!(apps["apps"][0]["name"], "Fixture App");
}

#[tokio::test]
async fn a_non_zip_upload_fails_its_build_job() {
    let t = spawn(SimConfig::default()).await;
    let upload_id = t
        .upload("/api/v2/apps", b"definitely not a zip".to_vec())
        .await;
    let job: Value = t
        .post("/api/v2/apps.json", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (seen, body, code) = t
        .poll_job(&format!(
            "/api/v2/apps/job_statuses/{}.json",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(seen.last().unwrap(), "failed");
    assert_eq!(code, StatusCode::NOT_FOUND, "as the Support page documents");
    assert_eq!(body["message"], "Cannot unzip the package");
    assert_eq!(body["progress"], Value::Null);
    let owned: Value = t
        .get("/api/v2/apps/owned", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(owned["apps"], json!([]));
}

#[tokio::test]
async fn an_invalid_manifest_fails_its_build_job_with_the_validator_message() {
    let t = spawn(SimConfig::default()).await;
    let mut manifest = fixture_manifest();
    manifest["frameworkVersion"] = json!("1.0");
    let upload_id = t
        .upload("/api/sell/apps", fixture_zip(&manifest, &[]))
        .await;
    let job: Value = t
        .post("/api/sell/apps", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, body, _) = t
        .poll_job(&format!(
            "/api/sell/apps/job_statuses/{}",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(body["status"], "failed");
    assert_eq!(
        body["message"],
        "1.0 is not a valid framework version. Available versions are: 2.0."
    );
}

#[tokio::test]
async fn package_validation_reports_each_problem_in_zendesks_words() {
    let t = spawn(SimConfig::default()).await;
    let (code, _) = t.validate(fixture_zip(&fixture_manifest(), &[])).await;
    assert_eq!(code, StatusCode::OK, "the fixture is valid");

    let m = fixture_manifest;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut manifest = m();
        f(&mut manifest);
        fixture_zip(&manifest, &[])
    };
    let many_requirements = {
        let items: serde_json::Map<String, Value> = (0..5001)
            .map(|i| (format!("field_{i}"), json!({"type": "text", "title": "f"})))
            .collect();
        json!({"ticket_fields": items}).to_string()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not a zip", b"PK but not really".to_vec(), "Cannot unzip the package"),
        (
            "no manifest",
            zip_files(&[("translations/en.json", "{}")]),
            "Could not find manifest.json",
        ),
        (
            "nested manifest",
            zip_files(&[("my_app/manifest.json", "{}")]),
            "Could not find manifest.json in the root of the zip file, but my_app/manifest.json was found.",
        ),
        (
            "manifest not JSON",
            zip_files(&[("manifest.json", "{\"name\": ")]),
            "manifest is not proper JSON.",
        ),
        (
            "duplicate manifest keys",
            zip_files(&[("manifest.json", r#"{"name": "a", "name": "b"}"#)]),
            "Duplicate keys are specified in the manifest.json file. name",
        ),
        (
            "no author",
            with(&|v| {
                v.as_object_mut().unwrap().remove("author");
            }),
            "Missing required field in manifest: author",
        ),
        (
            "author without email",
            with(&|v| v["author"] = json!({"name": "A"})),
            "Missing required field in manifest: author email",
        ),
        (
            "no defaultLocale",
            with(&|v| {
                v.as_object_mut().unwrap().remove("defaultLocale");
            }),
            "Missing required field in manifest: defaultLocale",
        ),
        (
            "no translation file",
            with(&|v| v["defaultLocale"] = json!("fr")),
            "Missing translation file for locale 'fr'.",
        ),
        (
            "invalid locale",
            with(&|v| v["defaultLocale"] = json!("French")),
            "French is not a valid default locale.",
        ),
        (
            "framework version",
            with(&|v| v["frameworkVersion"] = json!("1.0")),
            "1.0 is not a valid framework version. Available versions are: 2.0.",
        ),
        (
            "no location",
            with(&|v| {
                v.as_object_mut().unwrap().remove("location");
            }),
            "Missing required field in manifest: location",
        ),
        (
            "unknown product",
            with(&|v| v["location"] = json!({"zendesk": {"ticket_sidebar": "https://x.example"}})),
            "zendesk is an invalid host for apps.",
        ),
        (
            "plain http URL",
            with(&|v| v["location"] = json!({"support": {"ticket_sidebar": "http://example.com/app"}})),
            "http://example.com/app is either an invalid location URI, refers to a missing asset, or does not use HTTPS.",
        ),
        (
            "missing asset",
            with(&|v| v["location"] = json!({"chat": {"chat_sidebar": "assets/missing.html"}})),
            "assets/missing.html is either an invalid location URI, refers to a missing asset, or does not use HTTPS.",
        ),
        (
            "blank location URI",
            with(&|v| v["location"] = json!({"standalone_chat": {"background": ""}})),
            "background location does not specify a URI.",
        ),
        (
            "boolean field as string",
            with(&|v| v["singleInstall"] = json!("yes")),
            "singleInstall must be a boolean value, got \"yes\".",
        ),
        (
            "invalid parameter type",
            with(&|v| v["parameters"] = json!([{"name": "x", "type": "password"}])),
            "password is an invalid parameter type.",
        ),
        (
            "parameters not an array",
            with(&|v| v["parameters"] = json!({"name": "x"})),
            "App parameters must be an array.",
        ),
        (
            "duplicate parameters",
            with(&|v| v["parameters"] = json!([{"name": "token"}, {"name": "token"}])),
            "Duplicate app parameters defined: token",
        ),
        (
            "parameter named name",
            with(&|v| v["parameters"] = json!([{"name": "name", "type": "text"}])),
            "Can't call a parameter 'name'",
        ),
        (
            "required hidden parameter",
            with(&|v| v["parameters"] = json!([{"name": "secret", "type": "hidden", "required": true}])),
            "secret is set to hidden and cannot be required.",
        ),
        (
            "two oauth parameters",
            with(&|v| {
                v["oauth"] = json!({"client_id": "c", "client_secret": "s", "authorize_uri": "https://a", "access_token_uri": "https://t"});
                v["parameters"] = json!([{"name": "a", "type": "oauth"}, {"name": "b", "type": "oauth"}]);
            }),
            "Too many parameters with type 'oauth': one permitted",
        ),
        (
            "secure oauth parameter",
            with(&|v| {
                v["oauth"] = json!({"client_id": "c", "client_secret": "s", "authorize_uri": "https://a", "access_token_uri": "https://t"});
                v["parameters"] = json!([{"name": "a", "type": "oauth", "secure": true}]);
            }),
            "oauth parameter cannot be set to be secure.",
        ),
        (
            "requirements not JSON",
            fixture_zip(&m(), &[("requirements.json", "{")]),
            "requirements.json is not proper JSON.",
        ),
        (
            "requirements with an unknown type",
            fixture_zip(&m(), &[("requirements.json", r#"{"widgets": {"w": {}}}"#)]),
            "requirements.json contains an invalid type: widgets",
        ),
        (
            "too many requirements",
            fixture_zip(&m(), &[("requirements.json", many_requirements.as_str())]),
            "The requirements.json file contains too many requirements. The current limit is 5000 requirements. This app has 5001 requirements.",
        ),
    ];
    for (what, zip, message) in cases {
        let (code, body) = t.validate(zip).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{what}");
        let description = body["description"].as_str().unwrap();
        assert!(
            description.contains(message),
            "{what}: {message:?} not in {description:?}"
        );
    }

    // Localhost and https locations are fine; so is a single oauth parameter with its config.
    let ok = with(&|v| {
        v["location"] = json!({"support": {"top_bar": "http://localhost:4567/", "nav_bar": "https://x.example/nav"}});
        v["oauth"] = json!({"client_id": "c", "client_secret": "s", "authorize_uri": "https://a", "access_token_uri": "https://t"});
        v["parameters"] = json!([{"name": "token", "type": "oauth"}]);
    });
    assert_eq!(t.validate(ok).await.0, StatusCode::OK);
}

#[tokio::test]
async fn install_and_create_reject_bad_input() {
    let t = spawn(two_accounts()).await;
    let upload_id = t
        .upload("/api/v2/apps", fixture_zip(&fixture_manifest(), &[]))
        .await;
    // create: missing/unknown upload ids, bad JSON.
    for (body, field) in [
        (json!({}), "upload_id"),
        (json!({"upload_id": 987654}), "upload_id"),
        (json!({"upload_id": "abc"}), "upload_id"),
    ] {
        let resp = t
            .post("/api/v2/apps", ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "RecordInvalid");
        assert!(v["details"][field].is_array(), "{v}");
    }
    let resp = t
        .post("/api/v2/apps", ADMIN)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Update of an unknown app.
    let resp = t
        .put("/api/v2/apps/424242", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Upload without the file field.
    let form = reqwest::multipart::Form::new().text("other", "x");
    let resp = t
        .post("/api/v2/apps/uploads", ADMIN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = t
        .post("/api/v2/apps/uploads", ADMIN)
        .body("raw")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let job: Value = t
        .post("/api/v2/apps", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, job, _) = t
        .poll_job(&format!(
            "/api/v2/apps/job_statuses/{}",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    let app_id = job["app_id"].as_u64().unwrap();

    // install: settings required with a value, app_id numeric, enabled boolean.
    for body in [
        json!({"app_id": app_id}),
        json!({"app_id": app_id, "settings": {}}),
        json!({"app_id": app_id, "settings": "x"}),
        json!({"settings": {"api_token": "t"}}),
        json!({"app_id": "12ab", "settings": {"api_token": "t"}}),
        json!({"app_id": app_id, "settings": {"api_token": "t"}, "enabled": "yes"}),
        json!({"app_id": app_id, "settings": {"api_token": null}}),
    ] {
        let resp = t
            .post("/api/v2/apps/installations", ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "RecordInvalid", "{body}");
        assert_eq!(v["description"], "Record validation errors");
        assert!(v["details"].is_object());
    }
    let resp = t
        .post("/api/v2/apps/installations", ADMIN)
        .json(&json!({"app_id": 99999999, "settings": {"api_token": "t"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // enabled defaults to true; false is honoured; no requirements, no pending job.
    let inst: Value = t
        .post("/api/v2/apps/installations", ADMIN)
        .json(&json!({"app_id": app_id, "settings": {"api_token": "t"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inst["enabled"], true);
    assert_eq!(inst["pending_installation"], false);
    assert_eq!(inst["pending_job_id"], Value::Null);
    assert_eq!(
        inst["settings"]["name"], "Fixture App",
        "name defaults to the app's"
    );
    let inst: Value = t
        .post("/api/v2/apps/installations", ADMIN)
        .json(&json!({"app_id": app_id, "settings": {"api_token": "t"}, "enabled": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inst["enabled"], false);

    // Another account sees none of it.
    for path in [
        format!("/api/v2/apps/{app_id}.json"),
        format!("/api/v2/apps/installations/{}.json", inst["id"]),
        format!(
            "/api/v2/apps/job_statuses/{}.json",
            job["id"].as_str().unwrap()
        ),
    ] {
        let resp = t.get(&path, BETA_ADMIN).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Anonymous callers of an "Everyone" endpoint see no private app; bad credentials are 401.
    let resp = t
        .http
        .get(t.url(&format!("/api/v2/apps/{app_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = t
        .get(
            &format!("/api/v2/apps/{app_id}"),
            ("admin@acme.example", "nope"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Unknown jobs.
    let resp = t
        .get("/api/v2/apps/job_statuses/deadbeef.json", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = t
        .get(
            "/api/v2/apps/installations/job_statuses/deadbeef.json",
            ADMIN,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn single_install_apps_install_once() {
    let t = spawn(SimConfig::default()).await;
    let mut manifest = fixture_manifest();
    manifest["singleInstall"] = json!(true);
    let upload_id = t.upload("/api/v2/apps", fixture_zip(&manifest, &[])).await;
    let job: Value = t
        .post("/api/v2/apps", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, job, _) = t
        .poll_job(&format!(
            "/api/v2/apps/job_statuses/{}",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    let body = json!({"app_id": job["app_id"], "settings": {"api_token": "t"}});
    let first = t
        .post("/api/v2/apps/installations", ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = t
        .post("/api/v2/apps/installations", ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

// ---------------------------------------------------------------------------------------------
// TLS

fn write_test_cert() -> (std::path::PathBuf, std::path::PathBuf, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir = std::env::temp_dir().join(format!("zenrelay-sim-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.join("sim.pem");
    let key = dir.join("sim.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let (cert, key, cert_pem) = write_test_cert();
    let config = SimConfig {
        tls: Some(zenrelay::sim::TlsFiles {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        }),
        ..SimConfig::default()
    };
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let t = spawn_with(config, client, "https").await;
    let resp = t
        .notify(ADMIN, &json!({"app_id": 1, "event": "secure"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(t.sim.notifications("acme")[0].json["event"], "secure");

    // URLs handed out say https.
    let upload_id = t
        .upload("/api/v2/apps", fixture_zip(&fixture_manifest(), &[]))
        .await;
    let job: Value = t
        .post("/api/v2/apps", ADMIN)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, job, _) = t
        .poll_job(&format!(
            "/api/v2/apps/job_statuses/{}",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    assert!(job["app_url"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/v2/apps.json",
            t.addr.port()
        ))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // An untrusting client refuses the self-signed certificate.
    let untrusting = reqwest::Client::new()
        .get(t.url("/api/v2/apps.json"))
        .send()
        .await;
    assert!(untrusting.is_err());
    let _ = std::fs::remove_dir_all(cert.parent().unwrap());
}

#[tokio::test]
async fn tls_with_unreadable_files_fails_to_start_naming_the_key() {
    let config = SimConfig {
        tls: Some(zenrelay::sim::TlsFiles {
            cert: "/nonexistent/sim.pem".into(),
            key: "/nonexistent/sim.key".into(),
        }),
        ..SimConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = zenrelay::sim::Simulator::new(config)
        .serve(listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("sim.tls.cert"), "{err:#}");
}

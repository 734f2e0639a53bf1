//! The Apps API proxy against the simulator: both families' app lifecycles, credential
//! injection, routing, auth, retries with fault injection, pacing, the hostile-request
//! corpus over raw TCP, the HTTPS listener and a real third-party Zendesk client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::sim::sim_support::{fixture_manifest, fixture_zip, REQUIREMENTS};
use crate::support::*;

/// The `Authorization` the simulator must see for account `name`.
fn account_auth(name: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD
        .encode(format!("admin@{name}.example/token:tok-{name}"));
    format!("Basic {v}")
}

/// Basic auth carrying the client key as the password.
fn basic_key(user: &str, key: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    format!("Basic {v}")
}

/// A gateway for `accounts` of `sim` with `[proxy]` settings `proxy`; with Redis (and a
/// delivery worker) only when `redis` is given.
async fn gateway(
    sim: &TestSim,
    accounts: &[&str],
    proxy: &str,
    redis: Option<&RedisServer>,
) -> TestGateway {
    spawn_gateway(config(&gateway_text(sim, accounts, proxy, redis))).await
}

fn gateway_text(
    sim: &TestSim,
    accounts: &[&str],
    proxy: &str,
    redis: Option<&RedisServer>,
) -> String {
    let (url, delivery) = match redis {
        Some(r) => (r.url(), ""),
        None => ("redis://127.0.0.1:1/0".to_string(), "enabled = false"),
    };
    let prefix = format!("proxy-{}", uuid::Uuid::now_v7().simple());
    let mut text = gateway_toml(&url, &prefix, sim, accounts, delivery);
    text.push_str(&format!(
        "\n[proxy]\nretry_base_ms = 10\nretry_max_ms = 50\n{proxy}\n"
    ));
    text
}

/// A caller of the proxy: base URL (with or without `/zendesk/{account}`), credentials and
/// an optional `Host`.
#[derive(Clone)]
struct Caller {
    http: reqwest::Client,
    base: String,
    auth: String,
    host: Option<String>,
}

impl Caller {
    fn prefixed(gw: &TestGateway, account: &str) -> Self {
        Caller {
            http: reqwest::Client::new(),
            base: format!("{}/zendesk/{account}", gw.base),
            auth: format!("Bearer {KEY}"),
            host: None,
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(host) = &self.host {
            req = req.header("host", host);
        }
        req
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert!(
            resp.headers().contains_key("x-zenrelay-attempts"),
            "{path}: no X-Zenrelay-Attempts"
        );
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn upload(&self, family: &str, zip: Vec<u8>) -> u64 {
        let part = reqwest::multipart::Part::bytes(zip)
            .file_name("app.zip")
            .mime_str("application/zip")
            .unwrap();
        let form = reqwest::multipart::Form::new().part("uploaded_data", part);
        let resp = self
            .request(Method::POST, &format!("{family}/uploads.json"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["x-zenrelay-attempts"], "1");
        resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
    }

    async fn poll_job(&self, path: &str) -> Value {
        for _ in 0..100 {
            let (_, job) = self.json(Method::GET, path, None).await;
            if job["status"] == "completed" || job["status"] == "failed" {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {path} never finished");
    }
}

/// Every request the simulator logged was made with the account's credentials (the
/// simulator attributes a request to an account by its credentials only when they are
/// valid; the `Host` here is an IP, which names no account).
fn assert_sim_saw_account_credentials(sim: &TestSim, account: &str, at_least: usize) {
    let log = sim.sim.requests();
    assert!(log.len() >= at_least, "only {} requests", log.len());
    for r in &log {
        assert_eq!(r.account.as_deref(), Some(account), "{r:?}");
        assert_ne!(r.status, Some(401), "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycles

#[tokio::test]
async fn support_lifecycle_through_the_proxy() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "", Some(&redis)).await;
    let mut z = Caller::prefixed(&gw, "acme");
    // A caller's Basic credentials naming a real Zendesk user: were they forwarded, the
    // simulator would refuse them (the password is the client key, not the user's token).
    z.auth = basic_key("admin@acme.example/token", KEY);
    let zip = fixture_zip(&fixture_manifest(), &[("requirements.json", REQUIREMENTS)]);

    let upload_id = z.upload("/api/v2/apps", zip).await;
    let (status, created) = z
        .json(
            Method::POST,
            "/api/v2/apps.json",
            Some(json!({"name": "Proxied App", "short_description": "d", "upload_id": upload_id.to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_string();
    let job = z
        .poll_job(&format!("/api/v2/apps/job_statuses/{job_id}.json"))
        .await;
    assert_eq!(job["status"], "completed", "{job}");
    let app_id = job["app_id"].as_u64().unwrap();

    let (status, app) = z
        .json(
            Method::GET,
            &format!("/api/support/apps/{app_id}.json"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app["name"], "Proxied App");
    let (_, owned) = z
        .json(
            Method::GET,
            "/api/v2/apps/owned.json?exclude=parameters",
            None,
        )
        .await;
    assert_eq!(owned["apps"][0]["id"], app_id);
    assert!(owned["apps"][0].get("parameters").is_none(), "query passed");
    let pem = z
        .request(
            Method::GET,
            &format!("/api/v2/apps/{app_id}/public_key.pem"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pem.headers()["content-type"], "application/x-pem-file");
    assert!(pem
        .text()
        .await
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    // Install, poll the requirements job, read the requirements.
    let (status, inst) = z
        .json(
            Method::POST,
            "/api/v2/apps/installations.json",
            Some(json!({"app_id": app_id, "settings": {"name": "Proxied", "api_token": "s3cret"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{inst}");
    let inst_id = inst["id"].as_u64().unwrap();
    let pending = inst["pending_job_id"].as_str().unwrap().to_string();
    let job = z
        .poll_job(&format!(
            "/api/v2/apps/installations/job_statuses/{pending}.json"
        ))
        .await;
    assert_eq!(job["status"], "completed");
    let (_, reqs) = z
        .json(
            Method::GET,
            &format!("/api/v2/apps/installations/{inst_id}/requirements.json"),
            None,
        )
        .await;
    assert_eq!(reqs["requirements"].as_array().unwrap().len(), 2);

    // Update the installation, list it with the app side-loaded.
    let (status, updated) = z
        .json(
            Method::PUT,
            &format!("/api/v2/apps/installations/{inst_id}.json"),
            Some(json!({"settings": {"name": "Proxied - Updated"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["settings"]["name"], "Proxied - Updated");
    let (_, listed) = z
        .json(
            Method::GET,
            "/api/v2/apps/installations.json?include=app",
            None,
        )
        .await;
    assert_eq!(listed["installations"][0]["id"], inst_id);
    assert_eq!(listed["apps"][0]["id"], app_id);

    // Update the app with a new version.
    let mut manifest = fixture_manifest();
    manifest["version"] = json!("1.1.0");
    let upload2 = z.upload("/api/v2/apps", fixture_zip(&manifest, &[])).await;
    let (status, job) = z
        .json(
            Method::PUT,
            &format!("/api/v2/apps/{app_id}.json"),
            Some(json!({"upload_id": upload2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let job = z
        .poll_job(&format!(
            "/api/v2/apps/job_statuses/{}",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job["status"], "completed");

    // Notify: queued by the gateway, answered as Zendesk answers, delivered with the
    // account's credentials.
    let resp = z
        .request(Method::POST, "/api/v2/apps/notify.json")
        .json(&json!({"app_id": app_id, "event": "proxied", "body": "{\"a\":1}", "agent_id": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-zenrelay-attempts"], "0");
    let event_id = resp.headers()["x-zenrelay-event-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(resp.text().await.unwrap(), "null");
    Api::from(&gw)
        .wait_status(&event_id, "delivered", Duration::from_secs(10))
        .await;
    let delivered = sim.sim.notifications("acme");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].json["event"], "proxied");
    assert_eq!(delivered[0].json["app_id"], app_id);
    assert_eq!(
        delivered[0].authorization.as_deref(),
        Some(account_auth("acme").as_str())
    );

    // Remove, delete.
    let (status, _) = z
        .json(
            Method::DELETE,
            &format!("/api/v2/apps/installations/{inst_id}.json"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = z
        .json(Method::DELETE, &format!("/api/v2/apps/{app_id}.json"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = z
        .json(Method::GET, &format!("/api/v2/apps/{app_id}.json"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "upstream's 404 passes: {body}"
    );
    assert_eq!(body["error"], "RecordNotFound");

    assert_sim_saw_account_credentials(&sim, "acme", 15);
    gw.shutdown().await;
}

#[tokio::test]
async fn sell_lifecycle_through_the_proxy_routed_by_host() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    let gw = gateway(&sim, &["acme", "beta"], "", Some(&redis)).await;
    // A drop-in client: plain Zendesk paths, the account named by the Host, the client key
    // as the password of `someone/token`.
    let z = Caller {
        http: reqwest::Client::new(),
        base: gw.base.clone(),
        auth: basic_key("someone@example.com/token", KEY),
        host: Some("beta.relay.test".into()),
    };
    let zip = fixture_zip(&fixture_manifest(), &[("requirements.json", REQUIREMENTS)]);
    let upload_id = z.upload("/api/sell/apps", zip).await;
    let (status, created) = z
        .json(
            Method::POST,
            "/api/apps.json",
            Some(json!({"name": "Sell App", "short_description": "d", "upload_id": upload_id.to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let job = z
        .poll_job(&format!(
            "/api/sell/apps/job_statuses/{}.json",
            created["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job["status"], "completed");
    let app_id = job["app_id"].as_u64().unwrap();
    let (_, listed) = z.json(Method::GET, "/api/sell/apps.json", None).await;
    assert_eq!(listed["apps"][0]["id"], app_id);

    let (status, inst) = z
        .json(
            Method::POST,
            "/api/sell/apps/installations.json",
            Some(json!({"app_id": app_id, "settings": {"name": "Helpful", "api_token": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inst}");
    let inst_id = inst["id"].as_u64().unwrap();
    let job = z
        .poll_job(&format!(
            "/api/sell/apps/installations/job_statuses/{}.json",
            inst["pending_job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job["status"], "completed");
    let (_, shown) = z
        .json(
            Method::GET,
            &format!("/api/sell/apps/installations/{inst_id}.json"),
            None,
        )
        .await;
    assert_eq!(shown["installation"]["id"], inst_id);
    let (status, updated) = z
        .json(
            Method::PUT,
            &format!("/api/sell/apps/installations/{inst_id}.json"),
            Some(json!({"settings": {"name": "Helpful - Updated"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["settings"]["name"], "Helpful - Updated");
    let (_, reqs) = z
        .json(
            Method::GET,
            &format!("/api/sell/apps/installations/{inst_id}/requirements"),
            None,
        )
        .await;
    assert_eq!(reqs["requirements"].as_array().unwrap().len(), 2);

    // Sell has no Notify endpoint: the Support one serves the account.
    let (status, body) = z
        .json(
            Method::POST,
            "/api/sell/apps/notify.json",
            Some(json!({"app_id": app_id, "event": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "route_not_allowed");
    let (status, body) = z
        .json(
            Method::POST,
            "/api/v2/apps/notify",
            Some(json!({"app_id": app_id, "event": "sell-event"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Null);
    wait_for("the Sell notification", Duration::from_secs(10), || {
        !sim.sim.notifications("beta").is_empty()
    })
    .await;
    assert_eq!(
        sim.sim.notifications("beta")[0].authorization.as_deref(),
        Some(account_auth("beta").as_str())
    );

    let upload2 = z
        .upload("/api/sell/apps", fixture_zip(&fixture_manifest(), &[]))
        .await;
    let (status, _) = z
        .json(
            Method::PUT,
            &format!("/api/sell/apps/{app_id}.json"),
            Some(json!({"upload_id": upload2.to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = z
        .json(
            Method::DELETE,
            &format!("/api/sell/apps/installations/{inst_id}.json"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = z
        .json(
            Method::DELETE,
            &format!("/api/sell/apps/{app_id}.json"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    assert_sim_saw_account_credentials(&sim, "beta", 12);
    assert!(sim.sim.notifications("acme").is_empty());
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Routing, auth, headers

#[tokio::test]
async fn routing_by_prefix_host_hosts_and_default_account() {
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    let mut text = gateway_text(&sim, &["acme", "beta"], "default_account = \"acme\"", None);
    text = text.replace(
        "subdomain = \"beta\"\n",
        "subdomain = \"beta\"\nhosts = [\"zendesk.beta.internal\"]\n",
    );
    let gw = spawn_gateway(config(&text)).await;
    let http = reqwest::Client::new();
    let get = |url: String, host: Option<&'static str>| {
        let mut req = http.get(url).bearer_auth(KEY);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        req.send()
    };
    let path = "/api/v2/apps/installations.json";
    for (url, host, account) in [
        (format!("{}/zendesk/beta{path}", gw.base), None, "beta"),
        (
            format!("{}{path}", gw.base),
            Some("beta.relay.test:8080"),
            "beta",
        ),
        (
            format!("{}{path}", gw.base),
            Some("zendesk.beta.internal"),
            "beta",
        ),
        (
            format!("{}{path}", gw.base),
            Some("acme.relay.test"),
            "acme",
        ),
        (format!("{}{path}", gw.base), None, "acme"),
        (
            format!("{}{path}", gw.base),
            Some("unknown.relay.test"),
            "acme",
        ),
    ] {
        sim.sim.reset();
        let resp = get(url.clone(), host).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url} {host:?}");
        let log = sim.sim.requests();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].account.as_deref(), Some(account), "{url} {host:?}");
        assert_eq!(log[0].path, path);
    }
    // The prefix wins over the Host.
    sim.sim.reset();
    let resp = get(
        format!("{}/zendesk/beta{path}", gw.base),
        Some("acme.relay.test"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sim.sim.requests()[0].account.as_deref(), Some("beta"));
    gw.shutdown().await;

    // Without a default account, a Host naming none is refused.
    let gw = gateway(&sim, &["acme"], "", None).await;
    sim.sim.reset();
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", gw.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_account"
    );
    assert!(sim.sim.requests().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn auth_takes_bearer_or_basic_password_and_enforces_scopes() {
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    let gw = gateway(&sim, &["acme", "beta"], "", None).await;
    let http = reqwest::Client::new();
    let url = |a: &str| format!("{}/zendesk/{a}/api/v2/apps/installations.json", gw.base);
    let send = |u: String, auth: Option<String>| {
        let mut req = http.get(u);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let cases: Vec<(String, Option<String>, u16, Option<&str>)> = vec![
        (url("acme"), Some(format!("Bearer {KEY}")), 200, None),
        (url("acme"), Some(basic_key("anyone", KEY)), 200, None),
        (
            url("acme"),
            Some(basic_key("bot@x.example/token", KEY)),
            200,
            None,
        ),
        (
            url("acme"),
            Some(basic_key("acme-only", ACME_ONLY_KEY)),
            200,
            None,
        ),
        (
            url("beta"),
            Some(basic_key("acme-only", ACME_ONLY_KEY)),
            403,
            Some("forbidden"),
        ),
        (url("acme"), None, 401, Some("unauthorized")),
        (
            url("acme"),
            Some("Bearer wrong-key-0123456789".into()),
            401,
            Some("unauthorized"),
        ),
        (
            url("acme"),
            Some(basic_key(KEY, "x")),
            401,
            Some("unauthorized"),
        ),
        (
            url("acme"),
            Some(account_auth("acme")),
            401,
            Some("unauthorized"),
        ),
        (
            url("nope"),
            Some(format!("Bearer {KEY}")),
            404,
            Some("unknown_account"),
        ),
    ];
    for (u, auth, status, code) in cases {
        sim.sim.reset();
        let resp = send(u.clone(), auth.clone()).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{u} {auth:?}");
        let attempts = resp.headers()["x-zenrelay-attempts"].clone();
        if status == 401 {
            assert!(resp.headers().contains_key("www-authenticate"));
        }
        if let Some(code) = code {
            assert_eq!(attempts, "0");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{u} {auth:?}");
            assert!(
                sim.sim.requests().is_empty(),
                "refused calls never go upstream"
            );
        } else {
            assert_eq!(attempts, "1");
        }
    }
    gw.shutdown().await;
}

/// What a recording upstream saw: method, path and query, headers, body.
type Seen = Arc<Mutex<Vec<(String, String, http::HeaderMap, bytes::Bytes)>>>;

/// An upstream that records every request and answers 422 with rate-limit headers and a
/// session cookie.
async fn spawn_recorder() -> (String, Seen) {
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;
    let seen: Seen = Arc::default();
    async fn record(State(seen): State<Seen>, req: Request) -> axum::response::Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        seen.lock().unwrap().push((
            parts.method.to_string(),
            parts.uri.to_string(),
            parts.headers.clone(),
            body,
        ));
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            [
                ("content-type", "application/json; charset=utf-8"),
                ("x-rate-limit", "700"),
                ("x-rate-limit-remaining", "698"),
                ("set-cookie", "_zendesk_session=account-session; path=/"),
                ("x-zendesk-api-warn", "deprecated"),
            ],
            r#"{"error":"RecordInvalid","description":"Record validation errors"}"#,
        )
            .into_response()
    }
    let app = axum::Router::new()
        .fallback(record)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn credentials_are_injected_and_everything_else_passes_unchanged() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let (recorder, seen) = spawn_recorder().await;
    let text = gateway_text(&sim, &["acme"], "", None).replace(&sim.base, &recorder);
    let gw = spawn_gateway(config(&text)).await;

    // A multipart upload with cookies, hop-by-hop headers and a query string.
    let zip = fixture_zip(&fixture_manifest(), &[]);
    let boundary = "zenrelay-boundary-1234";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"uploaded_data\"; filename=\"app.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&zip);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/zendesk/acme/api/v2/apps/uploads.json?locale=en-US&x=a%20b",
            gw.base
        ))
        .header("authorization", basic_key("me", KEY))
        .header("cookie", "_zendesk_shared_session=caller")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("user-agent", "zenrelay-test/1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp.headers()["x-rate-limit-remaining"], "698");
    assert_eq!(resp.headers()["x-rate-limit"], "700");
    assert_eq!(resp.headers()["x-zendesk-api-warn"], "deprecated");
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "the account's session never reaches a caller"
    );
    assert_eq!(
        resp.headers()["x-zenrelay-attempts"],
        "1",
        "422 is not retried"
    );
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":"RecordInvalid","description":"Record validation errors"}"#
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (method, uri, headers, got) = &seen[0];
    assert_eq!(method, "POST");
    assert_eq!(uri, "/api/v2/apps/uploads.json?locale=en-US&x=a%20b");
    assert_eq!(
        got,
        &bytes::Bytes::from(body),
        "the body passes byte for byte"
    );
    assert_eq!(
        headers["content-type"],
        format!("multipart/form-data; boundary={boundary}")
    );
    assert_eq!(headers["authorization"], account_auth("acme").as_str());
    assert_eq!(headers.get_all("authorization").iter().count(), 1);
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["user-agent"], "zenrelay-test/1");
    for dropped in ["cookie", "x-drop-me", "proxy-authorization"] {
        assert!(headers.get(dropped).is_none(), "{dropped} was forwarded");
    }
    assert!(headers["host"].to_str().unwrap().starts_with("127.0.0.1:"));
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains(KEY) && !v.contains(&basic_key("me", KEY)),
            "the caller's key leaked in {name}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_before_upstream() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "max_body_bytes = 1000", None).await;
    let url = format!("{}/zendesk/acme/api/v2/apps/uploads.json", gw.base);
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/zip")
        .body(vec![0u8; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["x-zenrelay-attempts"], "0");
    // Streamed without a length, too.
    let stream = futures::stream::iter((0..20).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(vec![1u8; 100])))
    }));
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(KEY)
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(stream)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(sim.sim.requests().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn notify_through_the_proxy_answers_as_zendesk() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "", Some(&redis)).await;
    let http = reqwest::Client::new();
    let url = format!("{}/zendesk/acme/api/v2/apps/notify.json", gw.base);
    let big = "x".repeat(1024 * 1024);
    let resp = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"app_id": 1, "event": "big", "body": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.text().await.unwrap(), "\"Payload too large\"");
    let resp = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"event": "no app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = http
        .post(&url)
        .bearer_auth(KEY)
        .header("idempotency-key", "k1")
        .json(&json!({"app_id": 5, "event": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-zenrelay-event-id"].clone();
    assert_eq!(resp.text().await.unwrap(), "null");
    let again = http
        .post(&url)
        .bearer_auth(KEY)
        .header("idempotency-key", "k1")
        .json(&json!({"app_id": 5, "event": "once"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["x-zenrelay-event-id"], id);
    wait_for("the notification", Duration::from_secs(10), || {
        !sim.sim.notifications("acme").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = sim.received("acme");
    assert_eq!(received, vec![json!({"app_id": 5, "event": "once"})]);
    // Nothing went upstream but the delivered Notify call.
    let log = sim.sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/api/v2/apps/notify");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Retries

async fn attempts_and_status(resp: reqwest::Response) -> (u16, u32, Value) {
    let status = resp.status().as_u16();
    let attempts = resp.headers()["x-zenrelay-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, attempts, body)
}

fn upstream_calls(sim: &TestSim, method: &str, path: &str) -> usize {
    sim.sim
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

#[tokio::test]
async fn idempotent_calls_are_retried_on_transient_failures() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "max_attempts = 4", None).await;
    let http = reqwest::Client::new();
    let list = "/api/v2/apps/installations.json";
    let url = format!("{}/zendesk/acme{list}", gw.base);
    for rule in [
        json!({"status": 502, "fail_next": 3}),
        json!({"status": 503, "fail_next": 3}),
        json!({"status": 504, "fail_next": 3}),
        json!({"status": 429, "fail_next": 3}),
        json!({"status": 429, "retry_after": 1, "fail_next": 1}),
        json!({"drop_connection": true, "fail_next": 3}),
    ] {
        sim.sim.reset();
        let mut rule = rule;
        rule["route"] = json!("/api/v2/apps/installations");
        sim.fault(rule.clone()).await;
        let started = Instant::now();
        let resp = http.get(&url).bearer_auth(KEY).send().await.unwrap();
        let (status, attempts, _) = attempts_and_status(resp).await;
        assert_eq!(status, 200, "{rule}");
        let expected = rule["fail_next"].as_u64().unwrap() as u32 + 1;
        assert_eq!(attempts, expected, "{rule}");
        assert_eq!(
            upstream_calls(&sim, "GET", list),
            expected as usize,
            "{rule}"
        );
        if rule.get("retry_after").is_some() {
            assert!(
                started.elapsed() >= Duration::from_millis(950),
                "Retry-After honoured"
            );
        }
    }

    // PUT and DELETE too.
    sim.sim.reset();
    let path = "/api/v2/apps/installations/999.json";
    sim.fault(json!({"route": "/api/v2/apps/installations/999", "status": 503, "fail_next": 1}))
        .await;
    let resp = http
        .put(format!("{}/zendesk/acme{path}", gw.base))
        .bearer_auth(KEY)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    let (status, attempts, body) = attempts_and_status(resp).await;
    assert_eq!((status, attempts), (404, 2), "{body}");
    sim.fault(
        json!({"route": "/api/v2/apps/installations/999", "drop_connection": true, "fail_next": 1}),
    )
    .await;
    let resp = http
        .delete(format!("{}/zendesk/acme{path}", gw.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let (status, attempts, _) = attempts_and_status(resp).await;
    assert_eq!((status, attempts), (404, 2));

    // Attempts run out: upstream's last answer goes back.
    sim.sim.reset();
    sim.fault(json!({"route": "/api/v2/apps/installations", "status": 503}))
        .await;
    let resp = http.get(&url).bearer_auth(KEY).send().await.unwrap();
    let (status, attempts, body) = attempts_and_status(resp).await;
    assert_eq!((status, attempts), (503, 4));
    assert_eq!(body["error"], "ServiceUnavailable");
    assert_eq!(upstream_calls(&sim, "GET", list), 4);
    // Errors that retrying cannot help are not retried.
    sim.sim.reset();
    sim.fault(json!({"route": "/api/v2/apps/installations", "status": 500, "fail_next": 1}))
        .await;
    let resp = http.get(&url).bearer_auth(KEY).send().await.unwrap();
    let (status, attempts, _) = attempts_and_status(resp).await;
    assert_eq!((status, attempts), (500, 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn post_is_never_repeated_after_an_ambiguous_failure() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(
        &sim,
        &["acme"],
        "max_attempts = 4\nupstream_timeout_ms = 400",
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let path = "/api/v2/apps/installations.json";
    let url = format!("{}/zendesk/acme{path}", gw.base);
    let install = json!({"app_id": 12345, "settings": {"name": "x"}});
    for (rule, expected_status, code) in [
        (
            json!({"drop_connection": true, "fail_next": 1}),
            502,
            Some("upstream_error"),
        ),
        (json!({"status": 502, "fail_next": 1}), 502, None),
        (json!({"status": 504, "fail_next": 1}), 504, None),
        (json!({"status": 503, "fail_next": 1}), 503, None),
        (
            json!({"latency_ms": 1500, "fail_next": 1}),
            504,
            Some("upstream_timeout"),
        ),
    ] {
        sim.sim.reset();
        let mut rule = rule;
        rule["route"] = json!("/api/v2/apps/installations");
        sim.fault(rule.clone()).await;
        let resp = http
            .post(&url)
            .bearer_auth(KEY)
            .json(&install)
            .send()
            .await
            .unwrap();
        let (status, attempts, body) = attempts_and_status(resp).await;
        assert_eq!((status, attempts), (expected_status, 1), "{rule}: {body}");
        if let Some(code) = code {
            assert_eq!(body["error"]["code"], code, "{rule}");
        }
        if rule.get("latency_ms").is_some() {
            // The simulator logs a request when it answers: wait until the delayed
            // attempt would have; a repeat would not be delayed (the rule is spent).
            tokio::time::sleep(Duration::from_millis(1300)).await;
            assert!(
                upstream_calls(&sim, "POST", path) <= 1,
                "{rule}: POST repeated"
            );
        } else {
            assert_eq!(
                upstream_calls(&sim, "POST", path),
                1,
                "{rule}: POST repeated"
            );
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn post_is_retried_when_surely_not_processed() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "max_attempts = 3", None).await;
    let http = reqwest::Client::new();
    let path = "/api/v2/apps/installations.json";
    let url = format!("{}/zendesk/acme{path}", gw.base);
    let install = json!({"app_id": 12345, "settings": {"name": "x"}});
    for rule in [
        json!({"status": 429, "fail_next": 2}),
        json!({"status": 429, "retry_after": 1, "fail_next": 1}),
        json!({"status": 503, "retry_after": 1, "fail_next": 1}),
    ] {
        sim.sim.reset();
        let mut rule = rule;
        rule["route"] = json!("/api/v2/apps/installations");
        sim.fault(rule.clone()).await;
        let resp = http
            .post(&url)
            .bearer_auth(KEY)
            .json(&install)
            .send()
            .await
            .unwrap();
        let (status, attempts, body) = attempts_and_status(resp).await;
        let expected = rule["fail_next"].as_u64().unwrap() as u32 + 1;
        // The simulator has no app 12345: its 404 is the answer that finally came through.
        assert_eq!((status, attempts), (404, expected), "{rule}: {body}");
        assert_eq!(upstream_calls(&sim, "POST", path), expected as usize);
    }
    gw.shutdown().await;

    // A refused connection: retried up to max_attempts, then 502.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let text = gateway_text(&sim, &["acme"], "max_attempts = 3", None).replace(&sim.base, &dead);
    let gw = spawn_gateway(config(&text)).await;
    let resp = http
        .post(format!("{}/zendesk/acme{path}", gw.base))
        .bearer_auth(KEY)
        .json(&install)
        .send()
        .await
        .unwrap();
    let (status, attempts, body) = attempts_and_status(resp).await;
    assert_eq!((status, attempts), (502, 3), "{body}");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_after_over_the_cap_goes_back_to_the_caller() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "retry_after_cap_seconds = 2", None).await;
    let http = reqwest::Client::new();
    let list = "/api/v2/apps/installations.json";
    for (method, status) in [(Method::GET, 429), (Method::POST, 429), (Method::GET, 503)] {
        sim.sim.reset();
        sim.fault(json!({"route": "/api/v2/apps/installations", "status": status, "retry_after": 30, "fail_next": 1}))
            .await;
        let started = Instant::now();
        let resp = http
            .request(method.clone(), format!("{}/zendesk/acme{list}", gw.base))
            .bearer_auth(KEY)
            .json(&json!({"app_id": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method}");
        assert_eq!(resp.headers()["retry-after"], "30");
        assert_eq!(resp.headers()["x-zenrelay-attempts"], "1");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(upstream_calls(&sim, method.as_str(), list), 1);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_timeouts_answer_504_json() {
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(
        &sim,
        &["acme"],
        "max_attempts = 2\nupstream_timeout_ms = 300",
        None,
    )
    .await;
    sim.fault(json!({"route": "/api/v2/apps/installations", "latency_ms": 1000}))
        .await;
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/zendesk/acme/api/v2/apps/installations.json",
            gw.base
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let (status, attempts, body) = attempts_and_status(resp).await;
    assert_eq!((status, attempts), (504, 2));
    assert_eq!(body["error"]["code"], "upstream_timeout");
    gw.shutdown().await;
}

#[tokio::test]
async fn bursts_are_paced_not_refused() {
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    // One call per 100 ms per account, no burst allowance beyond one.
    let gw = gateway(&sim, &["acme", "beta"], "per_minute = 600\nburst = 1", None).await;
    let http = reqwest::Client::new();
    let url = |account: &str| {
        format!(
            "{}/zendesk/{account}/api/v2/apps/installations.json",
            gw.base
        )
    };
    let started = Instant::now();
    let acme = (0..6).map(|_| http.get(url("acme")).bearer_auth(KEY).send());
    let acme = futures::future::join_all(acme);
    // Another account is not held up by acme's burst, sent at the same time.
    let beta = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let resp = http.get(url("beta")).bearer_auth(KEY).send().await.unwrap();
        (resp.status(), started.elapsed())
    };
    let (results, (beta_status, beta_done)) = tokio::join!(acme, beta);
    let acme_done = started.elapsed();
    for r in results {
        assert_eq!(r.unwrap().status(), StatusCode::OK, "paced, not refused");
    }
    assert!(acme_done >= Duration::from_millis(450), "{acme_done:?}");
    assert_eq!(beta_status, StatusCode::OK);
    assert!(
        beta_done + Duration::from_millis(100) < acme_done,
        "beta waited behind acme: {beta_done:?} vs {acme_done:?}"
    );
    let mut times: Vec<u64> = sim
        .sim
        .requests()
        .iter()
        .filter(|r| r.account.as_deref() == Some("acme"))
        .map(|r| r.at_unix_ms)
        .collect();
    times.sort();
    assert_eq!(times.len(), 6);
    // Five intervals of 100 ms, less what forwarding delays can take off the two ends.
    assert!(times[5] - times[0] >= 400, "{times:?}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile requests

/// Sends raw bytes and returns the status of the answer (0 when the connection closed
/// without one).
async fn raw(addr: &str, request: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hostile_requests_are_refused_and_never_reach_upstream() {
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    let gw = gateway(&sim, &["acme", "beta"], "", None).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let sim_addr = sim.base.trim_start_matches("http://").to_string();
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let get = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
    };
    let with = |method: &str, target: &str, extra: &str| {
        format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let z = "/zendesk/acme";
    let apps = format!("{z}/api/v2/apps.json");
    let corpus: Vec<String> = vec![
        // Dot segments, raw and encoded.
        get(&format!("{z}/api/v2/apps/../../v2/users.json")),
        get(&format!("{z}/api/v2/apps/./owned.json")),
        get(&format!("{z}/./api/v2/apps.json")),
        get("/zendesk/../zendesk/acme/api/v2/apps.json"),
        get("/zendesk/beta/../acme/api/v2/apps.json"),
        get(&format!("{z}/api/v2/apps/%2e%2e/%2e%2e/v2/users.json")),
        get(&format!("{z}/api/v2/apps/%2E%2E/users")),
        get(&format!("{z}/api/v2/apps/.%2e/users.json")),
        get(&format!("{z}/api/v2/apps/%252e%252e/users.json")),
        get(&format!("{z}/api/v2/apps/..;/users.json")),
        get(&format!("{z}/api/v2/apps/installations/1/../../../users.json")),
        get(&format!("{z}/api/v2/apps/job_statuses/../../users")),
        // Encoded slashes and backslashes.
        get(&format!("{z}/api/v2/apps%2f..%2f..%2fv2%2fusers.json")),
        get(&format!("{z}/api/v2/apps%2F1.json")),
        get(&format!("{z}/api/v2/apps/..%5c..%5cusers.json")),
        get(&format!("{z}/api/v2/apps\\..\\users.json")),
        get(&format!("{z}/api/v2/%61pps.json")),
        get(&format!("{z}/api/v2/apps.json%00")),
        // Empty segments.
        get(&format!("/{z}/api/v2/apps.json")),
        get("/zendesk//acme/api/v2/apps.json"),
        get(&format!("{z}//api/v2/apps.json")),
        get(&format!("{z}/api/v2//apps.json")),
        get(&format!("{z}/api/v2/apps/")),
        // Path parameters and odd characters.
        get(&format!("{z}/api/v2/apps;x=1")),
        get(&format!("{z}/api/v2/apps.json;/../../users")),
        get("/zendesk/acme@evil.example/api/v2/apps.json"),
        get("/zendesk/acme:80/api/v2/apps.json"),
        // Absolute-, authority- and asterisk-form targets.
        get(&format!("http://{sim_addr}/api/v2/apps.json")),
        get(&format!("http://{sim_addr}{apps}")),
        get("http://evil.example/zendesk/acme/api/v2/apps.json"),
        format!("CONNECT {sim_addr} HTTP/1.1\r\nHost: {sim_addr}\r\n{auth}Connection: close\r\n\r\n"),
        format!("OPTIONS * HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"),
        // Routes and methods that are not on the allowlist.
        get(&format!("{z}/api/v2/users.json")),
        get(&format!("{z}/api/v2/tickets.json")),
        get(&format!("{z}/API/V2/APPS.JSON")),
        get(&format!("{z}/api/v2/apps/-1.json")),
        get(&format!("{z}/api/v2/apps/1e3.json")),
        get(&format!("{z}/api/v2/apps/1.pem")),
        get(&format!("{z}/api/v2/apps/1/public_key.json.pem")),
        with("DELETE", &format!("{z}/api/v2/apps/installations.json"), ""),
        with("PATCH", &format!("{z}/api/v2/apps/1.json"), ""),
        with("HEAD", &apps, ""),
        with("OPTIONS", &apps, ""),
        with("TRACE", &apps, ""),
        with("POST", &format!("{z}/api/sell/apps/notify.json"), ""),
        with("POST", &format!("{z}/api/sell/apps/validate"), ""),
        get("/zendesk/acme"),
        get("/zendesk/acme/v1/queues"),
        get(&format!("{z}/__sim/requests")),
        // Method overrides and rewrite headers.
        get(&format!("{apps}?_method=DELETE")),
        with("POST", &format!("{z}/api/v2/apps/installations.json?%5Fmethod=DELETE"), ""),
        with("GET", &apps, "X-Original-URL: /api/v2/users.json\r\n"),
        with("GET", &apps, "X-Rewrite-URL: /api/v2/users.json\r\n"),
        with("GET", &apps, "X-Forwarded-Host: evil.example\r\n"),
        with("POST", &format!("{z}/api/v2/apps/installations.json"), "X-HTTP-Method-Override: DELETE\r\n"),
        format!("GET /api/v2/apps.json HTTP/1.1\r\nHost: acme.relay.test\r\nHost: beta.relay.test\r\n{auth}Connection: close\r\n\r\n"),
        // A Host naming no account, and no default account.
        format!("GET /api/v2/apps.json HTTP/1.1\r\nHost: {sim_addr}\r\n{auth}Connection: close\r\n\r\n"),
        format!("GET /api/v2/apps.json HTTP/1.1\r\nHost: evil.example\r\n{auth}Connection: close\r\n\r\n"),
        // Unknown account; malformed request lines.
        get("/zendesk/nope/api/v2/apps.json"),
        format!("GET /zendesk/beta/api/v2/apps.json HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ACME_ONLY_KEY}\r\nConnection: close\r\n\r\n"),
        format!("GET {z}/api/v2/apps 1.json HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"),
    ];
    assert!(corpus.len() >= 40, "{}", corpus.len());
    for request in &corpus {
        let status = raw(&addr, request).await;
        let line = request.lines().next().unwrap_or("");
        assert!((400..500).contains(&status), "{line:?} answered {status}");
    }
    let log: Value = reqwest::get(format!("{}/__sim/requests", sim.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["count"], 0, "a hostile request reached upstream: {log}");

    // The same client and key do get through on an allowed route.
    assert_eq!(raw(&addr, &get(&apps)).await, 200);
    assert_eq!(sim.sim.requests().len(), 1);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// HTTPS listener

#[tokio::test]
async fn gateway_serves_https_when_configured() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("relay.pem");
    let key = dir.path().join("relay.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = gateway_text(&sim, &["acme"], "default_account = \"acme\"", None).replace(
        "max_body_bytes = 4194304\n",
        &format!(
            "max_body_bytes = 4194304\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
    );
    let gw = spawn_gateway(config(&text)).await;
    let port = gw.base.rsplit(':').next().unwrap().to_string();
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let resp = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .get(format!("{base}/api/v2/apps/installations.json"))
        .basic_auth("someone/token", Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-zenrelay-attempts"], "1");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    gw.shutdown().await;

    // Unreadable files are refused when the config is validated, naming the key.
    let bad = text.replace(&cert.display().to_string(), "/nonexistent/relay.pem");
    let err = zenrelay::config::Config::from_toml_with_env(&bad, "test.toml", &[]).unwrap_err();
    assert!(
        err.to_string().starts_with("server.tls.cert: cannot read"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// A real third-party client

/// Where `scripts/install-test-tools.sh` puts the third-party clients.
fn tools_dir() -> std::path::PathBuf {
    std::env::var_os("ZENRELAY_TEST_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools")
        })
}

#[tokio::test]
async fn node_zendesk_works_through_the_gateway_by_base_url_only() {
    let modules = tools_dir().join("node/node_modules");
    if !modules.join("node-zendesk").exists() {
        let message = format!(
            "node-zendesk is not installed under {}: run scripts/install-test-tools.sh",
            modules.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return;
    }
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&sim, &["acme"], "", Some(&redis)).await;
    // An app to install, built through the proxy.
    let z = Caller::prefixed(&gw, "acme");
    let upload_id = z
        .upload("/api/v2/apps", fixture_zip(&fixture_manifest(), &[]))
        .await;
    let (_, created) = z
        .json(
            Method::POST,
            "/api/v2/apps.json",
            Some(json!({"name": "Node App", "short_description": "d", "upload_id": upload_id})),
        )
        .await;
    let job = z
        .poll_job(&format!(
            "/api/v2/apps/job_statuses/{}.json",
            created["job_id"].as_str().unwrap()
        ))
        .await;
    let app_id = job["app_id"].as_u64().unwrap();
    reqwest::Client::new()
        .delete(format!("{}/__sim/requests", sim.base))
        .send()
        .await
        .unwrap();

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_zendesk.js");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env(
            "ZENDESK_ENDPOINT",
            format!("{}/zendesk/acme/api/v2", gw.base),
        )
        .env("ZENDESK_USERNAME", "bot@internal.example")
        .env("ZENDESK_TOKEN", KEY)
        .env("APP_ID", app_id.to_string())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed:\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{stdout}\n{stderr}"));
    let inst_id = report["created_id"].as_u64().expect("an installation id");
    assert_eq!(report["shown_app_id"], app_id);
    assert_eq!(report["updated_name"], "Node - Updated");
    assert!(report["listed_ids"]
        .as_array()
        .unwrap()
        .contains(&json!(inst_id)));
    assert_eq!(report["notified"], true);
    wait_for("node's notification", Duration::from_secs(10), || {
        sim.sim
            .notifications("acme")
            .iter()
            .any(|n| n.json["event"] == "from-node")
    })
    .await;
    // Deleted (node-zendesk's own delete, or checked here).
    let (status, _) = z
        .json(
            Method::GET,
            &format!("/api/v2/apps/installations/{inst_id}.json"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{report}");
    assert_sim_saw_account_credentials(&sim, "acme", 5);
    gw.shutdown().await;
}

//! Signed webhooks end to end: the signature matrix, replay protection, schema, mapping
//! and condition, through to the simulator.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::ops::ops_toml;
use crate::support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
const GH_SECRET: &str = "github-secret-0123";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Standard Webhooks signature `v1,<base64>` of `body` with `secret`.
pub fn standard_signature(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(body);
    format!("v1,{}", b64(&hmac(&key, &content)))
}

/// POSTs `body` signed with `secret`, its timestamp `skew` seconds off now.
pub async fn standard_post(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    body: &[u8],
    skew: i64,
    request_id: Option<&str>,
) -> reqwest::Response {
    let ts = now() + skew;
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            standard_signature(secret, id, ts, body),
        )
        .body(body.to_vec());
    if let Some(rid) = request_id {
        req = req.header("x-request-id", rid);
    }
    req.send().await.unwrap()
}

async fn github_post(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    delivery: &str,
    body: &[u8],
) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/json")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hex::encode(hmac(secret.as_bytes(), body))),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn code(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn webhooks_toml(schema: &std::path::Path) -> String {
    format!(
        r#"
[[webhooks]]
name = "statuspage"
account = "acme"
signature = "standard-webhooks"
secret = "{SECRET}"
previous_secrets = ["{OLD_SECRET}"]
schema = "{schema}"
app_id = 375
event = "incident_update"
agent_id_from = "/assignee/zendesk_id"
body_from = "/incident"
condition = {{ pointer = "/incident/status", one_of = ["investigating", "resolved"] }}

[[webhooks]]
name = "gh"
account = "acme"
signature = "github"
secret = "{GH_SECRET}"
app_id_from = "/app"
event_from = "/action"
"#,
        schema = schema.display()
    )
}

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["incident"],
  "properties": {
    "incident": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "assignee": {"type": "object", "properties": {"zendesk_id": {"type": "integer"}}}
  }
}"#;

/// A client key shaped like a webhook's replay id neither blocks that webhook nor learns
/// whether it arrived.
#[tokio::test]
async fn client_keys_cannot_reach_webhook_replay_ids() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("statuspage.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut text = ops_toml(&redis.url(), "wsq", &sim, &["acme"], "");
    text.push_str(&webhooks_toml(&schema));
    let gw = spawn_gateway(config(&text)).await;
    let http = &gw.http;
    let notify = |key: &'static str| {
        http.post(format!("{}/v1/accounts/acme/notify", gw.base))
            .bearer_auth(KEY)
            .header("idempotency-key", key)
            .json(&json!({"app_id": 1, "event": "squat"}))
            .send()
    };
    let body = br#"{"incident": {"status": "investigating"}, "assignee": {"zendesk_id": 7}}"#;
    let url = format!("{}/v1/webhooks/statuspage", gw.base);

    for key in [
        "webhook:statuspage:msg_squat",
        "webhook_statuspage:msg_squat",
        "statuspage:msg_squat",
        "msg_squat",
    ] {
        let (status, e) = code(notify(key).await.unwrap()).await;
        assert_eq!(status, 202, "{key}: {e}");
    }
    let (status, e) =
        code(standard_post(http, &url, SECRET, "msg_squat", body, 0, None).await).await;
    assert_eq!(
        status, 202,
        "the webhook is not blocked by a client key: {e}"
    );
    let webhook_event = e["id"].as_str().unwrap().to_string();

    // The client's repeat answers its own event, never the webhook's.
    let (status, again) = code(notify("webhook:statuspage:msg_squat").await.unwrap()).await;
    assert_eq!(status, 202, "{again}");
    assert_ne!(again["id"].as_str().unwrap(), webhook_event);
    // A key with the replay namespace's separator is refused outright.
    let (status, e) = code(notify("webhook statuspage:msg_squat").await.unwrap()).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_idempotency_key"))
    );
    // The webhook's own replay is still refused.
    let (status, e) =
        code(standard_post(http, &url, SECRET, "msg_squat", body, 0, None).await).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("replayed_webhook"))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn signature_matrix_and_replays() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("statuspage.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut text = ops_toml(&redis.url(), "w", &sim, &["acme"], "");
    text.push_str(&webhooks_toml(&schema));
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);
    let http = &gw.http;
    let url = format!("{}/v1/webhooks/statuspage", gw.base);
    let body = br#"{"incident": {"status": "investigating", "name": "db down"}, "assignee": {"zendesk_id": 534}}"#;

    // Good.
    let (status, ok) =
        code(standard_post(http, &url, SECRET, "msg_good", body, 0, None).await).await;
    assert_eq!(status, 202, "{ok}");
    assert_eq!(ok["account"], "acme");
    let record = api
        .wait_status(
            ok["id"].as_str().unwrap(),
            "delivered",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(record["deliveries"][0]["agent_id"], 534);
    let got = sim.received("acme");
    assert_eq!(
        got[0],
        json!({"app_id": 375, "event": "incident_update", "body": "{\"name\":\"db down\",\"status\":\"investigating\"}", "agent_id": 534})
    );

    // Replayed id.
    let (status, e) =
        code(standard_post(http, &url, SECRET, "msg_good", body, 0, None).await).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("replayed_webhook"))
    );

    // Bad signature: wrong secret, tampered body, garbage.
    let (status, e) = code(
        standard_post(
            http,
            &url,
            "whsec_d3Jvbmctc2VjcmV0",
            "msg_bad",
            body,
            0,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );
    let ts = now();
    let sig = standard_signature(SECRET, "msg_tamper", ts, body);
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg_tamper")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(br#"{"incident": {"status": "resolved"}}"#.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg_x")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", "v1,!!!")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code(resp).await.1["error"]["code"], "missing_signature");

    // Expired or future timestamps (±5 minutes).
    // 310 s: whole seconds are compared, so a second may turn between the two clocks.
    for skew in [-310, 310] {
        let (status, e) = code(
            standard_post(
                http,
                &url,
                SECRET,
                &format!("msg_skew{skew}"),
                body,
                skew,
                None,
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (401, Some("stale_timestamp"))
        );
    }
    let (status, _) =
        code(standard_post(http, &url, SECRET, "msg_edge", body, -290, None).await).await;
    assert_eq!(status, 202);

    // Rotation: several signatures, one valid; and a previous secret still accepted.
    let ts = now();
    let sigs = format!(
        "{} {}",
        standard_signature("whsec_bmV3LWJ1dC11bmtub3du", "msg_rot", ts, body),
        standard_signature(SECRET, "msg_rot", ts, body)
    );
    let resp = http
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg_rot")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sigs)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let (status, _) =
        code(standard_post(http, &url, OLD_SECRET, "msg_old", body, 0, None).await).await;
    assert_eq!(status, 202);

    // GitHub.
    let gh = format!("{}/v1/webhooks/gh", gw.base);
    let gh_body = br#"{"action": "opened", "app": 7}"#;
    let (status, ok) = code(github_post(http, &gh, GH_SECRET, "d-1", gh_body).await).await;
    assert_eq!(status, 202, "{ok}");
    api.wait_status(
        ok["id"].as_str().unwrap(),
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let last = sim.received("acme").last().cloned().unwrap();
    assert_eq!(last["event"], "opened");
    assert_eq!(last["app_id"], 7);
    assert_eq!(
        code(github_post(http, &gh, GH_SECRET, "d-1", gh_body).await)
            .await
            .0,
        409
    );
    // GitHub does not sign the delivery id: a captured request under a new id is still a
    // replay.
    assert_eq!(
        code(github_post(http, &gh, GH_SECRET, "d-new", gh_body).await)
            .await
            .0,
        409
    );
    assert_eq!(
        code(github_post(http, &gh, "wrong", "d-2", gh_body).await)
            .await
            .0,
        401
    );
    let resp = http
        .post(&gh)
        .header("content-type", "application/json")
        .header("x-github-delivery", "d-3")
        .body(gh_body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Unknown webhook.
    let (status, _) = code(
        standard_post(
            http,
            &format!("{}/v1/webhooks/nope", gw.base),
            SECRET,
            "m",
            body,
            0,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn schema_mapping_and_condition() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("statuspage.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let mut text = ops_toml(&redis.url(), "w2", &sim, &["acme"], "");
    text.push_str(&webhooks_toml(&schema));
    let gw = spawn_gateway(config(&text)).await;
    let http = &gw.http;
    let url = format!("{}/v1/webhooks/statuspage", gw.base);

    // Schema violation: 422 naming the pointer; the id is not burnt.
    let bad = br#"{"incident": {"status": 5}}"#;
    let (status, e) = code(standard_post(http, &url, SECRET, "s1", bad, 0, None).await).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["details"][0]["pointer"], "/incident/status");
    let (status, e) = code(standard_post(http, &url, SECRET, "s1b", b"{}", 0, None).await).await;
    assert_eq!(status, 422);
    assert_eq!(e["error"]["details"][0]["pointer"], "/incident");

    // The mapping needs /assignee/zendesk_id.
    let (status, e) = code(
        standard_post(
            http,
            &url,
            SECRET,
            "s2",
            br#"{"incident": {"status": "resolved"}}"#,
            0,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "unmappable_payload");
    assert_eq!(e["error"]["details"][0]["pointer"], "/assignee/zendesk_id");

    // Condition not met: acknowledged, nothing stored.
    let (status, r) = code(
        standard_post(
            http,
            &url,
            SECRET,
            "s3",
            br#"{"incident": {"status": "identified"}, "assignee": {"zendesk_id": 1}}"#,
            0,
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, r["skipped"].as_bool()), (200, Some(true)));

    // Not JSON, bad JSON (signed, so they reach those checks).
    let ts = now();
    let resp = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("webhook-id", "s4")
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            standard_signature(SECRET, "s4", ts, b"hi"),
        )
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let (status, _) = code(standard_post(http, &url, SECRET, "s5", b"{nope", 0, None).await).await;
    assert_eq!(status, 400);

    // Mapped body too large for Notify: 413 on the upstream bytes.
    let big = format!(
        r#"{{"incident": {{"status": "resolved", "x": "{}"}}, "assignee": {{"zendesk_id": 2}}}}"#,
        "a".repeat(1_100_000)
    );
    let (status, e) =
        code(standard_post(http, &url, SECRET, "s6", big.as_bytes(), 0, None).await).await;
    assert_eq!(status, 413, "{e}");

    // A valid one after all that, reusing the id of the refused schema violation.
    let (status, ok) = code(
        standard_post(
            http,
            &url,
            SECRET,
            "s1",
            br#"{"incident": {"status": "resolved"}, "assignee": {"zendesk_id": 9}}"#,
            0,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{ok}");
    Api::from(&gw)
        .wait_status(
            ok["id"].as_str().unwrap(),
            "delivered",
            Duration::from_secs(10),
        )
        .await;
    let got = sim.received("acme");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["agent_id"], 9);
    assert_eq!(got[0]["body"], "{\"status\":\"resolved\"}");
    gw.shutdown().await;
}

#[test]
fn webhook_config_errors_name_the_key() {
    let base = "[[webhooks]]\nname = \"h\"\naccount = \"acme\"\n";
    let cases = [
        (
            "signature = \"github\"\napp_id = 1\nevent = \"e\"\n",
            "webhooks[0].secret",
        ),
        (
            "signature = \"standard-webhooks\"\nsecret = \"whsec_!!\"\napp_id = 1\nevent = \"e\"\n",
            "webhooks[0].secret",
        ),
        (
            "signature = \"none\"\nevent = \"e\"\n",
            "webhooks[0].app_id",
        ),
        (
            "signature = \"none\"\napp_id = 1\nevent = \"e\"\nevent_from = \"/x\"\n",
            "webhooks[0].event",
        ),
        (
            "signature = \"none\"\napp_id = 1\nevent = \"e\"\nagent_id_from = \"x\"\n",
            "webhooks[0].agent_id_from",
        ),
        (
            "signature = \"none\"\napp_id = 1\nevent = \"e\"\nschema = \"/no/such/file.json\"\n",
            "webhooks[0].schema",
        ),
        (
            "signature = \"none\"\napp_id = 1\nevent = \"e\"\ncondition = { pointer = \"/a\" }\n",
            "webhooks[0].condition",
        ),
        (
            "signature = \"sha1\"\napp_id = 1\nevent = \"e\"\n",
            "webhooks[0].signature",
        ),
    ];
    let accounts = "[[accounts]]\nid = \"acme\"\nsubdomain = \"acme\"\noauth_token = \"t\"\n";
    for (extra, key) in cases {
        let text = format!("{accounts}{base}{extra}");
        let err = zenrelay::config::Config::from_toml_with_env(&text, "t.toml", &[])
            .expect_err(extra)
            .to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

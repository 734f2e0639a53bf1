//! The core relay against a real Redis and the simulator: ingress, delivery, outcomes.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error without JSON body: {ct}"
    );
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn exact_payload_and_each_kind_of_credentials_reach_upstream() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let mut text = gateway_toml(&redis.url(), "t", &sim, &["acme"], "");
    text.push_str(&format!(
        "\n[[accounts]]\nid = \"acme-pw\"\nsubdomain = \"acme\"\nbase_url = \"{0}\"\nemail = \"admin@acme.example\"\npassword = \"pw-acme\"\n\
         \n[[accounts]]\nid = \"acme-oauth\"\nsubdomain = \"acme\"\nbase_url = \"{0}\"\noauth_token = \"oauth-acme\"\n",
        sim.base
    ));
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);

    let id = api
        .accept(
            "acme",
            &json!({"app_id": 375, "event": "updateUsersPhoneNumber", "body": "+61455534512", "agent_id": 534}),
        )
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    let id = api
        .accept(
            "acme-pw",
            &json!({"event": "objectBody", "app_id": 0, "body": {"b": [1, 2], "a": "x"}}),
        )
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    let id = api
        .accept("acme-oauth", &json!({"app_id": 7, "event": "plain"}))
        .await;
    let record = api
        .wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(record["account"], "acme-oauth");
    assert_eq!(record["deliveries"][0]["attempts"], 1);
    assert_eq!(record["deliveries"][0]["last_status"], 200);
    assert!(record["deliveries"][0]["delivered_at"].is_string());

    let got = sim.sim.notifications("acme");
    assert_eq!(got.len(), 3);
    assert_eq!(
        &got[0].raw_body[..],
        br#"{"app_id":375,"event":"updateUsersPhoneNumber","body":"+61455534512","agent_id":534}"#
    );
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(basic("admin@acme.example/token:tok-acme").as_str())
    );
    assert_eq!(
        &got[1].raw_body[..],
        br#"{"app_id":0,"event":"objectBody","body":"{\"a\":\"x\",\"b\":[1,2]}"}"#
    );
    assert_eq!(
        got[1].authorization.as_deref(),
        Some(basic("admin@acme.example:pw-acme").as_str())
    );
    assert_eq!(&got[2].raw_body[..], br#"{"app_id":7,"event":"plain"}"#);
    assert_eq!(got[2].authorization.as_deref(), Some("Bearer oauth-acme"));
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    let gw = spawn_gateway(config(&gateway_toml(
        &redis.url(),
        "t",
        &sim,
        &["acme", "beta"],
        "",
    )))
    .await;
    let http = reqwest::Client::new();
    let url = |a: &str| format!("{}/v1/accounts/{a}/notify", gw.base);
    let good = json!({"app_id": 1, "event": "e"});

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (http.post(url("acme")).json(&good), 401, "unauthorized"),
        (
            http.post(url("acme"))
                .bearer_auth("wrong-key-0123456789")
                .json(&good),
            401,
            "unauthorized",
        ),
        (
            http.post(url("acme"))
                .header("authorization", basic(&format!("x:{KEY}")))
                .json(&good),
            401,
            "unauthorized",
        ),
        (
            http.post(url("beta"))
                .bearer_auth(ACME_ONLY_KEY)
                .json(&good),
            403,
            "forbidden",
        ),
        (
            http.post(url("nope")).bearer_auth(KEY).json(&good),
            404,
            "unknown_account",
        ),
        (
            http.post(url("acme"))
                .bearer_auth(KEY)
                .header("content-type", "text/plain")
                .body(good.to_string()),
            415,
            "unsupported_media_type",
        ),
        (
            http.post(url("acme"))
                .bearer_auth(KEY)
                .body(good.to_string()),
            415,
            "unsupported_media_type",
        ),
        (
            http.post(url("acme"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body("{\"app_id\": 1,"),
            400,
            "malformed_json",
        ),
        (
            http.post(url("acme"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe]),
            400,
            "malformed_json",
        ),
        (
            http.post(url("acme"))
                .bearer_auth(KEY)
                .header("idempotency-key", "")
                .json(&good),
            400,
            "bad_idempotency_key",
        ),
        (
            http.post(url("acme"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 4 * 1024 * 1024 + 1]),
            413,
            "body_too_large",
        ),
        (
            http.get(url("acme")).bearer_auth(KEY),
            405,
            "method_not_allowed",
        ),
        (
            http.get(format!("{}/v1/nothing", gw.base)),
            404,
            "not_found",
        ),
        (
            http.get(format!("{}/v1/events/abc", gw.base))
                .bearer_auth(KEY),
            404,
            "unknown_event",
        ),
        (
            http.get(format!("{}/v1/events/{}", gw.base, "0".repeat(36)))
                .bearer_auth(KEY),
            404,
            "unknown_event",
        ),
        // The path is checked before the key: an id that does not decode is 400, keyed or not.
        (
            http.get(format!("{}/v1/events/%FF", gw.base)),
            400,
            "bad_path",
        ),
        (
            http.get(format!("{}/v1/events/%FF", gw.base))
                .bearer_auth(KEY),
            400,
            "bad_path",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = error_of(req.send().await.unwrap()).await;
        assert_eq!(
            (got, body["error"]["code"].as_str().unwrap()),
            (status, code),
            "case {i}: {body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }

    let invalid: Vec<(Value, &[&str])> = vec![
        (json!({"app_id": 1}), &["/event"]),
        (json!({"event": "e"}), &["/app_id"]),
        (json!({"app_id": "375", "event": "e"}), &["/app_id"]),
        (json!({"app_id": -1, "event": "e"}), &["/app_id"]),
        (json!({"app_id": 1.5, "event": "e"}), &["/app_id"]),
        (json!({"app_id": 1, "event": ""}), &["/event"]),
        (json!({"app_id": 1, "event": 5}), &["/event"]),
        (
            json!({"app_id": 1, "event": "e", "agent_id": "x"}),
            &["/agent_id"],
        ),
        (
            json!({"app_id": 1, "event": "e", "agent_id": 1, "agent_ids": [2]}),
            &["/agent_ids"],
        ),
        (
            json!({"app_id": 1, "event": "e", "agent_ids": []}),
            &["/agent_ids"],
        ),
        (
            json!({"app_id": 1, "event": "e", "agent_ids": [1, "two"]}),
            &["/agent_ids/1"],
        ),
        (
            json!({"app_id": 1, "event": "e", "ttl_seconds": 0}),
            &["/ttl_seconds"],
        ),
        (
            json!({"app_id": 1, "event": "e", "priority": "urgent"}),
            &["/priority"],
        ),
        (
            json!({"app_id": 1, "event": "e", "colour": "red"}),
            &["/colour"],
        ),
        (json!([1, 2]), &[""]),
        (
            json!({"app_id": {}, "event": [], "extra": 1}),
            &["/app_id", "/event", "/extra"],
        ),
    ];
    for (body, pointers) in invalid {
        let (status, err) = error_of(
            http.post(url("acme"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{body} → {err}");
        assert_eq!(err["error"]["code"], "invalid_event");
        let named: Vec<&str> = err["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["pointer"].as_str().unwrap())
            .collect();
        for p in pointers {
            assert!(named.contains(p), "{body}: {p} not named in {err}");
        }
    }
    // no key but the layout and partition count (recorded when the gateway started), the
    // worker's sweep markers (each lives 250 ms) and the process registry (heartbeats)
    let keys = redis.command(&["KEYS", "*"]).unwrap_or_default();
    let written: Vec<&str> = keys
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .filter(|k| !k.ends_with(":meta") && !k.ends_with(":sweep") && !k.ends_with(":processes"))
        .collect();
    assert!(
        written.is_empty(),
        "a refused request wrote to Redis: {written:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sim.sim.notify_attempts("acme").is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn the_one_megabyte_cap_is_checked_on_the_upstream_bytes() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = spawn_gateway(config(&gateway_toml(
        &redis.url(),
        "t",
        &sim,
        &["acme"],
        "",
    )))
    .await;
    let api = Api::from(&gw);
    let cap = 1_048_576usize;
    let overhead = r#"{"app_id":1,"event":"e","body":"","agent_id":12345}"#.len();
    let fits =
        json!({"app_id": 1, "event": "e", "body": "x".repeat(cap - overhead), "agent_id": 12345});
    let id = api.accept("acme", &fits).await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    let got = sim.sim.notifications("acme");
    assert_eq!(
        got[0].body_len, cap,
        "the gateway must send exactly the checked bytes"
    );

    let over = json!({"app_id": 1, "event": "e", "body": "x".repeat(cap - overhead + 1), "agent_id": 12345});
    let (status, err) = error_of(api.notify("acme", &over).await).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "notify_too_large");
    assert_eq!(err["error"]["details"][0]["size"], cap + 1);

    // Under 1 MB as sent to the gateway, over 1 MB once the object body is a JSON string.
    let quotes = "\"".repeat(400_000);
    let grows = json!({"app_id": 1, "event": "e", "body": {"q": quotes}});
    let (status, err) = error_of(api.notify("acme", &grows).await).await;
    assert_eq!(status, 413, "{err}");
    assert!(err["error"]["details"][0]["size"].as_u64().unwrap() > cap as u64);

    // Fan-out: the largest agent id decides.
    let overhead_fan = r#"{"app_id":1,"event":"e","body":"","agent_id":9}"#.len();
    let edge = "y".repeat(cap - overhead_fan);
    let (status, _) = error_of(
        api.notify(
            "acme",
            &json!({"app_id": 1, "event": "e", "body": edge, "agent_ids": [9, 10]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 413);
    let id = api
        .accept(
            "acme",
            &json!({"app_id": 1, "event": "e", "body": edge, "agent_ids": [9, 8]}),
        )
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn idempotency_fan_out_priority_and_batch() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = spawn_gateway(config(&gateway_toml(
        &redis.url(),
        "t",
        &sim,
        &["acme"],
        "",
    )))
    .await;
    let api = Api::from(&gw);
    let http = &gw.http;
    let url = format!("{}/v1/accounts/acme/notify", gw.base);

    let send = |body: &'static str, key: &'static str| {
        http.post(&url)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first: Value = send(
        r#"{"app_id": 1, "event": "once", "agent_ids": [1, 2, 3]}"#,
        "k-1",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(first["deliveries"], 3);
    let again = send(r#"{"event":"once","agent_ids":[1,2,3],"app_id":1}"#, "k-1")
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let (status, err) = error_of(
        send(r#"{"app_id": 1, "event": "other"}"#, "k-1")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str().unwrap()),
        (422, "idempotency_key_reused")
    );

    let id = first["id"].as_str().unwrap();
    let record = api
        .wait_status(id, "delivered", Duration::from_secs(10))
        .await;
    let agents: Vec<u64> = record["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["agent_id"].as_u64().unwrap())
        .collect();
    assert_eq!(agents, [1, 2, 3]);
    let once: Vec<_> = sim
        .received("acme")
        .into_iter()
        .filter(|n| n["event"] == "once")
        .collect();
    assert_eq!(once.len(), 3, "an idempotent repeat must not deliver again");

    // Batch: items stored independently, errors name the item.
    let resp = http
        .post(format!("{url}/batch"))
        .bearer_auth(KEY)
        .json(&json!({"events": [
            {"app_id": 1, "event": "b0"},
            {"app_id": "bad", "event": "b1"},
            {"app_id": 1, "event": "b2", "priority": "high", "agent_ids": [5, 6]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert!(results[0]["id"].is_string());
    assert_eq!(results[1]["error"]["code"], "invalid_event");
    assert_eq!(
        results[1]["error"]["details"][0]["pointer"],
        "/events/1/app_id"
    );
    assert_eq!(results[2]["deliveries"], 2);
    for r in [&results[0], &results[2]] {
        api.wait_status(
            r["id"].as_str().unwrap(),
            "delivered",
            Duration::from_secs(10),
        )
        .await;
    }
    let (status, err) = error_of(
        http.post(format!("{url}/batch"))
            .bearer_auth(KEY)
            .json(&json!({"events": vec![json!({"app_id": 1, "event": "x"}); 1001]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(err["error"]["details"][0]["pointer"], "/events");
    gw.shutdown().await;
}

/// Stores `events` of `acme` in one batch with delivery off (so their order is decided by
/// the queue alone), then starts a gateway that delivers them: (the ingress gateway, the
/// delivering one, the events' ids).
async fn backlog_then_deliver(
    redis: &RedisServer,
    sim: &TestSim,
    events: Vec<Value>,
) -> (TestGateway, TestGateway, Vec<String>) {
    let text = gateway_toml(&redis.url(), "t", sim, &["acme"], "");
    let ingress = spawn_gateway(config(
        &text.replace("[delivery]", "[delivery]\nenabled = false"),
    ))
    .await;
    let api = Api::from(&ingress);
    let count = events.len();
    let resp: Value = api
        .http
        .post(format!("{}/v1/accounts/acme/notify/batch", api.base))
        .bearer_auth(KEY)
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = resp["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), count);
    let worker = spawn_gateway(config(&text)).await;
    (ingress, worker, ids)
}

#[tokio::test]
async fn high_priority_goes_first_and_fifo_holds_within_a_priority() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let mut events = Vec::new();
    for i in 0..20 {
        let priority = if i % 5 == 4 { "high" } else { "normal" };
        events.push(
            json!({"app_id": 1, "event": "seq", "body": format!("{i}"), "priority": priority}),
        );
    }
    let (ingress, worker, _) = backlog_then_deliver(&redis, &sim, events).await;
    wait_for("20 deliveries", Duration::from_secs(20), || {
        sim.sim.notifications("acme").len() == 20
    })
    .await;
    let order: Vec<u32> = sim
        .received("acme")
        .iter()
        .map(|n| n["body"].as_str().unwrap().parse().unwrap())
        .collect();
    let high: Vec<u32> = (0..20).filter(|i| i % 5 == 4).collect();
    let normal: Vec<u32> = (0..20).filter(|i| i % 5 != 4).collect();
    assert_eq!(order, [high, normal].concat());
    worker.shutdown().await;
    ingress.shutdown().await;
}

#[tokio::test]
async fn upstream_outcomes_pause_retry_dead_letter_and_expire() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta", "gamma"], 100, 60).await;
    let mut text = gateway_toml(&redis.url(), "t", &sim, &["acme", "beta", "gamma"], "");
    text.push_str(&format!(
        "\n[[accounts]]\nid = \"badcreds\"\nsubdomain = \"acme\"\nbase_url = \"{}\"\nemail = \"admin@acme.example\"\napi_token = \"wrong\"\n",
        sim.base
    ));
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);

    // 429 with Retry-After pauses the whole account; the attempt does not count.
    sim.fault(json!({"account": "acme", "route": "notify", "status": 429, "retry_after": 2, "fail_next": 1})).await;
    let started = Instant::now();
    let first = api
        .accept(
            "acme",
            &json!({"app_id": 1, "event": "after429", "body": "1"}),
        )
        .await;
    wait_for("the 429", Duration::from_secs(5), || {
        sim.sim
            .requests()
            .iter()
            .any(|r| r.account.as_deref() == Some("acme") && r.status == Some(429))
    })
    .await;
    let second = api
        .accept(
            "acme",
            &json!({"app_id": 1, "event": "after429", "body": "2"}),
        )
        .await;
    let record = api
        .wait_status(&first, "delivered", Duration::from_secs(30))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "delivered before Retry-After"
    );
    assert_eq!(
        record["deliveries"][0]["attempts"], 1,
        "a 429 is not a failed attempt"
    );
    api.wait_status(&second, "delivered", Duration::from_secs(30))
        .await;
    let bodies: Vec<Value> = sim
        .received("acme")
        .iter()
        .map(|n| n["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("1"), json!("2")]);

    // 503 twice, then success.
    sim.fault(json!({"account": "beta", "route": "notify", "status": 503, "fail_next": 2}))
        .await;
    let id = api
        .accept("beta", &json!({"app_id": 1, "event": "flaky"}))
        .await;
    let record = api
        .wait_status(&id, "delivered", Duration::from_secs(30))
        .await;
    assert_eq!(record["deliveries"][0]["attempts"], 3);

    // A dropped connection is retried too.
    sim.fault(
        json!({"account": "beta", "route": "notify", "drop_connection": true, "fail_next": 1}),
    )
    .await;
    let id = api
        .accept("beta", &json!({"app_id": 1, "event": "dropped"}))
        .await;
    let record = api
        .wait_status(&id, "delivered", Duration::from_secs(30))
        .await;
    assert_eq!(record["deliveries"][0]["attempts"], 2);

    // 400 is dead at once, with the upstream status and body.
    sim.fault(json!({"account": "gamma", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let id = api
        .accept("gamma", &json!({"app_id": 1, "event": "rejected"}))
        .await;
    let record = api.wait_status(&id, "dead", Duration::from_secs(30)).await;
    assert_eq!(record["deliveries"][0]["attempts"], 1);
    assert_eq!(record["deliveries"][0]["last_status"], 400);
    assert!(record["deliveries"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("400"));

    // Retries are bounded by max_attempts.
    sim.fault(json!({"account": "gamma", "route": "notify", "status": 502, "fail_next": 10}))
        .await;
    let id = api
        .accept("gamma", &json!({"app_id": 1, "event": "hopeless"}))
        .await;
    let record = api.wait_status(&id, "dead", Duration::from_secs(40)).await;
    assert_eq!(record["deliveries"][0]["attempts"], 10);
    assert_eq!(record["deliveries"][0]["last_status"], 502);
    sim.clear_faults().await;

    // 401 marks the account auth_failed and pauses it; its events stay queued.
    let a = api
        .accept("badcreds", &json!({"app_id": 1, "event": "auth"}))
        .await;
    wait_for("the 401", Duration::from_secs(5), || {
        sim.sim.requests().iter().any(|r| r.status == Some(401))
    })
    .await;
    let b = api
        .accept("badcreds", &json!({"app_id": 1, "event": "auth"}))
        .await;
    // Once the 401 is recorded, time for any wrong retry to show.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.event(&a).await["deliveries"][0]["last_status"] != 401 {
        assert!(Instant::now() < deadline, "the 401 was never recorded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let record = api.event(&a).await;
    assert_eq!(record["status"], "queued");
    assert_eq!(record["deliveries"][0]["last_status"], 401);
    assert_eq!(record["deliveries"][0]["attempts"], 0);
    assert_eq!(api.event(&b).await["status"], "queued");
    assert_eq!(
        sim.sim
            .requests()
            .iter()
            .filter(|r| r.status == Some(401))
            .count(),
        1,
        "a paused account must not be tried again"
    );
    let flags = redis.command(&[
        "HGET",
        &format!("t:{{p{}}}:acct:badcreds", partition("badcreds")),
        "auth_failed",
    ]);
    assert!(flags.unwrap().contains("\r\n1\r\n"));

    // Past its time to live an event becomes expired. Each failing attempt takes 300 ms, so
    // the time to live ends long before max_attempts could, whatever the jittered backoffs.
    sim.fault(json!({"account": "gamma", "route": "notify", "status": 503, "latency_ms": 300}))
        .await;
    let id = api
        .accept(
            "gamma",
            &json!({"app_id": 1, "event": "late", "ttl_seconds": 1}),
        )
        .await;
    let record = api
        .wait_status(&id, "expired", Duration::from_secs(30))
        .await;
    let attempts = record["deliveries"][0]["attempts"].as_u64().unwrap();
    assert!((1..=5).contains(&attempts), "{record}");
    gw.shutdown().await;
}

fn partition(account: &str) -> u16 {
    zenrelay::domain::partition_of(account, 4)
}

#[tokio::test]
async fn three_processes_share_one_rolling_window_and_keep_fifo() {
    let redis = RedisServer::start();
    // The simulator enforces the same limit, so one request too many would show as a 429.
    let sim = spawn_sim(&["acme"], 10, 4).await;
    // A 4 s window: the 98% bar leaves over 300 ms for scheduling delays on a busy machine.
    let delivery = "notify_per_minute = 10\nnotify_window_seconds = 4";
    let text = |_: usize| gateway_toml(&redis.url(), "t", &sim, &["acme"], delivery);
    let a = ServeProcess::start(&text(0)).await;
    let b = ServeProcess::start(&text(1)).await;
    let c = ServeProcess::start(&text(2)).await;
    let n = 41;
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"app_id": 1, "event": "seq", "body": format!("{i}")}))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/accounts/acme/notify/batch", a.base))
        .bearer_auth(KEY)
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for("the backlog", Duration::from_secs(30), || {
        sim.sim.notifications("acme").len() >= n
    })
    .await;
    let got = sim.sim.notifications("acme");
    let order: Vec<usize> = got
        .iter()
        .map(|g| g.json["body"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "FIFO");
    let window = Duration::from_secs(4);
    for (i, first) in got.iter().enumerate() {
        let in_window = got[i..]
            .iter()
            .take_while(|g| g.received_at.duration_since(first.received_at) < window)
            .count();
        assert!(
            in_window <= 10,
            "{in_window} requests within one rolling window from #{i}"
        );
    }
    assert!(
        sim.sim
            .notify_attempts("acme")
            .iter()
            .all(|a| a.status == 200),
        "upstream answered 429"
    );
    // 41 events at 10 per 4 s need 4 full windows after the first send.
    let span = got[n - 1].received_at.duration_since(got[0].received_at);
    let utilisation = Duration::from_secs(16).as_secs_f64() / span.as_secs_f64();
    eprintln!(
        "rolling-window utilisation: {:.2}% ({span:?} for 4 windows)",
        utilisation * 100.0
    );
    assert!(
        utilisation >= 0.98,
        "only {:.2}% of the budget used",
        utilisation * 100.0
    );
    // The three processes claim from the same queue; which one sends a given call is
    // whichever claims first, so the limit above held across all of them.
    drop((a, b, c));
}

#[tokio::test]
async fn a_backlogged_account_does_not_delay_another() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["big", "small"], 100_000, 60).await;
    let gw = spawn_gateway(config(&gateway_toml(
        &redis.url(),
        "t",
        &sim,
        &["big", "small"],
        "notify_per_minute = 20\nnotify_window_seconds = 60",
    )))
    .await;
    let api = Api::from(&gw);
    sim.fault(json!({"account": "big", "route": "notify", "latency_ms": 20}))
        .await;
    let events: Vec<Value> = (0..500)
        .map(|i| json!({"app_id": 1, "event": "bulk", "body": format!("{i}")}))
        .collect();
    for chunk in events.chunks(250) {
        let resp = api
            .http
            .post(format!("{}/v1/accounts/big/notify/batch", api.base))
            .bearer_auth(KEY)
            .json(&json!({"events": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    wait_for("big's first window", Duration::from_secs(10), || {
        sim.sim.notifications("big").len() >= 5
    })
    .await;
    let sent = Instant::now();
    let id = api
        .accept("small", &json!({"app_id": 1, "event": "urgent"}))
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(5))
        .await;
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "small waited {waited:?} behind big's backlog"
    );
    assert!(
        sim.sim.notifications("big").len() <= 20,
        "big exceeded its budget"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn kill_9_under_load_loses_nothing_and_sigterm_exits_cleanly() {
    let redis = RedisServer::start();
    let names: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let accounts: Vec<&str> = names.iter().map(String::as_str).collect();
    let sim = spawn_sim(&accounts, 100_000, 60).await;
    let delivery = "notify_per_minute = 100000\nupstream_timeout_ms = 1000\nlease_ms = 1500";
    let text = gateway_toml(&redis.url(), "t", &sim, &accounts, delivery);
    sim.fault(json!({"account": "*", "route": "notify", "latency_ms": 150}))
        .await;
    let mut a = ServeProcess::start(&text).await;
    let api = Api::new(&a.base);
    let mut ids = Vec::new();
    for i in 0..200 {
        let account = accounts[i % accounts.len()];
        ids.push(
            api.accept(
                account,
                &json!({"app_id": 1, "event": "durable", "body": format!("{i}")}),
            )
            .await,
        );
    }
    wait_for("some deliveries", Duration::from_secs(10), || {
        accounts
            .iter()
            .map(|a| sim.sim.notifications(a).len())
            .sum::<usize>()
            >= 20
    })
    .await;
    a.kill9();
    let mut b = ServeProcess::start(&text).await;
    wait_for("more deliveries", Duration::from_secs(10), || {
        accounts
            .iter()
            .map(|a| sim.sim.notifications(a).len())
            .sum::<usize>()
            >= 80
    })
    .await;
    let (status, took) = b.terminate().await;
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?}");
    let _c = ServeProcess::start(&text).await;
    wait_for("every accepted event", Duration::from_secs(60), || {
        let mut seen = std::collections::HashSet::new();
        for a in &accounts {
            for n in sim.sim.notifications(a) {
                seen.insert(n.json["body"].as_str().unwrap_or("").to_string());
            }
        }
        seen.len() == 200
    })
    .await;
    let api = Api::new(&_c.base);
    for id in &ids {
        api.wait_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
}

#[tokio::test]
async fn redis_outage_answers_503_and_delivery_resumes_by_itself() {
    let mut redis = RedisServer::start_persistent();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = gateway_toml(&redis.url(), "t", &sim, &["acme"], "")
        .replace("[redis]", "[redis]\ntimeout_ms = 500");
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);
    let ready = |base: String| async move {
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready(gw.base.clone()).await, 200);

    // Accepted while upstream fails; must survive the outage.
    sim.fault(json!({"account": "acme", "route": "notify", "status": 503}))
        .await;
    let before = api
        .accept("acme", &json!({"app_id": 1, "event": "before"}))
        .await;
    wait_for("a failed attempt", Duration::from_secs(5), || {
        !sim.sim.requests().is_empty()
    })
    .await;

    redis.stop();
    let resp = api
        .notify("acme", &json!({"app_id": 1, "event": "during"}))
        .await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let (_, err) = error_of(resp).await;
    assert_eq!(err["error"]["code"], "storage_unavailable");
    assert_eq!(ready(gw.base.clone()).await, 503);

    redis.restart();
    sim.clear_faults().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(gw.base.clone()).await != 200 {
        assert!(Instant::now() < deadline, "readyz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = api
        .accept("acme", &json!({"app_id": 1, "event": "after"}))
        .await;
    api.wait_status(&before, "delivered", Duration::from_secs(15))
        .await;
    api.wait_status(&after, "delivered", Duration::from_secs(15))
        .await;
    let events: Vec<Value> = sim
        .received("acme")
        .iter()
        .map(|n| n["event"].clone())
        .collect();
    assert!(!events.contains(&json!("during")));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_process_whose_lease_ran_out_does_not_break_the_limit() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100_000, 60).await;
    // 3 calls per 2 s; a lease of 1.5 s
    let delivery = "notify_per_minute = 3\nnotify_window_seconds = 2\nwindow_margin_ms = 0\n\
                    upstream_timeout_ms = 1000\nlease_ms = 1500";
    let text = gateway_toml(&redis.url(), "t", &sim, &["acme"], delivery);
    sim.fault(json!({"account": "*", "route": "notify", "latency_ms": 900}))
        .await;
    let a = ServeProcess::start(&text).await;
    let api = Api::new(&a.base);
    for i in 0..5 {
        api.accept(
            "acme",
            &json!({"app_id": 1, "event": "e", "body": format!("{i}")}),
        )
        .await;
    }
    // `a` sends the first call, which takes 0.9 s to arrive; it stalls meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = a.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    sim.clear_faults().await;
    // `b` takes over once the lease has run out, sending fast.
    let _b = ServeProcess::start(&gateway_toml(&redis.url(), "t", &sim, &["acme"], delivery)).await;
    wait_for("every call delivered", Duration::from_secs(15), || {
        sim.sim.notifications("acme").len() >= 6
    })
    .await;
    // `a` wakes up, gets its answer (a late success) and goes on.
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let arrivals: Vec<Instant> = sim
        .sim
        .notify_attempts("acme")
        .iter()
        .map(|n| n.received_at)
        .collect();
    assert!(arrivals.len() >= 6, "{} calls arrived", arrivals.len());
    let most = most_in_window(&arrivals, Duration::from_secs(2));
    assert!(most <= 3, "{most} calls arrived within one 2 s window");
    drop(a);
}

/// A delivery claimed by a process that then stalled until too little of its lease is left
/// for a send (lease 1.5 s, upstream timeout 1 s: a send must start within 0.5 s of the
/// claim) is released unsent and comes back first in line; one claimed in time is sent.
#[tokio::test]
async fn a_worker_releases_instead_of_sending_when_its_lease_is_running_out() {
    use std::sync::Arc;
    use zenrelay::accounts::AccountDirectory;
    use zenrelay::delivery::{RetryPolicy, Worker, WorkerSettings};
    use zenrelay::domain::{partition_of, EventId};
    use zenrelay::queue::{EnqueueBatch, Outcome, Queue, RateLimit};
    use zenrelay::zendesk::ZendeskClient;

    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let delivery = "lease_ms = 1500\nupstream_timeout_ms = 1000";
    let config = config(&gateway_toml("memory://", "t", &sim, &["acme"], delivery));
    let queue: Arc<dyn Queue> = zenrelay::app::queue_for(&config).unwrap();
    let directory = Arc::new(AccountDirectory::new(&config, queue.clone()).unwrap());
    let send_timeout = Duration::from_millis(1000);
    let worker = Worker::new(
        queue.clone(),
        ZendeskClient::new(send_timeout).unwrap(),
        directory,
        WorkerSettings {
            policy: RetryPolicy {
                max_attempts: 5,
                base: Duration::from_millis(50),
                cap: Duration::from_millis(400),
            },
            concurrency: 1,
            poll_interval: Duration::from_millis(10),
            idle_poll: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(2),
            send_timeout: Some(send_timeout),
        },
        Arc::new(zenrelay::wake::Wake::default()),
    );
    queue
        .enqueue(EnqueueBatch {
            account: "acme".into(),
            limit: RateLimit {
                limit: 1000,
                window_ms: 60_000,
            },
            max_depth: 100,
            idempotency_ttl_secs: 60,
            // two: the released one must come back ahead of the one behind it
            events: ["first", "second"]
                .map(|name| {
                    crate::support::plain_event(
                        EventId::new(partition_of("acme", config.redis.partitions)),
                        name,
                    )
                })
                .into(),
        })
        .await
        .unwrap();
    let partition = partition_of("acme", config.redis.partitions);

    // Asked for 1.6 s ago: the process stalled past the last moment a send may start (the
    // two events are one lease group, whose lease of 1.5 s grows by a sixteenth for the
    // second: a send must start within 0.59 s).
    let asked = tokio::time::Instant::now() - Duration::from_millis(1600);
    let claimed = queue.claim(partition, 1).await.unwrap().items;
    let names: Vec<u32> = claimed.iter().map(|c| c.group_index).collect();
    assert_eq!(names, [0, 1], "the two events are not one lease group");
    let completions = worker.deliver_group_now(&claimed, asked).await;
    // the second is released first, so that the first goes back ahead of it
    let order: Vec<(&str, &Outcome)> = completions
        .iter()
        .map(|c| (c.delivery_id.as_str(), &c.outcome))
        .collect();
    assert_eq!(
        order,
        [
            (claimed[1].delivery_id.as_str(), &Outcome::Released),
            (claimed[0].delivery_id.as_str(), &Outcome::Released)
        ]
    );
    assert!(
        sim.sim.notify_attempts("acme").is_empty(),
        "a call was sent with too little of its lease left"
    );
    queue.complete(&completions).await.unwrap();

    // Claimed again at once, they go out in order, uncounted by the release.
    let asked = tokio::time::Instant::now();
    let again = queue.claim(partition, 1).await.unwrap().items;
    let ids = |items: &[zenrelay::queue::Claimed]| {
        items
            .iter()
            .map(|c| (c.delivery_id.clone(), c.attempts))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&again),
        ids(&claimed),
        "the released deliveries are not first in line, in order"
    );
    let completions = worker.deliver_group_now(&again, asked).await;
    for c in &completions {
        assert_eq!(c.outcome, Outcome::Delivered { status: 200 });
    }
    assert_eq!(sim.sim.notify_attempts("acme").len(), 2);
}

/// A worker that polls an idle queue only every minute still delivers at once what
/// another process stores: the store announces it (Redis pub/sub), and the worker wakes.
#[tokio::test]
async fn work_stored_by_another_process_wakes_an_idle_worker() {
    let mut redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = gateway_toml(
        &redis.url(),
        "wake",
        &sim,
        &["acme"],
        "idle_poll_ms = 60000",
    );
    let text = with_admin(text);
    let worker = spawn_gateway(config(&text)).await;
    let ingress = spawn_gateway(config(
        &text.replace("[delivery]", "[delivery]\nenabled = false"),
    ))
    .await;
    let api = Api::from(&ingress);
    // The worker has found the queue empty and sleeps; its subscription is up once Redis
    // counts a subscriber on the channel.
    wait_for("the worker's subscription", Duration::from_secs(10), || {
        redis.command(&["PUBSUB", "NUMSUB", "wake:wake"]).as_deref()
            == Some("*2\r\n$9\r\nwake:wake\r\n:1\r\n")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let sent = Instant::now();
        api.accept(
            "acme",
            &json!({"app_id": 1, "event": "e", "body": format!("{i}")}),
        )
        .await;
        wait_for("the delivery", Duration::from_secs(5), || {
            sim.sim.notifications("acme").len() == i + 1
        })
        .await;
        // Far within the minute the worker would otherwise sleep.
        assert!(sent.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // An account resumed through the other process is delivered at once too.
    let admin = |action: &str| {
        api.http
            .post(format!("{}/v1/accounts/acme/{action}", api.base))
            .bearer_auth(ADMIN_KEY)
            .send()
    };
    assert!(admin("pause").await.unwrap().status().is_success());
    api.accept("acme", &json!({"app_id": 1, "event": "e", "body": "3"}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.sim.notifications("acme").len(), 3, "paused");
    assert!(admin("resume").await.unwrap().status().is_success());
    wait_for("the resumed delivery", Duration::from_secs(5), || {
        sim.sim.notifications("acme").len() == 4
    })
    .await;
    // Redis restarts: the worker subscribes again by itself.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    wait_for(
        "the worker's new subscription",
        Duration::from_secs(10),
        || {
            redis.command(&["PUBSUB", "NUMSUB", "wake:wake"]).as_deref()
                == Some("*2\r\n$9\r\nwake:wake\r\n:1\r\n")
        },
    )
    .await;
    ingress.shutdown().await;
    worker.shutdown().await;
}

/// A lease group stopped by a 429 at its second call: the sender sends nothing more during
/// the pause, the calls it did not send go back in order, and every event reaches
/// upstream once, in order, with the 429s not counted as attempts.
#[tokio::test]
async fn a_lease_group_stops_at_a_429_and_its_rest_follows_in_order() {
    let redis = RedisServer::start();
    // Upstream takes one call per 2 s window; the gateway's own limit is 100 a minute, so
    // the three events are claimed as one group and the second is refused.
    let sim = spawn_sim(&["acme"], 1, 2).await;
    let events: Vec<Value> = (1..=3)
        .map(|i| json!({"app_id": 1, "event": "seq", "body": format!("{i}")}))
        .collect();
    let (ingress, worker, _) = backlog_then_deliver(&redis, &sim, events).await;
    wait_for("3 deliveries", Duration::from_secs(20), || {
        sim.sim.notifications("acme").len() == 3
    })
    .await;
    // (the simulator keeps no body of a call it refused)
    let attempts: Vec<(String, u16)> = sim
        .sim
        .notify_attempts("acme")
        .iter()
        .map(|a| (a.json["body"].as_str().unwrap_or("").to_string(), a.status))
        .collect();
    let expected: Vec<(String, u16)> = [("1", 200), ("", 429), ("2", 200), ("", 429), ("3", 200)]
        .iter()
        .map(|(b, s)| (b.to_string(), *s))
        .collect();
    assert_eq!(attempts, expected, "nothing sent during a pause, FIFO kept");
    worker.shutdown().await;
    ingress.shutdown().await;
}

/// A lease group's answered call is recorded about a second after its answer even while
/// the next call of the group is still on its way, not only once the group ends.
#[tokio::test]
async fn a_lease_group_records_an_answer_while_a_slow_call_goes_on() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    // every call of acme takes 3 s to answer
    sim.fault(json!({"account": "acme", "route": "notify", "latency_ms": 3000}))
        .await;
    let events: Vec<Value> = (1..=2)
        .map(|i| json!({"app_id": 1, "event": "slow", "body": format!("{i}")}))
        .collect();
    let (ingress, worker, ids) = backlog_then_deliver(&redis, &sim, events).await;
    let api = Api::from(&ingress);
    api.wait_status(&ids[0], "delivered", Duration::from_secs(10))
        .await;
    // recorded while the second call is still on its way (it answers 3 s after the first)
    let answered: Vec<Value> = sim
        .received("acme")
        .iter()
        .map(|n| n["body"].clone())
        .collect();
    assert_eq!(answered, [json!("1")], "recorded only once the group ended");
    api.wait_status(&ids[1], "delivered", Duration::from_secs(10))
        .await;
    worker.shutdown().await;
    ingress.shutdown().await;
}

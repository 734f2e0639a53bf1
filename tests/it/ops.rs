//! Operations against a real Redis and the simulator: metrics, admin API, dead-letter
//! replay, pause/resume, runtime accounts across processes, throttling, OpenAPI, logs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// 32 bytes, base64: the runtime accounts' encryption key in tests.
pub const SEAL_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Config text of `gateway_toml` plus an admin client and runtime accounts.
pub fn ops_toml(
    redis: &str,
    prefix: &str,
    sim: &TestSim,
    accounts: &[&str],
    delivery: &str,
) -> String {
    with_admin(gateway_toml(redis, prefix, sim, accounts, delivery))
        + &format!("\n[runtime_accounts]\nencryption_key = \"{SEAL_KEY}\"\ncache_ms = 200\n")
}

async fn metrics_text(base: &str) -> String {
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    resp.text().await.unwrap()
}

/// The value of the series `series` (name plus labels, exactly as rendered).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn metrics_move_as_events_flow() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    let text = ops_toml(&redis.url(), "m", &sim, &["acme", "beta"], "");
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);

    let before = metrics_text(&gw.base).await;
    for name in [
        "zenrelay_queue_depth",
        "zenrelay_dead_letters",
        "zenrelay_oldest_event_age_seconds",
        "zenrelay_events_accepted_total",
        "zenrelay_upstream_429_total",
        "zenrelay_proxy_requests_total",
    ] {
        assert!(metric(&before, name).is_some(), "{name} missing:\n{before}");
    }
    assert_eq!(metric(&before, "zenrelay_events_accepted_total"), Some(0.0));

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            api.accept("acme", &json!({"app_id": 1, "event": "m", "body": i}))
                .await,
        );
    }
    for id in &ids {
        api.wait_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
    let after = metrics_text(&gw.base).await;
    assert_eq!(
        metric(&after, "zenrelay_events_accepted_total"),
        Some(3.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "zenrelay_events_accepted_total{account=\"acme\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&after, "zenrelay_notify_requests_total{status=\"200\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&after, "zenrelay_delivery_latency_seconds_count"),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &after,
            "zenrelay_delivery_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(3.0)
    );
    assert!(after.contains("zenrelay_delivery_latency_seconds_bucket{le=\"0.1\"}"));
    assert_eq!(metric(&after, "zenrelay_queue_depth"), Some(0.0));

    // Held work shows in depth and age; a 429 and a dead letter show in their counters.
    let (status, _) = call(
        &gw.http,
        reqwest::Method::POST,
        &format!("{}/v1/accounts/beta/pause", gw.base),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    api.accept("beta", &json!({"app_id": 1, "event": "held"}))
        .await;
    api.accept("beta", &json!({"app_id": 1, "event": "held"}))
        .await;
    sim.fault(json!({"account": "acme", "route": "notify", "status": 429, "retry_after": 1, "fail_next": 1}))
        .await;
    let id = api
        .accept("acme", &json!({"app_id": 1, "event": "after429"}))
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    sim.fault(json!({"account": "acme", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let id = api
        .accept("acme", &json!({"app_id": 1, "event": "dies"}))
        .await;
    api.wait_status(&id, "dead", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = metrics_text(&gw.base).await;
    assert_eq!(metric(&text, "zenrelay_queue_depth"), Some(2.0), "{text}");
    assert_eq!(
        metric(&text, "zenrelay_queue_depth{account=\"beta\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "zenrelay_queue_depth{account=\"acme\"}"),
        Some(0.0)
    );
    assert!(metric(&text, "zenrelay_oldest_event_age_seconds{account=\"beta\"}").unwrap() >= 1.0);
    assert_eq!(
        metric(&text, "zenrelay_dead_letters{account=\"acme\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "zenrelay_upstream_429_total"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "zenrelay_notify_requests_total{account=\"acme\",status=\"400\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "zenrelay_account_paused{account=\"beta\",reason=\"operator\"}"
        ),
        Some(1.0)
    );
    gw.shutdown().await;

    // Over the bound: aggregates only.
    let text = format!(
        "{}\n[metrics]\nper_account_max = 1\n",
        ops_toml(&redis.url(), "m", &sim, &["acme", "beta"], "")
    );
    let gw = spawn_gateway(config(&text)).await;
    let text = metrics_text(&gw.base).await;
    assert!(!text.contains("account=\""), "{text}");
    assert_eq!(metric(&text, "zenrelay_queue_depth"), Some(2.0));
    assert_eq!(metric(&text, "zenrelay_dead_letters"), Some(1.0));
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_need_an_admin_key() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = ops_toml(&redis.url(), "a", &sim, &["acme"], "");
    let gw = spawn_gateway(config(&text)).await;
    let b = &gw.base;
    use reqwest::Method as M;
    let spec = json!({"subdomain": "acme", "base_url": sim.base, "email": "admin@acme.example", "api_token": "tok-acme"});
    let endpoints: Vec<(M, String, Option<Value>, u16)> = vec![
        (M::GET, format!("{b}/v1/queues"), None, 200),
        (M::GET, format!("{b}/v1/history"), None, 200),
        (
            M::GET,
            format!("{b}/v1/accounts/acme/dead-letters"),
            None,
            200,
        ),
        (
            M::POST,
            format!("{b}/v1/accounts/acme/dead-letters/replay"),
            None,
            200,
        ),
        (
            M::DELETE,
            format!("{b}/v1/accounts/acme/dead-letters"),
            None,
            200,
        ),
        (M::POST, format!("{b}/v1/accounts/acme/pause"), None, 200),
        (M::POST, format!("{b}/v1/accounts/acme/resume"), None, 200),
        (M::PUT, format!("{b}/v1/accounts/rt1"), Some(spec), 201),
        (M::GET, format!("{b}/v1/accounts/rt1"), None, 200),
        (M::DELETE, format!("{b}/v1/accounts/rt1"), None, 204),
    ];
    for (method, url, body, ok) in endpoints {
        let (status, err) = call(&gw.http, method.clone(), &url, None, body.as_ref()).await;
        assert_eq!(status, 401, "{method} {url} without a key: {err}");
        assert_eq!(err["error"]["code"], "unauthorized");
        let (status, _) = call(
            &gw.http,
            method.clone(),
            &url,
            Some("not-a-key-at-all-xx"),
            body.as_ref(),
        )
        .await;
        assert_eq!(status, 401, "{method} {url} with a bad key");
        let (status, err) = call(&gw.http, method.clone(), &url, Some(KEY), body.as_ref()).await;
        assert_eq!(status, 403, "{method} {url} with a non-admin key: {err}");
        assert_eq!(err["error"]["code"], "forbidden");
        let (status, answer) = call(
            &gw.http,
            method.clone(),
            &url,
            Some(ADMIN_KEY),
            body.as_ref(),
        )
        .await;
        assert_eq!(status, ok, "{method} {url} with the admin key: {answer}");
    }

    // Shapes and errors.
    let (_, queues) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/queues"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let acme = &queues["accounts"][0];
    assert_eq!(acme["account"], "acme");
    for field in [
        "depth",
        "in_flight",
        "scheduled_retries",
        "dead",
        "sent_in_window",
        "paused",
        "auth_failed",
        "oldest_age_seconds",
        "next_send_at",
    ] {
        assert!(acme.get(field).is_some(), "{field} missing in {acme}");
    }
    let (status, _) = call(
        &gw.http,
        M::POST,
        &format!("{b}/v1/accounts/nope/pause"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme/dead-letters?limit=0"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme/dead-letters?offset=x"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, e) = call(
        &gw.http,
        M::PUT,
        &format!("{b}/v1/accounts/acme"),
        Some(ADMIN_KEY),
        Some(&json!({"subdomain": "acme", "oauth_token": "x"})),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("configured_account"))
    );
    let (status, e) = call(
        &gw.http,
        M::PUT,
        &format!("{b}/v1/accounts/rt2"),
        Some(ADMIN_KEY),
        Some(&json!({"subdomain": "x"})),
    )
    .await;
    assert_eq!(status, 422, "{e}");
    let (status, e) = call(
        &gw.http,
        M::PUT,
        &format!("{b}/v1/accounts/rt2"),
        Some(ADMIN_KEY),
        Some(&json!({"subdomain": "x", "oauth_token": "t", "colour": 1})),
    )
    .await;
    assert_eq!(status, 422, "{e}");
    let (status, _) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/rt1"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 404, "deleted");
    let (status, _) = call(
        &gw.http,
        M::DELETE,
        &format!("{b}/v1/accounts/rt1"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, info) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(info["source"], "config");
    assert!(!info.to_string().contains("tok-acme"));
    gw.shutdown().await;
}

#[tokio::test]
async fn replay_delivers_a_dead_letter_and_purge_forgets_one() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = ops_toml(&redis.url(), "r", &sim, &["acme"], "");
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);
    let b = &gw.base;
    use reqwest::Method as M;

    sim.fault(json!({"account": "acme", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let id = api
        .accept(
            "acme",
            &json!({"app_id": 9, "event": "replay-me", "body": {"n": 1}, "agent_id": 7}),
        )
        .await;
    api.wait_status(&id, "dead", Duration::from_secs(10)).await;
    let (status, page) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme/dead-letters"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 1);
    let letter = &page["items"][0];
    assert_eq!(letter["delivery_id"], format!("{id}:0"));
    assert_eq!(letter["reason"], "rejected");
    assert_eq!(letter["status"], "dead");
    assert_eq!(letter["last_status"], 400);
    assert_eq!(letter["attempts"], 1);
    assert!(letter["last_error"].as_str().unwrap().contains("400"));
    assert_eq!(
        letter["event"],
        json!({"app_id": 9, "event": "replay-me", "body": "{\"n\":1}", "agent_id": 7})
    );

    let (status, r) = call(
        &gw.http,
        M::POST,
        &format!("{b}/v1/accounts/acme/dead-letters/replay"),
        Some(ADMIN_KEY),
        Some(&json!({"ids": [format!("{id}:0"), "nope:0"]})),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["count"], 1);
    assert_eq!(r["not_found"], json!(["nope:0"]));
    let record = api
        .wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(
        record["deliveries"][0]["attempts"], 1,
        "attempts were reset"
    );
    assert_eq!(sim.received("acme").len(), 1);
    let (_, page) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme/dead-letters"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(page["total"], 0);

    // Paging, replay of all, purge.
    sim.fault(json!({"account": "acme", "route": "notify", "status": 422, "fail_next": 3}))
        .await;
    let mut dead = Vec::new();
    for i in 0..3 {
        let id = api
            .accept("acme", &json!({"app_id": 1, "event": "d", "body": i}))
            .await;
        api.wait_status(&id, "dead", Duration::from_secs(10)).await;
        dead.push(id);
    }
    let (_, page) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme/dead-letters?limit=2"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], 2);
    assert_eq!(page["items"][0]["event_id"], dead[0]);
    let (_, page) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/accounts/acme/dead-letters?offset=2&limit=2"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(page["items"][0]["event_id"], dead[2]);
    assert_eq!(page["next_offset"], Value::Null);

    let (status, r) = call(
        &gw.http,
        M::DELETE,
        &format!("{b}/v1/accounts/acme/dead-letters?ids={}:0", dead[0]),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!((status, r["count"].as_u64()), (200, Some(1)));
    assert_eq!(
        api.event(&dead[0]).await["status"],
        "dead",
        "a purged letter's event stays readable"
    );
    let (_, r) = call(
        &gw.http,
        M::POST,
        &format!("{b}/v1/accounts/acme/dead-letters/replay"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(r["count"], 2);
    for id in &dead[1..] {
        api.wait_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
    sim.fault(json!({"account": "acme", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let id = api
        .accept("acme", &json!({"app_id": 1, "event": "purged"}))
        .await;
    api.wait_status(&id, "dead", Duration::from_secs(10)).await;
    let (_, r) = call(
        &gw.http,
        M::DELETE,
        &format!("{b}/v1/accounts/acme/dead-letters"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(r["count"], 1);
    let (_, queues) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/queues"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(queues["accounts"][0]["dead"], 0);
    assert_eq!(queues["accounts"][0]["depth"], 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn pause_holds_and_resume_releases_delivery() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = ops_toml(&redis.url(), "p", &sim, &["acme"], "");
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);
    let b = &gw.base;
    use reqwest::Method as M;

    let (status, r) = call(
        &gw.http,
        M::POST,
        &format!("{b}/v1/accounts/acme/pause"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!((status, r["paused"].as_bool()), (200, Some(true)));
    let first = api
        .accept("acme", &json!({"app_id": 1, "event": "held", "body": "1"}))
        .await;
    let second = api
        .accept("acme", &json!({"app_id": 1, "event": "held", "body": "2"}))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(sim.received("acme").is_empty(), "a paused account sent");
    assert_eq!(api.event(&first).await["status"], "queued");
    let (_, queues) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/queues"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let acme = &queues["accounts"][0];
    assert_eq!(acme["paused"], true);
    assert_eq!(acme["depth"], 2);
    assert_eq!(acme["next_send_at"], Value::Null);
    assert!(acme["oldest_age_seconds"].as_f64().unwrap() >= 0.5);

    let (status, _) = call(
        &gw.http,
        M::POST,
        &format!("{b}/v1/accounts/acme/resume"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    api.wait_status(&first, "delivered", Duration::from_secs(10))
        .await;
    api.wait_status(&second, "delivered", Duration::from_secs(10))
        .await;
    let bodies: Vec<Value> = sim
        .received("acme")
        .iter()
        .map(|n| n["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("1"), json!("2")]);

    // Resume also clears auth_failed.
    sim.fault(json!({"account": "acme", "route": "notify", "status": 401, "fail_next": 1}))
        .await;
    let id = api
        .accept("acme", &json!({"app_id": 1, "event": "auth"}))
        .await;
    // The 401 is recorded once the event carries it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.event(&id).await["deliveries"][0]["last_status"] != 401 {
        assert!(Instant::now() < deadline, "the 401 was never recorded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, queues) = call(
        &gw.http,
        M::GET,
        &format!("{b}/v1/queues"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(queues["accounts"][0]["auth_failed"], true);
    assert_eq!(api.event(&id).await["status"], "queued");
    call(
        &gw.http,
        M::POST,
        &format!("{b}/v1/accounts/acme/resume"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_runtime_account_added_through_the_api_delivers_from_a_second_process() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta"], 100, 60).await;
    // Process A answers the admin API but delivers nothing; process B delivers.
    let text_a = ops_toml(&redis.url(), "rt", &sim, &["acme"], "enabled = false");
    let text_b = ops_toml(&redis.url(), "rt", &sim, &["acme"], "");
    let a = ServeProcess::start(&text_a).await;
    let b = ServeProcess::start(&text_b).await;
    let http = reqwest::Client::new();
    use reqwest::Method as M;

    // Unknown in B before it exists (and B caches the miss briefly).
    let api_b = Api::new(&b.base);
    assert_eq!(
        api_b
            .notify("beta", &json!({"app_id": 1, "event": "e"}))
            .await
            .status(),
        404
    );

    let spec = json!({"subdomain": "beta", "base_url": sim.base, "email": "admin@beta.example", "api_token": "tok-beta"});
    let (status, info) = call(
        &http,
        M::PUT,
        &format!("{}/v1/accounts/beta", a.base),
        Some(ADMIN_KEY),
        Some(&spec),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["source"], "runtime");
    assert_eq!(info["credential"], "api_token");
    assert!(!info.to_string().contains("tok-beta"));
    let (status, info) = call(
        &http,
        M::GET,
        &format!("{}/v1/accounts/beta", b.base),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!info.to_string().contains("tok-beta"), "{info}");
    // Encrypted at rest.
    let raw = redis.command(&["HGETALL", "rt:runtime:accounts"]).unwrap();
    assert!(raw.contains("sealed"), "{raw}");
    assert!(!raw.contains("tok-beta"), "{raw}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = api_b
        .accept("beta", &json!({"app_id": 4, "event": "runtime"}))
        .await;
    api_b
        .wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    let got = sim.sim.notifications("beta");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json["event"], "runtime");

    // Replaced (200) and deleted everywhere.
    let (status, _) = call(
        &http,
        M::PUT,
        &format!("{}/v1/accounts/beta", a.base),
        Some(ADMIN_KEY),
        Some(&spec),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &http,
        M::DELETE,
        &format!("{}/v1/accounts/beta", b.base),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        Api::new(&a.base)
            .notify("beta", &json!({"app_id": 1, "event": "e"}))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn runtime_accounts_are_routed_by_host_in_every_process() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta", "gamma", "delta"], 100, 60).await;
    // each process's config, on a port of its own
    let text = || {
        format!(
            "{}\n[proxy]\ndefault_account = \"delta\"\n",
            ops_toml(
                &redis.url(),
                "rh",
                &sim,
                &["acme", "delta"],
                "enabled = false"
            )
        )
    };
    let a = ServeProcess::start(&text()).await;
    let b = ServeProcess::start(&text()).await;
    let http = reqwest::Client::new();
    use reqwest::Method as M;
    let path = "/api/v2/apps/installations.json";
    // The account a request with this Host reached upstream, or the status it got.
    let routed = |base: &str, host: &str| {
        let req = http
            .get(format!("{base}{path}"))
            .bearer_auth(KEY)
            .header("host", host);
        let sim = &sim;
        async move {
            sim.sim.reset();
            let resp = req.send().await.unwrap();
            let log = sim.sim.requests();
            match resp.status().as_u16() {
                200 => log[0].account.clone().unwrap_or_default(),
                status => {
                    assert!(log.is_empty(), "a refused request reached upstream");
                    status.to_string()
                }
            }
        }
    };
    let put = |id: &str, spec: Value| {
        let url = format!("{}/v1/accounts/{id}", a.base);
        let http = http.clone();
        async move { call(&http, M::PUT, &url, Some(ADMIN_KEY), Some(&spec)).await }
    };
    // Before the account exists its Host names nothing: the default account serves.
    assert_eq!(routed(&b.base, "beta.relay.test").await, "delta");

    let spec = json!({"subdomain": "beta", "base_url": sim.base,
        "hosts": ["zendesk.beta.internal", "shared"],
        "email": "admin@beta.example", "api_token": "tok-beta"});
    assert_eq!(put("beta", spec).await.0, 201);
    let spec = json!({"subdomain": "gamma", "base_url": sim.base, "hosts": ["acme", "shared"],
        "email": "admin@gamma.example", "api_token": "tok-gamma"});
    assert_eq!(put("gamma", spec).await.0, 201);
    // The writing process at once, the other within `cache_ms`.
    assert_eq!(routed(&a.base, "beta.relay.test").await, "beta");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for base in [&a.base, &b.base] {
        assert_eq!(routed(base, "beta.relay.test:8080").await, "beta");
        assert_eq!(routed(base, "zendesk.beta.internal").await, "beta");
        assert_eq!(routed(base, "gamma.relay.test").await, "gamma");
        // A configured account's name stays its own.
        assert_eq!(routed(base, "acme.relay.test").await, "acme");
        // A name two runtime accounts claim routes to neither, nor to the default.
        assert_eq!(routed(base, "shared.relay.test").await, "404");
    }

    // Deleted: its Host names nothing again, in every process.
    let (status, _) = call(
        &http,
        M::DELETE,
        &format!("{}/v1/accounts/beta", a.base),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for base in [&a.base, &b.base] {
        assert_eq!(routed(base, "beta.relay.test").await, "delta");
        assert_eq!(routed(base, "shared.relay.test").await, "gamma");
    }

    // With Redis gone, configured accounts' Host names still route, without waiting; a
    // runtime account's name is still known (from the last names read), so its request is
    // refused as unavailable instead of going to the default account.
    drop(redis);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(routed(&b.base, "acme.relay.test").await, "acme");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(routed(&b.base, "gamma.relay.test").await, "503");
}

#[tokio::test]
async fn clients_are_throttled_with_retry_after() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = format!(
        "{}\n[throttle]\nrequests_per_second = 1\nburst = 3\n",
        ops_toml(&redis.url(), "th", &sim, &["acme"], "enabled = false")
    );
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);
    for _ in 0..3 {
        api.accept("acme", &json!({"app_id": 1, "event": "t"}))
            .await;
    }
    let resp = api
        .notify("acme", &json!({"app_id": 1, "event": "t"}))
        .await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another client has its own budget.
    let (status, _) = call(
        &gw.http,
        reqwest::Method::GET,
        &format!("{}/v1/queues", gw.base),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.accept("acme", &json!({"app_id": 1, "event": "t"}))
        .await;
    gw.shutdown().await;
}

/// Resolves a local `$ref` in the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push(r.to_string());
                    }
                }
                collect_refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_validates_and_matches_the_routes() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let text = ops_toml(&redis.url(), "o", &sim, &["acme"], "enabled = false");
    let gw = spawn_gateway(config(&text)).await;
    let (status, doc) = call(
        &gw.http,
        reqwest::Method::GET,
        &format!("{}/openapi.json", gw.base),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Valid against the OpenAPI 3.1 schema published by the OpenAPI Initiative.
    let meta: Value =
        serde_json::from_str(include_str!("../data/openapi-3.1-schema.json")).unwrap();
    let validator = jsonschema::validator_for(&meta).expect("the OAS 3.1 meta-schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid OpenAPI 3.1 document: {errors:#?}"
    );
    assert_eq!(doc["openapi"], "3.1.0");

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in &refs {
        assert!(resolve(&doc, r).is_some(), "dangling $ref {r}");
    }

    // Every documented operation exists on the router (no 404 route / 405 from the
    // fallbacks), and the spec's operations are exactly the expected set.
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                ops.push(format!("{} {path}", method.to_uppercase()));
                let url = format!(
                    "{}{}",
                    gw.base,
                    path.replace("{account}", "acme")
                        .replace("{id}", "0")
                        .replace("{name}", "none")
                );
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let resp = gw.http.request(m, &url).send().await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                assert_ne!(status, 405, "{method} {path} documented but not routed");
                assert!(
                    !body.contains("\"code\":\"not_found\""),
                    "{method} {path} documented but not routed: {body}"
                );
                let documented = item[method]["responses"].as_object().unwrap();
                assert!(
                    documented.contains_key(&status.to_string()),
                    "{method} {path} answered undocumented {status}: {body}"
                );
            }
        }
    }
    ops.sort();
    let mut expected = vec![
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
        "POST /v1/accounts/{account}/notify",
        "POST /v1/accounts/{account}/notify/batch",
        "GET /v1/events/{id}",
        "POST /v1/webhooks/{name}",
        "GET /v1/queues",
        "GET /v1/history",
        "GET /v1/cluster",
        "GET /",
        "GET /dashboard.js",
        "GET /dashboard.css",
        "GET /v1/accounts/{account}/dead-letters",
        "DELETE /v1/accounts/{account}/dead-letters",
        "POST /v1/accounts/{account}/dead-letters/replay",
        "POST /v1/accounts/{account}/pause",
        "POST /v1/accounts/{account}/resume",
        "PUT /v1/accounts/{account}",
        "GET /v1/accounts/{account}",
        "DELETE /v1/accounts/{account}",
    ];
    expected.sort();
    assert_eq!(ops, expected);
    gw.shutdown().await;
}

#[tokio::test]
async fn logs_carry_request_ids_and_never_secrets() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let webhook_secret = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTAxMjM0NTY3ODk=";
    let mut text = ops_toml(&redis.url(), "l", &sim, &["acme"], "").replace(
        "level = \"warn\"",
        "level = \"zenrelay=debug,tower_http=debug,info\"\nformat = \"json\"",
    );
    text.push_str(&format!(
        "\n[[webhooks]]\nname = \"hook\"\naccount = \"acme\"\nsignature = \"standard-webhooks\"\nsecret = \"{webhook_secret}\"\napp_id = 1\nevent = \"hooked\"\n"
    ));
    let listen = config(&text).server.listen;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("zenrelay.toml");
    std::fs::write(&config_path, &text).unwrap();
    let log_path = dir.path().join("log.jsonl");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Traffic touching every kind of secret.
    let api = Api::new(&base);
    let resp = http
        .post(format!("{base}/v1/accounts/acme/notify"))
        .bearer_auth(KEY)
        .header("x-request-id", "req-notify-1")
        .json(&json!({"app_id": 1, "event": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], "req-notify-1");
    let id: Value = resp.json().await.unwrap();
    api.wait_status(
        id["id"].as_str().unwrap(),
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    http.post(format!("{base}/v1/accounts/acme/notify"))
        .bearer_auth("wrong-key-that-must-not-be-logged")
        .json(&json!({"app_id": 1, "event": "x"}))
        .send()
        .await
        .unwrap();
    let spec = json!({"subdomain": "acme", "base_url": sim.base, "email": "admin@acme.example", "api_token": "runtime-token-must-not-leak"});
    let (status, _) = call(
        &http,
        reqwest::Method::PUT,
        &format!("{base}/v1/accounts/rt"),
        Some(ADMIN_KEY),
        Some(&spec),
    )
    .await;
    assert_eq!(status, 201);
    let resp = crate::webhooks::standard_post(
        &http,
        &format!("{base}/v1/webhooks/hook"),
        webhook_secret,
        "msg-1",
        b"{\"x\":1}",
        0,
        Some("req-hook-1"),
    )
    .await;
    assert_eq!(resp.status(), 202);
    crate::webhooks::standard_post(
        &http,
        &format!("{base}/v1/webhooks/hook"),
        "whsec_d3Jvbmc=",
        "msg-2",
        b"{}",
        0,
        None,
    )
    .await;
    sim.fault(json!({"account": "acme", "route": "notify", "status": 401, "fail_next": 1}))
        .await;
    api.accept("acme", &json!({"app_id": 1, "event": "authfail"}))
        .await;
    wait_for("the 401", Duration::from_secs(10), || {
        sim.sim.requests().iter().any(|r| r.status == Some(401))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = child.id().to_string();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(&pid)
        .stdout(Stdio::null())
        .status();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.lines().count() > 5, "too few log lines:\n{logs}");
    for secret in [
        KEY,
        ADMIN_KEY,
        SEAL_KEY,
        "tok-acme",
        "runtime-token-must-not-leak",
        "wrong-key-that-must-not-be-logged",
        webhook_secret,
        "c2VjcmV0LXdlYmhvb2sta2V5LTAxMjM0NTY3ODk",
        // Basic credentials as sent upstream.
        "YWRtaW5AYWNtZS5leGFtcGxlL3Rva2VuOnRvay1hY21l",
    ] {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the logs: {secret}"
        );
    }
    let mut request_lines = 0;
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let in_request = v["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "request"));
        if in_request {
            request_lines += 1;
            let has_id = v["spans"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["request_id"].as_str().is_some_and(|id| !id.is_empty()));
            assert!(
                has_id,
                "a request's log line without its request id: {line}"
            );
        }
    }
    assert!(request_lines >= 4, "{logs}");
    for id in ["req-notify-1", "req-hook-1"] {
        let n = logs.lines().filter(|l| l.contains(id)).count();
        assert!(
            n >= 2,
            "expected the work of {id} to be logged with it:\n{logs}"
        );
    }
}

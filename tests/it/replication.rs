//! `redis.wait_replicas`: a 202 only once the replicas hold the event, so a failover loses
//! no acknowledged event; `redis.sentinel_*`: the primary found through Redis Sentinel, and
//! followed across a failover (primaries, replicas and a sentinel started by the tests).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// A gateway on `primary` that answers 202 once one replica holds the write; delivery off,
/// so stored events stay where they were put.
async fn gateway(primary: &RedisServer, sim: &TestSim) -> TestGateway {
    let text = gateway_toml(&primary.url(), "w", sim, &["acme"], "enabled = false").replace(
        "[redis]",
        "[redis]\nwait_replicas = 1\nwait_timeout_ms = 1000",
    );
    spawn_gateway(config(&text)).await
}

/// How many event records of prefix `w` (or, with `id`, of that event) `server` holds.
fn events(server: &RedisServer, id: Option<&str>) -> usize {
    let pattern = format!("w:*:ev:{}", id.unwrap_or("*"));
    let reply = server
        .command(&["KEYS", &pattern])
        .expect("Redis answers KEYS");
    reply
        .strip_prefix('*')
        .and_then(|r| r.split("\r\n").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("KEYS answered {reply:?}"))
}

#[tokio::test]
async fn a_202_waits_until_the_replicas_hold_the_event() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&primary, &sim).await;
    let api = Api::from(&gw);
    for i in 0..20 {
        let id = api
            .accept(
                "acme",
                &json!({"app_id": 1, "event": "e", "body": {"i": i}}),
            )
            .await;
        // Read from the replica as soon as the 202 arrives: it is there already.
        assert_eq!(
            events(&replica, Some(&id)),
            1,
            "event {id} not on the replica"
        );
    }

    // A replica that does not confirm: 503, never a 202.
    replica.freeze();
    let url = format!("{}/v1/accounts/acme/notify", gw.base);
    let send = || {
        gw.http
            .post(&url)
            .bearer_auth(KEY)
            .header("idempotency-key", "k-1")
            .json(&json!({"app_id": 1, "event": "unconfirmed"}))
            .send()
    };
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "not_replicated", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("redis.wait_replicas"), "{message}");
    // The primary holds it; the replica, once back, confirms it and the retry with the same
    // key is answered with the stored event, once.
    assert_eq!(events(&primary, None), 21);
    replica.thaw();
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().expect("an id");
    assert_eq!(events(&replica, Some(id)), 1);
    assert_eq!(events(&replica, None), 21);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failover_keeps_every_acknowledged_event() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let sim = spawn_sim(&["acme"], 100, 60).await;
    let gw = gateway(&primary, &sim).await;
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for client in 0..8 {
        let (base, accepted, stop) = (gw.base.clone(), accepted.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let resp = http
                    .post(format!("{base}/v1/accounts/acme/notify"))
                    .bearer_auth(KEY)
                    .json(&json!({"app_id": 1, "event": "e", "body": {"c": client, "i": i}}))
                    .send()
                    .await;
                match resp {
                    Ok(resp) if resp.status() == 202 => {
                        let body: Value = resp.json().await.unwrap_or_default();
                        if let Some(id) = body["id"].as_str() {
                            accepted.lock().unwrap().push(id.to_string());
                        }
                    }
                    // Not confirmed, or the primary is gone: not acknowledged.
                    Ok(resp) if resp.status() == 503 => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(resp) => panic!("unexpected answer {}", resp.status()),
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }
    wait_for("events acknowledged", Duration::from_secs(20), || {
        accepted.lock().unwrap().len() >= 200
    })
    .await;
    // The replica falls behind (frozen) while the clients go on: what the primary stores
    // now never reaches it, so none of it may be acknowledged. Then the primary dies
    // (SIGKILL) and the replica is promoted.
    replica.freeze();
    let before = accepted.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    primary.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .expect("a client stopped")
            .expect("a client ran to its end");
    }
    replica.thaw();
    replica.command(&["REPLICAOF", "NO", "ONE"]);
    let accepted = accepted.lock().unwrap().clone();
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| events(&replica, Some(id)) != 1)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost ({before} acknowledged before the replica froze): {lost:?}",
        lost.len(),
        accepted.len()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn sentinel_finds_the_primary_and_follows_a_failover() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let sentinels = Sentinel::start_group("zr", &primary, 1, 3);
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    // `url` names no server: the sentinel says where the primary is.
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("\"{}\"", s.url()))
        .collect();
    let redis = format!(
        "[redis]\nsentinel_master = \"zr\"\nsentinel_nodes = [{}]\n\
         wait_replicas = 1\nwait_timeout_ms = 600\ntimeout_ms = 1000",
        nodes.join(", ")
    );
    let text =
        gateway_toml("redis://127.0.0.1:1/0", "s", &sim, &["acme"], "").replace("[redis]", &redis);
    let gw = spawn_gateway(config(&text)).await;
    let api = Api::from(&gw);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            api.accept(
                "acme",
                &json!({"app_id": 1, "event": "before", "body": {"i": i}}),
            )
            .await,
        );
    }
    for id in &ids {
        api.wait_status(id, "delivered", Duration::from_secs(10))
            .await;
    }

    // Upstream answers 429 once: the account pauses for 4 s, holding what is stored next.
    sim.fault(json!({"account": "acme", "route": "notify", "status": 429, "retry_after": 4, "fail_next": 1}))
        .await;
    ids.push(
        api.accept(
            "acme",
            &json!({"app_id": 1, "event": "held", "body": {"i": 0}}),
        )
        .await,
    );
    wait_for("the 429", Duration::from_secs(10), || {
        sim.sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/apps/notify") && r.status == Some(429))
    })
    .await;
    for i in 1..20 {
        ids.push(
            api.accept(
                "acme",
                &json!({"app_id": 1, "event": "held", "body": {"i": i}}),
            )
            .await,
        );
    }

    // The primary dies with the held events on it (and, acknowledged, on its replica).
    // The sentinels promote the replica, the gateway follows, and delivery resumes there
    // once the pause ends: every acknowledged event is delivered.
    primary.stop();
    let killed = Instant::now();
    for id in &ids {
        api.wait_status(id, "delivered", Duration::from_secs(30))
            .await;
    }
    assert!(
        replica
            .command(&["ROLE"])
            .is_some_and(|role| role.contains("master")),
        "the sentinels promoted the replica"
    );
    eprintln!(
        "sentinel failover: every acknowledged event delivered {:?} after the primary died",
        killed.elapsed()
    );
    // The promoted primary has no replica left to confirm a write: no 202 now.
    let resp = gw
        .http
        .post(format!("{}/v1/accounts/acme/notify", gw.base))
        .bearer_auth(KEY)
        .json(&json!({"app_id": 1, "event": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let events: Vec<Value> = sim
        .received("acme")
        .iter()
        .map(|n| n["event"].clone())
        .collect();
    assert_eq!(events.iter().filter(|e| **e == json!("held")).count(), 20);
    gw.shutdown().await;
}

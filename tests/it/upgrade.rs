//! Upgrades: the layout version recorded in Redis, the migration of the previous
//! release's queue (its binary built from this repository's history by
//! `scripts/previous-release.sh`), and the registry of live processes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use zenrelay::app::Gateway;
use zenrelay::queue::layout::{self, LayoutScripts, Scope, LAYOUT_VERSION};

use crate::support::{
    config, gateway_toml, spawn_sim, wait_for, with_admin, Api, RedisServer, ServeProcess,
    ADMIN_KEY, KEY,
};

/// The previous release's `zenrelay`, built (once, cached) from this repository's history.
fn previous_release() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/previous-release.sh");
    let out = Command::new("bash")
        .arg(script)
        .output()
        .expect("run scripts/previous-release.sh");
    assert!(
        out.status.success(),
        "scripts/previous-release.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "no binary at {}", path.display());
    path
}

/// The `seq` of a received Notify body (a JSON object, or the text of one).
fn seq_of(body: &serde_json::Value) -> u64 {
    let parsed = match body {
        serde_json::Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
        other => other.clone(),
    };
    parsed["seq"].as_u64().unwrap_or(u64::MAX)
}

fn bulk(text: &str) -> String {
    format!("${}\r\n{text}\r\n", text.len())
}

/// The wall clock in Unix milliseconds.
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A layout-3 rate log of sends `ago` ms before `now_ms`, newest first.
fn packed_log(now_ms: u128, ago: &[u128]) -> String {
    ago.iter().map(|a| format!("{:013}", now_ms - a)).collect()
}

/// Migrates the store of the gateway configuration `text` (4 partitions, under `prefix`)
/// as a process would that stops after `done` partitions.
async fn migrate_partly(text: &str, prefix: &str, done: u16) {
    let queue = zenrelay::app::redis_queue(&config(text)).unwrap();
    let scope = Scope {
        transport: queue.transport(),
        prefix,
        partitions: 4,
    };
    layout::migrate_until(&scope, &LayoutScripts::new(), Some(done))
        .await
        .expect("part of a migration");
}

/// `GET {base}{path}` with the admin key, as JSON.
async fn admin_get(base: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_newer_layout_makes_the_process_refuse_to_start() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = gateway_toml(&redis.url(), "newer", &sim, &["acme"], "");
    // A new store gets this release's layout.
    Gateway::build(config(&text)).await.expect("starts");
    assert_eq!(
        redis.command(&["HGET", "newer:meta", "layout"]),
        Some(bulk(&LAYOUT_VERSION.to_string()))
    );
    // A later release's layout is refused, before anything is read or written.
    let later = (LAYOUT_VERSION + 1).to_string();
    redis.command(&["HSET", "newer:meta", "layout", &later]);
    let keys_before = redis.dbsize();
    let err = Gateway::build(config(&text))
        .await
        .err()
        .expect("a newer layout is refused")
        .to_string();
    for part in [
        format!("layout {later}"),
        "newer zenrelay".into(),
        "newer:meta".into(),
    ] {
        assert!(err.contains(&part), "{part:?} missing from: {err}");
    }
    assert_eq!(redis.dbsize(), keys_before);
}

/// The previous release accepts a backlog (held accounts, retries under way with their
/// attempts, a dead letter, an idempotency key) and stops; a migration starts and stops half-way (as a
/// process killed during it would); the new release resumes it and delivers every event
/// once, in order, within the limit.
#[tokio::test]
async fn the_previous_release_s_queue_is_delivered_after_an_upgrade() {
    let old_bin = previous_release();
    let redis = RedisServer::start();
    let accounts = ["acme", "beta", "gamma", "delta", "omega"];
    // 5 calls per 2 s window: the backlog takes several windows.
    let sim = spawn_sim(&accounts, 5, 2).await;
    let limit = "notify_per_minute = 5\nnotify_window_seconds = 2";
    // Retries a second or so apart, and enough of them that none dies meanwhile.
    let old_delivery = format!("{limit}\nmax_attempts = 50");
    let old_text = with_admin(gateway_toml(
        &redis.url(),
        "up",
        &sim,
        &accounts,
        &old_delivery,
    ))
    .replace("retry_base_ms = 50", "retry_base_ms = 1500")
    .replace("retry_max_ms = 400", "retry_max_ms = 1500");
    let mut old = ServeProcess::start_binary(&old_bin, &old_text).await;
    let api = Api::new(&old.base);
    let admin = |path: &str, base: &str| {
        reqwest::Client::new()
            .post(format!("{base}/v1/accounts/{path}"))
            .bearer_auth(ADMIN_KEY)
    };
    for held in ["acme", "beta", "gamma"] {
        let resp = admin(&format!("{held}/pause"), &old.base)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "pause {held}: {}",
            resp.status()
        );
    }
    // delta's calls fail while the old release runs: both wait for a retry when it stops.
    sim.fault(json!({"account": "delta", "route": "notify", "status": 500}))
        .await;
    let event = |i: usize| json!({"app_id": 1, "event": "seq", "body": {"seq": i}});
    let mut ids: Vec<(String, String)> = Vec::new();
    for i in 0..8 {
        for account in ["acme", "beta", "gamma"] {
            ids.push((account.into(), api.accept(account, &event(i)).await));
        }
    }
    let delta: Vec<String> = [
        api.accept("delta", &event(0)).await,
        api.accept("delta", &event(1)).await,
    ]
    .into();
    // omega's call is refused for good: a dead letter.
    sim.fault(json!({"account": "omega", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let dead = api.accept("omega", &event(0)).await;
    api.wait_status(&dead, "dead", Duration::from_secs(20))
        .await;
    let keyed = reqwest::Client::new()
        .post(format!("{}/v1/accounts/acme/notify", old.base))
        .bearer_auth(KEY)
        .header("idempotency-key", "order-1")
        .json(&event(8))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 202);
    let keyed_id = keyed.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in &delta {
        let record = api
            .wait_status(id, "retrying", Duration::from_secs(20))
            .await;
        assert!(
            record["deliveries"][0]["attempts"].as_u64() >= Some(1),
            "{record}"
        );
    }
    let (status, _) = old.terminate().await;
    sim.clear_faults().await;
    assert!(
        status.success(),
        "the previous release stopped cleanly: {status}"
    );
    assert_eq!(
        redis.command(&["EXISTS", "up:meta"]).as_deref(),
        Some(":0\r\n")
    );

    // A migration that stops after two of the four partitions.
    let new_text = with_admin(gateway_toml(&redis.url(), "up", &sim, &accounts, limit));
    migrate_partly(&new_text, "up", 2).await;
    assert_eq!(
        redis.command(&["HGET", "up:meta", "migrated"]),
        Some(bulk("2"))
    );
    assert_eq!(
        redis.command(&["HGET", "up:meta", "layout"]).as_deref(),
        Some("$-1\r\n")
    );
    // As the release of layout 2 would have left it, stopped half-way to layout 2 (with
    // no `from`): this release starts it again from layout 1.
    redis.command(&["HSET", "up:meta", "migrating", "2"]);
    redis.command(&["HDEL", "up:meta", "from"]);
    // That release would have left the partitions it did in layout 2, with the rate logs
    // in lists of their own: one, an hour old, in partition 1 (`delta`'s), must be moved.
    let delta_partition = zenrelay::domain::partition_of("delta", 4);
    assert!(delta_partition < 2, "delta is in a partition already done");
    let delta_rl = format!("up:{{p{delta_partition}}}:rl:delta");
    let hour_ago = unix_ms() - 3_600_000;
    redis.command(&["LPUSH", &delta_rl, &hour_ago.to_string()]);

    // The new release resumes it, then delivers.
    let new = ServeProcess::start(&new_text).await;
    let api = Api::new(&new.base);
    wait_for("the migration to finish", Duration::from_secs(20), || {
        redis.command(&["HGET", "up:meta", "layout"]) == Some(bulk(&LAYOUT_VERSION.to_string()))
    })
    .await;
    assert_eq!(
        redis.command(&["HGET", "up:meta", "migrating"]).as_deref(),
        Some("$-1\r\n")
    );
    assert_eq!(
        redis.command(&["EXISTS", &delta_rl]).as_deref(),
        Some(":0\r\n"),
        "the partitions done before were migrated again"
    );
    // The paused accounts are recorded as held (their expired events expire).
    for held in ["acme", "beta", "gamma"] {
        let p = zenrelay::domain::partition_of(held, 4);
        let score = redis.command(&["ZSCORE", &format!("up:{{p{p}}}:held"), held]);
        assert!(
            score.as_deref().is_some_and(|s| s != "$-1\r\n"),
            "{held} not held: {score:?}"
        );
    }
    // The idempotency key is kept: the same request is the same event.
    let again = reqwest::Client::new()
        .post(format!("{}/v1/accounts/acme/notify", new.base))
        .bearer_auth(KEY)
        .header("idempotency-key", "order-1")
        .json(&event(8))
        .send()
        .await
        .unwrap();
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"].as_str(), Some(keyed_id.as_str()), "{again}");
    // The dead letter is kept, and replays.
    let letters: serde_json::Value = admin_get(&new.base, "/v1/accounts/omega/dead-letters").await;
    assert_eq!(letters["total"], 1, "{letters}");
    let replay = admin("omega/dead-letters/replay", &new.base)
        .send()
        .await
        .unwrap();
    assert!(replay.status().is_success(), "replay: {}", replay.status());
    for held in ["acme", "beta", "gamma"] {
        let resp = admin(&format!("{held}/resume"), &new.base)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "resume {held}: {}",
            resp.status()
        );
    }
    let expected = |account: &str| {
        if account == "acme" {
            9
        } else if account == "delta" {
            2
        } else if account == "omega" {
            1
        } else {
            8
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = accounts
            .iter()
            .all(|a| sim.received(a).len() >= expected(a));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all delivered: {:?}",
            accounts.map(|a| (a, sim.received(a).len()))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for account in accounts {
        let seqs: Vec<u64> = sim
            .received(account)
            .iter()
            .map(|n| seq_of(&n["body"]))
            .collect();
        let want: Vec<u64> = (0..expected(account) as u64).collect();
        if account == "delta" {
            // Retries go when they are due (with jitter), not in FIFO order.
            let mut seqs = seqs;
            seqs.sort_unstable();
            assert_eq!(seqs, want, "{account}: every event once");
        } else {
            assert_eq!(seqs, want, "{account}: every event once, in order");
        }
    }
    for (account, id) in ids.iter().take(3) {
        let record = api
            .wait_status(id, "delivered", Duration::from_secs(5))
            .await;
        assert_eq!(record["account"], account.as_str());
    }
    // The retries kept their attempts: the old ones, then the one that delivered.
    for id in &delta {
        let record = api
            .wait_status(id, "delivered", Duration::from_secs(5))
            .await;
        assert!(
            record["deliveries"][0]["attempts"].as_u64() >= Some(2),
            "{record}"
        );
    }
    // Within the limit: the simulator never answered 429.
    let queues: serde_json::Value = admin_get(&new.base, "/v1/queues").await;
    let over: Vec<_> = queues["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter(|a| a["upstream_429"].as_u64() != Some(0))
        .collect();
    assert!(over.is_empty(), "429s: {over:?}");
    // The old counters are gone; the registry lists the new process.
    for account in ["acme", "delta"] {
        let p = zenrelay::domain::partition_of(account, 4);
        let key = format!("up:{{p{p}}}:acct:{account}");
        assert_eq!(
            redis.command(&["HEXISTS", &key, "depth"]).as_deref(),
            Some(":0\r\n")
        );
    }
    let cluster: serde_json::Value = admin_get(&new.base, "/v1/cluster").await;
    assert_eq!(cluster["layout"], LAYOUT_VERSION);
    let processes = cluster["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), 1, "{cluster}");
    assert_eq!(processes[0]["layout"], LAYOUT_VERSION);
    assert_eq!(processes[0]["pid"], new.child.id());
}

/// Processes register with their release and layout; one that must migrate waits while
/// a process of an older layout is alive, answering 503, and migrates once it is gone.
#[tokio::test]
async fn a_migration_waits_for_processes_of_an_older_layout() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = with_admin(gateway_toml(&redis.url(), "roll", &sim, &["acme"], ""));
    // Layout-1 data (an account set in its partition), and a live process of layout 1 in
    // the registry, as a release that registered itself would leave them.
    let p = zenrelay::domain::partition_of("acme", 4);
    redis.command(&["SADD", &format!("roll:{{p{p}}}:accounts"), "acme"]);
    redis.command(&["HSET", &format!("roll:{{p{p}}}:acct:acme"), "depth", "0"]);
    let old = zenrelay::queue::ProcessRecord {
        id: "old-1".into(),
        version: "0.0.9".into(),
        layout: 1,
        host: "h".into(),
        pid: 7,
        started_at: "2026-01-01T00:00:00.000Z".into(),
        delivery: true,
        last_seen: String::new(),
    };
    let now_ms = unix_ms();
    let registry = "roll:{p0}:processes";
    let record = format!("{now_ms} {}", serde_json::to_string(&old).unwrap());
    redis.command(&["HSET", registry, "old-1", &record]);
    let new = ServeProcess::start(&text).await;
    let api = Api::new(&new.base);
    let resp = api
        .notify("acme", &json!({"app_id": 1, "event": "e", "body": {}}))
        .await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    let ready = |base: String| async move {
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready(new.base.clone()).await, 503);
    assert_eq!(
        redis.command(&["HGET", "roll:meta", "layout"]).as_deref(),
        Some("$-1\r\n")
    );
    let cluster: serde_json::Value = admin_get(&new.base, "/v1/cluster").await;
    let layouts: Vec<u64> = cluster["processes"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["layout"].as_u64()).collect())
        .unwrap_or_default();
    assert!(layouts.contains(&1), "{cluster}");
    // The old process stops (its record leaves): the new one migrates and serves.
    redis.command(&["HDEL", registry, "old-1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = api
            .notify("acme", &json!({"app_id": 1, "event": "e", "body": {}}))
            .await;
        if resp.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", resp.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis.command(&["HGET", "roll:meta", "layout"]),
        Some(bulk(&LAYOUT_VERSION.to_string()))
    );
    assert_eq!(ready(new.base.clone()).await, 200);
    let key = format!("roll:{{p{p}}}:acct:acme");
    assert_eq!(
        redis.command(&["HEXISTS", &key, "depth"]).as_deref(),
        Some(":0\r\n")
    );
}

/// A queue of layout 2 (its rate logs in lists of their own) is migrated to this layout
/// with every logged send: an account whose window was full before the upgrade stays
/// full after it, for the rest of that window.
#[tokio::test]
async fn a_layout_two_queue_keeps_its_rate_windows_across_the_upgrade() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta"], 1000, 60).await;
    let limit = "notify_per_minute = 3";
    let text = with_admin(gateway_toml(
        &redis.url(),
        "two",
        &sim,
        &["acme", "beta"],
        limit,
    ));
    // What a layout-2 process leaves: the layout and partition count recorded, and for
    // `acme` a record and a rate list of 3 sends in the last few seconds (newest first).
    let now_ms = unix_ms();
    redis.command(&["HSET", "two:meta", "layout", "2", "partitions", "4"]);
    let p = zenrelay::domain::partition_of("acme", 4);
    let base = format!("two:{{p{p}}}");
    redis.command(&["SADD", &format!("{base}:accounts"), "acme"]);
    redis.command(&["HSET", &format!("{base}:acct:acme"), "sent", "3"]);
    let rl = format!("{base}:rl:acme");
    for ago in [3_000, 2_000, 1_000] {
        redis.command(&["LPUSH", &rl, &(now_ms - ago).to_string()]);
    }
    redis.command(&["PEXPIRE", &rl, "120000"]);

    // A migration stopped after one partition of four: the recorded layout is gone
    // meanwhile (a layout-2 process started now finds a migration to a layout it does not
    // know, and refuses the store), and the next process resumes it.
    migrate_partly(&text, "two", 1).await;
    let meta = |field: &str| redis.command(&["HGET", "two:meta", field]);
    assert_eq!(meta("layout").as_deref(), Some("$-1\r\n"));
    assert_eq!(meta("migrating"), Some(bulk(&LAYOUT_VERSION.to_string())));
    assert_eq!(meta("from"), Some(bulk("2")));
    assert_eq!(meta("migrated"), Some(bulk("1")));

    let new = ServeProcess::start(&text).await;
    wait_for("the migration to finish", Duration::from_secs(20), || {
        redis.command(&["HGET", "two:meta", "layout"]) == Some(bulk(&LAYOUT_VERSION.to_string()))
    })
    .await;
    for field in ["migrating", "migrated", "from"] {
        assert_eq!(
            redis.command(&["HGET", "two:meta", field]).as_deref(),
            Some("$-1\r\n"),
            "{field} left behind"
        );
    }
    assert_eq!(
        redis.command(&["EXISTS", &rl]).as_deref(),
        Some(":0\r\n"),
        "the rate list is moved into the record"
    );
    assert_eq!(
        redis.command(&["HGET", &format!("{base}:acct:acme"), "rl"]),
        Some(bulk(&packed_log(now_ms, &[1_000, 2_000, 3_000])))
    );

    // `acme` has used its 3 sends of the minute: its event waits, `beta`'s goes at once.
    let api = Api::new(&new.base);
    for account in ["acme", "beta"] {
        let resp = api
            .notify(account, &json!({"app_id": 1, "event": "e", "body": {}}))
            .await;
        assert_eq!(resp.status(), 202);
    }
    wait_for("beta's call", Duration::from_secs(10), || {
        sim.received("beta").len() == 1
    })
    .await;
    let queues = admin_get(&new.base, "/v1/queues?q=acme").await;
    let acme = &queues["accounts"][0];
    assert_eq!(acme["account"], "acme", "{queues}");
    assert_eq!(acme["sent_in_window"], 3, "{queues}");
    assert_eq!(acme["depth"], 1, "{queues}");
    assert_eq!(acme["state"], "window_full", "{queues}");
    assert!(sim.received("acme").is_empty());
}

/// The queue of the release before (layout 3) is taken up as it is, and a migration that
/// release left half-way (here from layout 2) is started again from the layout it
/// recorded: a rate list in a partition it had marked done is still moved into its
/// record. The first stats a process reads are the whole store's.
#[tokio::test]
async fn a_layout_three_queue_and_its_half_migration_are_taken_up() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "beta"], 1000, 60).await;
    let limit = "notify_per_minute = 3";
    let now_ms = unix_ms();
    for (prefix, half) in [("three", false), ("half", true)] {
        let text = with_admin(gateway_toml(
            &redis.url(),
            prefix,
            &sim,
            &["acme", "beta"],
            limit,
        ));
        let meta = format!("{prefix}:meta");
        let p = zenrelay::domain::partition_of("acme", 4);
        let base = format!("{prefix}:{{p{p}}}");
        redis.command(&["SADD", &format!("{base}:accounts"), "acme"]);
        redis.command(&["HSET", &format!("{base}:acct:acme"), "sent", "3"]);
        if half {
            // What the layout-3 release leaves when it dies migrating layout 2: every
            // partition marked done, yet acme's rate list (layout 2) still in its list.
            redis.command(&[
                "HSET",
                &meta,
                "migrating",
                "3",
                "from",
                "2",
                "migrated",
                "4",
                "partitions",
                "4",
            ]);
            let rl = format!("{base}:rl:acme");
            for ago in [3_000, 2_000, 1_000] {
                redis.command(&["LPUSH", &rl, &(now_ms - ago).to_string()]);
            }
        } else {
            redis.command(&["HSET", &meta, "layout", "3", "partitions", "4"]);
            let rl = packed_log(now_ms, &[1_000, 2_000, 3_000]);
            redis.command(&["HSET", &format!("{base}:acct:acme"), "rl", &rl]);
        }
        let new = ServeProcess::start(&text).await;
        wait_for("the layout to be recorded", Duration::from_secs(20), || {
            redis.command(&["HGET", &meta, "layout"]) == Some(bulk(&LAYOUT_VERSION.to_string()))
        })
        .await;
        for field in ["migrating", "migrated", "from"] {
            assert_eq!(
                redis.command(&["HGET", &meta, field]).as_deref(),
                Some("$-1\r\n"),
                "{prefix}: {field} left behind"
            );
        }
        assert_eq!(
            redis.command(&["HGET", &format!("{base}:acct:acme"), "rl"]),
            Some(bulk(&packed_log(now_ms, &[1_000, 2_000, 3_000]))),
            "{prefix}"
        );
        let queues = admin_get(&new.base, "/v1/queues?q=acme").await;
        let acme = &queues["accounts"][0];
        assert_eq!(acme["account"], "acme", "{prefix}: {queues}");
        assert_eq!(acme["sent_in_window"], 3, "{prefix}: {queues}");
        // A change is seen by the next read of the same process.
        let resp = Api::new(&new.base)
            .notify("acme", &json!({"app_id": 1, "event": "e", "body": {}}))
            .await;
        assert_eq!(resp.status(), 202);
        let queues = admin_get(&new.base, "/v1/queues?q=acme").await;
        assert_eq!(queues["accounts"][0]["depth"], 1, "{prefix}: {queues}");
        assert_eq!(
            queues["accounts"][0]["state"], "window_full",
            "{prefix}: {queues}"
        );
    }
    assert!(sim.received("acme").is_empty());
}

/// The value of a bulk-string reply as `RedisServer::command` returns it.
fn bulk_value(reply: Option<String>) -> Option<String> {
    let reply = reply?;
    if !reply.starts_with('$') || reply.starts_with("$-1") {
        return None;
    }
    reply.split("\r\n").nth(1).map(str::to_string)
}

/// The first `Some` that `poll` answers, polled every 20 ms for at most `timeout`.
async fn within<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut poll: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = poll().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Puts the event at `ekey`, written by this release in its first form (see `first_form`
/// in `scripts.lua`), as the layouts before 9 stored it: its body, time to live and agent
/// as fields of their own.
fn without_first_form(redis: &RedisServer, ekey: &str) {
    let q = bulk_value(redis.command(&["HGET", ekey, "q"])).expect("a first form");
    let (head, body) = q.split_once('\n').expect("a head");
    let (exp, agent) = head.split_once(' ').expect("a time to live and an agent");
    let mut fields = vec!["HSET", ekey, "body", body];
    if !exp.is_empty() {
        fields.extend(["exp", exp]);
    }
    if !agent.is_empty() {
        fields.extend(["ag0", agent]);
    }
    redis.command(&fields);
    redis.command(&["HDEL", ekey, "q"]);
}

/// What a process leaves when it stops with a call in flight, written by this release in
/// the queue `text` configures: one event of `acme` (`limit` calls a minute), stored and
/// claimed. The queue, the event's id and its claim.
async fn one_call_in_flight(
    text: &str,
    limit: u32,
) -> (
    zenrelay::queue::redis::RedisQueue,
    zenrelay::domain::EventId,
    zenrelay::queue::Claimed,
) {
    use zenrelay::domain::{partition_of, EventId};
    use zenrelay::queue::{EnqueueBatch, Queue, RateLimit};

    let queue = zenrelay::app::redis_queue(&config(text)).unwrap();
    let p = partition_of("acme", 4);
    let id = EventId::new(p);
    let stored = queue
        .enqueue(EnqueueBatch {
            account: "acme".into(),
            limit: RateLimit {
                limit,
                window_ms: 60_000,
            },
            max_depth: 100,
            idempotency_ttl_secs: 60,
            events: vec![crate::support::plain_event(id.clone(), "in flight")],
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let mut claimed = queue.claim(p, 1).await.unwrap().items;
    assert_eq!(claimed.len(), 1);
    (queue, id, claimed.remove(0))
}

/// A call of layout 4 in flight, its process stopped before the upgrade: the migration
/// makes it a lease group of one (the record names the claim's time, `rl_at`, where it
/// named the call, `rl_did`), so its lease still ends as before, the call goes back to
/// its list counted in the window at the lease's end, and the new process delivers it.
#[tokio::test]
async fn a_layout_four_call_in_flight_is_taken_up() {
    use zenrelay::domain::partition_of;

    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let delivery = "notify_per_minute = 3\nlease_ms = 1500\nupstream_timeout_ms = 1000";
    let text = with_admin(gateway_toml(
        &redis.url(),
        "four",
        &sim,
        &["acme"],
        delivery,
    ));
    // What a layout-4 process leaves when it stops with a call in flight: written by this
    // release's scripts, then put in layout 4's terms.
    let (queue, id, claimed) = one_call_in_flight(&text, 3).await;
    let p = partition_of("acme", 4);
    without_first_form(&redis, &format!("four:{{p{p}}}:ev:{id}"));
    let did = claimed.delivery_id.clone();
    let akey = format!("four:{{p{p}}}:acct:acme");
    let claimed_at = bulk_value(redis.command(&["HGET", &akey, "rl_at"])).expect("rl_at");
    redis.command(&["HDEL", &akey, "rl_at"]);
    redis.command(&["HSET", &akey, "rl_did", &did]);
    redis.command(&["HSET", "four:meta", "layout", "4"]);
    drop(queue);

    let new = ServeProcess::start(&text).await;
    wait_for("the migration to finish", Duration::from_secs(20), || {
        redis.command(&["HGET", "four:meta", "layout"]) == Some(bulk(&LAYOUT_VERSION.to_string()))
    })
    .await;
    assert_eq!(bulk_value(redis.command(&["HGET", &akey, "rl_did"])), None);
    assert_eq!(
        bulk_value(redis.command(&["HGET", &akey, "rl_at"])),
        Some(claimed_at.clone())
    );
    wait_for(
        "the call once its lease ended",
        Duration::from_secs(15),
        || sim.received("acme").len() == 1,
    )
    .await;
    // counted at its lease's end (the claim's time is gone from the log), then at its
    // answer
    let lease_end = claimed_at.parse::<u64>().unwrap() + 1500;
    let log = bulk_value(redis.command(&["HGET", &akey, "rl"])).expect("a rate log");
    let times: Vec<&str> = (0..log.len() / 13)
        .map(|i| &log[i * 13..i * 13 + 13])
        .collect();
    assert_eq!(times.len(), 2, "{log}");
    assert_eq!(times[1], lease_end.to_string(), "{log}");
    let queues = admin_get(&new.base, "/v1/queues?q=acme").await;
    let acme = &queues["accounts"][0];
    assert_eq!(acme["sent_in_window"], 2, "{queues}");
    assert_eq!(acme["depth"], 0, "{queues}");
    assert_eq!(acme["delivered"], 1, "{queues}");
}

/// A call a layout-5 process left in flight (its claim wrote `delivering`, the attempt and
/// a claim counter into the event) becomes queued, its attempts as before the claim; the
/// reaper counts the attempt when its lease ends, and the next sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_five_call_in_flight_is_taken_up() {
    use zenrelay::domain::partition_of;
    use zenrelay::queue::Queue;

    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let delivery = "lease_ms = 1500\nupstream_timeout_ms = 1000";
    let text = with_admin(gateway_toml(
        &redis.url(),
        "five",
        &sim,
        &["acme"],
        delivery,
    ));
    // What a layout-5 process leaves when it stops with a call in flight: written by this
    // release's scripts, then put in layout 5's terms.
    let (queue, id, claimed) = one_call_in_flight(&text, 100).await;
    let p = partition_of("acme", 4);
    assert_eq!(claimed.attempts, 1);
    let ekey = format!("five:{{p{p}}}:ev:{id}");
    without_first_form(&redis, &ekey);
    redis.command(&["HSET", &ekey, "s0", "delivering", "at0", "1", "c0", "1"]);
    redis.command(&["HSET", "five:meta", "layout", "5"]);

    let _new = ServeProcess::start(&text).await;
    wait_for("the migration to finish", Duration::from_secs(20), || {
        redis.command(&["HGET", "five:meta", "layout"]) == Some(bulk(&LAYOUT_VERSION.to_string()))
    })
    .await;
    // Queued with its attempts as before its claim (read in one step with its lease,
    // unless the lease already ran out and was reaped), and shown as being delivered
    // while its lease runs.
    let read = "local f = redis.call('HMGET', KEYS[2], 's0', 'at0') \
        return (redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-') .. ' ' .. (f[1] or '-') .. ' ' .. (f[2] or '-')";
    let inflight = format!("five:{{p{p}}}:inflight");
    let did = claimed.delivery_id.clone();
    let migrated = bulk_value(redis.command(&["EVAL", read, "2", &inflight, &ekey, &did]))
        .expect("the call's lease and fields");
    let token = claimed.lease_token.to_string();
    if migrated.starts_with(&format!("{token} ")) {
        assert_eq!(
            migrated,
            format!("{token} queued 0"),
            "queued, attempts as before the claim"
        );
    }
    let record = queue.event(&id).await.unwrap().unwrap();
    if sim.received("acme").is_empty() && record.deliveries[0].status.as_str() != "queued" {
        assert_eq!(record.deliveries[0].status.as_str(), "delivering");
    }
    wait_for(
        "the call once its lease ended",
        Duration::from_secs(15),
        || sim.received("acme").len() == 1,
    )
    .await;
    // (a delivered event of one call is kept as its summary, which the event's view reads)
    let record = within("its success recorded", Duration::from_secs(5), || async {
        let record = queue.event(&id).await.unwrap().unwrap();
        (record.deliveries[0].status.as_str() == "delivered").then_some(record)
    })
    .await;
    // the attempt lost in flight, and the one delivered
    assert_eq!(record.deliveries[0].attempts, 2);
}

/// A Redis of its own, a simulator of account `acme` (kept while the test runs) and the
/// configuration of a gateway on them whose queue has the key prefix `prefix`.
async fn acme_store(prefix: &str) -> (RedisServer, crate::support::TestSim, String) {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = with_admin(gateway_toml(&redis.url(), prefix, &sim, &["acme"], ""));
    (redis, sim, text)
}

/// `n` plain events for account `acme`, stored in partition `p`, with a cap of 10 and a
/// limit of 100 calls a minute.
fn acme_batch(p: u16, n: usize) -> zenrelay::queue::EnqueueBatch {
    zenrelay::queue::EnqueueBatch {
        account: "acme".into(),
        limit: zenrelay::queue::RateLimit {
            limit: 100,
            window_ms: 60_000,
        },
        max_depth: 10,
        idempotency_ttl_secs: 60,
        events: (0..n)
            .map(|i| {
                crate::support::plain_event(zenrelay::domain::EventId::new(p), &format!("e{i}"))
            })
            .collect(),
    }
}

/// A queue of layout 6 is taken up as it is: its events, which recorded when Redis stored
/// them, read with the time their ids carry, as this layout's do; and an account whose
/// record has no bound on its depth (layout 6 kept none) has its depth counted at its next
/// enqueue, so a full account stays full.
#[tokio::test]
async fn a_layout_six_queue_is_taken_up_with_its_depths_counted() {
    use zenrelay::domain::{partition_of, EventId};
    use zenrelay::queue::{rfc3339_ms, EnqueueOutcome, Queue};

    let (redis, _sim, text) = acme_store("six").await;
    let p = partition_of("acme", 4);
    // A full account of layout 6: written by this release, then put in layout 6's terms.
    let queue = zenrelay::app::redis_queue(&config(&text)).unwrap();
    let stored = queue.enqueue(acme_batch(p, 10)).await.unwrap();
    let ids: Vec<EventId> = stored.iter().map(crate::support::stored).collect();
    drop(queue);
    let akey = format!("six:{{p{p}}}:acct:acme");
    assert_eq!(
        bulk_value(redis.command(&["HGET", &akey, "d"])).as_deref(),
        Some("10")
    );
    redis.command(&["HDEL", &akey, "d"]);
    // (layout 6 wrote an event's time of storage, its call count and its call's status)
    let stored_at = ids[0].created_ms() + 3;
    for id in &ids {
        let ekey = format!("six:{{p{p}}}:ev:{id}");
        without_first_form(&redis, &ekey);
        let created = stored_at.to_string();
        redis.command(&["HSET", &ekey, "created", &created, "n", "1", "s0", "queued"]);
    }
    redis.command(&["HSET", "six:meta", "layout", "6"]);

    let queue = zenrelay::app::redis_queue(&config(&text)).unwrap();
    let out = queue.enqueue(acme_batch(p, 1)).await.unwrap();
    assert_eq!(out, [EnqueueOutcome::QueueFull], "the cap of 10 holds");
    assert_eq!(
        redis.command(&["HGET", "six:meta", "layout"]),
        Some(bulk(&LAYOUT_VERSION.to_string()))
    );
    // a refusal writes nothing: the next enqueue counts again
    assert_eq!(bulk_value(redis.command(&["HGET", &akey, "d"])), None);
    let record = queue.event(&ids[0]).await.unwrap().expect("the event");
    assert_eq!(record.created_at, rfc3339_ms(ids[0].created_ms()));
    assert_eq!(record.deliveries.len(), 1);
    // Its calls are delivered in order, as layout 6 stored them.
    let claimed = queue.claim(p, 4).await.unwrap().items;
    assert!(!claimed.is_empty());
    for (c, id) in claimed.iter().zip(&ids) {
        assert_eq!(c.delivery_id, format!("{id}:0"));
        assert_eq!(c.attempts, 1);
    }
}

/// A queue of layout 7 is taken up as it is: its delivered events, hashes, read as they
/// were, and its queued ones, once delivered, are kept as their summaries (strings, which
/// a layout-7 process would fail to read: the migration waits for those to stop).
#[tokio::test]
async fn a_layout_seven_queue_is_taken_up_as_it_is() {
    use zenrelay::domain::{partition_of, EventId};
    use zenrelay::queue::{Completion, Outcome, Queue};

    let (redis, _sim, text) = acme_store("seven").await;
    let p = partition_of("acme", 4);
    let queue = zenrelay::app::redis_queue(&config(&text)).unwrap();
    let stored = queue.enqueue(acme_batch(p, 2)).await.unwrap();
    let ids: Vec<EventId> = stored.iter().map(crate::support::stored).collect();
    // Both claimed in one lease group; the first delivered as layout 7 recorded every
    // success: fields of its hash (as this release records a success whose claim it does
    // not know).
    let mut claimed = queue.claim(p, 1).await.unwrap().items;
    assert_eq!(claimed.len(), 2);
    let second = claimed.remove(1);
    let first = claimed.remove(0);
    let blind = Completion {
        seen: String::new(),
        ..Completion::of(&first, Outcome::Delivered { status: 200 })
    };
    queue.complete(&[blind]).await.unwrap();
    drop(queue);
    let key = |id: &EventId| format!("seven:{{p{p}}}:ev:{id}");
    assert_eq!(
        redis.command(&["TYPE", &key(&ids[0])]).as_deref(),
        Some("+hash\r\n")
    );
    without_first_form(&redis, &key(&ids[1]));
    redis.command(&["HSET", "seven:meta", "layout", "7"]);

    let queue = zenrelay::app::redis_queue(&config(&text)).unwrap();
    let old = queue
        .event(&ids[0])
        .await
        .unwrap()
        .expect("the delivered event");
    assert_eq!(
        redis.command(&["HGET", "seven:meta", "layout"]),
        Some(bulk(&LAYOUT_VERSION.to_string()))
    );
    assert_eq!(old.status, "delivered");
    assert_eq!(
        (old.deliveries[0].attempts, old.deliveries[0].last_status),
        (1, Some(200))
    );
    assert_eq!(second.delivery_id, format!("{}:0", ids[1]));
    queue
        .complete(&[Completion::of(&second, Outcome::Delivered { status: 201 })])
        .await
        .unwrap();
    assert_eq!(
        redis.command(&["TYPE", &key(&ids[1])]).as_deref(),
        Some("+string\r\n")
    );
    let new = queue
        .event(&ids[1])
        .await
        .unwrap()
        .expect("the delivered event");
    assert_eq!(new.status, "delivered");
    assert_eq!(
        (
            new.account.as_str(),
            new.deliveries[0].attempts,
            new.deliveries[0].last_status
        ),
        ("acme", 1, Some(201))
    );
    assert!(new.deliveries[0].delivered_at.is_some());
    // (read without a failed command, which Redis would count in its error stats)
    assert_eq!(redis.info_field("errorstats", "errorstat_WRONGTYPE"), None);
}

/// A queue of layout 8 is taken up as it is: its queued events, each a hash of its fields
/// (its body, time to live and agent among them), are claimed, retried and delivered as
/// they were stored, where this layout stores a new event of one call in its first form
/// (those three in one field; a layout-8 process would take such an event, without a
/// `body` field, for one gone: the migration waits for those to stop).
#[tokio::test]
async fn a_layout_eight_queue_is_taken_up_as_it_is() {
    use zenrelay::domain::{partition_of, EventId, NotifyPayload};
    use zenrelay::queue::{Completion, Outcome, Queue};

    let (redis, _sim, text) = acme_store("eight").await;
    let p = partition_of("acme", 4);
    let queue = zenrelay::app::redis_queue(&config(&text)).unwrap();
    let mut batch = acme_batch(p, 2);
    batch.events[0].agents = vec![Some(534)];
    batch.events[0].ttl_ms = 600_000;
    let stored = queue.enqueue(batch).await.unwrap();
    let ids: Vec<EventId> = stored.iter().map(crate::support::stored).collect();
    drop(queue);
    // Each event as layout 8 stored it: its fields, no `q`.
    let key = |id: &EventId| format!("eight:{{p{p}}}:ev:{id}");
    for id in &ids {
        without_first_form(&redis, &key(id));
    }
    assert_eq!(
        bulk_value(redis.command(&["HGET", &key(&ids[0]), "ag0"])).as_deref(),
        Some("534")
    );
    redis.command(&["HSET", "eight:meta", "layout", "8"]);

    let queue = zenrelay::app::redis_queue(&config(&text)).unwrap();
    let claimed = queue.claim(p, 1).await.unwrap().items;
    assert_eq!(
        redis.command(&["HGET", "eight:meta", "layout"]),
        Some(bulk(&LAYOUT_VERSION.to_string()))
    );
    let bodies = [
        NotifyPayload::new(1, "e0", None).upstream_bytes(Some(534)),
        NotifyPayload::new(1, "e1", None).upstream_bytes(None),
    ];
    assert_eq!(claimed.len(), 2);
    for ((c, id), body) in claimed.iter().zip(&ids).zip(&bodies) {
        assert_eq!(c.delivery_id, format!("{id}:0"));
        assert_eq!((&c.body, c.attempts), (body, 1));
    }
    let failed = Outcome::Retry {
        delay: Duration::ZERO,
        status: Some(503),
        error: "busy".into(),
    };
    queue
        .complete(&[
            Completion::of(&claimed[0], failed),
            Completion::of(&claimed[1], Outcome::Delivered { status: 200 }),
        ])
        .await
        .unwrap();
    let again = within("the retry", Duration::from_secs(2), || async {
        queue.claim(p, 1).await.unwrap().items.into_iter().next()
    })
    .await;
    assert_eq!(again.delivery_id, claimed[0].delivery_id);
    assert_eq!((&again.body, again.attempts), (&bodies[0], 2));
    queue
        .complete(&[Completion::of(&again, Outcome::Delivered { status: 200 })])
        .await
        .unwrap();
    for (id, attempts, agent) in [(&ids[0], 2, Some(534)), (&ids[1], 1, None)] {
        let record = queue.event(id).await.unwrap().expect("the event");
        assert_eq!(record.status, "delivered");
        let call = &record.deliveries[0];
        assert_eq!((call.attempts, call.agent_id), (attempts, agent));
    }
    assert_eq!(redis.info_field("errorstats", "errorstat_WRONGTYPE"), None);
}

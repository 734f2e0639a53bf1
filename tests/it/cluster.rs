//! The gateway on a Redis Cluster of three masters with a replica each (started by the
//! tests on free ports): two processes under one account's limit with keys on every
//! master, a master killed under load with `wait_replicas = 1`, and a partition's slot
//! moved to another master while events flow (also with `wait_replicas = 1`), and the
//! queue's stats with one shard down for good. The queue's own scenarios run on the
//! cluster in `conformance.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zenrelay::domain::partition_of;
use zenrelay::queue::store::key_slot;

use crate::support::*;

/// Partitions of every gateway here.
const PARTITIONS: u16 = 16;

/// Gateway config on the cluster at `urls`; `redis` is added to `[redis]`.
fn cluster_toml(
    urls: &[String],
    prefix: &str,
    sim: &TestSim,
    accounts: &[&str],
    redis: &str,
    delivery: &str,
) -> String {
    let nodes: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    gateway_toml(&urls[0], prefix, sim, accounts, delivery).replace(
        "partitions = 4",
        &format!(
            "partitions = {PARTITIONS}\ncluster_nodes = [{}]\n{redis}",
            nodes.join(", ")
        ),
    )
}

/// The slot of `account`'s partition.
fn slot_of(account: &str) -> u16 {
    let p = partition_of(account, PARTITIONS);
    key_slot(format!("{{p{p}}}").as_bytes())
}

/// The body an event was posted with, from a notification the simulator received (Notify
/// carries it as a JSON string).
fn posted_body(notification: &Value) -> Value {
    notification["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or_else(|| panic!("a notification without a JSON body: {notification}"))
}

/// Most Notify calls of `account` the simulator received within any `window`.
fn most_calls_in_window(sim: &TestSim, account: &str, window: Duration) -> usize {
    let times: Vec<Instant> = sim
        .sim
        .notify_attempts(account)
        .iter()
        .map(|n| n.received_at)
        .collect();
    most_in_window(&times, window)
}

/// An event acknowledged with 202: `(account, client, i)`.
type Acked = (String, usize, usize);

/// Clients posting events to `accounts` (round robin) through gateways, until stopped;
/// each acknowledged event is recorded. 503s and refused connections are retried later
/// (with the same `Idempotency-Key`); any other answer fails the test.
struct Posting {
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Posting {
    /// `per_gateway` clients on each of `bases`, each with a number of its own.
    fn start(bases: &[&str], accounts: &[String], per_gateway: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..bases.len() * per_gateway)
            .map(|client| {
                let base = bases[client / per_gateway].to_string();
                let accounts = accounts.to_vec();
                let (stop, acked) = (stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let account = &accounts[(client + i) % accounts.len()];
                        let resp = http
                            .post(format!("{base}/v1/accounts/{account}/notify"))
                            .bearer_auth(KEY)
                            .header("idempotency-key", format!("{client}-{i}"))
                            .json(
                                &json!({"app_id": 1, "event": "e", "body": {"c": client, "i": i}}),
                            )
                            .send()
                            .await;
                        match resp {
                            Ok(resp) if resp.status() == 202 => {
                                acked.lock().unwrap().push((account.clone(), client, i));
                                i += 1;
                            }
                            Ok(resp) if resp.status() == 503 => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Ok(resp) => panic!("unexpected answer {}", resp.status()),
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        Posting {
            stop,
            acked,
            clients,
        }
    }

    /// Events acknowledged so far.
    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` events beyond those acknowledged now are acknowledged.
    async fn wait_more(&self, what: &str, more: usize, timeout: Duration) {
        let target = self.count() + more;
        wait_for(what, timeout, || self.count() >= target).await;
    }

    /// Stops the clients; every event they had acknowledged.
    async fn finish(self) -> Vec<Acked> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("a client ran to its end");
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Waits until the simulator received every accepted event; returns how many arrived
/// more than once.
async fn wait_all_delivered(sim: &TestSim, accepted: &[Acked], timeout: Duration) -> usize {
    let accounts: HashSet<&String> = accepted.iter().map(|(a, _, _)| a).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let mut got: Vec<(String, usize, usize)> = Vec::new();
        for account in &accounts {
            for notification in sim.received(account) {
                let body = posted_body(&notification);
                let (c, i) = (&body["c"], &body["i"]);
                if let (Some(c), Some(i)) = (c.as_u64(), i.as_u64()) {
                    got.push(((*account).clone(), c as usize, i as usize));
                }
            }
        }
        let unique: HashSet<&(String, usize, usize)> = got.iter().collect();
        let missing: Vec<&(String, usize, usize)> =
            accepted.iter().filter(|a| !unique.contains(a)).collect();
        if missing.is_empty() {
            return got.len() - unique.len();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events never delivered, e.g. {:?}",
            missing.len(),
            accepted.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_gateways_share_one_limit_on_a_cluster_with_keys_on_every_master() {
    let urls = shared_cluster();
    let accounts: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    // The simulator enforces the same limit, so one call too many would show as a 429.
    let sim = spawn_sim(&names, 8, 2).await;
    let prefix = format!("two-{}", uuid::Uuid::now_v7().simple());
    let delivery = "notify_per_minute = 8\nnotify_window_seconds = 2";
    let text = cluster_toml(&urls, &prefix, &sim, &names, "", delivery);
    let a = spawn_gateway(config(&text)).await;
    let b = spawn_gateway(config(&text)).await;
    let mut expected = 0;
    for (n, account) in accounts.iter().enumerate() {
        // c0 has a backlog of three windows; the others a few events each.
        let count = if n == 0 { 26 } else { 3 };
        let events: Vec<Value> = (0..count)
            .map(|i| json!({"app_id": 1, "event": "e", "body": {"i": i}}))
            .collect();
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/accounts/{account}/notify/batch"))
            .bearer_auth(KEY)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        expected += count;
    }
    // Every master holds some of the queue.
    for port in masters_of(&urls) {
        assert!(keys_under(port, &prefix) > 0, "no key on master {port}");
    }
    wait_for("every event delivered", Duration::from_secs(40), || {
        accounts
            .iter()
            .map(|a| sim.sim.notifications(a).len())
            .sum::<usize>()
            >= expected
    })
    .await;
    for account in &accounts {
        let got = sim.received(account);
        let order: Vec<u64> = got
            .iter()
            .map(|g| posted_body(g)["i"].as_u64().expect("a number"))
            .collect();
        let want: Vec<u64> = (0..if account == "c0" { 26 } else { 3 }).collect();
        assert_eq!(order, want, "FIFO of {account}");
        assert!(
            sim.sim
                .notify_attempts(account)
                .iter()
                .all(|n| n.status == 200),
            "upstream answered {account} 429"
        );
        let most = most_calls_in_window(&sim, account, Duration::from_secs(2));
        assert!(most <= 8, "{most} calls of {account} within one window");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_no_acknowledged_event() {
    let mut cluster = RedisCluster::start();
    let urls = cluster.urls();
    let accounts: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let sim = spawn_sim(&names, 100_000, 60).await;
    let redis = "wait_replicas = 1\nwait_timeout_ms = 1000\ntimeout_ms = 2000";
    // Ten calls per second per account: the clients store faster, so every account keeps
    // a backlog.
    let delivery = "notify_per_minute = 10\nnotify_window_seconds = 1";
    let text = cluster_toml(&urls, "f", &sim, &names, redis, delivery);
    let gw = spawn_gateway(config(&text)).await;
    let posting = Posting::start(&[&gw.base], &accounts, 8);
    posting
        .wait_more("events acknowledged", 300, Duration::from_secs(30))
        .await;

    // The master holding most keys dies (SIGKILL) while the clients go on.
    let victim = masters_of(&urls)
        .into_iter()
        .max_by_key(|&port| cluster.dbsize(port))
        .expect("a master");
    let on_victim: Vec<&String> = accounts
        .iter()
        .filter(|a| cluster.owner(slot_of(a)).port == victim)
        .collect();
    assert!(!on_victim.is_empty(), "some account lives on the victim");
    cluster.node(victim).stop();
    let killed = Instant::now();
    // Until its replica takes over, part of the cluster is down: not ready.
    let deadline = Instant::now() + Duration::from_secs(5);
    while reqwest::get(format!("{}/readyz", gw.base))
        .await
        .unwrap()
        .status()
        != 503
    {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 with a master down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its replica takes over: its slots get another owner.
    let victim_slot = slot_of(on_victim[0]);
    let mut promoted = None;
    while promoted.is_none() {
        let topology = cluster.topology();
        promoted = topology
            .iter()
            .find(|n| {
                n.master
                    && !n.failed
                    && n.port != victim
                    && n.slots
                        .iter()
                        .any(|&(a, b)| a <= victim_slot && victim_slot <= b)
            })
            .map(|_| killed.elapsed());
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no replica took over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first delivery claimed on the promoted replica: a worker sends a call right
    // after claiming it and the simulator answers at once, so a call that arrives 200 ms
    // after the kill was claimed after it.
    let mut first_after = None;
    while first_after.is_none() {
        first_after = on_victim
            .iter()
            .flat_map(|a| sim.sim.notifications(a))
            .map(|n| n.received_at)
            .filter(|&at| at > killed + Duration::from_millis(200))
            .min()
            .map(|at| at - killed);
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no delivery for the victim's partitions after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The promoted replica has no replica of its own, so its partitions answer 503
    // not_replicated until the old master is back, as its replica.
    cluster.node(victim).restart();
    posting
        .wait_more(
            "events acknowledged after the failover",
            100,
            Duration::from_secs(30),
        )
        .await;
    let accepted = posting.finish().await;
    let duplicates = wait_all_delivered(&sim, &accepted, Duration::from_secs(60)).await;
    eprintln!(
        "master killed: its replica promoted after {:?}, first delivery claimed there after {:?} (Redis Cluster node timeout 1 s); {} events acknowledged, all delivered, {duplicates} twice",
        promoted.unwrap_or_default(),
        first_after.unwrap_or_default(),
        accepted.len()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("{}/readyz", gw.base)).await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never returned to 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_to_another_master_under_load_loses_nothing() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    // Three accounts of one partition, whose slot is moved; one of another, which is not.
    let moved_p = partition_of("m0", PARTITIONS);
    let mut accounts: Vec<String> = (0..200)
        .map(|i| format!("m{i}"))
        .filter(|a| partition_of(a, PARTITIONS) == moved_p)
        .take(3)
        .collect();
    accounts.push(
        (0..200)
            .map(|i| format!("o{i}"))
            .find(|a| partition_of(a, PARTITIONS) != moved_p)
            .expect("an account of another partition"),
    );
    let names: Vec<&str> = accounts.iter().map(String::as_str).collect();
    // 20 calls per 2 s window per account, enforced by the simulator too.
    let sim = spawn_sim(&names, 20, 2).await;
    let delivery = "notify_per_minute = 20\nnotify_window_seconds = 2";
    // Every 202 waits for a replica, so the stored events' pipelines (script calls, a
    // write of their own, WAIT) meet the move too.
    let redis = "wait_replicas = 1\nwait_timeout_ms = 1000\ntimeout_ms = 2000";
    let text = cluster_toml(&urls, "mv", &sim, &names, redis, delivery);
    let a = spawn_gateway(config(&text)).await;
    let b = spawn_gateway(config(&text)).await;
    let posting = Posting::start(&[&a.base, &b.base], &accounts, 3);
    posting
        .wait_more("a backlog", 200, Duration::from_secs(30))
        .await;

    let slot = slot_of(&accounts[0]);
    let from = cluster.owner(slot).port;
    let to = masters_of(&urls)
        .into_iter()
        .find(|&p| p != from)
        .expect("another master");
    let moved = tokio::task::spawn_blocking(move || {
        let moved = cluster.move_slot(slot, to, 4, Duration::from_millis(30));
        (cluster, moved)
    })
    .await
    .unwrap();
    let (cluster, keys_moved) = moved;
    assert_eq!(cluster.owner(slot).port, to);
    posting
        .wait_more(
            "events acknowledged after the move",
            100,
            Duration::from_secs(20),
        )
        .await;
    let accepted = posting.finish().await;
    let duplicates = wait_all_delivered(&sim, &accepted, Duration::from_secs(90)).await;
    for account in &accounts {
        assert!(
            sim.sim
                .notify_attempts(account)
                .iter()
                .all(|n| n.status == 200),
            "upstream answered {account} 429"
        );
        let most = most_calls_in_window(&sim, account, Duration::from_secs(2));
        assert!(most <= 20, "{most} calls of {account} within one window");
    }
    // Nothing left behind: no lease, retry or queued id in the moved partition.
    let base = format!("mv:{{p{moved_p}}}");
    // (The last outcomes are recorded just after their calls arrive.)
    let new_master = cluster
        .nodes
        .iter()
        .find(|n| n.port == to)
        .expect("the new master");
    for key in ["inflight", "delayed"] {
        let key = format!("{base}:{key}");
        wait_for(
            &format!("{key} empty on the new master"),
            Duration::from_secs(10),
            || {
                // (the in-flight set's anchor, at +inf, is no lease)
                new_master
                    .command(&["ZCOUNT", &key, "-inf", "(+inf"])
                    .is_some_and(|r| r.trim() == ":0")
            },
        )
        .await;
    }
    assert_eq!(keys_under(from, &base), 0, "keys left on the old master");
    eprintln!(
        "slot {slot} moved under load ({keys_moved} keys, 4 per MIGRATE): {} events acknowledged, all delivered, {duplicates} twice, no window over the limit",
        accepted.len()
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A shard down for good (its master and replica stopped, the other masters not
/// requiring full coverage): `GET /v1/queues` still answers, current for the partitions
/// the other shards hold and naming the down shard's, although the down shard is the one
/// the gateway asks for Redis's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_leaves_the_other_partitions_stats_readable() {
    let mut cluster = RedisCluster::start();
    // The shard of slot 0, where commands without a key (TIME) go.
    let down = cluster
        .topology()
        .into_iter()
        .find(|n| n.master && n.slots.iter().any(|&(from, _)| from == 0))
        .expect("a master serves slot 0");
    let on_down = |slot: u16| down.slots.iter().any(|&(a, b)| (a..=b).contains(&slot));
    // One account on the down shard, one elsewhere.
    let names: Vec<String> = (0..).map(|n| format!("sd{n}")).take(200).collect();
    let lost = names.iter().find(|n| on_down(slot_of(n))).unwrap().clone();
    let kept = names.iter().find(|n| !on_down(slot_of(n))).unwrap().clone();
    let sim = spawn_sim(&[&lost, &kept], 1000, 60).await;
    // A key prefix whose layout record (`{prefix}:meta`, which a process checks before
    // any other queue work) stays up.
    let prefix = (0..)
        .map(|n| format!("sd{n}"))
        .find(|p| !on_down(key_slot(format!("{p}:meta").as_bytes())))
        .unwrap();
    // a gateway's config, on a port of its own
    let urls = cluster.urls();
    let text = || with_admin(cluster_toml(&urls, &prefix, &sim, &[&lost, &kept], "", ""));
    let gw = spawn_gateway(config(&text())).await;
    let api = Api::from(&gw);
    let delivered =
        |q: &Value, account: &str| queue_row(q, account).map(|r| r["delivered"].clone());
    let event = json!({"app_id": 1, "event": "e"});
    for name in [&lost, &kept] {
        api.deliver(name, &event).await;
    }
    let (status, q) = admin_get(&api, "/v1/queues").await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["unread_partitions"], json!([]), "{q}");
    assert_eq!(delivered(&q, &lost), Some(json!(1)), "{q}");

    // The shard goes down for good; the others serve their slots on.
    for node in cluster.nodes.iter().filter(|n| n.port != down.port) {
        expect_ok(node.command(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]));
    }
    let replica = format!("master_port:{}", down.port);
    for node in cluster.nodes.iter_mut().filter(|n| {
        n.port == down.port
            || n.command(&["INFO", "replication"])
                .is_some_and(|info| info.contains(&replica))
    }) {
        node.stop();
    }
    let id = api.accept(&kept, &event).await;
    api.wait_status(&id, "delivered", Duration::from_secs(20))
        .await;
    let (status, q) = admin_get(&api, "/v1/queues").await;
    assert_eq!(status, 200, "one shard down still answers: {q}");
    let unread: Vec<u64> = (0..PARTITIONS)
        .filter(|p| on_down(key_slot(format!("{{p{p}}}").as_bytes())))
        .map(u64::from)
        .collect();
    assert_eq!(q["unread_partitions"], json!(unread), "{q}");
    assert_eq!(
        delivered(&q, &kept),
        Some(json!(2)),
        "current elsewhere: {q}"
    );
    assert_eq!(delivered(&q, &lost), Some(json!(1)), "the last read: {q}");

    // A process started now never read the down shard, nor Redis's time: it answers with
    // the rest, at the time its reads tell, and leaves the down shard's accounts out.
    let fresh = spawn_gateway(config(&text())).await;
    let (status, q) = admin_get(&Api::from(&fresh), "/v1/queues").await;
    assert_eq!(status, 200, "a new process with a shard down: {q}");
    assert_eq!(q["unread_partitions"], json!(unread), "{q}");
    assert_eq!(delivered(&q, &kept), Some(json!(2)), "{q}");
    assert_eq!(delivered(&q, &lost), None, "nothing known of it: {q}");
    fresh.shutdown().await;
    gw.shutdown().await;
}

//! A queue partition whose Redis state fails (here a key of the wrong type, as a bug or a
//! half-migrated slot would leave it) fails alone: claims, completions and ingress of the
//! other partitions go on in the same round trips, and the broken partition's work waits
//! and resumes by itself, nothing lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId};
use zenrelay::queue::{CallStatus, Completion, EnqueueBatch, EnqueueOutcome, Outcome, Queue};

use crate::support::*;

/// `gateway_toml`'s partition count.
const PARTITIONS: u16 = 4;

/// Accounts named `{stem}{n}`: the first two in `partition`, then one in each other
/// partition.
fn accounts(stem: &str, partition: u16) -> (Vec<String>, Vec<String>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for n in 0.. {
        let name = format!("{stem}{n}");
        let p = partition_of(&name, PARTITIONS);
        if p == partition && inside.len() < 2 {
            inside.push(name);
        } else if p != partition && seen.insert(p) {
            outside.push(name);
        }
        if inside.len() == 2 && outside.len() == usize::from(PARTITIONS) - 1 {
            break;
        }
    }
    (inside, outside)
}

/// A queue of `PARTITIONS` partitions on `redis`, under key prefix `prefix`.
fn queue_on(redis: &RedisServer, prefix: &str) -> Arc<dyn Queue> {
    let mut config = Config::default();
    config.redis.partitions = PARTITIONS;
    config.redis.url = redis.url().into();
    config.redis.key_prefix = prefix.into();
    zenrelay::app::queue_for(&config).expect("queue builds")
}

/// A batch of one plain event of `account` (limit 100 per minute).
fn one_event(account: &str) -> EnqueueBatch {
    crate::support::one_plain_batch(account, PARTITIONS, "e")
}

/// A gateway (with the admin client and runtime accounts) on a Redis of its own, under key
/// prefix `stem`, and
/// its simulator, for the accounts of [`accounts`]`(stem, partition)`.
struct Setup {
    redis: RedisServer,
    inside: Vec<String>,
    outside: Vec<String>,
    sim: TestSim,
    gw: TestGateway,
}

impl Setup {
    async fn start(stem: &str, partition: u16) -> Self {
        let redis = RedisServer::start();
        let (inside, outside) = accounts(stem, partition);
        let all = Self::names(&inside, &outside);
        let sim = spawn_sim(&all, 1000, 60).await;
        let gw = spawn_gateway(config(&Self::toml(&redis, stem, &sim, &all))).await;
        Setup {
            redis,
            inside,
            outside,
            sim,
            gw,
        }
    }

    fn names<'a>(inside: &'a [String], outside: &'a [String]) -> Vec<&'a str> {
        inside.iter().chain(outside).map(String::as_str).collect()
    }

    fn toml(redis: &RedisServer, stem: &str, sim: &TestSim, all: &[&str]) -> String {
        with_admin(gateway_toml(&redis.url(), stem, sim, all, ""))
            + &format!(
                "\n[runtime_accounts]\nencryption_key = \"{}\"\n",
                crate::ops::SEAL_KEY
            )
    }

    /// Another gateway on the same Redis and simulator.
    async fn another_gateway(&self, stem: &str) -> TestGateway {
        let all = Self::names(&self.inside, &self.outside);
        spawn_gateway(config(&Self::toml(&self.redis, stem, &self.sim, &all))).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_holds_back_only_its_own_accounts() {
    let broken = 2;
    let Setup {
        redis,
        inside,
        outside,
        sim: _sim,
        gw,
    } = Setup::start("pf", broken).await;
    let api = Api::from(&gw);
    let event = json!({"app_id": 1, "event": "e"});

    // The partition works before it breaks.
    let first = api.accept(&inside[0], &event).await;
    api.wait_status(&first, "delivered", Duration::from_secs(10))
        .await;

    // Break the partition: every claim there fails (its held set is not a sorted set),
    // and so does any enqueue for its second account (its record is not a hash).
    let base = format!("pf:{{p{broken}}}");
    expect_ok(redis.command(&["SET", &format!("{base}:held"), "broken"]));
    expect_ok(redis.command(&["SET", &format!("{base}:acct:{}", inside[1]), "broken"]));
    let broke_at = Instant::now();

    // Ingress: in one burst, the other partitions' events are stored and the broken
    // account's are refused with 503 (nothing stored), each answered on its own.
    let mut posts = Vec::new();
    for name in outside.iter().chain(&inside) {
        for _ in 0..3 {
            posts.push(api.notify(name, &event));
        }
    }
    let answers = futures::future::join_all(posts).await;
    let mut ids = Vec::new();
    for (i, resp) in answers.into_iter().enumerate() {
        let name = outside.iter().chain(&inside).nth(i / 3).unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        if *name == inside[1] {
            assert_eq!(status, 503, "{name}: {body}");
            assert_eq!(body["error"]["code"], "storage_unavailable");
        } else {
            assert_eq!(status, 202, "{name}: {body}");
            ids.push((name.clone(), body["id"].as_str().unwrap().to_string()));
        }
    }

    // Delivery: the other partitions' events arrive at once; the broken one's wait.
    let mut slowest = Duration::ZERO;
    for (_, id) in ids.iter().filter(|(n, _)| outside.contains(n)) {
        api.wait_status(id, "delivered", Duration::from_secs(10))
            .await;
        slowest = slowest.max(broke_at.elapsed());
    }
    println!(
        "other partitions delivered within {} ms of one breaking",
        slowest.as_millis()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "the other partitions took {slowest:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, id) in ids.iter().filter(|(n, _)| *n == inside[0]) {
        assert_eq!(
            api.event(id).await["status"],
            "queued",
            "held back while broken"
        );
    }

    // Repaired: the held events go out by themselves, and the refused account is served.
    expect_ok(redis.command(&["DEL", &format!("{base}:held")]));
    expect_ok(redis.command(&["DEL", &format!("{base}:acct:{}", inside[1])]));
    let after = api.accept(&inside[1], &event).await;
    for (_, id) in ids
        .iter()
        .filter(|(n, _)| *n == inside[0])
        .chain([&(inside[1].clone(), after)])
    {
        api.wait_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
    gw.shutdown().await;
}

/// Enqueues waiting together are stored by one script call across partitions, and a key
/// that cannot be used fails only the events that need it: an account's record its
/// account's, a partition's ready set that partition's accounts', an idempotency key its
/// event. The call stores every other event.
#[tokio::test]
async fn unusable_keys_fail_only_their_own_events_in_a_shared_enqueue() {
    let redis = RedisServer::start();
    let q = queue_on(&redis, "pe");
    let names: Vec<String> = (0..16).map(|n| format!("pe{n}")).collect();
    let base = |name: &String| format!("pe:{{p{}}}", partition_of(name, PARTITIONS));
    let batch = |name: &String, key: Option<&str>| {
        let mut batch = one_event(name);
        batch.events[0].idempotency = key.map(|k| (k.to_string(), "fp".to_string()));
        batch
    };
    // (the first enqueue also checks the layout)
    q.enqueue(batch(&names[0], None)).await.unwrap();
    // An account whose record is not a hash; a partition (of another account) whose ready
    // set is not a sorted set; an idempotency key that is not a string.
    let unreadable = &names[1];
    let ready_broken = (partition_of(unreadable, PARTITIONS) + 1) % PARTITIONS;
    let idem_broken = names
        .iter()
        .find(|n| partition_of(n, PARTITIONS) != ready_broken && *n != unreadable)
        .unwrap();
    let key_of = |name: &String| (name == idem_broken).then_some("k");
    expect_ok(redis.command(&[
        "SET",
        &format!("{}:acct:{unreadable}", base(unreadable)),
        "x",
    ]));
    expect_ok(redis.command(&["SET", &format!("pe:{{p{ready_broken}}}:ready"), "x"]));
    expect_ok(redis.command(&[
        "HSET",
        &format!("{}:idem:{idem_broken}:k", base(idem_broken)),
        "a",
        "b",
    ]));
    let before = redis.command_calls("fcall");
    let results =
        futures::future::join_all(names.iter().map(|n| q.enqueue(batch(n, key_of(n))))).await;
    let calls = redis.command_calls("fcall") - before;
    assert!(
        calls <= 3,
        "{} enqueues waiting together took {calls} script calls",
        names.len()
    );
    let mut stored = 0;
    for (name, result) in names.iter().zip(results) {
        let fails = name == unreadable
            || name == idem_broken
            || partition_of(name, PARTITIONS) == ready_broken;
        if fails {
            let err = result.expect_err("an event that needs an unusable key is refused");
            assert!(err.to_string().contains("WRONGTYPE"), "{name}: {err}");
            continue;
        }
        let outcome = result.unwrap();
        let [EnqueueOutcome::Stored { id, .. }] = &outcome[..] else {
            panic!("{name}: {outcome:?}");
        };
        let record = q.event(&EventId::parse(id).unwrap()).await.unwrap();
        assert_eq!(record.map(|r| r.status), Some(CallStatus::Queued), "{name}");
        stored += 1;
    }
    let partitions: std::collections::HashSet<u16> =
        names.iter().map(|n| partition_of(n, PARTITIONS)).collect();
    assert_eq!(
        partitions.len(),
        usize::from(PARTITIONS),
        "the accounts span partitions"
    );
    assert!(stored >= 6, "only {stored} stored");
}

/// An account whose depth an enqueue must count part-way through its events (the bound its
/// record keeps leaves room for some of them only) and whose retries cannot be read fails
/// whole: none of the call's events is stored, as when its record cannot be read.
#[tokio::test]
async fn an_account_whose_count_fails_part_way_stores_none_of_its_events() {
    let redis = RedisServer::start();
    let q = queue_on(&redis, "pw");
    let base = format!("pw:{{p{}}}", partition_of("acme", PARTITIONS));
    // one event stored (cap 100): the depth counted, the bound then 1, which stands for 9
    q.enqueue(one_event("acme")).await.unwrap();
    expect_ok(redis.command(&["SET", &format!("{base}:retry:acme"), "x"]));
    let mut batch = one_event("acme");
    let p = partition_of("acme", PARTITIONS);
    batch.events = (0..95)
        .map(|i| crate::support::plain_event(EventId::new(p), &format!("m{i}")))
        .collect();
    let err = q
        .enqueue(batch)
        .await
        .expect_err("the count of the account's depth fails");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert_eq!(
        redis
            .command(&["LLEN", &format!("{base}:q:acme:n")])
            .as_deref(),
        Some(":1\r\n"),
        "only the first event's call is queued"
    );
    let events = redis.command(&[
        "EVAL",
        "return #redis.call('KEYS', ARGV[1])",
        "0",
        &format!("{base}:ev:*"),
    ]);
    assert_eq!(
        events.as_deref(),
        Some(":1\r\n"),
        "only the first event is stored"
    );
}

/// Outcomes recorded in one round trip: those of a failing partition fail alone and are
/// reported as such; the others are recorded.
#[tokio::test]
async fn a_failing_partition_fails_only_its_own_completions() {
    let redis = RedisServer::start();
    let q = queue_on(&redis, "pc");
    let (inside, outside) = accounts("pc", 1);
    for name in [&inside[0], &outside[0]] {
        let outcome = q.enqueue(one_event(name)).await.unwrap();
        assert!(matches!(outcome[0], EnqueueOutcome::Stored { .. }));
    }
    let requests: Vec<(u16, usize)> = (0..PARTITIONS).map(|p| (p, 4)).collect();
    let claimed: Vec<_> = q
        .claim_each(&requests)
        .await
        .into_iter()
        .flat_map(|b| b.unwrap().items)
        .collect();
    assert_eq!(claimed.len(), 2);
    // Partition 1 breaks before the outcomes are recorded: its in-flight set is no longer
    // a sorted set.
    expect_ok(redis.command(&["RENAME", "pc:{p1}:inflight", "pc:{p1}:inflight-saved"]));
    expect_ok(redis.command(&["SET", "pc:{p1}:inflight", "broken"]));
    let completions: Vec<Completion> = claimed
        .iter()
        .map(|c| Completion::of(c, Outcome::Delivered { status: 200 }))
        .collect();
    let results = q.complete_each(&completions).await;
    for (c, result) in completions.iter().zip(&results) {
        let inside_partition = c.account == inside[0];
        assert_eq!(
            result.is_err(),
            inside_partition,
            "{}: {result:?}",
            c.account
        );
    }
    let record = |c: &Completion| {
        let id = EventId::parse(c.delivery_id.split(':').next().unwrap()).unwrap();
        let q = q.clone();
        async move { q.event(&id).await.unwrap().unwrap().status }
    };
    for c in completions.iter().filter(|c| c.account != inside[0]) {
        assert_eq!(record(c).await, "delivered", "{}", c.account);
    }
    // Repaired, the failed outcome is recorded when retried: until then its call is still
    // being delivered.
    expect_ok(redis.command(&["DEL", "pc:{p1}:inflight"]));
    expect_ok(redis.command(&["RENAME", "pc:{p1}:inflight-saved", "pc:{p1}:inflight"]));
    for c in completions.iter().filter(|c| c.account == inside[0]) {
        assert_eq!(record(c).await, "delivering", "{}", c.account);
    }
    let retry: Vec<Completion> = completions
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(c, _)| c.clone())
        .collect();
    assert!(q.complete_each(&retry).await.iter().all(Result::is_ok));
    for c in &completions {
        assert_eq!(record(c).await, "delivered", "{}", c.account);
    }
}

/// A Redis reply that is not an error (`+OK`, an integer): a setup command that failed
/// would leave nothing broken, and the test would fail far from the cause.
/// The stats of a partition that cannot be read keep what was last read of it, and the
/// answer names it; the other partitions' figures stay current (one shard down is when an
/// operator needs them most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_leaves_the_others_stats_current() {
    let broken = 1;
    let setup = Setup::start("ps", broken).await;
    let (redis, inside, outside) = (&setup.redis, &setup.inside, &setup.outside);
    let api = Api::from(&setup.gw);
    let event = json!({"app_id": 1, "event": "e"});
    for name in [&inside[0], &outside[0]] {
        api.deliver(name, &event).await;
    }
    let (status, queues) = admin_get(&api, "/v1/queues").await;
    assert_eq!(status, 200, "{queues}");
    assert_eq!(queues["unread_partitions"], json!([]), "{queues}");
    assert_eq!(
        queue_row(&queues, &inside[0]).unwrap()["delivered"],
        1,
        "{queues}"
    );

    // Break the partition's change set and account set: every read of its stats fails
    // from now on, of its changes and whole.
    let base = format!("ps:{{p{broken}}}");
    let (changes, set) = (format!("{base}:changed"), format!("{base}:accounts"));
    let aside = format!("{set}:aside");
    expect_ok(redis.command(&["SET", &changes, "broken"]));
    expect_ok(redis.command(&["RENAME", &set, &aside]));
    expect_ok(redis.command(&["SET", &set, "broken"]));
    // The runtime accounts' list fails too: with part of the store down already, the
    // answer leaves out the runtime accounts that hold nothing yet.
    let runtime = "ps:runtime:accounts";
    expect_ok(redis.command(&["SET", runtime, "broken"]));
    api.deliver(&outside[0], &event).await;
    let (status, queues) = admin_get(&api, "/v1/queues").await;
    assert_eq!(status, 200, "one partition down still answers: {queues}");
    assert_eq!(queues["unread_partitions"], json!([broken]), "{queues}");
    assert_eq!(
        queue_row(&queues, &outside[0]).unwrap()["delivered"],
        2,
        "the other partitions are read: {queues}"
    );
    assert_eq!(
        queue_row(&queues, &inside[0]).unwrap()["delivered"],
        1,
        "the broken partition shows its last read: {queues}"
    );
    // a scrape may be answered from the snapshot of the last 2 s
    let mut metrics = String::new();
    for _ in 0..50 {
        let (status, text) = admin_get(&api, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        metrics = text.as_str().unwrap_or_default().to_string();
        if metrics.contains("zenrelay_queue_partitions_unread 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metrics.contains("zenrelay_queue_partitions_unread 1"),
        "{metrics}"
    );
    assert!(metrics.contains("zenrelay_queue_up 1"), "{metrics}");

    // A process that never read the partition leaves its accounts out rather than show
    // them idle.
    let fresh = setup.another_gateway("ps").await;
    let (status, queues) = admin_get(&Api::from(&fresh), "/v1/queues").await;
    assert_eq!(status, 200, "{queues}");
    assert_eq!(queues["unread_partitions"], json!([broken]), "{queues}");
    assert!(queue_row(&queues, &inside[0]).is_none(), "{queues}");
    assert_eq!(
        queue_row(&queues, &outside[0]).unwrap()["delivered"],
        2,
        "{queues}"
    );
    fresh.shutdown().await;

    // Repaired: every partition is read again. A failing runtime accounts' list alone is
    // an error: nothing else says the answer lacks accounts.
    expect_ok(redis.command(&["DEL", &changes, &set]));
    expect_ok(redis.command(&["RENAME", &aside, &set]));
    let (status, queues) = admin_get(&api, "/v1/queues").await;
    assert_eq!(status, 503, "{queues}");
    expect_ok(redis.command(&["DEL", runtime]));
    let (status, queues) = admin_get(&api, "/v1/queues").await;
    assert_eq!(status, 200, "{queues}");
    assert_eq!(queues["unread_partitions"], json!([]), "{queues}");
    setup.gw.shutdown().await;
}

//! One conformance suite for every queue backend, so that Redis and memory cannot drift.
//!
//! Each scenario is written once as an `async fn(Backend)` and instantiated by
//! `conformance!` for the in-memory queue and for a real `redis-server` of its own. Both are
//! built through `app::queue_for`, the function the gateway uses. The Redis backend reads
//! the clock with Redis `TIME`, so timing scenarios use short real windows (300-500 ms) and
//! assert bounds that hold whatever the scheduling delays; long timings (60 s windows,
//! 30 s pauses, retention) are tested on the memory backend with tokio's paused clock in
//! `src/queue/memory.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId, NotifyPayload, Priority};
use zenrelay::queue::{
    Claimed, Completion, EnqueueBatch, EnqueueOutcome, EventRecord, NewEvent, Outcome, Queue,
    RateLimit,
};

use crate::support::RedisServer;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
}

/// A queue under test; owns its Redis server, if any.
struct Fixture {
    q: Arc<dyn Queue>,
    _redis: Option<RedisServer>,
}

impl std::ops::Deref for Fixture {
    type Target = dyn Queue;
    fn deref(&self) -> &Self::Target {
        self.q.as_ref()
    }
}

const PARTITIONS: u16 = 2;
const LEASE_MS: u64 = 300;

/// A roomy limit for scenarios that are not about the limit.
const WIDE: RateLimit = RateLimit {
    limit: 1000,
    window_ms: 60_000,
};

async fn open(backend: Backend) -> Fixture {
    let mut config = Config::default();
    config.redis.partitions = PARTITIONS;
    config.delivery.lease_ms = Some(LEASE_MS);
    config.delivery.window_margin_ms = Some(0);
    let redis = match backend {
        Backend::Memory => {
            config.redis.url = "memory://".to_string().into();
            None
        }
        Backend::Redis => {
            let redis = RedisServer::start();
            config.redis.url = redis.url().into();
            config.redis.key_prefix = format!("conformance-{}", uuid::Uuid::now_v7().simple());
            Some(redis)
        }
    };
    let q = zenrelay::app::queue_for(&config).expect("queue builds");
    q.ping().await.expect("queue answers");
    Fixture { q, _redis: redis }
}

fn event_for(account: &str, name: &str) -> NewEvent {
    NewEvent {
        id: EventId::new(partition_of(account, PARTITIONS)),
        priority: Priority::Normal,
        ttl_ms: 0,
        payload: NotifyPayload::new(1, name, None),
        agents: vec![None],
        idempotency: None,
    }
}

async fn put_with(
    q: &Fixture,
    account: &str,
    limit: RateLimit,
    max_depth: u64,
    events: Vec<NewEvent>,
) -> Vec<EnqueueOutcome> {
    q.enqueue(EnqueueBatch {
        account: account.to_string(),
        limit,
        max_depth,
        idempotency_ttl_secs: 86_400,
        events,
    })
    .await
    .expect("enqueue")
}

/// Stores events named `names` for `account`; returns their ids.
async fn put(q: &Fixture, account: &str, limit: RateLimit, names: &[&str]) -> Vec<EventId> {
    let events = names.iter().map(|n| event_for(account, n)).collect();
    put_with(q, account, limit, 100_000, events)
        .await
        .iter()
        .map(stored)
        .collect()
}

fn stored(outcome: &EnqueueOutcome) -> EventId {
    match outcome {
        EnqueueOutcome::Stored { id, .. } => EventId::parse(id).expect("a valid id"),
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// Claims from every partition.
async fn claim(q: &Fixture) -> Vec<Claimed> {
    claim_max(q, 100).await.0
}

/// Claims at most `max` per partition; also returns the earliest next due time.
async fn claim_max(q: &Fixture, max: usize) -> (Vec<Claimed>, Option<Duration>) {
    let mut items = Vec::new();
    let mut next: Option<Duration> = None;
    for p in 0..PARTITIONS {
        let batch = q.claim(p, max).await.expect("claim");
        items.extend(batch.items);
        next = match (next, batch.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (items, next)
}

/// The `event` field of a claimed Notify body.
fn name(c: &Claimed) -> String {
    let body: serde_json::Value = serde_json::from_slice(&c.body).expect("JSON body");
    body["event"].as_str().expect("event").to_string()
}

fn names(items: &[Claimed]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(name).collect();
    names.sort();
    names
}

async fn done(q: &Fixture, c: &Claimed, outcome: Outcome) {
    q.complete(&[Completion::of(c, outcome)])
        .await
        .expect("complete");
}

fn ok() -> Outcome {
    Outcome::Delivered { status: 200 }
}

async fn record(q: &Fixture, id: &EventId) -> EventRecord {
    q.event(id).await.expect("event").expect("the event exists")
}

/// Claims until one delivery comes, for at most `timeout`.
async fn claim_within(q: &Fixture, timeout: Duration) -> Option<Claimed> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(c) = claim(q).await.into_iter().next() {
            return Some(c);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

async fn fifo_and_priority_with_one_delivery_in_flight(b: Backend) {
    let q = open(b).await;
    put(&q, "acme", WIDE, &["n1", "n2", "n3"]).await;
    let mut high = event_for("acme", "h1");
    high.priority = Priority::High;
    put_with(&q, "acme", WIDE, 100_000, vec![high]).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let items = claim(&q).await;
        assert_eq!(items.len(), 1, "one delivery in flight per account");
        assert!(
            claim(&q).await.is_empty(),
            "nothing more while it is in flight"
        );
        order.push(name(&items[0]));
        done(&q, &items[0], ok()).await;
    }
    assert_eq!(order, ["h1", "n1", "n2", "n3"]);
    assert!(claim(&q).await.is_empty());
}

async fn rolling_window_limit_is_never_exceeded_and_rescored(b: Backend) {
    let q = open(b).await;
    let window = Duration::from_millis(400);
    let limit = RateLimit {
        limit: 3,
        window_ms: window.as_millis() as u64,
    };
    let n = 8;
    let all: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    put(&q, "acme", limit, &refs).await;
    // Each start is known to lie between the claim call's start and end.
    let mut starts: Vec<(Instant, Instant)> = Vec::new();
    let mut got = Vec::new();
    let mut rescored = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        assert!(Instant::now() < deadline, "backlog not drained: {got:?}");
        let before = Instant::now();
        let (items, next) = claim_max(&q, 10).await;
        let after = Instant::now();
        match items.first() {
            Some(c) => {
                starts.push((before, after));
                got.push(name(c));
                done(&q, c, ok()).await;
            }
            None => {
                let wait = next.expect("work is waiting, so something is due");
                if wait > Duration::ZERO {
                    assert!(wait <= window, "re-scored too far: {wait:?}");
                    rescored = true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    assert!(
        rescored,
        "a throttled account is re-scored to when it may send"
    );
    assert_eq!(got, all, "FIFO under the limit");
    for i in 0..n - 3 {
        let gap = starts[i + 3].1.duration_since(starts[i].0);
        assert!(gap >= window, "4 starts within {gap:?} from #{i}");
    }
    // 8 sends at 3 per window need 2 windows after the first send, not much more (the
    // slack allows for a loaded machine).
    let span = starts[n - 1].1.duration_since(starts[0].0);
    assert!(
        span >= 2 * window && span < 2 * window + Duration::from_millis(1500),
        "span {span:?}"
    );
}

async fn fairness_across_accounts(b: Backend) {
    let q = open(b).await;
    // Both accounts in one partition, so they compete in one ready set.
    let (a, b_acct) = same_partition_pair();
    put(&q, &a, WIDE, &["a1", "a2", "a3"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    put(&q, &b_acct, WIDE, &["b1", "b2"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // More work for a waiting account keeps its place in line.
    put(&q, &a, WIDE, &["a4", "a5"]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // One account per claim: the one waiting longest to send goes first.
    let mut order = Vec::new();
    let p = partition_of(&a, PARTITIONS);
    for _ in 0..7 {
        let batch = q.claim(p, 1).await.unwrap();
        assert_eq!(batch.items.len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        done(&q, &batch.items[0], ok()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        order.push(name(&batch.items[0]));
    }
    assert_eq!(order, ["a1", "b1", "a2", "b2", "a3", "a4", "a5"]);

    // A throttled account does not hold back another: `a` has sent 5 of 6 in the window.
    let tight = RateLimit {
        limit: 6,
        window_ms: 60_000,
    };
    put(&q, &a, tight, &["a6", "a7"]).await;
    put(&q, &b_acct, WIDE, &["b3", "b4", "b5"]).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        for c in claim(&q).await {
            got.push(name(&c));
            done(&q, &c, ok()).await;
        }
    }
    assert_eq!(got.iter().filter(|n| n.starts_with('a')).count(), 1);
    assert_eq!(got.iter().filter(|n| n.starts_with('b')).count(), 3);
}

/// Two account names in the same partition.
fn same_partition_pair() -> (String, String) {
    let first = "acct-a".to_string();
    let p = partition_of(&first, PARTITIONS);
    let second = (0..)
        .map(|i| format!("acct-b{i}"))
        .find(|n| partition_of(n, PARTITIONS) == p)
        .expect("some name shares the partition");
    (first, second)
}

async fn expired_lease_is_requeued_at_the_front_and_stale_completion_ignored(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["first", "second"]).await;
    let held = claim(&q).await.remove(0);
    assert_eq!(name(&held), "first");
    // The holder goes silent; after the lease the same delivery comes back first.
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 50)).await;
    let again = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert_eq!(name(&again), "first", "requeued at the front");
    assert_eq!(again.attempts, 2);
    assert_ne!(again.lease_token, held.lease_token);
    // The old holder's failure is ignored: nothing is requeued or retried.
    done(
        &q,
        &held,
        Outcome::Retry {
            delay: Duration::ZERO,
            status: Some(503),
            error: "late".into(),
        },
    )
    .await;
    assert!(claim(&q).await.is_empty(), "still leased to the new holder");
    assert_eq!(record(&q, &ids[0]).await.status, "delivering");
    done(&q, &again, ok()).await;
    let next = claim(&q).await;
    assert_eq!(names(&next), ["second"]);
    let r = record(&q, &ids[0]).await;
    assert_eq!(r.status, "delivered");
    assert_eq!(r.deliveries[0].attempts, 2);
}

async fn late_success_removes_the_delivery_everywhere(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    // Lost lease, re-claimed by another worker, then the first worker's success arrives.
    let held = claim(&q).await.remove(0);
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 50)).await;
    let again = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    done(&q, &held, ok()).await;
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
    done(
        &q,
        &again,
        Outcome::Retry {
            delay: Duration::ZERO,
            status: Some(500),
            error: "second worker".into(),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 50)).await;
    assert!(claim(&q).await.is_empty(), "never sent again");
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");

    // A success reported after the delivery was scheduled for a retry removes the retry.
    let ids = put(&q, "acme", WIDE, &["y"]).await;
    let c = claim(&q).await.remove(0);
    done(
        &q,
        &c,
        Outcome::Retry {
            delay: Duration::from_millis(200),
            status: Some(503),
            error: "flaky".into(),
        },
    )
    .await;
    done(&q, &c, ok()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(claim(&q).await.is_empty(), "the retry was removed");
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");

    // A success whose lease expired before anyone re-claimed it (queued again).
    let ids = put(&q, "acme", WIDE, &["z"]).await;
    let c = claim(&q).await.remove(0);
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 50)).await;
    // A claim of no accounts still reaps the lease: the delivery is queued again.
    let _ = q.claim(partition_of("acme", PARTITIONS), 0).await.unwrap();
    assert_eq!(record(&q, &ids[0]).await.status, "queued");
    done(&q, &c, ok()).await;
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
    assert!(claim(&q).await.is_empty(), "removed from its list");
}

async fn retry_waits_its_delay_while_later_events_go(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["a", "b"]).await;
    let a = claim(&q).await.remove(0);
    done(
        &q,
        &a,
        Outcome::Retry {
            delay: Duration::from_millis(400),
            status: Some(503),
            error: "unavailable".into(),
        },
    )
    .await;
    let r = record(&q, &ids[0]).await;
    assert_eq!(r.status, "retrying");
    assert_eq!(r.deliveries[0].last_status, Some(503));
    assert_eq!(r.deliveries[0].last_error.as_deref(), Some("unavailable"));
    let started = Instant::now();
    let next = claim(&q).await;
    assert_eq!(
        names(&next),
        ["b"],
        "the next event does not wait for the retry"
    );
    done(&q, &next[0], ok()).await;
    let (items, due) = claim_max(&q, 10).await;
    assert!(items.is_empty());
    let due = due.expect("the retry is due later");
    assert!(due > Duration::ZERO && due <= Duration::from_millis(400));
    let retried = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert_eq!(name(&retried), "a");
    assert_eq!(retried.attempts, 2);
}

async fn rate_limited_pauses_the_account_without_counting(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["a", "b"]).await;
    put(&q, "globex", WIDE, &["g"]).await;
    let items = claim(&q).await;
    let a = items.iter().find(|c| c.account == "acme").unwrap();
    let g = items.iter().find(|c| c.account == "globex").unwrap();
    let paused_at = Instant::now();
    done(
        &q,
        a,
        Outcome::RateLimited {
            retry_after: Duration::from_millis(400),
        },
    )
    .await;
    done(&q, g, ok()).await;
    let r = record(&q, &ids[0]).await;
    assert_eq!(r.status, "queued");
    assert_eq!(r.deliveries[0].attempts, 0, "a 429 is not an attempt");
    assert_eq!(r.deliveries[0].last_status, Some(429));
    put(&q, "globex", WIDE, &["g2"]).await;
    let (items, due) = claim_max(&q, 10).await;
    assert_eq!(names(&items), ["g2"], "only the 429'd account pauses");
    done(&q, &items[0], ok()).await;
    assert!(due.is_some());
    let again = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert!(paused_at.elapsed() >= Duration::from_millis(350));
    assert_eq!(name(&again), "a", "same event first after the pause");
    assert_eq!(again.attempts, 1);
}

async fn auth_failed_pauses_the_account_and_keeps_events(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["a", "b"]).await;
    let a = claim(&q).await.remove(0);
    done(
        &q,
        &a,
        Outcome::AuthFailed {
            status: 401,
            error: "Couldn't authenticate you".into(),
        },
    )
    .await;
    let r = record(&q, &ids[0]).await;
    assert_eq!(r.status, "queued");
    assert_eq!(r.deliveries[0].attempts, 0);
    assert_eq!(r.deliveries[0].last_status, Some(401));
    put(&q, "globex", WIDE, &["g"]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let items = claim(&q).await;
    assert_eq!(
        names(&items),
        ["g"],
        "the account stays paused; others go on"
    );
    assert_eq!(record(&q, &ids[1]).await.status, "queued");
}

async fn released_goes_back_to_the_front_uncounted(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["a", "b"]).await;
    let a = claim(&q).await.remove(0);
    done(&q, &a, Outcome::Released).await;
    let r = record(&q, &ids[0]).await;
    assert_eq!((r.status.as_str(), r.deliveries[0].attempts), ("queued", 0));
    let again = claim(&q).await.remove(0);
    assert_eq!(name(&again), "a");
    assert_eq!(again.attempts, 1);
}

async fn dead_letters_keep_status_and_error(b: Backend) {
    let q = open(b).await;
    let mut two = event_for("acme", "fan");
    two.agents = vec![Some(1), Some(2)];
    let out = put_with(&q, "acme", WIDE, 100_000, vec![two]).await;
    let id = stored(&out[0]);
    let first = claim(&q).await.remove(0);
    done(
        &q,
        &first,
        Outcome::Dead {
            reason: "rejected".into(),
            status: Some(400),
            error: "{\"error\":\"InvalidValue\"}".into(),
        },
    )
    .await;
    let r = record(&q, &id).await;
    assert_eq!(r.status, "queued", "the other call is still pending");
    assert_eq!(r.deliveries[0].status, "dead");
    assert_eq!(r.deliveries[0].last_status, Some(400));
    assert_eq!(
        r.deliveries[0].last_error.as_deref(),
        Some("{\"error\":\"InvalidValue\"}")
    );
    let second = claim(&q).await.remove(0);
    assert!(second.body.ends_with(b",\"agent_id\":2}"));
    done(&q, &second, ok()).await;
    let r = record(&q, &id).await;
    assert_eq!(r.status, "dead", "finished with a dead letter");
    assert_eq!(r.deliveries[1].status, "delivered");
    // A completion for a dead letter changes nothing.
    done(&q, &first, ok()).await;
    assert_eq!(record(&q, &id).await.deliveries[0].status, "dead");
}

async fn ttl_expiry_turns_queued_events_into_expired(b: Backend) {
    let q = open(b).await;
    let mut short = event_for("acme", "short");
    short.ttl_ms = 200;
    let mut long = event_for("acme", "long");
    long.ttl_ms = 60_000;
    let out = put_with(&q, "acme", WIDE, 2, vec![short, long]).await;
    let (short_id, long_id) = (stored(&out[0]), stored(&out[1]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = claim(&q).await;
    assert_eq!(names(&items), ["long"]);
    let r = record(&q, &short_id).await;
    assert_eq!(r.status, "expired");
    assert_eq!(
        r.deliveries[0].last_error.as_deref(),
        Some("time to live passed before delivery")
    );
    assert_eq!(r.deliveries[0].attempts, 0);
    // The expired call no longer counts against the depth cap.
    let out = put_with(&q, "acme", WIDE, 2, vec![event_for("acme", "more")]).await;
    stored(&out[0]);
    done(&q, &items[0], ok()).await;
    assert_eq!(record(&q, &long_id).await.status, "delivered");
}

async fn idempotency_dup_and_mismatch(b: Backend) {
    let q = open(b).await;
    let keyed = |fp: &str, account: &str| {
        let mut e = event_for(account, "k");
        e.agents = vec![Some(1), Some(2)];
        e.idempotency = Some(("key-1".into(), fp.into()));
        e
    };
    let out = put_with(&q, "acme", WIDE, 100, vec![keyed("fp-a", "acme")]).await;
    let first = stored(&out[0]);
    let out = put_with(&q, "acme", WIDE, 100, vec![keyed("fp-a", "acme")]).await;
    assert_eq!(
        out[0],
        EnqueueOutcome::Duplicate {
            id: first.to_string(),
            deliveries: 2
        }
    );
    let out = put_with(&q, "acme", WIDE, 100, vec![keyed("fp-b", "acme")]).await;
    assert_eq!(out[0], EnqueueOutcome::IdempotencyMismatch);
    // Keys are per account.
    let out = put_with(&q, "globex", WIDE, 100, vec![keyed("fp-b", "globex")]).await;
    stored(&out[0]);
    // Within one batch too.
    let out = put_with(
        &q,
        "initech",
        WIDE,
        100,
        vec![keyed("fp-a", "initech"), keyed("fp-a", "initech")],
    )
    .await;
    let id = stored(&out[0]);
    assert_eq!(
        out[1],
        EnqueueOutcome::Duplicate {
            id: id.to_string(),
            deliveries: 2
        }
    );
    let mut acme_calls = 0;
    for _ in 0..4 {
        for c in claim(&q).await {
            acme_calls += usize::from(c.account == "acme");
            done(&q, &c, ok()).await;
        }
    }
    assert_eq!(acme_calls, 2, "stored once");
}

async fn depth_cap_answers_queue_full(b: Backend) {
    let q = open(b).await;
    let with_agents = |n: u64| {
        let mut e = event_for("acme", "d");
        e.agents = (1..=n).map(Some).collect();
        e
    };
    let out = put_with(&q, "acme", WIDE, 3, vec![with_agents(2), with_agents(2)]).await;
    stored(&out[0]);
    assert_eq!(out[1], EnqueueOutcome::QueueFull);
    let out = put_with(&q, "acme", WIDE, 3, vec![with_agents(1), with_agents(1)]).await;
    stored(&out[0]);
    assert_eq!(out[1], EnqueueOutcome::QueueFull);
    // Delivering one frees one place.
    let c = claim(&q).await.remove(0);
    done(&q, &c, ok()).await;
    let out = put_with(&q, "acme", WIDE, 3, vec![with_agents(1)]).await;
    stored(&out[0]);
    // Other accounts have their own depth.
    let out = put_with(&q, "globex", WIDE, 3, vec![event_for("globex", "g")]).await;
    stored(&out[0]);
}

async fn event_records_follow_the_lifecycle(b: Backend) {
    let q = open(b).await;
    assert!(q
        .event(&EventId::new(partition_of("acme", PARTITIONS)))
        .await
        .unwrap()
        .is_none());
    let mut e = event_for("acme", "life");
    e.agents = vec![Some(7), None];
    let out = put_with(&q, "acme", WIDE, 100, vec![e]).await;
    let id = stored(&out[0]);
    let r = record(&q, &id).await;
    assert_eq!(r.id, id.to_string());
    assert_eq!(r.account, "acme");
    assert_eq!(r.status, "queued");
    assert!(r.created_at.ends_with('Z') && r.created_at.len() == 24);
    assert_eq!(r.deliveries.len(), 2);
    assert_eq!(r.deliveries[0].agent_id, Some(7));
    assert_eq!(r.deliveries[1].agent_id, None);
    assert_eq!(r.deliveries[0].attempts, 0);
    assert!(r.deliveries[0].last_status.is_none() && r.deliveries[0].delivered_at.is_none());

    let c = claim(&q).await.remove(0);
    assert!(c.body.ends_with(b",\"agent_id\":7}"));
    assert_eq!(c.attempts, 1);
    assert_eq!(record(&q, &id).await.status, "delivering");
    done(
        &q,
        &c,
        Outcome::Retry {
            delay: Duration::ZERO,
            status: None,
            error: "connect error".into(),
        },
    )
    .await;
    let r = record(&q, &id).await;
    assert_eq!(r.deliveries[0].status, "retrying");
    assert_eq!(r.deliveries[0].last_status, None);
    assert_eq!(r.status, "retrying");

    let mut seen = Vec::new();
    for _ in 0..3 {
        for c in claim(&q).await {
            seen.push(c.body.clone());
            done(&q, &c, Outcome::Delivered { status: 200 }).await;
        }
    }
    assert_eq!(seen.len(), 2, "both calls delivered once more");
    let r = record(&q, &id).await;
    assert_eq!(r.status, "delivered");
    for d in &r.deliveries {
        assert_eq!(d.status, "delivered");
        assert_eq!(d.last_status, Some(200));
        assert_eq!(d.last_error, None);
        assert!(d.delivered_at.as_deref().is_some_and(|t| t.ends_with('Z')));
    }
    assert_eq!(r.deliveries[0].attempts, 2);
    assert_eq!(r.deliveries[1].attempts, 1);
    // A record of another partition's id or a foreign id is simply absent.
    assert!(q
        .event(&EventId::new(PARTITIONS + 5))
        .await
        .unwrap()
        .is_none());
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::Redis).await
                }
            )*
        }
    };
}

conformance!(
    fifo_and_priority_with_one_delivery_in_flight,
    rolling_window_limit_is_never_exceeded_and_rescored,
    fairness_across_accounts,
    expired_lease_is_requeued_at_the_front_and_stale_completion_ignored,
    late_success_removes_the_delivery_everywhere,
    retry_waits_its_delay_while_later_events_go,
    rate_limited_pauses_the_account_without_counting,
    auth_failed_pauses_the_account_and_keeps_events,
    released_goes_back_to_the_front_uncounted,
    dead_letters_keep_status_and_error,
    ttl_expiry_turns_queued_events_into_expired,
    idempotency_dup_and_mismatch,
    depth_cap_answers_queue_full,
    event_records_follow_the_lifecycle,
);

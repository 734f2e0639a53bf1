//! One conformance suite for every queue backend: the same scenarios on Redis and on the
//! embedded store, which run the same Lua scripts.
//!
//! Each scenario is written once as an `async fn(Backend)` and instantiated by
//! `conformance!` for the in-memory queue and for a real `redis-server` of its own. Both are
//! built through `app::queue_for`, the function the gateway uses. The Redis backend reads
//! the clock with Redis `TIME`, so timing scenarios use short real windows (300-500 ms) and
//! assert bounds that hold whatever the scheduling delays; long timings (60 s windows,
//! 30 s pauses, retention) run the same scripts on the embedded store with tokio's paused
//! clock in `src/queue/memory.rs`. `differential.rs` compares the two backends' replies and
//! keyspaces step by step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId, NotifyPayload, Priority};
use zenrelay::queue::{
    rfc3339_ms, AccountStats, Claimed, Completion, DeadLetterResult, DeadLetterSelection,
    DeadReason, EnqueueBatch, EnqueueOutcome, EventRecord, Freed, NewEvent, Outcome, Queue,
    RateLimit,
};

use crate::support::{stored, RedisServer};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
    /// The shared Redis Cluster of three masters.
    Cluster,
}

/// A queue under test; owns its Redis server, if any.
struct Fixture {
    q: Arc<dyn Queue>,
    /// The backend's own Redis server, when it has one (the cluster's is shared).
    redis: Option<RedisServer>,
}

impl std::ops::Deref for Fixture {
    type Target = dyn Queue;
    fn deref(&self) -> &Self::Target {
        self.q.as_ref()
    }
}

const PARTITIONS: u16 = 2;
/// Lease of every scenario: long enough that no scheduling stall ends one early, short
/// enough for the lease-expiry scenarios to wait out.
const LEASE_MS: u64 = 1000;

/// A roomy limit for scenarios that are not about the limit.
const WIDE: RateLimit = RateLimit {
    limit: 1000,
    window_ms: 60_000,
};

/// A queue that leases one call of an account at a time: most scenarios follow one
/// delivery through the protocol. Lease groups have scenarios of their own
/// ([`open_grouped`]).
async fn open(backend: Backend) -> Fixture {
    open_with(backend, 1).await
}

/// A queue that leases up to [`GROUP`] calls of an account together (the default).
async fn open_grouped(backend: Backend) -> Fixture {
    open_with(backend, GROUP).await
}

/// The lease groups' size in the scenarios about them: the default.
const GROUP: u32 = 8;

async fn open_with(backend: Backend, group_max: u32) -> Fixture {
    let mut config = Config::default();
    assert_eq!(config.delivery.lease_group_max, GROUP);
    config.delivery.lease_group_max = group_max;
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
        Backend::Cluster => {
            config.redis.cluster_nodes = crate::support::shared_cluster()
                .into_iter()
                .map(Into::into)
                .collect();
            config.redis.key_prefix = format!("conformance-{}", uuid::Uuid::now_v7().simple());
            None
        }
    };
    let q = zenrelay::app::queue_for(&config).expect("queue builds");
    q.ping().await.expect("queue answers");
    Fixture { q, redis }
}

fn event_for(account: &str, name: &str) -> NewEvent {
    crate::support::plain_event(EventId::new(partition_of(account, PARTITIONS)), name)
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
                    // (the window plus the millisecond that rounding takes)
                    assert!(
                        wait <= window + Duration::from_millis(1),
                        "re-scored too far: {wait:?}"
                    );
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

/// A completion that leaves its account's window full puts the account back in the ready
/// set at the moment the window has room, so that no claim visits it before only to find
/// the window full.
async fn a_full_window_puts_the_account_back_at_its_next_send(b: Backend) {
    let q = open(b).await;
    let window = 60_000;
    let limit = RateLimit {
        limit: 1,
        window_ms: window,
    };
    put(&q, "acme", limit, &["a", "b"]).await;
    let a = claim(&q).await.remove(0);
    let before = storage_now(&q).await;
    let recorded = q.complete_each(&[Completion::of(&a, ok())]).await;
    let after = storage_now(&q).await;
    // The send counts from its answer, and the window's margin is 0 here: one more
    // millisecond covers the rounding down of the times.
    let next = stats_for(&q, "acme")
        .await
        .next_send_ms
        .expect("b waits for the window");
    assert!(
        next > before + window && next <= after + window + 1,
        "next send {next} for an answer between {before} and {after}"
    );
    // The worker is told how long that is from the answer.
    let [Ok(Freed::After(told))] = recorded[..] else {
        panic!("the worker is told when acme may send: {recorded:?}");
    };
    let told = told.as_millis() as u64;
    assert!(
        next - after <= told && told <= next - before,
        "told {told} ms for a next send at {next}, answered between {before} and {after}"
    );
    let (items, wait) = claim_max(&q, 10).await;
    assert!(items.is_empty(), "the window is full");
    let wait = wait.expect("b is due later");
    assert!(
        wait > Duration::from_millis(window - 1_000),
        "nothing is due before the window has room: {wait:?}"
    );
}

/// A claim that took all that was due in its partition says when more will be (so its
/// worker need not claim the partition before then); one that left due work says nothing.
/// An outcome that leaves its account free to send tells the worker so.
async fn a_claim_says_when_more_is_due_only_once_it_took_all_that_was_due(b: Backend) {
    let q = open(b).await;
    let p = partition_of("acme", PARTITIONS);
    let other = (0..)
        .map(|i| format!("acct{i}"))
        .find(|a| partition_of(a, PARTITIONS) == p)
        .expect("an account in acme's partition");
    put(&q, "acme", WIDE, &["a1", "a2"]).await;
    put(&q, &other, WIDE, &["b"]).await;
    let first = q.claim(p, 1).await.expect("claim");
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.next_due, None, "another account is still due");
    let second = q.claim(p, 2).await.expect("claim");
    assert_eq!(
        second.items.len(),
        1,
        "the other account, the first being in flight"
    );
    let wait = second.next_due.expect("all that was due was taken");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(LEASE_MS),
        "more is due when a lease ends: {wait:?}"
    );
    let acme = if first.items[0].account == "acme" {
        &first.items[0]
    } else {
        &second.items[0]
    };
    let recorded = q.complete_each(&[Completion::of(acme, ok())]).await;
    assert!(
        matches!(recorded[..], [Ok(Freed::Now)]),
        "acme's window has room for its next event: {recorded:?}"
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

/// A name starting with `prefix` whose account is in the partition of `account`.
fn sharing_a_partition_with(account: &str, prefix: &str) -> String {
    let p = partition_of(account, PARTITIONS);
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| partition_of(n, PARTITIONS) == p)
        .expect("some name shares the partition")
}

/// Two account names in the same partition.
fn same_partition_pair() -> (String, String) {
    let first = "acct-a".to_string();
    let second = sharing_a_partition_with(&first, "acct-b");
    (first, second)
}

/// Claims the first call due, lets its holder go silent until its lease runs out, and
/// claims the same call again (within 2 s), as another worker would: the first lease, then
/// the second.
async fn claimed_twice(q: &Fixture) -> (Claimed, Claimed) {
    let first = claim(q).await.remove(0);
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 50)).await;
    let second = claim_within(q, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        second.delivery_id, first.delivery_id,
        "the same call, again"
    );
    (first, second)
}

async fn expired_lease_is_requeued_at_the_front_and_stale_completion_ignored(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["first", "second"]).await;
    // The holder goes silent; after the lease the same delivery comes back first.
    let (held, again) = claimed_twice(&q).await;
    assert_eq!(name(&held), "first");
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

/// A delivered event of one call is kept as its summary, which every later reader reads
/// as the event: its holder's completion done again (as after a failure part-way), a late
/// one of the lease before, and a replay of it change nothing, and its record stays.
async fn a_delivered_events_summary_is_read_as_the_event(b: Backend) {
    let q = open(b).await;
    let x = put(&q, "acme", WIDE, &["x"]).await.remove(0);
    let (first, second) = claimed_twice(&q).await;
    done(&q, &second, ok()).await;
    let before = record(&q, &x).await;
    let call = &before.deliveries[0];
    assert_eq!(
        (before.status.as_str(), call.attempts, call.last_status),
        ("delivered", 2, Some(200))
    );
    assert!(call.delivered_at.is_some());
    done(&q, &second, ok()).await;
    done(&q, &first, ok()).await;
    let replayed = q
        .replay("acme", &ids(&[&did(&x, 0)]), Duration::from_secs(60))
        .await
        .expect("replay");
    assert_eq!(replayed.count, 0, "not a dead letter");
    let after = record(&q, &x).await;
    assert_eq!(
        serde_json::to_value(&after).unwrap(),
        serde_json::to_value(&before).unwrap()
    );
    assert!(claim(&q).await.is_empty(), "nothing is sent again");
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.in_flight, s.delivered, s.depth), (0, 1, 0));
}

/// An event of one call is stored in its first form (its time to live, agent and body in
/// one field) until its first write, which writes them out as its fields: the record, the
/// retry's claim, the dead letter, the replay's claim and the expiry read the same agent,
/// body, attempts and time to live as the first claim did, whichever of a time to live
/// and an agent the event has.
async fn an_events_first_write_keeps_what_its_first_form_held(b: Backend) {
    let q = open(b).await;
    let payload = || NotifyPayload::new(7, "x", Some("{\"ticket\":12}"));
    let failed = || Outcome::Retry {
        delay: Duration::ZERO,
        status: Some(500),
        error: "down".into(),
    };
    for (agent, ttl_ms) in [
        (Some(534), 600_000),
        (None, 600_000),
        (None, 0),
        (Some(534), 0),
    ] {
        let mut event = event_for("acme", "x");
        event.payload = payload();
        event.agents = vec![agent];
        event.ttl_ms = ttl_ms;
        let x = stored(&put_with(&q, "acme", WIDE, 100, vec![event]).await[0]);
        let first = claim(&q).await.remove(0);
        let exact: serde_json::Value =
            serde_json::from_slice(&payload().upstream_bytes(agent)).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&first.body).expect("JSON body");
        assert_eq!(
            (sent, first.attempts),
            (exact.clone(), 1),
            "{agent:?} {ttl_ms}"
        );
        assert_eq!(record(&q, &x).await.deliveries[0].agent_id, agent);

        // its first write: a failure, retried at once
        done(&q, &first, failed()).await;
        let call = record(&q, &x).await.deliveries.remove(0);
        assert_eq!(
            (call.agent_id, call.status.as_str(), call.attempts),
            (agent, "retrying", 1)
        );
        let second = claim_within(&q, Duration::from_secs(2))
            .await
            .expect("the retry");
        assert_eq!(second.delivery_id, first.delivery_id);
        assert_eq!((&second.body, second.attempts), (&first.body, 2));
        if agent.is_none() || ttl_ms == 0 {
            done(&q, &second, ok()).await;
            continue;
        }

        done(&q, &second, dead("rejected", Some(400), "no")).await;
        let page = q.dead_letters("acme", 0, 10).await.unwrap();
        assert_eq!(page.total, 1);
        assert_eq!((&page.items[0].event, page.items[0].attempts), (&exact, 2));
        let replayed = q
            .replay("acme", &ids(&[&did(&x, 0)]), Duration::from_secs(60))
            .await
            .expect("replay");
        assert_eq!(replayed.count, 1);
        let third = claim_within(&q, Duration::from_secs(2))
            .await
            .expect("the replay");
        assert_eq!((&third.body, third.attempts), (&first.body, 1));
        done(&q, &third, ok()).await;
        let call = record(&q, &x).await.deliveries.remove(0);
        assert_eq!(
            (call.agent_id, call.status.as_str(), call.attempts),
            (agent, "delivered", 1)
        );
    }

    // The time to live, written out at the first write, still expires the event.
    let mut event = event_for("acme", "short");
    event.ttl_ms = 300;
    let short = stored(&put_with(&q, "acme", WIDE, 100, vec![event]).await[0]);
    let first = claim(&q).await.remove(0);
    assert_eq!(first.delivery_id, did(&short, 0));
    let later = Outcome::Retry {
        delay: Duration::from_millis(500),
        status: Some(500),
        error: "down".into(),
    };
    done(&q, &first, later).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(claim(&q).await.is_empty(), "expired on the way");
    assert_eq!(record(&q, &short).await.status.as_str(), "expired");
}

async fn late_success_removes_the_delivery_everywhere(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    // Lost lease, re-claimed by another worker, then the first worker's success arrives.
    let (held, again) = claimed_twice(&q).await;
    done(&q, &held, ok()).await;
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
    // The new lease's holder still holds the account: nothing else of it is claimed, even
    // when the late success is recorded again (as a completion retried after its call
    // failed part-way would be) ...
    let more = put(&q, "acme", WIDE, &["x2"]).await;
    done(&q, &held, ok()).await;
    assert!(claim(&q).await.is_empty(), "one call in flight per account");
    let s = stats_for(&q, "acme").await;
    assert_eq!(
        (s.in_flight, s.delivered),
        (1, 0),
        "still held, the success left for the holder to count"
    );
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
    // ... until its own completion, stale now, frees it and counts the success once.
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.in_flight, s.delivered), (0, 1), "counted once, freed");
    let next = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert_eq!(next.delivery_id, format!("{}:0", more[0]));
    done(&q, &next, ok()).await;
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

    // The new holder's retry and the old holder's success, recorded by one call in that
    // order: the success still removes the retry.
    let ids = put(&q, "acme", WIDE, &["w"]).await;
    let (old, new) = claimed_twice(&q).await;
    let retry = Outcome::Retry {
        delay: Duration::from_secs(60),
        status: Some(503),
        error: "flaky".into(),
    };
    q.complete(&[Completion::of(&new, retry), Completion::of(&old, ok())])
        .await
        .expect("complete");
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.scheduled_retries, s.depth, s.in_flight), (0, 0, 0));

    // The new holder's 429 after the old holder's success: the call is done, yet upstream
    // answered 429, so the account pauses.
    put(&q, "acme", WIDE, &["v"]).await;
    let (old, new) = claimed_twice(&q).await;
    done(&q, &old, ok()).await;
    let before = stats_for(&q, "acme").await.upstream_429;
    let pause = Duration::from_millis(400);
    done(&q, &new, Outcome::RateLimited { retry_after: pause }).await;
    let started = Instant::now();
    put(&q, "acme", WIDE, &["v2"]).await;
    assert_eq!(stats_for(&q, "acme").await.upstream_429, before + 1);
    let next = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert!(
        started.elapsed() >= pause - Duration::from_millis(50),
        "not paused"
    );
    assert_eq!(name(&next), "v2");
}

async fn retry_waits_its_delay_while_later_events_go(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["a", "b"]).await;
    let a = claim(&q).await.remove(0);
    // Before the retry is recorded: its delay counts from the recording.
    let started = Instant::now();
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

/// Claims the next call (within 2 s), checks the attempts its claim saw (`at`, after the
/// claim's time in [`Claimed::seen`]) and its attempt, reports its success, and checks the
/// event's record: delivered, with those attempts, the success's status and no error.
async fn succeed_next(q: &Fixture, id: &EventId, seen_at: &str, attempts: u32) {
    let c = claim_within(q, Duration::from_secs(2)).await.unwrap();
    assert_eq!((c.seen.get(13..), c.attempts), (Some(seen_at), attempts));
    done(q, &c, ok()).await;
    let r = record(q, id).await;
    let call = &r.deliveries[0];
    assert_eq!(
        (r.status.as_str(), call.attempts, call.last_status),
        ("delivered", attempts, Some(200))
    );
    assert_eq!(call.last_error, None);
}

/// A late success while another process holds the call's lease is counted by that holder;
/// when the holder dies too, the reaper that frees the account counts it, once.
async fn a_late_success_is_counted_once_when_its_holder_dies_too(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    let (first, second) = claimed_twice(&q).await;
    done(&q, &first, ok()).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.in_flight, s.delivered), (1, 0));
    // the second holder never answers: its lease ends and a claim reaps it
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 50)).await;
    assert!(
        claim(&q).await.is_empty(),
        "a delivered call is not sent again"
    );
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.in_flight, s.delivered, s.depth), (0, 1, 0));
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
    // the dead holder's answer, should it come after all, counts nothing more
    done(&q, &second, ok()).await;
    assert_eq!(stats_for(&q, "acme").await.delivered, 1);
}

/// A success of an event's only call is recorded from what its claim saw, without the
/// completion reading the event: the same record as the completion that reads it, after a
/// first attempt, a retry, a 429 and a replay alike.
async fn a_single_call_success_is_recorded_from_its_claim(b: Backend) {
    let q = open(b).await;
    let retry = |error: &str| Outcome::Retry {
        delay: Duration::ZERO,
        status: Some(500),
        error: error.into(),
    };
    // first attempts, with what the claim saw handed back and without it
    let ids = put(&q, "acme", WIDE, &["a"]).await;
    let a = claim(&q).await.remove(0);
    assert_eq!(a.seen.get(13..), Some("-"), "a single call never attempted");
    done(&q, &a, ok()).await;
    let mut e = event_for("acme", "pair");
    e.agents = vec![Some(7), Some(8)];
    let pair = stored(&put_with(&q, "acme", WIDE, 100, vec![e]).await[0]);
    let p = claim(&q).await.remove(0);
    assert_eq!(
        p.seen, "",
        "an event of two calls is read at its completion"
    );
    done(&q, &p, ok()).await;
    done(&q, &claim(&q).await.remove(0), ok()).await;
    let ids_b = put(&q, "acme", WIDE, &["b"]).await;
    let b_claim = claim(&q).await.remove(0);
    let blind = Completion {
        seen: String::new(),
        ..Completion::of(&b_claim, ok())
    };
    q.complete(&[blind]).await.expect("complete");
    for id in [&ids[0], &ids_b[0], &pair] {
        let r = record(&q, id).await;
        assert_eq!(r.status, "delivered");
        for d in &r.deliveries {
            assert_eq!(
                (d.status.as_str(), d.attempts, d.last_status),
                ("delivered", 1, Some(200))
            );
            assert_eq!(d.last_error, None);
            assert!(d.delivered_at.is_some());
        }
    }
    // after a retry, a 429 and a replay: the attempts they left, and no error
    let ids = put(&q, "acme", WIDE, &["c"]).await;
    done(&q, &claim(&q).await.remove(0), retry("boom")).await;
    succeed_next(&q, &ids[0], "1", 2).await;
    let ids = put(&q, "acme", WIDE, &["d"]).await;
    let pause = Duration::from_millis(100);
    let rate_limited = Outcome::RateLimited { retry_after: pause };
    done(&q, &claim(&q).await.remove(0), rate_limited).await;
    succeed_next(&q, &ids[0], "0", 1).await;
    let ids = put(&q, "acme", WIDE, &["e"]).await;
    let rejected = dead("rejected", Some(400), "bad");
    done(&q, &claim(&q).await.remove(0), rejected).await;
    let replayed = q
        .replay("acme", &DeadLetterSelection::All, Duration::from_secs(60))
        .await
        .expect("replay");
    assert_eq!(replayed.count, 1);
    succeed_next(&q, &ids[0], "0", 1).await;
    // a call to one agent, after a retry: its claim hands the agent back, and the event's
    // record (its summary) keeps it
    let mut e = event_for("acme", "agent");
    e.agents = vec![Some(5)];
    let agent = stored(&put_with(&q, "acme", WIDE, 100, vec![e]).await[0]);
    let first = claim(&q).await.remove(0);
    assert_eq!(first.seen.get(13..), Some("- 5"));
    done(&q, &first, retry("boom")).await;
    succeed_next(&q, &agent, "1 5", 2).await;
    assert_eq!(record(&q, &agent).await.deliveries[0].agent_id, Some(5));
    assert_eq!(stats_for(&q, "acme").await.delivered, 8);
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
    let (items, _) = claim_max(&q, 10).await;
    assert_eq!(names(&items), ["g2"], "only the 429'd account pauses");
    done(&q, &items[0], ok()).await;
    let (none, due) = claim_max(&q, 10).await;
    assert!(none.is_empty(), "the 429'd account is paused");
    assert!(due.is_some(), "the paused account is due later");
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
            reason: DeadReason::Rejected,
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

/// An enqueue call sends most events in a short form that leaves out what they share
/// with the call (normal priority, the call's time to live, one call to every agent), and
/// an account's limit only when it differs from the call's: events of every form, and an
/// account of another limit, stored together keep what each was sent with.
async fn every_form_of_an_enqueue_call_keeps_what_it_was_sent_with(b: Backend) {
    let q = open(b).await;
    let ev = |name: &str, ttl_ms: u64| {
        let mut e = event_for("acme", name);
        e.ttl_ms = ttl_ms;
        e
    };
    let keyed = |mut e: NewEvent, key: &str| {
        e.idempotency = Some((key.into(), format!("fp-{key}")));
        e
    };
    // the first event's time to live (1 ms) is the call's: the short forms take it
    let short = ev("short", 1);
    let short_keyed = keyed(ev("short-keyed", 1), "k1");
    let mut high = ev("high", 0);
    high.priority = Priority::High;
    let long_ttl = ev("long-ttl", 60_000);
    let mut agents = keyed(ev("agents", 0), "k2");
    agents.agents = vec![Some(1), Some(2)];
    let mut agent = ev("agent", 0);
    agent.agents = vec![Some(5)];
    let acme_events = vec![short, short_keyed, high, long_ttl, agents, agent];
    let narrow = RateLimit {
        limit: 2,
        window_ms: 50_000,
    };
    // (the three accounts share a partition, so that on every backend two of them can
    // share a call)
    let globex = sharing_a_partition_with("acme", "globex");
    let initech = sharing_a_partition_with("acme", "initech");
    let globex_events = ["g1", "g2", "g3"]
        .iter()
        .map(|n| event_for(&globex, n))
        .collect();
    // The first request goes alone; the two that wait for it share the next call (on a
    // Redis server, counted below).
    let calls_before = q.redis.as_ref().map(|r| r.command_successes("fcall"));
    let (_, acme, other) = tokio::join!(
        put_with(&q, &initech, WIDE, 100, vec![event_for(&initech, "i")]),
        put_with(&q, "acme", WIDE, 100, acme_events),
        put_with(&q, &globex, narrow, 100, globex_events),
    );
    if let (Some(redis), Some(before)) = (&q.redis, calls_before) {
        assert_eq!(
            redis.command_successes("fcall") - before,
            2,
            "two enqueue calls"
        );
    }
    let acme: Vec<EventId> = acme.iter().map(stored).collect();
    other.iter().for_each(|o| drop(stored(o)));
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut acme_calls = Vec::new();
    let mut globex_calls = 0;
    for _ in 0..10 {
        for c in claim(&q).await {
            if c.account == "acme" {
                acme_calls.push(c.clone());
            } else if c.account == globex {
                globex_calls += 1;
            }
            done(&q, &c, ok()).await;
        }
    }
    // priority first, the short ones expired with the call's time to live, then in order
    let order: Vec<String> = acme_calls.iter().map(name).collect();
    assert_eq!(order, ["high", "long-ttl", "agents", "agents", "agent"]);
    assert!(acme_calls[2].body.ends_with(b",\"agent_id\":1}"));
    assert!(acme_calls[3].body.ends_with(b",\"agent_id\":2}"));
    assert!(acme_calls[4].body.ends_with(b",\"agent_id\":5}"));
    assert!(!acme_calls[0].body.windows(8).any(|w| w == b"agent_id"));
    for (i, status) in ["expired", "expired", "delivered", "delivered", "delivered"]
        .iter()
        .enumerate()
    {
        assert_eq!(record(&q, &acme[i]).await.status, *status, "event {i}");
    }
    // the keys were stored with their events
    let again = put_with(
        &q,
        "acme",
        WIDE,
        100,
        vec![keyed(ev("short-keyed", 1), "k1")],
    )
    .await;
    assert_eq!(
        again[0],
        EnqueueOutcome::Duplicate {
            id: acme[1].to_string(),
            deliveries: 1
        }
    );
    let mut twice = keyed(ev("agents", 0), "k2");
    twice.agents = vec![Some(1), Some(2)];
    let again = put_with(&q, "acme", WIDE, 100, vec![twice]).await;
    assert_eq!(
        again[0],
        EnqueueOutcome::Duplicate {
            id: acme[4].to_string(),
            deliveries: 2
        }
    );
    // globex kept its own limit and window: two calls in its window, which the next
    // opens 50 s after the first
    assert_eq!(globex_calls, 2);
    let next = stats_for(&q, &globex).await.next_send_ms;
    let now = storage_now(&q).await;
    assert!(
        next.is_some_and(|at| at > now + 40_000 && at <= now + 50_001),
        "{next:?} against {now}"
    );
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

/// Stores single events of `account` one call at a time under the depth cap `cap` until
/// one is refused (at most `most`): how many were stored.
async fn put_until_full(q: &Fixture, account: &str, cap: u64, most: usize) -> usize {
    for n in 0..most {
        let out = put_with(q, account, WIDE, cap, vec![event_for(account, "f")]).await;
        match &out[0] {
            EnqueueOutcome::Stored { .. } => {}
            EnqueueOutcome::QueueFull => return n,
            other => panic!("{other:?}"),
        }
    }
    most
}

/// An enqueue checks the cap against a bound on the account's depth kept in its record,
/// which enqueues raise and deliveries leave as it is, and counts the depth only when the
/// bound would refuse an event (with a cap of 100, a bound of one digit stands for 9): the
/// cap still holds exactly once deliveries have left the bound above the depth, and after
/// a replay raised the depth far past a bound that had just been counted down to it.
async fn the_depth_cap_holds_exactly_whatever_its_bound_says(b: Backend) {
    let q = open(b).await;
    let cap = 100;
    let names: Vec<String> = (0..95).map(|i| format!("e{i}")).collect();
    let events = names.iter().map(|n| event_for("acme", n)).collect();
    let out = put_with(&q, "acme", WIDE, cap, events).await;
    let first: Vec<EventId> = out.iter().map(stored).collect();
    // All 95 become dead letters: the depth is 0, its bound still 95.
    for _ in 0..95 {
        let c = claim(&q).await.remove(0);
        done(&q, &c, dead("rejected", Some(400), "no")).await;
    }
    assert_eq!(stats_for(&q, "acme").await.depth, 0);
    // One more is stored (the depth counted: 0, its bound now 1).
    assert_eq!(put_until_full(&q, "acme", cap, 1).await, 1);
    // The replay takes the depth to 96, past what the bound said.
    let letters: Vec<String> = first.iter().map(|id| did(id, 0)).collect();
    let result = q
        .replay(
            "acme",
            &ids(&letters.iter().collect::<Vec<_>>()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(result.count, 95);
    assert_eq!(stats_for(&q, "acme").await.depth, 96);
    assert_eq!(
        put_until_full(&q, "acme", cap, 20).await,
        4,
        "the cap of 100 holds"
    );
    assert_eq!(stats_for(&q, "acme").await.depth, 100);
    // Every call delivered: the bound stays at 100, the cap admits 100 again (the first
    // nine on the bound alone, once it was counted down to 1).
    for _ in 0..100 {
        let c = claim(&q).await.remove(0);
        done(&q, &c, ok()).await;
    }
    assert_eq!(stats_for(&q, "acme").await.depth, 0);
    assert_eq!(put_until_full(&q, "acme", cap, 120).await, 100);
    // With a few delivered, the bound (100) is above the depth (95), and counted again:
    // the cap admits 5.
    for _ in 0..5 {
        let c = claim(&q).await.remove(0);
        done(&q, &c, ok()).await;
    }
    assert_eq!(put_until_full(&q, "acme", cap, 20).await, 5);
    // A call of several events for an account whose bound leaves room stores them all.
    for _ in 0..100 {
        let c = claim(&q).await.remove(0);
        done(&q, &c, ok()).await;
    }
    assert_eq!(put_until_full(&q, "acme", cap, 1).await, 1);
    let events = (0..99)
        .map(|i| event_for("acme", &format!("m{i}")))
        .collect();
    let out = put_with(&q, "acme", WIDE, cap, events).await;
    assert!(out
        .iter()
        .all(|o| matches!(o, EnqueueOutcome::Stored { .. })));
    assert_eq!(put_until_full(&q, "acme", cap, 1).await, 0);
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

// ---------------------------------------------------------------------------------------
// Operator operations
// ---------------------------------------------------------------------------------------

/// The stats of `account`, if the storage knows it.
async fn stats_of(q: &Fixture, account: &str) -> Option<AccountStats> {
    let stats = q.stats().await.expect("stats");
    stats.accounts.into_iter().find(|a| a.account == account)
}

async fn stats_for(q: &Fixture, account: &str) -> AccountStats {
    stats_of(q, account)
        .await
        .unwrap_or_else(|| panic!("{account} is listed"))
}

/// The storage's clock (Unix ms), as stats reports it.
async fn storage_now(q: &Fixture) -> u64 {
    q.stats().await.expect("stats").now_ms
}

fn did(id: &EventId, k: usize) -> String {
    format!("{id}:{k}")
}

fn ids(dids: &[&String]) -> DeadLetterSelection {
    DeadLetterSelection::Ids(dids.iter().map(|d| d.to_string()).collect())
}

fn dead(reason: &str, status: Option<u16>, error: &str) -> Outcome {
    Outcome::Dead {
        reason: DeadReason::parse(reason).expect("a dead-letter reason"),
        status,
        error: error.into(),
    }
}

/// A well-formed delivery id of `account`'s partition that no event has.
fn unknown_did(account: &str) -> String {
    format!("{}:0", EventId::new(partition_of(account, PARTITIONS)))
}

/// Whether an event was created at `ms` (Unix ms), as its record shows.
async fn created_ms_matches(q: &Fixture, id: &EventId, ms: u64) -> bool {
    record(q, id).await.created_at == rfc3339_ms(ms)
}

async fn stats_counters_follow_the_lifecycle(b: Backend) {
    let q = open(b).await;
    let stats = q.stats().await.unwrap();
    assert!(stats.accounts.is_empty(), "{:?}", stats.accounts);
    assert!(stats.now_ms > 1_600_000_000_000, "a Unix time in ms");

    let limit = RateLimit {
        limit: 10,
        window_ms: 60_000,
    };
    let before = storage_now(&q).await;
    let ids = put(&q, "acme", limit, &["a", "b", "c"]).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!(
        (s.depth, s.in_flight, s.scheduled_retries, s.dead),
        (3, 0, 0, 0)
    );
    assert_eq!((s.delivered, s.upstream_429, s.sent_in_window), (0, 0, 0));
    assert!(!s.paused && !s.auth_failed);
    let oldest = s.oldest_ms.expect("queued work has an oldest event");
    assert!(oldest >= before);
    assert!(created_ms_matches(&q, &ids[0], oldest).await);
    assert!(s.next_send_ms.is_some(), "queued and free to send");

    // In flight: counted in depth, no next send while it is out.
    let a = claim(&q).await.remove(0);
    assert_eq!(name(&a), "a");
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.in_flight, s.sent_in_window), (3, 1, 1));
    assert_eq!(
        s.oldest_ms,
        Some(oldest),
        "the call in flight is the oldest"
    );
    assert_eq!(s.next_send_ms, None, "one call in flight per account");

    // A scheduled retry: still in depth, no longer the oldest waiting.
    done(
        &q,
        &a,
        Outcome::Retry {
            delay: Duration::from_secs(60),
            status: Some(503),
            error: "unavailable".into(),
        },
    )
    .await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.in_flight, s.scheduled_retries), (3, 0, 1));
    let oldest_b = s.oldest_ms.expect("b waits");
    assert!(created_ms_matches(&q, &ids[1], oldest_b).await);
    assert!(s.next_send_ms.is_some());

    // Delivered.
    let b_call = claim(&q).await.remove(0);
    assert_eq!(name(&b_call), "b");
    done(&q, &b_call, ok()).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.delivered, s.sent_in_window), (2, 1, 2));

    // An upstream 429: counted, and the next send waits for the pause.
    let c = claim(&q).await.remove(0);
    assert_eq!(name(&c), "c");
    let before_429 = storage_now(&q).await;
    done(
        &q,
        &c,
        Outcome::RateLimited {
            retry_after: Duration::from_millis(300),
        },
    )
    .await;
    let s = q.stats().await.unwrap();
    let a_stats = s.accounts.iter().find(|a| a.account == "acme").unwrap();
    assert_eq!((a_stats.depth, a_stats.upstream_429), (2, 1));
    assert_eq!(a_stats.in_flight, 0);
    let next = a_stats.next_send_ms.expect("c waits for the pause");
    assert!(
        next >= before_429 + 300 && next <= s.now_ms + 300,
        "next send {next}, 429 after {before_429}, now {}",
        s.now_ms
    );

    // A dead letter leaves the depth.
    let c = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert_eq!(name(&c), "c");
    done(&q, &c, dead("rejected", Some(400), "bad")).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!(
        (s.depth, s.in_flight, s.scheduled_retries, s.dead),
        (1, 0, 1, 1)
    );
    assert_eq!((s.delivered, s.upstream_429, s.sent_in_window), (1, 1, 4));
    assert_eq!(
        s.oldest_ms, None,
        "only a retry waits, which is not considered"
    );
    assert_eq!(s.next_send_ms, None, "nothing queued");

    // Credentials refused: flagged, held.
    put(&q, "globex", WIDE, &["g"]).await;
    let g = claim(&q).await.remove(0);
    done(
        &q,
        &g,
        Outcome::AuthFailed {
            status: 401,
            error: "Couldn't authenticate you".into(),
        },
    )
    .await;
    let s = stats_for(&q, "globex").await;
    assert!(s.auth_failed && !s.paused);
    assert_eq!((s.depth, s.in_flight, s.sent_in_window), (1, 0, 1));
    assert!(s.oldest_ms.is_some());
    assert_eq!(s.next_send_ms, None, "held");

    // Paused by an operator; an account only ever paused is listed too.
    put(&q, "acme", limit, &["d"]).await;
    assert!(stats_for(&q, "acme").await.next_send_ms.is_some());
    q.pause("acme").await.unwrap();
    q.pause("initech").await.unwrap();
    let stats = q.stats().await.unwrap();
    let names: Vec<&str> = stats.accounts.iter().map(|a| a.account.as_str()).collect();
    assert_eq!(names, ["acme", "globex", "initech"], "sorted by account");
    let acme = &stats.accounts[0];
    assert!(acme.paused && !acme.auth_failed);
    assert_eq!(acme.depth, 2);
    assert_eq!(acme.next_send_ms, None, "held");
    assert_eq!(
        stats.accounts[2],
        AccountStats {
            account: "initech".into(),
            paused: true,
            ..AccountStats::default()
        }
    );
}

async fn dead_letter_pages_carry_the_exact_notify_body(b: Backend) {
    let q = open(b).await;
    let mut expiring = event_for("acme", "gone");
    expiring.ttl_ms = 100;
    let mut fan = event_for("acme", "fan");
    fan.payload = NotifyPayload::new(7, "fan", Some("{\"ticket\":12}"));
    fan.agents = vec![Some(41), Some(42)];
    let out = put_with(
        &q,
        "acme",
        WIDE,
        100,
        vec![
            expiring,
            fan,
            event_for("acme", "plain"),
            event_for("acme", "ok"),
        ],
    )
    .await;
    let (gone, fan, plain, okay) = (
        stored(&out[0]),
        stored(&out[1]),
        stored(&out[2]),
        stored(&out[3]),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // `gone` expires on the way; `fan`'s two calls and `plain` die; `ok` is delivered.
    let c = claim(&q).await.remove(0);
    assert_eq!(c.delivery_id, did(&fan, 0));
    tokio::time::sleep(Duration::from_millis(2)).await;
    done(
        &q,
        &c,
        dead("rejected", Some(422), "{\"error\":\"InvalidValue\"}"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let c = claim(&q).await.remove(0);
    assert_eq!(c.delivery_id, did(&fan, 1));
    done(&q, &c, dead("max_attempts", None, "connection reset")).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let c = claim(&q).await.remove(0);
    assert_eq!(c.delivery_id, did(&plain, 0));
    done(&q, &c, dead("rejected", Some(400), "")).await;
    let c = claim(&q).await.remove(0);
    assert_eq!(c.delivery_id, did(&okay, 0));
    done(&q, &c, ok()).await;

    let page = q.dead_letters("acme", 0, 100).await.unwrap();
    assert_eq!(page.total, 4);
    let dids: Vec<&str> = page.items.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(
        dids,
        [did(&gone, 0), did(&fan, 0), did(&fan, 1), did(&plain, 0)],
        "oldest first"
    );
    for item in &page.items {
        assert_eq!(
            Some(item.event_id.as_str()),
            item.delivery_id.split(':').next()
        );
        let id = EventId::parse(&item.event_id).unwrap();
        assert_eq!(item.created_at, record(&q, &id).await.created_at);
        assert!(item.dead_at.ends_with('Z') && item.dead_at.len() == 24);
        assert!(item.dead_at >= item.created_at, "{item:?}");
    }
    let expired = &page.items[0];
    assert_eq!(
        (expired.status.as_str(), expired.reason.as_str()),
        ("expired", "expired")
    );
    assert_eq!((expired.attempts, expired.last_status), (0, None));
    assert_eq!(
        expired.last_error.as_deref(),
        Some("time to live passed before delivery")
    );
    assert_eq!(
        expired.event,
        serde_json::json!({"app_id": 1, "event": "gone"})
    );
    let first = &page.items[1];
    assert_eq!(
        (first.status.as_str(), first.reason.as_str(), first.attempts),
        ("dead", "rejected", 1)
    );
    assert_eq!(first.last_status, Some(422));
    assert_eq!(
        first.last_error.as_deref(),
        Some("{\"error\":\"InvalidValue\"}")
    );
    let exact = |agent: u64| -> serde_json::Value {
        serde_json::from_slice(
            &NotifyPayload::new(7, "fan", Some("{\"ticket\":12}")).upstream_bytes(Some(agent)),
        )
        .unwrap()
    };
    assert_eq!(first.event, exact(41));
    assert_eq!(first.event["agent_id"], 41);
    assert_eq!(first.event["body"], "{\"ticket\":12}");
    let second = &page.items[2];
    assert_eq!(second.reason, "max_attempts");
    assert_eq!(second.last_status, None);
    assert_eq!(second.last_error.as_deref(), Some("connection reset"));
    assert_eq!(second.event, exact(42));
    let last = &page.items[3];
    assert_eq!(
        (last.last_status, last.last_error.as_deref()),
        (Some(400), None)
    );
    assert_eq!(
        last.event,
        serde_json::json!({"app_id": 1, "event": "plain"})
    );

    // Paging.
    let page = q.dead_letters("acme", 1, 2).await.unwrap();
    assert_eq!(page.total, 4);
    let dids: Vec<&str> = page.items.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(dids, [did(&fan, 0), did(&fan, 1)]);
    let page = q.dead_letters("acme", 3, 10).await.unwrap();
    assert_eq!((page.total, page.items.len()), (4, 1));
    for (offset, limit) in [(0, 0), (4, 10), (1_000_000, 10), (u64::MAX, u64::MAX)] {
        let page = q.dead_letters("acme", offset, limit).await.unwrap();
        assert_eq!(page.total, 4, "offset {offset}, limit {limit}");
        assert!(page.items.is_empty(), "offset {offset}, limit {limit}");
    }
    let page = q.dead_letters("acme", 0, u64::MAX).await.unwrap();
    assert_eq!(page.items.len(), 4);
    let page = q.dead_letters("globex", 0, 10).await.unwrap();
    assert_eq!((page.total, page.items.len()), (0, 0));
    assert_eq!(stats_for(&q, "acme").await.dead, 4);
}

async fn replay_requeues_dead_letters_at_the_tail(b: Backend) {
    let q = open(b).await;
    let mut short = event_for("acme", "x");
    short.ttl_ms = 150;
    let mut high = event_for("acme", "y");
    high.priority = Priority::High;
    let out = put_with(
        &q,
        "acme",
        WIDE,
        100,
        vec![short, event_for("acme", "z0"), high],
    )
    .await;
    let (x, z0, y) = (stored(&out[0]), stored(&out[1]), stored(&out[2]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // x expires on the way; y (high) dies after two attempts.
    let c = claim(&q).await.remove(0);
    assert_eq!(name(&c), "y");
    done(
        &q,
        &c,
        Outcome::Retry {
            delay: Duration::ZERO,
            status: Some(500),
            error: "oops".into(),
        },
    )
    .await;
    let c = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert_eq!((name(&c).as_str(), c.attempts), ("y", 2));
    done(&q, &c, dead("max_attempts", Some(500), "oops")).await;
    let c = claim(&q).await.remove(0);
    assert_eq!(name(&c), "z0", "x expired on the way");
    done(&q, &c, ok()).await;
    assert_eq!(record(&q, &x).await.status, "expired");
    put(&q, "acme", WIDE, &["w1", "w2"]).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (2, 2));

    // Replay by id: x goes to the tail of its list; unknown ids are reported.
    let ghost = unknown_did("acme");
    let delivered_did = did(&z0, 0);
    let result = q
        .replay(
            "acme",
            &ids(&[&did(&x, 0), &ghost]),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        result,
        DeadLetterResult {
            count: 1,
            not_found: vec![ghost.clone()]
        }
    );
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (3, 1), "counted again in depth");
    let r = record(&q, &x).await;
    assert_eq!(r.status, "queued");
    assert_eq!(r.deliveries[0].status, "queued");
    assert_eq!(r.deliveries[0].attempts, 0);
    let page = q.dead_letters("acme", 0, 10).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].delivery_id, did(&y, 0));
    // Twice is a no-op.
    let again = q
        .replay("acme", &ids(&[&did(&x, 0)]), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        again,
        DeadLetterResult {
            count: 0,
            not_found: vec![did(&x, 0)]
        }
    );
    assert_eq!(stats_for(&q, "acme").await.depth, 3);

    // Its expiry moved to now + ttl: well past the original 150 ms, x is still sent.
    let mut order = Vec::new();
    for _ in 0..3 {
        let c = claim(&q).await.remove(0);
        order.push(name(&c));
        if name(&c) == "x" {
            assert_eq!(c.attempts, 1, "attempts start again");
        }
        done(&q, &c, ok()).await;
    }
    assert_eq!(order, ["w1", "w2", "x"]);
    let r = record(&q, &x).await;
    assert_eq!(r.status, "delivered");
    assert_eq!(r.deliveries[0].attempts, 1);
    // A delivered call is not a dead letter.
    let result = q
        .replay("acme", &ids(&[&delivered_did]), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((result.count, result.not_found), (0, vec![delivered_did]));

    // Replay all: y keeps its priority (ahead of normal work) and has no expiry.
    put(&q, "acme", WIDE, &["v"]).await;
    let result = q
        .replay("acme", &DeadLetterSelection::All, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(
        result,
        DeadLetterResult {
            count: 1,
            not_found: vec![]
        }
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = claim(&q).await.remove(0);
    assert_eq!((name(&c).as_str(), c.attempts), ("y", 1));
    done(&q, &c, ok()).await;
    let c = claim(&q).await.remove(0);
    assert_eq!(name(&c), "v");
    done(&q, &c, ok()).await;
    assert_eq!(record(&q, &y).await.status, "delivered");
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead, s.delivered), (0, 0, 6));
    let nothing = q
        .replay("acme", &DeadLetterSelection::All, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(nothing, DeadLetterResult::default());

    // Operator calls for an account the storage never saw change nothing and list nothing.
    let ghost = unknown_did("nobody");
    let result = q
        .replay("nobody", &ids(&[&ghost]), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((result.count, result.not_found), (0, vec![ghost.clone()]));
    let result = q.purge_dead("nobody", &ids(&[&ghost])).await.unwrap();
    assert_eq!((result.count, result.not_found), (0, vec![ghost]));
    let result = q
        .replay("nobody", &DeadLetterSelection::All, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result, DeadLetterResult::default());
    assert_eq!(
        q.purge_dead("nobody", &DeadLetterSelection::All)
            .await
            .unwrap(),
        DeadLetterResult::default()
    );
    assert!(stats_of(&q, "nobody").await.is_none());
}

async fn replay_ignores_the_depth_cap(b: Backend) {
    let q = open(b).await;
    let out = put_with(&q, "acme", WIDE, 1, vec![event_for("acme", "a")]).await;
    let a = stored(&out[0]);
    let c = claim(&q).await.remove(0);
    done(&q, &c, dead("rejected", Some(400), "no")).await;
    let out = put_with(&q, "acme", WIDE, 1, vec![event_for("acme", "b")]).await;
    stored(&out[0]);
    let result = q
        .replay("acme", &ids(&[&did(&a, 0)]), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result.count, 1);
    assert_eq!(stats_for(&q, "acme").await.depth, 2, "over the cap of 1");
    let out = put_with(&q, "acme", WIDE, 1, vec![event_for("acme", "c")]).await;
    assert_eq!(out[0], EnqueueOutcome::QueueFull);
    let mut got = Vec::new();
    for _ in 0..2 {
        let c = claim(&q).await.remove(0);
        got.push(name(&c));
        done(&q, &c, ok()).await;
    }
    assert_eq!(got, ["b", "a"]);
}

async fn purge_forgets_dead_letters_and_keeps_records(b: Backend) {
    let q = open(b).await;
    let mut fan = event_for("acme", "fan");
    fan.agents = vec![Some(1), Some(2)];
    let mut pending = event_for("acme", "pending");
    pending.agents = vec![Some(3), Some(4)];
    let out = put_with(
        &q,
        "acme",
        WIDE,
        100,
        vec![
            fan,
            event_for("acme", "p1"),
            event_for("acme", "p2"),
            pending,
        ],
    )
    .await;
    let (fan, p1, p2, pending) = (
        stored(&out[0]),
        stored(&out[1]),
        stored(&out[2]),
        stored(&out[3]),
    );
    for outcome in [
        dead("rejected", Some(400), "a"),
        ok(),
        dead("rejected", Some(400), "b"),
        dead("rejected", Some(400), "c"),
        dead("rejected", Some(400), "d"),
    ] {
        let c = claim(&q).await.remove(0);
        done(&q, &c, outcome).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // pending:1 is still queued.
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead, s.delivered), (1, 4, 1));

    let ghost = unknown_did("acme");
    let result = q
        .purge_dead("acme", &ids(&[&did(&p1, 0), &ghost]))
        .await
        .unwrap();
    assert_eq!(
        result,
        DeadLetterResult {
            count: 1,
            not_found: vec![ghost]
        }
    );
    assert_eq!(stats_for(&q, "acme").await.dead, 3);
    let page = q.dead_letters("acme", 0, 10).await.unwrap();
    let dids: Vec<&str> = page.items.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(
        (page.total, dids),
        (
            3,
            vec![
                did(&fan, 0).as_str(),
                did(&p2, 0).as_str(),
                did(&pending, 0).as_str()
            ]
        )
    );
    // The finished event stays readable, `dead`, for the usual retention.
    let r = record(&q, &p1).await;
    assert_eq!(
        (r.status.as_str(), r.deliveries[0].status.as_str()),
        ("dead", "dead")
    );
    assert_eq!(r.deliveries[0].last_status, Some(400));
    // Twice: not found, nothing changes.
    let again = q.purge_dead("acme", &ids(&[&did(&p1, 0)])).await.unwrap();
    assert_eq!(
        again,
        DeadLetterResult {
            count: 0,
            not_found: vec![did(&p1, 0)]
        }
    );
    assert_eq!(stats_for(&q, "acme").await.dead, 3);
    // A purged letter cannot be replayed.
    let result = q
        .replay("acme", &ids(&[&did(&p1, 0)]), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result.count, 0);

    // Purging the dead call of an event with a pending call keeps what that call needs.
    let result = q
        .purge_dead("acme", &ids(&[&did(&pending, 0)]))
        .await
        .unwrap();
    assert_eq!(result.count, 1);
    let c = claim(&q).await.remove(0);
    assert_eq!(c.delivery_id, did(&pending, 1));
    assert!(c.body.ends_with(b"\"event\":\"pending\",\"agent_id\":4}"));
    done(&q, &c, ok()).await;
    let r = record(&q, &pending).await;
    assert_eq!(r.status, "dead");
    assert_eq!(r.deliveries[1].status, "delivered");

    // All.
    let result = q
        .purge_dead("acme", &DeadLetterSelection::All)
        .await
        .unwrap();
    assert_eq!(
        result,
        DeadLetterResult {
            count: 2,
            not_found: vec![]
        }
    );
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead, s.delivered), (0, 0, 2));
    let page = q.dead_letters("acme", 0, 10).await.unwrap();
    assert_eq!((page.total, page.items.len()), (0, 0));
    let r = record(&q, &fan).await;
    assert_eq!(r.status, "dead");
    assert_eq!(r.deliveries[1].status, "delivered");
    assert_eq!(record(&q, &p2).await.status, "dead");
    assert_eq!(
        q.purge_dead("acme", &DeadLetterSelection::All)
            .await
            .unwrap(),
        DeadLetterResult::default()
    );
    assert_eq!(
        q.replay("acme", &DeadLetterSelection::All, Duration::from_secs(60))
            .await
            .unwrap(),
        DeadLetterResult::default()
    );
    assert!(claim(&q).await.is_empty());
}

async fn pause_holds_claims_and_resume_releases_them(b: Backend) {
    let q = open(b).await;
    put(&q, "acme", WIDE, &["a", "b"]).await;
    q.pause("acme").await.unwrap();
    q.pause("acme").await.unwrap();
    put(&q, "globex", WIDE, &["g"]).await;
    let items = claim(&q).await;
    assert_eq!(names(&items), ["g"], "only the paused account is held");
    done(&q, &items[0], ok()).await;
    // Ingress keeps accepting.
    put(&q, "acme", WIDE, &["c"]).await;
    assert!(claim(&q).await.is_empty());
    let s = stats_for(&q, "acme").await;
    assert!(s.paused);
    assert_eq!((s.depth, s.in_flight, s.next_send_ms), (3, 0, None));

    q.resume("acme").await.unwrap();
    q.resume("acme").await.unwrap();
    let s = stats_for(&q, "acme").await;
    assert!(!s.paused && s.next_send_ms.is_some());
    let a = claim(&q).await.remove(0);
    assert_eq!(name(&a), "a");

    // Paused with a call in flight: that call finishes, nothing more goes.
    q.pause("acme").await.unwrap();
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.paused, s.in_flight), (true, 1));
    done(&q, &a, ok()).await;
    assert!(claim(&q).await.is_empty());
    assert_eq!(stats_for(&q, "acme").await.delivered, 1);
    // A replayed letter of a paused account waits too.
    q.resume("acme").await.unwrap();
    let b_call = claim(&q).await.remove(0);
    assert_eq!(name(&b_call), "b");
    done(&q, &b_call, dead("rejected", Some(400), "no")).await;
    q.pause("acme").await.unwrap();
    let result = q
        .replay("acme", &DeadLetterSelection::All, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result.count, 1);
    assert!(claim(&q).await.is_empty(), "paused");
    assert_eq!(stats_for(&q, "acme").await.next_send_ms, None);
    q.resume("acme").await.unwrap();

    // Resume clears auth_failed.
    let c = claim(&q).await.remove(0);
    assert_eq!(name(&c), "c");
    done(
        &q,
        &c,
        Outcome::AuthFailed {
            status: 403,
            error: "Forbidden".into(),
        },
    )
    .await;
    assert!(claim(&q).await.is_empty());
    let s = stats_for(&q, "acme").await;
    assert!(s.auth_failed && !s.paused);
    q.resume("acme").await.unwrap();
    let s = stats_for(&q, "acme").await;
    assert!(!s.auth_failed && !s.paused);
    let c = claim(&q).await.remove(0);
    assert_eq!((name(&c).as_str(), c.attempts), ("c", 1));

    // Resume does not cut an upstream 429 pause short (which counts from its recording).
    let resumed_at = Instant::now();
    done(
        &q,
        &c,
        Outcome::RateLimited {
            retry_after: Duration::from_millis(400),
        },
    )
    .await;
    q.resume("acme").await.unwrap();
    assert!(claim(&q).await.is_empty(), "the 429 pause still runs");
    let c = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert!(resumed_at.elapsed() >= Duration::from_millis(300));
    assert_eq!(name(&c), "c");
    done(&q, &c, ok()).await;
    let c = claim(&q).await.remove(0);
    assert_eq!(name(&c), "b", "the replayed letter");
    done(&q, &c, ok()).await;

    // Pausing and resuming an account without events lists it, and nothing else.
    q.resume("initech").await.unwrap();
    let s = stats_for(&q, "initech").await;
    assert_eq!(
        s,
        AccountStats {
            account: "initech".into(),
            ..AccountStats::default()
        }
    );
    assert!(claim(&q).await.is_empty());
}

async fn runtime_account_records_crud(b: Backend) {
    let q = open(b).await;
    assert!(q.list_accounts().await.unwrap().is_empty());
    assert_eq!(q.get_account("acme").await.unwrap(), None);
    assert!(!q.delete_account("acme").await.unwrap());
    assert!(q.put_account("acme", "{\"v\":1}").await.unwrap(), "new");
    assert!(q.put_account("globex", "g").await.unwrap());
    assert!(
        !q.put_account("acme", "{\"v\":2}").await.unwrap(),
        "replaced"
    );
    assert_eq!(
        q.get_account("acme").await.unwrap().as_deref(),
        Some("{\"v\":2}")
    );
    assert!(q.put_account("a-first", "").await.unwrap());
    assert_eq!(q.get_account("a-first").await.unwrap().as_deref(), Some(""));
    assert_eq!(
        q.list_accounts().await.unwrap(),
        [
            ("a-first".to_string(), String::new()),
            ("acme".to_string(), "{\"v\":2}".to_string()),
            ("globex".to_string(), "g".to_string()),
        ]
    );
    assert!(q.delete_account("acme").await.unwrap());
    assert!(!q.delete_account("acme").await.unwrap());
    assert_eq!(q.get_account("acme").await.unwrap(), None);
    assert_eq!(q.list_accounts().await.unwrap().len(), 2);
    // Records are not queue accounts.
    assert!(q.stats().await.unwrap().accounts.is_empty());
    // A deleted account's queued events stay.
    put(&q, "globex", WIDE, &["g"]).await;
    assert!(q.delete_account("globex").await.unwrap());
    assert_eq!(names(&claim(&q).await), ["g"]);
}

async fn replay_and_purge_all_take_every_letter_in_chunks(b: Backend) {
    let q = open(b).await;
    // More letters than one storage call handles, made cheaply by a short time to live.
    let n = 1200;
    let events = (0..n)
        .map(|i| {
            let mut e = event_for("acme", &format!("e{i}"));
            e.ttl_ms = 20;
            e
        })
        .collect();
    let out = put_with(&q, "acme", WIDE, 100_000, events).await;
    let first = stored(&out[0]);
    let last = stored(&out[n - 1]);
    // A claim leases a bounded number of them (here one call a round, in a few rounds),
    // each made a dead letter by its completion: claims until all are buried.
    let bury_all = || async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        for _ in 0..n {
            assert!(claim(&q).await.is_empty(), "every event expired");
            if stats_for(&q, "acme").await.depth == 0 {
                break;
            }
        }
    };
    bury_all().await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (0, n as u64));
    let page = q.dead_letters("acme", n as u64 - 1, 100).await.unwrap();
    assert_eq!(page.total, n as u64);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].delivery_id, did(&last, 0));

    // Replayed with a 1 ms time to live, they expire again on the way.
    let result = q
        .replay("acme", &DeadLetterSelection::All, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!((result.count, result.not_found.len()), (n as u64, 0));
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (n as u64, 0));
    assert!(created_ms_matches(&q, &first, s.oldest_ms.unwrap()).await);
    bury_all().await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (0, n as u64));
    assert_eq!(record(&q, &first).await.status, "expired");

    let result = q
        .purge_dead("acme", &DeadLetterSelection::All)
        .await
        .unwrap();
    assert_eq!((result.count, result.not_found.len()), (n as u64, 0));
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (0, 0));
    assert_eq!(q.dead_letters("acme", 0, 10).await.unwrap().total, 0);
    assert_eq!(record(&q, &last).await.status, "expired");
}

async fn replaying_one_call_of_a_finished_event(b: Backend) {
    let q = open(b).await;
    let mut fan = event_for("acme", "fan");
    fan.agents = vec![Some(1), Some(2), Some(3)];
    let out = put_with(&q, "acme", WIDE, 100, vec![fan]).await;
    let id = stored(&out[0]);
    for outcome in [
        dead("rejected", Some(400), "one"),
        ok(),
        dead("rejected", Some(404), "three"),
    ] {
        let c = claim(&q).await.remove(0);
        done(&q, &c, outcome).await;
    }
    assert_eq!(record(&q, &id).await.status, "dead");
    let result = q
        .replay("acme", &ids(&[&did(&id, 2)]), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result.count, 1);
    let r = record(&q, &id).await;
    assert_eq!(r.status, "queued");
    let statuses: Vec<&str> = r.deliveries.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(statuses, ["dead", "delivered", "queued"]);
    let c = claim(&q).await.remove(0);
    assert_eq!(c.delivery_id, did(&id, 2));
    assert!(c.body.ends_with(b"\"agent_id\":3}"), "the body was kept");
    // It dies again: a new dead letter, after the other.
    done(&q, &c, dead("rejected", Some(410), "gone")).await;
    let page = q.dead_letters("acme", 0, 10).await.unwrap();
    let dids: Vec<&str> = page.items.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(dids, [did(&id, 0), did(&id, 2)]);
    assert_eq!(page.items[1].last_status, Some(410));
    assert_eq!(page.items[1].attempts, 1);
    assert_eq!(page.items[1].event["agent_id"], 3);
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead, s.delivered), (0, 2, 1));
    assert_eq!(record(&q, &id).await.status, "dead");

    // Of concurrent replays of one letter, exactly one replays it.
    let letter = did(&id, 2);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (q, letter) = (q.q.clone(), letter.clone());
            tokio::spawn(async move {
                q.replay(
                    "acme",
                    &DeadLetterSelection::Ids(vec![letter]),
                    Duration::from_secs(60),
                )
                .await
                .unwrap()
                .count
            })
        })
        .collect();
    let mut replayed = 0;
    for call in calls {
        replayed += call.await.unwrap();
    }
    assert_eq!(replayed, 1);
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.dead), (1, 1));
}

async fn sent_in_window_forgets_calls_older_than_the_window(b: Backend) {
    let q = open(b).await;
    let short = RateLimit {
        limit: 5,
        window_ms: 1000,
    };
    put(&q, "acme", short, &["a", "b"]).await;
    for _ in 0..2 {
        let c = claim(&q).await.remove(0);
        done(&q, &c, ok()).await;
    }
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.sent_in_window, s.delivered, s.depth), (2, 2, 0));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.sent_in_window, s.delivered), (0, 2));
}

/// A limit past 128 calls: the rate log, which a send trims to the times that can still
/// hold back a send once it is that long, keeps every call of the window, so the limit
/// holds exactly.
async fn a_long_rate_log_keeps_the_limit_exact(b: Backend) {
    let q = open(b).await;
    let high = RateLimit {
        limit: 150,
        window_ms: 60_000,
    };
    let names: Vec<String> = (0..151).map(|i| format!("e{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    put(&q, "acme", high, &names).await;
    for i in 0..150 {
        let mut got = claim(&q).await;
        assert_eq!(got.len(), 1, "call {i}");
        done(&q, &got.remove(0), ok()).await;
    }
    let (got, next) = claim_max(&q, 100).await;
    assert!(got.is_empty(), "a 151st call within the window");
    assert!(
        next.is_some_and(|d| d > Duration::from_secs(50)),
        "the window frees in about a minute: {next:?}"
    );
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.sent_in_window, s.depth), (150, 1));
}

async fn held_accounts_still_expire_their_events(b: Backend) {
    let q = open(b).await;
    let ttl = |account: &str, name: &str| NewEvent {
        ttl_ms: 400,
        ..event_for(account, name)
    };
    let cap = 3;
    // Three held accounts, each with its depth at the cap: paused by an operator, paused
    // by an upstream 401, paused by an upstream 429 (for a minute).
    let held = ["paused", "refused", "limited"];
    for account in held {
        let events = ["e1", "e2", "e3"].iter().map(|n| ttl(account, n)).collect();
        let out = put_with(&q, account, WIDE, cap, events).await;
        assert!(out
            .iter()
            .all(|o| matches!(o, EnqueueOutcome::Stored { .. })));
    }
    q.pause("paused").await.unwrap();
    let claimed = claim(&q).await;
    for (account, outcome) in [
        (
            "refused",
            Outcome::AuthFailed {
                status: 401,
                error: "no".into(),
            },
        ),
        (
            "limited",
            Outcome::RateLimited {
                retry_after: Duration::from_secs(60),
            },
        ),
    ] {
        let c = claimed
            .iter()
            .find(|c| c.account == account)
            .expect("claimed");
        done(&q, c, outcome).await;
    }
    for account in held {
        let full = put_with(&q, account, WIDE, cap, vec![ttl(account, "e4")]).await;
        assert_eq!(full, [EnqueueOutcome::QueueFull], "{account}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Any claim call expires what held accounts hold.
    assert!(claim(&q).await.is_empty());
    for account in held {
        let s = stats_for(&q, account).await;
        assert_eq!((s.depth, s.dead), (0, 3), "{account}");
        let page = q.dead_letters(account, 0, 10).await.unwrap();
        assert!(page
            .items
            .iter()
            .all(|d| d.status == "expired" && d.reason == "expired"));
        let again = put_with(&q, account, WIDE, cap, vec![event_for(account, "e5")]).await;
        assert!(
            matches!(again[0], EnqueueOutcome::Stored { .. }),
            "{account}"
        );
    }
    // Resumed, the account delivers what came since.
    q.resume("paused").await.unwrap();
    let c = claim_within(&q, Duration::from_secs(2)).await.unwrap();
    assert_eq!((c.account.as_str(), name(&c).as_str()), ("paused", "e5"));
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
        mod cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::Cluster).await
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------
// Lease groups
// ---------------------------------------------------------------------------------------

/// The delivery ids of `items`, in order.
fn dids(items: &[Claimed]) -> Vec<String> {
    items.iter().map(|c| c.delivery_id.clone()).collect()
}

/// The `event` names of `items`, in order.
fn in_order(items: &[Claimed]) -> Vec<String> {
    items.iter().map(name).collect()
}

/// A claim leases an account's first calls together, in order, each list on its own
/// (high priority first); the account stays busy until every member has completed.
async fn a_lease_group_takes_the_heads_in_order_and_holds_the_account(b: Backend) {
    let q = open_grouped(b).await;
    let all: Vec<String> = (1..=10).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    put(&q, "acme", WIDE, &refs).await;
    let mut high = event_for("acme", "h1");
    high.priority = Priority::High;
    put_with(&q, "acme", WIDE, 100_000, vec![high]).await;

    let first = claim(&q).await;
    assert_eq!(in_order(&first), ["h1"], "a group stays within its list");
    done(&q, &first[0], ok()).await;

    let group = claim(&q).await;
    assert_eq!(in_order(&group), &all[..8]);
    let places: Vec<u32> = group.iter().map(|c| c.group_index).collect();
    assert_eq!(places, (0..8).collect::<Vec<u32>>());
    // each member's lease ends a millisecond before the one before it, the group's
    // lease a sixteenth longer per member after the first
    assert!(group.windows(2).all(|w| w[0].lease > w[1].lease));
    assert!(group[0].lease > Duration::from_millis(LEASE_MS + 7 * LEASE_MS / 16 - 100));
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.in_flight, s.depth, s.sent_in_window), (8, 10, 9));
    for c in &group[..7] {
        done(&q, c, ok()).await;
        assert!(
            claim(&q).await.is_empty(),
            "busy until the whole group is done"
        );
    }
    done(&q, &group[7], ok()).await;
    let rest = claim(&q).await;
    assert_eq!(in_order(&rest), &all[8..]);
    for c in &rest {
        done(&q, c, ok()).await;
    }
    let s = stats_for(&q, "acme").await;
    assert_eq!(
        (s.in_flight, s.depth, s.delivered, s.sent_in_window),
        (0, 0, 11, 11)
    );
}

/// One completion call carries the outcomes of several accounts' lease groups, one
/// account's calls in two runs among them (as a worker's batch can): each outcome is
/// recorded for its own account, and every account is freed.
async fn one_completion_call_records_each_accounts_outcomes(b: Backend) {
    let q = open_grouped(b).await;
    // three accounts of one partition, so that one script call takes all their outcomes
    let accounts: Vec<String> = (0..)
        .map(|i| format!("acct-{i}"))
        .filter(|a| partition_of(a, PARTITIONS) == 0)
        .take(3)
        .collect();
    let a = put(&q, &accounts[0], WIDE, &["a1", "a2"]).await;
    let b_ids = put(&q, &accounts[1], WIDE, &["b1", "b2"]).await;
    let c = put(&q, &accounts[2], WIDE, &["c1"]).await;
    let claimed = claim(&q).await;
    assert_eq!(names(&claimed), ["a1", "a2", "b1", "b2", "c1"]);
    let of = |n: &str| {
        let c = claimed.iter().find(|c| name(c) == n).expect("claimed");
        Completion::of(c, ok())
    };
    let dead = Outcome::Dead {
        reason: DeadReason::Rejected,
        status: Some(400),
        error: "bad".into(),
    };
    let completions = [
        of("a1"),
        of("b1"),
        of("a2"),
        Completion {
            outcome: Outcome::Released,
            ..of("b2")
        },
        Completion {
            outcome: dead,
            ..of("c1")
        },
    ];
    q.complete(&completions).await.expect("complete");
    // each event's status and its call's attempts
    let status = |r: EventRecord| format!("{} {}", r.status.as_str(), r.deliveries[0].attempts);
    assert_eq!(status(record(&q, &a[0]).await), "delivered 1");
    assert_eq!(status(record(&q, &a[1]).await), "delivered 1");
    assert_eq!(status(record(&q, &b_ids[0]).await), "delivered 1");
    assert_eq!(status(record(&q, &b_ids[1]).await), "queued 0");
    assert_eq!(status(record(&q, &c[0]).await), "dead 1");
    let counts = |s: AccountStats| (s.in_flight, s.depth, s.delivered, s.sent_in_window, s.dead);
    assert_eq!(counts(stats_for(&q, &accounts[0]).await), (0, 0, 2, 2, 0));
    assert_eq!(counts(stats_for(&q, &accounts[1]).await), (0, 1, 1, 1, 0));
    assert_eq!(counts(stats_for(&q, &accounts[2]).await), (0, 0, 0, 1, 1));
    // every account is free: the released call comes back at once
    assert_eq!(names(&claim(&q).await), ["b2"]);
}

/// A lease group's successes reported together by the holder of its lease are recorded
/// in one pass; reported after the group's leases ran out and its calls were leased again,
/// each is a late success (recorded, its new lease left to its holder), and the account
/// is freed once the new holder's outcomes come.
async fn a_groups_successes_reported_together_are_recorded_once_each(b: Backend) {
    let q = open_grouped(b).await;
    let ids = put(&q, "acme", WIDE, &["a", "b", "c"]).await;
    let group = claim(&q).await;
    assert_eq!(in_order(&group), ["a", "b", "c"]);
    let all = |items: &[Claimed]| -> Vec<Completion> {
        items.iter().map(|c| Completion::of(c, ok())).collect()
    };
    q.complete(&all(&group)).await.expect("complete");
    let delivered = |r: EventRecord| {
        let d = &r.deliveries[0];
        (r.status.as_str().to_string(), d.attempts, d.last_status)
    };
    for id in &ids {
        let r = record(&q, id).await;
        assert_eq!(delivered(r), ("delivered".into(), 1, Some(200)));
    }
    let counts = |s: AccountStats| (s.in_flight, s.depth, s.delivered, s.sent_in_window);
    assert_eq!(counts(stats_for(&q, "acme").await), (0, 0, 3, 3));

    // each with an upstream status of its own
    let ids = put(&q, "acme", WIDE, &["a2", "b2", "c2"]).await;
    let group = claim(&q).await;
    assert_eq!(in_order(&group), ["a2", "b2", "c2"]);
    let statuses = [201, 200, 204];
    let completions: Vec<Completion> = group
        .iter()
        .zip(statuses)
        .map(|(c, status)| Completion::of(c, Outcome::Delivered { status }))
        .collect();
    q.complete(&completions).await.expect("complete");
    for (id, status) in ids.iter().zip(statuses) {
        let r = record(&q, id).await;
        assert_eq!(delivered(r), ("delivered".into(), 1, Some(status)));
    }
    assert_eq!(counts(stats_for(&q, "acme").await), (0, 0, 6, 6));

    let later = put(&q, "acme", WIDE, &["d", "e", "f"]).await;
    let group = claim(&q).await;
    assert_eq!(in_order(&group), ["d", "e", "f"]);
    // the group's lease: LEASE_MS and a sixteenth of it per member after the first
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 2 * LEASE_MS / 16 + 50)).await;
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while again.len() < 3 {
        assert!(Instant::now() < deadline, "never claimed again");
        again.extend(claim(&q).await);
    }
    assert_eq!(in_order(&again), ["d", "e", "f"]);
    // the first holder's successes, late: recorded, the new leases left to their holder
    q.complete(&all(&group)).await.expect("complete");
    for id in &later {
        assert_eq!(record(&q, id).await.status.as_str(), "delivered");
    }
    assert_eq!(stats_for(&q, "acme").await.in_flight, 3);
    q.complete(&all(&again)).await.expect("complete");
    for id in &later {
        assert_eq!(record(&q, id).await.status.as_str(), "delivered");
    }
    // the three lease ends and the three answers besides the first two groups'
    assert_eq!(counts(stats_for(&q, "acme").await), (0, 0, 9, 12));
    let next = put(&q, "acme", WIDE, &["g"]).await;
    let c = claim(&q).await;
    assert_eq!(in_order(&c), ["g"], "the account is free");
    done(&q, &c[0], ok()).await;
    assert_eq!(record(&q, &next[0]).await.status.as_str(), "delivered");
}

/// A group is taken only when the window has room for a whole one; otherwise one call
/// at a time, and never past the limit.
async fn a_lease_group_only_when_the_window_has_room(b: Backend) {
    let q = open_grouped(b).await;
    let ten = RateLimit {
        limit: 10,
        window_ms: 60_000,
    };
    let all: Vec<String> = (1..=12).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    put(&q, "acme", ten, &refs).await;
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    loop {
        let items = claim(&q).await;
        if items.is_empty() {
            break;
        }
        sizes.push(items.len());
        for c in &items {
            got.push(name(c));
            done(&q, c, ok()).await;
        }
    }
    assert_eq!(
        sizes,
        [8, 1, 1],
        "8 sent: room for one at a time, up to the limit"
    );
    assert_eq!(got, &all[..10]);
    let (none, next) = claim_max(&q, 100).await;
    assert!(none.is_empty());
    assert!(
        next.is_some_and(|d| d > Duration::from_secs(50)),
        "{next:?}"
    );
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.sent_in_window, s.depth), (10, 2));
}

/// One claim call leases at most 64 deliveries: 9 accounts of one partition with 8 calls
/// each give 8 whole groups, and the ninth account waits for the next call.
async fn a_claim_call_leases_at_most_64_deliveries(b: Backend) {
    let q = open_grouped(b).await;
    let p = partition_of("acct-a", PARTITIONS);
    let accounts: Vec<String> = (0..)
        .map(|i| format!("acct-{i}"))
        .filter(|a| partition_of(a, PARTITIONS) == p)
        .take(9)
        .collect();
    let names: Vec<String> = (0..8).map(|i| format!("e{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for account in &accounts {
        put(&q, account, WIDE, &names).await;
    }
    let items = q.claim(p, 16).await.expect("claim").items;
    assert_eq!(items.len(), 64);
    let mut claimed: Vec<&str> = items.iter().map(|c| c.account.as_str()).collect();
    claimed.dedup();
    assert_eq!(claimed.len(), 8, "whole groups of 8 accounts: {claimed:?}");
    let rest = q.claim(p, 16).await.expect("claim").items;
    assert_eq!(rest.len(), 8, "the ninth account's group");
}

/// A holder that dies mid-group: the members it did not complete go back to the front,
/// in their order, once their leases end, each counted as sent at its lease's end.
async fn a_group_whose_holder_died_goes_back_in_order(b: Backend) {
    let q = open_grouped(b).await;
    put(&q, "acme", WIDE, &["a", "b", "c", "d"]).await;
    let group = claim(&q).await;
    assert_eq!(in_order(&group), ["a", "b", "c", "d"]);
    done(&q, &group[0], ok()).await;
    // the group's lease: LEASE_MS and a sixteenth of it per member after the first
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 3 * LEASE_MS / 16 + 50)).await;
    // the reaper puts back at most a few leases per claim
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while again.is_empty() {
        assert!(Instant::now() < deadline, "never claimed again");
        again = claim(&q).await;
    }
    assert_eq!(in_order(&again), ["b", "c", "d"]);
    assert!(again.iter().all(|c| c.attempts == 2));
    // the stale holder's completions change nothing
    for c in &group[1..] {
        done(&q, c, ok()).await;
    }
    assert_eq!(stats_for(&q, "acme").await.in_flight, 3);
    for c in &again {
        done(&q, c, ok()).await;
    }
    let s = stats_for(&q, "acme").await;
    // a, the three lease ends, and the three answers
    assert_eq!((s.delivered, s.sent_in_window, s.depth), (4, 7, 0));
}

/// A sender stopped by a 429 releases the members it did not send, last first, then
/// records the 429: after the pause the group comes back in order; the released call
/// takes back its place in the window, the 429 keeps its own (upstream saw it).
async fn a_group_stopped_by_a_429_comes_back_in_order(b: Backend) {
    let q = open_grouped(b).await;
    put(&q, "acme", WIDE, &["a", "b", "c", "d"]).await;
    let group = claim(&q).await;
    assert_eq!(in_order(&group), ["a", "b", "c", "d"]);
    done(&q, &group[0], ok()).await;
    done(&q, &group[3], Outcome::Released).await;
    done(&q, &group[2], Outcome::Released).await;
    let pause = Duration::from_millis(300);
    done(&q, &group[1], Outcome::RateLimited { retry_after: pause }).await;
    assert!(claim(&q).await.is_empty(), "paused");
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.in_flight, s.depth, s.sent_in_window), (0, 3, 2));
    tokio::time::sleep(pause + Duration::from_millis(20)).await;
    let again = claim(&q).await;
    assert_eq!(dids(&again), dids(&group[1..]));
    assert!(
        again.iter().all(|c| c.attempts == 1),
        "neither the 429 nor the releases count as attempts"
    );
}

/// A list entry of a call already delivered (its event a summary, which a hash command is
/// refused on) is leased by a claim, read by the gateway and dropped: the claim hands out
/// what follows it, and the success is counted once. Redis only: the entry is pushed by
/// hand.
async fn a_stale_entry_of_a_summary_is_dropped_after_its_claim(b: Backend) {
    let q = open(b).await;
    let Some(redis) = q.redis.as_ref() else {
        return;
    };
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    let c = claim(&q).await.remove(0);
    done(&q, &c, ok()).await;
    let (key, base) = event_key_and_base(redis, &ids[0]);
    assert_eq!(
        redis.command(&["TYPE", &key]).as_deref(),
        Some("+string\r\n"),
        "the delivered event is its summary"
    );
    let later = put(&q, "acme", WIDE, &["y"]).await;
    let list = format!("{base}:q:acme:n");
    redis.command(&["LPUSH", &list, &did(&ids[0], 0)]);
    let items = claim(&q).await;
    assert_eq!(
        names(&items),
        ["y"],
        "the stale entry is dropped, y comes next"
    );
    done(&q, &items[0], ok()).await;
    let s = stats_for(&q, "acme").await;
    assert_eq!((s.depth, s.in_flight, s.delivered), (0, 0, 2));
    assert_eq!(record(&q, &later[0]).await.status, "delivered");
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
}

/// A call whose event is gone, leased by its id, whose gateway died before it ended the
/// lease: the reaper finds no account to free, and the retention sweep frees the account
/// of it once its group's leases have all run out, so its later events are delivered.
/// Redis only: the state is made by hand.
async fn an_account_whose_leased_event_is_gone_is_freed_by_the_sweep(b: Backend) {
    let q = open(b).await;
    let Some(redis) = q.redis.as_ref() else {
        return;
    };
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    let c = claim(&q).await.remove(0);
    let (key, base) = event_key_and_base(redis, &ids[0]);
    // the event gone, its lease reaped (which names no account), the group claimed long ago
    redis.command(&["DEL", &key]);
    redis.command(&["ZREM", &format!("{base}:inflight"), &c.delivery_id]);
    redis.command(&[
        "HSET",
        &format!("{base}:acct:acme"),
        "rl_at",
        "1000000000000",
    ]);
    redis.command(&["DEL", &format!("{base}:sweep")]);
    let later = put(&q, "acme", WIDE, &["y"]).await;
    let next = claim_within(&q, Duration::from_secs(2))
        .await
        .expect("the account is freed and its next event claimed");
    assert_eq!(next.delivery_id, did(&later[0], 0));
    done(&q, &next, ok()).await;
    assert_eq!(record(&q, &later[0]).await.status, "delivered");
}

/// The key of event `id` in `redis`, and its partition's base (the key without
/// `:ev:{id}`), found by `KEYS`.
fn event_key_and_base(redis: &RedisServer, id: &EventId) -> (String, String) {
    let reply = redis
        .command(&["KEYS", &format!("*:ev:{id}")])
        .expect("KEYS");
    let key = reply
        .lines()
        .find(|l| l.ends_with(&id.to_string()))
        .expect("the event's key")
        .to_string();
    let base = key.trim_end_matches(&format!(":ev:{id}")).to_string();
    (key, base)
}

/// A call leased with a token not above the end of its last lease that ended early (`c0`,
/// as a release before accounts recorded their leases' ends could leave it) is put back
/// unsent, uncounted, and the account's next lease (in the same claim) ends after it.
/// Redis only: the event's `c0` is raised by hand.
async fn a_token_not_above_the_events_last_early_end_is_leased_again_above_it(b: Backend) {
    let q = open(b).await;
    let Some(redis) = q.redis.as_ref() else {
        return;
    };
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    let first = claim(&q).await.remove(0);
    done(&q, &first, Outcome::Released).await;
    let (key, _) = event_key_and_base(redis, &ids[0]);
    // an early end well after any lease this claim would grant by the clock
    let above = first.lease_token + 10 * LEASE_MS;
    redis.command(&["HSET", &key, "c0", &above.to_string()]);
    let again = claim(&q).await;
    assert_eq!(names(&again), ["x"], "leased again in the same claim");
    assert!(
        again[0].lease_token > above,
        "token {} above {above}",
        again[0].lease_token
    );
    assert_eq!(again[0].attempts, 1, "the put-back counted no attempt");
    done(&q, &again[0], ok()).await;
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
}

/// The in-flight set keeps its anchor (no call, at +inf) once a claim has leased: Redis
/// then indexes the set (a skiplist, where a small set of short members is a listpack,
/// walked at every lease granted and ended), and keeps doing so after the last lease has
/// ended. The anchor is never due: a claim that finds nothing else to do says nothing is.
async fn the_in_flight_sets_anchor_keeps_it_indexed_and_is_never_due(b: Backend) {
    let q = open(b).await;
    let ids = put(&q, "acme", WIDE, &["x"]).await;
    let c = claim(&q).await.remove(0);
    let set = q.redis.as_ref().map(|redis| {
        let (_, base) = event_key_and_base(redis, &ids[0]);
        (redis, format!("{base}:inflight"))
    });
    if let Some((redis, key)) = &set {
        assert_eq!(
            redis.command(&["OBJECT", "ENCODING", key]).as_deref(),
            Some("$8\r\nskiplist\r\n"),
            "a lease in flight"
        );
    }
    done(&q, &c, ok()).await;
    assert_eq!(record(&q, &ids[0]).await.status, "delivered");
    let (items, next_due) = claim_max(&q, 100).await;
    assert!(items.is_empty());
    assert_eq!(next_due, None, "nothing is due, the anchor never");
    if let Some((redis, key)) = &set {
        let count = |args: &[&str]| redis.command(args).unwrap_or_default();
        assert_eq!(
            (
                count(&["ZCARD", key]),
                count(&["ZCOUNT", key, "+inf", "+inf"])
            ),
            (":1\r\n".to_string(), ":1\r\n".to_string()),
            "the anchor alone, at +inf"
        );
        assert_eq!(
            redis.command(&["OBJECT", "ENCODING", key]).as_deref(),
            Some("$8\r\nskiplist\r\n"),
            "no lease in flight"
        );
    }
}

conformance!(
    held_accounts_still_expire_their_events,
    fifo_and_priority_with_one_delivery_in_flight,
    rolling_window_limit_is_never_exceeded_and_rescored,
    a_full_window_puts_the_account_back_at_its_next_send,
    a_claim_says_when_more_is_due_only_once_it_took_all_that_was_due,
    fairness_across_accounts,
    expired_lease_is_requeued_at_the_front_and_stale_completion_ignored,
    late_success_removes_the_delivery_everywhere,
    a_stale_entry_of_a_summary_is_dropped_after_its_claim,
    a_groups_successes_reported_together_are_recorded_once_each,
    the_in_flight_sets_anchor_keeps_it_indexed_and_is_never_due,
    an_account_whose_leased_event_is_gone_is_freed_by_the_sweep,
    a_token_not_above_the_events_last_early_end_is_leased_again_above_it,
    a_delivered_events_summary_is_read_as_the_event,
    an_events_first_write_keeps_what_its_first_form_held,
    a_single_call_success_is_recorded_from_its_claim,
    a_late_success_is_counted_once_when_its_holder_dies_too,
    retry_waits_its_delay_while_later_events_go,
    rate_limited_pauses_the_account_without_counting,
    auth_failed_pauses_the_account_and_keeps_events,
    released_goes_back_to_the_front_uncounted,
    dead_letters_keep_status_and_error,
    ttl_expiry_turns_queued_events_into_expired,
    idempotency_dup_and_mismatch,
    every_form_of_an_enqueue_call_keeps_what_it_was_sent_with,
    depth_cap_answers_queue_full,
    the_depth_cap_holds_exactly_whatever_its_bound_says,
    event_records_follow_the_lifecycle,
    stats_counters_follow_the_lifecycle,
    dead_letter_pages_carry_the_exact_notify_body,
    replay_requeues_dead_letters_at_the_tail,
    replay_ignores_the_depth_cap,
    purge_forgets_dead_letters_and_keeps_records,
    pause_holds_claims_and_resume_releases_them,
    runtime_account_records_crud,
    replay_and_purge_all_take_every_letter_in_chunks,
    replaying_one_call_of_a_finished_event,
    sent_in_window_forgets_calls_older_than_the_window,
    a_long_rate_log_keeps_the_limit_exact,
    a_lease_group_takes_the_heads_in_order_and_holds_the_account,
    a_lease_group_only_when_the_window_has_room,
    a_group_whose_holder_died_goes_back_in_order,
    a_group_stopped_by_a_429_comes_back_in_order,
    a_claim_call_leases_at_most_64_deliveries,
    one_completion_call_records_each_accounts_outcomes,
);

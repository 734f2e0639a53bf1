//! Scripts that fail part-way. Redis does not roll back a script that fails after a write,
//! so each queue script must leave a state that later calls complete or repair. Every
//! script writes through the helper `w`; these tests run each operation with a variant of
//! the helpers whose `w` fails after its Nth write (N = 1, 2, ... until the operation
//! completes before its Nth write), then run the normal scripts, as surviving processes
//! would, and check that no delivery was stranded, that the counters agree with where the
//! deliveries are, and that everything is eventually delivered. The same runs on a Redis
//! server and on the embedded store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId, NotifyPayload, Priority};
use zenrelay::queue::memory::MemoryQueue;
use zenrelay::queue::redis::{RedisQueue, HELPERS};
use zenrelay::queue::{
    AccountStats, Claimed, Completion, DeadLetterSelection, EnqueueBatch, NewEvent, Outcome, Queue,
    RateLimit,
};

use crate::support::RedisServer;

const LEASE_MS: u64 = 150;
const ACCOUNT: &str = "acme";
const OTHER: &str = "globex";
const WIDE: RateLimit = RateLimit {
    limit: 1000,
    window_ms: 60_000,
};

/// The helpers with a `w` that fails right after its `n`th write in a call (each call
/// starts with `begin`, which sets `w`).
fn failing_helpers(n: usize) -> String {
    let plain = "\n  w = call\n";
    assert!(
        HELPERS.contains(plain),
        "scripts.lua's begin sets w as expected"
    );
    let failing = format!(
        "\n  local injected_writes = 0\n  \
         w = function(...)\n    \
           local reply = call(...)\n    \
           injected_writes = injected_writes + 1\n    \
           if injected_writes == {n} then error('injected failure after write {n}') end\n    \
           return reply\n  \
         end\n"
    );
    HELPERS.replacen(plain, &failing, 1)
}

/// Where the queues store: a Redis server, or the embedded store.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Redis(&'a RedisServer),
    Embedded,
}

/// The store the queues share, for reading it directly.
enum Store {
    Redis(String),
    Embedded(Arc<MemoryQueue>),
}

struct Queues {
    normal: Arc<dyn Queue>,
    failing: Arc<dyn Queue>,
    prefix: String,
    store: Store,
}

fn queues(backend: Backend<'_>, fail_after: usize) -> Queues {
    let mut config = Config::default();
    config.redis.partitions = 1;
    config.redis.key_prefix = format!("faults-{}", uuid::Uuid::now_v7().simple());
    config.delivery.lease_ms = Some(LEASE_MS);
    config.delivery.window_margin_ms = Some(0);
    let prefix = config.redis.key_prefix.clone();
    match backend {
        Backend::Redis(redis) => {
            config.redis.url = redis.url().into();
            let settings = zenrelay::app::redis_queue_config(&config);
            Queues {
                normal: Arc::new(RedisQueue::new(settings.clone()).unwrap()),
                failing: Arc::new(
                    RedisQueue::new_with_helpers(settings, &failing_helpers(fail_after)).unwrap(),
                ),
                prefix,
                store: Store::Redis(redis.url()),
            }
        }
        Backend::Embedded => {
            let normal = Arc::new(zenrelay::app::memory_queue(&config));
            Queues {
                failing: Arc::new(normal.sibling(1, &failing_helpers(fail_after))),
                normal: normal.clone(),
                prefix,
                store: Store::Embedded(normal),
            }
        }
    }
}

/// A connection to the store the queues share.
enum Conn<'a> {
    Redis(redis::aio::MultiplexedConnection),
    Embedded(&'a MemoryQueue),
}

impl Conn<'_> {
    async fn open(store: &Store) -> Conn<'_> {
        match store {
            Store::Redis(url) => {
                let client = redis::Client::open(url.as_str()).unwrap();
                Conn::Redis(client.get_multiplexed_async_connection().await.unwrap())
            }
            Store::Embedded(q) => Conn::Embedded(q),
        }
    }

    async fn run(&mut self, args: &[&str]) -> Value {
        match self {
            Conn::Redis(c) => {
                let mut cmd = redis::cmd(args[0]);
                for a in &args[1..] {
                    cmd.arg(*a);
                }
                cmd.query_async(c).await.unwrap()
            }
            Conn::Embedded(q) => {
                let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
                q.transport().command(&args).unwrap()
            }
        }
    }

    /// The items of an array reply (or the one value) as text.
    async fn strings(&mut self, args: &[&str]) -> Vec<String> {
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => panic!("unexpected reply {other:?}"),
        };
        match self.run(args).await {
            Value::Array(items) => items.iter().map(text).collect(),
            Value::Nil => Vec::new(),
            other => vec![text(&other)],
        }
    }

    /// The keys starting with `prefix` (the embedded store lists only `*`).
    async fn keys(&mut self, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}*");
        let pattern = match self {
            Conn::Redis(_) => pattern.as_str(),
            Conn::Embedded(_) => "*",
        };
        let mut keys = self.strings(&["KEYS", pattern]).await;
        keys.retain(|k| k.starts_with(prefix));
        keys
    }
}

fn event(name: &str, agents: usize, priority: Priority, ttl_ms: u64) -> NewEvent {
    NewEvent {
        id: EventId::new(partition_of(ACCOUNT, 1)),
        priority,
        ttl_ms,
        payload: NotifyPayload::new(1, name, None),
        agents: (0..agents).map(|a| Some(a as u64 + 1)).collect(),
        idempotency: None,
    }
}

async fn put(q: &dyn Queue, account: &str, events: Vec<NewEvent>) -> anyhow::Result<()> {
    q.enqueue(EnqueueBatch {
        account: account.into(),
        limit: WIDE,
        max_depth: 1000,
        idempotency_ttl_secs: 60,
        events,
    })
    .await?;
    Ok(())
}

/// The events an enqueue under test stores for `ACCOUNT`: one of three calls with the
/// idempotency key `key`, and one of high priority.
fn new_events(key: &str) -> Vec<NewEvent> {
    let mut events = vec![
        event("d", 3, Priority::Normal, 0),
        event("e", 1, Priority::High, 0),
    ];
    events[0].idempotency = Some((key.into(), "fp".into()));
    events
}

/// Two events of `ACCOUNT` (the first with two calls) and one of `OTHER`.
async fn setup_events(q: &dyn Queue) {
    put(
        q,
        ACCOUNT,
        vec![
            event("a", 2, Priority::Normal, 0),
            event("b", 1, Priority::Normal, 0),
        ],
    )
    .await
    .unwrap();
    put(q, OTHER, vec![event("c", 1, Priority::Normal, 0)])
        .await
        .unwrap();
}

/// Claims the lease group of `ACCOUNT` (what else is claimed is left to its lease).
async fn claim_group(q: &dyn Queue) -> Vec<Claimed> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let items = q.claim(0, 10).await.unwrap().items;
        let group: Vec<Claimed> = items.into_iter().filter(|c| c.account == ACCOUNT).collect();
        if !group.is_empty() {
            return group;
        }
        assert!(Instant::now() < deadline, "nothing of {ACCOUNT} to claim");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Claims the head delivery of `ACCOUNT` (what else is claimed is left to its lease).
async fn claim_one(q: &dyn Queue) -> Claimed {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let items = q.claim(0, 10).await.unwrap().items;
        if let Some(c) = items.into_iter().find(|c| c.account == ACCOUNT) {
            return c;
        }
        assert!(Instant::now() < deadline, "nothing of {ACCOUNT} to claim");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn retry(delay_ms: u64) -> Outcome {
    Outcome::Retry {
        delay: Duration::from_millis(delay_ms),
        status: Some(503),
        error: "flaky".into(),
    }
}

fn dead() -> Outcome {
    Outcome::Dead {
        reason: zenrelay::queue::DeadReason::Rejected,
        status: Some(422),
        error: "bad".into(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Enqueue,
    /// Enqueues of two accounts that share one script call.
    EnqueueShared,
    Claim,
    Complete(fn() -> Outcome),
    /// The whole lease group of `ACCOUNT` (a:0, a:1, b:0) completed in one call:
    /// delivered, retry, dead; or (`true`) as a sender stopped by a 429 at the second
    /// records it: the first delivered, the third released, then the 429.
    CompleteGroup(bool),
    /// Every delivery claimed, of both accounts (two runs, whose leases end in one
    /// command after the second), delivered in one call.
    CompleteAccounts,
    /// A lease group of `ACCOUNT` of three events of one call each, delivered in one call
    /// (recorded in one pass: see complete.lua).
    CompleteWholeGroup,
    ReapLease,
    ReapRetry,
    LateSuccessQueued,
    LateSuccessRetrying,
    LateSuccessWhileReclaimed,
    Replay,
    Purge,
    Pause,
    Resume,
    ExpireHeld,
}

/// Prepares the state the operation works on, then runs it on the failing queue.
async fn run(op: Op, q: &Queues) -> anyhow::Result<()> {
    let (n, f) = (q.normal.as_ref(), q.failing.as_ref());
    let lease = Duration::from_millis(LEASE_MS + 30);
    match op {
        Op::Enqueue => {
            setup_events(n).await;
            put(f, ACCOUNT, new_events("key-1")).await
        }
        Op::EnqueueShared => {
            setup_events(n).await;
            // Three requests at once: the first is stored by a call of its own while the
            // other two, of both accounts, wait, then share the next call.
            let (alone, mine, other) = tokio::join!(
                put(f, OTHER, vec![event("f", 1, Priority::Normal, 0)]),
                put(f, ACCOUNT, new_events("key-2")),
                put(f, OTHER, vec![event("g", 2, Priority::High, 0)]),
            );
            alone.and(mine).and(other)
        }
        Op::Claim => {
            setup_events(n).await;
            // an expired event at the head: the claim makes it a dead letter first
            put(n, OTHER, vec![event("x", 1, Priority::High, 1)])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            f.claim(0, 10).await.map(|_| ()).map_err(Into::into)
        }
        Op::Complete(outcome) => {
            setup_events(n).await;
            let c = claim_one(n).await;
            f.complete(&[Completion::of(&c, outcome())])
                .await
                .map_err(Into::into)
        }
        Op::CompleteGroup(stopped) => {
            setup_events(n).await;
            let group = claim_group(n).await;
            assert_eq!(group.len(), 3, "a lease group of a:0, a:1 and b:0");
            let pause = Outcome::RateLimited {
                retry_after: Duration::from_millis(50),
            };
            let completions = if stopped {
                [
                    Completion::of(&group[0], ok()),
                    Completion::of(&group[2], Outcome::Released),
                    Completion::of(&group[1], pause),
                ]
            } else {
                [
                    Completion::of(&group[0], ok()),
                    Completion::of(&group[1], retry(50)),
                    Completion::of(&group[2], dead()),
                ]
            };
            f.complete(&completions).await.map_err(Into::into)
        }
        Op::CompleteAccounts => {
            setup_events(n).await;
            let mut claimed = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(2);
            while claimed.len() < 4 {
                assert!(Instant::now() < deadline, "not all four claimed");
                claimed.extend(n.claim(0, 10).await.unwrap().items);
            }
            assert!(claimed.iter().any(|c| c.account == OTHER));
            let completions: Vec<Completion> =
                claimed.iter().map(|c| Completion::of(c, ok())).collect();
            f.complete(&completions).await.map_err(Into::into)
        }
        Op::CompleteWholeGroup => {
            let events = ["x", "y", "z"]
                .map(|name| event(name, 1, Priority::Normal, 0))
                .to_vec();
            put(n, ACCOUNT, events).await.unwrap();
            let group = claim_group(n).await;
            assert_eq!(group.len(), 3);
            let completions: Vec<Completion> =
                group.iter().map(|c| Completion::of(c, ok())).collect();
            f.complete(&completions).await.map_err(Into::into)
        }
        Op::ReapLease => {
            setup_events(n).await;
            claim_one(n).await;
            tokio::time::sleep(lease).await;
            f.claim(0, 0).await.map(|_| ()).map_err(Into::into)
        }
        Op::ReapRetry => {
            setup_events(n).await;
            let c = claim_one(n).await;
            n.complete(&[Completion::of(&c, retry(0))]).await.unwrap();
            f.claim(0, 0).await.map(|_| ()).map_err(Into::into)
        }
        Op::LateSuccessQueued => {
            setup_events(n).await;
            let c = claim_one(n).await;
            tokio::time::sleep(lease).await;
            n.claim(0, 0).await.unwrap();
            f.complete(&[Completion::of(&c, ok())])
                .await
                .map_err(Into::into)
        }
        Op::LateSuccessRetrying => {
            setup_events(n).await;
            let c = claim_one(n).await;
            n.complete(&[Completion::of(&c, retry(60_000))])
                .await
                .unwrap();
            f.complete(&[Completion::of(&c, ok())])
                .await
                .map_err(Into::into)
        }
        Op::LateSuccessWhileReclaimed => {
            setup_events(n).await;
            let c = claim_one(n).await;
            tokio::time::sleep(lease).await;
            let again = claim_one(n).await;
            assert_eq!(again.delivery_id, c.delivery_id);
            f.complete(&[Completion::of(&c, ok())])
                .await
                .map_err(Into::into)
        }
        Op::Replay | Op::Purge => {
            setup_events(n).await;
            for _ in 0..2 {
                let c = claim_one(n).await;
                n.complete(&[Completion::of(&c, dead())]).await.unwrap();
            }
            if matches!(op, Op::Replay) {
                f.replay(ACCOUNT, &DeadLetterSelection::All, Duration::from_secs(60))
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            } else {
                f.purge_dead(ACCOUNT, &DeadLetterSelection::All)
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
        }
        Op::Pause => {
            setup_events(n).await;
            f.pause(ACCOUNT).await.map_err(Into::into)
        }
        Op::ExpireHeld => {
            setup_events(n).await;
            put(
                n,
                ACCOUNT,
                vec![
                    event("f", 2, Priority::High, 50),
                    event("g", 1, Priority::High, 50),
                ],
            )
            .await
            .unwrap();
            n.pause(ACCOUNT).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
            f.claim(0, 0).await.map(|_| ()).map_err(Into::into)
        }
        Op::Resume => {
            setup_events(n).await;
            n.pause(ACCOUNT).await.unwrap();
            f.resume(ACCOUNT).await.map_err(Into::into)
        }
    }
}

fn ok() -> Outcome {
    Outcome::Delivered { status: 200 }
}

/// Where each delivery is, read straight from Redis.
#[derive(Debug, Default)]
struct Snapshot {
    /// delivery id → (account, status)
    deliveries: HashMap<String, (String, String)>,
    /// replayed deliveries not claimed since
    replayed: Vec<String>,
    /// delivery id → how many times it is in a list
    listed: HashMap<String, usize>,
    inflight: Vec<String>,
    delayed: Vec<String>,
    retry: HashMap<String, Vec<String>>,
    dead: HashMap<String, Vec<String>>,
    busy: HashMap<String, String>,
    /// account → the bound on its depth its record keeps (`d`), when it keeps one
    bound: HashMap<String, Option<u64>>,
}

async fn snapshot(q: &Queues) -> Snapshot {
    let mut c = Conn::open(&q.store).await;
    let base = format!("{}:{{p0}}", q.prefix);
    let mut s = Snapshot::default();
    let keys = c.keys(&format!("{base}:ev:")).await;
    for key in keys {
        let eid = key.rsplit(':').next().unwrap().to_string();
        if c.strings(&["TYPE", &key]).await == ["string"] {
            // a delivered event of one call, kept as its summary: `<status> <attempts>
            // <upstream status> <delivered at> <agent> <account>`
            let summary = c.strings(&["GET", &key]).await.concat();
            let parts: Vec<&str> = summary.splitn(6, ' ').collect();
            assert_eq!(parts.len(), 6, "a summary {summary:?}");
            s.deliveries.insert(
                format!("{eid}:0"),
                (parts[5].to_string(), parts[0].to_string()),
            );
            continue;
        }
        let fields = c.strings(&["HGETALL", &key]).await;
        let ev: HashMap<String, String> = fields
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        // (a missing `n` is one call, and a missing status a queued call)
        let n: usize = ev.get("n").map_or(1, |v| v.parse().unwrap_or(0));
        let acct = ev.get("acct").cloned().unwrap_or_default();
        for k in 0..n {
            let status = ev
                .get(&format!("s{k}"))
                .cloned()
                .unwrap_or_else(|| "queued".into());
            if ev.get(&format!("rp{k}")).is_some_and(|v| v == "1") {
                s.replayed.push(format!("{eid}:{k}"));
            }
            s.deliveries
                .insert(format!("{eid}:{k}"), (acct.clone(), status));
        }
    }
    for account in [ACCOUNT, OTHER] {
        for prio in ["h", "n"] {
            let ids = c
                .strings(&["LRANGE", &format!("{base}:q:{account}:{prio}"), "0", "-1"])
                .await;
            for id in ids {
                *s.listed.entry(id).or_default() += 1;
            }
        }
        let retry = c
            .strings(&["ZRANGE", &format!("{base}:retry:{account}"), "0", "-1"])
            .await;
        s.retry.insert(account.into(), retry);
        let dead = c
            .strings(&["ZRANGE", &format!("{base}:dead:{account}"), "0", "-1"])
            .await;
        s.dead.insert(account.into(), dead);
        let busy = c
            .strings(&["HGET", &format!("{base}:acct:{account}"), "busy"])
            .await;
        s.busy
            .insert(account.into(), busy.into_iter().next().unwrap_or_default());
        let bound = c
            .strings(&["HGET", &format!("{base}:acct:{account}"), "d"])
            .await;
        s.bound.insert(
            account.into(),
            bound.into_iter().next().and_then(|d| d.parse().ok()),
        );
    }
    // (the leases: the set's anchor, at +inf, is none)
    s.inflight = c
        .strings(&[
            "ZRANGEBYSCORE",
            &format!("{base}:inflight"),
            "-inf",
            "(+inf",
        ])
        .await;
    s.delayed = c
        .strings(&["ZRANGE", &format!("{base}:delayed"), "0", "-1"])
        .await;
    // a claim writes nothing into the event: a queued call whose lease is in the
    // in-flight set is being delivered
    for (id, (_, status)) in s.deliveries.iter_mut() {
        if status == "queued" && s.inflight.contains(id) {
            *status = "delivering".into();
        }
    }
    s
}

/// No delivery is stranded: each unfinished one is exactly where its status says (a
/// list, in flight, or waiting for a retry) and nowhere else; finished ones are in no
/// list or set but their own account's dead letters. List entries of anything else are
/// stale entries (claims drop them) unless `settled`, when there must be none, and every
/// counter must equal what it counts.
async fn check(q: &Queues, what: &str, settled: bool) {
    let s = snapshot(q).await;
    let count = |v: &[String], id: &str| v.iter().filter(|x| *x == id).count();
    for (id, (acct, status)) in &s.deliveries {
        let listed = s.listed.get(id).copied().unwrap_or(0);
        let inflight = count(&s.inflight, id);
        let delayed = count(&s.delayed, id);
        let retry = count(&s.retry[acct.as_str()], id);
        let dead = count(&s.dead[acct.as_str()], id);
        let place = (listed, inflight, delayed, retry, dead);
        // among its account's lease group in flight (its ids, one space apart)
        let in_group = |id: &str| s.busy[acct.as_str()].split(' ').any(|x| x == id);
        let expected_ok = match status.as_str() {
            // a replay that failed before the letter left the dead set: its claim removes it
            "queued" => {
                place == (1, 0, 0, 0, 0)
                    || (!settled && place == (1, 0, 0, 0, 1) && s.replayed.contains(id))
            }
            "delivering" => place == (0, 1, 0, 0, 0) && in_group(id),
            "retrying" => place == (0, 0, 1, 1, 0),
            "dead" | "expired" => place.1 + place.2 + place.3 == 0 && place.4 <= 1,
            // a late success while another holder's lease runs
            "delivered" => place.2 + place.3 + place.4 == 0 && (place.1 == 0 || in_group(id)),
            _ => false,
        };
        assert!(
            expected_ok,
            "{what}: {id} is {status} but (listed, inflight, delayed, retry, dead) = {place:?}"
        );
        if settled {
            assert!(
                listed == 0 || status == "queued",
                "{what}: stale entry {id} ({status})"
            );
        }
    }
    // an account's bound on its depth is never below its unfinished calls
    for (account, bound) in &s.bound {
        let unfinished = s
            .deliveries
            .values()
            .filter(|(acct, status)| {
                acct == account && ["queued", "delivering", "retrying"].contains(&status.as_str())
            })
            .count() as u64;
        if let Some(bound) = bound {
            assert!(
                *bound >= unfinished,
                "{what}: {account}'s bound {bound} is below its {unfinished} unfinished calls"
            );
        }
    }
    // nothing in a set that is not a delivery in the matching state
    for id in s.inflight.iter() {
        assert!(
            s.deliveries.get(id).is_some_and(|d| {
                d.1 == "delivering" || s.busy[d.0.as_str()].split(' ').any(|x| x == id)
            }),
            "{what}: leftover lease {id}"
        );
    }
    for id in s.delayed.iter().chain(s.retry.values().flatten()) {
        assert!(
            s.deliveries.get(id).is_some_and(|d| d.1 == "retrying"),
            "{what}: leftover retry {id}"
        );
    }
    for id in s.dead.values().flatten() {
        assert!(
            s.deliveries.get(id).is_some_and(|d| d.1 == "dead"
                || d.1 == "expired"
                || (!settled && d.1 == "queued" && s.replayed.contains(id))),
            "{what}: leftover dead letter {id}"
        );
    }
    if settled {
        let stats = q.normal.stats().await.unwrap();
        for a in stats.accounts {
            let mine = |st: &[&str]| {
                s.deliveries
                    .values()
                    .filter(|(acct, status)| *acct == a.account && st.contains(&status.as_str()))
                    .count() as u64
            };
            assert_eq!(
                a.depth,
                mine(&["queued", "delivering", "retrying"]),
                "{what}: depth of {}",
                a.account
            );
            assert_eq!(
                a.scheduled_retries,
                mine(&["retrying"]),
                "{what}: retries of {}",
                a.account
            );
            assert_eq!(
                a.dead,
                s.dead[a.account.as_str()].len() as u64,
                "{what}: dead of {}",
                a.account
            );
        }
    }
}

/// Runs the gateway's normal work (claims, which reap, and successful completions; an
/// operator resuming held accounts) until every delivery has finished.
async fn drain(q: &Queues, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = snapshot(q).await;
        let open = s
            .deliveries
            .values()
            .filter(|(_, st)| matches!(st.as_str(), "queued" | "delivering" | "retrying"))
            .count();
        if open == 0 && s.inflight.is_empty() && s.delayed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {open} deliveries never finished: {s:?}"
        );
        for a in q.normal.stats().await.unwrap().accounts {
            if a.paused || a.auth_failed {
                q.normal.resume(&a.account).await.unwrap();
            }
        }
        let batch = q.normal.claim(0, 100).await.unwrap();
        if batch.items.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let done: Vec<Completion> = batch
            .items
            .iter()
            .map(|c| Completion::of(c, ok()))
            .collect();
        q.normal.complete(&done).await.unwrap();
        check(q, what, false).await;
    }
    // one more claim drops stale entries left at the heads
    q.normal.claim(0, 100).await.unwrap();
    check(q, what, true).await;
    let s = snapshot(q).await;
    assert!(s.busy.values().all(String::is_empty), "{what}: still busy");
}

/// Fails `op` after each of its writes in turn; returns how many write positions it has.
async fn fail_everywhere(backend: Backend<'_>, name: &str, op: Op) -> usize {
    for n in 1..100 {
        let q = queues(backend, n);
        let what = format!("{name} failing after write {n}");
        match run(op, &q).await {
            Ok(()) => {
                // completed without reaching write n: every position was tried
                check(&q, &what, false).await;
                drain(&q, &what).await;
                return n - 1;
            }
            Err(e) => {
                let e = format!("{e:#}");
                assert!(
                    e.contains(&format!("injected failure after write {n}")),
                    "{what}: failed otherwise than by the injected failure: {e}"
                );
            }
        }
        // the survivors: leases and retries come due and are reaped
        tokio::time::sleep(Duration::from_millis(LEASE_MS + 30)).await;
        q.normal.claim(0, 0).await.unwrap();
        check(&q, &what, false).await;
        drain(&q, &what).await;
    }
    panic!("{name} never completed");
}

/// Fails every operation after each of its writes in turn.
async fn a_script_failing_after_any_write_strands_nothing(backend: Backend<'_>) {
    let ops: Vec<(&str, Op)> = vec![
        ("enqueue", Op::Enqueue),
        ("enqueue of two accounts in one call", Op::EnqueueShared),
        ("claim", Op::Claim),
        ("complete delivered", Op::Complete(ok)),
        ("complete retry", Op::Complete(|| retry(50))),
        ("complete dead", Op::Complete(dead)),
        ("complete released", Op::Complete(|| Outcome::Released)),
        (
            "complete rate limited",
            Op::Complete(|| Outcome::RateLimited {
                retry_after: Duration::from_millis(50),
            }),
        ),
        (
            "complete auth failed",
            Op::Complete(|| Outcome::AuthFailed {
                status: 401,
                error: "no".into(),
            }),
        ),
        ("complete a lease group", Op::CompleteGroup(false)),
        (
            "complete a lease group stopped by a 429",
            Op::CompleteGroup(true),
        ),
        ("complete two accounts in one call", Op::CompleteAccounts),
        (
            "complete a lease group's successes in one pass",
            Op::CompleteWholeGroup,
        ),
        ("reap lease", Op::ReapLease),
        ("reap retry", Op::ReapRetry),
        ("late success, queued again", Op::LateSuccessQueued),
        ("late success, retry waiting", Op::LateSuccessRetrying),
        ("late success, claimed again", Op::LateSuccessWhileReclaimed),
        ("replay", Op::Replay),
        ("purge", Op::Purge),
        ("pause", Op::Pause),
        ("resume", Op::Resume),
        ("expire held", Op::ExpireHeld),
    ];
    let runs = ops
        .iter()
        .map(|(name, op)| async move { (*name, fail_everywhere(backend, name, *op).await) });
    let positions = futures::future::join_all(runs).await;
    for (name, writes) in positions {
        assert!(writes > 0, "{name} was never failed after a write");
    }
}

/// A completion whose reply was lost is retried, by then perhaps after its call was
/// claimed again: the retry must find itself stale. A lease's token is its end, so a call's
/// next lease must end after every earlier one, including one a completion ended early
/// (whose end may lie after the next claim's). The early end is recorded with the call;
/// here it is moved an hour ahead, as a longer lease would have it.
async fn a_retried_completion_after_a_new_claim_is_stale(backend: Backend<'_>) {
    let (q, first) = one_claimed(backend, usize::MAX).await;
    let done = |c: &Claimed, outcome: Outcome| Completion::of(c, outcome);
    q.normal
        .complete(&[done(&first, Outcome::Released)])
        .await
        .unwrap();
    let (eid, _) = first.delivery_id.rsplit_once(':').unwrap();
    let ekey = format!("{}:{{p0}}:ev:{eid}", q.prefix);
    let mut c = Conn::open(&q.store).await;
    let recorded = c.strings(&["HGET", &ekey, "c0"]).await;
    assert_eq!(
        recorded,
        [first.lease_token.to_string()],
        "the early end is recorded"
    );
    let later = Claimed {
        lease_token: first.lease_token + 3_600_000,
        ..first.clone()
    };
    c.run(&["HSET", &ekey, "c0", &later.lease_token.to_string()])
        .await;
    let second = claim_one(&*q.normal).await;
    assert_eq!(second.delivery_id, first.delivery_id);
    assert!(
        second.lease_token > later.lease_token,
        "a new lease ends after the one ended early: {} <= {}",
        second.lease_token,
        later.lease_token
    );
    // the retried release is stale: the call stays in flight, not queued again
    q.normal
        .complete(&[done(&later, Outcome::Released)])
        .await
        .unwrap();
    let acme = account_stats(&q).await;
    assert_eq!(
        (acme.in_flight, acme.depth),
        (1, 1),
        "still in flight, once"
    );
    assert!(q.normal.claim(0, 10).await.unwrap().items.is_empty());
    q.normal.complete(&[done(&second, ok())]).await.unwrap();
    let record = q.normal.event(&EventId::parse(eid).unwrap()).await.unwrap();
    let call = &record.unwrap().deliveries[0];
    assert_eq!((call.status.as_str(), call.attempts), ("delivered", 1));
}

/// `ACCOUNT`'s stats, as the normal queue reads them.
async fn account_stats(q: &Queues) -> AccountStats {
    let stats = q.normal.stats().await.unwrap();
    stats
        .accounts
        .into_iter()
        .find(|a| a.account == ACCOUNT)
        .expect("the account has stats")
}

/// Queues that fail after write `n`, with one event of `ACCOUNT` stored and claimed.
async fn one_claimed(backend: Backend<'_>, n: usize) -> (Queues, Claimed) {
    let q = queues(backend, n);
    put(
        &*q.normal,
        ACCOUNT,
        vec![event("a", 1, Priority::Normal, 0)],
    )
    .await
    .unwrap();
    let c = claim_one(&*q.normal).await;
    (q, c)
}

/// The attempts the event view shows for the call `c`.
async fn attempts_of(q: &Queues, c: &Claimed) -> u32 {
    let (eid, _) = c.delivery_id.rsplit_once(':').unwrap();
    let record = q.normal.event(&EventId::parse(eid).unwrap()).await.unwrap();
    record.unwrap().deliveries[0].attempts
}

/// An attempt counts once, however its recording fails part-way: a completion done again
/// after it failed (the worker retries it), and a completion of a lease whose reap failed
/// before the lease left the in-flight set (its holder still owns it), each after every
/// write of the failing call in turn; and a retry whose completion failed and was never
/// done again, whose put-back comes due before its lease ends. A retry and a success of
/// the first attempt leave 1.
async fn an_attempt_counts_once_when_its_recording_fails_part_way(backend: Backend<'_>) {
    for outcome in [retry(60_000), ok()] {
        // the completion fails part-way, and is done again
        for n in 1..20 {
            let (q, c) = one_claimed(backend, n).await;
            let done = [Completion::of(&c, outcome.clone())];
            let failed = q.failing.complete(&done).await.is_err();
            q.normal.complete(&done).await.unwrap();
            let what = format!("{outcome:?}, completion failing after write {n}");
            assert_eq!(attempts_of(&q, &c).await, 1, "{what}");
            if !failed {
                break;
            }
        }
        // the reap fails part-way; the holder's completion comes before the next reap
        for n in 1..20 {
            let (q, c) = one_claimed(backend, n).await;
            tokio::time::sleep(Duration::from_millis(LEASE_MS + 30)).await;
            let failed = q.failing.claim(0, 0).await.is_err();
            q.normal
                .complete(&[Completion::of(&c, outcome.clone())])
                .await
                .unwrap();
            let what = format!("{outcome:?}, reap failing after write {n}");
            assert_eq!(attempts_of(&q, &c).await, 1, "{what}");
            if !failed {
                break;
            }
        }
    }
    // the completion fails part-way and is never done again (its worker died): its
    // retry comes due while its lease is still in flight, then the lease ends
    for n in 1..20 {
        let (q, c) = one_claimed(backend, n).await;
        let failing = [Completion::of(&c, retry(0))];
        let failed = q.failing.complete(&failing).await.is_err();
        q.normal.claim(0, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(LEASE_MS + 30)).await;
        q.normal.claim(0, 0).await.unwrap();
        let what = format!("a retry, completion failing after write {n}, never done again");
        assert_eq!(attempts_of(&q, &c).await, 1, "{what}");
        if !failed {
            break;
        }
    }
}

/// A success reported after its lease ran out, while a new holder's completion of the
/// call fails part-way (after each of its writes in turn) and is done again, is counted
/// once in the account's delivered calls, whether the holder's own outcome was a success
/// or a retry.
async fn a_late_success_counts_once_around_a_failing_completion(backend: Backend<'_>) {
    // (a retry the failing completion scheduled before it failed is due, and reaped,
    // before the end)
    for outcome in [retry(50), ok()] {
        for n in 1..20 {
            let (q, first) = one_claimed(backend, n).await;
            tokio::time::sleep(Duration::from_millis(LEASE_MS + 30)).await;
            let second = claim_one(&*q.normal).await;
            assert_eq!(second.delivery_id, first.delivery_id);
            let holder = [Completion::of(&second, outcome.clone())];
            let failed = q.failing.complete(&holder).await.is_err();
            q.normal
                .complete(&[Completion::of(&first, ok())])
                .await
                .unwrap();
            q.normal.complete(&holder).await.unwrap();
            // whatever the failure left in flight is reaped
            tokio::time::sleep(Duration::from_millis(LEASE_MS + 30)).await;
            assert!(q.normal.claim(0, 10).await.unwrap().items.is_empty());
            let acme = account_stats(&q).await;
            let what = format!("{outcome:?}, the holder's completion failing after write {n}");
            assert_eq!(
                (acme.delivered, acme.in_flight, acme.depth),
                (1, 0, 0),
                "{what}"
            );
            if !failed {
                break;
            }
        }
    }
}

/// Each scenario as a test on a Redis server of its own (`on_redis::`) and on the embedded
/// store (`on_embedded::`).
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod on_redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let redis = crate::support::RedisServer::start();
                    super::$scenario(super::Backend::Redis(&redis)).await
                }
            )*
        }
        mod on_embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Backend::Embedded).await
                }
            )*
        }
    };
}

on_both_stores!(
    a_script_failing_after_any_write_strands_nothing,
    a_retried_completion_after_a_new_claim_is_stale,
    an_attempt_counts_once_when_its_recording_fails_part_way,
    a_late_success_counts_once_around_a_failing_completion,
);

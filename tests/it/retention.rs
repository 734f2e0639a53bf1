//! Bounded growth: dead letters, finished events, idle accounts' records and the change
//! sets' entries are dropped after their retentions, so Redis returns to where it was once a burst is delivered or
//! has died. The key count is checked on both backends, Redis's memory use on Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId, NotifyPayload, Priority};
use zenrelay::queue::{ChangeReads, Completion, EnqueueBatch, NewEvent, Outcome, Queue, RateLimit};

use crate::support::RedisServer;

const LIMIT: RateLimit = RateLimit {
    limit: 1000,
    window_ms: 1000,
};

/// The partitions' change sets remember an account's change for a second (an hour in
/// production), so that they empty too within the tests.
fn change_reads() -> ChangeReads {
    ChangeReads {
        kept_ms: 1000,
        ..ChangeReads::default()
    }
}

fn used_memory(redis: &RedisServer) -> i64 {
    redis
        .info_field("memory", "used_memory")
        .and_then(|v| v.parse().ok())
        .expect("used_memory in INFO memory")
}

async fn put(q: &dyn Queue, account: &str, n: usize) {
    put_limited(q, account, n, LIMIT).await
}

/// As [`put`], with the account's rate limit `limit`.
async fn put_limited(q: &dyn Queue, account: &str, n: usize, limit: RateLimit) {
    let events = (0..n)
        .map(|i| NewEvent {
            id: EventId::new(partition_of(account, 1)),
            priority: Priority::Normal,
            ttl_ms: 0,
            payload: NotifyPayload::new(1, &format!("event {i} {}", "x".repeat(200)), None),
            agents: vec![None],
            idempotency: Some((format!("key-{i}"), "fp".into())),
        })
        .collect();
    q.enqueue(EnqueueBatch {
        account: account.into(),
        limit,
        max_depth: 100_000,
        idempotency_ttl_secs: 1,
        events,
    })
    .await
    .unwrap();
}

/// Claims and completes until nothing is left: calls of accounts named `dead-*` become
/// dead letters, the others are delivered.
async fn deliver_all(q: &dyn Queue) {
    loop {
        let batch = q.claim(0, 100).await.unwrap();
        if batch.items.is_empty() {
            if batch.next_due.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let done: Vec<Completion> = batch
            .items
            .iter()
            .map(|c| {
                let outcome = if c.account.starts_with("dead-") {
                    Outcome::Dead {
                        reason: zenrelay::queue::DeadReason::Rejected,
                        status: Some(422),
                        error: "no".into(),
                    }
                } else {
                    Outcome::Delivered { status: 200 }
                };
                Completion::of(c, outcome)
            })
            .collect();
        q.complete(&done).await.unwrap();
    }
}

/// The partition's sweep marker (`{base}:sweep`): it expires within a sweep's pause, and
/// each claim that finds it gone sets it again, so the key counts below leave
/// it out (claims at the pace of its expiry would otherwise always find it there).
const SWEEP_MARKER: &str = "zenrelay:{p0}:sweep";

/// Claims (which sweep) until the store holds `keys` keys besides the sweep marker.
async fn swept_down_to(dbsize: &dyn Fn() -> i64, q: &dyn Queue, keys: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while dbsize() != keys {
        assert!(
            Instant::now() < deadline,
            "{} keys left, expected {keys}",
            dbsize()
        );
        q.claim(0, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_returns_to_its_baseline_after_a_burst_is_delivered_or_dies() {
    let redis = RedisServer::start();
    let mut config = Config::default();
    config.redis.url = redis.url().into();
    config.redis.partitions = 1;
    config.delivery.lease_ms = Some(1000);
    config.delivery.dead_letter_retention_seconds = 1;
    config.delivery.event_retention_seconds = 1;
    config.delivery.account_retention_seconds = 1;
    let q: Arc<dyn Queue> = Arc::new(
        zenrelay::app::redis_queue(&config)
            .unwrap()
            .with_change_reads(change_reads()),
    );
    // Warm up (scripts loaded, the partition count recorded), then the baseline.
    put(q.as_ref(), "dead-warm", 1).await;
    deliver_all(q.as_ref()).await;
    q.stats().await.unwrap();
    let dbsize = || {
        let marker = redis.command(&["EXISTS", SWEEP_MARKER]) == Some(":1\r\n".into());
        redis.dbsize() - i64::from(marker)
    };
    // (the partition count and the in-flight set, which keeps its anchor)
    swept_down_to(&dbsize, q.as_ref(), 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (keys, memory) = (dbsize(), used_memory(&redis));
    q.take_dead_letters_dropped();

    let accounts: Vec<String> = (0..40)
        .map(|i| format!("{}-{i}", if i % 2 == 0 { "dead" } else { "live" }))
        .collect();
    for a in &accounts {
        put(q.as_ref(), a, 50).await;
    }
    let peak = used_memory(&redis);
    assert!(
        peak > memory + 500_000,
        "the burst is too small to tell: {memory} → {peak}"
    );
    deliver_all(q.as_ref()).await;
    assert_eq!(q.stats().await.unwrap().accounts.len(), 40);
    let kept = used_memory(&redis);

    swept_down_to(&dbsize, q.as_ref(), keys).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dbsize(), keys);
    let after = used_memory(&redis);
    println!(
        "Redis used_memory: {memory} B before 2,000 events (1,000 delivered, 1,000 dead), \
         {peak} B queued, {kept} B with the finished events and dead letters kept \
         ({} B each), {after} B after their retentions ({} B each)",
        (kept - memory) / 2000,
        (after - memory) / 2000
    );
    assert!(
        after < memory + 64 * 1024,
        "used_memory {memory} before the burst, {peak} at its peak, {after} after"
    );
    assert!(q.stats().await.unwrap().accounts.is_empty());
    assert_eq!(q.take_dead_letters_dropped(), 20 * 50);
}

#[tokio::test]
async fn the_embedded_store_returns_to_its_baseline_after_a_burst_is_delivered_or_dies() {
    let mut config = Config::default();
    config.redis.url = "memory://".into();
    config.redis.partitions = 1;
    config.delivery.lease_ms = Some(1000);
    config.delivery.dead_letter_retention_seconds = 1;
    config.delivery.event_retention_seconds = 1;
    config.delivery.account_retention_seconds = 1;
    let q = Arc::new(zenrelay::app::memory_queue(&config).with_change_reads(change_reads()));
    let dbsize = || {
        let count = |args: &[&[u8]]| {
            let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
            match q.transport().command(&args) {
                Ok(redis::Value::Int(n)) => n,
                other => panic!("{args:?} answered {other:?}"),
            }
        };
        count(&[b"DBSIZE"]) - count(&[b"EXISTS", SWEEP_MARKER.as_bytes()])
    };
    put(q.as_ref(), "dead-warm", 1).await;
    deliver_all(q.as_ref()).await;
    swept_down_to(&dbsize, q.as_ref(), 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys = dbsize();
    assert_eq!(
        keys, 2,
        "only the partition count and the in-flight set's anchor are left"
    );
    q.take_dead_letters_dropped();

    let accounts: Vec<String> = (0..40)
        .map(|i| format!("{}-{i}", if i % 2 == 0 { "dead" } else { "live" }))
        .collect();
    for a in &accounts {
        put(q.as_ref(), a, 50).await;
    }
    assert!(dbsize() > 40 * 50, "every event is stored");
    deliver_all(q.as_ref()).await;
    assert_eq!(q.stats().await.unwrap().accounts.len(), 40);

    swept_down_to(&dbsize, q.as_ref(), keys).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dbsize(), keys);
    assert!(q.stats().await.unwrap().accounts.is_empty());
    assert_eq!(q.take_dead_letters_dropped(), 20 * 50);
}

/// A partition's retention sweeps take a round (a tenth of the shorter retention, at most
/// ten minutes, at least the sweep interval) to visit all of its accounts: each sweep
/// pauses the next for its share of the round.
#[tokio::test]
async fn a_partitions_sweeps_visit_its_accounts_once_a_round() {
    let redis = RedisServer::start();
    let pttl_after_a_sweep = |retention_s: u64, accounts: usize, prefix: &'static str| {
        let mut config = one_partition_on(&redis, prefix);
        config.delivery.dead_letter_retention_seconds = retention_s;
        config.delivery.account_retention_seconds = retention_s * 2;
        let redis = &redis;
        async move {
            let q: Arc<dyn Queue> = zenrelay::app::queue_for(&config).unwrap();
            for a in 0..accounts {
                put(q.as_ref(), &format!("acct-{a}"), 1).await;
            }
            // The first claim sweeps: 8 accounts at most.
            q.claim(0, 0).await.unwrap();
            pttl(redis, &format!("{prefix}:{{p0}}:sweep"))
        }
    };
    // Retentions of days: a round of ten minutes, of one account here.
    let pause = pttl_after_a_sweep(7 * 86_400, 1, "week").await;
    assert!((590_000..=600_000).contains(&pause), "{pause}");
    // 100 s: 10 s.
    let pause = pttl_after_a_sweep(100, 1, "short").await;
    assert!((5_000..=10_000).contains(&pause), "{pause}");
    // A quarter of the accounts visited: a quarter of the round.
    let pause = pttl_after_a_sweep(100, 32, "many").await;
    assert!((2_000..=2_500).contains(&pause), "{pause}");
    // 1 s: the sweep interval (250 ms with one partition), not less.
    let pause = pttl_after_a_sweep(1, 1, "second").await;
    assert!((1..=250).contains(&pause), "{pause}");
}

/// A sweep that drops idle accounts' records counts them among the partition's accounts
/// when it paces the next sweep: dropping 8 of 9 pauses for 8/9 of a round, not 8 rounds.
#[tokio::test]
async fn a_sweep_that_drops_records_pauses_for_its_share_of_a_round() {
    let redis = RedisServer::start();
    let mut config = one_partition_on(&redis, "drop");
    // a round of 10 s
    config.delivery.dead_letter_retention_seconds = 100;
    config.delivery.account_retention_seconds = 200;
    let q: Arc<dyn Queue> = zenrelay::app::queue_for(&config).unwrap();
    // Nine accounts idle since long before their retention, made by hand.
    for a in 0..9 {
        let name = format!("idle-{a}");
        redis.command(&["SADD", "drop:{p0}:accounts", &name]);
        redis.command(&[
            "HSET",
            &format!("drop:{{p0}}:acct:{name}"),
            "idle_since",
            "1",
        ]);
    }
    // The first claim sweeps 8 of them, and drops their records.
    q.claim(0, 0).await.unwrap();
    assert_eq!(
        redis.command(&["SCARD", "drop:{p0}:accounts"]).as_deref(),
        Some(":1\r\n")
    );
    let pause = pttl(&redis, "drop:{p0}:sweep");
    assert!((8_000..=8_888).contains(&pause), "{pause}");
}

/// The default config, with the queue in one partition on `redis` under `prefix`.
fn one_partition_on(redis: &RedisServer, prefix: &str) -> Config {
    let mut config = Config::default();
    config.redis.url = redis.url().into();
    config.redis.key_prefix = prefix.into();
    config.redis.partitions = 1;
    config
}

/// The time to live of `key` on `redis`, in ms (`PTTL`: -2 when it is missing, -1 when it
/// never expires; -1 too when the answer is not a number).
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis
        .command(&["PTTL", key])
        .unwrap_or_default()
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or(-1)
}

/// An idle account's record (with its rate log) outlives the account retention while the
/// latest send it logs still counts in the account's window: dropping it would let the
/// account send its whole limit again within that window.
#[tokio::test]
async fn an_idle_account_keeps_its_record_while_its_latest_send_counts() {
    let redis = RedisServer::start();
    let mut config = one_partition_on(&redis, "keep");
    config.delivery.dead_letter_retention_seconds = 1;
    config.delivery.event_retention_seconds = 1;
    config.delivery.account_retention_seconds = 1;
    let q: Arc<dyn Queue> = zenrelay::app::queue_for(&config).unwrap();
    let minute = RateLimit {
        limit: 10,
        window_ms: 60_000,
    };
    put_limited(q.as_ref(), "live-minute", 1, minute).await;
    put(q.as_ref(), "live-second", 1).await;
    deliver_all(q.as_ref()).await;
    let record = |account: &str| {
        redis.command(&["EXISTS", &format!("keep:{{p0}}:acct:{account}")]) == Some(":1\r\n".into())
    };
    // Idle past the account retention, swept again and again: the account whose send
    // left its 1 s window is dropped, the one whose send is within its minute is kept.
    let deadline = Instant::now() + Duration::from_secs(15);
    while record("live-second") {
        assert!(
            Instant::now() < deadline,
            "the idle account was never dropped"
        );
        q.claim(0, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(record("live-minute"), "dropped while its send counts");
    let log = redis
        .command(&["HGET", "keep:{p0}:acct:live-minute", "rl"])
        .unwrap_or_default();
    assert!(log.starts_with("$13\r\n"), "{log:?}");
}

/// An account with a limit over 128 keeps in its rate log, at each send, only the times
/// that can still hold back a send: after a burst of 130 calls and a pause past the
/// window, the next send leaves a log of that send alone (each time is 13 digits).
async fn a_long_rate_log_is_cut_to_the_sends_that_count(
    q: &dyn Queue,
    log_len: &dyn Fn() -> usize,
) {
    let high = RateLimit {
        limit: 150,
        // long enough for the burst on a loaded machine
        window_ms: 5_000,
    };
    put_limited(q, "burst", 130, high).await;
    deliver_all(q).await;
    assert_eq!(log_len(), 130 * 13, "every send of the burst counts");
    // past the window (and the 1 s idempotency keys `put_limited` reuses)
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    put_limited(q, "burst", 1, high).await;
    deliver_all(q).await;
    assert_eq!(log_len(), 13);
}

fn no_margin() -> Config {
    let mut config = Config::default();
    config.redis.partitions = 1;
    config.delivery.window_margin_ms = Some(0);
    config
}

#[tokio::test]
async fn a_long_rate_log_is_cut_on_redis() {
    let redis = RedisServer::start();
    let mut config = no_margin();
    config.redis.url = redis.url().into();
    let q = zenrelay::app::queue_for(&config).unwrap();
    // the HGET reply's length header: `$<length>`
    let log_len = || {
        let reply = redis
            .command(&["HGET", "zenrelay:{p0}:acct:burst", "rl"])
            .unwrap_or_default();
        reply
            .strip_prefix('$')
            .and_then(|r| r.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    a_long_rate_log_is_cut_to_the_sends_that_count(q.as_ref(), &log_len).await;
}

#[tokio::test]
async fn a_long_rate_log_is_cut_on_the_embedded_store() {
    let q = zenrelay::app::memory_queue(&no_margin());
    let log_len = || match q.transport().command(&[
        b"HGET".to_vec(),
        b"zenrelay:{p0}:acct:burst".to_vec(),
        b"rl".to_vec(),
    ]) {
        Ok(redis::Value::BulkString(log)) => log.len(),
        _ => 0,
    };
    a_long_rate_log_is_cut_to_the_sends_that_count(&q, &log_len).await;
}

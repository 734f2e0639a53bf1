//! The stats a process keeps between reads (`src/queue/snapshot.rs`): after a first whole
//! read it reads only the accounts changed since, however many changed in one
//! millisecond, and it reads each partition whole again now and then, which also mends
//! what no script recorded. Against a real `redis-server`, whose `INFO commandstats`
//! tells a whole read (it walks the account set with `SSCAN`) from a read of changes.

use std::time::Duration;

use serde_json::json;
use zenrelay::config::Config;
use zenrelay::domain::partition_of;
use zenrelay::queue::redis::{RedisQueue, HELPERS};
use zenrelay::queue::{ChangeReads, Completion, Outcome, Queue, QueueStats};

use crate::support::RedisServer;

const ACCOUNTS: usize = 40;

fn queue(redis: &RedisServer, reads: ChangeReads) -> RedisQueue {
    let mut config = Config::default();
    config.redis.url = redis.url().into();
    config.redis.partitions = 1;
    zenrelay::app::redis_queue(&config)
        .expect("Redis queue builds")
        .with_change_reads(reads)
        // no retention sweep (it walks the account set too) after the first claim
        .with_sweep_interval(Duration::from_secs(3600))
}

async fn put(q: &RedisQueue, account: &str) {
    q.enqueue(crate::support::one_plain_batch(account, 1, "{}"))
        .await
        .expect("stored");
}

/// How many `SSCAN`s Redis has run.
fn sscans(redis: &RedisServer) -> u64 {
    redis.command_calls("sscan")
}

fn shown(stats: &QueueStats) -> serde_json::Value {
    json!(stats.accounts)
}

#[tokio::test]
async fn a_read_of_changes_goes_past_many_changes_of_one_millisecond() {
    let redis = RedisServer::start();
    let q = queue(&redis, ChangeReads::default());
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct-{i:02}")).collect();
    for name in &names {
        put(&q, name).await;
    }
    assert_eq!(q.stats().await.expect("stats").accounts.len(), ACCOUNTS);
    // Claims of 16 accounts per script call: 16 changes at each call's millisecond.
    let batch = q.claim(0, ACCOUNTS).await.expect("claim");
    assert_eq!(batch.items.len(), ACCOUNTS);
    let done: Vec<Completion> = batch
        .items
        .iter()
        .map(|c| Completion::of(c, Outcome::Delivered { status: 200 }))
        .collect();
    q.complete(&done).await.expect("complete");

    let before = sscans(&redis);
    let kept = q.stats().await.expect("stats");
    assert_eq!(
        sscans(&redis),
        before,
        "the changes were read, not the whole partition"
    );
    let whole = q.sibling(1, HELPERS).stats().await.expect("stats");
    assert_eq!(shown(&kept), shown(&whole));
    assert!(kept
        .accounts
        .iter()
        .all(|a| a.delivered == 1 && a.depth == 0));

    // All 40 recorded at one millisecond (written here, to be sure of it): read in
    // chunks of 16 that go on after the last account read.
    let time = redis.command(&["TIME"]).unwrap_or_default();
    let parts: Vec<u64> = time.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let ms = (parts[0] * 1000 + parts[1] / 1000 - 1).to_string();
    let base = "zenrelay:{p0}";
    for name in &names {
        redis.command(&["HSET", &format!("{base}:acct:{name}"), "sent", "5"]);
        redis.command(&["ZADD", &format!("{base}:changed"), &ms, name]);
    }
    let before = sscans(&redis);
    let kept = q.stats().await.expect("stats");
    assert_eq!(sscans(&redis), before);
    assert!(
        kept.accounts.iter().all(|a| a.delivered == 5),
        "{:?}",
        shown(&kept)
    );
}

#[tokio::test]
async fn each_partition_is_read_whole_again_now_and_then() {
    let redis = RedisServer::start();
    // No clock slack: a read of changes does not read the enqueue again.
    let reads = ChangeReads {
        whole_every_ms: 1_000,
        slack_ms: 0,
        ..ChangeReads::default()
    };
    let q = queue(&redis, reads);
    put(&q, "acme").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(q.stats().await.expect("stats").accounts[0].delivered, 0);
    // A change no script recorded (as a restored backup, or a failover that lost writes
    // already read, would leave): reads of changes do not see it...
    let base = format!("zenrelay:{{p{}}}", partition_of("acme", 1));
    redis.command(&["HSET", &format!("{base}:acct:acme"), "sent", "7"]);
    let before = sscans(&redis);
    assert_eq!(q.stats().await.expect("stats").accounts[0].delivered, 0);
    assert_eq!(sscans(&redis), before);
    // ...the next whole read, due within the second, does.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(q.stats().await.expect("stats").accounts[0].delivered, 7);
    assert!(sscans(&redis) > before, "read whole");
}

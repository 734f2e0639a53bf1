//! How long the queue scripts hold Redis at 10,000 accounts and 100,000 queued events.
//! Ignored (it takes a while); run with
//! `cargo test --test it script_time -- --ignored --nocapture`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::Value;
use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId, NotifyPayload, Priority};
use zenrelay::queue::redis::HELPERS;
use zenrelay::queue::{Completion, EnqueueBatch, NewEvent, Outcome, Queue, RateLimit};

use crate::support::RedisServer;

const PARTITIONS: u16 = 16;
const ACCOUNTS: usize = 10_000;
const EVENTS_PER_ACCOUNT: usize = 10;

fn batch(account: &str, n: usize) -> EnqueueBatch {
    EnqueueBatch {
        account: account.into(),
        limit: RateLimit {
            limit: 100,
            window_ms: 60_000,
        },
        max_depth: 100_000,
        idempotency_ttl_secs: 86_400,
        events: (0..n)
            .map(|i| NewEvent {
                id: EventId::new(partition_of(account, PARTITIONS)),
                priority: Priority::Normal,
                ttl_ms: 86_400_000,
                payload: NotifyPayload::new(1, &format!("event {i}"), Some("{\"k\":\"v\"}")),
                agents: vec![None],
                idempotency: None,
            })
            .collect(),
    }
}

/// The scripts' names by SHA1, as Redis logs them.
fn script_names() -> HashMap<String, &'static str> {
    [
        ("enqueue", include_str!("../../src/queue/enqueue.lua")),
        ("claim", include_str!("../../src/queue/claim.lua")),
        ("complete", include_str!("../../src/queue/complete.lua")),
        ("stats", include_str!("../../src/queue/stats.lua")),
    ]
    .into_iter()
    .map(|(name, body)| {
        let sha = redis::Script::new(&format!("{HELPERS}\n{body}"))
            .get_hash()
            .to_string();
        (sha, name)
    })
    .collect()
}

/// Per script (or plain command): the slowest logged call (µs, its first arguments) and
/// the most Redis commands one call of it ran. Commands a script runs are logged before
/// the script's own entry, so they are counted towards the next script entry.
async fn slowest(
    conn: &mut redis::aio::MultiplexedConnection,
) -> HashMap<String, (i64, String, usize)> {
    let names = script_names();
    let log: Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let mut out: HashMap<String, (i64, String, usize)> = HashMap::new();
    let Value::Array(mut entries) = log else {
        panic!("SLOWLOG GET answered {log:?}")
    };
    // oldest first
    entries.reverse();
    let mut inner = 0;
    for entry in entries {
        let Value::Array(f) = entry else { continue };
        let (Some(Value::Int(us)), Some(Value::Array(args))) = (f.get(2), f.get(3)) else {
            continue;
        };
        let args: Vec<String> = args
            .iter()
            .map(|a| match a {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        let (name, calls) = match args.first().map(String::as_str) {
            Some("EVALSHA" | "EVAL") => {
                let name = names
                    .get(args.get(1).map(String::as_str).unwrap_or(""))
                    .map_or("other script".to_string(), |n| n.to_string());
                (name, std::mem::take(&mut inner))
            }
            Some(cmd) => {
                inner += 1;
                (cmd.to_string(), 1)
            }
            None => continue,
        };
        let shown: String = args.iter().take(8).cloned().collect::<Vec<_>>().join(" ");
        let slot = out.entry(name).or_insert((0, String::new(), 0));
        if *us > slot.0 {
            slot.0 = *us;
            slot.1 = shown.chars().take(120).collect();
        }
        slot.2 = slot.2.max(calls);
    }
    out
}

fn names_a_script(name: &str) -> bool {
    matches!(
        name,
        "enqueue" | "claim" | "complete" | "stats" | "other script"
    )
}

#[tokio::test]
#[ignore = "slow: loads 100,000 events; run by hand for the figures"]
async fn script_time_at_ten_thousand_accounts() {
    let redis = RedisServer::start();
    let mut config = Config::default();
    config.redis.url = redis.url().into();
    config.redis.partitions = PARTITIONS;
    config.delivery.lease_ms = Some(2000);
    let q: Arc<dyn Queue> = zenrelay::app::queue_for(&config).unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct-{i}")).collect();
    futures::stream::iter(accounts.iter())
        .map(|a| {
            let q = q.clone();
            async move { q.enqueue(batch(a, EVENTS_PER_ACCOUNT)).await.unwrap() }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let dbsize = redis.dbsize();
    eprintln!("loaded: {dbsize} keys");

    for (k, v) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();

    // What a process does: stats (a /metrics scrape), claims as the worker makes them
    // (256 slots over 16 partitions), completions, a large ingress batch, and reaping.
    q.stats().await.unwrap();
    for _ in 0..5 {
        let requests: Vec<(u16, usize)> = (0..PARTITIONS).map(|p| (p, 16)).collect();
        let batches = q.claim_many(&requests).await.unwrap();
        let done: Vec<Completion> = batches
            .iter()
            .flat_map(|b| &b.items)
            .map(|c| Completion::of(c, Outcome::Delivered { status: 200 }))
            .collect();
        q.complete(&done).await.unwrap();
    }
    q.enqueue(batch("acct-0", 1000)).await.unwrap();
    // leases left to expire, then reaped
    for p in 0..PARTITIONS {
        q.claim(p, 256).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for p in 0..PARTITIONS {
        q.claim(p, 0).await.unwrap();
    }
    q.stats().await.unwrap();

    let mut rows: Vec<_> = slowest(&mut conn).await.into_iter().collect();
    rows.sort_by_key(|(_, (us, _, _))| -*us);
    eprintln!("slowest call (µs), most Redis commands in one call, script, arguments");
    for (name, (us, args, calls)) in &rows {
        if names_a_script(name) {
            eprintln!("{us:>8} µs {calls:>6} calls  {name:<10} {args}");
        }
    }
}

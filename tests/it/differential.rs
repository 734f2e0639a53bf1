//! The embedded backend against a real `redis-server`: the same random sequences of queue
//! operations run on both, and after every step their replies and their whole keyspaces
//! (every key's type, content and time to live) must agree.
//!
//! Both run on real time (Redis `TIME`, tokio's clock unpaused), one shortly after the
//! other, so timestamps differ by a few milliseconds: a value that is a time (a Unix-ms
//! number, an RFC 3339 date, a time to live, a wait) may differ by at most [`TOLERANCE_MS`];
//! everything else must be equal. So that this never changes a decision, every duration
//! the sequence uses is either far shorter than the pause between steps (0-1 ms: due by the
//! next step on both) or far longer than the test (one hour), and steps are a few
//! milliseconds apart so that two steps' times never tie on one side only. Retention
//! sweeps run at every claim (a sweep interval of 1 ms), idle accounts are dropped at
//! once (an account retention of 0), and one run drops dead letters at once too.
//!
//! The seed is printed; `ZENRELAY_DIFF_SEED=<seed>` replays a sequence and
//! `ZENRELAY_DIFF_STEPS=<n>` changes its length.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use serde_json::{json, Value as Json};
use zenrelay::config::Config;
use zenrelay::domain::{partition_of, EventId, NotifyPayload, Priority};
use zenrelay::queue::memory::MemoryQueue;
use zenrelay::queue::redis::{RedisQueue, HELPERS};
use zenrelay::queue::{
    ChangeReads, ClaimBatch, Claimed, Completion, DeadLetterSelection, EnqueueBatch,
    EnqueueOutcome, NewEvent, Outcome, Queue, QueueError, RateLimit,
};

use crate::support::RedisServer;

const PARTITIONS: u16 = 2;
const HOUR_MS: u64 = 3_600_000;
/// How far apart the two backends' clocks may read for one step.
const TOLERANCE_MS: i64 = 1_000;
const ACCOUNTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
/// Least time between two retention sweeps of a partition: every claim step sweeps.
const SWEEP_MS: u64 = 1;

/// One key as `TYPE`, `PTTL` and its content show it.
#[derive(Debug, PartialEq)]
struct KeyDump {
    kind: String,
    ttl: i64,
    /// Strings: the value; lists: the items in order; hashes: field, value, ... by field;
    /// sorted sets: member, score, ... by member; sets: members, sorted.
    items: Vec<String>,
}

type Dump = BTreeMap<String, KeyDump>;

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        Value::Nil => "(nil)".into(),
        other => format!("{other:?}"),
    }
}

fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        other => vec![text(other)],
    }
}

/// Pairs `[a, b, c, d]` sorted by their first element, flattened again.
fn sorted_pairs(items: Vec<String>) -> Vec<String> {
    let mut pairs: Vec<(String, String)> = items
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.into_iter().flat_map(|(a, b)| [a, b]).collect()
}

fn key_dump(kind: String, ttl: i64, content: &Value) -> KeyDump {
    let items = texts(content);
    let items = match kind.as_str() {
        "hash" | "zset" => sorted_pairs(items),
        "set" => {
            let mut items = items;
            items.sort();
            items
        }
        _ => items,
    };
    KeyDump { kind, ttl, items }
}

fn content_command(kind: &str, key: &str) -> Vec<String> {
    let args: &[&str] = match kind {
        "string" => &["GET"],
        "hash" => &["HGETALL"],
        "list" => &["LRANGE"],
        "zset" => &["ZRANGE"],
        "set" => &["SMEMBERS"],
        other => panic!("unexpected key type {other} of {key}"),
    };
    let mut cmd: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cmd.push(key.to_string());
    match kind {
        "list" => cmd.extend(["0".into(), "-1".into()]),
        "zset" => cmd.extend(["0".into(), "-1".into(), "WITHSCORES".into()]),
        _ => {}
    }
    cmd
}

async fn dump_redis(conn: &mut redis::aio::MultiplexedConnection) -> Dump {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    let mut meta = redis::pipe();
    for k in &keys {
        meta.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
    }
    let meta: Vec<Value> = meta.query_async(conn).await.unwrap();
    let (keys, kinds): (Vec<String>, Vec<(String, i64)>) = keys
        .into_iter()
        .zip(
            meta.chunks(2)
                .map(|m| (text(&m[0]), text(&m[1]).parse().unwrap())),
        )
        // expired between KEYS and TYPE, or between TYPE and PTTL
        .filter(|(_, (kind, ttl))| kind != "none" && *ttl != -2)
        .unzip();
    let mut content = redis::pipe();
    for (k, (kind, _)) in keys.iter().zip(&kinds) {
        let cmd = content_command(kind, k);
        let c = content.cmd(&cmd[0]);
        for a in &cmd[1..] {
            c.arg(a);
        }
    }
    let content: Vec<Value> = content.query_async(conn).await.unwrap();
    keys.into_iter()
        .zip(kinds)
        .zip(content)
        .map(|((k, (kind, ttl)), c)| (k, key_dump(kind, ttl, &c)))
        .collect()
}

fn dump_memory(q: &MemoryQueue) -> Dump {
    let run = |args: Vec<String>| -> Value {
        let args: Vec<Vec<u8>> = args.into_iter().map(String::into_bytes).collect();
        q.transport()
            .command(&args)
            .expect("the embedded store answers")
    };
    let keys = texts(&run(vec!["KEYS".into(), "*".into()]));
    keys.into_iter()
        .filter_map(|k| {
            let kind = text(&run(vec!["TYPE".into(), k.clone()]));
            if kind == "none" {
                // expired between KEYS and TYPE
                return None;
            }
            let ttl: i64 = text(&run(vec!["PTTL".into(), k.clone()])).parse().unwrap();
            if ttl == -2 {
                // expired between TYPE and PTTL
                return None;
            }
            let content = run(content_command(&kind, &k));
            let dump = key_dump(kind, ttl, &content);
            Some((k, dump))
        })
        .collect()
}

/// Two renderings of one value agree: equal, or both times within the tolerance.
fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<i64>(), b.parse::<i64>()) {
        // Unix-ms times (scores, fields and list items that hold a time)
        (Ok(x), Ok(y)) => {
            x > 1_000_000_000_000 && y > 1_000_000_000_000 && (x - y).abs() <= TOLERANCE_MS
        }
        _ => match (rfc3339_ms(a), rfc3339_ms(b)) {
            (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE_MS,
            _ => rate_logs_close(a, b) || words_close(a, b),
        },
    }
}

/// Two texts of several words one space apart (a delivered event's summary: status,
/// attempts, upstream status, delivered at, agent, account) whose words agree one by one.
fn words_close(a: &str, b: &str) -> bool {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
    x.len() > 1 && x.len() == y.len() && x.iter().zip(&y).all(|(x, y)| close(x, y))
}

/// Two rate logs (an account's `rl`: Unix-ms times of 13 digits each, back to back) of
/// the same length whose times agree one by one.
fn rate_logs_close(a: &str, b: &str) -> bool {
    let log = |s: &str| s.len() % 13 == 0 && s.bytes().all(|c| c.is_ascii_digit());
    a.len() == b.len()
        && log(a)
        && log(b)
        && a.as_bytes()
            .chunks(13)
            .zip(b.as_bytes().chunks(13))
            .all(|(x, y)| close(&String::from_utf8_lossy(x), &String::from_utf8_lossy(y)))
}

/// `2026-12-04T03:40:00.123Z` as Unix ms.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[10] != b'T' || b[23] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Howard Hinnant's days_from_civil
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

fn compare_dumps(redis: &Dump, memory: &Dump) -> Result<(), String> {
    // A key whose time to live ends within a sweep interval (the retention sweep's
    // marker) may already be gone on the other side; no other key may be missing.
    let expiring = |d: &KeyDump| d.ttl >= 0 && d.ttl <= SWEEP_MS as i64;
    let only_redis: Vec<_> = redis
        .iter()
        .filter(|(k, d)| !memory.contains_key(*k) && !expiring(d))
        .map(|(k, _)| k)
        .collect();
    let only_memory: Vec<_> = memory
        .iter()
        .filter(|(k, d)| !redis.contains_key(*k) && !expiring(d))
        .map(|(k, _)| k)
        .collect();
    if !only_redis.is_empty() || !only_memory.is_empty() {
        return Err(format!(
            "different keys: only in Redis {only_redis:?}, only in memory {only_memory:?}"
        ));
    }
    for (key, r) in redis {
        let Some(m) = memory.get(key) else {
            continue;
        };
        if expiring(r) || expiring(m) {
            // may have gone between its PTTL and its content
            continue;
        }
        let ttl_ok =
            r.ttl == m.ttl || (r.ttl >= 0 && m.ttl >= 0 && (r.ttl - m.ttl).abs() <= TOLERANCE_MS);
        let items_ok = r.items.len() == m.items.len()
            && r.items.iter().zip(&m.items).all(|(a, b)| close(a, b));
        if r.kind != m.kind || !ttl_ok || !items_ok {
            return Err(format!("key {key}:\n  Redis  {r:?}\n  memory {m:?}"));
        }
    }
    Ok(())
}

/// Two replies agree: same shape and values, times within the tolerance (numbers in fields
/// whose name says they are times or waits, and RFC 3339 strings).
fn compare_json(path: &str, a: &Json, b: &Json) -> Result<(), String> {
    let fail = || Err(format!("at {path}: Redis {a} vs memory {b}"));
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            if x.keys().ne(y.keys()) {
                return fail();
            }
            for (k, v) in x {
                compare_json(&format!("{path}.{k}"), v, &y[k])?;
            }
            Ok(())
        }
        (Json::Array(x), Json::Array(y)) => {
            if x.len() != y.len() {
                return fail();
            }
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                compare_json(&format!("{path}[{i}]"), v, w)?;
            }
            Ok(())
        }
        (Json::Number(x), Json::Number(y)) if x != y => {
            let timed = path.ends_with("_ms") || path.ends_with("next_due");
            match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) if timed && (x - y).abs() <= TOLERANCE_MS => Ok(()),
                _ => fail(),
            }
        }
        (Json::String(x), Json::String(y)) if x != y => match (rfc3339_ms(x), rfc3339_ms(y)) {
            (Some(x), Some(y)) if (x - y).abs() <= TOLERANCE_MS => Ok(()),
            _ => fail(),
        },
        _ if a == b => Ok(()),
        _ => fail(),
    }
}

fn claim_json(batch: &ClaimBatch) -> Json {
    let items: Vec<Json> = batch.items.iter().map(claimed_json).collect();
    json!({
        "items": items,
        "next_due": batch.next_due.map(|d| d.as_millis() as u64),
    })
}

fn claimed_json(c: &Claimed) -> Json {
    json!({
        "delivery_id": c.delivery_id,
        "account": c.account,
        "body": String::from_utf8_lossy(&c.body),
        "attempts": c.attempts,
        "created_ms": c.created_ms,
        // the lease's end: a time
        "lease_token_ms": c.lease_token,
    })
}

/// The deliveries both stores claimed, in their order, each as Redis and as the embedded
/// store claimed it (where the stores disagree, the step's comparison fails).
fn pairs(redis: &[ClaimBatch], memory: &[ClaimBatch]) -> Vec<(Claimed, Claimed)> {
    let items = |batches: &[ClaimBatch]| -> Vec<Claimed> {
        batches.iter().flat_map(|b| b.items.clone()).collect()
    };
    items(redis).into_iter().zip(items(memory)).collect()
}

fn result_json<T>(r: Result<T, QueueError>, f: impl FnOnce(T) -> Json) -> Json {
    match r {
        Ok(v) => json!({ "ok": f(v) }),
        Err(e) => json!({ "err": e.to_string() }),
    }
}

/// What the sequence knows, identical for both backends while they agree.
#[derive(Default)]
struct Known {
    events: Vec<EventId>,
    /// Claimed and not completed yet.
    /// Each as Redis and as the embedded store claimed it: its lease token is the
    /// lease's end, which each store's clock sets.
    held: Vec<(Claimed, Claimed)>,
    /// Completed, kept to send stale completions.
    done: Vec<(Claimed, Claimed)>,
    /// Delivery ids that became dead letters at some point.
    dead: Vec<String>,
    /// The account records (`:acct:` keys) after the last step.
    records: Vec<String>,
    /// Accounts paused by an operator.
    paused: std::collections::BTreeSet<&'static str>,
    /// How often each interesting case came up, to show what the sequence covered.
    seen: BTreeMap<&'static str, usize>,
}

impl Known {
    fn saw(&mut self, case: &'static str, times: usize) {
        *self.seen.entry(case).or_default() += times;
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_batch(rng: &mut StdRng, step: usize) -> EnqueueBatch {
    let account = *pick(rng, &ACCOUNTS);
    let events = (0..rng.random_range(1..=3))
        .map(|i| NewEvent {
            id: EventId::new(partition_of(account, PARTITIONS)),
            priority: if rng.random_bool(0.3) {
                Priority::High
            } else {
                Priority::Normal
            },
            ttl_ms: *pick(rng, &[0, 0, 1, HOUR_MS]),
            payload: NotifyPayload::new(1, &format!("s{step}e{i}"), None),
            agents: (0..rng.random_range(1..=3))
                .map(|a| rng.random_bool(0.5).then_some(a + 1))
                .collect(),
            idempotency: rng.random_bool(0.3).then(|| {
                (
                    format!("k{}", rng.random_range(0..4)),
                    format!("fp{}", rng.random_range(0..2)),
                )
            }),
        })
        .collect();
    EnqueueBatch {
        account: account.to_string(),
        limit: RateLimit {
            // A tight limit per hour on one account: it gets throttled and re-scored. The
            // others' sends leave their window at once, so that once idle they are
            // dropped (a record stays while its latest send counts).
            limit: if account == "umbrella" { 2 } else { 1000 },
            window_ms: if account == "umbrella" { HOUR_MS } else { 1 },
        },
        max_depth: *pick(rng, &[8, 1000, 1000]),
        idempotency_ttl_secs: 86_400,
        events,
    }
}

fn random_outcome(rng: &mut StdRng) -> Outcome {
    match rng.random_range(0..20) {
        0..=5 => Outcome::Delivered { status: 200 },
        6..=9 => Outcome::Retry {
            delay: Duration::from_millis(*pick(rng, &[0, 0, 0, HOUR_MS])),
            status: Some(503),
            error: "unavailable".into(),
        },
        10..=13 => Outcome::Dead {
            reason: *pick(
                rng,
                &[
                    zenrelay::queue::DeadReason::Rejected,
                    zenrelay::queue::DeadReason::MaxAttempts,
                ],
            ),
            status: Some(422),
            error: "unprocessable".into(),
        },
        14 | 15 => Outcome::RateLimited {
            retry_after: Duration::from_millis(if rng.random_bool(0.1) { HOUR_MS } else { 1 }),
        },
        16 => Outcome::AuthFailed {
            status: 401,
            error: "bad credentials".into(),
        },
        _ => Outcome::Released,
    }
}

fn selection(rng: &mut StdRng, known: &Known) -> DeadLetterSelection {
    if known.dead.is_empty() || rng.random_bool(0.3) {
        return DeadLetterSelection::All;
    }
    let mut ids: Vec<String> = (0..rng.random_range(1..=3))
        .map(|_| pick(rng, &known.dead).clone())
        .collect();
    if rng.random_bool(0.2) {
        ids.push("nonexistent:0".into());
    }
    DeadLetterSelection::Ids(ids)
}

/// Runs one random operation on both queues; returns what it was and both replies.
async fn step(
    rng: &mut StdRng,
    n: usize,
    known: &mut Known,
    redis: &RedisQueue,
    memory: &MemoryQueue,
) -> (String, Json, Json) {
    match rng.random_range(0..100) {
        0..=15 => {
            let batch = random_batch(rng, n);
            let (r, m) = (
                redis.enqueue(batch.clone()).await,
                memory.enqueue(batch.clone()).await,
            );
            known
                .events
                .extend(batch.events.iter().map(|e| e.id.clone()));
            if known.paused.contains(batch.account.as_str()) {
                let expiring = batch.events.iter().filter(|e| e.ttl_ms == 1).count();
                known.saw("expiring event of a held account", expiring);
            }
            for o in r.iter().flatten() {
                known.saw(
                    match o {
                        EnqueueOutcome::Stored { .. } => "stored",
                        EnqueueOutcome::Duplicate { .. } => "duplicate",
                        EnqueueOutcome::IdempotencyMismatch => "idempotency mismatch",
                        EnqueueOutcome::QueueFull => "queue full",
                    },
                    1,
                );
            }
            let show = |r: Result<_, _>| result_json(r, |o| json!(format!("{o:?}")));
            (format!("enqueue {batch:?}"), show(r), show(m))
        }
        16..=43 => {
            let mut requests: Vec<(u16, usize)> = Vec::new();
            for p in 0..PARTITIONS {
                if rng.random_bool(0.7) {
                    requests.push((p, *pick(rng, &[1, 2, 10])));
                }
            }
            let (r, m) = (
                redis.claim_many(&requests).await,
                memory.claim_many(&requests).await,
            );
            if let (Ok(rb), Ok(mb)) = (&r, &m) {
                let items = pairs(rb, mb);
                known.saw("claimed", items.len());
                known.saw("retried", items.iter().filter(|c| c.0.attempts > 1).count());
                known.held.extend(items);
            }
            let show = |r: Result<Vec<ClaimBatch>, _>| {
                result_json(r, |b| Json::Array(b.iter().map(claim_json).collect()))
            };
            (format!("claim {requests:?}"), show(r), show(m))
        }
        44..=69 => {
            let (mut completions, mut on_memory) = (Vec::new(), Vec::new());
            for _ in 0..rng.random_range(1..=3) {
                if !known.held.is_empty() && rng.random_bool(0.85) {
                    let c = known.held.remove(rng.random_range(0..known.held.len()));
                    let outcome = random_outcome(rng);
                    if matches!(outcome, Outcome::Dead { .. }) {
                        known.dead.push(c.0.delivery_id.clone());
                    }
                    known.saw("completed", 1);
                    completions.push(Completion::of(&c.0, outcome.clone()));
                    on_memory.push(Completion::of(&c.1, outcome));
                    known.done.push(c);
                } else if !known.done.is_empty() {
                    // a stale completion: a lease that ended, or a wrong token (one
                    // before it: a lease of the call claimed later ends after it)
                    let mut c = pick(rng, &known.done).clone();
                    if rng.random_bool(0.5) {
                        c.0.lease_token = c.0.lease_token.saturating_sub(1);
                        c.1.lease_token = c.1.lease_token.saturating_sub(1);
                    }
                    let outcome = random_outcome(rng);
                    completions.push(Completion::of(&c.0, outcome.clone()));
                    on_memory.push(Completion::of(&c.1, outcome));
                    known.saw("stale completion", 1);
                }
            }
            let (r, m) = (
                redis.complete(&completions).await,
                memory.complete(&on_memory).await,
            );
            let show = |r: Result<(), _>| result_json(r, |_| Json::Null);
            (format!("complete {completions:?}"), show(r), show(m))
        }
        70..=74 => {
            let account = *pick(rng, &ACCOUNTS);
            let sel = selection(rng, known);
            let ttl = Duration::from_millis(HOUR_MS);
            let (r, m) = (
                redis.replay(account, &sel, ttl).await,
                memory.replay(account, &sel, ttl).await,
            );
            known.saw("replayed", r.as_ref().map_or(0, |o| o.count as usize));
            let show = |r: Result<_, _>| result_json(r, |o| json!(format!("{o:?}")));
            (format!("replay {account} {sel:?}"), show(r), show(m))
        }
        75..=77 => {
            let account = *pick(rng, &ACCOUNTS);
            let sel = selection(rng, known);
            let (r, m) = (
                redis.purge_dead(account, &sel).await,
                memory.purge_dead(account, &sel).await,
            );
            known.saw("purged", r.as_ref().map_or(0, |o| o.count as usize));
            let show = |r: Result<_, _>| result_json(r, |o| json!(format!("{o:?}")));
            (format!("purge {account} {sel:?}"), show(r), show(m))
        }
        78..=85 => {
            let account = *pick(rng, &ACCOUNTS);
            let pause = rng.random_bool(0.2);
            if pause {
                known.paused.insert(account);
            } else {
                known.paused.remove(account);
            }
            let (r, m) = if pause {
                (redis.pause(account).await, memory.pause(account).await)
            } else {
                (redis.resume(account).await, memory.resume(account).await)
            };
            let show = |r: Result<(), _>| result_json(r, |_| Json::Null);
            let what = if pause { "pause" } else { "resume" };
            (format!("{what} {account}"), show(r), show(m))
        }
        86..=88 => {
            let show = |r: Result<zenrelay::queue::QueueStats, _>| {
                result_json(r, |s| json!({ "now_ms": s.now_ms, "accounts": s.accounts }))
            };
            let (r, m) = (show(redis.stats().await), show(memory.stats().await));
            // Each backend's stats are kept between reads and updated from the accounts
            // changed since (with no clock slack, so that a change not recorded shows):
            // they must equal a read of the whole store by a new process.
            let whole_r = show(redis.sibling(PARTITIONS, HELPERS).stats().await);
            let whole_m = show(memory.sibling(PARTITIONS, HELPERS).stats().await);
            for (backend, kept, whole) in [("Redis", &r, &whole_r), ("memory", &m, &whole_m)] {
                if let Err(why) = compare_json("stats", kept, whole) {
                    panic!("step {n}: {backend}'s kept stats differ from a whole read: {why}");
                }
            }
            ("stats".into(), r, m)
        }
        89..=93 => {
            let account = *pick(rng, &ACCOUNTS);
            let (offset, limit) = (rng.random_range(0..3), rng.random_range(0..5));
            if let Ok(page) = redis.dead_letters(account, 0, 100).await {
                for item in &page.items {
                    let case = if item.status == "expired" {
                        "expired letter seen"
                    } else {
                        "dead letter seen"
                    };
                    known.saw(case, 1);
                }
            }
            let show = |r: Result<zenrelay::queue::DeadLetterPage, _>| {
                result_json(r, |p| json!({ "total": p.total, "items": p.items }))
            };
            (
                format!("dead letters {account} {offset} {limit}"),
                show(redis.dead_letters(account, offset, limit).await),
                show(memory.dead_letters(account, offset, limit).await),
            )
        }
        94..=96 => {
            let id = if known.events.is_empty() || rng.random_bool(0.1) {
                EventId::new(rng.random_range(0..PARTITIONS))
            } else {
                pick(rng, &known.events).clone()
            };
            let show =
                |r: Result<Option<zenrelay::queue::EventRecord>, _>| result_json(r, |e| json!(e));
            (
                format!("event {id}"),
                show(redis.event(&id).await),
                show(memory.event(&id).await),
            )
        }
        97 | 98 => {
            // A process configured with another partition count, on the same store:
            // refused before it touches anything.
            let other = PARTITIONS + 1;
            let mut show = |r: Result<(), QueueError>| {
                if matches!(r, Err(QueueError::Mismatch(_))) {
                    known.saw("partition count refused", 1);
                }
                result_json(r, |_| Json::Null)
            };
            let r = show(redis.sibling(other, HELPERS).check_deployment().await);
            let m = show(memory.sibling(other, HELPERS).check_deployment().await);
            (format!("check {other} partitions"), r, m)
        }
        _ => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ("sleep 20 ms".into(), Json::Null, Json::Null)
        }
    }
}

/// Random steps taken at most, as a multiple of those asked for, while a case wanted has
/// not come up yet.
const MAX_STEPS_FACTOR: usize = 4;

/// Steps after the random ones: an account paused with an event about to expire, and a
/// fresh account that sends one event and goes idle.
const FINAL_STEPS: usize = 11;

/// Final step `i`: `acme` is paused (0) and given an event that expires at once (1); a
/// fresh account enqueues (2); then claims and successful completions of everything held
/// alternate: the claims expire `acme`'s event while it is held, and their sweeps after
/// the fresh account's delivery first see it idle, then drop its record (an account
/// retention of 0, and a window of 1 ms, which its send has left by then: a record stays
/// while its latest send counts).
async fn final_step(
    i: usize,
    known: &mut Known,
    redis: &RedisQueue,
    memory: &MemoryQueue,
) -> (String, Json, Json) {
    const FRESH: &str = "hooli";
    let show_unit = |r: Result<(), QueueError>| result_json(r, |_| Json::Null);
    if i == 0 {
        known.paused.insert("acme");
        let (r, m) = (redis.pause("acme").await, memory.pause("acme").await);
        return ("pause acme".into(), show_unit(r), show_unit(m));
    }
    if i == 1 || i == 2 {
        let account = if i == 1 { "acme" } else { FRESH };
        let batch = EnqueueBatch {
            account: account.into(),
            limit: RateLimit {
                limit: 1000,
                window_ms: 1,
            },
            max_depth: 1000,
            idempotency_ttl_secs: 86_400,
            events: vec![NewEvent {
                id: EventId::new(partition_of(account, PARTITIONS)),
                priority: Priority::Normal,
                ttl_ms: if i == 1 { 1 } else { 0 },
                payload: NotifyPayload::new(1, "last", None),
                agents: vec![None],
                idempotency: None,
            }],
        };
        let show = |r: Result<_, _>| result_json(r, |o| json!(format!("{o:?}")));
        let (r, m) = (
            redis.enqueue(batch.clone()).await,
            memory.enqueue(batch.clone()).await,
        );
        if i == 1 && matches!(r.as_deref(), Ok([EnqueueOutcome::Stored { .. }])) {
            known.saw("expiring event of a held account", 1);
        }
        (format!("enqueue {batch:?}"), show(r), show(m))
    } else if i % 2 == 1 {
        let requests: Vec<(u16, usize)> = (0..PARTITIONS).map(|p| (p, 10)).collect();
        let (r, m) = (
            redis.claim_many(&requests).await,
            memory.claim_many(&requests).await,
        );
        if let (Ok(rb), Ok(mb)) = (&r, &m) {
            known.held.extend(pairs(rb, mb));
        }
        let show = |r: Result<Vec<ClaimBatch>, _>| {
            result_json(r, |b| Json::Array(b.iter().map(claim_json).collect()))
        };
        (format!("claim {requests:?}"), show(r), show(m))
    } else {
        let delivered = Outcome::Delivered { status: 200 };
        let (completions, on_memory): (Vec<Completion>, Vec<Completion>) = known
            .held
            .drain(..)
            .map(|c| {
                (
                    Completion::of(&c.0, delivered.clone()),
                    Completion::of(&c.1, delivered.clone()),
                )
            })
            .unzip();
        let (r, m) = (
            redis.complete(&completions).await,
            memory.complete(&on_memory).await,
        );
        (
            format!("complete {completions:?}"),
            show_unit(r),
            show_unit(m),
        )
    }
}

#[tokio::test]
async fn the_embedded_store_runs_the_scripts_as_redis_does() {
    // The last two come from the final steps.
    let cases = [
        "claimed",
        "completed",
        "retried",
        "duplicate",
        "replayed",
        "purged",
        "dead letter seen",
        "partition count refused",
        "expiring event of a held account",
        "idle account dropped",
    ];
    let covered = run(600, HOUR_MS, &cases[..cases.len() - 2]).await;
    for case in cases {
        assert!(covered.contains(&case), "never saw {case:?}");
    }
}

#[tokio::test]
async fn the_embedded_store_drops_dead_letters_as_redis_does() {
    let cases = ["claimed", "completed", "dead letters dropped"];
    let covered = run(300, 0, &cases).await;
    for case in cases {
        assert!(covered.contains(&case), "never saw {case:?}");
    }
}

/// Runs a random sequence (its length from `ZENRELAY_DIFF_STEPS`, else `steps`; longer,
/// up to [`MAX_STEPS_FACTOR`] times, until every case of `wanted` came up) on both
/// backends with dead letters kept `dead_letter_retention_ms`, then the final steps, and
/// returns the cases it covered; panics at the first difference.
async fn run(
    steps: usize,
    dead_letter_retention_ms: u64,
    wanted: &[&'static str],
) -> Vec<&'static str> {
    let seed: u64 = std::env::var("ZENRELAY_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let steps: usize = std::env::var("ZENRELAY_DIFF_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(steps);
    println!("differential seed {seed} ({steps} steps); replay with ZENRELAY_DIFF_SEED={seed}");

    let server = RedisServer::start();
    let mut config = Config::default();
    config.redis.partitions = PARTITIONS;
    config.redis.key_prefix = "diff".into();
    config.delivery.lease_ms = Some(HOUR_MS);
    config.delivery.window_margin_ms = Some(0);
    // Seconds in the configuration: set through the settings below instead.
    let mut settings = zenrelay::app::redis_queue_config(&config);
    settings.queue.retention.accounts_ms = 0;
    settings.queue.retention.dead_letters_ms = dead_letter_retention_ms;
    let sweep = Duration::from_millis(SWEEP_MS);
    // Kept stats read no change twice (see the stats step).
    let reads = ChangeReads {
        slack_ms: 0,
        ..ChangeReads::default()
    };
    let memory = MemoryQueue::new(settings.queue.clone())
        .with_change_reads(reads)
        .with_sweep_interval(sweep);
    settings.url = server.url().into();
    let redis = RedisQueue::new(settings)
        .expect("Redis queue builds")
        .with_change_reads(reads)
        .with_sweep_interval(sweep);
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");

    // As a gateway does at start: each records the partition count.
    redis.check_deployment().await.expect("Redis is ready");
    memory.check_deployment().await.expect("the store is ready");

    let mut rng = StdRng::seed_from_u64(seed);
    let mut known = Known::default();
    // Where the final steps begin, once the random ones are done.
    let mut finals: Option<usize> = None;
    for n in 0.. {
        if finals.is_none() {
            let seen_all = wanted
                .iter()
                .all(|c| known.seen.get(c).is_some_and(|times| *times > 0));
            if n >= steps && (seen_all || n >= steps * MAX_STEPS_FACTOR) {
                finals = Some(n);
            }
        }
        let (what, r, m) = match finals {
            None => step(&mut rng, n, &mut known, &redis, &memory).await,
            Some(f) if n < f + FINAL_STEPS => final_step(n - f, &mut known, &redis, &memory).await,
            Some(_) => break,
        };
        let fail = |why: String| -> ! {
            panic!("seed {seed}, step {n}: {what}\n{why}\n(replay with ZENRELAY_DIFF_SEED={seed})")
        };
        if let Err(why) = compare_json("reply", &r, &m) {
            eprintln!("the replies: Redis {r}\nthe embedded store {m}");
            fail(why);
        }
        let (dropped_r, dropped_m) = (
            redis.take_dead_letters_dropped(),
            memory.take_dead_letters_dropped(),
        );
        if dropped_r != dropped_m {
            fail(format!(
                "dead letters dropped: Redis {dropped_r}, memory {dropped_m}"
            ));
        }
        known.saw("dead letters dropped", dropped_r as usize);
        let (dump_r, dump_m) = (dump_redis(&mut conn).await, dump_memory(&memory));
        if let Err(why) = compare_dumps(&dump_r, &dump_m) {
            fail(why);
        }
        // An account record that was there before the step and is gone after it.
        let records = |d: &Dump| -> Vec<String> {
            d.keys().filter(|k| k.contains(":acct:")).cloned().collect()
        };
        let now = records(&dump_r);
        known.saw(
            "idle account dropped",
            known.records.iter().filter(|k| !now.contains(k)).count(),
        );
        known.records = now;
        // Steps a few ms apart: no two steps' times tie on one side only.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    println!("covered: {:?}", known.seen);
    known
        .seen
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(case, _)| *case)
        .collect()
}

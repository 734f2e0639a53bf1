//! The in-memory backend of [`Queue`] (`redis.url = "memory://"`), for `zenrelay demo` and
//! fast tests.
//!
//! **Not durable.** Everything lives in this process: queued events, dead letters and event
//! records are lost when it exits, and several processes cannot share one queue. Use Redis
//! for anything that must survive a restart.
//!
//! Apart from durability it behaves exactly like the Redis backend: its state mirrors the key
//! layout documented in [`super::redis`] (ready set, per-account lists, in-flight and delayed
//! sets, account hashes, send-time lists, idempotency keys) and each method does what the
//! matching Lua script does, step for step (`enqueue.lua`, `claim.lua`, `complete.lua`, and for
//! operators `stats.lua`, `dead.lua`, `replay.lua`, `purge.lua`, `hold.lua`). The
//! conformance suite in `tests/it/conformance.rs` runs the same scenarios against both
//! backends so they cannot drift.
//!
//! # Clock
//!
//! Time is tokio's clock ([`tokio::time::Instant`]), mapped to Unix milliseconds as the wall
//! clock at creation plus the tokio time elapsed since. Under `tokio::time::pause` tests
//! drive rolling windows, leases, retries, 429 pauses, TTLs and retention without waiting.
//!
//! # Atomicity
//!
//! One mutex guards all state and no method awaits while holding it, so each call is one
//! critical section, as each Redis script is atomic.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    rfc3339_ms, AccountStats, ClaimBatch, Claimed, Completion, DeadLetter, DeadLetterPage,
    DeadLetterResult, DeadLetterSelection, DeliveryStatus, EnqueueBatch, EnqueueOutcome,
    EventRecord, Outcome, Queue, QueueError, QueueStats, RateLimit, REAP_MAX, RETENTION_MS,
};
use crate::domain::{partition_of, EventId, NotifyPayload, Priority};

/// Settings of the in-memory backend (the same knobs as the Redis backend's).
#[derive(Debug, Clone)]
pub struct MemoryQueueConfig {
    /// Partition count (walked by the worker like Redis partitions).
    pub partitions: u16,
    /// Lease of a claimed delivery.
    pub lease: Duration,
    /// Limit applied to accounts that have none stored.
    pub default_limit: RateLimit,
    /// Margin added to the rolling window, in milliseconds.
    pub margin_ms: u64,
}

/// Raw counters of one account, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountCounters {
    /// Undelivered Notify calls.
    pub depth: i64,
    /// Calls waiting for a retry.
    pub delayed: i64,
    /// Dead letters.
    pub dead: i64,
    /// Calls delivered.
    pub sent: i64,
    /// Upstream 429 answers.
    pub upstream_429: i64,
    /// Whether a delivery is in flight.
    pub busy: bool,
    /// Whether upstream refused the account's credentials.
    pub auth_failed: bool,
    /// End of the current 429 pause (Unix ms), 0 if never paused.
    pub paused_until_ms: u64,
}

/// A dead letter as the in-memory backend keeps it, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// `{event id}:{index}`.
    pub delivery_id: String,
    /// `rejected`, `max_attempts`, `expired`, ...
    pub reason: String,
    /// The last upstream status.
    pub last_status: Option<u16>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it became a dead letter (Unix ms).
    pub at_ms: u64,
}

/// The in-memory queue.
pub struct MemoryQueue {
    config: MemoryQueueConfig,
    origin: Instant,
    origin_unix_ms: u64,
    state: Mutex<HashMap<u16, Part>>,
    /// Runtime account records by id (`{prefix}:runtime:accounts`).
    runtime: Mutex<HashMap<String, String>>,
}

/// A sorted set like Redis's ZSET: members ordered by score, then by name.
#[derive(Debug, Default)]
struct ZSet {
    scores: HashMap<String, u64>,
    order: BTreeSet<(u64, String)>,
}

impl ZSet {
    /// `ZADD`: sets the score, replacing any earlier one.
    fn add(&mut self, member: &str, score: u64) {
        if let Some(old) = self.scores.insert(member.to_string(), score) {
            self.order.remove(&(old, member.to_string()));
        }
        self.order.insert((score, member.to_string()));
    }

    /// `ZADD NX`: sets the score only if the member is absent.
    fn add_nx(&mut self, member: &str, score: u64) {
        if !self.scores.contains_key(member) {
            self.add(member, score);
        }
    }

    /// `ZREM`: whether the member was there.
    fn remove(&mut self, member: &str) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.order.remove(&(score, member.to_string()));
                true
            }
            None => false,
        }
    }

    /// `ZRANGEBYSCORE -inf now LIMIT 0 max`.
    fn due(&self, now: u64, max: usize) -> Vec<String> {
        self.order
            .iter()
            .take_while(|(score, _)| *score <= now)
            .take(max)
            .map(|(_, member)| member.clone())
            .collect()
    }

    /// The lowest score.
    fn first_score(&self) -> Option<u64> {
        self.order.first().map(|(score, _)| *score)
    }

    fn len(&self) -> usize {
        self.scores.len()
    }
}

/// What `{base}:acct:{account}`, its lists and its send times hold.
#[derive(Debug, Default)]
struct Acct {
    limit: Option<u32>,
    window_ms: Option<u64>,
    depth: i64,
    delayed: i64,
    dead: i64,
    sent: i64,
    upstream_429: i64,
    busy: Option<String>,
    /// The call whose time heads `sends` while it is in flight.
    rl_did: Option<String>,
    paused: bool,
    auth_failed: bool,
    until: u64,
    high: VecDeque<String>,
    normal: VecDeque<String>,
    /// Times of the latest `limit` calls, newest first: when a call started, replaced by
    /// when its answer arrived.
    sends: VecDeque<u64>,
    /// Dead letters: delivery id → when.
    dead_letters: ZSet,
}

impl Acct {
    fn list(&mut self, prio: Priority) -> &mut VecDeque<String> {
        match prio {
            Priority::High => &mut self.high,
            Priority::Normal => &mut self.normal,
        }
    }

    fn blocked(&self) -> bool {
        self.busy.is_some() || self.paused || self.auth_failed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Delivering,
    Retrying,
    Delivered,
    Dead,
    Expired,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Delivering => "delivering",
            Status::Retrying => "retrying",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
            Status::Expired => "expired",
        }
    }

    fn pending(self) -> bool {
        matches!(self, Status::Queued | Status::Delivering | Status::Retrying)
    }
}

/// One Notify call of an event (the `*{k}` fields of the event hash).
#[derive(Debug)]
struct Call {
    agent: Option<u64>,
    status: Status,
    attempts: i64,
    /// Lease counter: the token of the latest claim, 0 before the first.
    counter: u64,
    last_status: String,
    last_error: String,
    delivered_at: Option<u64>,
    dead_reason: Option<String>,
}

/// What `{base}:ev:{id}` holds.
#[derive(Debug)]
struct Ev {
    acct: String,
    created: u64,
    prio: Priority,
    /// Expiry (Unix ms), 0 = none.
    exp: u64,
    body: Option<String>,
    done: usize,
    dead: usize,
    calls: Vec<Call>,
    /// When the record disappears (after every call finished and none is a dead letter).
    expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Expiring {
    Event(String),
    Idem(String, String),
}

#[derive(Debug)]
struct Idem {
    fingerprint: String,
    id: String,
    deliveries: u64,
    expires_at: u64,
}

/// One partition: everything under `{prefix}:{pN}` in Redis.
#[derive(Debug, Default)]
struct Part {
    ready: ZSet,
    inflight: ZSet,
    delayed: ZSet,
    accounts: HashMap<String, Acct>,
    events: HashMap<String, Ev>,
    idem: HashMap<(String, String), Idem>,
    expiries: BTreeSet<(u64, Expiring)>,
}

/// `"<event id>:<index>"` → event id, index.
fn split_did(did: &str) -> Option<(&str, usize)> {
    let (eid, k) = did.rsplit_once(':')?;
    if eid.is_empty() || k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((eid, k.parse().ok()?))
}

impl Part {
    /// Drops event records and idempotency keys whose time is up (Redis key expiry).
    fn purge(&mut self, now: u64) {
        while self.expiries.first().is_some_and(|(at, _)| *at <= now) {
            let Some((at, what)) = self.expiries.pop_first() else {
                break;
            };
            match what {
                Expiring::Event(eid) => {
                    if self.events.get(&eid).and_then(|e| e.expires_at) == Some(at) {
                        self.events.remove(&eid);
                    }
                }
                Expiring::Idem(acct, key) => {
                    let key = (acct, key);
                    if self.idem.get(&key).map(|i| i.expires_at) == Some(at) {
                        self.idem.remove(&key);
                    }
                }
            }
        }
    }

    fn call(&self, did: &str) -> Option<&Call> {
        let (eid, k) = split_did(did)?;
        self.events.get(eid)?.calls.get(k)
    }

    fn call_mut(&mut self, did: &str) -> Option<&mut Call> {
        let (eid, k) = split_did(did)?;
        self.events.get_mut(eid)?.calls.get_mut(k)
    }

    fn prio_of(&self, did: &str) -> Priority {
        split_did(did)
            .and_then(|(eid, _)| self.events.get(eid))
            .map_or(Priority::Normal, |e| e.prio)
    }

    /// `mark_ready`: puts the account in the ready set, at the earliest time it may send,
    /// when it has queued work and is neither busy nor paused.
    fn mark_ready(&mut self, acct: &str, now: u64) {
        self.mark_ready_at(acct, now);
    }

    /// `mark_ready` with an explicit `score`: an account that was idle enters ahead of
    /// accounts that were just served; a 429 pause still wins over it.
    fn mark_ready_at(&mut self, acct: &str, score: u64) {
        let Some(a) = self.accounts.get(acct) else {
            self.ready.remove(acct);
            return;
        };
        if a.blocked() {
            return;
        }
        if a.high.is_empty() && a.normal.is_empty() {
            self.ready.remove(acct);
            return;
        }
        self.ready.add_nx(acct, score.max(a.until));
    }

    /// `finish`: records a call as finished; once every call has finished and none is a
    /// dead letter, drops the payload and keeps the record for the retention time.
    fn finish(&mut self, did: &str, acct: &str, status: Status, now: u64) {
        self.accounts.entry(acct.to_string()).or_default().depth -= 1;
        let Some((eid, k)) = split_did(did) else {
            return;
        };
        let Some(ev) = self.events.get_mut(eid) else {
            return;
        };
        if let Some(call) = ev.calls.get_mut(k) {
            call.status = status;
        }
        ev.done += 1;
        if ev.done >= ev.calls.len() && ev.dead == 0 {
            ev.body = None;
            let at = now + RETENTION_MS;
            ev.expires_at = Some(at);
            self.expiries.insert((at, Expiring::Event(eid.to_string())));
        }
    }

    /// `bury`: turns a call into a dead letter (`Dead` or `Expired`).
    #[allow(clippy::too_many_arguments)]
    fn bury(
        &mut self,
        did: &str,
        acct: &str,
        status: Status,
        reason: &str,
        code: &str,
        error: &str,
        now: u64,
    ) {
        if let Some(call) = self.call_mut(did) {
            call.dead_reason = Some(reason.to_string());
            call.last_status = code.to_string();
            call.last_error = error.to_string();
        }
        if let Some(ev) = split_did(did).and_then(|(eid, _)| self.events.get_mut(eid)) {
            ev.dead += 1;
        }
        let a = self.accounts.entry(acct.to_string()).or_default();
        a.dead_letters.add(did, now);
        a.dead += 1;
        self.finish(did, acct, status, now);
    }

    /// `replay.lua` for one letter: back at the tail of its list as a new delivery.
    /// Touches nothing of an account the partition does not know (Redis keeps no record
    /// of it either).
    fn replay_one(&mut self, acct: &str, did: &str, ttl_ms: u64, now: u64) -> bool {
        let Some(a) = self.accounts.get_mut(acct) else {
            return false;
        };
        if !a.dead_letters.remove(did) {
            return false;
        }
        a.dead -= 1;
        let Some((eid, k)) = split_did(did) else {
            return false;
        };
        let Some(ev) = self.events.get_mut(eid) else {
            return false;
        };
        let live = ev.acct == acct
            && ev.body.is_some()
            && ev
                .calls
                .get(k)
                .is_some_and(|c| matches!(c.status, Status::Dead | Status::Expired));
        if !live {
            return false;
        }
        ev.dead = ev.dead.saturating_sub(1);
        ev.done = ev.done.saturating_sub(1);
        ev.expires_at = None;
        if ev.exp > 0 {
            ev.exp = now + ttl_ms;
        }
        if let Some(call) = ev.calls.get_mut(k) {
            call.status = Status::Queued;
            call.attempts = 0;
            call.dead_reason = None;
        }
        let prio = ev.prio;
        let a = self.accounts.entry(acct.to_string()).or_default();
        a.depth += 1;
        a.list(prio).push_back(did.to_string());
        true
    }

    /// `purge.lua` for one letter.
    fn purge_one(&mut self, acct: &str, did: &str, now: u64) -> bool {
        let Some(a) = self.accounts.get_mut(acct) else {
            return false;
        };
        if !a.dead_letters.remove(did) {
            return false;
        }
        a.dead -= 1;
        if let Some((eid, _)) = split_did(did) {
            if let Some(ev) = self.events.get_mut(eid) {
                ev.dead = ev.dead.saturating_sub(1);
                if ev.dead == 0 && ev.done >= ev.calls.len() {
                    ev.body = None;
                    let at = now + RETENTION_MS;
                    ev.expires_at = Some(at);
                    self.expiries.insert((at, Expiring::Event(eid.to_string())));
                }
            }
        }
        true
    }

    /// `stats.lua` for one account.
    fn stats_of(&self, acct: &str, a: &Acct, default_window: u64, now: u64) -> AccountStats {
        let window = a.window_ms.unwrap_or(default_window);
        let created = |did: Option<&String>| {
            did.and_then(|d| split_did(d))
                .and_then(|(eid, _)| self.events.get(eid))
                .map(|e| e.created)
        };
        let oldest = [
            created(a.high.front()),
            created(a.normal.front()),
            created(a.busy.as_ref()),
        ]
        .into_iter()
        .flatten()
        .min();
        AccountStats {
            account: acct.to_string(),
            depth: a.depth.max(0) as u64,
            in_flight: u64::from(a.busy.is_some()),
            scheduled_retries: a.delayed.max(0) as u64,
            dead: a.dead.max(0) as u64,
            oldest_ms: oldest,
            sent_in_window: a.sends.iter().filter(|t| **t + window > now).count() as u64,
            delivered: a.sent.max(0) as u64,
            upstream_429: a.upstream_429.max(0) as u64,
            paused: a.paused,
            auth_failed: a.auth_failed,
            next_send_ms: self.ready.scores.get(acct).copied(),
        }
    }

    /// `requeue_front`: back to the front of its account's list, as queued.
    fn requeue_front(&mut self, did: &str, acct: &str) {
        let prio = self.prio_of(did);
        self.accounts
            .entry(acct.to_string())
            .or_default()
            .list(prio)
            .push_front(did.to_string());
        if let Some(call) = self.call_mut(did) {
            call.status = Status::Queued;
        }
    }

    /// Requeues expired leases (or due retries) at the front of their lists.
    fn reap(&mut self, now: u64, from_delayed: bool) {
        let due = if from_delayed {
            self.delayed.due(now, REAP_MAX)
        } else {
            self.inflight.due(now, REAP_MAX)
        };
        for did in due {
            if from_delayed {
                self.delayed.remove(&did);
            } else {
                self.inflight.remove(&did);
            }
            let Some(acct) = split_did(&did)
                .and_then(|(eid, _)| self.events.get(eid))
                .map(|e| e.acct.clone())
            else {
                continue;
            };
            let a = self.accounts.entry(acct.clone()).or_default();
            if from_delayed {
                a.delayed -= 1;
            } else if a.busy.as_deref() == Some(did.as_str()) {
                a.busy = None;
            }
            if self
                .call(&did)
                .is_some_and(|c| matches!(c.status, Status::Delivering | Status::Retrying))
            {
                self.requeue_front(&did, &acct);
            }
            self.mark_ready(&acct, now);
        }
    }

    /// Pops the account's next live delivery, burying expired ones and dropping stale
    /// entries of finished or removed events (at most 1000 per call).
    fn pop_live(&mut self, acct: &str, now: u64) -> Option<String> {
        let mut dropped = 0;
        loop {
            let a = self.accounts.entry(acct.to_string()).or_default();
            let did = a.high.pop_front().or_else(|| a.normal.pop_front())?;
            let pending = self.call(&did).is_some_and(|c| c.status.pending());
            if pending {
                let exp = split_did(&did)
                    .and_then(|(eid, _)| self.events.get(eid))
                    .map_or(0, |e| e.exp);
                if exp > 0 && exp <= now {
                    self.bury(
                        &did,
                        acct,
                        Status::Expired,
                        "expired",
                        "",
                        "time to live passed before delivery",
                        now,
                    );
                } else {
                    return Some(did);
                }
            }
            dropped += 1;
            if dropped >= 1000 {
                return None;
            }
        }
    }

    /// `claim.lua` after the reaper: one delivery per due account.
    fn claim(&mut self, config: &MemoryQueueConfig, max: usize, now: u64) -> Vec<Claimed> {
        let mut out = Vec::new();
        for acct in self.ready.due(now, max) {
            let a = self.accounts.entry(acct.clone()).or_default();
            if a.blocked() {
                self.ready.remove(&acct);
                continue;
            }
            if a.until > now {
                let until = a.until;
                self.ready.add(&acct, until);
                continue;
            }
            let limit = a.limit.unwrap_or(config.default_limit.limit).max(1) as usize;
            let window = a.window_ms.unwrap_or(config.default_limit.window_ms);
            let mut free_at = now;
            if a.sends.len() >= limit {
                // Whole milliseconds, rounded down: one more keeps the real gap at
                // least the window.
                free_at = a.sends[limit - 1] + window + config.margin_ms + 1;
            }
            if free_at > now {
                self.ready.add(&acct, free_at);
                continue;
            }
            let Some(did) = self.pop_live(&acct, now) else {
                self.ready.remove(&acct);
                self.mark_ready(&acct, now);
                continue;
            };
            let a = self.accounts.entry(acct.clone()).or_default();
            a.sends.push_front(now);
            a.sends.truncate(limit);
            a.busy = Some(did.clone());
            a.rl_did = Some(did.clone());
            self.ready.remove(&acct);
            self.inflight
                .add(&did, now + config.lease.as_millis() as u64);
            let Some((eid, k)) = split_did(&did) else {
                continue;
            };
            let Some(ev) = self.events.get_mut(eid) else {
                continue;
            };
            let body = ev.body.clone().unwrap_or_default();
            let created = ev.created;
            let Some(call) = ev.calls.get_mut(k) else {
                continue;
            };
            call.attempts += 1;
            call.counter += 1;
            call.status = Status::Delivering;
            out.push(Claimed {
                delivery_id: did.clone(),
                account: acct.clone(),
                body: NotifyPayload::from_stored(body).upstream_bytes(call.agent),
                attempts: call.attempts.max(1) as u32,
                created_ms: created,
                lease_token: call.counter,
            });
        }
        out
    }

    /// Time until the earliest ready account, retry or lease deadline.
    fn next_due(&self, now: u64) -> Option<Duration> {
        [&self.ready, &self.delayed, &self.inflight]
            .iter()
            .filter_map(|z| z.first_score())
            .map(|score| Duration::from_millis(score.saturating_sub(now)))
            .min()
    }

    /// `complete.lua` for one completion.
    fn complete(&mut self, c: &Completion, now: u64) {
        let did = c.delivery_id.as_str();
        let acct = c.account.as_str();
        // `release_account`: this call no longer holds the account; upstream saw it no
        // later than its answer, so its rate entry counts from now.
        let release = |part: &mut Part| {
            let a = part.accounts.entry(acct.to_string()).or_default();
            if a.rl_did.as_deref() == Some(did) {
                if let Some(head) = a.sends.front_mut() {
                    *head = now;
                }
                a.rl_did = None;
            }
            if a.busy.as_deref() == Some(did) {
                a.busy = None;
            }
        };
        let call = self.call(did).map(|call| (call.status, call.counter));
        let Some(counter) = call
            .filter(|(status, _)| status.pending())
            .map(|(_, counter)| counter)
        else {
            // Already finished (or gone): end this lease and free the account.
            self.inflight.remove(did);
            release(self);
            self.mark_ready(acct, now);
            return;
        };
        let owned = counter > 0 && counter == c.lease_token && self.inflight.remove(did);
        if let Outcome::Delivered { status: code } = &c.outcome {
            if !owned && self.inflight.scores.contains_key(did) {
                // A late success while another holder has a new lease: record it, and
                // leave that lease, the busy flag and the rate entry to the holder.
                if let Some(call) = self.call_mut(did) {
                    call.last_status = code.to_string();
                    call.last_error = String::new();
                    call.delivered_at = Some(now);
                }
                self.accounts.entry(acct.to_string()).or_default().sent += 1;
                self.finish(did, acct, Status::Delivered, now);
                return;
            }
        }
        let code = |status: Option<u16>| status.map(|s| s.to_string()).unwrap_or_default();
        match &c.outcome {
            Outcome::Delivered { status } => {
                if !owned {
                    // A late success: remove the delivery wherever it is now.
                    let prio = self.prio_of(did);
                    let list = self
                        .accounts
                        .entry(acct.to_string())
                        .or_default()
                        .list(prio);
                    if let Some(pos) = list.iter().position(|d| d == did) {
                        list.remove(pos);
                    }
                    self.inflight.remove(did);
                    if self.delayed.remove(did) {
                        self.accounts.entry(acct.to_string()).or_default().delayed -= 1;
                    }
                }
                release(self);
                if let Some(call) = self.call_mut(did) {
                    call.last_status = status.to_string();
                    call.last_error = String::new();
                    call.delivered_at = Some(now);
                }
                self.accounts.entry(acct.to_string()).or_default().sent += 1;
                self.finish(did, acct, Status::Delivered, now);
            }
            _ if !owned => return,
            Outcome::Retry {
                delay,
                status,
                error,
            } => {
                release(self);
                if let Some(call) = self.call_mut(did) {
                    call.status = Status::Retrying;
                    call.last_status = code(*status);
                    call.last_error = truncate(error);
                }
                self.delayed.add(did, now + delay.as_millis() as u64);
                self.accounts.entry(acct.to_string()).or_default().delayed += 1;
            }
            Outcome::Dead {
                reason,
                status,
                error,
            } => {
                release(self);
                self.bury(
                    did,
                    acct,
                    Status::Dead,
                    reason,
                    &code(*status),
                    &truncate(error),
                    now,
                );
            }
            Outcome::RateLimited { .. } | Outcome::AuthFailed { .. } | Outcome::Released => {
                // The attempt does not count.
                release(self);
                if let Some(call) = self.call_mut(did) {
                    call.attempts -= 1;
                }
                self.requeue_front(did, acct);
                let (code, error) = match &c.outcome {
                    Outcome::RateLimited { .. } => ("429".to_string(), "rate limited by upstream"),
                    Outcome::AuthFailed { status, error } => (status.to_string(), error.as_str()),
                    _ => (String::new(), ""),
                };
                if !code.is_empty() {
                    if let Some(call) = self.call_mut(did) {
                        call.last_status = code;
                        call.last_error = truncate(error);
                    }
                }
                let a = self.accounts.entry(acct.to_string()).or_default();
                match &c.outcome {
                    Outcome::RateLimited { retry_after } => {
                        a.until = now + retry_after.as_millis() as u64;
                        a.upstream_429 += 1;
                    }
                    Outcome::AuthFailed { .. } => a.auth_failed = true,
                    _ => {}
                }
            }
        }
        self.mark_ready(acct, now);
    }
}

/// Errors are stored at most 1000 characters long, as in Redis.
fn truncate(error: &str) -> String {
    error.chars().take(1000).collect()
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(config: MemoryQueueConfig) -> Self {
        let origin_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        MemoryQueue {
            config,
            origin: Instant::now(),
            origin_unix_ms,
            state: Mutex::new(HashMap::new()),
            runtime: Mutex::new(HashMap::new()),
        }
    }

    /// Now, in Unix milliseconds, on tokio's clock.
    fn now_ms(&self) -> u64 {
        self.origin_unix_ms + self.origin.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u16, Part>> {
        // Every method leaves the state consistent before it can panic, if it ever does.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The counters of an account, if it ever had events.
    pub fn counters(&self, account: &str) -> Option<AccountCounters> {
        let state = self.lock();
        let now = self.now_ms();
        state.values().find_map(|part| {
            let a = part.accounts.get(account)?;
            Some(AccountCounters {
                depth: a.depth,
                delayed: a.delayed,
                dead: a.dead,
                sent: a.sent,
                upstream_429: a.upstream_429,
                busy: a.busy.is_some(),
                auth_failed: a.auth_failed,
                paused_until_ms: if a.until > now { a.until } else { 0 },
            })
        })
    }

    /// Dead letters of an account, oldest first.
    pub fn dead_letter_entries(&self, account: &str) -> Vec<DeadLetterEntry> {
        let state = self.lock();
        let mut out = Vec::new();
        for part in state.values() {
            let Some(a) = part.accounts.get(account) else {
                continue;
            };
            for (at, did) in &a.dead_letters.order {
                let call = part.call(did);
                out.push(DeadLetterEntry {
                    delivery_id: did.clone(),
                    reason: call.and_then(|c| c.dead_reason.clone()).unwrap_or_default(),
                    last_status: call.and_then(|c| c.last_status.parse().ok()),
                    last_error: call.map(|c| c.last_error.clone()).filter(|e| !e.is_empty()),
                    at_ms: *at,
                });
            }
        }
        out
    }

    /// Event records currently held (finished ones until their retention ends).
    pub fn event_count(&self) -> usize {
        let mut state = self.lock();
        let now = self.now_ms();
        state
            .values_mut()
            .map(|part| {
                part.purge(now);
                part.events.len()
            })
            .sum()
    }

    /// Leases currently held by workers.
    pub fn in_flight(&self) -> usize {
        self.lock().values().map(|p| p.inflight.len()).sum()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    fn partitions(&self) -> u16 {
        self.config.partitions
    }

    fn describe(&self) -> String {
        "in memory (memory://), NOT DURABLE: queued events are lost when the process exits".into()
    }

    async fn enqueue(&self, batch: EnqueueBatch) -> Result<Vec<EnqueueOutcome>, QueueError> {
        let Some(first) = batch.events.first() else {
            return Ok(Vec::new());
        };
        let mut state = self.lock();
        let now = self.now_ms();
        let part = state.entry(first.id.partition()).or_default();
        part.purge(now);
        let acct_name = batch.account.as_str();
        let a = part.accounts.entry(acct_name.to_string()).or_default();
        a.limit = Some(batch.limit.limit);
        a.window_ms = Some(batch.limit.window_ms);
        let mut depth = a.depth;
        let mut stored = 0;
        let mut out = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            let n = event.agents.len() as u64;
            let idem_key = event
                .idempotency
                .as_ref()
                .filter(|(key, _)| !key.is_empty())
                .map(|(key, fp)| ((acct_name.to_string(), key.clone()), fp.clone()));
            if let Some((key, fp)) = &idem_key {
                if let Some(prev) = part.idem.get(key) {
                    out.push(if &prev.fingerprint == fp {
                        EnqueueOutcome::Duplicate {
                            id: prev.id.clone(),
                            deliveries: prev.deliveries,
                        }
                    } else {
                        EnqueueOutcome::IdempotencyMismatch
                    });
                    continue;
                }
            }
            if depth + n as i64 > batch.max_depth as i64 {
                out.push(EnqueueOutcome::QueueFull);
                continue;
            }
            let eid = event.id.as_str().to_string();
            let calls = event
                .agents
                .iter()
                .map(|agent| Call {
                    agent: *agent,
                    status: Status::Queued,
                    attempts: 0,
                    counter: 0,
                    last_status: String::new(),
                    last_error: String::new(),
                    delivered_at: None,
                    dead_reason: None,
                })
                .collect();
            part.events.insert(
                eid.clone(),
                Ev {
                    acct: acct_name.to_string(),
                    created: now,
                    prio: event.priority,
                    exp: if event.ttl_ms > 0 {
                        now + event.ttl_ms
                    } else {
                        0
                    },
                    body: Some(event.payload.stored().to_string()),
                    done: 0,
                    dead: 0,
                    calls,
                    expires_at: None,
                },
            );
            let list = part
                .accounts
                .entry(acct_name.to_string())
                .or_default()
                .list(event.priority);
            for k in 0..n {
                list.push_back(format!("{eid}:{k}"));
            }
            depth += n as i64;
            stored += 1;
            if let Some((key, fp)) = idem_key {
                let expires_at = now + batch.idempotency_ttl_secs.saturating_mul(1000);
                part.expiries
                    .insert((expires_at, Expiring::Idem(key.0.clone(), key.1.clone())));
                part.idem.insert(
                    key,
                    Idem {
                        fingerprint: fp,
                        id: eid.clone(),
                        deliveries: n,
                        expires_at,
                    },
                );
            }
            out.push(EnqueueOutcome::Stored {
                id: eid,
                deliveries: n,
            });
        }
        part.accounts
            .entry(acct_name.to_string())
            .or_default()
            .depth = depth;
        if stored > 0 {
            // an account that was idle goes ahead of those served within the last window
            let window = batch.limit.window_ms;
            part.mark_ready_at(acct_name, now.saturating_sub(window));
        }
        Ok(out)
    }

    async fn claim(&self, partition: u16, max: usize) -> Result<ClaimBatch, QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        let part = state.entry(partition).or_default();
        part.purge(now);
        part.reap(now, false);
        part.reap(now, true);
        let items = part.claim(&self.config, max, now);
        let next_due = if items.is_empty() {
            part.next_due(now)
        } else {
            None
        };
        Ok(ClaimBatch { items, next_due })
    }

    async fn complete(&self, completions: &[Completion]) -> Result<(), QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        for c in completions {
            let Some(event_id) = c.delivery_id.split(':').next().and_then(EventId::parse) else {
                continue;
            };
            let part = state.entry(event_id.partition()).or_default();
            part.purge(now);
            part.complete(c, now);
        }
        Ok(())
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, QueueError> {
        if id.partition() >= self.config.partitions {
            return Ok(None);
        }
        let mut state = self.lock();
        let now = self.now_ms();
        let Some(part) = state.get_mut(&id.partition()) else {
            return Ok(None);
        };
        part.purge(now);
        let Some(ev) = part.events.get(id.as_str()) else {
            return Ok(None);
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let deliveries: Vec<DeliveryStatus> = ev
            .calls
            .iter()
            .map(|c| DeliveryStatus {
                agent_id: c.agent,
                status: c.status.as_str().to_string(),
                attempts: c.attempts.max(0) as u32,
                last_status: c.last_status.parse().ok(),
                last_error: non_empty(&c.last_error),
                delivered_at: c.delivered_at.map(rfc3339_ms),
            })
            .collect();
        Ok(Some(EventRecord {
            id: id.to_string(),
            account: ev.acct.clone(),
            status: EventRecord::overall_status(&deliveries).to_string(),
            created_at: rfc3339_ms(ev.created),
            deliveries,
        }))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        for part in state.values_mut() {
            part.purge(now);
        }
        let window = self.config.default_limit.window_ms;
        let mut accounts: Vec<AccountStats> = state
            .values()
            .flat_map(|part| {
                part.accounts
                    .iter()
                    .map(move |(name, a)| part.stats_of(name, a, window, now))
            })
            .collect();
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        Ok(QueueStats {
            now_ms: now,
            accounts,
        })
    }

    async fn dead_letters(
        &self,
        account: &str,
        offset: u64,
        limit: u64,
    ) -> Result<DeadLetterPage, QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        let Some(part) = state.get_mut(&partition_of(account, self.config.partitions)) else {
            return Ok(DeadLetterPage::default());
        };
        part.purge(now);
        let part = &*part;
        let Some(a) = part.accounts.get(account) else {
            return Ok(DeadLetterPage::default());
        };
        let items = a
            .dead_letters
            .order
            .iter()
            .skip(offset.min(usize::MAX as u64) as usize)
            .take(limit.min(usize::MAX as u64) as usize)
            .map(|(at, did)| {
                let (eid, k) = split_did(did).unwrap_or((did.as_str(), 0));
                let ev = part.events.get(eid);
                let call = ev.and_then(|e| e.calls.get(k));
                let event = ev
                    .and_then(|e| e.body.clone())
                    .and_then(|body| {
                        let agent = call.and_then(|c| c.agent);
                        serde_json::from_slice(
                            &NotifyPayload::from_stored(body).upstream_bytes(agent),
                        )
                        .ok()
                    })
                    .unwrap_or(serde_json::Value::Null);
                DeadLetter {
                    delivery_id: did.clone(),
                    event_id: eid.to_string(),
                    status: call.map(|c| c.status.as_str()).unwrap_or("").to_string(),
                    reason: call.and_then(|c| c.dead_reason.clone()).unwrap_or_default(),
                    attempts: call.map_or(0, |c| c.attempts.max(0) as u32),
                    last_status: call.and_then(|c| c.last_status.parse().ok()),
                    last_error: call.map(|c| c.last_error.clone()).filter(|e| !e.is_empty()),
                    created_at: rfc3339_ms(ev.map_or(0, |e| e.created)),
                    dead_at: rfc3339_ms(*at),
                    event,
                }
            })
            .collect();
        Ok(DeadLetterPage {
            total: a.dead_letters.len() as u64,
            items,
        })
    }

    async fn replay(
        &self,
        account: &str,
        selection: &DeadLetterSelection,
        ttl: Duration,
    ) -> Result<DeadLetterResult, QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        let part = state
            .entry(partition_of(account, self.config.partitions))
            .or_default();
        part.purge(now);
        let ids = selected(part, account, selection);
        let mut result = DeadLetterResult::default();
        for did in ids {
            if part.replay_one(account, &did, ttl.as_millis() as u64, now) {
                result.count += 1;
            } else if matches!(selection, DeadLetterSelection::Ids(_)) {
                result.not_found.push(did);
            }
        }
        if result.count > 0 {
            part.mark_ready(account, now);
        }
        Ok(result)
    }

    async fn purge_dead(
        &self,
        account: &str,
        selection: &DeadLetterSelection,
    ) -> Result<DeadLetterResult, QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        let part = state
            .entry(partition_of(account, self.config.partitions))
            .or_default();
        part.purge(now);
        let ids = selected(part, account, selection);
        let mut result = DeadLetterResult::default();
        for did in ids {
            if part.purge_one(account, &did, now) {
                result.count += 1;
            } else {
                result.not_found.push(did);
            }
        }
        Ok(result)
    }

    async fn pause(&self, account: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        let part = state
            .entry(partition_of(account, self.config.partitions))
            .or_default();
        part.accounts.entry(account.to_string()).or_default().paused = true;
        part.ready.remove(account);
        Ok(())
    }

    async fn resume(&self, account: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        let now = self.now_ms();
        let part = state
            .entry(partition_of(account, self.config.partitions))
            .or_default();
        let a = part.accounts.entry(account.to_string()).or_default();
        a.paused = false;
        a.auth_failed = false;
        part.mark_ready(account, now);
        Ok(())
    }

    async fn put_account(&self, id: &str, record: &str) -> Result<bool, QueueError> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        Ok(runtime.insert(id.to_string(), record.to_string()).is_none())
    }

    async fn get_account(&self, id: &str) -> Result<Option<String>, QueueError> {
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        Ok(runtime.get(id).cloned())
    }

    async fn delete_account(&self, id: &str) -> Result<bool, QueueError> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        Ok(runtime.remove(id).is_some())
    }

    async fn list_accounts(&self) -> Result<Vec<(String, String)>, QueueError> {
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = runtime
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// The dead letters a selection names: every letter of the account, or the given ids.
fn selected(part: &Part, account: &str, selection: &DeadLetterSelection) -> Vec<String> {
    match selection {
        DeadLetterSelection::Ids(ids) => ids.clone(),
        DeadLetterSelection::All => part
            .accounts
            .get(account)
            .map(|a| {
                a.dead_letters
                    .order
                    .iter()
                    .map(|(_, d)| d.clone())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    //! Timing logic on tokio's paused clock: real windows, pauses and delays, no waiting.

    use super::*;
    use crate::queue::NewEvent;

    const MINUTE: u64 = 60_000;

    fn queue(limit: u32, window_ms: u64, lease: Duration) -> MemoryQueue {
        MemoryQueue::new(MemoryQueueConfig {
            partitions: 1,
            lease,
            default_limit: RateLimit { limit, window_ms },
            margin_ms: 250,
        })
    }

    fn event(name: &str, ttl_ms: u64) -> NewEvent {
        NewEvent {
            id: EventId::new(0),
            priority: Priority::Normal,
            ttl_ms,
            payload: NotifyPayload::new(1, name, None),
            agents: vec![None],
            idempotency: None,
        }
    }

    async fn enqueue(q: &MemoryQueue, events: Vec<NewEvent>) -> Vec<EnqueueOutcome> {
        q.enqueue(EnqueueBatch {
            account: "acme".into(),
            limit: RateLimit {
                limit: 100,
                window_ms: MINUTE,
            },
            max_depth: 100_000,
            idempotency_ttl_secs: 86_400,
            events,
        })
        .await
        .unwrap()
    }

    async fn claim_one(q: &MemoryQueue) -> Option<Claimed> {
        let mut items = q.claim(0, 10).await.unwrap().items;
        assert!(items.len() <= 1, "one delivery in flight per account");
        items.pop()
    }

    async fn complete(q: &MemoryQueue, c: &Claimed, outcome: Outcome) {
        q.complete(&[Completion::of(c, outcome)]).await.unwrap();
    }

    fn delivered() -> Outcome {
        Outcome::Delivered { status: 200 }
    }

    #[tokio::test(start_paused = true)]
    async fn a_60s_window_never_sees_more_than_100_starts_and_uses_the_budget() {
        let q = queue(100, MINUTE, Duration::from_secs(15));
        let n = 350;
        enqueue(&q, (0..n).map(|i| event(&format!("e{i}"), 0)).collect()).await;
        let mut starts = Vec::new();
        while starts.len() < n {
            let batch = q.claim(0, 10).await.unwrap();
            match batch.items.first() {
                Some(c) => {
                    starts.push(q.now_ms());
                    complete(&q, c, delivered()).await;
                }
                None => {
                    let wait = batch.next_due.expect("work is waiting");
                    assert!(wait > Duration::ZERO, "a throttled account is re-scored");
                    tokio::time::advance(wait).await;
                }
            }
        }
        for i in 0..n - 100 {
            assert!(
                starts[i + 100] - starts[i] >= MINUTE,
                "101 starts within 60 s from #{i}"
            );
        }
        // 350 sends need 3 full windows (plus margins) after the first.
        let span = starts[n - 1] - starts[0];
        assert!(span <= 3 * (MINUTE + 250) + 10, "span {span} ms");
        let utilisation = (3 * MINUTE) as f64 / span as f64;
        assert!(utilisation >= 0.98, "utilisation {utilisation}");
        assert_eq!(q.counters("acme").unwrap().sent, n as i64);
        assert_eq!(q.counters("acme").unwrap().depth, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_account_for_retry_after_and_the_attempt_does_not_count() {
        let q = queue(100, MINUTE, Duration::from_secs(15));
        enqueue(&q, vec![event("a", 0), event("b", 0)]).await;
        let c = claim_one(&q).await.unwrap();
        complete(
            &q,
            &c,
            Outcome::RateLimited {
                retry_after: Duration::from_secs(30),
            },
        )
        .await;
        tokio::time::advance(Duration::from_millis(29_999)).await;
        let batch = q.claim(0, 10).await.unwrap();
        assert!(batch.items.is_empty(), "paused for 30 s");
        assert_eq!(batch.next_due, Some(Duration::from_millis(1)));
        tokio::time::advance(Duration::from_millis(1)).await;
        let again = claim_one(&q).await.unwrap();
        assert_eq!(again.delivery_id, c.delivery_id, "first in line again");
        assert_eq!(again.attempts, 1, "the 429 did not count");
        assert_eq!(q.counters("acme").unwrap().upstream_429, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_their_delay_and_leases_end_on_time() {
        let q = queue(100, MINUTE, Duration::from_secs(15));
        enqueue(&q, vec![event("a", 0)]).await;
        let c = claim_one(&q).await.unwrap();
        complete(
            &q,
            &c,
            Outcome::Retry {
                delay: Duration::from_secs(300),
                status: Some(503),
                error: "unavailable".into(),
            },
        )
        .await;
        assert_eq!(q.counters("acme").unwrap().delayed, 1);
        tokio::time::advance(Duration::from_millis(299_999)).await;
        assert!(claim_one(&q).await.is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = claim_one(&q).await.unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(q.counters("acme").unwrap().delayed, 0);

        // The worker holding it goes silent: the lease ends after 15 s.
        tokio::time::advance(Duration::from_millis(14_999)).await;
        assert!(claim_one(&q).await.is_none(), "still leased");
        tokio::time::advance(Duration::from_millis(1)).await;
        let third = claim_one(&q).await.unwrap();
        assert_eq!(third.attempts, 3);
        assert_ne!(third.lease_token, second.lease_token);
        // The silent worker's late failure is ignored; the new holder's success counts.
        complete(
            &q,
            &second,
            Outcome::Dead {
                reason: "rejected".into(),
                status: Some(400),
                error: "late".into(),
            },
        )
        .await;
        complete(&q, &third, delivered()).await;
        let id = EventId::parse(c.delivery_id.split(':').next().unwrap()).unwrap();
        let record = q.event(&id).await.unwrap().unwrap();
        assert_eq!(record.status, "delivered");
        assert_eq!(q.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_turns_queued_events_into_expired_dead_letters() {
        let q = queue(100, MINUTE, Duration::from_secs(15));
        let out = enqueue(&q, vec![event("a", 3_600_000), event("b", 7_200_000)]).await;
        let EnqueueOutcome::Stored { id, .. } = &out[0] else {
            panic!("{out:?}")
        };
        tokio::time::advance(Duration::from_secs(3600)).await;
        let c = claim_one(&q).await.unwrap();
        assert!(
            c.body.ends_with(br#""event":"b"}"#),
            "a expired, b still alive"
        );
        let record = q
            .event(&EventId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, "expired");
        let dead = q.dead_letter_entries("acme");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "expired");
        assert_eq!(q.counters("acme").unwrap().depth, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn records_stay_a_day_dead_letters_stay_and_idempotency_keys_expire() {
        let q = queue(100, MINUTE, Duration::from_secs(15));
        let mut keyed = event("a", 0);
        keyed.idempotency = Some(("k1".into(), "fp".into()));
        let out = enqueue(&q, vec![keyed, event("b", 0)]).await;
        let ids: Vec<EventId> = out
            .iter()
            .map(|o| match o {
                EnqueueOutcome::Stored { id, .. } => EventId::parse(id).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        let a = claim_one(&q).await.unwrap();
        complete(&q, &a, delivered()).await;
        let b = claim_one(&q).await.unwrap();
        complete(
            &q,
            &b,
            Outcome::Dead {
                reason: "rejected".into(),
                status: Some(422),
                error: "bad".into(),
            },
        )
        .await;

        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        assert!(q.event(&ids[0]).await.unwrap().is_some(), "kept 24 h");
        let mut again = event("a", 0);
        again.idempotency = Some(("k1".into(), "fp".into()));
        let out = enqueue(&q, vec![again]).await;
        assert!(
            matches!(&out[0], EnqueueOutcome::Stored { id, .. } if id != ids[0].as_str()),
            "the idempotency key expired after 24 h: {out:?}"
        );

        tokio::time::advance(Duration::from_millis(RETENTION_MS - 24 * 3600 * 1000)).await;
        assert!(
            q.event(&ids[0]).await.unwrap().is_none(),
            "gone after retention"
        );
        tokio::time::advance(Duration::from_secs(48 * 3600)).await;
        let dead = q.event(&ids[1]).await.unwrap().unwrap();
        assert_eq!(dead.status, "dead", "an event with a dead letter is kept");
        assert_eq!(dead.deliveries[0].last_status, Some(422));
    }
}

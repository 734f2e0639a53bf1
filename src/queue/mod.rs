//! The durable per-account queue behind ingress and delivery.
//!
//! [`Queue`] is the contract; [`redis::RedisQueue`] is the production backend and
//! [`memory::MemoryQueue`] the in-memory one (`memory://`, not durable) for `zenrelay demo`
//! and fast tests. Only `app` picks a backend. The queue, not the worker, owns every rule that must hold across
//! processes: the rolling-window limit per account, one delivery in flight per account
//! (which keeps first attempts in FIFO order), leases, retries, dead letters and TTLs.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{EventId, NotifyPayload, Priority};

/// How long finished events stay readable, in milliseconds (24 h and a minute).
pub const RETENTION_MS: u64 = 24 * 3600 * 1000 + 60_000;

/// Most expired leases and due retries requeued per claim call.
pub const REAP_MAX: usize = 200;

/// A failure of the storage itself (never of the caller's input).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store does not answer or refused the command; retry later.
    #[error("queue storage unavailable: {0}")]
    Unavailable(String),
    /// The store answered something the gateway does not understand.
    #[error("unexpected answer from queue storage: {0}")]
    Protocol(String),
}

/// The rate limit of an account, stored with its events so every process applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Notify calls allowed per window.
    pub limit: u32,
    /// The rolling window, in milliseconds.
    pub window_ms: u64,
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its id (which names its partition).
    pub id: EventId,
    /// Delivery priority.
    pub priority: Priority,
    /// Time to live, in milliseconds.
    pub ttl_ms: u64,
    /// The Notify payload, without `agent_id`.
    pub payload: NotifyPayload,
    /// One Notify call per entry.
    pub agents: Vec<Option<u64>>,
    /// `Idempotency-Key` and the request fingerprint, if the caller sent a key.
    pub idempotency: Option<(String, String)>,
}

/// What storing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Stored now.
    Stored {
        /// The event id.
        id: String,
        /// Notify calls it will make.
        deliveries: u64,
    },
    /// An earlier request with the same idempotency key and body was stored.
    Duplicate {
        /// The earlier event's id.
        id: String,
        /// Its Notify calls.
        deliveries: u64,
    },
    /// The idempotency key was used with another body.
    IdempotencyMismatch,
    /// The account's queue is at `max_queue_depth`.
    QueueFull,
}

/// A request to store events of one account.
#[derive(Debug, Clone)]
pub struct EnqueueBatch {
    /// The account.
    pub account: String,
    /// Its rate limit.
    pub limit: RateLimit,
    /// Its depth cap, in Notify calls.
    pub max_depth: u64,
    /// How long idempotency keys are remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// The events, stored in order.
    pub events: Vec<NewEvent>,
}

/// One Notify call handed to a worker, leased to it until it completes or the lease ends.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `{event id}:{index}`.
    pub delivery_id: String,
    /// The account.
    pub account: String,
    /// The exact upstream body.
    pub body: Vec<u8>,
    /// Attempts including this one.
    pub attempts: u32,
    /// When the event was accepted (Unix ms).
    pub created_ms: u64,
    /// Proof of the lease, handed back on completion.
    pub lease_token: u64,
}

/// How a delivery ended, as reported by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream answered 2xx.
    Delivered {
        /// The upstream status.
        status: u16,
    },
    /// Try again after `delay`.
    Retry {
        /// Backoff before the next attempt.
        delay: Duration,
        /// Upstream status, if one was received.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// Give up: keep it as a dead letter.
    Dead {
        /// Machine-readable reason (`rejected`, `max_attempts`, ...).
        reason: String,
        /// Upstream status, if one was received.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// Upstream answered 429: pause the whole account; the attempt does not count.
    RateLimited {
        /// How long the account pauses.
        retry_after: Duration,
    },
    /// Upstream refused the credentials: mark the account `auth_failed` and pause it;
    /// the attempt does not count and the event stays queued.
    AuthFailed {
        /// 401 or 403.
        status: u16,
        /// The upstream answer.
        error: String,
    },
    /// Not attempted (shutdown): back to the front of the queue, attempt not counted.
    Released,
}

/// A finished delivery to record.
#[derive(Debug, Clone)]
pub struct Completion {
    /// `{event id}:{index}`.
    pub delivery_id: String,
    /// The account.
    pub account: String,
    /// The lease token of the claim.
    pub lease_token: u64,
    /// What happened.
    pub outcome: Outcome,
}

impl Completion {
    /// The completion of a claimed delivery.
    pub fn of(claimed: &Claimed, outcome: Outcome) -> Self {
        Completion {
            delivery_id: claimed.delivery_id.clone(),
            account: claimed.account.clone(),
            lease_token: claimed.lease_token,
            outcome,
        }
    }
}

/// What a claim found.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Deliveries now leased to the caller.
    pub items: Vec<Claimed>,
    /// Time until more work will be due in this partition, if any is waiting.
    pub next_due: Option<Duration>,
}

/// Status of one Notify call of an event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryStatus {
    /// The agent notified, if the call targets one.
    pub agent_id: Option<u64>,
    /// `queued`, `delivering`, `retrying`, `delivered`, `dead` or `expired`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// Last upstream status.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// When it was delivered (RFC 3339).
    pub delivered_at: Option<String>,
}

/// An event as `GET /v1/events/{id}` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    /// The id.
    pub id: String,
    /// The account.
    pub account: String,
    /// Overall status, derived from the deliveries.
    pub status: String,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// One entry per Notify call.
    pub deliveries: Vec<DeliveryStatus>,
}

impl EventRecord {
    /// The overall status: the least advanced of the deliveries, with `dead`/`expired`
    /// once every call has finished and one of them failed.
    pub fn overall_status(deliveries: &[DeliveryStatus]) -> &'static str {
        let has = |s: &str| deliveries.iter().any(|d| d.status == s);
        if has("delivering") {
            "delivering"
        } else if has("retrying") {
            "retrying"
        } else if has("queued") {
            "queued"
        } else if has("dead") {
            "dead"
        } else if has("expired") {
            "expired"
        } else {
            "delivered"
        }
    }
}

/// The queue contract shared by every backend.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Number of partitions the worker walks.
    fn partitions(&self) -> u16;

    /// Which backend this is, for people (no secrets): e.g. where it stores and whether
    /// it is durable.
    fn describe(&self) -> String;

    /// Checks the storage's own settings at startup and warns (logs) about those that can
    /// lose data. Errors only when the storage cannot be reached.
    async fn check_deployment(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Stores events of one account atomically per event; one outcome per event, in order.
    async fn enqueue(&self, batch: EnqueueBatch) -> Result<Vec<EnqueueOutcome>, QueueError>;

    /// Claims up to `max` deliveries of `partition` whose accounts may send now, taking
    /// one rate-limit slot for each; also requeues expired leases and due retries.
    async fn claim(&self, partition: u16, max: usize) -> Result<ClaimBatch, QueueError>;

    /// Records finished deliveries. A completion for a delivery whose lease was lost is
    /// ignored, except that a late success still removes it everywhere.
    async fn complete(&self, completions: &[Completion]) -> Result<(), QueueError>;

    /// Looks up an event.
    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, QueueError>;

    /// Answers when the storage is reachable.
    async fn ping(&self) -> Result<(), QueueError>;
}

/// Unix time in milliseconds, rendered as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}

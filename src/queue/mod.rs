//! The durable per-account queue behind ingress and delivery.
//!
//! [`Queue`] is the contract. Its behaviour is written once, as the Lua scripts beside
//! [`script_queue`] (key layout and scripts documented there), and
//! [`script_queue::ScriptQueue`] runs them over a transport: [`redis::RedisQueue`] sends them to a Redis primary (production),
//! reached by [`connections`] at `redis.url` or through Sentinel; [`cluster::ClusterQueue`]
//! to the masters of a Redis Cluster, each partition's calls to its slot's master
//! ([`cluster`]); and [`memory::MemoryQueue`] (`memory://`, not durable, for `zenrelay
//! demo` and fast tests) runs them in an embedded Lua 5.1 over the in-process [`store`].
//! Only `app` picks a backend. The queue, not the worker, owns every rule that must hold
//! across processes: the
//! rolling-window limit per account, one delivery in flight per account (which keeps first
//! attempts in FIFO order), leases, retries, dead letters and TTLs.

mod announce;
pub mod cluster;
pub mod connections;
mod enqueue_calls;
pub mod layout;
mod leased;
pub mod memory;
pub mod redis;
mod replies;
pub mod script_queue;
mod snapshot;

pub use snapshot::{ChangeReads, CHANGES_KEPT_MS, CLOCK_SLACK_MS};
pub mod store;
pub mod transport;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{EventId, NotifyPayload, Priority};

/// How long finished events stay readable, in milliseconds (24 h and a minute).
pub const RETENTION_MS: u64 = 24 * 3600 * 1000 + 60_000;

/// How long the queue keeps what no longer needs delivering, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A dead letter, from when it became one.
    pub dead_letters_ms: u64,
    /// A finished event's record, from when its last call finished.
    pub events_ms: u64,
    /// An idle account's record (no events, dead letters or hold), from when it was first
    /// seen idle.
    pub accounts_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            dead_letters_ms: 7 * 24 * 3600 * 1000,
            events_ms: RETENTION_MS,
            accounts_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// A failure of the storage itself (never of the caller's input).
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The store does not answer or refused the command; retry later.
    #[error("queue storage unavailable: {0}")]
    Unavailable(String),
    /// The store answered something the gateway does not understand.
    #[error("unexpected answer from queue storage: {0}")]
    Protocol(String),
    /// The store holds data this process's settings do not fit (e.g. another partition
    /// count): the process must not use it.
    #[error("queue storage does not match the configuration: {0}")]
    Mismatch(String),
    /// The primary holds the write, but fewer replicas than `redis.wait_replicas`
    /// confirmed it within `redis.wait_timeout_ms`: a failover could still lose it.
    #[error("queue storage wrote on the primary, but {confirmed} of {wanted} replicas confirmed it in time")]
    NotReplicated {
        /// Replicas required.
        wanted: u32,
        /// Replicas that confirmed the write.
        confirmed: u32,
    },
}

/// The rate limit of an account, stored with its events so every process applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl EnqueueBatch {
    /// The account's partition, as its events' ids name it (0 for a batch of none, which
    /// is never sent).
    pub fn partition(&self) -> u16 {
        self.events.first().map_or(0, |e| e.id.partition())
    }
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
    /// When the event was accepted (Unix ms), as its id carries it
    /// ([`crate::domain::EventId::created_ms`]; 0 for an id that names no event).
    pub created_ms: u64,
    /// Proof of the lease, handed back on completion.
    pub lease_token: u64,
    /// The lease's length, from the claim: a send must end within it.
    pub lease: Duration,
    /// Its place in its lease group (see [`Queue::claim`]): 0 for the first, which a
    /// claim's items start each group with.
    pub group_index: u32,
    /// What the gateway read of the call after its claim that its completion need not
    /// read again, handed back with it like the lease token (empty: the completion reads
    /// the event).
    pub seen: String,
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
        /// Why.
        reason: DeadReason,
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

/// When the account of a recorded completion may send again: what tells a worker whether
/// the account's partition is worth a claim now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freed {
    /// Now, or nothing is known (its account still has calls in flight, say).
    Now,
    /// Its account's window is full: after this long.
    After(Duration),
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
    /// The claim's [`Claimed::seen`] (empty when unknown: the completion reads the event).
    pub seen: String,
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
            seen: claimed.seen.clone(),
            outcome,
        }
    }
}

/// What a claim found.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Deliveries now leased to the caller.
    pub items: Vec<Claimed>,
    /// Time until more work will be due in this partition: when nothing was claimed, if
    /// any is waiting; when something was, if the claim took all that was due (so the
    /// partition need not be claimed again before then, unless its deliveries' outcomes
    /// free an account or new work comes). `None` when something was claimed and more may
    /// be due now.
    pub next_due: Option<Duration>,
}

/// For an enum of the words the scripts store, with `ALL` and `as_str`: `parse` (the
/// inverse of `as_str`; `None` for a word the scripts never store), `Display` and
/// comparison with a word.
macro_rules! script_words {
    ($t:ty) => {
        impl $t {
            /// The value a script stored as `text`; `None` for a word it never stores.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// Where one Notify call of an event stands (and, for a whole event, the least advanced of
/// its calls: see [`EventRecord::overall_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// Waiting in its account's queue.
    Queued,
    /// Leased to a worker, being sent.
    Delivering,
    /// Waiting for a retry.
    Retrying,
    /// Zendesk accepted it.
    Delivered,
    /// A dead letter: rejected, or out of attempts.
    Dead,
    /// A dead letter: its time to live ran out.
    Expired,
}

impl CallStatus {
    /// Every status.
    pub const ALL: [CallStatus; 6] = [
        CallStatus::Queued,
        CallStatus::Delivering,
        CallStatus::Retrying,
        CallStatus::Delivered,
        CallStatus::Dead,
        CallStatus::Expired,
    ];

    /// The status as the scripts store it and the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Delivering => "delivering",
            CallStatus::Retrying => "retrying",
            CallStatus::Delivered => "delivered",
            CallStatus::Dead => "dead",
            CallStatus::Expired => "expired",
        }
    }
}

script_words!(CallStatus);

/// Why a Notify call became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Zendesk refused it for good (a 4xx other than 401, 403, 408 and 429).
    Rejected,
    /// Every attempt (`delivery.max_attempts`) failed.
    MaxAttempts,
    /// Its time to live ran out before it could be sent.
    Expired,
}

impl DeadReason {
    /// Every reason.
    pub const ALL: [DeadReason; 3] = [
        DeadReason::Rejected,
        DeadReason::MaxAttempts,
        DeadReason::Expired,
    ];

    /// The reason as the scripts store it and the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::Expired => "expired",
        }
    }
}

script_words!(DeadReason);

/// Status of one Notify call of an event.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryStatus {
    /// The agent notified, if the call targets one.
    pub agent_id: Option<u64>,
    /// Where the call stands.
    pub status: CallStatus,
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
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// The id.
    pub id: String,
    /// The account.
    pub account: String,
    /// Overall status, derived from the deliveries.
    pub status: CallStatus,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// One entry per Notify call.
    pub deliveries: Vec<DeliveryStatus>,
}

impl EventRecord {
    /// The overall status: the least advanced of the deliveries, with `dead`/`expired`
    /// once every call has finished and one of them failed.
    pub fn overall_status(deliveries: &[DeliveryStatus]) -> CallStatus {
        use CallStatus::*;
        [Delivering, Retrying, Queued, Dead, Expired]
            .into_iter()
            .find(|s| deliveries.iter().any(|d| d.status == *s))
            .unwrap_or(Delivered)
    }
}

/// Counters and flags of one account, as the queue maintains them (read without
/// scanning events).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccountStats {
    /// The account.
    pub account: String,
    /// Undelivered Notify calls: queued, in flight and waiting for a retry.
    pub depth: u64,
    /// Calls leased to a worker right now (at most one lease group of the account:
    /// `delivery.lease_group_max` calls, sent one after another).
    pub in_flight: u64,
    /// Calls waiting for a scheduled retry.
    pub scheduled_retries: u64,
    /// Dead letters (dead and expired calls) kept for inspection or replay.
    pub dead: u64,
    /// When the oldest event waiting in the account's lists or in flight was accepted
    /// (Unix ms); retries still waiting for their due time are not considered.
    pub oldest_ms: Option<u64>,
    /// Notify calls started within the account's current rolling window.
    pub sent_in_window: u64,
    /// Notify calls delivered since the account was first seen.
    pub delivered: u64,
    /// Upstream 429 answers since the account was first seen.
    pub upstream_429: u64,
    /// Delivery held by an operator.
    pub paused: bool,
    /// Delivery held because upstream refused the credentials.
    pub auth_failed: bool,
    /// Earliest time (Unix ms) the account may send next, when it has queued work that
    /// is neither in flight nor held.
    pub next_send_ms: Option<u64>,
}

/// A snapshot of every account's counters, with the storage's clock.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// The storage's time when the snapshot was taken (Unix ms).
    pub now_ms: u64,
    /// One entry per account that ever had events or an operator action.
    pub accounts: Vec<AccountStats>,
    /// Partitions that could not be read this time (their shard down, say): their
    /// accounts show what an earlier read found, or are missing if none did.
    pub unread_partitions: Vec<u16>,
    /// Of `unread_partitions`, those this process never read: nothing is known of their
    /// accounts.
    pub never_read_partitions: Vec<u16>,
}

/// One dead letter: a Notify call that was given up on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// `{event id}:{index}`: what replay and purge take.
    pub delivery_id: String,
    /// The event.
    pub event_id: String,
    /// `dead` or `expired`.
    pub status: CallStatus,
    /// Why.
    pub reason: DeadReason,
    /// Attempts made.
    pub attempts: u32,
    /// Last upstream status, if any.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// When the event was accepted (RFC 3339).
    pub created_at: String,
    /// When it became a dead letter (RFC 3339).
    pub dead_at: String,
    /// The exact Notify request body that was (or would have been) sent.
    pub event: serde_json::Value,
}

/// A page of an account's dead letters, oldest first.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterPage {
    /// Dead letters of the account in all.
    pub total: u64,
    /// The page.
    pub items: Vec<DeadLetter>,
}

/// Which dead letters an operator action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelection {
    /// Every dead letter of the account at the time of the call.
    All,
    /// These delivery ids (`{event id}:{index}`); ids that are not dead letters of the
    /// account are reported as not found and left alone.
    Ids(Vec<String>),
}

/// What a replay or purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterResult {
    /// Dead letters replayed (or purged).
    pub count: u64,
    /// Requested ids that were not dead letters of the account.
    pub not_found: Vec<String>,
}

/// The queue contract shared by every backend.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Number of partitions the worker walks.
    fn partitions(&self) -> u16;

    /// Dead letters this process's claims dropped after their retention since the last
    /// call (for the `zenrelay_dead_letters_dropped_total` counter).
    fn take_dead_letters_dropped(&self) -> u64 {
        0
    }

    /// Which backend this is, for people (no secrets): e.g. where it stores and whether
    /// it is durable.
    fn describe(&self) -> String;

    /// Checks the storage's own settings at startup and warns (logs) about those that can
    /// lose data, then loads what the queue runs into it (Redis's scripts; one that
    /// cannot be loaded is only warned of, and sent with its source at its first call).
    /// Errors when the storage cannot be reached, and with [`QueueError::Mismatch`] when
    /// it holds data this configuration does not fit.
    async fn check_deployment(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// The partition count the stored data was written with (see
    /// [`layout::recorded_partitions`]); `None` for a new store, and for a store that
    /// lives in this process.
    async fn recorded_partitions(&self) -> Result<Option<u16>, QueueError> {
        Ok(None)
    }

    /// Stores events of one account atomically per event; one outcome per event, in order.
    async fn enqueue(&self, batch: EnqueueBatch) -> Result<Vec<EnqueueOutcome>, QueueError>;

    /// Claims the deliveries of up to `max` accounts of `partition` that may send now,
    /// taking one rate-limit slot for each delivery; also requeues expired leases and due
    /// retries. An account whose window has room for several sends gives a lease group:
    /// up to `delivery.lease_group_max` of its first deliveries, consecutive among the items
    /// (`group_index` 0, 1, ...), to be sent one after another, in that order, by one
    /// sender. A sender that stops before the end of its group (a 429, refused
    /// credentials, shutdown) completes the members it did not send as
    /// [`Outcome::Released`], last first, before the one it stopped at, so that they go
    /// back to the front of the list in their order.
    async fn claim(&self, partition: u16, max: usize) -> Result<ClaimBatch, QueueError>;

    /// Several partitions' claims, one result per request in order: a partition whose
    /// storage fails (an error, a redirect, a timeout) fails alone, and the others' claims
    /// stand. A backend may run them in one round trip.
    async fn claim_each(&self, requests: &[(u16, usize)]) -> Vec<Result<ClaimBatch, QueueError>> {
        let mut out = Vec::with_capacity(requests.len());
        for &(partition, max) in requests {
            out.push(self.claim(partition, max).await);
        }
        out
    }

    /// Several partitions' claims, one result per request in order; the first failure is
    /// the answer (what the other partitions leased then waits for its leases to end): use
    /// [`Queue::claim_each`] to keep them.
    async fn claim_many(&self, requests: &[(u16, usize)]) -> Result<Vec<ClaimBatch>, QueueError> {
        self.claim_each(requests).await.into_iter().collect()
    }

    /// Records finished deliveries. A completion for a delivery whose lease was lost is
    /// ignored, except that a late success still removes it everywhere.
    async fn complete(&self, completions: &[Completion]) -> Result<(), QueueError>;

    /// Records finished deliveries as [`Queue::complete`] does, one result per
    /// completion: those of a partition whose storage fails fail alone, and the others
    /// are recorded, each saying when its account may send again.
    async fn complete_each(&self, completions: &[Completion]) -> Vec<Result<Freed, QueueError>> {
        match self.complete(completions).await {
            Ok(()) => completions.iter().map(|_| Ok(Freed::Now)).collect(),
            Err(e) => completions.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Looks up an event.
    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, QueueError>;

    /// Answers when the storage is reachable.
    async fn ping(&self) -> Result<(), QueueError>;

    // ---- operator operations ----

    /// Counters and flags of every account known to the storage (those that ever had
    /// events, or were paused/resumed), read from the counters the scripts maintain.
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// The account's dead letters, oldest first: `limit` of them after skipping
    /// `offset`, with the total count.
    async fn dead_letters(
        &self,
        account: &str,
        offset: u64,
        limit: u64,
    ) -> Result<DeadLetterPage, QueueError>;

    /// Puts the selected dead letters back at the tail of their account's queue (their
    /// priority kept) as new deliveries: attempts reset to 0, dead reason cleared, counted
    /// again in `depth`, and, when the event had a time to live, its expiry moved to
    /// now + `ttl`. Ignores `max_queue_depth` (an operator's decision). Atomic per chunk of
    /// letters; a letter is replayed at most once.
    async fn replay(
        &self,
        account: &str,
        selection: &DeadLetterSelection,
        ttl: Duration,
    ) -> Result<DeadLetterResult, QueueError>;

    /// Forgets the selected dead letters: they leave the dead-letter list and counter,
    /// and an event whose every call has finished and that has no dead letter left is
    /// then kept only for the usual retention of finished events (its status, `dead` or
    /// `expired`, stays readable meanwhile).
    async fn purge_dead(
        &self,
        account: &str,
        selection: &DeadLetterSelection,
    ) -> Result<DeadLetterResult, QueueError>;

    /// Holds the account's delivery: no new call is claimed (a call already in flight
    /// finishes); ingress keeps accepting. Idempotent.
    async fn pause(&self, account: &str) -> Result<(), QueueError>;

    /// Clears both `paused` and `auth_failed` and makes the account claimable again
    /// (subject to its rate limit and to an upstream 429 pause still running). Idempotent.
    async fn resume(&self, account: &str) -> Result<(), QueueError>;

    // ---- runtime accounts (opaque records; the caller encrypts credentials) ----

    /// Stores the record of runtime account `id`; true when it did not exist before.
    async fn put_account(&self, id: &str, record: &str) -> Result<bool, QueueError>;

    /// The record of runtime account `id`.
    async fn get_account(&self, id: &str) -> Result<Option<String>, QueueError>;

    /// Deletes runtime account `id`; true when it existed. Its queued events stay.
    async fn delete_account(&self, id: &str) -> Result<bool, QueueError>;

    /// Every runtime account record, by id.
    async fn list_accounts(&self) -> Result<Vec<(String, String)>, QueueError>;

    // ---- the processes sharing the store ----

    /// Announces to every process's worker that work may be waiting (as storing,
    /// replaying and resuming do by themselves); nothing on a store that does not announce.
    async fn announce_work(&self);

    /// Listens for work stored by any process: `subscribed` is called once listening,
    /// then `message` each time work was stored, with the partitions it is in (`None`:
    /// any may have work); returns the error that ended it. `None` when the store does not
    /// announce work (the embedded backend: one process, woken directly).
    async fn listen_for_work(
        &self,
        subscribed: &(dyn Fn() + Send + Sync),
        message: &(dyn for<'p> Fn(Option<&'p [u16]>) + Send + Sync),
    ) -> Option<QueueError>;

    /// Records `process` as alive now (its heartbeat, every [`HEARTBEAT`]).
    async fn heartbeat(&self, process: &ProcessRecord) -> Result<(), QueueError>;

    /// Removes the record of process `id` (it is shutting down).
    async fn leave(&self, id: &str) -> Result<(), QueueError>;

    /// The processes whose last heartbeat is under [`PROCESS_STALE`] old, by start time;
    /// older records are forgotten.
    async fn processes(&self) -> Result<Vec<ProcessRecord>, QueueError>;
}

/// How often a gateway process records that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long after its last heartbeat a process counts as gone.
pub const PROCESS_STALE: Duration = Duration::from_secs(20);

/// A gateway process, as it records itself in the store (`GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessRecord {
    /// Unique per process run.
    pub id: String,
    /// The release (`zenrelay --version`).
    pub version: String,
    /// The store layout it reads and writes ([`layout::LAYOUT_VERSION`]).
    pub layout: u32,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Whether it delivers (`delivery.enabled`).
    pub delivery: bool,
    /// Its last heartbeat (RFC 3339), as the store's clock saw it; set when read.
    #[serde(default)]
    pub last_seen: String,
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
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

    /// The words the scripts store are the words the API shows, each read back as its
    /// value.
    #[test]
    fn script_words_read_back() {
        for status in CallStatus::ALL {
            assert_eq!(CallStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::json!(status), status.as_str());
        }
        for reason in DeadReason::ALL {
            assert_eq!(DeadReason::parse(reason.as_str()), Some(reason));
            assert_eq!(serde_json::json!(reason), reason.as_str());
        }
        assert_eq!(CallStatus::parse("sent"), None);
        assert_eq!(DeadReason::parse(""), None);
    }
}

//! The queue logic every backend shares.
//!
//! [`ScriptQueue`] implements [`Queue`] by running the Lua scripts beside this file over a
//! [`Transport`]: it builds every key and script argument and reads every reply. The
//! transport only carries scripts and a few plain commands to a store:
//! [`super::redis::RedisConnections`] to a Redis server (the production backend,
//! [`super::redis::RedisQueue`]), [`super::cluster::ClusterConnections`] to the masters of
//! a Redis Cluster, and [`super::memory::Embedded`] to an in-process store running the
//! same scripts with an embedded Lua 5.1 (`memory://`, [`super::memory::MemoryQueue`]).
//! The scripts are the one statement of the queue's behaviour.
//!
//! # Key layout
//!
//! Accounts are spread over `P` partitions (`redis.partitions`, by FNV-1a of the account
//! id). Every key of a partition starts with `base = {prefix}:{pN}`, whose `{pN}` hash tag
//! puts all of them in one Redis Cluster slot, so each script touches a single slot.
//!
//! | key | type | content |
//! |---|---|---|
//! | `{base}:ready` | ZSET | account → earliest time (ms) it may send; accounts with queued work that are neither busy nor paused (one whose lists turn out empty leaves it at its next claim) |
//! | `{base}:q:{account}:h`, `:n` | LIST | delivery ids (`{event id}:{index}`), high and normal priority, FIFO |
//! | `{base}:ev:{event id}` | HASH | the event: `acct`, `q` (an event of one call in its first form: `<exp> <agent>\n<body>`, each of the first two empty when missing, standing for `exp`, `ag0` and `body` until its first write writes them out and empties it; see `first_form` in `scripts.lua`), `n` (Notify calls; missing: 1; its time of creation is its id's, a UUIDv7 made when the gateway accepted it), `prio` (missing: `n`), `exp` (expiry ms; missing or 0: none), `body` (payload without `agent_id`; emptied or removed once every call is delivered), `done`, `dd` (dead count; both missing: 0); per call `k`: `ag{k}` agent (missing: every agent), `s{k}` status (missing: `queued`; `queued` while its lease is in `inflight`, where it shows as `delivering`), `at{k}` attempts that ended (missing: 0; the one in flight is counted when it ends), `c{k}` the end of its last lease that ended early (its next lease must end after it: see `le`) or whose attempt the reaper counted (always written with `at{k}`), `ls{k}` last upstream status, `le{k}` last error, `dt{k}` delivered at, `dr{k}` dead reason, `rp{k}` `1` from a replay until a completion by the holder of its next lease. Expires `delivery.event_retention_seconds` after its last call finished, unless one is a dead letter |
//! | `{base}:ev:{event id}`, an event of one call once delivered | STRING | its summary, which replaces its hash: `delivered <attempts> <upstream status> <delivered at, ms> <agent, or nothing> <account>`, one space apart; expires `delivery.event_retention_seconds` after it was written (read as the hash's fields would be: `summary_fields` in `scripts.lua`) |
//! | `{base}:inflight` | ZSET | delivery id → lease deadline (ms), which is also the lease's token; and its anchor, no delivery, at +inf, which keeps Redis indexing the set (see `claim.lua`) |
//! | `{base}:delayed` | ZSET | delivery id → time (ms) its retry is due |
//! | `{base}:retry:{account}` | ZSET | the account's deliveries waiting for a retry (as in `delayed`) |
//! | `{base}:dead:{account}` | ZSET | delivery id → time (ms) it became a dead letter; dropped `delivery.dead_letter_retention_seconds` later |
//! | `{base}:acct:{account}` | HASH | `limit`, `window` (ms), `sent`, `upstream_429`, `busy` (the lease group in flight: its delivery ids, one space apart, in sending order; see [`Queue::claim`]), `rl` (the rate log: the times in ms of the latest `limit` calls, newest first, 13 digits each without a separator; a call's time is its claim's, replaced by when its answer arrived (upstream saw it no later) or, when its lease ran out, by the lease's end, so transit time can never squeeze `limit + 1` calls into one upstream window; a released call, never sent, loses its entry; a send that would leave more than 128 behind it keeps only those that can still hold back a send under the account's current window and margin), `rl_at` (the claim time of the latest lease group, whose entries in `rl` stand for its members not yet answered while it is in flight), `le` (the end of the latest lease group's lease: the account's next leases end after it, so that a call's lease tokens only grow), `paused`, `auth_failed`, `until` (429 pause end, ms), `d` (never below the account's depth: raised by each enqueue by the calls it stores, removed by a replay; an enqueue counts the depth again when it is missing, has grown past a tenth of the cap or would refuse an event; see `enqueue.lua`), `idle_since` (ms: first seen with no events, dead letters or hold; the record is deleted `delivery.account_retention_seconds` later) |
//! | `{base}:held` | ZSET | held accounts (paused, `auth_failed`, 429 pause) → when a claim should next look for expired events at their heads |
//! | `{base}:accounts` | SET | accounts with a record in this partition (they leave with it) |
//! | `{base}:changed` | ZSET | account → time (ms) of the latest change to what its stats show, recorded by every script that makes one (also when its record is dropped), so that a process keeping the stats reads again only those (`snapshot.rs`); entries older than an hour ([`super::CHANGES_KEPT_MS`]) are dropped by the sweep that ends a round |
//! | `{base}:sweep` | STRING | expiring marker: the pause before the partition's next retention sweep. A sweep that visits `v` of the partition's `N` accounts (its `SCARD`) sets it to the sweep round (`sweep_round`: a tenth of the shorter retention, at most [`SWEEP_ROUND_MAX`]) times `v / N`, so a round of all of them takes about one sweep round; never less than [`SWEEP_INTERVAL`] (longer with over [`SWEEP_PARTITIONS`] partitions), so a partition of over 8 × the round / the interval accounts (4,800 with 64 partitions and the default retentions) takes longer; unless the sweep used up its dead-letter drops (it deletes the marker, so the next claim sweeps again) |
//! | `{base}:sweep:at` | HASH | where the sweep stands: `cursor` (of its `SSCAN` of `accounts`), `last` (the account it visited last on that page) and `pos` (that account's place on the page) |
//! | `{base}:idem:{account}:{key}` | STRING | `{fingerprint} {event id} {n}`, expires after 24 h |
//! | `{base}:replicated` | STRING | with `redis.wait_replicas`: written (expiring after a minute) right before each `WAIT` of a group of stored events, so the offset `WAIT` waits for covers every write before it |
//! | `{base}:processes` | HASH | partition 0 only: the registry of gateway processes, id → `{last heartbeat, ms} {record (JSON)}` ([`super::ProcessRecord`]); `processes.lua` forgets the records gone stale |
//!
//! Outside the partitions (each a single key, so no hash tag is needed):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{prefix}:meta` | HASH | `layout`: the layout version ([`super::layout::LAYOUT_VERSION`]), and `partitions`: the partition count, both recorded on first use (a process that finds a newer layout or another count refuses to start); `migrating` (the target), `from` (the layout migrated) and `migrated` (partitions done) while an earlier layout is migrated, when `layout` is absent (see [`super::layout`]) |
//! | `{prefix}:migrate:lock` | STRING | held, with an expiry, by the process migrating an earlier layout |
//! | `{prefix}:runtime:accounts` | HASH | account id → its runtime record (JSON written by [`crate::accounts`]; credentials inside are encrypted) |
//!
//! An account's counts are read from where its deliveries are, never kept apart (the change
//! set says only which accounts to read again): depth
//! (undelivered calls) is the length of its two lists, plus its retries, plus the calls in
//! flight (`busy`); retries are the size of `retry:{account}`; dead letters the size of
//! `dead:{account}`. The record's `d` is no count: it is a bound, never below the depth,
//! that lets most enqueues check `max_queue_depth` without counting (`enqueue.lua`).
//!
//! # Scripts
//!
//! `enqueue.lua`, `claim.lua` and `complete.lua` (beside this file, each prefixed with the
//! helpers of `scripts.lua` it calls) do every state change of delivery; `replay.lua`,
//! `purge.lua` and `hold.lua` the operator's changes; `stats.lua` and `dead.lua` read. All
//! run atomically and read the clock with Redis `TIME`, so all gateway processes share one
//! clock and one budget per account. The process's settings that `claim.lua` and
//! `complete.lua` use at every call are written into their text (`claim_script`), not
//! sent with each call.
//!
//! Redis's Lua is costly where it looks cheap: every argument, table, closure and
//! concatenation is an allocation, and turning text into a number (`tonumber`) or a
//! number into text (`string.format`) takes about as long as a simple command. The
//! scripts that run per event and per delivery avoid them where they can: a field that
//! holds its default is not written, a value Redis takes as text stays text.
//! Scripts derive their keys from `base`; `KEYS[1]` (the partition's ready set) routes the
//! call. An enqueue serves every request waiting when it is sent, account by account: on
//! a Redis Cluster (and in the embedded store, which holds every script to one slot as
//! a Cluster would) one call per partition, on a single Redis server accounts of every
//! partition in one call, each account's keys still under its own partition's base
//! ([`Transport::scripts_span_partitions`]). Each script is a Redis function: a library
//! of its settings, its helpers and its body (see [`Script`]), whose helpers Redis makes
//! once, when the library is loaded, where a plain script made them at each call (about
//! 23,000 instructions a claim and 16,000 a completion). The libraries are loaded into
//! the store when the process starts ([`Transport::load_scripts`], from
//! `check_deployment`), called with `FCALL`, and loaded again when Redis answers
//! `Function not found` (after a restart without persistence or `FUNCTION FLUSH`; Redis
//! keeps its functions in its snapshots and sends them to its replicas). A store that
//! refuses functions (Redis before 7.0, or an ACL) runs the same code as plain scripts,
//! with `EVALSHA`, and their source after `NOSCRIPT`.
//!
//! # Partial failures
//!
//! Redis does not roll back a script that fails part-way (an error reply, a key missing
//! during a slot migration, a bug). Each script therefore reads and checks before it
//! writes, and orders its writes so that every prefix of them leaves a state the next
//! calls finish or repair; every write goes through the helper `w`, and a test fails each
//! operation after each of its writes in turn, on both transports
//! (`tests/it/queue_faults.rs`):
//!
//! - A delivery is moved before it is marked, and leaves its old place last: a claim
//!   leases the heads of the list and pops them last; a put-back (expired lease, due retry,
//!   released call) pushes first, unless the delivery is already near the head (a redo),
//!   and leaves `inflight` or `delayed` last. While a lease is in `inflight` the reaper
//!   finishes whatever a failed completion left: the event's status says how far it got,
//!   and `busy` still naming the delivery says the account was not freed of it yet.
//! - Enqueue pushes ids before it stores their events: an id whose event was never stored
//!   is a stale entry, dropped once a claim leased it. An event is never stored without its ids. It
//!   raises an account's bound on its depth (`d`) before it pushes, and a replay removes
//!   the bound before it pushes, so the bound is never below the depth: a failure leaves
//!   it at worst above, which costs the account a count at its next enqueue when it nears
//!   the cap.
//! - A claim leases calls by their ids alone, and the gateway reads their events (see
//!   [`super::leased`]): an entry of a finished delivery left in a list is leased, read,
//!   and its lease ended by a completion (`stale`), which also records an expiry that
//!   failed before its dead letter was; an expired call's completion (`expired`) makes it
//!   a dead letter.
//! - A replay that fails after the push leaves the letter among the dead letters until the
//!   call's first lease ends (`rp{k}`): the only state where an id is briefly in two
//!   places.
//! - The worker retries a completion that failed; a completion of an already finished
//!   delivery only finishes what is left. One retried after its call was claimed again is
//!   stale: a lease's token is its end, and a call's next lease ends after every earlier
//!   one: an account's leases end after the last one it was granted (`le`). A call whose
//!   token is not above the end of its last lease that a completion ended early (`c{k}`,
//!   which a lease granted before `le` was recorded may have) goes back to the front
//!   unsent (`again`), and `le` is raised past it. The completions the gateway makes of
//!   calls it leased and did not send are not retried: their leases run out, and the
//!   reaper puts them back (a call whose event is gone names no account: the sweep frees
//!   the account of it once its group's leases have all run out). The success of an
//!   event's only call, the most common outcome, is known for its lease holder's instead
//!   by the call's place in `busy` and the group's claim time (`rl_at`), which the claim
//!   handed the worker ([`Claimed::seen`](super::Claimed::seen)): a call leaves `busy`
//!   before its lease leaves `inflight`, and a new claim of it has a later time. It is
//!   written from what the gateway read of the event after the claim, without reading it
//!   again.
//! - A success is counted (`sent`) once: by the write that takes its call out of `busy`
//!   (the holder's completion, or the reaper's), or, when it is reported after its lease
//!   ran out, by that report, unless a new lease of the call is still in `busy`.
//! - An attempt is counted when it ends: by its completion, or by the reaper as it puts
//!   the call back. A put-back that finds the call already near the head (a redo, or a
//!   claim that failed before its pop, whose call was never sent) does not count it, so a
//!   reap that failed between its push and its count counts one attempt less.
//!
//! # A partition fails alone
//!
//! Several script calls (a claim pass over the partitions, a batch of completions, a group
//! of enqueues) go out together, but each as its own command with its own reply, never as
//! one pipeline whose single error reply would fail them all: an error, a redirect or a
//! timeout of one partition's call fails only that call. The worker backs off only that
//! partition, ingress answers 503 only to that partition's requests, and outcomes that
//! could not be recorded are retried alone. An enqueue call that serves several accounts
//! (of several partitions, on a single server) reads each account, makes its first
//! writes (its change, its bound, its partition's account and ready sets) and pushes its
//! ids under `pcall`: an account whose keys, or whose partition's, cannot be used fails
//! its own events, and the call stores the others'.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use redis::Value;
use tokio::sync::OnceCell;

use super::announce::{announced_partitions, Announcer};
use super::enqueue_calls::{answer_group, call_args, group_calls, PendingEnqueue};
use super::layout::{self, LayoutScripts, RATE_LOG_STAMP};
use super::leased::{judge, EventFields, Leased, LeasedCall, Unsent, Verdict};
use super::replies::{
    array, bytes, call_status, int, outcome_args, parse_claim_reply, parse_complete_reply, text,
};
use super::snapshot::{parse_chunk, ChangeReads, Plan, Read, Snapshot};
use super::transport::{Script, ScriptCall, Transport, HELPERS};
use super::{
    rfc3339_ms, CallStatus, ClaimBatch, Completion, DeadLetter, DeadLetterPage, DeadLetterResult,
    DeadLetterSelection, DeadReason, DeliveryStatus, EnqueueBatch, EnqueueOutcome, EventRecord,
    Freed, Outcome, ProcessRecord, Queue, QueueError, QueueStats, RateLimit, Retention,
    PROCESS_STALE,
};
use crate::domain::{partition_of, EventId, NotifyPayload};

/// A lease group's lease grows, per member after the first, by the lease over this: about
/// one send's time, so that a process that dies mid-group delays its other members by
/// little more than one lease, while a slow upstream makes the sender release the members
/// it cannot start in time.
pub const LEASE_GROUP_GROWTH: u64 = 16;

/// Most dead letters replayed or purged by one script call (keeps each call short).
const DEAD_CHUNK: usize = 500;

/// The settings the queue logic itself uses (the transport has its own).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Key prefix.
    pub prefix: String,
    /// Partition count.
    pub partitions: u16,
    /// Lease of a claimed delivery.
    pub lease: Duration,
    /// Most deliveries of one account a claim leases together (see [`Queue::claim`]).
    pub group_max: u32,
    /// Limit applied to accounts that have none stored.
    pub default_limit: RateLimit,
    /// Margin added to the rolling window, in milliseconds.
    pub margin_ms: u64,
    /// How long dead letters, finished events and idle accounts are kept.
    pub retention: Retention,
}

/// The queue implemented by the Lua scripts, over a [`Transport`].
pub struct ScriptQueue<T> {
    transport: Arc<T>,
    /// Enqueue requests waiting for the next group commit.
    pending: std::sync::Mutex<Vec<PendingEnqueue>>,
    /// Held by the request that is committing a group.
    committing: tokio::sync::Mutex<()>,
    config: QueueSettings,
    enqueue: Script,
    claim: Script,
    complete: Script,
    stats: Script,
    dead: Script,
    replay: Script,
    purge: Script,
    hold: Script,
    event: Script,
    /// Set once the layout and partition count are recorded or checked (see
    /// [`ScriptQueue::check_layout`]).
    layout_checked: Arc<LayoutGate>,
    /// The scripts that migrate an earlier layout.
    migration: Arc<LayoutScripts>,
    /// Announces stored work to every process (`{prefix}:wake`).
    announcer: Arc<Announcer>,
    /// Dead letters dropped by this process's claims, not yet taken by the metrics.
    dead_letters_dropped: AtomicU64,
    /// Least time between two retention sweeps of a partition, in milliseconds.
    sweep_interval_ms: u64,
    /// The helpers in front of every script (to write the claim script again with
    /// another sweep interval).
    helpers: Arc<str>,
    /// The stats as last read (see snapshot.rs); held by the read that refreshes them.
    snapshot: tokio::sync::Mutex<Snapshot>,
    /// How the stats read the change sets.
    reads: ChangeReads,
}

/// Most accounts claimed by one claim script call, so that no call holds Redis for long;
/// larger claims take several calls in one round trip.
const CLAIM_CHUNK: usize = 16;

/// Most deliveries claimed by one claim script call (its accounts' lease groups
/// together), for the same reason.
const CLAIM_DELIVERIES: usize = 64;

/// Most claim calls a partition gets in one [`Queue::claim_each`]: more than one when the
/// gateway ended calls of the previous one unsent.
const CLAIM_ROUNDS: usize = 4;

/// Most expired leases, and most due retries, put back by one claim script call, so
/// that no call holds Redis for long (each takes about ten Redis calls).
const REAP_PER_CALL: usize = 4;

/// Least time between two retention sweeps of a partition (each visits a few accounts),
/// with up to [`SWEEP_PARTITIONS`] partitions; with more, it grows in proportion, so the
/// sweeps of all partitions together cost Redis the same whatever the partition count.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Partitions swept every [`SWEEP_INTERVAL`] each; see there.
pub const SWEEP_PARTITIONS: u16 = 16;

/// The least time between two sweeps of a partition, in ms, for `partitions` (see
/// [`SWEEP_INTERVAL`]).
fn sweep_interval(partitions: u16) -> u64 {
    let rounds = partitions.div_ceil(SWEEP_PARTITIONS).max(1);
    SWEEP_INTERVAL.as_millis() as u64 * u64::from(rounds)
}

/// Longest a partition's retention sweeps take to visit every one of its accounts (see
/// `sweep_round`).
pub const SWEEP_ROUND_MAX: Duration = Duration::from_secs(600);

/// The time, in ms, a partition's retention sweeps take to visit every one of its accounts
/// once (a round; how each sweep is paced: `{base}:sweep` above). A tenth of the shorter
/// retention the sweeps enforce, at least the sweep interval and at most
/// [`SWEEP_ROUND_MAX`] (with the default retentions of a week: ten minutes). A dead letter
/// or an idle account outlives its retention by about a round at most, and an account left
/// busy by a gateway that died holding the lease of a call whose event had gone waits
/// about a round for the sweep that frees it. The sweeps' work follows the accounts, not
/// the time: 10,000 accounts are visited about 17 times a second in all.
fn sweep_round(config: &QueueSettings, sweep_interval_ms: u64) -> u64 {
    let shorter = config
        .retention
        .dead_letters_ms
        .min(config.retention.accounts_ms);
    (shorter / 10)
        .min(SWEEP_ROUND_MAX.as_millis() as u64)
        .max(sweep_interval_ms)
}

/// Most accounts read by one stats script call, so that no call holds Redis for long.
const STATS_CHUNK: usize = 16;

/// Completions in one complete script call: a call takes the account runs that begin
/// before this many (see `account_chunks`), at most [`COMPLETE_CHUNK_MAX`], so that no
/// call holds Redis for long.
const COMPLETE_CHUNK: usize = 16;

/// Most completions in one complete script call: a run of one account longer than that
/// (which lease groups of at most 64 do not make) is cut.
const COMPLETE_CHUNK_MAX: usize = 128;

impl<T: Transport> ScriptQueue<T> {
    /// The queue over `transport`.
    pub fn with_transport(config: QueueSettings, transport: T) -> Self {
        Self::with_helpers(config, transport, HELPERS)
    }

    /// As [`ScriptQueue::with_transport`], with other helpers in front of every script:
    /// for tests that run the scripts with a variant of them (e.g. one that fails after
    /// some write).
    #[doc(hidden)]
    pub fn with_helpers(config: QueueSettings, transport: T, helpers: &str) -> Self {
        Self::with_helpers_shared(config, Arc::new(transport), helpers)
    }

    fn with_helpers_shared(config: QueueSettings, transport: Arc<T>, helpers: &str) -> Self {
        let config_partitions = config.partitions;
        let reads = ChangeReads::default();
        let claim = claim_script(helpers, &config, sweep_interval(config_partitions), reads);
        let complete = complete_script(helpers, &config);
        let enqueue = Script::with_settings(
            &limit_settings(&config),
            helpers,
            include_str!("enqueue.lua"),
        );
        let announcer = Arc::new(Announcer::new(format!("{}:wake", config.prefix)));
        ScriptQueue {
            transport,
            pending: std::sync::Mutex::new(Vec::new()),
            committing: tokio::sync::Mutex::new(()),
            config,
            enqueue,
            claim,
            complete,
            stats: Script::read_only(helpers, include_str!("stats.lua")),
            dead: Script::read_only(helpers, include_str!("dead.lua")),
            replay: Script::new(helpers, include_str!("replay.lua")),
            purge: Script::new(helpers, include_str!("purge.lua")),
            hold: Script::new(helpers, include_str!("hold.lua")),
            event: Script::read_only(helpers, include_str!("event.lua")),
            layout_checked: Arc::new(LayoutGate::default()),
            migration: Arc::new(LayoutScripts::new()),
            announcer,
            helpers: helpers.into(),
            dead_letters_dropped: AtomicU64::new(0),
            sweep_interval_ms: sweep_interval(config_partitions),
            snapshot: tokio::sync::Mutex::new(Snapshot::default()),
            reads,
        }
    }

    /// With another least time between two retention sweeps than [`SWEEP_INTERVAL`]: for
    /// tests that need every claim to sweep (at least 1 ms).
    #[doc(hidden)]
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval_ms = (interval.as_millis() as u64).max(1);
        self.rebuild_claim();
        self
    }

    /// With other settings of the reads of the change sets than
    /// [`ChangeReads::default`] (see snapshot.rs): for tests of bounded growth that cannot
    /// wait an hour (`kept_ms`), or of the change sets alone (`slack_ms` 0).
    #[doc(hidden)]
    pub fn with_change_reads(mut self, reads: ChangeReads) -> Self {
        self.reads = ChangeReads {
            kept_ms: reads.kept_ms.max(1),
            ..reads
        };
        self.rebuild_claim();
        self
    }

    /// Writes the claim script again for the current settings.
    fn rebuild_claim(&mut self) {
        self.claim = claim_script(
            &self.helpers,
            &self.config,
            self.sweep_interval_ms,
            self.reads,
        );
    }

    /// Another queue over the same transport (the same store), with another partition
    /// count and other helpers in front of the scripts: for tests of what processes with
    /// other settings or failing scripts do to one store.
    #[doc(hidden)]
    pub fn sibling(&self, partitions: u16, helpers: &str) -> Self {
        let config = QueueSettings {
            partitions,
            ..self.config.clone()
        };
        let mut sibling = Self::with_helpers_shared(config, self.transport.clone(), helpers);
        sibling.sweep_interval_ms = self.sweep_interval_ms;
        sibling.reads = self.reads;
        sibling.rebuild_claim();
        sibling
    }

    /// The scripts, each with its name (its file's, without `.lua`): what a starting
    /// process loads into the store (`check_deployment`), and for tools that read Redis's
    /// own records of them (`SLOWLOG`, `INFO commandstats`) by digest or count their cost
    /// (`examples/script_text.rs`).
    #[doc(hidden)]
    pub fn scripts(&self) -> [(&'static str, &Script); 9] {
        [
            ("enqueue", &self.enqueue),
            ("claim", &self.claim),
            ("complete", &self.complete),
            ("stats", &self.stats),
            ("dead", &self.dead),
            ("replay", &self.replay),
            ("purge", &self.purge),
            ("hold", &self.hold),
            ("event", &self.event),
        ]
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The key prefix of a partition, with its hash tag.
    pub fn base(&self, partition: u16) -> String {
        format!("{}:{{p{}}}", self.config.prefix, partition)
    }

    /// Redis's time (Unix ms), from the server that answers keyless commands.
    async fn redis_time(&self) -> Result<u64, QueueError> {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Whether partition `p` is to be read by `plan`: a partition with no change since its
    /// last read is left as it is, for one plain command rather than a script call.
    async fn to_read(&self, p: usize, plan: Plan) -> Result<bool, QueueError> {
        let Plan::Changed { from } = plan else {
            return Ok(true);
        };
        let first = redis::cmd("ZRANGEBYSCORE")
            .arg(format!("{}:changed", self.base(p as u16)))
            .arg(from)
            .arg("+inf")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .clone();
        Ok(!self.query::<Vec<Vec<u8>>>(&first).await?.is_empty())
    }

    /// Reads partition `p` by `plan`, chunk after chunk (see snapshot.rs).
    async fn read_partition(&self, p: usize, plan: Plan) -> Result<Read, QueueError> {
        let base = self.base(p as u16);
        let window = self.config.default_limit.window_ms.to_string();
        let mode = match plan {
            Plan::Whole => "all",
            Plan::Changed { .. } => "changed",
        };
        let mut read = Read::new(plan, self.reads);
        let mut from = read.first();
        loop {
            let args = vec![
                base.clone().into_bytes(),
                window.clone().into_bytes(),
                mode.as_bytes().to_vec(),
                from.at.into_bytes(),
                STATS_CHUNK.to_string().into_bytes(),
                from.after.into_bytes(),
                from.until.into_bytes(),
            ];
            read.push(parse_chunk(self.eval(&self.stats, &base, args).await?)?);
            match read.next() {
                None => return Ok(read),
                Some(next) => from = next,
            }
        }
    }

    /// The key prefix of the partition holding `account`.
    fn account_base(&self, account: &str) -> String {
        self.base(partition_of(account, self.config.partitions))
    }

    fn runtime_accounts_key(&self) -> String {
        format!("{}:runtime:accounts", self.config.prefix)
    }

    /// Runs one plain command.
    async fn query<V: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<V, QueueError> {
        self.check_layout().await?;
        decode(self.transport.command(cmd).await?)
    }

    /// Replays or purges dead letters in chunks: with `All`, at most the letters present
    /// at the start are visited.
    async fn dead_letter_op(
        &self,
        script: &Script,
        account: &str,
        selection: &DeadLetterSelection,
        param: u64,
    ) -> Result<DeadLetterResult, QueueError> {
        let base = self.account_base(account);
        let mut result = DeadLetterResult::default();
        let head = |mode: &str| -> Vec<Vec<u8>> {
            vec![
                base.clone().into_bytes(),
                account.as_bytes().to_vec(),
                param.to_string().into_bytes(),
                mode.as_bytes().to_vec(),
                DEAD_CHUNK.to_string().into_bytes(),
            ]
        };
        let run = |reply: Value, result: &mut DeadLetterResult| -> Result<u64, QueueError> {
            let mut items = array(reply)?.into_iter();
            let count = items.next().and_then(|v| int(&v)).unwrap_or(0).max(0) as u64;
            let left = items.next().and_then(|v| int(&v)).unwrap_or(0).max(0) as u64;
            result.count += count;
            result.not_found.extend(items.filter_map(|v| text(&v)));
            Ok(left)
        };
        match selection {
            DeadLetterSelection::Ids(ids) => {
                for chunk in ids.chunks(DEAD_CHUNK) {
                    let mut args = head("ids");
                    args.extend(chunk.iter().map(|id| id.clone().into_bytes()));
                    let reply = self.eval(script, &base, args).await?;
                    run(reply, &mut result)?;
                }
            }
            DeadLetterSelection::All => {
                let total: u64 = self
                    .query(redis::cmd("ZCARD").arg(format!("{base}:dead:{account}")))
                    .await?;
                let mut visited = 0u64;
                while visited < total {
                    let reply = self.eval(script, &base, head("all")).await?;
                    let before = result.count + result.not_found.len() as u64;
                    let left = run(reply, &mut result)?;
                    let step = result.count + result.not_found.len() as u64 - before;
                    visited += step;
                    if step == 0 || left == 0 {
                        break;
                    }
                }
                // With `All`, stale entries are cleaned up silently, not reported.
                result.not_found.clear();
            }
        }
        Ok(result)
    }

    /// Runs one script call.
    async fn eval(
        &self,
        script: &Script,
        base: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<Value, QueueError> {
        let calls = [(base.to_string(), args)];
        self.run_script(script, &calls)
            .await
            .pop()
            .unwrap_or_else(|| Err(QueueError::Protocol("a script answered nothing".into())))
    }

    /// Runs calls of a script, once the partition count is checked; one result per call.
    async fn run_script(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        if let Err(e) = self.check_layout().await {
            return calls.iter().map(|_| Err(e.clone())).collect();
        }
        self.transport.run_script(script, calls).await
    }

    /// Checks the layout and partition count recorded in the store, records them on first
    /// use and migrates an earlier layout (once per process; see [`super::layout`]).
    async fn check_layout(&self) -> Result<(), QueueError> {
        check_layout(
            &self.layout_checked,
            &self.transport,
            &self.config,
            &self.migration,
        )
        .await
    }
}

impl<T: Transport> ScriptQueue<T> {
    /// Records `ends` (see [`Queue::complete_each`]): one script call per partition (in
    /// chunks of about `COMPLETE_CHUNK`, whole account runs), all in one round trip; a
    /// call that fails fails only its own completions.
    async fn record_ends(&self, ends: &[Ending<'_>]) -> Vec<Result<Freed, QueueError>> {
        // Completions whose id names no event are not the queue's: nothing to record.
        let mut results: Vec<Result<Freed, QueueError>> =
            ends.iter().map(|_| Ok(Freed::Now)).collect();
        let mut by_partition: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, c) in ends.iter().enumerate() {
            let Some(event_id) = EventId::of_delivery(c.delivery_id) else {
                continue;
            };
            by_partition
                .entry(event_id.partition())
                .or_default()
                .push(i);
        }
        let mut calls: Vec<ScriptCall> = Vec::new();
        let mut owners: Vec<&[usize]> = Vec::new();
        for (partition, group) in &by_partition {
            let base = self.base(*partition);
            for chunk in account_chunks(group, ends) {
                let mut args = Vec::with_capacity(2 + 7 * chunk.len());
                args.push(base.clone().into_bytes());
                // (each argument costs Redis's Lua: a run of one account's ends
                // names its account once, and a success neither its kind nor the rest,
                // but what its claim saw, which spares reading the event, and the event's
                // key)
                let mut run: Option<&str> = None;
                // the end (exclusive) of a run sent as a group's successes, and the status
                // all of its calls share
                let (mut whole_end, mut shared) = (0, None);
                for (at, &i) in chunk.iter().enumerate() {
                    let c = &ends[i];
                    if run != Some(c.account) {
                        if run.is_some() {
                            args.push(Vec::new());
                        }
                        args.push(c.account.as_bytes().to_vec());
                        run = Some(c.account);
                        let run_len = chunk[at..]
                            .iter()
                            .take_while(|&&j| ends[j].account == c.account)
                            .count();
                        let whole = &chunk[at..at + run_len];
                        if whole_group_success(whole, ends) {
                            // what all of them share, once (see complete.lua): the
                            // upstream status too, when it is (most often)
                            shared = c.delivered_status().filter(|status| {
                                whole
                                    .iter()
                                    .all(|&j| ends[j].delivered_status() == Some(*status))
                            });
                            args.extend([
                                b"*".to_vec(),
                                c.seen.as_bytes().to_vec(),
                                c.lease_token.to_string().into_bytes(),
                                shared.map_or_else(Vec::new, |s| s.to_string().into_bytes()),
                            ]);
                            whole_end = at + run_len;
                        }
                    }
                    if at < whole_end {
                        args.extend([
                            c.delivery_id.as_bytes().to_vec(),
                            call_zero_key(&base, c.delivery_id).into_bytes(),
                        ]);
                        if shared.is_none() {
                            let status = c.delivered_status().unwrap_or_default();
                            args.push(status.to_string().into_bytes());
                        }
                        continue;
                    }
                    args.push(c.delivery_id.as_bytes().to_vec());
                    args.push(c.lease_token.to_string().into_bytes());
                    let (kind, code, error, delay, reason) = c.args();
                    if kind == "delivered" {
                        args.extend([
                            code.into_bytes(),
                            c.seen.as_bytes().to_vec(),
                            call_zero_key(&base, c.delivery_id).into_bytes(),
                        ]);
                    } else {
                        let error: String = error.chars().take(1000).collect();
                        args.extend([
                            kind.as_bytes().to_vec(),
                            code.into_bytes(),
                            error.into_bytes(),
                            delay.to_string().into_bytes(),
                            reason.as_bytes().to_vec(),
                        ]);
                    }
                }
                calls.push((base.clone(), args));
                owners.push(chunk);
            }
        }
        if calls.is_empty() {
            return results;
        }
        let replies = self.run_script(&self.complete, &calls).await;
        for (reply, chunk) in replies.into_iter().zip(owners) {
            match reply {
                Err(e) => {
                    for &i in chunk {
                        results[i] = Err(e.clone());
                    }
                }
                Ok(reply) => {
                    let later = parse_complete_reply(reply);
                    for &i in chunk {
                        if let Some(wait) = later.get(ends[i].account) {
                            results[i] = Ok(Freed::After(*wait));
                        }
                    }
                }
            }
        }
        results
    }

    /// One round of [`Queue::claim_each`]. A round after the first (`expiry_at`: the
    /// first's time for each request, which the events' times to live are checked
    /// against, as if one claim had leased them all) does not sweep the partitions'
    /// retention again (the first did, and a sweep's pace is its interval's).
    async fn claim_round(
        &self,
        requests: &[(u16, usize)],
        expiry_at: Option<&[u64]>,
    ) -> Vec<Result<Round, QueueError>> {
        // A request for more than CLAIM_CHUNK accounts becomes several script calls on
        // the partition, one after the other in the same round trip.
        let mut calls: Vec<ScriptCall> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, &(partition, max)) in requests.iter().enumerate() {
            let base = self.base(partition);
            let mut left = max;
            loop {
                let take = left.min(CLAIM_CHUNK);
                left -= take;
                let mut args = vec![base.clone().into_bytes(), take.to_string().into_bytes()];
                if expiry_at.is_some() {
                    args.push(b"1".to_vec());
                }
                calls.push((base.clone(), args));
                owner.push(i);
                if left == 0 {
                    break;
                }
            }
        }
        let replies = self.run_script(&self.claim, &calls).await;
        let mut dropped = 0;
        let mut leased: Vec<Result<Leased, QueueError>> =
            requests.iter().map(|_| Ok(Leased::default())).collect();
        for (reply, i) in replies.into_iter().zip(owner) {
            // A request's later chunks still count what they leased when an earlier one
            // failed: the deliveries are handed out, the error reported with them lost
            // would strand them until their leases end.
            let part = match reply.and_then(parse_claim_reply) {
                Ok(part) => {
                    dropped += part.dropped;
                    part
                }
                Err(e) => {
                    match &mut leased[i] {
                        Ok(batch) if batch.calls.is_empty() => leased[i] = Err(e),
                        // what the failed call would have found is not known
                        Ok(batch) => batch.next_due = None,
                        Err(_) => {}
                    }
                    continue;
                }
            };
            match &mut leased[i] {
                Ok(batch) => {
                    batch.calls.extend(part.calls);
                    // the later call saw the partition after the earlier ones
                    batch.next_due = part.next_due;
                    if batch.claimed_at == 0 {
                        batch.claimed_at = part.claimed_at;
                    }
                }
                // An earlier chunk failed: keep what this one leased, so it is sent.
                Err(_) => leased[i] = Ok(part),
            }
        }
        self.dead_letters_dropped
            .fetch_add(dropped, Ordering::Relaxed);
        self.read_leased(requests, leased, expiry_at).await
    }

    /// The events at `keys` (each with whether the call leased is its call 0, whose event
    /// may be in its first form), one result per key: a call 0's event read first by an
    /// `HGET` of its first form alone (most events: about 1,300 fewer Redis instructions
    /// than an `HGETALL`), and the others, and those without a first form, by `HGETALL`,
    /// those in a second round trip.
    async fn read_events(&self, keys: &[(String, bool)]) -> Vec<Result<EventFields, QueueError>> {
        let hgetall = |key: &str| {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(key);
            cmd
        };
        let first: Vec<redis::Cmd> = keys
            .iter()
            .map(|(key, zero)| {
                if *zero {
                    let mut cmd = redis::cmd("HGET");
                    cmd.arg(key).arg("q");
                    cmd
                } else {
                    hgetall(key)
                }
            })
            .collect();
        let mut events: Vec<Option<Result<EventFields, QueueError>>> =
            Vec::with_capacity(keys.len());
        let mut again: Vec<usize> = Vec::new();
        for (i, reply) in self
            .transport
            .read_each(&first)
            .await
            .into_iter()
            .enumerate()
        {
            let zero = keys.get(i).is_some_and(|(_, zero)| *zero);
            events.push(match reply {
                Ok(Value::BulkString(q)) if zero && !q.is_empty() => {
                    Some(Ok(EventFields::first_form(q)))
                }
                // (no first form: its fields, or nothing, are read whole)
                Ok(_) if zero => {
                    again.push(i);
                    None
                }
                reply => Some(reply.and_then(EventFields::of)),
            });
        }
        if !again.is_empty() {
            let whole: Vec<redis::Cmd> = again.iter().map(|&i| hgetall(&keys[i].0)).collect();
            for (&i, reply) in again.iter().zip(self.transport.read_each(&whole).await) {
                events[i] = Some(reply.and_then(EventFields::of));
            }
        }
        events
            .into_iter()
            .map(|event| {
                event.unwrap_or_else(|| Err(QueueError::Protocol("a read went unanswered".into())))
            })
            .collect()
    }

    /// The claims' leased calls read (see [`super::leased`]): every call's event (see
    /// `read_events`), the calls to send handed out, each group numbered again from 0 without
    /// the others, whose leases are ended here; with each batch, whether it had such
    /// calls (its partition is then due again at once: their accounts are free).
    async fn read_leased(
        &self,
        requests: &[(u16, usize)],
        leased: Vec<Result<Leased, QueueError>>,
        expiry_at: Option<&[u64]>,
    ) -> Vec<Result<Round, QueueError>> {
        let keys: Vec<(String, bool)> = requests
            .iter()
            .zip(&leased)
            .filter_map(|(&(partition, _), batch)| Some((partition, batch.as_ref().ok()?)))
            .flat_map(|(partition, batch)| {
                let base = self.base(partition);
                batch.calls.iter().map(move |call| {
                    let (event, k) = call
                        .delivery_id
                        .rsplit_once(':')
                        .unwrap_or((call.delivery_id.as_str(), ""));
                    (event_key(&base, event), k == "0")
                })
            })
            .collect();
        let mut reads = self.read_events(&keys).await.into_iter();
        let mut ends: Vec<(LeasedCall, Unsent)> = Vec::new();
        let mut batches = Vec::with_capacity(leased.len());
        for (r, batch) in leased.into_iter().enumerate() {
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    batches.push(Err(e));
                    continue;
                }
            };
            // (each of a request's chunks is a claim of its own, at its own time; a later
            // round's times to live are checked against the first round's)
            let first_at = expiry_at.map(|at| at[r]);
            let mut claimed_at_text = (0, String::new());
            let mut items = Vec::with_capacity(batch.calls.len());
            let ended_before = ends.len();
            let mut unread: Option<QueueError> = None;
            let mut place = 0;
            let calls = batch.calls;
            let mut c = 0;
            while c < calls.len() {
                let call = &calls[c];
                let read = reads
                    .next()
                    .unwrap_or_else(|| Err(QueueError::Protocol("a read went missing".into())));
                if call.place == 0 {
                    place = 0;
                }
                if claimed_at_text.0 != call.claimed_at {
                    claimed_at_text = (call.claimed_at, call.claimed_at.to_string());
                }
                let expiry_at = first_at.unwrap_or(call.claimed_at);
                let verdict = match read {
                    Ok(event) => {
                        judge(call, &event, call.claimed_at, &claimed_at_text.1, expiry_at)
                    }
                    // not sent: back to the front, its attempt not counted
                    Err(e) => {
                        unread = Some(e);
                        Verdict::End(Unsent::Unread)
                    }
                };
                c += 1;
                match verdict {
                    Verdict::Send(mut claimed) => {
                        claimed.group_index = place;
                        place += 1;
                        items.push(claimed);
                    }
                    Verdict::End(unsent) if unsent.goes_back() => {
                        // it and the rest of its group go back to the front, last first,
                        // so that the group keeps its order there
                        let rest = calls[c..]
                            .iter()
                            .take_while(|later| later.place > 0)
                            .count();
                        for later in calls[c..c + rest].iter().rev() {
                            ends.push((later.clone(), Unsent::Unread));
                        }
                        ends.push((call.clone(), unsent));
                        for _ in 0..rest {
                            reads.next();
                        }
                        c += rest;
                    }
                    Verdict::End(unsent) => ends.push((call.clone(), unsent)),
                }
            }
            // A partition whose events could not be read is not claimed again now: with
            // nothing to send, it is reported failed (the worker backs it off).
            let read_failed = unread.is_some();
            if let Some(e) = unread.filter(|_| items.is_empty()) {
                batches.push(Err(e));
                continue;
            }
            let ended = ends.len() > ended_before && !read_failed;
            let mut next_due = batch.next_due;
            if ended {
                // (their accounts are free again)
                next_due = Some(Duration::ZERO);
            }
            let groups = items.iter().filter(|c| c.group_index == 0).count();
            batches.push(Ok(Round {
                batch: ClaimBatch { items, next_due },
                ended,
                expiry_at: first_at.unwrap_or(batch.claimed_at),
                groups,
            }));
        }
        if !ends.is_empty() {
            let records: Vec<Ending<'_>> = ends
                .iter()
                .map(|(call, unsent)| Ending {
                    delivery_id: &call.delivery_id,
                    account: &call.account,
                    lease_token: call.lease_token,
                    seen: "",
                    how: How::Unsent(*unsent),
                })
                .collect();
            for result in self.record_ends(&records).await {
                if let Err(e) = result {
                    // their leases run out, and the reaper puts them back
                    tracing::warn!(error = %e, "could not end the leases of calls not sent; they wait for their leases to end");
                    break;
                }
            }
        }
        batches
    }

    async fn commit_enqueues(&self, group: Vec<PendingEnqueue>) {
        let calls = group_calls(
            group.iter().map(|p| &p.batch),
            self.transport.scripts_span_partitions(),
        );
        let requests: Vec<ScriptCall> = calls
            .iter()
            .map(|call| call_args(call, &group, |p| self.base(p)))
            .collect();
        // The commit runs in its own task: if the request that leads it goes away (its
        // client disconnected), the others still get the true outcome, never a false
        // "nothing stored" for events Redis did store.
        let transport = self.transport.clone();
        let script = self.enqueue.clone();
        let checked = self.layout_checked.clone();
        let (settings, migration) = (self.config.clone(), self.migration.clone());
        let announcer = self.announcer.clone();
        let commit = tokio::spawn(async move {
            let replies = match check_layout(&checked, &transport, &settings, &migration).await {
                Ok(()) => transport.run_script_replicated(&script, &requests).await,
                Err(e) => requests.iter().map(|_| Err(e.clone())).collect(),
            };
            for partition in answer_group(group, &calls, replies) {
                announcer.announce(&transport, Some(partition));
            }
        });
        // The task answers every request itself; a panic in it drops their senders, which
        // they see as an error.
        let _ = commit.await;
    }
}

/// Whether this process checked the store's layout ([`layout::check_layout`]), and its
/// latest failure.
#[derive(Default)]
struct LayoutGate {
    /// Set once the check passed.
    passed: OnceCell<()>,
    /// The latest failed check: requests within [`LAYOUT_RETRY`] of it get its error
    /// without checking again (a check may read every partition; while a migration waits,
    /// every request would run one).
    failed: std::sync::Mutex<Option<(std::time::Instant, QueueError)>>,
}

/// Least time between two checks of the layout after one failed.
const LAYOUT_RETRY: Duration = Duration::from_millis(250);

/// Runs [`layout::check_layout`] until it passes once. Each check runs in a task of its
/// own: a migration is never cut short because the request that started it went away.
async fn check_layout<T: Transport>(
    gate: &LayoutGate,
    transport: &Arc<T>,
    settings: &QueueSettings,
    migration: &Arc<LayoutScripts>,
) -> Result<(), QueueError> {
    gate.passed
        .get_or_try_init(|| async {
            // A mismatch stays: this process must not use the store (it exits when the
            // check fails at startup; one found later keeps answering 503).
            let recent = |f: &Option<(std::time::Instant, QueueError)>| {
                f.as_ref()
                    .filter(|(at, e)| {
                        at.elapsed() < LAYOUT_RETRY || matches!(e, QueueError::Mismatch(_))
                    })
                    .map(|(_, e)| e.clone())
            };
            if let Some(e) = gate.failed.lock().ok().and_then(|f| recent(&f)) {
                return Err(e);
            }
            let (transport, settings, migration) =
                (transport.clone(), settings.clone(), migration.clone());
            let check = tokio::spawn(async move {
                let scope = layout::Scope {
                    transport: transport.as_ref(),
                    prefix: &settings.prefix,
                    partitions: settings.partitions,
                };
                layout::check_layout(&scope, &migration).await.map(|_| ())
            });
            let result = check.await.unwrap_or_else(|e| {
                Err(QueueError::Protocol(format!(
                    "the layout check stopped: {e}"
                )))
            });
            if let (Err(e), Ok(mut failed)) = (&result, gate.failed.lock()) {
                *failed = Some((std::time::Instant::now(), e.clone()));
            }
            result
        })
        .await
        .map(|_| ())
}

/// The key of event `event` (its id) in the partition of base `base`.
fn event_key(base: &str, event: &str) -> String {
    format!("{base}:ev:{event}")
}

/// The key of delivery `delivery_id`'s event when it is its call 0 (every call of an event
/// of one), else empty: a completion sends it, which spares the script cutting the id and
/// joining the key.
fn call_zero_key(base: &str, delivery_id: &str) -> String {
    delivery_id
        .strip_suffix(":0")
        .map(|event| event_key(base, event))
        .unwrap_or_default()
}

/// A reply as `V`; one that is not a `V` is the store answering what the gateway does not
/// understand.
fn decode<V: redis::FromRedisValue>(reply: Value) -> Result<V, QueueError> {
    V::from_owned_redis_value(reply).map_err(|e| QueueError::Protocol(e.to_string()))
}

/// One claim round's answer to one request (see [`Queue::claim_each`]).
struct Round {
    /// What it leased, to send.
    batch: ClaimBatch,
    /// Whether the gateway ended calls it leased unsent.
    ended: bool,
    /// The time the events' times to live were checked against.
    expiry_at: u64,
    /// The lease groups it hands out (with a call to send).
    groups: usize,
}

/// The requests of `rounds` where the gateway ended calls it did not send.
fn again_of(rounds: &[Result<Round, QueueError>]) -> Vec<usize> {
    rounds
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().is_ok_and(|r| r.ended))
        .map(|(i, _)| i)
        .collect()
}

/// A completion as the complete script takes it: a worker's, or the gateway's own of a
/// call it leased and did not send (see [`super::leased`]).
struct Ending<'a> {
    delivery_id: &'a str,
    account: &'a str,
    lease_token: u64,
    /// What the claim saw (see [`super::Claimed::seen`]).
    seen: &'a str,
    how: How<'a>,
}

/// How a delivery ended.
enum How<'a> {
    /// As the worker reported.
    Worker(&'a Outcome),
    /// Not sent.
    Unsent(Unsent),
}

impl<'a> Ending<'a> {
    fn of(c: &'a Completion) -> Self {
        Ending {
            delivery_id: &c.delivery_id,
            account: &c.account,
            lease_token: c.lease_token,
            seen: &c.seen,
            how: How::Worker(&c.outcome),
        }
    }

    /// The upstream status of a success the worker reported (none for any other end).
    fn delivered_status(&self) -> Option<u16> {
        match self.how {
            How::Worker(Outcome::Delivered { status }) => Some(*status),
            _ => None,
        }
    }

    /// The script's arguments for it: kind, upstream status, error, delay (ms), reason.
    fn args(&self) -> (&'static str, String, String, u64, &'a str) {
        match self.how {
            How::Worker(outcome) => {
                let (kind, code, error, delay, reason) = outcome_args(outcome);
                (kind, code, error, delay, reason)
            }
            How::Unsent(unsent) => {
                let (kind, delay) = unsent.kind();
                (kind, String::new(), String::new(), delay, "")
            }
        }
    }
}

/// Whether a run of one account's ends may be sent as one lease group's successes (see
/// complete.lua): two or more successes of call 0 of their events, each the first attempt
/// of a call without an agent under the same claim (what the claim saw: its time and `-`),
/// their tokens one apart, as a group's leases end one millisecond apart in its order.
/// The run is `run`'s indices into `ends`.
fn whole_group_success(run: &[usize], ends: &[Ending<'_>]) -> bool {
    let Some(first) = run.first().map(|&i| &ends[i]) else {
        return false;
    };
    let seen = first.seen.as_bytes();
    run.len() >= 2
        && seen.len() == 14
        && seen[13] == b'-'
        && seen[..13].iter().all(u8::is_ascii_digit)
        && run.iter().map(|&i| &ends[i]).enumerate().all(|(k, c)| {
            c.delivered_status().is_some()
                && c.delivery_id.ends_with(":0")
                && c.seen == first.seen
                && first.lease_token.checked_sub(k as u64) == Some(c.lease_token)
        })
}

/// `indices` (of `ends`) cut into chunks of at least [`COMPLETE_CHUNK`] (but the
/// last), each ending where its account's run does: the completions a lease group's
/// sender hands over together are recorded by one call, so they all fail or succeed
/// together and their put-backs keep their order. A chunk never exceeds
/// [`COMPLETE_CHUNK_MAX`] (a longer run, which groups of at most 64 do not make, is cut).
fn account_chunks<'i>(indices: &'i [usize], ends: &[Ending<'_>]) -> Vec<&'i [usize]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in 1..=indices.len() {
        let run_ends =
            end == indices.len() || ends[indices[end]].account != ends[indices[end - 1]].account;
        let full = end - start >= COMPLETE_CHUNK_MAX;
        if full || (run_ends && (end - start >= COMPLETE_CHUNK || end == indices.len())) {
            chunks.push(&indices[start..end]);
            start = end;
        }
    }
    chunks
}

/// The claim script, with this queue's settings written into its text: a constant costs
/// a script call nothing, where an argument costs Redis a string and its conversion to a
/// number about as much again, at every call. Processes with other settings run other
/// scripts (other digests), each of them whole.
fn claim_script(
    helpers: &str,
    config: &QueueSettings,
    sweep_interval_ms: u64,
    reads: ChangeReads,
) -> Script {
    let lease = config.lease.as_millis() as u64;
    let settings = format!(
        "-- this process's settings (see claim_script in script_queue.rs)\n\
         {limits}\
         local lease = {lease}\n\
         local reap_max, retention, sweep_interval = '{REAP_PER_CALL}', '{}', '{sweep_interval_ms}'\n\
         local reap_max_count = {REAP_PER_CALL}\n\
         local sweep_round, sweep_floor = {round}, {sweep_interval_ms}\n\
         local dl_retention, acct_retention = {}, {}\n\
         local changes_kept = {kept}\n\
         local group_max, group_more, group_allowance = {group}, '{more}', {allowance}\n\
         local claim_deliveries = {CLAIM_DELIVERIES}\n",
        config.retention.events_ms,
        config.retention.dead_letters_ms,
        config.retention.accounts_ms,
        limits = limit_settings(config),
        round = sweep_round(config, sweep_interval_ms),
        kept = reads.kept_ms,
        group = config.group_max.max(1),
        more = config.group_max.max(1) - 1,
        allowance = lease / LEASE_GROUP_GROWTH,
    );
    Script::with_settings(&settings, helpers, include_str!("claim.lua"))
}

/// The default rate limit and the margin, as the claim, complete and enqueue scripts' text
/// declares them: `default_limit`, `default_window`, `margin` (ms) as numbers, the limit
/// and window as text (`default_limit_text`, `default_window_text`: most accounts' own are
/// the defaults, whose text is compared rather than converted), and `default_cut`, where
/// the default limit's oldest entry starts in a rate log ((default_limit - 1) * 13).
fn limit_settings(config: &QueueSettings) -> String {
    format!(
        "local default_limit, default_window, margin = {limit}, {window}, {margin}\n\
         local default_limit_text, default_window_text = '{limit}', '{window}'\n\
         local default_cut = {cut}\n",
        limit = config.default_limit.limit,
        window = config.default_limit.window_ms,
        margin = config.margin_ms,
        cut = (i64::from(config.default_limit.limit) - 1) * RATE_LOG_STAMP,
    )
}

/// The complete script, with the retention of finished events and the default rate limit
/// written into its text (as in [`claim_script`]).
fn complete_script(helpers: &str, config: &QueueSettings) -> Script {
    let settings = format!(
        "-- this process's settings (see complete_script in script_queue.rs)\n\
         local retention = '{}'\n{}",
        config.retention.events_ms,
        limit_settings(config),
    );
    Script::with_settings(&settings, helpers, include_str!("complete.lua"))
}

#[async_trait]
impl<T: Transport> Queue for ScriptQueue<T> {
    fn partitions(&self) -> u16 {
        self.config.partitions
    }

    fn take_dead_letters_dropped(&self) -> u64 {
        self.dead_letters_dropped.swap(0, Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        self.transport
            .describe(&self.config.prefix, self.config.partitions)
    }

    async fn check_deployment(&self) -> Result<(), QueueError> {
        self.transport.check_deployment().await?;
        self.check_layout().await?;
        // (a script that could not be loaded is sent with its source at its first call)
        let scripts: Vec<&Script> = self.scripts().iter().map(|(_, script)| *script).collect();
        if let Err(e) = self.transport.load_scripts(&scripts).await {
            tracing::warn!(error = %e, "the queue's scripts could not be loaded ahead of their first calls");
        }
        Ok(())
    }

    async fn recorded_partitions(&self) -> Result<Option<u16>, QueueError> {
        let scope = layout::Scope {
            transport: self.transport.as_ref(),
            prefix: &self.config.prefix,
            partitions: self.config.partitions,
        };
        layout::recorded_partitions(&scope).await
    }

    /// Group commit: the request joins the pending list; whoever holds the commit lock
    /// takes every pending request and stores them in one round trip, with one script
    /// call for all their accounts (one per partition on a Redis Cluster; see
    /// enqueue_calls.rs), each call a command of its own. Under load, requests that
    /// arrive while a commit is under way go together in the next one; alone, a request is
    /// committed at once.
    async fn enqueue(&self, batch: EnqueueBatch) -> Result<Vec<EnqueueOutcome>, QueueError> {
        if batch.events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PendingEnqueue { batch, reply });
        loop {
            tokio::select! {
                biased;
                // Answered by whoever committed the group this request was in.
                result = &mut answer => {
                    return result.unwrap_or_else(|_| {
                        Err(QueueError::Protocol("enqueue was dropped".into()))
                    });
                }
                _committing = self.committing.lock() => {
                    let group = std::mem::take(
                        &mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    if !group.is_empty() {
                        self.commit_enqueues(group).await;
                    }
                }
            }
        }
    }

    async fn claim(&self, partition: u16, max: usize) -> Result<ClaimBatch, QueueError> {
        self.claim_each(&[(partition, max)])
            .await
            .pop()
            .unwrap_or_else(|| Ok(ClaimBatch::default()))
    }

    /// All partitions' claims in one round trip, each partition's calls failing alone; a
    /// partition where the gateway ended calls it leased and did not send (stale entries,
    /// expired events: see [`super::leased`]) is claimed again at once, up to
    /// [`CLAIM_ROUNDS`] times, so that those do not hold back the calls behind them.
    async fn claim_each(&self, requests: &[(u16, usize)]) -> Vec<Result<ClaimBatch, QueueError>> {
        let mut rounds = self.claim_round(requests, None).await;
        let mut again: Vec<usize> = again_of(&rounds);
        for _ in 1..CLAIM_ROUNDS {
            if again.is_empty() {
                break;
            }
            // (a round claims no more accounts than the request's rounds left unclaimed)
            again.retain(|&i| rounds[i].as_ref().is_ok_and(|r| r.groups < requests[i].1));
            if again.is_empty() {
                break;
            }
            let round: Vec<(u16, usize)> = again
                .iter()
                .map(|&i| {
                    let taken = rounds[i].as_ref().map_or(0, |r| r.groups);
                    (requests[i].0, requests[i].1 - taken)
                })
                .collect();
            let times: Vec<u64> = again
                .iter()
                .map(|&i| rounds[i].as_ref().map_or(0, |r| r.expiry_at))
                .collect();
            let replies = self.claim_round(&round, Some(&times)).await;
            let next = again_of(&replies);
            for (&i, reply) in again.iter().zip(replies) {
                match (&mut rounds[i], reply) {
                    (Ok(first), Ok(more)) => {
                        first.batch.items.extend(more.batch.items);
                        first.batch.next_due = more.batch.next_due;
                        first.groups += more.groups;
                    }
                    // what this round could not claim waits for the next pass
                    (Ok(first), Err(_)) => first.batch.next_due = Some(Duration::ZERO),
                    (Err(_), _) => {}
                }
            }
            again = next.into_iter().map(|j| again[j]).collect();
        }
        rounds
            .into_iter()
            .map(|round| round.map(|round| round.batch))
            .collect()
    }

    async fn complete(&self, completions: &[Completion]) -> Result<(), QueueError> {
        self.complete_each(completions)
            .await
            .into_iter()
            .try_for_each(|r| r.map(|_| ()))
    }

    /// One script call per partition (in chunks of about `COMPLETE_CHUNK`, whole account
    /// runs), all in one round trip; a call that fails fails only its own completions.
    async fn complete_each(&self, completions: &[Completion]) -> Vec<Result<Freed, QueueError>> {
        let ends: Vec<Ending<'_>> = completions.iter().map(Ending::of).collect();
        self.record_ends(&ends).await
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, QueueError> {
        if id.partition() >= self.config.partitions {
            return Ok(None);
        }
        let base = self.base(id.partition());
        // (its hash's fields, or its summary's: see `event_fields` in scripts.lua)
        let key = event_key(&base, id.as_str());
        let fields: HashMap<String, String> = decode(
            self.eval(&self.event, &base, vec![key.into_bytes()])
                .await?,
        )?;
        let Some(account) = fields.get("acct").cloned() else {
            return Ok(None);
        };
        let get = |name: String| fields.get(&name).filter(|v| !v.is_empty()).cloned();
        // (a missing `n` is one call, and a missing status a queued call)
        let n: usize = get("n".into()).map_or(1, |v| v.parse().unwrap_or(0));
        let stored: Vec<CallStatus> = (0..n)
            .map(|k| match get(format!("s{k}")) {
                None => Ok(CallStatus::Queued),
                Some(s) => call_status(&s),
            })
            .collect::<Result<_, QueueError>>()?;
        // A queued call is being delivered while its lease is in the in-flight set (the
        // claim writes nothing into the event); its attempt in flight is not counted yet.
        let queued: Vec<usize> = (0..n)
            .filter(|&k| stored[k] == CallStatus::Queued)
            .collect();
        let mut in_flight = vec![false; n];
        if !queued.is_empty() {
            let mut cmd = redis::cmd("ZMSCORE");
            cmd.arg(format!("{base}:inflight"));
            for k in &queued {
                cmd.arg(format!("{id}:{k}"));
            }
            let leases: Vec<Option<String>> = self.query(&cmd).await?;
            for (k, lease) in queued.iter().zip(leases) {
                in_flight[*k] = lease.is_some();
            }
        }
        let deliveries: Vec<DeliveryStatus> = (0..n)
            .map(|k| {
                let attempts: u32 = get(format!("at{k}"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                DeliveryStatus {
                    agent_id: get(format!("ag{k}")).and_then(|v| v.parse().ok()),
                    status: if in_flight[k] {
                        CallStatus::Delivering
                    } else {
                        stored[k]
                    },
                    attempts: attempts + u32::from(in_flight[k]),
                    last_status: get(format!("ls{k}")).and_then(|v| v.parse().ok()),
                    last_error: get(format!("le{k}")),
                    delivered_at: get(format!("dt{k}"))
                        .and_then(|v| v.parse().ok())
                        .map(rfc3339_ms),
                }
            })
            .collect();
        Ok(Some(EventRecord {
            id: id.to_string(),
            account,
            status: EventRecord::overall_status(&deliveries),
            // (the time its id carries: the gateway's clock when it accepted the event)
            created_at: rfc3339_ms(id.created_ms()),
            deliveries,
        }))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.check_layout().await?;
        self.transport.ping().await
    }

    /// The stats as this process keeps them (see snapshot.rs), after reading each
    /// partition's changes since its last read, or the partition whole, in chunks of
    /// `STATS_CHUNK` accounts, one script call each.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut snapshot = self.snapshot.lock().await;
        // The time comes from one node (on a Cluster, one master). When it cannot answer,
        // the partitions elsewhere are still read: at the time last read plus the time
        // passed here, or, before any, at the time the reads themselves tell (a process
        // that never read anything reads every partition whole, whatever the time).
        let time = self.redis_time().await;
        if let Ok(now) = time {
            snapshot.clock_read(now);
        }
        let clock = time
            .as_ref()
            .ok()
            .copied()
            .or_else(|| snapshot.clock_estimate());
        let partitions = usize::from(self.config.partitions);
        let plans: Vec<Plan> = (0..partitions)
            .map(|p| snapshot.plan(p, partitions, self.reads, clock.unwrap_or(0)))
            .collect();
        // The checks go out together: a refresh waits for one round trip, not one per
        // partition.
        let checks = plans
            .iter()
            .enumerate()
            .map(|(p, &plan)| self.to_read(p, plan));
        let checks = futures::future::join_all(checks).await;
        // A partition that cannot be read now (its shard is down, say) keeps what was
        // last read of it, and is named in the answer: the others' figures are still
        // of use. A failed read changes nothing kept: the next one asks again.
        let mut unread = Vec::new();
        let mut failure = None;
        let mut read_at = None;
        for (p, (plan, check)) in plans.into_iter().zip(checks).enumerate() {
            let read = match check {
                Ok(false) => continue,
                Ok(true) => self.read_partition(p, plan).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(read) => {
                    read_at = read_at.max(read.started_ms());
                    snapshot.apply(p, read);
                }
                Err(e) => {
                    unread.push(p as u16);
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            if unread.len() == partitions {
                return Err(e);
            }
            tracing::warn!(partitions = ?unread, error = %e, "cannot read the stats of some queue partitions; showing what was last read of them");
        }
        let now = match time {
            Ok(now) => now,
            // the time a read began is Redis's, where an estimate drifts
            Err(e) => match read_at.or(clock) {
                Some(now) => {
                    snapshot.clock_read(now);
                    now
                }
                None => return Err(e),
            },
        };
        Ok(snapshot.stats(now, unread))
    }

    async fn dead_letters(
        &self,
        account: &str,
        offset: u64,
        limit: u64,
    ) -> Result<DeadLetterPage, QueueError> {
        let base = self.account_base(account);
        // Lua numbers are doubles: keep both far below 2^53.
        let offset = offset.min(1 << 40);
        let limit = limit.min(1 << 20);
        let args = [
            base.clone(),
            account.to_string(),
            offset.to_string(),
            limit.to_string(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        let mut reply = array(self.eval(&self.dead, &base, args).await?)?.into_iter();
        let total = reply.next().and_then(|v| int(&v)).unwrap_or(0).max(0) as u64;
        let mut items = Vec::new();
        for item in reply {
            let f = array(item)?;
            if f.len() < 9 {
                return Err(QueueError::Protocol("short dead-letter entry".into()));
            }
            let did = text(&f[0]).unwrap_or_default();
            let agent = text(&f[8]).and_then(|s| s.parse::<u64>().ok());
            let stored = String::from_utf8_lossy(&bytes(&f[7])).into_owned();
            let event = if stored.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&NotifyPayload::from_stored(stored).upstream_bytes(agent))
                    .unwrap_or(serde_json::Value::Null)
            };
            let dead_at = int(&f[1]).unwrap_or(0).max(0) as u64;
            // (the time the id carries: the gateway's clock when it accepted the event)
            let created = EventId::of_delivery(&did).map_or(0, |id| id.created_ms());
            items.push(DeadLetter {
                event_id: did.split(':').next().unwrap_or_default().to_string(),
                delivery_id: did,
                status: call_status(&text(&f[2]).unwrap_or_default())?,
                reason: {
                    let reason = text(&f[3]).unwrap_or_default();
                    DeadReason::parse(&reason).ok_or_else(|| {
                        QueueError::Protocol(format!("unknown dead-letter reason {reason:?}"))
                    })?
                },
                attempts: int(&f[4]).unwrap_or(0).max(0) as u32,
                last_status: text(&f[5]).and_then(|s| s.parse().ok()),
                last_error: text(&f[6]).filter(|s| !s.is_empty()),
                created_at: rfc3339_ms(created),
                dead_at: rfc3339_ms(dead_at),
                event,
            });
        }
        Ok(DeadLetterPage { total, items })
    }

    async fn replay(
        &self,
        account: &str,
        selection: &DeadLetterSelection,
        ttl: Duration,
    ) -> Result<DeadLetterResult, QueueError> {
        let result = self
            .dead_letter_op(&self.replay, account, selection, ttl.as_millis() as u64)
            .await?;
        if result.count > 0 {
            self.announcer.announce(&self.transport, None);
        }
        Ok(result)
    }

    async fn purge_dead(
        &self,
        account: &str,
        selection: &DeadLetterSelection,
    ) -> Result<DeadLetterResult, QueueError> {
        self.dead_letter_op(
            &self.purge,
            account,
            selection,
            self.config.retention.events_ms,
        )
        .await
    }

    async fn pause(&self, account: &str) -> Result<(), QueueError> {
        let base = self.account_base(account);
        let args = vec![base.clone().into_bytes(), account.into(), b"pause".to_vec()];
        self.eval(&self.hold, &base, args).await.map(|_| ())
    }

    async fn resume(&self, account: &str) -> Result<(), QueueError> {
        let base = self.account_base(account);
        let args = vec![
            base.clone().into_bytes(),
            account.into(),
            b"resume".to_vec(),
        ];
        self.eval(&self.hold, &base, args).await?;
        // Its queued events may be claimed again, by any process.
        self.announcer.announce(&self.transport, None);
        Ok(())
    }

    async fn put_account(&self, id: &str, record: &str) -> Result<bool, QueueError> {
        let added: i64 = self
            .query(
                redis::cmd("HSET")
                    .arg(self.runtime_accounts_key())
                    .arg(id)
                    .arg(record),
            )
            .await?;
        Ok(added == 1)
    }

    async fn get_account(&self, id: &str) -> Result<Option<String>, QueueError> {
        self.query(redis::cmd("HGET").arg(self.runtime_accounts_key()).arg(id))
            .await
    }

    async fn delete_account(&self, id: &str) -> Result<bool, QueueError> {
        let removed: i64 = self
            .query(redis::cmd("HDEL").arg(self.runtime_accounts_key()).arg(id))
            .await?;
        Ok(removed == 1)
    }

    async fn list_accounts(&self) -> Result<Vec<(String, String)>, QueueError> {
        let all: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.runtime_accounts_key()))
            .await?;
        let mut all: Vec<_> = all.into_iter().collect();
        all.sort();
        Ok(all)
    }

    async fn announce_work(&self) {
        if let Err(e) = self.transport.publish(&self.announcer.channel, "").await {
            tracing::debug!(error = %e, "work not announced");
        }
    }

    async fn listen_for_work(
        &self,
        subscribed: &(dyn Fn() + Send + Sync),
        message: &(dyn for<'p> Fn(Option<&'p [u16]>) + Send + Sync),
    ) -> Option<QueueError> {
        let announced = |payload: &[u8]| message(announced_partitions(payload).as_deref());
        self.transport
            .listen(&self.announcer.channel, subscribed, &announced)
            .await
    }

    async fn heartbeat(&self, process: &ProcessRecord) -> Result<(), QueueError> {
        let record = serde_json::to_string(process)
            .map_err(|e| QueueError::Protocol(format!("process record: {e}")))?;
        self.registry("beat", &process.id, &record)
            .await
            .map(|_| ())
    }

    async fn leave(&self, id: &str) -> Result<(), QueueError> {
        self.registry("leave", id, "").await.map(|_| ())
    }

    async fn processes(&self) -> Result<Vec<ProcessRecord>, QueueError> {
        let reply = self.registry("list", "", "").await?;
        let mut all = layout::parse_processes(reply)?;
        all.sort_by(|a, b| (&a.started_at, &a.id).cmp(&(&b.started_at, &b.id)));
        Ok(all)
    }
}

impl<T: Transport> ScriptQueue<T> {
    /// One call of the process registry (`processes.lua`, in partition 0's slot).
    /// Before the layout check: the registry's format is the same in every layout, and
    /// a process waiting to migrate records itself and lists the others too.
    async fn registry(&self, op: &str, id: &str, record: &str) -> Result<Value, QueueError> {
        let base = self.base(0);
        let args = vec![
            base.clone().into_bytes(),
            op.as_bytes().to_vec(),
            (PROCESS_STALE.as_millis() as u64).to_string().into_bytes(),
            id.as_bytes().to_vec(),
            record.as_bytes().to_vec(),
        ];
        self.transport
            .run_script(&self.migration.processes, &[(base, args)])
            .await
            .pop()
            .unwrap_or_else(|| Err(QueueError::Protocol("a script answered nothing".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_chunks_end_where_an_account_s_run_does() {
        let released = crate::queue::Outcome::Released;
        let of = |account: &'static str| Ending {
            delivery_id: "e:0",
            account,
            lease_token: 1,
            seen: "",
            how: How::Worker(&released),
        };
        // 15 of `a`, then a lease group of 8 of `b`, then 20 of `c`, then one of `d`
        let accounts: Vec<&str> = std::iter::repeat("a")
            .take(15)
            .chain(std::iter::repeat("b").take(8))
            .chain(std::iter::repeat("c").take(20))
            .chain(["d"])
            .collect();
        let completions: Vec<Ending<'_>> = accounts.iter().map(|a| of(a)).collect();
        let indices: Vec<usize> = (0..completions.len()).collect();
        let sizes: Vec<usize> = account_chunks(&indices, &completions)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [23, 20, 1], "b's run is not cut");
        // one account's run past the most a call takes is cut
        let long: Vec<Ending<'_>> = (0..300).map(|_| of("a")).collect();
        let indices: Vec<usize> = (0..long.len()).collect();
        let sizes: Vec<usize> = account_chunks(&indices, &long)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [128, 128, 44]);
    }

    #[test]
    fn a_run_goes_whole_only_as_a_groups_first_successes() {
        let ok = crate::queue::Outcome::Delivered { status: 200 };
        let released = crate::queue::Outcome::Released;
        let ids = ["a:0", "b:0", "c:0"];
        let group = |seen: &'static str| -> Vec<Ending<'_>> {
            (0..3)
                .map(|k| Ending {
                    delivery_id: ids[k],
                    account: "acme",
                    lease_token: 1_764_000_030_000 - k as u64,
                    seen,
                    how: How::Worker(&ok),
                })
                .collect()
        };
        let whole = |run: &[Ending<'_>]| {
            let indices: Vec<usize> = (0..run.len()).collect();
            whole_group_success(&indices, run)
        };
        let first = "1764000000000-";
        assert!(whole(&group(first)));
        assert!(whole(&group(first)[..2]));
        assert!(!whole(&group(first)[..1]), "one call alone");
        assert!(!whole(&[]));
        // what the claim saw of a later attempt, or of a call with an agent
        assert!(!whole(&group("17640000000001")));
        assert!(!whole(&group("1764000000000- 7")));
        assert!(!whole(&group("")));
        let mut run = group(first);
        run[1].how = How::Worker(&released);
        assert!(!whole(&run), "an outcome other than a success");
        let mut run = group(first);
        run[2].delivery_id = "c:1";
        assert!(!whole(&run), "a call other than 0");
        let mut run = group(first);
        run.swap(1, 2);
        assert!(!whole(&run), "tokens out of the group's order");
        let mut run = group(first);
        run[2].seen = "1764000000001-";
        assert!(!whole(&run), "another claim's call");
    }
}

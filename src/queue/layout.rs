//! The version of the queue's key layout, and the migration of an earlier release's.
//!
//! `{prefix}:meta` records, on first use, the layout version (`layout`) and the partition
//! count (`partitions`) the data under the prefix is written in. Before a process runs its
//! first script or command it checks them ([`check_layout`]):
//!
//! - a newer layout than [`LAYOUT_VERSION`] (written by a later release): it refuses to
//!   start, so an older release never misreads, or damages, what it does not know;
//! - another partition count: it refuses to start (accounts are spread by the count);
//! - layout 2 to 9: it is migrated once, online, before the process uses it;
//! - no layout recorded: either the store is new (the version is recorded), or it holds the
//!   data of the release before versions were recorded, layout 1, which is migrated once,
//!   online, before the process uses it.
//!
//! # Migrating
//!
//! Layout 1 lacks two indexes layout 2 reads (each account's pending retries, the set of
//! held accounts), keeps three counters layout 2 derives instead, and remembered webhook
//! replay ids under keys a client's `Idempotency-Key` could reach (`migrate_v1.lua`).
//! Layout 2 keeps each account's rate log as a list of its own, where layout 3 keeps it in
//! the account's record (`migrate_v2.lua`). Layout 4 adds each partition's change set
//! (`{base}:changed`, the accounts whose stats changed, which every writer keeps): nothing
//! is moved, as each process reads the stats whole once, but the migration waits, as any
//! does, until no process of layout 3, which does not record its changes, runs. Layout
//! 5 sends an account's calls in lease groups, its record naming the group's claim time
//! (`rl_at`) where layout 4 named the one call in flight (`rl_did`; `migrate_v4.lua`);
//! a process of layout 4 would never free an account whose group holds more than one.
//! Layout 6 writes nothing into an event at a claim: a call in flight is one whose lease
//! is in the in-flight set, its lease's end is its token, and its attempt is counted when
//! it ends, where layout 5 wrote the status `delivering`, the attempt and a claim counter
//! (`migrate_v5.lua` turns layout 5's calls in flight into queued ones). Layout 7 stores
//! a new event as its body and its account alone: no time of creation (its id, a UUIDv7,
//! carries the gateway's clock when it accepted the event), no call count for one call
//! and no status for a queued call, which layout 6 would take for a stale entry. Each
//! account's record keeps a bound on its depth (`d`) that every enqueue raises and a
//! replay removes, which an enqueue of layout 6 would not. Nothing is moved (layout 6's
//! events read as they are, and an account without the bound has its depth counted at its
//! next enqueue), but the migration waits, as any does, until no process of layout 6
//! runs. Layout 8 keeps a delivered event of one call as its summary, a string that
//! replaces its hash (one command writes it and its expiry), which a process of layout 7
//! would fail to read as a hash: nothing is moved (layout 7's events read as they are),
//! but the migration waits until no process of layout 7 runs. Layout 9 stores a new
//! event of one call in its first form, its time to live, agent and body in one field
//! (`q`), written out as those fields at its first write, which a process of layout 8
//! would take for an event gone (it has no `body` field) and drop: nothing is moved
//! (layout 8's events read as they are), but the migration waits until no process of
//! layout 8 runs. Layout 10 keeps an anchor in each partition's in-flight set, a member
//! that is no call, at +inf, which makes Redis index the set (see `claim.lua`) and which a
//! process of layout 9 would take for a lease whose end it reads as a number: nothing is
//! moved (the first claim that leases adds it), but the migration waits until no process
//! of layout 9 runs.
//!
//! The migration runs under a lock (`{prefix}:migrate:lock`, so one process does it while
//! the others answer 503 and wait), one partition at a time, each step of a partition in
//! one atomic script call (layout 1 takes four steps, layout 2 three, layouts 3 and 4
//! two, layout 5 one, layouts 6 to 9 none), and records its progress in
//! `{prefix}:meta` (`migrating`: the target, `from`: the layout it started from,
//! `migrated`: the partitions done): a process that dies
//! half-way leaves a migration the next process resumes, and every step is idempotent.
//! The recorded `layout` is removed when the migration starts, so that a process of the
//! earlier layout started meanwhile finds a migration to a layout it does not know and
//! refuses the store. A migration of layout 1 that the release of layout 2 left half-way
//! is started again from layout 1, and one a later release left half-way from
//! the layout it recorded (its steps leave a partition already past them as it is). From
//! layout 1, webhook replay ids are then copied to their own namespace (the old key
//! stays, for a client whose key it was). The layout version is recorded last.
//!
//! Processes of an earlier layout must be stopped first (README, "Upgrading"; the
//! migration waits while the process registry lists one, but layout-1 processes do not
//! record themselves): they keep writing their layout and would undo part of the
//! migration.

use redis::Value;

use super::transport::{Script, ScriptCall, Transport, HELPERS};
use super::{rfc3339_ms, ProcessRecord, QueueError, PROCESS_STALE};
use crate::domain::partition_of;

/// The layout this release reads and writes.
pub const LAYOUT_VERSION: u32 = 10;

/// Characters of one time in an account's rate log (`rl`: Unix ms, 13 digits until the
/// year 2286, back to back); the scripts index the log by it.
pub(super) const RATE_LOG_STAMP: i64 = 13;

/// The largest partition count a configuration accepts: old data is looked for in every
/// partition up to it.
const MAX_PARTITIONS: u16 = 4096;

/// How long the migration lock holds without being renewed (it is renewed after each
/// partition, which takes far less).
const LOCK_MS: u64 = 30_000;

/// Accounts of each partition checked against the configured partition count.
const SAMPLE: usize = 16;

/// Keys of layout-1 webhook replay ids read per `SCAN` call.
const SCAN_COUNT: usize = 1000;

/// The scripts of the migration, and of the process registry it consults.
pub struct LayoutScripts {
    partition: Script,
    partition_v2: Script,
    partition_v4: Script,
    partition_v5: Script,
    copy_key: Script,
    lock: Script,
    begin: Script,
    finish: Script,
    record: Script,
    /// `processes.lua`: the registry of live processes.
    pub(crate) processes: Script,
}

impl Default for LayoutScripts {
    fn default() -> Self {
        Self::new()
    }
}

impl LayoutScripts {
    /// The scripts.
    pub fn new() -> Self {
        LayoutScripts {
            partition: Script::new(HELPERS, include_str!("migrate_v1.lua")),
            partition_v2: Script::new(HELPERS, include_str!("migrate_v2.lua")),
            partition_v4: Script::new(HELPERS, include_str!("migrate_v4.lua")),
            partition_v5: Script::new(HELPERS, include_str!("migrate_v5.lua")),
            copy_key: Script::new("", COPY_KEY),
            lock: Script::new("", LOCK),
            begin: Script::new("", BEGIN),
            finish: Script::new("", FINISH),
            record: Script::new("", RECORD),
            processes: Script::new(HELPERS, include_str!("processes.lua")),
        }
    }
}

/// Copies the string `ARGV[1]` to `ARGV[2]`, with its time to live, unless the copy
/// exists; both in the partition `KEYS[1]` routes to.
const COPY_KEY: &str = r#"
local value = redis.call('GET', ARGV[1])
if not value then return 0 end
if redis.call('EXISTS', ARGV[2]) == 1 then return 0 end
local ttl = redis.call('PTTL', ARGV[1])
if ttl > 0 then
  redis.call('SET', ARGV[2], value, 'PX', ttl)
else
  redis.call('SET', ARGV[2], value)
end
return 1
"#;

/// Renews (`ARGV[3]` = 'renew', for `ARGV[4]` ms) or releases ('release') the lock
/// `ARGV[1]` if token `ARGV[2]` still holds it; 1 if it did.
const LOCK: &str = r#"
if redis.call('GET', ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == 'renew' then
  redis.call('PEXPIRE', ARGV[1], ARGV[4])
else
  redis.call('DEL', ARGV[1])
end
return 1
"#;

/// Marks, in the meta hash `ARGV[1]`, a migration to layout `ARGV[2]` from layout `ARGV[3]`
/// with no partition done, and removes the recorded layout, at once: a process of the
/// earlier layout that starts meanwhile finds a migration to a layout it does not know,
/// and refuses the store, rather than taking the data for its own.
const BEGIN: &str = r#"
redis.call('HSET', ARGV[1], 'migrating', ARGV[2], 'from', ARGV[3], 'migrated', '0')
redis.call('HDEL', ARGV[1], 'layout')
return 1
"#;

/// Records layout `ARGV[2]` in the meta hash `ARGV[1]` and ends the migration, at once.
const FINISH: &str = r#"
redis.call('HSET', ARGV[1], 'layout', ARGV[2])
redis.call('HDEL', ARGV[1], 'migrating', 'migrated', 'from')
return 1
"#;

/// Records layout `ARGV[2]` in the meta hash `ARGV[1]` on first use, unless a migration
/// runs; 1 if it is recorded.
const RECORD: &str = r#"
if redis.call('HGET', ARGV[1], 'migrating') then return 0 end
redis.call('HSETNX', ARGV[1], 'layout', ARGV[2])
return 1
"#;

/// The base of a call of a script that touches only `key` (a key without a hash tag, like
/// the meta hash or the lock): the call is routed by `{base}:ready` (never touched), whose
/// hash tag is then `key` itself, so in a Redis Cluster it goes to `key`'s slot.
fn routed_to(key: &str) -> String {
    format!("{{{key}}}")
}

/// What a check found and did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutCheck {
    /// The store holds this layout, with this partition count.
    Current,
    /// The store was new: the layout and partition count are now recorded.
    Recorded,
    /// The store held an earlier layout, migrated by this process.
    Migrated,
}

/// Where the scripts and commands go, and what this process is configured with.
pub struct Scope<'a, T> {
    /// The store.
    pub transport: &'a T,
    /// `redis.key_prefix`.
    pub prefix: &'a str,
    /// `redis.partitions`.
    pub partitions: u16,
}

impl<T: Transport> Scope<'_, T> {
    fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    fn base(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}", self.prefix)
    }

    async fn cmd(&self, cmd: &redis::Cmd) -> Result<Value, QueueError> {
        self.transport.command(cmd).await
    }

    async fn script(&self, script: &Script, call: ScriptCall) -> Result<Value, QueueError> {
        self.transport
            .run_script(script, &[call])
            .await
            .pop()
            .unwrap_or_else(|| Err(QueueError::Protocol("a script answered nothing".into())))
    }
}

/// Checks the layout and the partition count recorded under the prefix, records them in a
/// new store, and migrates an earlier layout (see the module docs). `Mismatch` when this process
/// must not use the store; `Unavailable` while another process migrates it.
pub async fn check_layout<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
) -> Result<LayoutCheck, QueueError> {
    let meta = scope.meta();
    let fields = scope
        .cmd(
            redis::cmd("HMGET")
                .arg(&meta)
                .arg("layout")
                .arg("migrating"),
        )
        .await?;
    let fields = strings(fields);
    let field = |i: usize| fields.get(i).cloned().flatten();
    let (layout, migrating) = (field(0), field(1));
    let result = match layout.as_deref().map(str::parse::<u32>) {
        Some(Ok(v)) if v > LAYOUT_VERSION => {
            return Err(QueueError::Mismatch(format!(
                "the data under key prefix {prefix:?} is in layout {v} (key {meta:?}, field \
                 `layout`), written by a newer zenrelay; this release knows layouts up to \
                 {LAYOUT_VERSION}. Run the newer release (a downgrade would misread the \
                 queue), or use another redis.key_prefix",
                prefix = scope.prefix
            )))
        }
        Some(Ok(v)) if v == LAYOUT_VERSION => LayoutCheck::Current,
        Some(Ok(v)) if (2..LAYOUT_VERSION).contains(&v) => {
            migrate(scope, migration).await?;
            LayoutCheck::Migrated
        }
        Some(_) => {
            return Err(QueueError::Mismatch(format!(
                "the data under key prefix {prefix:?} records layout {layout:?} (key \
                 {meta:?}), which this release cannot read",
                prefix = scope.prefix,
                layout = layout.unwrap_or_default()
            )))
        }
        // A migration under way (or stopped half-way): resume it.
        None if migrating.is_some() => {
            migrate(scope, migration).await?;
            LayoutCheck::Migrated
        }
        None if scope.transport.holds_no_earlier_layout() => LayoutCheck::Recorded,
        None => {
            if layout_one_partitions(scope).await?.is_empty() {
                LayoutCheck::Recorded
            } else {
                migrate(scope, migration).await?;
                LayoutCheck::Migrated
            }
        }
    };
    check_partitions(scope).await?;
    if result != LayoutCheck::Current {
        // Not while a migration runs: this process may have looked at partitions it had
        // already migrated.
        let call = (routed_to(&meta), args([&meta, &LAYOUT_VERSION.to_string()]));
        if !matches!(scope.script(&migration.record, call).await?, Value::Int(1)) {
            return Err(QueueError::Unavailable(format!(
                "another process is migrating the queue under key prefix {:?} to layout \
                 {LAYOUT_VERSION}; this one waits for it",
                scope.prefix
            )));
        }
    }
    Ok(result)
}

/// Records the partition count on first use, or checks it against the one recorded.
async fn check_partitions<T: Transport>(scope: &Scope<'_, T>) -> Result<(), QueueError> {
    let (meta, mine) = (scope.meta(), scope.partitions);
    scope
        .cmd(redis::cmd("HSETNX").arg(&meta).arg("partitions").arg(mine))
        .await?;
    let stored = scope
        .cmd(redis::cmd("HGET").arg(&meta).arg("partitions"))
        .await?;
    let stored = strings(stored).pop().flatten().unwrap_or_default();
    if stored == mine.to_string() {
        Ok(())
    } else {
        Err(QueueError::Mismatch(format!(
            "redis.partitions is {mine}, but the data under key prefix {prefix:?} was \
             written with {stored} partitions (key {meta:?}); use redis.partitions = \
             {stored}, or drain the queue before changing it (see the README)",
            prefix = scope.prefix
        )))
    }
}

/// The partition count of the releases before the count was recorded in `{prefix}:meta`:
/// their default, which a store they wrote without `redis.partitions` set was spread over.
pub const UNRECORDED_PARTITIONS: u16 = 16;

/// The partition count the data under the prefix was written with: the recorded one; for
/// layout-1 data (which recorded none), [`UNRECORDED_PARTITIONS`]; `None` for a new store.
pub async fn recorded_partitions<T: Transport>(
    scope: &Scope<'_, T>,
) -> Result<Option<u16>, QueueError> {
    let reply = scope
        .cmd(redis::cmd("HGET").arg(scope.meta()).arg("partitions"))
        .await?;
    if let Some(count) = strings(Value::Array(vec![reply]))
        .pop()
        .flatten()
        .and_then(|n| n.parse::<u16>().ok())
    {
        return Ok(Some(count));
    }
    if scope.transport.holds_no_earlier_layout() {
        return Ok(None);
    }
    let mut any = redis::cmd("EXISTS");
    for p in 0..MAX_PARTITIONS {
        any.arg(format!("{}:accounts", scope.base(p)));
    }
    Ok((!matches!(scope.cmd(&any).await?, Value::Int(0))).then_some(UNRECORDED_PARTITIONS))
}

/// The partitions holding layout-1 data (every account of layout 1 is in its partition's
/// `accounts` set), after checking that they fit the configured partition count.
async fn layout_one_partitions<T: Transport>(scope: &Scope<'_, T>) -> Result<Vec<u16>, QueueError> {
    // One command for every partition a configuration allows (a new store, the usual
    // case, needs no more); then, only if there is data, one per partition to find it.
    let mut all = redis::cmd("EXISTS");
    for p in 0..MAX_PARTITIONS {
        all.arg(format!("{}:accounts", scope.base(p)));
    }
    if matches!(scope.cmd(&all).await?, Value::Int(0)) {
        return Ok(Vec::new());
    }
    let probes = (0..MAX_PARTITIONS).map(|p| async move {
        let key = format!("{}:accounts", scope.base(p));
        let reply = scope.cmd(redis::cmd("EXISTS").arg(&key)).await?;
        Ok::<_, QueueError>((p, matches!(reply, Value::Int(1))))
    });
    let mut found = Vec::new();
    for probe in futures::future::join_all(probes).await {
        let (p, exists) = probe?;
        if exists {
            found.push(p);
        }
    }
    // Layout 1 kept a `depth` counter in every account's record (written by each of its
    // enqueues), which no later layout writes: data without one is not layout 1 (e.g.
    // this layout's, whose `layout` field an operator deleted along with the count).
    // A sample of each partition's accounts, read once for both checks below.
    let mut samples: Vec<(u16, Vec<String>)> = Vec::with_capacity(found.len());
    for &p in &found {
        let key = format!("{}:accounts", scope.base(p));
        let sample = scope
            .cmd(redis::cmd("SRANDMEMBER").arg(&key).arg(SAMPLE))
            .await?;
        samples.push((p, strings(sample).into_iter().flatten().collect()));
    }
    let mut layout_one = false;
    for (p, sample) in &samples {
        for account in sample {
            let record = format!("{}:acct:{account}", scope.base(*p));
            let depth = scope
                .cmd(redis::cmd("HEXISTS").arg(&record).arg("depth"))
                .await?;
            layout_one |= matches!(depth, Value::Int(1));
        }
    }
    if !layout_one {
        return Ok(Vec::new());
    }
    let mine = scope.partitions;
    if let Some(&p) = found.iter().find(|&&p| p >= mine) {
        return Err(QueueError::Mismatch(format!(
            "redis.partitions is {mine}, but the data of the previous release under key \
             prefix {prefix:?} has partition {p} (key {key:?}); set redis.partitions to \
             the count the previous release ran with",
            prefix = scope.prefix,
            key = format!("{}:accounts", scope.base(p))
        )));
    }
    for (p, sample) in &samples {
        for account in sample {
            if partition_of(account, mine) != *p {
                return Err(QueueError::Mismatch(format!(
                    "redis.partitions is {mine}, but account {account:?} of the previous \
                     release's data under key prefix {prefix:?} is in partition {p}, where \
                     another partition count puts it; set redis.partitions to the count \
                     the previous release ran with",
                    prefix = scope.prefix
                )));
            }
        }
    }
    Ok(found)
}

/// Migrates an earlier layout to this one (see the module docs).
async fn migrate<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
) -> Result<(), QueueError> {
    migrate_until(scope, migration, None).await
}

/// As [`migrate`], stopping (as a process killed half-way would) once `stop_after`
/// partitions are done: for tests of a resumed migration.
#[doc(hidden)]
pub async fn migrate_until<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
    stop_after: Option<u16>,
) -> Result<(), QueueError> {
    let prefix = scope.prefix;
    // A process of an older layout still running would keep writing it (a rolling
    // deploy): wait until every one has stopped.
    let older: Vec<String> = live_processes(scope, migration)
        .await?
        .into_iter()
        .filter(|p| p.layout < LAYOUT_VERSION)
        .map(|p| {
            format!(
                "{} (zenrelay {}, layout {}, pid {} on {})",
                p.id, p.version, p.layout, p.pid, p.host
            )
        })
        .collect();
    if !older.is_empty() {
        return Err(QueueError::Unavailable(format!(
            "the queue under key prefix {prefix:?} must be migrated to layout \
             {LAYOUT_VERSION}, which waits until no process of an older layout runs: {}",
            older.join(", ")
        )));
    }
    let lock = format!("{prefix}:migrate:lock");
    let token = uuid::Uuid::now_v7().to_string();
    let taken = scope
        .cmd(
            redis::cmd("SET")
                .arg(&lock)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_MS),
        )
        .await?;
    if matches!(taken, Value::Nil) {
        return Err(QueueError::Unavailable(format!(
            "another process is migrating the queue under key prefix {prefix:?} to layout \
             {LAYOUT_VERSION} (lock {lock:?}); this one waits for it"
        )));
    }
    let result = migrate_locked(scope, migration, &lock, &token, stop_after).await;
    let release = (routed_to(&lock), args([&lock, &token, "release", "0"]));
    // The lock runs out by itself if this fails.
    let _ = scope.script(&migration.lock, release).await;
    result
}

async fn migrate_locked<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
    lock: &str,
    token: &str,
    stop_after: Option<u16>,
) -> Result<(), QueueError> {
    let Some((from, done)) = begin_or_resume(scope, migration).await? else {
        return Ok(());
    };
    let (meta, prefix) = (scope.meta(), scope.prefix);
    // Each partition's steps, one script call each, every step that brings a layout up to
    // the one it names: layout 1 takes four, layout 2 three, layouts 3 and 4 two, layout 5
    // one, layouts 6 to 9 none (only the wait for their processes to stop).
    let every_step: [(u32, &Script); 4] = [
        (1, &migration.partition),
        (2, &migration.partition_v2),
        (4, &migration.partition_v4),
        (5, &migration.partition_v5),
    ];
    let steps: Vec<&Script> = every_step
        .into_iter()
        .filter(|&(upto, _)| from <= upto)
        .map(|(_, step)| step)
        .collect();
    for p in done..scope.partitions {
        if stop_after.is_some_and(|n| p >= n) {
            return Ok(());
        }
        renew(scope, migration, lock, token).await?;
        let base = scope.base(p);
        for step in &steps {
            scope
                .script(step, (base.clone(), vec![base.clone().into_bytes()]))
                .await?;
        }
        scope
            .cmd(redis::cmd("HSET").arg(&meta).arg("migrated").arg(p + 1))
            .await?;
    }
    if from == 1 {
        copy_webhook_ids(scope, migration, lock, token).await?;
    }
    let finish = (routed_to(&meta), args([&meta, &LAYOUT_VERSION.to_string()]));
    scope.script(&migration.finish, finish).await?;
    tracing::info!(
        prefix,
        from,
        to = LAYOUT_VERSION,
        "migrated the queue's layout"
    );
    Ok(())
}

/// Under the migration's lock: the layout the migration starts from (1 to 9) and the
/// partitions already done, after marking a new migration in `{prefix}:meta` (see
/// [`BEGIN`]); `None` when there is nothing to migrate (another process finished it
/// meanwhile, or the store holds no earlier layout after all).
async fn begin_or_resume<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
) -> Result<Option<(u32, u16)>, QueueError> {
    let (meta, prefix) = (scope.meta(), scope.prefix);
    let fields = strings(
        scope
            .cmd(
                redis::cmd("HMGET")
                    .arg(&meta)
                    .arg("migrating")
                    .arg("migrated")
                    .arg("layout")
                    .arg("from"),
            )
            .await?,
    );
    let field = |i: usize| fields.get(i).cloned().flatten();
    let (migrating, layout) = (field(0), field(2));
    let mine = LAYOUT_VERSION.to_string();
    if layout.as_deref() == Some(mine.as_str()) {
        // Another process finished it while this one waited for the lock.
        return Ok(None);
    }
    // an earlier layout than this one, as recorded
    let earlier = |text: Option<&str>| {
        text.and_then(|t| t.parse::<u32>().ok())
            .filter(|v| (1..LAYOUT_VERSION).contains(v))
    };
    // the target of a migration an earlier release started, and the layout recorded, when
    // they are earlier layouts than this one
    let (earlier_target, earlier_layout) =
        (earlier(migrating.as_deref()), earlier(layout.as_deref()));
    let from = match (
        migrating.as_deref(),
        layout.as_deref(),
        earlier_target,
        earlier_layout,
    ) {
        // A migration to this layout, stopped half-way: resumed where it stopped.
        (Some(target), ..) if target == mine => {
            let Some(from) = earlier(field(3).as_deref()) else {
                return Err(QueueError::Mismatch(format!(
                    "the migration of the queue under key prefix {prefix:?} records no \
                     layout it started from (key {meta:?}, field `from`)"
                )));
            };
            check_partitions(scope).await?;
            tracing::info!(
                prefix,
                from,
                to = LAYOUT_VERSION,
                "resuming the migration of the queue's layout"
            );
            let done = field(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            return Ok(Some((from, done)));
        }
        // The release of layout 2 stopped half-way through a migration of layout 1 ("1"
        // was written by its builds that did not record the target yet): its partitions
        // are in layout 1 or 2, and both steps leave a partition already past them as it
        // is, so it is started again from layout 1.
        (Some("1" | "2"), None, ..) => 1,
        // A release of layout 3 or later (but earlier than this one) stopped half-way
        // through its migration (of a layout before its own, recorded in `from`; layout
        // 1 when none is): its steps leave a partition already past them as it is, so it
        // is started again from there.
        (Some(_), None, Some(target), _) => earlier(field(3).as_deref())
            .filter(|f| (2..target).contains(f))
            .unwrap_or(1),
        (Some(target), ..) => {
            return Err(QueueError::Mismatch(format!(
                "a migration of the queue under key prefix {prefix:?} to layout {target} is \
                 under way (key {meta:?}); this release migrates to layout {mine}: let the \
                 release that started it finish it"
            )))
        }
        (None, _, _, Some(recorded)) if recorded >= 2 => recorded,
        // Nothing of layout 1 after all: the caller records this layout.
        (None, ..) if layout_one_partitions(scope).await?.is_empty() => return Ok(None),
        (None, ..) => 1,
    };
    // Marked before anything else is written (the data was checked against the partition
    // count): a process that dies from here on leaves a migration the next one resumes,
    // never data taken for migrated.
    check_partitions(scope).await?;
    let call = (routed_to(&meta), args([&meta, &mine, &from.to_string()]));
    scope.script(&migration.begin, call).await?;
    tracing::info!(
        prefix,
        from,
        to = LAYOUT_VERSION,
        "migrating the queue's layout"
    );
    Ok(Some((from, 0)))
}

/// Copies each webhook replay id layout 1 remembered (`{base}:idem:{account}:webhook:
/// {hook}:{id}`) to the key this layout reads (`... :webhook {hook}:{id}`), with its time to
/// live. The old key stays: it may be a client's `Idempotency-Key`, which layout 1 could
/// not tell apart.
async fn copy_webhook_ids<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
    lock: &str,
    token: &str,
) -> Result<(), QueueError> {
    let pattern = format!("{}:{{p*}}:idem:*:webhook:*", glob_escape(scope.prefix));
    let mut cursor = "0".to_string();
    loop {
        renew(scope, migration, lock, token).await?;
        let reply = scope
            .cmd(
                redis::cmd("SCAN")
                    .arg(&cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT),
            )
            .await?;
        let Value::Array(mut page) = reply else {
            return Err(QueueError::Protocol("SCAN answered no page".into()));
        };
        let keys = page.pop().map(strings).unwrap_or_default();
        cursor = page
            .pop()
            .and_then(|c| strings(Value::Array(vec![c])).pop().flatten())
            .unwrap_or_else(|| "0".into());
        for key in keys.into_iter().flatten() {
            if let Some((base, new_key)) = webhook_key_of_layout_one(&key) {
                let call = (base, args([&key, &new_key]));
                scope.script(&migration.copy_key, call).await?;
            }
        }
        if cursor == "0" {
            return Ok(());
        }
    }
}

/// Renews the migration's lock for [`LOCK_MS`]; `Unavailable` if this process no longer
/// holds it (it ran out: another process may be migrating).
async fn renew<T: Transport>(
    scope: &Scope<'_, T>,
    migration: &LayoutScripts,
    lock: &str,
    token: &str,
) -> Result<(), QueueError> {
    let call = (
        routed_to(lock),
        args([lock, token, "renew", &LOCK_MS.to_string()]),
    );
    if matches!(scope.script(&migration.lock, call).await?, Value::Int(1)) {
        Ok(())
    } else {
        Err(QueueError::Unavailable(format!(
            "the lock of the layout migration under key prefix {:?} ran out",
            scope.prefix
        )))
    }
}

/// For a layout-1 webhook replay id key, its partition base and its key in this layout.
fn webhook_key_of_layout_one(key: &str) -> Option<(String, String)> {
    let (base, rest) = key.split_once(":idem:")?;
    let (account, rest) = rest.split_once(':')?;
    let id = rest.strip_prefix("webhook:")?;
    Some((
        base.to_string(),
        format!("{base}:idem:{account}:webhook {id}"),
    ))
}

/// The processes of the registry that are alive.
async fn live_processes<T: Transport>(
    scope: &Scope<'_, T>,
    scripts: &LayoutScripts,
) -> Result<Vec<ProcessRecord>, QueueError> {
    let base = scope.base(0);
    let stale = (PROCESS_STALE.as_millis() as u64).to_string();
    let call = (base.clone(), args([&base, "list", &stale, "", ""]));
    parse_processes(scope.script(&scripts.processes, call).await?)
}

/// The records `processes.lua` lists ("<last heartbeat ms> <JSON>"); one this release
/// cannot read is left out.
pub(crate) fn parse_processes(reply: Value) -> Result<Vec<ProcessRecord>, QueueError> {
    let Value::Array(items) = reply else {
        return Err(QueueError::Protocol(
            "the process registry answered no list".into(),
        ));
    };
    Ok(strings(Value::Array(items))
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let (seen, json) = item.split_once(' ')?;
            let seen: u64 = seen.parse().ok()?;
            let mut record: ProcessRecord = serde_json::from_str(json).ok()?;
            record.last_seen = rfc3339_ms(seen);
            Some(record)
        })
        .collect())
}

/// `text` as a `SCAN MATCH` pattern matching only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn args<const N: usize>(items: [&str; N]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// The items of an array reply (or the one reply) as optional text.
fn strings(reply: Value) -> Vec<Option<String>> {
    let items = match reply {
        Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Value::SimpleString(s) => Some(s),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_keys_of_layout_one_map_to_their_namespace() {
        assert_eq!(
            webhook_key_of_layout_one("zr:{p3}:idem:acme:webhook:status:msg_1"),
            Some((
                "zr:{p3}".to_string(),
                "zr:{p3}:idem:acme:webhook status:msg_1".to_string()
            ))
        );
        assert_eq!(
            webhook_key_of_layout_one("zr:{p3}:idem:acme:client-key"),
            None
        );
    }

    #[test]
    fn glob_escape_quotes_pattern_characters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

//! The embedded backend of [`Queue`] (`redis.url = "memory://"`), for `zenrelay demo` and
//! fast tests.
//!
//! **Not durable.** Everything lives in this process: queued events, dead letters and event
//! records are lost when it exits, and several processes cannot share one queue. Use Redis
//! for anything that must survive a restart.
//!
//! It is the Redis backend with another transport: [`MemoryQueue`] is
//! [`ScriptQueue`] over [`Embedded`], which runs the very Lua scripts Redis runs
//! (`enqueue.lua`, `claim.lua`, `complete.lua`, ... with the helpers of `scripts.lua`) in an
//! embedded Lua 5.1, Redis's own Lua, over an in-process [`Store`] that answers the Redis
//! commands they send. No queue rule is written here: the scripts are the one statement of
//! the queue's behaviour, and `tests/it/differential.rs` checks that both backends give
//! the same replies and leave the same keys.
//!
//! # The scripts' environment
//!
//! As in Redis: `KEYS` and `ARGV`; `redis.call` (an error reply raises a Lua error),
//! `redis.pcall` (an error reply comes back as `{err = ...}`), `redis.error_reply`,
//! `redis.status_reply`; the base library (`tonumber`, `tostring`, `unpack`, `ipairs`,
//! ...), `string`, `table` and `math`. Replies convert as in Redis: integer → number, bulk
//! string → string, nil → `false`, array → table, status → `{ok = ...}`; a script's number
//! becomes an integer (truncated), `false`/`nil` nil, `true` 1, a table an array up to its
//! first nil. Number arguments of `redis.call` are sent as `%.17g` text. Reading or
//! creating an undeclared global raises an error, as in Redis. `cjson`, `bit`, `struct`
//! and `cmsgpack` are not provided (no script uses them): calling them fails loudly.
//!
//! # Clock
//!
//! `TIME` and key expiry read tokio's clock ([`tokio::time::Instant`]), mapped to Unix time
//! as the wall clock at creation plus the tokio time elapsed since. Under
//! `tokio::time::pause` tests drive rolling windows, leases, retries, 429 pauses, TTLs and
//! retention through the production scripts without waiting.
//!
//! # Atomicity
//!
//! One mutex guards the Lua state and the store, and a script runs to its end under it, so
//! scripts run one at a time, as in Redis. They are short (the callers cap their size), so
//! they run on the calling task rather than being sent to a blocking thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value as LuaValue};
use redis::Value;
use tokio::time::Instant;

use super::script_queue::{QueueSettings, ScriptQueue};
use super::store::{format_g17, CommandError, Store};
use super::transport::{Script, ScriptCall, Transport, HELPERS};
#[cfg(doc)]
use super::Queue;
use super::QueueError;

/// The queue's scripts run in this process.
pub type MemoryQueue = ScriptQueue<Embedded>;

impl MemoryQueue {
    /// An empty queue.
    pub fn new(config: QueueSettings) -> Self {
        Self::new_with_helpers(config, HELPERS)
    }

    /// As [`MemoryQueue::new`], with other helpers in front of every script: for tests
    /// that run the scripts with a variant of them (e.g. one that fails after some write).
    #[doc(hidden)]
    pub fn new_with_helpers(config: QueueSettings, helpers: &str) -> Self {
        ScriptQueue::with_helpers(config, Embedded::new(), helpers)
    }
}

/// How long a batch of script calls runs before it lets other tasks run (real time).
const YIELD_AFTER: Duration = Duration::from_millis(2);

/// Runs scripts and commands against an in-process [`Store`] with an embedded Lua 5.1.
pub struct Embedded {
    engine: Mutex<Engine>,
    origin: Instant,
    origin_unix_us: u64,
}

/// The Lua state (which owns the store, as its app data) and the loaded scripts.
struct Engine {
    lua: Lua,
    /// Takes the function a library registered under a name (see [`ENVIRONMENT`]).
    registered: Function,
    /// Turns a library's load on and off (see [`ENVIRONMENT`]).
    load_phase: Function,
    /// The scripts' functions by name, as Redis's loaded libraries.
    functions: HashMap<Arc<str>, Function>,
}

impl Default for Embedded {
    fn default() -> Self {
        Self::new()
    }
}

impl Embedded {
    /// An empty store.
    pub fn new() -> Self {
        let origin_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let (lua, registered, load_phase) =
            scripting_lua().expect("the Lua environment of the scripts builds");
        lua.set_app_data(Store::new());
        Embedded {
            engine: Mutex::new(Engine {
                lua,
                registered,
                load_phase,
                functions: HashMap::new(),
            }),
            origin: Instant::now(),
            origin_unix_us,
        }
    }

    /// Now in Unix microseconds, on tokio's clock.
    fn now_us(&self) -> u64 {
        self.origin_unix_us + self.origin.elapsed().as_micros() as u64
    }

    /// Now in Unix milliseconds, on tokio's clock: what `TIME` answers.
    pub fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A script that fails midway leaves the store as it was left, as in Redis; a
        // panic cannot leave the Lua state unusable either.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one command against the store, as a Redis client would; for tests and
    /// inspection (e.g. `KEYS *`, `TYPE`, `PTTL`, `HGETALL`).
    pub fn command(&self, args: &[Vec<u8>]) -> Result<Value, CommandError> {
        let engine = self.lock();
        let mut store = engine.store();
        store.set_now(self.now_us());
        store.command(args)
    }
}

impl Engine {
    fn store(&self) -> mlua::AppDataRefMut<'_, Store> {
        self.lua
            .app_data_mut::<Store>()
            .expect("the store is the Lua state's app data")
    }

    /// The function of `script`, its library loaded at its first call (as Redis's
    /// `FUNCTION LOAD`: the library's code runs once, and registers the function).
    fn function(&mut self, script: &Script) -> Result<Function, ErrorReply> {
        if let Some(f) = self.functions.get(script.name()) {
            return Ok(f.clone());
        }
        let loaded = || -> mlua::Result<Function> {
            // (the first line, `#!lua name=...`, is Redis's, not Lua's: a blank line keeps
            // the lines' numbers)
            let code = script.source();
            let code = code.find('\n').map_or("", |at| &code[at..]);
            self.load_phase.call::<()>(true)?;
            let ran = self
                .lua
                .load(code)
                .set_name(format!("={}", script.name()))
                .exec();
            self.load_phase.call::<()>(false)?;
            ran?;
            self.registered.call(script.name())
        };
        let f =
            loaded().map_err(|e| ErrorReply(format!("ERR Error registering functions: {e}")))?;
        self.functions.insert(script.name().into(), f.clone());
        Ok(f)
    }

    /// Runs `script` with `KEYS` and `ARGV` at time `now_us`.
    fn run(
        &mut self,
        script: &Script,
        keys: &[&[u8]],
        argv: &[Vec<u8>],
        now_us: u64,
    ) -> Result<Value, ErrorReply> {
        self.store().set_now(now_us);
        let function = self.function(script)?;
        let run = || -> mlua::Result<LuaValue> {
            function.call((
                self.strings(keys.iter().copied())?,
                self.strings(argv.iter().map(Vec::as_slice))?,
            ))
        };
        self.store().enter_script(keys.first().copied());
        let result = run();
        self.store().leave_script();
        let result = result.map_err(|e| {
            ErrorReply(format!(
                "ERR Error running script (call to {}): {e}",
                script.name()
            ))
        })?;
        reply_of(&result)
    }

    fn strings<'a>(&self, items: impl ExactSizeIterator<Item = &'a [u8]>) -> mlua::Result<Table> {
        let table = self.lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.enumerate() {
            table.raw_set(i + 1, self.lua.create_string(item)?)?;
        }
        Ok(table)
    }
}

#[async_trait]
impl Transport for Embedded {
    async fn run_script(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let mut replies = Vec::with_capacity(calls.len());
        let mut since_yield = std::time::Instant::now();
        for (base, args) in calls {
            // Each call is atomic, not the batch: a long batch lets other tasks run between
            // its calls (as other clients' commands interleave with a pipeline in Redis),
            // without paying a trip through the scheduler for every short one.
            if since_yield.elapsed() > YIELD_AFTER {
                tokio::task::yield_now().await;
                since_yield = std::time::Instant::now();
            }
            let key = format!("{base}:ready");
            let reply = self
                .lock()
                .run(script, &[key.as_bytes()], args, self.now_us());
            // As in Redis: each call answers alone, and the others still run.
            replies.push(reply.map_err(|e| QueueError::Unavailable(e.0)));
        }
        replies
    }

    async fn command(&self, cmd: &redis::Cmd) -> Result<Value, QueueError> {
        let args = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => Ok(bytes.to_vec()),
                redis::Arg::Cursor => Err(QueueError::Protocol(
                    "cursor arguments are not supported by the embedded store".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.command(&args)
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    fn describe(&self, _prefix: &str, _partitions: u16) -> String {
        "in memory (memory://), NOT DURABLE: queued events are lost when the process exits".into()
    }

    /// Nothing to check: there is no server to misconfigure.
    async fn check_deployment(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// The embedded store compiles a script at its first call and keeps it.
    async fn load_scripts(&self, _scripts: &[&Script]) -> Result<(), QueueError> {
        Ok(())
    }

    /// One process, whose worker ingress wakes directly: nothing to announce.
    async fn publish(&self, _channel: &str, _payload: &str) -> Result<(), QueueError> {
        Ok(())
    }

    /// The store lives in this process: it holds no earlier release's data.
    fn holds_no_earlier_layout(&self) -> bool {
        true
    }
}

/// What Redis gives its scripts: `redis.*` over the store, and global protection. A
/// library's `redis.register_function(name, callback)` (or its table form) keeps the
/// callback, which the first function the code returns takes by its name. The second
/// turns the library's load on and off: while a library's code runs, its `redis` holds
/// only `register_function`, as Redis's does (a library that reads `redis.call` then
/// fails here as it fails on Redis).
const ENVIRONMENT: &str = r#"
local raw = ...
local redis = {}
local registered = {}
function redis.register_function(name, callback)
  if type(name) == 'table' then
    name, callback = name.function_name, name.callback
  end
  registered[name] = callback
end
redis.pcall = raw
function redis.call(...)
  local reply = raw(...)
  if type(reply) == 'table' and reply.err then
    error(reply.err, 0)
  end
  return reply
end
function redis.error_reply(msg) return {err = msg} end
function redis.status_reply(msg) return {ok = msg} end
rawset(_G, 'redis', redis)
rawset(_G, 'loadfile', nil)
rawset(_G, 'dofile', nil)
setmetatable(_G, {
  __newindex = function(_, name)
    error("Script attempted to create global variable '" .. tostring(name) .. "'", 2)
  end,
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
  end,
})
local loading = setmetatable({register_function = redis.register_function}, {
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
  end,
})
local function take(name)
  local callback = registered[name]
  registered[name] = nil
  if not callback then error("the library registered no function " .. name) end
  return callback
end
local function load_phase(on)
  rawset(_G, 'redis', on and loading or redis)
end
return take, load_phase
"#;

/// A Lua 5.1 state with the libraries and `redis` table Redis gives scripts, the function
/// that takes what a library registered, and the one that turns a library's load on and
/// off.
fn scripting_lua() -> mlua::Result<(Lua, Function, Function)> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )?;
    // `redis.pcall`: the reply as Lua sees it, or `{err = ...}`.
    let raw = lua.create_function(|lua, args: MultiValue| {
        let reply = match command_args(&args) {
            Ok(argv) => lua
                .app_data_mut::<Store>()
                .ok_or_else(|| mlua::Error::runtime("the store is not available"))?
                .command(&argv),
            Err(e) => Err(e),
        };
        match reply {
            Ok(value) => lua_of(lua, value),
            Err(e) => error_table(lua, &e.0),
        }
    })?;
    let (registered, load_phase) = lua
        .load(ENVIRONMENT)
        .set_name("=environment")
        .call::<(Function, Function)>(raw)?;
    Ok((lua, registered, load_phase))
}

/// `redis.call` arguments as Redis takes them: strings as they are, numbers as `%.17g`.
fn command_args(args: &MultiValue) -> Result<Vec<Vec<u8>>, CommandError> {
    if args.is_empty() {
        return Err(CommandError(
            "ERR Please specify at least one argument for this redis lib call".into(),
        ));
    }
    args.iter()
        .map(|arg| match arg {
            LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
            LuaValue::Integer(i) => Ok(format_g17(*i as f64).into_bytes()),
            LuaValue::Number(n) => Ok(format_g17(*n).into_bytes()),
            _ => Err(CommandError(
                "ERR Lua redis lib command arguments must be strings or integers".into(),
            )),
        })
        .collect()
}

fn error_table(lua: &Lua, message: &str) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    t.raw_set("err", message)?;
    Ok(LuaValue::Table(t))
}

/// A Redis reply as a script sees it.
fn lua_of(lua: &Lua, value: Value) -> mlua::Result<LuaValue> {
    Ok(match value {
        Value::Nil => LuaValue::Boolean(false),
        Value::Int(i) => LuaValue::Number(i as f64),
        Value::BulkString(b) => LuaValue::String(lua.create_string(b)?),
        Value::Okay => status_table(lua, "OK")?,
        Value::SimpleString(s) => status_table(lua, &s)?,
        Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, lua_of(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "the embedded store gave a reply scripts cannot see: {other:?}"
            )))
        }
    })
}

fn status_table(lua: &Lua, status: &str) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    t.raw_set("ok", status)?;
    Ok(LuaValue::Table(t))
}

/// The error reply of a script, as Redis words it (`ERR ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply(pub String);

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A script's return value as Redis replies it; `Err` for an error reply.
fn reply_of(value: &LuaValue) -> Result<Value, ErrorReply> {
    Ok(match value {
        LuaValue::Nil | LuaValue::Boolean(false) => Value::Nil,
        LuaValue::Boolean(true) => Value::Int(1),
        LuaValue::Integer(i) => Value::Int(*i),
        LuaValue::Number(n) => Value::Int(*n as i64),
        LuaValue::String(s) => Value::BulkString(s.as_bytes().to_vec()),
        LuaValue::Table(t) => {
            if let Ok(LuaValue::String(e)) = t.raw_get::<LuaValue>("err") {
                return Err(ErrorReply(e.to_string_lossy()));
            }
            if let Ok(LuaValue::String(s)) = t.raw_get::<LuaValue>("ok") {
                return Ok(Value::SimpleString(s.to_string_lossy()));
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<LuaValue>(i) {
                    Ok(LuaValue::Nil) | Err(_) => break,
                    Ok(item) => items.push(reply_of(&item)?),
                }
            }
            Value::Array(items)
        }
        _ => Value::Nil,
    })
}

#[cfg(test)]
mod tests {
    //! The production scripts' timing on tokio's paused clock: real windows, pauses,
    //! delays, TTLs and retention, no waiting; and the Lua environment's conversions.

    use super::*;
    use crate::domain::{EventId, NotifyPayload, Priority};
    use crate::queue::{
        AccountStats, Claimed, Completion, EnqueueBatch, EnqueueOutcome, NewEvent, Outcome, Queue,
        RateLimit, Retention, RETENTION_MS,
    };

    const MINUTE: u64 = 60_000;

    fn queue(limit: u32, window_ms: u64, lease: Duration) -> MemoryQueue {
        MemoryQueue::new(QueueSettings {
            prefix: "test".into(),
            partitions: 1,
            lease,
            group_max: 8,
            default_limit: RateLimit { limit, window_ms },
            margin_ms: 250,
            retention: Retention::default(),
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
        let mut items = claim_group(q).await;
        assert!(items.len() <= 1, "one delivery in flight");
        items.pop()
    }

    /// What a claim leases of the one account: a lease group, its members in order.
    async fn claim_group(q: &MemoryQueue) -> Vec<Claimed> {
        let items = q.claim(0, 10).await.unwrap().items;
        let places: Vec<u32> = items.iter().map(|c| c.group_index).collect();
        assert_eq!(places, (0..items.len() as u32).collect::<Vec<_>>());
        items
    }

    async fn complete(q: &MemoryQueue, c: &Claimed, outcome: Outcome) {
        q.complete(&[Completion::of(c, outcome)]).await.unwrap();
    }

    async fn counters(q: &MemoryQueue) -> AccountStats {
        let stats = q.stats().await.unwrap();
        stats
            .accounts
            .into_iter()
            .find(|a| a.account == "acme")
            .expect("acme has counters")
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
                Some(_) => {
                    // a lease group, sent one after another
                    for c in &batch.items {
                        starts.push(q.transport().now_ms());
                        complete(&q, c, delivered()).await;
                    }
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
        assert_eq!(counters(&q).await.delivered, n as u64);
        assert_eq!(counters(&q).await.depth, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_account_for_retry_after_and_the_attempt_does_not_count() {
        let q = queue(100, MINUTE, Duration::from_secs(15));
        enqueue(&q, vec![event("a", 0), event("b", 0)]).await;
        let group = claim_group(&q).await;
        assert_eq!(group.len(), 2, "a lease group of both");
        let c = group[0].clone();
        // the sender releases what it did not send, last first, before the 429
        complete(&q, &group[1], Outcome::Released).await;
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
        let again = claim_group(&q).await;
        let ids = |g: &[Claimed]| g.iter().map(|c| c.delivery_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&group), "first in line again, in order");
        assert_eq!(again[0].attempts, 1, "the 429 did not count");
        assert_eq!(again[1].attempts, 1, "the release did not count");
        assert_eq!(counters(&q).await.upstream_429, 1);
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
        assert_eq!(counters(&q).await.scheduled_retries, 1);
        tokio::time::advance(Duration::from_millis(299_999)).await;
        assert!(claim_one(&q).await.is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = claim_one(&q).await.unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(counters(&q).await.scheduled_retries, 0);

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
                reason: crate::queue::DeadReason::Rejected,
                status: Some(400),
                error: "late".into(),
            },
        )
        .await;
        complete(&q, &third, delivered()).await;
        let id = EventId::of_delivery(&c.delivery_id).unwrap();
        let record = q.event(&id).await.unwrap().unwrap();
        assert_eq!(record.status, "delivered");
        assert_eq!(counters(&q).await.in_flight, 0);
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
        let dead = q.dead_letters("acme", 0, 10).await.unwrap();
        assert_eq!(dead.items.len(), 1);
        assert_eq!(dead.items[0].reason, "expired");
        assert_eq!(counters(&q).await.depth, 1);
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
        let group = claim_group(&q).await;
        let (a, b) = (&group[0], &group[1]);
        complete(&q, a, delivered()).await;
        complete(
            &q,
            b,
            Outcome::Dead {
                reason: crate::queue::DeadReason::Rejected,
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

    fn script(body: &str) -> Script {
        Script::new(HELPERS, body)
    }

    async fn eval(e: &Embedded, body: &str, args: &[&str]) -> Result<Value, QueueError> {
        let argv = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        e.run_script(&script(body), &[("{b}".to_string(), argv)])
            .await
            .remove(0)
    }

    #[tokio::test]
    async fn replies_and_arguments_convert_as_in_redis() {
        let e = Embedded::new();
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        // Lua -> reply: numbers truncate, false is nil, true is 1, tables stop at a nil.
        assert_eq!(
            eval(
                &e,
                "return {1.9, -2.5, 'x', true, false, {KEYS[1]}, nil, 7}",
                &[]
            )
            .await
            .unwrap(),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(-2),
                bulk("x"),
                Value::Int(1),
                Value::Nil,
                Value::Array(vec![bulk("{b}:ready")]),
            ])
        );
        // Reply -> Lua: integer, bulk, nil bulk, status, and numbers sent as %.17g.
        let body = "redis.call('HSET', '{b}h', 'f', 0.1, 'g', 1e20) \
            local t = {redis.call('HGET', '{b}h', 'f'), redis.call('HGET', '{b}h', 'g'), \
              redis.call('HINCRBY', '{b}c', 'n', ARGV[1]) + 1, redis.call('HGET', '{b}h', 'no')} \
            return {t[1], t[2], t[3], type(t[4]), redis.call('SET', '{b}k', 'v').ok, \
              type(redis.call('PING'))}";
        assert_eq!(
            eval(&e, body, &["41"]).await.unwrap(),
            Value::Array(vec![
                bulk("0.10000000000000001"),
                bulk("1e+20"),
                Value::Int(42),
                bulk("boolean"),
                bulk("OK"),
                bulk("table"),
            ])
        );
        assert_eq!(
            eval(&e, "return redis.status_reply('DONE')", &[])
                .await
                .unwrap(),
            Value::SimpleString("DONE".into())
        );
    }

    #[tokio::test]
    async fn a_library_gets_no_redis_call_while_it_loads() {
        let e = Embedded::new();
        let at_load = Script::new("local call = redis.call\n", "return call('PING')");
        let failure = e
            .run_script(&at_load, &[("{b}".to_string(), Vec::new())])
            .await
            .remove(0)
            .unwrap_err();
        assert!(
            failure
                .to_string()
                .contains("nonexistent global variable 'call'"),
            "{failure}"
        );
        // its function, once called, has the whole of `redis`
        assert_eq!(
            eval(&e, "return type(redis.call)", &[]).await.unwrap(),
            Value::BulkString(b"function".to_vec())
        );
    }

    #[tokio::test]
    async fn errors_are_loud_and_pcall_catches_them() {
        let e = Embedded::new();
        let failure = eval(&e, "return redis.call('FLUSHALL')", &[])
            .await
            .unwrap_err();
        assert!(
            failure
                .to_string()
                .contains("ERR unknown command 'FLUSHALL' in embedded store"),
            "{failure}"
        );
        assert_eq!(
            eval(
                &e,
                "redis.call('SET', '{b}k', 'v') return redis.pcall('LPUSH', '{b}k', 'x').err",
                &[]
            )
            .await
            .unwrap(),
            Value::BulkString(
                b"WRONGTYPE Operation against a key holding the wrong kind of value".to_vec()
            )
        );
        let global = eval(&e, "x = 1 return x", &[]).await.unwrap_err();
        assert!(
            global.to_string().contains("create global variable 'x'"),
            "{global}"
        );
        let missing = eval(&e, "return cjson.encode({})", &[]).await.unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("nonexistent global variable 'cjson'"),
            "{missing}"
        );
        let reply = eval(&e, "return redis.error_reply('ERR mine')", &[])
            .await
            .unwrap_err();
        assert!(reply.to_string().contains("ERR mine"), "{reply}");
    }
}

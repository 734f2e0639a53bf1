//! What the queue's logic needs of a store: its Lua scripts ([`Script`], with the
//! helpers every script starts with) and a [`Transport`] that runs them and a few plain
//! commands. [`super::script_queue::ScriptQueue`] is written against it; the transports are a
//! Redis primary ([`super::connections`]), the masters of a Redis Cluster
//! ([`super::cluster`]) and the in-process store ([`super::memory`]).

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;

use super::QueueError;

/// The helpers every script starts with (`scripts.lua`). Public, hidden, for the tests
/// that run variants of the scripts (see [`super::script_queue::ScriptQueue::with_helpers`]).
#[doc(hidden)]
pub const HELPERS: &str = include_str!("scripts.lua");

/// One of the queue's Lua scripts, as a Redis function: a library (`FUNCTION LOAD`) of
/// the script's settings and the helpers of `scripts.lua` it uses, which Redis makes once,
/// at the load, and of one function, the script's body, which `FCALL` calls by its name.
/// Redis's Lua makes a script's local functions anew at each of its calls (`EVALSHA`),
/// at a cost that grows with the locals each uses: the helpers of a claim cost about
/// 23,000 instructions a call, those of a completion 16,000 (`scripts/lua-cost.sh`).
///
/// The library's name and its function's are one, `zenrelay_` and the SHA1 digest of the
/// library's code: processes whose settings differ (each writes its own into the text)
/// load libraries of their own beside each other, and a name always stands for one code.
///
/// A store without functions (Redis before 7.0, or a user whose ACL refuses
/// `FUNCTION LOAD`) runs the same code as a plain script (`EVALSHA`, its [`Script::plain`]
/// form: the body after the helpers, `begin` first), making its helpers at each call.
#[derive(Clone, Debug)]
pub struct Script {
    source: Arc<str>,
    name: Arc<str>,
    plain: Arc<str>,
    sha: Arc<str>,
}

impl Script {
    /// The script `body`, after those of `helpers` it calls (directly or through another
    /// helper), and `begin`, which its function calls first when the helpers define it.
    /// What a body holds above a line `-- @call` (functions that take what they need of a
    /// call as arguments) is the library's too, made once.
    pub(crate) fn new(helpers: &str, body: &str) -> Self {
        Self::with_settings("", helpers, body)
    }

    /// As [`Script::new`], with `settings` (a process's settings, as Lua locals) ahead of
    /// the helpers, which may then read them.
    pub(crate) fn with_settings(settings: &str, helpers: &str, body: &str) -> Self {
        Self::build(settings, helpers, body, false)
    }

    /// As [`Script::new`], for a script that writes nothing: its function is registered
    /// with the flag `no-writes`, so Redis runs it when it refuses writes (out of memory,
    /// too few replicas, a failed save), as it ran the plain script, which it stopped only
    /// at a first write.
    pub(crate) fn read_only(helpers: &str, body: &str) -> Self {
        Self::build("", helpers, body, true)
    }

    fn build(settings: &str, helpers: &str, body: &str, read_only: bool) -> Self {
        let helpers = used_helpers(helpers, &format!("begin()\n{body}"));
        let begin = if helpers.contains("\nlocal function begin()") {
            "begin()\n"
        } else {
            ""
        };
        let (library, call) = match body.split_once(CALL_MARK) {
            Some((library, call)) => (format!("{library}\n"), call),
            None => (String::new(), body),
        };
        let flags = if read_only {
            "flags = {'no-writes'}, "
        } else {
            ""
        };
        // (the name is not known until the code is: the function registers under a
        // placeholder of its length, replaced after)
        let code = format!(
            "{settings}{helpers}\n{library}\
             redis.register_function{{function_name = '{PLACEHOLDER}', {flags}\
             callback = function(KEYS, ARGV)\n{begin}{call}\nend}}\n"
        );
        let name = format!("zenrelay_{}", redis::Script::new(&code).get_hash());
        let source = format!(
            "#!lua name={name}\n{}",
            code.replacen(PLACEHOLDER, &name, 1)
        );
        let plain = format!("{settings}{helpers}\n{begin}{body}");
        let sha = redis::Script::new(&plain).get_hash().to_string();
        Script {
            source: source.into(),
            name: name.into(),
            plain: plain.into(),
            sha: sha.into(),
        }
    }

    /// The library's full source, as `FUNCTION LOAD` takes it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The name of the library and of its function.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same code as a plain script, for a store without functions (`EVAL`).
    pub fn plain(&self) -> &str {
        &self.plain
    }

    /// The SHA1 digest of [`Script::plain`], in hex, which `EVALSHA` names it by.
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

/// The line of a script's body under which its function's code starts (see
/// [`Script::new`]).
const CALL_MARK: &str = "\n-- @call\n";

/// What a library's function is registered under until its name is known.
const PLACEHOLDER: &str = "zenrelay_0000000000000000000000000000000000000000";

/// The helpers of `helpers` that `body` calls, directly or through another helper, in
/// their order. A helper is a top-level `local function NAME(...)` up to its closing `end`
/// at the start of a line, with the lines above it since the previous helper (its
/// comments); what precedes the first helper (the prelude: locals every script may use)
/// and what follows the last are always kept.
fn used_helpers(helpers: &str, body: &str) -> String {
    let mut blocks: Vec<(Option<&str>, &str)> = Vec::new();
    let mut start = 0;
    let mut name = None;
    let mut offset = 0;
    for line in helpers.split_inclusive('\n') {
        let end = offset + line.len();
        if let Some(rest) = line.strip_prefix("local function ") {
            if blocks.is_empty() && name.is_none() && start < offset {
                blocks.push((None, &helpers[start..offset]));
                start = offset;
            }
            name = rest.split('(').next().map(str::trim);
        } else if ends_function(line) && name.is_some() {
            blocks.push((name.take(), &helpers[start..end]));
            start = end;
        }
        offset = end;
    }
    blocks.push((None, &helpers[start..]));
    let mut used = vec![false; blocks.len()];
    let mut callers = vec![body];
    while let Some(text) = callers.pop() {
        for (i, (name, block)) in blocks.iter().enumerate() {
            let called = name.map_or(true, |n| calls(text, n));
            if called && !used[i] {
                used[i] = true;
                callers.push(block);
            }
        }
    }
    blocks
        .iter()
        .zip(used)
        .filter(|(_, used)| *used)
        .map(|((_, block), _)| *block)
        .collect()
}

/// Whether `line` is a top-level `end` (perhaps followed by a comment).
fn ends_function(line: &str) -> bool {
    line.strip_prefix("end").is_some_and(|rest| {
        let rest = rest.trim();
        rest.is_empty() || rest.starts_with("--")
    })
}

/// Whether `text` calls the function `name` (`name(` not preceded by a name's character).
fn calls(text: &str, name: &str) -> bool {
    let call = format!("{name}(");
    text.match_indices(&call).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The `FUNCTION LOAD REPLACE` of `script` (a library of the same name holds the same
/// code: replacing it changes nothing, and several processes may load it at once).
pub(crate) fn function_load(script: &Script) -> redis::Cmd {
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("LOAD").arg("REPLACE").arg(script.source());
    cmd
}

/// The `SCRIPT LOAD` of `script`'s plain form, for a store without functions.
pub(crate) fn script_load(script: &Script) -> redis::Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(script.plain());
    cmd
}

/// How a script is called: as the store's function (`FCALL`), as a plain script by its
/// digest (`EVALSHA`), or with its plain source (`EVAL`, after a store without functions
/// answered `NOSCRIPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calling {
    /// `FCALL` of its function.
    Function,
    /// `EVALSHA` of its plain form.
    Sha,
    /// `EVAL` of its plain form.
    Source,
}

/// Whether a store's functions can be used, as a transport found out: until a store
/// refuses `FUNCTION LOAD` or `FCALL` (a Redis before 7.0, or an ACL), scripts are called
/// as functions; after, as plain scripts.
#[derive(Debug, Default)]
pub struct Functions {
    refused: std::sync::atomic::AtomicBool,
    /// When each library was last loaded after a call found it lost: the calls lost at
    /// the same moment wait for one load, and do not each load it again.
    loaded: tokio::sync::Mutex<std::collections::HashMap<Arc<str>, std::time::Instant>>,
}

/// How long after a library was loaded again a call that found it lost is sent again
/// without loading it once more.
const RELOADED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl Functions {
    /// How a call starts.
    pub fn calling(&self) -> Calling {
        if self.refused() {
            Calling::Sha
        } else {
            Calling::Function
        }
    }

    fn refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// After the store answered `e` to an `FCALL` or a `FUNCTION LOAD`: true (and from
    /// now on scripts are called as plain scripts) when it says it takes no functions
    /// (see [`refuses_functions`]), rather than failed for now or refused this library
    /// (which a plain script would not mend).
    pub fn refused_by(&self, e: &redis::RedisError) -> bool {
        let refused = refuses_functions(e);
        if refused
            && !self
                .refused
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                error = %e,
                "the Redis server refuses its functions (a Redis before 7.0, or its ACL): the queue's scripts run as plain scripts, which cost Redis more per call"
            );
        }
        refused
    }

    /// How a script is called after the store answered `reply` to its `FUNCTION LOAD`:
    /// as a function once loaded, as a plain script with its source when the store takes
    /// no functions; an error that says neither is the load's failure.
    pub fn after_load<T>(
        &self,
        reply: Result<T, redis::RedisError>,
    ) -> Result<Calling, redis::RedisError> {
        match reply {
            Ok(_) => Ok(Calling::Function),
            Err(e) if self.refused_by(&e) => Ok(Calling::Source),
            Err(e) => Err(e),
        }
    }

    /// How a script is called after each server that should hold its library (every master
    /// of a Cluster) answered `replies` to its `FUNCTION LOAD` (an error for one that
    /// could not be reached): as a plain script when one says the store takes no
    /// functions; as a function once one loaded it (the others get it when a call finds it
    /// lost there); else the first failure.
    pub fn after_loads<T>(
        &self,
        replies: impl IntoIterator<Item = Result<T, redis::RedisError>>,
    ) -> Result<Calling, redis::RedisError> {
        let mut loaded = false;
        let mut failed = None;
        for reply in replies {
            match self.after_load(reply) {
                Ok(Calling::Function) => loaded = true,
                Ok(calling) => return Ok(calling),
                Err(e) => {
                    tracing::debug!(error = %e, "a server did not load a library");
                    failed.get_or_insert(e);
                }
            }
        }
        if loaded {
            return Ok(Calling::Function);
        }
        Err(failed.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::IoError, "no server to load a library"))
        }))
    }

    /// After a call of `script`, sent as `calling`, was lost with `e` (see `is_lost` in
    /// redis.rs): how to send it again. A plain script, and a function of a store that
    /// refuses functions, go with the plain script's source; else the library is loaded
    /// by `load` (whose reply [`Functions::after_load`] reads), unless a call lost a
    /// moment ago had it loaded already.
    pub async fn reload<F>(
        &self,
        script: &Script,
        calling: Calling,
        e: &redis::RedisError,
        load: impl FnOnce() -> F,
    ) -> Result<Calling, redis::RedisError>
    where
        F: std::future::Future<Output = Result<Calling, redis::RedisError>>,
    {
        if calling != Calling::Function || self.refused() || self.refused_by(e) {
            return Ok(Calling::Source);
        }
        let mut loaded = self.loaded.lock().await;
        if loaded
            .get(script.name())
            .is_some_and(|at| at.elapsed() < RELOADED_FOR)
        {
            return Ok(if self.refused() {
                Calling::Source
            } else {
                Calling::Function
            });
        }
        let calling = load().await?;
        if calling == Calling::Function {
            loaded.insert(script.name.clone(), std::time::Instant::now());
        }
        Ok(calling)
    }
}

/// Whether `e`, a store's answer to an `FCALL` or a `FUNCTION LOAD`, says that it takes no
/// functions at all: an unknown command (a Redis before 7.0) or a user whose ACL refuses
/// them (`NOPERM` naming `fcall` or `function`).
pub fn refuses_functions(e: &redis::RedisError) -> bool {
    let detail = e.detail().unwrap_or_default();
    match e.code() {
        Some("ERR") => {
            detail.starts_with("unknown command") || detail.starts_with("unknown subcommand")
        }
        Some("NOPERM") => detail.contains("'fcall'") || detail.contains("'function"),
        _ => false,
    }
}

/// One call of a script: the partition base (`KEYS[1]` is `{base}:ready`, which routes the
/// call) and `ARGV`.
pub type ScriptCall = (String, Vec<Vec<u8>>);

/// How [`super::script_queue::ScriptQueue`] reaches its store.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Runs several calls of one script, sent in order; one result per call. A transport
    /// may send them in one round trip, but each call is atomic and fails alone: an error,
    /// a redirect or a timeout of one call (one partition) never turns the others' replies
    /// into failures.
    async fn run_script(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>>;

    /// As [`Transport::run_script`], for writes that must be on the configured replicas
    /// before they are reported done (a stored event's 202): a call whose writes the
    /// replicas did not confirm in time fails with [`QueueError::NotReplicated`]. A store
    /// without replicas runs the calls as `run_script` does.
    async fn run_script_replicated(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        self.run_script(script, calls).await
    }

    /// Runs one plain command (outside scripts).
    async fn command(&self, cmd: &redis::Cmd) -> Result<Value, QueueError>;

    /// Runs plain reads (commands on one key each, outside scripts): one result per
    /// command, in order, each failing alone; in one round trip where the transport can.
    /// A read of a key that holds another type (an event's summary, a string, read as a
    /// hash) answers nil: the store refuses it with an error that says nothing of its
    /// health.
    async fn read_each(&self, reads: &[redis::Cmd]) -> Vec<Result<Value, QueueError>> {
        futures::future::join_all(reads.iter().map(|cmd| async move {
            match self.command(cmd).await {
                Err(QueueError::Unavailable(e)) if e.starts_with("WRONGTYPE") => Ok(Value::Nil),
                reply => reply,
            }
        }))
        .await
    }

    /// Where the store is and whether it is durable, for people (no secrets).
    fn describe(&self, prefix: &str, partitions: u16) -> String;

    /// Whether the store answers on every connection requests may use (readiness: a
    /// connection still reconnecting would fail the request that draws it).
    async fn ping(&self) -> Result<(), QueueError> {
        pong(self.command(&redis::cmd("PING")).await?)
    }

    /// Checks the store's own settings at startup (see [`super::Queue::check_deployment`]).
    async fn check_deployment(&self) -> Result<(), QueueError>;

    /// Loads `scripts` into the store (`FUNCTION LOAD`; on a Redis Cluster, into every
    /// master), ahead of their first calls. Redis keeps its functions in its snapshots and
    /// sends them to its replicas; a store that has lost them (a Redis restarted without
    /// persistence, `FUNCTION FLUSH`, a master new to a Cluster) answers a call
    /// `Function not found`, and the transport loads the script again and repeats the call.
    /// A store that refuses functions gets the plain scripts (`SCRIPT LOAD`), and is sent
    /// a script's source when it answers `NOSCRIPT`.
    async fn load_scripts(&self, scripts: &[&Script]) -> Result<(), QueueError>;

    /// Announces `payload` on `channel` (that work was stored), to every process listening
    /// (Redis pub/sub; on a Redis Cluster the cluster bus carries it to every node, so any
    /// node will do).
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), QueueError> {
        self.command(redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
            .map(|_| ())
    }

    /// Listens on `channel`: `subscribed` is called once the subscription holds, then
    /// `message` with each announcement's payload; returns when the subscription breaks.
    /// `None` when the store announces nothing (the embedded store).
    async fn listen(
        &self,
        _channel: &str,
        _subscribed: &(dyn Fn() + Send + Sync),
        _message: &(dyn for<'p> Fn(&'p [u8]) + Send + Sync),
    ) -> Option<QueueError> {
        None
    }

    /// Whether one script call may touch the keys of several partitions: a single Redis
    /// server, whose enqueues then serve accounts of every partition in one call. A Redis
    /// Cluster refuses a script whose keys are in several slots (and the embedded store
    /// holds scripts to that rule, as a test of them).
    fn scripts_span_partitions(&self) -> bool {
        false
    }

    /// Whether the store cannot hold data of a release before layouts were recorded (an
    /// in-process store, or a Redis Cluster, which that release could not use): no
    /// earlier layout is looked for in it.
    fn holds_no_earlier_layout(&self) -> bool {
        false
    }
}

/// Checks a PING's reply.
pub fn pong(reply: Value) -> Result<(), QueueError> {
    match reply {
        Value::SimpleString(s) if s == "PONG" => Ok(()),
        other => Err(QueueError::Protocol(format!("PING answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELPERS_OF_TEST: &str = "-- header\n\
        local count = 0\n\
        local function w(...)\n  return redis.call(...)\nend\n\
        -- now\n\
        local function now()\n  return 1\nend\n\
        local function set(k)\n  w('SET', k, now())\nend\n\
        local function unused()\n  return 2\nend\n";

    /// The library's code without its first line, its name written `NAME`.
    fn code(script: &Script) -> String {
        let source = script.source();
        let (first, code) = source.split_once('\n').expect("a first line");
        assert_eq!(first, format!("#!lua name={}", script.name()));
        code.replace(script.name(), "NAME")
    }

    #[test]
    fn a_script_gets_the_helpers_it_calls_and_theirs_in_order() {
        let script = Script::new(HELPERS_OF_TEST, "set('k')");
        assert_eq!(
            code(&script),
            "-- header\nlocal count = 0\nlocal function w(...)\n  return redis.call(...)\nend\n\
             -- now\nlocal function now()\n  return 1\nend\n\
             local function set(k)\n  w('SET', k, now())\nend\n\n\
             redis.register_function{function_name = 'NAME', callback = function(KEYS, ARGV)\nset('k')\nend}\n"
        );
    }

    #[test]
    fn a_name_inside_another_name_is_not_a_call() {
        let script = Script::new(HELPERS_OF_TEST, "local x = rawset(t, 1)\nreturn 1");
        assert!(
            !script.source().contains("local function"),
            "{}",
            script.source()
        );
        assert!(Script::new(HELPERS_OF_TEST, "return unused()")
            .source()
            .contains("local function unused()"));
    }

    #[test]
    fn the_prelude_is_kept_without_any_helper() {
        let script = Script::new(HELPERS_OF_TEST, "return count");
        assert_eq!(
            code(&script),
            "-- header\nlocal count = 0\n\n\
             redis.register_function{function_name = 'NAME', callback = function(KEYS, ARGV)\nreturn count\nend}\n"
        );
    }

    #[test]
    fn a_helper_may_end_with_a_comment() {
        let helpers =
            "local function a()\n  return 1\nend -- a\nlocal function b()\n  return 2\nend\n";
        assert_eq!(
            code(&Script::new(helpers, "b()")),
            "local function b()\n  return 2\nend\n\n\
             redis.register_function{function_name = 'NAME', callback = function(KEYS, ARGV)\nb()\nend}\n"
        );
    }

    #[test]
    fn every_script_helper_is_found() {
        let all: Vec<&str> = HELPERS
            .lines()
            .filter_map(|l| l.strip_prefix("local function "))
            .filter_map(|rest| rest.split('(').next())
            .collect();
        assert!(all.len() >= 9, "{all:?}");
        let body: String = all.iter().map(|n| format!("{n}()\n")).collect();
        let script = Script::new(HELPERS, &body);
        assert_eq!(
            code(&script),
            format!(
                "{HELPERS}\nredis.register_function{{function_name = 'NAME', \
                 callback = function(KEYS, ARGV)\nbegin()\n{body}\nend}}\n"
            )
        );
    }

    #[test]
    fn what_a_body_holds_above_its_call_mark_is_the_librarys() {
        let script = Script::new(
            HELPERS_OF_TEST,
            "local function twice(x)\n  return 2 * x\nend\n-- @call\nreturn twice(count)",
        );
        assert_eq!(
            code(&script),
            "-- header\nlocal count = 0\n\n\
             local function twice(x)\n  return 2 * x\nend\n\
             redis.register_function{function_name = 'NAME', callback = function(KEYS, ARGV)\n\
             return twice(count)\nend}\n"
        );
        assert!(script
            .plain()
            .ends_with("end\n-- @call\nreturn twice(count)"));
    }

    #[test]
    fn a_script_that_writes_nothing_registers_its_function_without_writes() {
        let script = Script::read_only(HELPERS_OF_TEST, "return count");
        assert_eq!(
            code(&script),
            "-- header\nlocal count = 0\n\n\
             redis.register_function{function_name = 'NAME', flags = {'no-writes'}, \
             callback = function(KEYS, ARGV)\nreturn count\nend}\n"
        );
        assert_ne!(
            script.name(),
            Script::new(HELPERS_OF_TEST, "return count").name()
        );
    }

    fn server_error(code: &str, detail: &str) -> redis::RedisError {
        match code {
            "ERR" => redis::RedisError::from((
                redis::ErrorKind::ResponseError,
                "An error was signalled by the server",
                detail.to_string(),
            )),
            _ => redis::make_extension_error(code.into(), Some(detail.into())),
        }
    }

    #[test]
    fn a_store_refuses_functions_only_when_it_says_it_takes_none() {
        let refusals = [
            (
                "ERR",
                "unknown command 'FCALL', with args beginning with: 'x'",
            ),
            (
                "ERR",
                "unknown command 'FUNCTION', with args beginning with: 'LOAD'",
            ),
            (
                "NOPERM",
                "this user has no permissions to run the 'fcall' command",
            ),
            (
                "NOPERM",
                "this user has no permissions to run the 'function|load' command",
            ),
        ];
        for (code, detail) in refusals {
            assert!(refuses_functions(&server_error(code, detail)), "{detail}");
        }
        let others = [
            ("ERR", "Function not found"),
            (
                "ERR",
                "Error registering functions: user_function:3: unexpected symbol",
            ),
            (
                "NOPERM",
                "this user has no permissions to run the 'hset' command",
            ),
            ("OOM", "command not allowed when used memory > 'maxmemory'."),
        ];
        for (code, detail) in others {
            assert!(!refuses_functions(&server_error(code, detail)), "{detail}");
        }
    }

    #[test]
    fn a_library_loaded_by_one_master_serves_and_by_none_fails() {
        let functions = Functions::default();
        let loaded = || Ok::<_, redis::RedisError>(());
        let full = || Err(server_error("OOM", "command not allowed when used memory"));
        let down = || {
            Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "unreachable master",
            )))
        };
        // one master loaded it, another is out of memory, a third down: called as a function
        let some = functions.after_loads([loaded(), full(), down()]);
        assert_eq!(some.ok(), Some(Calling::Function));
        // none loaded it: the first failure
        let none = functions.after_loads([full(), down()]);
        assert_eq!(
            none.map_err(|e| e.code().map(str::to_owned)),
            Err(Some("OOM".into()))
        );
        assert!(functions.after_loads(Vec::<Result<(), _>>::new()).is_err());
        assert_eq!(functions.calling(), Calling::Function);
        // one says it takes no functions: plain scripts, from then on
        let refused = Err(server_error("ERR", "unknown command 'FUNCTION'"));
        let plain = functions.after_loads([loaded(), refused]);
        assert_eq!(plain.ok(), Some(Calling::Source));
        assert_eq!(functions.calling(), Calling::Sha);
    }

    #[tokio::test]
    async fn calls_lost_at_once_load_the_library_once() {
        let functions = Functions::default();
        let script = Script::new(HELPERS_OF_TEST, "return 1");
        let lost = server_error("ERR", "Function not found");
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Calling::Function)
        };
        let (a, b) = tokio::join!(
            functions.reload(&script, Calling::Function, &lost, load),
            functions.reload(&script, Calling::Function, &lost, load),
        );
        assert_eq!(
            (a.ok(), b.ok()),
            (Some(Calling::Function), Some(Calling::Function))
        );
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1);
        // a plain script lost goes with its source, and nothing is loaded
        let again = functions.reload(&script, Calling::Sha, &lost, load).await;
        assert_eq!(again.ok(), Some(Calling::Source));
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1);
        // a store that takes no functions: the source, from then on
        let refused = server_error("ERR", "unknown command 'FCALL'");
        let other = Script::new(HELPERS_OF_TEST, "return 2");
        let after = functions
            .reload(&other, Calling::Function, &refused, load)
            .await;
        assert_eq!(after.ok(), Some(Calling::Source));
        assert_eq!(functions.calling(), Calling::Sha);
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_library_is_named_for_its_code_and_its_function_for_it() {
        let script = Script::new(HELPERS_OF_TEST, "set('k')");
        let name = script.name();
        assert!(name.starts_with("zenrelay_"), "{name}");
        assert_eq!(name.len(), "zenrelay_".len() + 40);
        assert!(script.source().starts_with(&format!("#!lua name={name}\n")));
        assert!(script.source().contains(&format!(
            "redis.register_function{{function_name = '{name}', "
        )));
        let other = Script::new(HELPERS_OF_TEST, "set('j')");
        assert_ne!(other.name(), name);
        assert_eq!(Script::new(HELPERS_OF_TEST, "set('k')").name(), name);
    }
}

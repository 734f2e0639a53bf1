//! An in-process key-value store that answers the Redis commands the queue's Lua scripts
//! send, with Redis's replies and errors: the storage of the embedded backend
//! ([`super::memory`]).
//!
//! It knows nothing of the queue. It implements, for strings, hashes, lists, sorted sets
//! and sets, exactly the commands listed in [`Store::command`] with the options the
//! scripts use, plus the few the gateway sends outside scripts and the inspection
//! commands (`KEYS`, `TYPE`, `PTTL`, `DBSIZE`) tests use to compare it with Redis. Any other
//! command or option is refused with an error naming it, never ignored.
//!
//! As in Redis, an empty hash, list, sorted set or set does not exist (the key is
//! removed with its last member), a key can expire (`PEXPIRE`, `SET ... EX`), an expired
//! key is never seen again, and a command on a key of another type answers `WRONGTYPE`.
//! Time is given by the caller ([`Store::set_now`]): the embedded backend sets it once per
//! script from its clock, so keys never expire in the middle of a script, as in Redis.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use redis::Value;

/// A command error, as Redis words it (`ERR ...`, `WRONGTYPE ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Reply = Result<Value, CommandError>;

fn err(msg: impl Into<String>) -> CommandError {
    CommandError(msg.into())
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Largest set answered whole by one `SSCAN` call, whatever its `COUNT`: Redis does so
/// for a compact set (an intset, or from 7.2 a listpack of up to 128 members), and any
/// Redis does so for a set smaller than the `COUNT` (all the queue's scans ask for 16 or
/// more: a partition's accounts below that compare exactly with Redis).
const SMALL_SET_MAX: usize = 128;

/// A sorted-set score with a total order (Redis never stores NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members ordered by score, then by their bytes, as in Redis.
#[derive(Debug, Default, Clone)]
struct ZSet {
    scores: HashMap<Vec<u8>, Score>,
    order: BTreeSet<(Score, Vec<u8>)>,
}

impl ZSet {
    fn insert(&mut self, member: &[u8], score: f64) {
        let score = Score(score);
        if let Some(old) = self.scores.insert(member.to_vec(), score) {
            self.order.remove(&(old, member.to_vec()));
        }
        self.order.insert((score, member.to_vec()));
    }

    /// The members within a score range (parsed by `parse_bound`: a bound and whether it
    /// is open), in order.
    fn by_score(
        &self,
        (min, min_open): (f64, bool),
        (max, max_open): (f64, bool),
    ) -> impl Iterator<Item = &(Score, Vec<u8>)> {
        // From the first member at `min`, in order, while at most `max`.
        self.order
            .range((Bound::Included((Score(min), Vec::new())), Bound::Unbounded))
            .skip_while(move |(s, _)| min_open && s.0 <= min)
            .take_while(move |(s, _)| if max_open { s.0 < max } else { s.0 <= max })
    }

    /// A member's score as Redis answers it (`ZSCORE`, `ZMSCORE`).
    fn score_text(&self, member: &[u8]) -> Option<String> {
        self.scores.get(member).map(|s| format_g17(s.0))
    }

    fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(old) => {
                self.order.remove(&(old, member.to_vec()));
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
enum Data {
    Str(Vec<u8>),
    Hash(HashMap<Vec<u8>, Vec<u8>>),
    List(VecDeque<Vec<u8>>),
    ZSet(ZSet),
    Set(HashSet<Vec<u8>>),
}

impl Data {
    fn is_empty(&self) -> bool {
        match self {
            Data::Str(_) => false,
            Data::Hash(h) => h.is_empty(),
            Data::List(l) => l.is_empty(),
            Data::ZSet(z) => z.scores.is_empty(),
            Data::Set(s) => s.is_empty(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
            Data::List(_) => "list",
            Data::ZSet(_) => "zset",
            Data::Set(_) => "set",
        }
    }
}

#[derive(Debug)]
struct Entry {
    data: Data,
    /// Unix ms after which the key is gone.
    expires_at: Option<u64>,
}

/// The keyspace.
#[derive(Debug, Default)]
pub struct Store {
    keys: HashMap<Vec<u8>, Entry>,
    /// (expiry, key) of every key with a time to live, to drop them when due.
    expiries: BTreeSet<(u64, Vec<u8>)>,
    now_us: u64,
    /// While a script runs: the Redis Cluster slot of its first key, which every key it
    /// touches must share (see [`Store::enter_script`]).
    script_slot: Option<u16>,
}

/// How a command finds its key's value.
enum Want {
    Read,
    Create,
}

macro_rules! typed {
    ($name:ident, $variant:ident, $ty:ty, $new:expr) => {
        /// The value of `key` if it has this type; `Create` makes an empty one.
        fn $name(&mut self, key: &[u8], want: Want) -> Result<Option<&mut $ty>, CommandError> {
            if !self.keys.contains_key(key) {
                match want {
                    Want::Read => return Ok(None),
                    Want::Create => {
                        self.keys.insert(
                            key.to_vec(),
                            Entry {
                                data: Data::$variant($new),
                                expires_at: None,
                            },
                        );
                    }
                }
            }
            match self.keys.get_mut(key).map(|e| &mut e.data) {
                Some(Data::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(err(WRONGTYPE)),
                None => Ok(None),
            }
        }
    };
}

impl Store {
    /// An empty keyspace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the time (Unix µs) of the commands that follow and drops the keys whose time
    /// to live has passed.
    pub fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
        let now_ms = self.now_ms();
        while let Some((at, _)) = self.expiries.first() {
            if *at > now_ms {
                break;
            }
            if let Some((_, key)) = self.expiries.pop_first() {
                self.keys.remove(&key);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    typed!(hash, Hash, HashMap<Vec<u8>, Vec<u8>>, HashMap::new());
    typed!(list, List, VecDeque<Vec<u8>>, VecDeque::new());
    typed!(zset, ZSet, ZSet, ZSet::default());
    typed!(set, Set, HashSet<Vec<u8>>, HashSet::new());

    /// Removes `key` if its container became empty (Redis never keeps empty ones).
    fn drop_if_empty(&mut self, key: &[u8]) {
        if self.keys.get(key).is_some_and(|e| e.data.is_empty()) {
            self.delete(key);
        }
    }

    fn delete(&mut self, key: &[u8]) -> bool {
        match self.keys.remove(key) {
            Some(entry) => {
                if let Some(at) = entry.expires_at {
                    self.expiries.remove(&(at, key.to_vec()));
                }
                true
            }
            None => false,
        }
    }

    fn set_expiry(&mut self, key: &[u8], at: Option<u64>) {
        if let Some(entry) = self.keys.get_mut(key) {
            if let Some(old) = entry.expires_at.take() {
                self.expiries.remove(&(old, key.to_vec()));
            }
            entry.expires_at = at;
            if let Some(at) = at {
                self.expiries.insert((at, key.to_vec()));
            }
        }
    }

    /// From now until [`Store::leave_script`], every key a command touches must be in the
    /// Redis Cluster slot of `first_key` (a script's `KEYS[1]`, which routes it in a
    /// cluster), or the command fails as it would on a cluster node. The store has no
    /// cluster, but holding every script to the rule keeps them runnable on one.
    pub fn enter_script(&mut self, first_key: Option<&[u8]>) {
        self.script_slot = first_key.map(key_slot);
    }

    /// Ends [`Store::enter_script`].
    pub fn leave_script(&mut self) {
        self.script_slot = None;
    }

    /// Fails a command of a script that touches a key outside the script's slot.
    fn check_slot(&self, name: &str, args: &[Vec<u8>]) -> Result<(), CommandError> {
        let Some(slot) = self.script_slot else {
            return Ok(());
        };
        let keys: &[Vec<u8>] = match name {
            "PING" | "TIME" | "DBSIZE" | "KEYS" => &[],
            "DEL" | "EXISTS" => args,
            _ => args.get(..1).unwrap_or(&[]),
        };
        match keys.iter().find(|key| key_slot(key) != slot) {
            None => Ok(()),
            Some(key) => Err(err(format!(
                "ERR Script attempted to access a non local key in a cluster node: {} (slot {}, the script's slot {slot})",
                String::from_utf8_lossy(key),
                key_slot(key)
            ))),
        }
    }

    /// Runs one command (name first, case-insensitive) and answers as Redis would.
    ///
    /// Implemented: `DEL EXISTS PEXPIRE PERSIST PTTL TYPE KEYS DBSIZE` (keys), `GET SET`
    /// (strings; `SET` with `EX`/`PX`/`NX`), `HSET HSETNX HGET HMGET HDEL HINCRBY HGETALL`
    /// (hashes), `LPUSH RPUSH LPOP LINDEX LPOS` (with `RANK`/`COUNT`/`MAXLEN`) `LSET LREM
    /// LTRIM LRANGE LLEN` (lists), `ZADD` (with `NX`/`XX`/`CH`) `ZREM ZSCORE ZMSCORE ZCARD ZRANGE
    /// ZRANGEBYSCORE` (with `WITHSCORES`, `LIMIT`) (sorted sets), `SADD SREM SMEMBERS
    /// SCARD SSCAN` (with `COUNT`) (sets), `TIME PING`.
    pub fn command(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some((name, args)) = args.split_first() else {
            return Err(err("ERR empty command"));
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        self.check_slot(&name, args)?;
        match name.as_str() {
            "PING" | "TIME" | "DBSIZE" | "KEYS" | "TYPE" | "PTTL" | "DEL" | "EXISTS"
            | "PEXPIRE" | "PERSIST" => self.keyspace(&name, args),
            "GET" | "SET" => self.strings(&name, args),
            "HSET" | "HSETNX" | "HGET" | "HMGET" | "HGETALL" | "HDEL" | "HINCRBY" => {
                self.hashes(&name, args)
            }
            "LPUSH" | "RPUSH" | "LPOP" | "LLEN" | "LPOS" | "LINDEX" | "LSET" | "LREM" | "LTRIM"
            | "LRANGE" => self.lists(&name, args),
            "ZADD" | "ZREM" | "ZSCORE" | "ZMSCORE" | "ZCARD" | "ZRANGE" | "ZRANGEBYSCORE"
            | "ZREMRANGEBYSCORE" | "ZRANK" | "ZCOUNT" => self.sorted_sets(&name, args),
            "SADD" | "SREM" | "SSCAN" | "SCARD" | "SMEMBERS" | "SISMEMBER" => {
                self.sets(&name, args)
            }
            _ => Err(unknown(&name)),
        }
    }

    /// Commands on keys and the server: `PING TIME DBSIZE KEYS TYPE PTTL DEL EXISTS PEXPIRE PERSIST`.
    fn keyspace(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let arity = |min, even_after| check_arity(name, args, min, even_after);
        match name {
            "PING" => Ok(Value::SimpleString("PONG".into())),
            "TIME" => Ok(Value::Array(vec![
                bulk((self.now_us / 1_000_000).to_string()),
                bulk((self.now_us % 1_000_000).to_string()),
            ])),
            "DBSIZE" => Ok(Value::Int(self.keys.len() as i64)),
            "KEYS" => {
                arity(1, None)?;
                if args[0] != b"*" {
                    return Err(err(
                        "ERR KEYS supports only the pattern '*' in embedded store",
                    ));
                }
                let mut keys: Vec<&Vec<u8>> = self.keys.keys().collect();
                keys.sort();
                Ok(Value::Array(
                    keys.into_iter().map(|k| bulk(k.clone())).collect(),
                ))
            }
            "TYPE" => {
                arity(1, None)?;
                let t = self
                    .keys
                    .get(&args[0])
                    .map_or("none", |e| e.data.type_name());
                Ok(Value::SimpleString(t.into()))
            }
            "PTTL" => {
                arity(1, None)?;
                let now = self.now_ms();
                Ok(Value::Int(match self.keys.get(&args[0]) {
                    None => -2,
                    Some(Entry {
                        expires_at: None, ..
                    }) => -1,
                    Some(Entry {
                        expires_at: Some(at),
                        ..
                    }) => at.saturating_sub(now) as i64,
                }))
            }
            "DEL" => {
                arity(1, None)?;
                Ok(Value::Int(
                    args.iter().filter(|k| self.delete(k)).count() as i64
                ))
            }
            "EXISTS" => {
                arity(1, None)?;
                Ok(Value::Int(
                    args.iter().filter(|k| self.keys.contains_key(*k)).count() as i64,
                ))
            }
            "PEXPIRE" => {
                arity(2, None)?;
                if args.len() > 2 {
                    return Err(unsupported(name, &args[2]));
                }
                let ms = parse_i64(&args[1])?;
                if !self.keys.contains_key(&args[0]) {
                    return Ok(Value::Int(0));
                }
                if ms <= 0 {
                    self.delete(&args[0]);
                } else {
                    let at = self.now_ms().saturating_add(ms as u64);
                    self.set_expiry(&args[0], Some(at));
                }
                Ok(Value::Int(1))
            }
            "PERSIST" => {
                arity(1, None)?;
                let had = self
                    .keys
                    .get(&args[0])
                    .is_some_and(|e| e.expires_at.is_some());
                if had {
                    self.set_expiry(&args[0], None);
                }
                Ok(Value::Int(i64::from(had)))
            }
            _ => Err(unknown(name)),
        }
    }

    /// String commands: `GET SET` (`SET` with `EX`/`PX`/`NX`).
    fn strings(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let arity = |min, even_after| check_arity(name, args, min, even_after);
        match name {
            "GET" => {
                arity(1, None)?;
                match self.keys.get(&args[0]).map(|e| &e.data) {
                    None => Ok(Value::Nil),
                    Some(Data::Str(s)) => Ok(bulk(s.clone())),
                    Some(_) => Err(err(WRONGTYPE)),
                }
            }
            "SET" => {
                arity(2, None)?;
                let mut ttl_ms = None;
                let mut nx = false;
                let mut i = 2;
                while i < args.len() {
                    let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
                    match opt.as_str() {
                        "NX" => {
                            nx = true;
                            i += 1;
                        }
                        "EX" | "PX" if ttl_ms.is_some() => return Err(err(SYNTAX)),
                        "EX" | "PX" => {
                            let v = parse_i64(args.get(i + 1).ok_or_else(|| err(SYNTAX))?)?;
                            if v <= 0 {
                                return Err(err("ERR invalid expire time in 'set' command"));
                            }
                            let v = v as u64;
                            ttl_ms = Some(if opt == "EX" { v * 1000 } else { v });
                            i += 2;
                        }
                        _ => return Err(unsupported(name, &args[i])),
                    }
                }
                if nx && self.keys.contains_key(&args[0]) {
                    return Ok(Value::Nil);
                }
                self.delete(&args[0]);
                self.keys.insert(
                    args[0].clone(),
                    Entry {
                        data: Data::Str(args[1].clone()),
                        expires_at: None,
                    },
                );
                if let Some(ttl) = ttl_ms {
                    let at = self.now_ms() + ttl;
                    self.set_expiry(&args[0], Some(at));
                }
                Ok(Value::Okay)
            }
            _ => Err(unknown(name)),
        }
    }

    /// Hash commands: `HSET HSETNX HGET HMGET HGETALL HDEL HINCRBY`.
    fn hashes(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let arity = |min, even_after| check_arity(name, args, min, even_after);
        match name {
            "HSET" => {
                arity(3, Some(1))?;
                let h = self.hash(&args[0], Want::Create)?.expect("created");
                let added = args[1..]
                    .chunks(2)
                    .filter(|p| h.insert(p[0].clone(), p[1].clone()).is_none())
                    .count();
                Ok(Value::Int(added as i64))
            }
            "HSETNX" => {
                arity(3, None)?;
                if args.len() != 3 {
                    return Err(err("ERR wrong number of arguments for 'hsetnx' command"));
                }
                let h = self.hash(&args[0], Want::Create)?.expect("created");
                if h.contains_key(&args[1]) {
                    return Ok(Value::Int(0));
                }
                h.insert(args[1].clone(), args[2].clone());
                Ok(Value::Int(1))
            }
            "HGET" => {
                arity(2, None)?;
                if args.len() != 2 {
                    return Err(err("ERR wrong number of arguments for 'hget' command"));
                }
                Ok(opt_bulk(
                    self.hash(&args[0], Want::Read)?
                        .and_then(|h| h.get(&args[1]).cloned()),
                ))
            }
            "HMGET" => {
                arity(2, None)?;
                let h = self.hash(&args[0], Want::Read)?;
                Ok(Value::Array(
                    args[1..]
                        .iter()
                        .map(|f| opt_bulk(h.as_ref().and_then(|h| h.get(f).cloned())))
                        .collect(),
                ))
            }
            "HGETALL" => {
                arity(1, None)?;
                let mut out = Vec::new();
                if let Some(h) = self.hash(&args[0], Want::Read)? {
                    let mut pairs: Vec<_> = h.iter().collect();
                    pairs.sort();
                    for (f, v) in pairs {
                        out.push(bulk(f.clone()));
                        out.push(bulk(v.clone()));
                    }
                }
                Ok(Value::Array(out))
            }
            "HDEL" => {
                arity(2, None)?;
                let removed = match self.hash(&args[0], Want::Read)? {
                    Some(h) => args[1..].iter().filter(|f| h.remove(*f).is_some()).count(),
                    None => 0,
                };
                self.drop_if_empty(&args[0]);
                Ok(Value::Int(removed as i64))
            }
            "HINCRBY" => {
                arity(3, None)?;
                let by = parse_i64(&args[2])?;
                let h = self.hash(&args[0], Want::Create)?.expect("created");
                let old = match h.get(&args[1]) {
                    Some(v) => parse_i64(v).map_err(|_| err("ERR hash value is not an integer"))?,
                    None => 0,
                };
                let new = old
                    .checked_add(by)
                    .ok_or_else(|| err("ERR increment or decrement would overflow"))?;
                h.insert(args[1].clone(), new.to_string().into_bytes());
                Ok(Value::Int(new))
            }
            _ => Err(unknown(name)),
        }
    }

    /// List commands: `LPUSH RPUSH LPOP LLEN LPOS LINDEX LSET LREM LTRIM LRANGE`.
    fn lists(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let arity = |min, even_after| check_arity(name, args, min, even_after);
        match name {
            "LPUSH" | "RPUSH" => {
                arity(2, None)?;
                let l = self.list(&args[0], Want::Create)?.expect("created");
                for v in &args[1..] {
                    if name == "LPUSH" {
                        l.push_front(v.clone());
                    } else {
                        l.push_back(v.clone());
                    }
                }
                Ok(Value::Int(l.len() as i64))
            }
            "LPOP" => {
                arity(1, None)?;
                if args.len() > 1 {
                    return Err(unsupported(name, &args[1]));
                }
                let v = self.list(&args[0], Want::Read)?.and_then(|l| l.pop_front());
                self.drop_if_empty(&args[0]);
                Ok(opt_bulk(v))
            }
            "LLEN" => {
                arity(1, None)?;
                Ok(Value::Int(
                    self.list(&args[0], Want::Read)?.map_or(0, |l| l.len()) as i64,
                ))
            }
            "LPOS" => self.lpos(name, args),
            "LINDEX" => {
                arity(2, None)?;
                let i = parse_i64(&args[1])?;
                let l = self.list(&args[0], Want::Read)?;
                Ok(opt_bulk(l.and_then(|l| {
                    index(i, l.len()).and_then(|i| l.get(i).cloned())
                })))
            }
            "LSET" => {
                arity(3, None)?;
                let i = parse_i64(&args[1])?;
                let Some(l) = self.list(&args[0], Want::Read)? else {
                    return Err(err("ERR no such key"));
                };
                let slot = index(i, l.len())
                    .and_then(|i| l.get_mut(i))
                    .ok_or_else(|| err("ERR index out of range"))?;
                *slot = args[2].clone();
                Ok(Value::Okay)
            }
            "LREM" => {
                arity(3, None)?;
                let count = parse_i64(&args[1])?;
                let Some(l) = self.list(&args[0], Want::Read)? else {
                    return Ok(Value::Int(0));
                };
                let limit = if count == 0 {
                    usize::MAX
                } else {
                    count.unsigned_abs() as usize
                };
                let mut removed = 0;
                if count >= 0 {
                    let mut i = 0;
                    while i < l.len() && removed < limit {
                        if l[i] == args[2] {
                            l.remove(i);
                            removed += 1;
                        } else {
                            i += 1;
                        }
                    }
                } else {
                    let mut i = l.len();
                    while i > 0 && removed < limit {
                        i -= 1;
                        if l[i] == args[2] {
                            l.remove(i);
                            removed += 1;
                        }
                    }
                }
                self.drop_if_empty(&args[0]);
                Ok(Value::Int(removed as i64))
            }
            "LTRIM" => {
                arity(3, None)?;
                let (start, stop) = (parse_i64(&args[1])?, parse_i64(&args[2])?);
                if let Some(l) = self.list(&args[0], Want::Read)? {
                    match range(start, stop, l.len()) {
                        Some((a, b)) => {
                            l.truncate(b + 1);
                            l.drain(..a);
                        }
                        None => l.clear(),
                    }
                }
                self.drop_if_empty(&args[0]);
                Ok(Value::Okay)
            }
            "LRANGE" => {
                arity(3, None)?;
                let (start, stop) = (parse_i64(&args[1])?, parse_i64(&args[2])?);
                let l = self.list(&args[0], Want::Read)?;
                Ok(Value::Array(match l {
                    Some(l) => match range(start, stop, l.len()) {
                        Some((a, b)) => l.range(a..=b).map(|v| bulk(v.clone())).collect(),
                        None => Vec::new(),
                    },
                    None => Vec::new(),
                }))
            }
            _ => Err(unknown(name)),
        }
    }

    /// Sorted-set commands: `ZADD ZREM ZSCORE ZMSCORE ZCARD ZRANGE ZRANGEBYSCORE
    /// ZREMRANGEBYSCORE ZRANK ZCOUNT`.
    fn sorted_sets(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let arity = |min, even_after| check_arity(name, args, min, even_after);
        match name {
            "ZADD" => self.zadd(name, args),
            "ZREM" => {
                arity(2, None)?;
                let removed = match self.zset(&args[0], Want::Read)? {
                    Some(z) => args[1..].iter().filter(|m| z.remove(m)).count(),
                    None => 0,
                };
                self.drop_if_empty(&args[0]);
                Ok(Value::Int(removed as i64))
            }
            "ZSCORE" => {
                arity(2, None)?;
                let z = self.zset(&args[0], Want::Read)?;
                Ok(opt_bulk(z.and_then(|z| z.score_text(&args[1]))))
            }
            "ZMSCORE" => {
                arity(2, None)?;
                let z = self.zset(&args[0], Want::Read)?;
                Ok(Value::Array(
                    args[1..]
                        .iter()
                        .map(|m| opt_bulk(z.as_ref().and_then(|z| z.score_text(m))))
                        .collect(),
                ))
            }
            "ZCARD" => {
                arity(1, None)?;
                Ok(Value::Int(
                    self.zset(&args[0], Want::Read)?
                        .map_or(0, |z| z.scores.len()) as i64,
                ))
            }
            "ZRANGE" => {
                arity(3, None)?;
                let (start, stop) = (parse_i64(&args[1])?, parse_i64(&args[2])?);
                let with_scores = match &args[3..] {
                    [] => false,
                    [o] if o.eq_ignore_ascii_case(b"WITHSCORES") => true,
                    [o, ..] => return Err(unsupported(name, o)),
                };
                let z = self.zset(&args[0], Want::Read)?;
                let mut out = Vec::new();
                if let Some(z) = z {
                    if let Some((a, b)) = range(start, stop, z.order.len()) {
                        for (score, member) in z.order.iter().skip(a).take(b + 1 - a) {
                            push_member(&mut out, member, *score, with_scores);
                        }
                    }
                }
                Ok(Value::Array(out))
            }
            "ZRANGEBYSCORE" => {
                arity(3, None)?;
                let (min, min_open) = parse_bound(&args[1])?;
                let (max, max_open) = parse_bound(&args[2])?;
                let mut with_scores = false;
                let (mut offset, mut count) = (0usize, None::<usize>);
                let mut i = 3;
                while i < args.len() {
                    if args[i].eq_ignore_ascii_case(b"WITHSCORES") {
                        with_scores = true;
                        i += 1;
                    } else if args[i].eq_ignore_ascii_case(b"LIMIT") && i + 2 < args.len() {
                        let (o, c) = (parse_i64(&args[i + 1])?, parse_i64(&args[i + 2])?);
                        if o < 0 {
                            return Ok(Value::Array(Vec::new()));
                        }
                        offset = o as usize;
                        count = (c >= 0).then_some(c as usize);
                        i += 3;
                    } else {
                        return Err(err(SYNTAX));
                    }
                }
                let z = self.zset(&args[0], Want::Read)?;
                let mut out = Vec::new();
                if let Some(z) = z {
                    let within = z.by_score((min, min_open), (max, max_open));
                    for (score, member) in within.skip(offset).take(count.unwrap_or(usize::MAX)) {
                        push_member(&mut out, member, *score, with_scores);
                    }
                }
                Ok(Value::Array(out))
            }
            "ZRANK" => {
                arity(2, None)?;
                if args.len() > 2 {
                    return Err(err(SYNTAX));
                }
                let z = self.zset(&args[0], Want::Read)?;
                let rank = z.and_then(|z| {
                    let score = *z.scores.get(&args[1])?;
                    Some(z.order.range(..(score, args[1].clone())).count())
                });
                Ok(rank.map_or(Value::Nil, |r| Value::Int(r as i64)))
            }
            "ZCOUNT" => {
                arity(3, None)?;
                if args.len() > 3 {
                    return Err(err("ERR wrong number of arguments for 'zcount' command"));
                }
                let (min, max) = (parse_bound(&args[1])?, parse_bound(&args[2])?);
                let count = self
                    .zset(&args[0], Want::Read)?
                    .map_or(0, |z| z.by_score(min, max).count());
                Ok(Value::Int(count as i64))
            }
            "ZREMRANGEBYSCORE" => {
                // exactly a key and two bounds, as in Redis
                arity(3, None)?;
                if args.len() > 3 {
                    return Err(err(
                        "ERR wrong number of arguments for 'zremrangebyscore' command",
                    ));
                }
                let (min, max) = (parse_bound(&args[1])?, parse_bound(&args[2])?);
                let removed = match self.zset(&args[0], Want::Read)? {
                    Some(z) => {
                        let gone: Vec<Vec<u8>> =
                            z.by_score(min, max).map(|(_, m)| m.clone()).collect();
                        for m in &gone {
                            z.remove(m);
                        }
                        gone.len()
                    }
                    None => 0,
                };
                self.drop_if_empty(&args[0]);
                Ok(Value::Int(removed as i64))
            }
            _ => Err(unknown(name)),
        }
    }

    /// Set commands: `SADD SREM SSCAN SCARD SMEMBERS SISMEMBER`.
    fn sets(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let arity = |min, even_after| check_arity(name, args, min, even_after);
        match name {
            "SADD" => {
                arity(2, None)?;
                let s = self.set(&args[0], Want::Create)?.expect("created");
                Ok(Value::Int(
                    args[1..].iter().filter(|m| s.insert(m.to_vec())).count() as i64,
                ))
            }
            "SREM" => {
                arity(2, None)?;
                let removed = match self.set(&args[0], Want::Read)? {
                    Some(s) => args[1..].iter().filter(|m| s.remove(*m)).count(),
                    None => 0,
                };
                self.drop_if_empty(&args[0]);
                Ok(Value::Int(removed as i64))
            }
            "SSCAN" => self.sscan(name, args),
            "SISMEMBER" => {
                arity(2, None)?;
                if args.len() > 2 {
                    return Err(err("ERR wrong number of arguments for 'sismember' command"));
                }
                let found = self
                    .set(&args[0], Want::Read)?
                    .is_some_and(|s| s.contains(&args[1]));
                Ok(Value::Int(i64::from(found)))
            }
            "SCARD" => {
                arity(1, None)?;
                Ok(Value::Int(
                    self.set(&args[0], Want::Read)?.map_or(0, |s| s.len()) as i64,
                ))
            }
            "SMEMBERS" => {
                arity(1, None)?;
                let mut members: Vec<Vec<u8>> = self
                    .set(&args[0], Want::Read)?
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                members.sort();
                Ok(Value::Array(members.into_iter().map(bulk).collect()))
            }
            _ => Err(unknown(name)),
        }
    }

    /// `LPOS key element [RANK r] [COUNT n] [MAXLEN len]`: the index of the first match
    /// among the first `len` entries (or nil); with `COUNT`, an array of up to `n`
    /// indices (0: all). A negative rank searches from the tail.
    fn lpos(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        if args.len() < 2 {
            return Err(err("ERR wrong number of arguments for 'lpos' command"));
        }
        let (mut rank, mut count, mut maxlen) = (1i64, None::<i64>, 0i64);
        let mut i = 2;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            let value = args.get(i + 1).ok_or_else(|| err(SYNTAX))?;
            let v = parse_i64(value)?;
            match opt.as_str() {
                "RANK" if v == 0 || v == i64::MIN => {
                    return Err(err(
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from \
                         the second ... or use negative to start from the end of the list",
                    ))
                }
                "RANK" => rank = v,
                "COUNT" if v < 0 => return Err(err("ERR COUNT can't be negative")),
                "COUNT" => count = Some(v),
                "MAXLEN" if v < 0 => return Err(err("ERR MAXLEN can't be negative")),
                "MAXLEN" => maxlen = v,
                _ => return Err(unsupported(name, &args[i])),
            }
            i += 2;
        }
        let l = self.list(&args[0], Want::Read)?;
        let Some(l) = l else {
            return Ok(if count.is_some() {
                Value::Array(Vec::new())
            } else {
                Value::Nil
            });
        };
        let len = l.len();
        let scan = if maxlen == 0 {
            len
        } else {
            len.min(maxlen as usize)
        };
        let indices: Box<dyn Iterator<Item = usize>> = if rank > 0 {
            Box::new(0..scan)
        } else {
            Box::new((len - scan..len).rev())
        };
        let mut skip = rank.unsigned_abs() - 1;
        let want = match count {
            None => 1,
            Some(0) => usize::MAX,
            Some(n) => n as usize,
        };
        let mut found = Vec::new();
        for i in indices {
            if l[i] != args[1] {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(Value::Int(i as i64));
            if found.len() >= want {
                break;
            }
        }
        Ok(match count {
            Some(_) => Value::Array(found),
            None => found.pop().unwrap_or(Value::Nil),
        })
    }

    /// `SSCAN key cursor [COUNT n]`. A set of up to [`SMALL_SET_MAX`] members is
    /// answered whole with cursor `0`, whatever `COUNT` says; a larger one is walked in the
    /// order of a fixed 64-bit hash of its members, the cursor being the hash to go on from.
    /// As Redis guarantees, every member present for the whole scan is returned, whatever
    /// is added or removed meanwhile (members sharing a hash come in one page).
    fn sscan(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        if args.len() < 2 {
            return Err(err("ERR wrong number of arguments for 'sscan' command"));
        }
        let cursor = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
            .ok_or_else(|| err("ERR invalid cursor"))?;
        let mut count = 10usize;
        let mut i = 2;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"COUNT") {
                let v = parse_i64(args.get(i + 1).ok_or_else(|| err(SYNTAX))?)?;
                if v < 1 {
                    return Err(err(SYNTAX));
                }
                count = v as usize;
                i += 2;
            } else if args[i].eq_ignore_ascii_case(b"MATCH")
                || args[i].eq_ignore_ascii_case(b"TYPE")
            {
                return Err(unsupported(name, &args[i]));
            } else {
                return Err(err(SYNTAX));
            }
        }
        let Some(set) = self.set(&args[0], Want::Read)? else {
            return Ok(Value::Array(vec![bulk("0"), Value::Array(Vec::new())]));
        };
        let (page, next) = if set.len() <= SMALL_SET_MAX {
            let mut members: Vec<Vec<u8>> = set.iter().cloned().collect();
            members.sort();
            (members, 0)
        } else {
            let mut ahead: Vec<(u64, &Vec<u8>)> = set
                .iter()
                .map(|m| (scan_hash(m), m))
                .filter(|(h, _)| *h >= cursor)
                .collect();
            ahead.sort();
            let mut end = count.min(ahead.len());
            // members sharing the last hash all come now: the cursor cannot split them
            while end > 0 && end < ahead.len() && ahead[end].0 == ahead[end - 1].0 {
                end += 1;
            }
            let next = match ahead.get(end) {
                Some(_) => ahead[end - 1].0 + 1,
                None => 0,
            };
            (
                ahead[..end].iter().map(|(_, m)| (*m).clone()).collect(),
                next,
            )
        };
        Ok(Value::Array(vec![
            bulk(next.to_string()),
            Value::Array(page.into_iter().map(bulk).collect()),
        ]))
    }

    fn zadd(&mut self, name: &str, args: &[Vec<u8>]) -> Reply {
        let (mut nx, mut xx, mut ch) = (false, false, false);
        let mut i = 1;
        while let Some(opt) = args.get(i) {
            match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "CH" => ch = true,
                "GT" | "LT" | "INCR" => return Err(unsupported(name, opt)),
                _ => break,
            }
            i += 1;
        }
        let pairs = args.get(i..).unwrap_or(&[]);
        if args.is_empty() || pairs.is_empty() || pairs.len() % 2 != 0 {
            return Err(err(SYNTAX));
        }
        if nx && xx {
            return Err(err(
                "ERR XX and NX options at the same time are not compatible",
            ));
        }
        let parsed = pairs
            .chunks(2)
            .map(|p| parse_score(&p[0]).map(|s| (s, &p[1])))
            .collect::<Result<Vec<_>, _>>()?;
        let z = self.zset(&args[0], Want::Create)?.expect("created");
        let mut changed = 0;
        for (score, member) in parsed {
            let old = z.scores.get(member.as_slice()).copied();
            match old {
                Some(_) if nx => {}
                None if xx => {}
                Some(old) => {
                    if old.0 != score {
                        z.insert(member, score);
                        if ch {
                            changed += 1;
                        }
                    }
                }
                None => {
                    z.insert(member, score);
                    changed += 1;
                }
            }
        }
        self.drop_if_empty(&args[0]);
        Ok(Value::Int(changed))
    }
}

fn unsupported(command: &str, option: &[u8]) -> CommandError {
    err(format!(
        "ERR option '{}' of '{command}' is not implemented in embedded store",
        String::from_utf8_lossy(option)
    ))
}

fn bulk(v: impl Into<Vec<u8>>) -> Value {
    Value::BulkString(v.into())
}

fn opt_bulk(v: Option<impl Into<Vec<u8>>>) -> Value {
    v.map_or(Value::Nil, bulk)
}

fn push_member(out: &mut Vec<Value>, member: &[u8], score: Score, with_scores: bool) {
    out.push(bulk(member.to_vec()));
    if with_scores {
        out.push(bulk(format_g17(score.0)));
    }
}

fn parse_i64(v: &[u8]) -> Result<i64, CommandError> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.starts_with('+'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(NOT_INTEGER))
}

fn parse_score(v: &[u8]) -> Result<f64, CommandError> {
    let s = std::str::from_utf8(v).map_err(|_| err("ERR value is not a valid float"))?;
    let x = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| err("ERR value is not a valid float"))?,
    };
    Ok(x)
}

/// A `ZRANGEBYSCORE` bound: value and whether it is exclusive (`(`).
fn parse_bound(v: &[u8]) -> Result<(f64, bool), CommandError> {
    let bad = || err("ERR min or max is not a float");
    match v.strip_prefix(b"(") {
        Some(rest) => parse_score(rest).map(|x| (x, true)).map_err(|_| bad()),
        None => parse_score(v).map(|x| (x, false)).map_err(|_| bad()),
    }
}

/// A Redis index (negative from the end) into `len` items.
fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// The order `SSCAN` walks a large set in: FNV-1a, fixed so that runs repeat.
fn scan_hash(member: &[u8]) -> u64 {
    member.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A Redis inclusive range (`LRANGE`, `LTRIM`, `ZRANGE`) clamped to `len` items.
fn range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then_some((start as usize, stop as usize))
}

/// A number as C's `printf("%.17g")` writes it, which is how Redis renders a Lua number
/// argument and a sorted-set score.
pub fn format_g17(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x.is_nan() {
        return "nan".into();
    }
    if x == x.trunc() && x.abs() < 1e17 {
        return format!("{}", x as i64);
    }
    let sci = format!("{x:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..17).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (16 - exp).max(0) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between its
/// first `{` and the first `}` after it, if not empty) or of the whole key, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// `ERR wrong number of arguments` unless `args` has at least `min` entries (and, with
/// `even_after`, an even number past the first `even_after`).
fn check_arity(
    name: &str,
    args: &[Vec<u8>],
    min: usize,
    even_after: Option<usize>,
) -> Result<(), CommandError> {
    let bad = args.len() < min || even_after.is_some_and(|n| (args.len() - n) % 2 != 0);
    if bad {
        Err(err(format!(
            "ERR wrong number of arguments for '{}' command",
            name.to_ascii_lowercase()
        )))
    } else {
        Ok(())
    }
}

/// The error for a command the embedded store does not implement.
fn unknown(name: &str) -> CommandError {
    err(format!("ERR unknown command '{name}' in embedded store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &mut Store, cmd: &[&str]) -> Reply {
        let args: Vec<Vec<u8>> = cmd.iter().map(|a| a.as_bytes().to_vec()).collect();
        store.command(&args)
    }

    fn b(s: &str) -> Value {
        bulk(s)
    }

    #[test]
    fn key_slots_are_redis_cluster_s() {
        // As `CLUSTER KEYSLOT` answers.
        for (key, slot) in [
            ("foo", 12182),
            ("somekey", 11058),
            ("p3", 3689),
            ("zenrelay:{p3}:ready", 3689),
            ("{p3}", 3689),
            ("{}p3", 2138),
            ("a{b}{c}", 3300),
        ] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
        assert_ne!(key_slot(b"zenrelay:meta"), key_slot(b"zenrelay:{p0}:ready"));
    }

    #[test]
    fn a_script_touches_only_keys_of_its_slot() {
        let mut store = Store::new();
        store.enter_script(Some(b"z:{p1}:ready"));
        assert!(run(&mut store, &["SET", "z:{p1}:x", "1"]).is_ok());
        assert!(run(&mut store, &["EXISTS", "z:{p1}:x", "z:{p1}:y"]).is_ok());
        let refused = run(&mut store, &["HSET", "z:meta", "a", "1"]).unwrap_err();
        assert!(refused.0.contains("non local key"), "{}", refused.0);
        assert!(run(&mut store, &["DEL", "z:{p1}:x", "z:{p2}:x"]).is_err());
        // Nothing was written by the refused commands.
        assert_eq!(
            run(&mut store, &["EXISTS", "z:{p1}:x"]).unwrap(),
            Value::Int(1)
        );
        store.leave_script();
        assert!(run(&mut store, &["HSET", "z:meta", "a", "1"]).is_ok());
    }

    #[test]
    fn formats_numbers_like_printf_g17() {
        assert_eq!(format_g17(1_700_000_000_123.0), "1700000000123");
        assert_eq!(format_g17(-1.0), "-1");
        assert_eq!(format_g17(0.5), "0.5");
        assert_eq!(format_g17(0.1), "0.10000000000000001");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(format_g17(1.5e-7), "1.4999999999999999e-07");
    }

    #[test]
    fn empty_containers_vanish_and_types_are_enforced() {
        let mut s = Store::new();
        assert_eq!(run(&mut s, &["RPUSH", "l", "a", "b"]), Ok(Value::Int(2)));
        assert_eq!(run(&mut s, &["LPOP", "l"]), Ok(b("a")));
        assert_eq!(run(&mut s, &["LPOP", "l"]), Ok(b("b")));
        assert_eq!(run(&mut s, &["EXISTS", "l"]), Ok(Value::Int(0)));
        assert_eq!(run(&mut s, &["HSET", "h", "f", "1"]), Ok(Value::Int(1)));
        assert_eq!(
            run(&mut s, &["LPUSH", "h", "x"]),
            Err(err(WRONGTYPE)),
            "a hash is not a list"
        );
        assert_eq!(run(&mut s, &["HDEL", "h", "f"]), Ok(Value::Int(1)));
        assert_eq!(
            run(&mut s, &["TYPE", "h"]),
            Ok(Value::SimpleString("none".into()))
        );
        assert_eq!(run(&mut s, &["ZADD", "z", "5", "m"]), Ok(Value::Int(1)));
        assert_eq!(
            run(&mut s, &["ZADD", "z", "NX", "1", "m"]),
            Ok(Value::Int(0))
        );
        assert_eq!(run(&mut s, &["ZSCORE", "z", "m"]), Ok(b("5")));
        assert_eq!(
            run(&mut s, &["ZMSCORE", "z", "x", "m"]),
            Ok(Value::Array(vec![Value::Nil, b("5")]))
        );
        assert_eq!(
            run(&mut s, &["ZMSCORE", "none", "m"]),
            Ok(Value::Array(vec![Value::Nil]))
        );
        assert_eq!(run(&mut s, &["ZREM", "z", "m"]), Ok(Value::Int(1)));
        assert_eq!(run(&mut s, &["DBSIZE"]), Ok(Value::Int(0)));
    }

    #[test]
    fn keys_expire_on_the_given_clock() {
        let mut s = Store::new();
        s.set_now(1_000_000);
        run(&mut s, &["SET", "k", "v", "EX", "2"]).unwrap();
        run(&mut s, &["HSET", "h", "f", "v"]).unwrap();
        assert_eq!(run(&mut s, &["PEXPIRE", "h", "500"]), Ok(Value::Int(1)));
        assert_eq!(run(&mut s, &["PTTL", "k"]), Ok(Value::Int(2000)));
        s.set_now(1_499_000);
        assert_eq!(run(&mut s, &["HGET", "h", "f"]), Ok(b("v")));
        s.set_now(1_500_000);
        assert_eq!(run(&mut s, &["HGET", "h", "f"]), Ok(Value::Nil));
        assert_eq!(run(&mut s, &["PERSIST", "k"]), Ok(Value::Int(1)));
        s.set_now(10_000_000);
        assert_eq!(run(&mut s, &["GET", "k"]), Ok(b("v")));
    }

    #[test]
    fn score_ranges_are_removed_and_members_looked_up() {
        let mut s = Store::new();
        for (score, m) in [("1", "a"), ("2", "b"), ("3", "c")] {
            run(&mut s, &["ZADD", "z", score, m]).unwrap();
        }
        assert_eq!(
            run(&mut s, &["ZREMRANGEBYSCORE", "z", "-inf", "(2"]),
            Ok(Value::Int(1))
        );
        assert_eq!(run(&mut s, &["ZCARD", "z"]), Ok(Value::Int(2)));
        assert_eq!(
            run(&mut s, &["ZREMRANGEBYSCORE", "z", "2", "+inf"]),
            Ok(Value::Int(2))
        );
        assert_eq!(run(&mut s, &["DBSIZE"]), Ok(Value::Int(0)));
        assert!(run(&mut s, &["ZREMRANGEBYSCORE", "z", "1", "2", "3"]).is_err());
        for (score, m) in [("1", "a"), ("2", "c"), ("2", "b"), ("3", "d")] {
            run(&mut s, &["ZADD", "z", score, m]).unwrap();
        }
        assert_eq!(run(&mut s, &["ZRANK", "z", "a"]), Ok(Value::Int(0)));
        assert_eq!(run(&mut s, &["ZRANK", "z", "c"]), Ok(Value::Int(2)));
        assert_eq!(run(&mut s, &["ZRANK", "z", "x"]), Ok(Value::Nil));
        assert_eq!(
            run(&mut s, &["ZCOUNT", "z", "-inf", "(2"]),
            Ok(Value::Int(1))
        );
        assert_eq!(
            run(&mut s, &["ZCOUNT", "z", "2", "+inf"]),
            Ok(Value::Int(3))
        );
        run(&mut s, &["DEL", "z"]).unwrap();
        run(&mut s, &["SADD", "s", "x"]).unwrap();
        assert_eq!(run(&mut s, &["SISMEMBER", "s", "x"]), Ok(Value::Int(1)));
        assert_eq!(run(&mut s, &["SISMEMBER", "s", "y"]), Ok(Value::Int(0)));
        assert_eq!(run(&mut s, &["SISMEMBER", "none", "x"]), Ok(Value::Int(0)));
    }

    #[test]
    fn ranges_follow_redis_indices() {
        let mut s = Store::new();
        run(&mut s, &["RPUSH", "l", "a", "b", "c", "d"]).unwrap();
        assert_eq!(
            run(&mut s, &["LRANGE", "l", "1", "-2"]),
            Ok(Value::Array(vec![b("b"), b("c")]))
        );
        assert_eq!(run(&mut s, &["LINDEX", "l", "-1"]), Ok(b("d")));
        assert_eq!(run(&mut s, &["LINDEX", "l", "4"]), Ok(Value::Nil));
        run(&mut s, &["LTRIM", "l", "0", "1"]).unwrap();
        assert_eq!(run(&mut s, &["LLEN", "l"]), Ok(Value::Int(2)));
        for (score, m) in [("3", "c"), ("1", "a"), ("2", "b"), ("2", "a2")] {
            run(&mut s, &["ZADD", "z", score, m]).unwrap();
        }
        assert_eq!(
            run(
                &mut s,
                &["ZRANGEBYSCORE", "z", "-inf", "2", "LIMIT", "1", "2"]
            ),
            Ok(Value::Array(vec![b("a2"), b("b")]))
        );
        assert_eq!(
            run(&mut s, &["ZRANGEBYSCORE", "z", "(1", "(3"]),
            Ok(Value::Array(vec![b("a2"), b("b")]))
        );
        assert_eq!(
            run(&mut s, &["ZRANGEBYSCORE", "z", "2", "+inf", "WITHSCORES"]),
            Ok(Value::Array(vec![
                b("a2"),
                b("2"),
                b("b"),
                b("2"),
                b("c"),
                b("3")
            ]))
        );
        assert_eq!(
            run(&mut s, &["ZRANGE", "z", "0", "0", "WITHSCORES"]),
            Ok(Value::Array(vec![b("a"), b("1")]))
        );
    }

    #[test]
    fn lpos_set_nx_hsetnx_and_srem_answer_as_redis() {
        let mut s = Store::new();
        run(&mut s, &["RPUSH", "l", "a", "b", "a", "c"]).unwrap();
        assert_eq!(run(&mut s, &["LPOS", "l", "a"]), Ok(Value::Int(0)));
        assert_eq!(
            run(&mut s, &["LPOS", "l", "c", "MAXLEN", "3"]),
            Ok(Value::Nil)
        );
        assert_eq!(
            run(&mut s, &["LPOS", "l", "c", "MAXLEN", "4"]),
            Ok(Value::Int(3))
        );
        assert_eq!(
            run(&mut s, &["LPOS", "l", "a", "RANK", "-1"]),
            Ok(Value::Int(2))
        );
        assert_eq!(
            run(&mut s, &["LPOS", "l", "a", "COUNT", "0"]),
            Ok(Value::Array(vec![Value::Int(0), Value::Int(2)]))
        );
        assert_eq!(run(&mut s, &["LPOS", "none", "a"]), Ok(Value::Nil));
        assert!(run(&mut s, &["LPOS", "l", "a", "RANK", "0"]).is_err());

        assert_eq!(
            run(&mut s, &["SET", "k", "1", "PX", "250", "NX"]),
            Ok(Value::Okay)
        );
        assert_eq!(
            run(&mut s, &["SET", "k", "2", "PX", "250", "NX"]),
            Ok(Value::Nil)
        );
        assert_eq!(run(&mut s, &["GET", "k"]), Ok(b("1")));
        assert_eq!(run(&mut s, &["PTTL", "k"]), Ok(Value::Int(250)));

        assert_eq!(run(&mut s, &["HSETNX", "h", "f", "1"]), Ok(Value::Int(1)));
        assert_eq!(run(&mut s, &["HSETNX", "h", "f", "2"]), Ok(Value::Int(0)));
        assert_eq!(run(&mut s, &["HGET", "h", "f"]), Ok(b("1")));

        run(&mut s, &["SADD", "s", "x", "y"]).unwrap();
        assert_eq!(run(&mut s, &["SREM", "s", "x", "z"]), Ok(Value::Int(1)));
        assert_eq!(run(&mut s, &["SREM", "s", "y"]), Ok(Value::Int(1)));
        assert_eq!(run(&mut s, &["EXISTS", "s"]), Ok(Value::Int(0)));
    }

    #[test]
    fn sscan_answers_small_sets_whole_and_walks_large_ones() {
        let mut s = Store::new();
        let empty = Value::Array(vec![b("0"), Value::Array(Vec::new())]);
        assert_eq!(run(&mut s, &["SSCAN", "s", "0", "COUNT", "2"]), Ok(empty));
        for i in 0..SMALL_SET_MAX {
            run(&mut s, &["SADD", "s", &format!("m{i:03}")]).unwrap();
        }
        let Ok(Value::Array(reply)) = run(&mut s, &["SSCAN", "s", "0", "COUNT", "2"]) else {
            panic!("an array")
        };
        assert_eq!(reply[0], b("0"), "a small set comes whole");
        assert!(matches!(&reply[1], Value::Array(m) if m.len() == SMALL_SET_MAX));

        for i in 0..72 {
            run(&mut s, &["SADD", "s", &format!("n{i:03}")]).unwrap();
        }
        let total = SMALL_SET_MAX + 72;
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let Ok(Value::Array(reply)) = run(&mut s, &["SSCAN", "s", &cursor, "COUNT", "50"])
            else {
                panic!("an array")
            };
            let Value::Array(members) = &reply[1] else {
                panic!("members")
            };
            assert!(members.len() <= 50);
            if seen.is_empty() {
                // a member already returned leaves: none still present may be skipped
                let Some(Value::BulkString(gone)) = members.first() else {
                    panic!("a first page")
                };
                let gone = String::from_utf8(gone.clone()).unwrap();
                run(&mut s, &["SREM", "s", &gone]).unwrap();
            }
            seen.extend(members.iter().cloned());
            cursor = match &reply[0] {
                Value::BulkString(c) => String::from_utf8(c.clone()).unwrap(),
                other => panic!("{other:?}"),
            };
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), total, "every member once");
        seen.sort_by_key(|v| format!("{v:?}"));
        seen.dedup();
        assert_eq!(seen.len(), total, "no member twice");
        assert!(run(&mut s, &["SSCAN", "s", "x"]).is_err());
        assert!(run(&mut s, &["SSCAN", "s", "0", "MATCH", "m*"])
            .unwrap_err()
            .0
            .contains("'MATCH'"));
    }

    #[test]
    fn unknown_commands_and_options_are_refused_by_name() {
        let mut s = Store::new();
        assert_eq!(
            run(&mut s, &["FLUSHALL"]),
            Err(err("ERR unknown command 'FLUSHALL' in embedded store"))
        );
        assert!(run(&mut s, &["ZADD", "z", "GT", "1", "m"])
            .unwrap_err()
            .0
            .contains("'GT'"));
        assert_eq!(
            run(&mut s, &["HINCRBY", "h", "f", "x"]),
            Err(err(NOT_INTEGER))
        );
    }
}

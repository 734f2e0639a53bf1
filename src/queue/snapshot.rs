//! The queue's stats as one process keeps them between reads.
//!
//! Reading every account's counters costs Redis about 100,000 instructions per account
//! (`stats.lua`): at 10,000 accounts, a second of Redis's time for each `/metrics` scrape,
//! `GET /v1/queues` or history sample. So a process reads each partition whole once, and
//! afterwards only the accounts changed since its last read: every script that changes
//! what an account's stats show records the account, with Redis's time, in the
//! partition's change set (`{base}:changed`, see `changed` in `scripts.lua`).
//!
//! - A read asks for the changes from its last read's start, less [`CLOCK_SLACK_MS`], so
//!   that a Redis whose clock is a little behind (a replica promoted after a failover, a
//!   slot moved to another node) loses nothing. A partition with no change since then
//!   costs one plain command (`ZRANGEBYSCORE ... LIMIT 0 1`), not a script call.
//! - A read of changes goes in chunks, ordered by time and, within one millisecond, as Redis
//!   orders its members; it reads no change later than its first chunk's time, which the
//!   next read starts from.
//! - A partition is read whole again when Redis's clock (read once per refresh, `TIME`,
//!   from the server that answers keyless commands; when that server cannot answer, the
//!   last time read plus the time passed, or a read's own time) is behind its last read by more than
//!   the slack, when the changes since the last read may have been forgotten (the claims'
//!   sweeps drop those older than [`CHANGES_KEPT_MS`]: a read more than half of that after
//!   the last), and every [`WHOLE_READ_EVERY_MS`] or a little less (staggered over the
//!   partitions), so that a change missed all the same (a failover that lost writes
//!   already read, a restored backup, in a Redis Cluster a master whose clock is behind
//!   the others' by more than the slack) is not shown for longer. A read that fails
//!   changes nothing kept: the next one asks again.
//! - What moves with time alone is kept as its inputs and worked out when the stats are
//!   taken: the calls sent within the rolling window are kept as their start times.

use std::collections::HashMap;

use redis::Value;

use super::layout::RATE_LOG_STAMP;
use super::replies::{array, bytes, int, text};
use super::{AccountStats, QueueError, QueueStats};

/// How long a partition's change set remembers a change (ms): the claims' retention
/// sweeps forget older ones. A process whose last read of a partition is older than half
/// of it reads the partition whole.
pub const CHANGES_KEPT_MS: u64 = 3_600_000;

/// How far behind its last read a process asks for changes (ms): the clock of the Redis
/// serving a partition may have moved back this much (a failover, a moved slot) without
/// a change being missed.
pub const CLOCK_SLACK_MS: u64 = 5_000;

/// How often a process reads each partition whole again (ms; see the module docs).
pub const WHOLE_READ_EVERY_MS: u64 = 1_800_000;

/// One account as last read, with what its stats need to be worked out at a later time.
#[derive(Debug, Clone)]
struct Kept {
    /// Everything but `sent_in_window`.
    stats: AccountStats,
    /// The account's rolling window (ms).
    window_ms: u64,
    /// Start times (Unix ms) of the calls within the window when it was read.
    sends: Vec<u64>,
}

/// One row of `stats.lua`'s reply.
enum Row {
    Account(Kept),
    /// A changed account whose record has gone.
    Gone(String),
}

/// One chunk of `stats.lua`'s reply: Redis's time, where to go on from, and the rows.
pub struct Chunk {
    /// Redis's time when the chunk was read (Unix ms).
    now_ms: u64,
    /// The cursor (mode `all`, `"0"` at the end) or the time of the last change read
    /// (mode `changed`, empty at the end).
    next: String,
    /// Mode `changed`: the account the chunk ended with.
    after: String,
    rows: Vec<Row>,
}

/// Parses one reply of `stats.lua`.
pub fn parse_chunk(reply: Value) -> Result<Chunk, QueueError> {
    let mut items = array(reply)?.into_iter();
    let now_ms = items.next().and_then(|v| int(&v)).unwrap_or(0).max(0) as u64;
    let next = items.next().and_then(|v| text(&v)).unwrap_or_default();
    let after = items.next().and_then(|v| text(&v)).unwrap_or_default();
    let rows = items.map(parse_row).collect::<Result<_, _>>()?;
    Ok(Chunk {
        now_ms,
        next,
        after,
        rows,
    })
}

fn parse_row(item: Value) -> Result<Row, QueueError> {
    let f = array(item)?;
    if f.len() == 1 {
        return Ok(Row::Gone(text(&f[0]).unwrap_or_default()));
    }
    if f.len() < 13 {
        return Err(QueueError::Protocol("short stats entry".into()));
    }
    let num = |i: usize| int(&f[i]).unwrap_or(0).max(0) as u64;
    let opt = |i: usize| int(&f[i]).filter(|v| *v >= 0).map(|v| v as u64);
    let busy = bytes(&f[6]);
    let log = bytes(&f[10]);
    let stamp = RATE_LOG_STAMP as usize;
    let sends = log
        .chunks(stamp)
        .map(|t| {
            std::str::from_utf8(t)
                .ok()?
                .parse()
                .ok()
                .filter(|_| t.len() == stamp)
        })
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| QueueError::Protocol("a stats entry's rate log is malformed".into()))?;
    Ok(Row::Account(Kept {
        stats: AccountStats {
            account: text(&f[0]).unwrap_or_default(),
            depth: num(1),
            scheduled_retries: num(2),
            dead: num(3),
            delivered: num(4),
            upstream_429: num(5),
            // the lease group in flight: its ids, one space apart
            in_flight: busy
                .split(|b| *b == b' ')
                .filter(|id| !id.is_empty())
                .count() as u64,
            paused: num(7) == 1,
            auth_failed: num(8) == 1,
            sent_in_window: 0,
            oldest_ms: opt(11),
            next_send_ms: opt(12),
        },
        window_ms: num(9),
        sends,
    }))
}

/// How a process reads the change sets: [`ChangeReads::default`] but in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeReads {
    /// How long the change sets remember a change (ms): the claims' sweeps are told it.
    pub kept_ms: u64,
    /// How far behind its last read a read of changes starts (ms).
    pub slack_ms: u64,
    /// How often each partition is read whole again (ms), staggered over the partitions
    /// between three quarters of it and all of it.
    pub whole_every_ms: u64,
}

impl Default for ChangeReads {
    fn default() -> Self {
        ChangeReads {
            kept_ms: CHANGES_KEPT_MS,
            slack_ms: CLOCK_SLACK_MS,
            whole_every_ms: WHOLE_READ_EVERY_MS,
        }
    }
}

/// One partition as last read.
#[derive(Debug, Default)]
struct PartitionView {
    /// Redis's time at the start of the last read: later changes are still to be read.
    since_ms: u64,
    /// Redis's time from which the partition is read whole again.
    whole_due_ms: u64,
    accounts: HashMap<String, Kept>,
}

impl ChangeReads {
    /// Whether a partition whose last read started at `since_ms` and whose next whole
    /// read is due at `whole_due_ms` (Redis ms) must be read whole at Redis's time
    /// `now_ms`: it is due; or changes since the last read may have been forgotten; or
    /// the clock went back further than the slack (changes since may carry earlier times).
    fn whole_read_needed(&self, since_ms: u64, whole_due_ms: u64, now_ms: u64) -> bool {
        now_ms >= whole_due_ms
            || now_ms.saturating_sub(since_ms) > self.kept_ms / 2
            || now_ms + self.slack_ms < since_ms
    }
}

/// How a partition is read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Every account, walking the account set.
    Whole,
    /// The accounts changed at or after `from` (Unix ms): the last read's start less the
    /// slack.
    Changed {
        /// Where the changes are read from.
        from: u64,
    },
}

/// Where the next chunk of a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkStart {
    /// The cursor (a whole read) or the time (a read of changes) to go on from.
    pub at: String,
    /// In a read of changes, the account changed at `at` that the last chunk ended with.
    pub after: String,
    /// In a read of changes, the latest change it reads: its first chunk's time, as
    /// later changes are read by the next read.
    pub until: String,
}

/// Every partition as this process last read it.
#[derive(Debug, Default)]
pub struct Snapshot {
    partitions: Vec<Option<PartitionView>>,
    /// Redis's time (Unix ms) as last read, and when it was read here.
    clock: Option<(u64, std::time::Instant)>,
}

/// The chunks of one read of a partition, to apply once the read is complete.
pub struct Read {
    plan: Plan,
    /// How often the partition is read whole, to stagger the next whole read.
    whole_every_ms: u64,
    started_ms: Option<u64>,
    chunks: Vec<Chunk>,
}

impl Read {
    /// Redis's time when the read began (its first chunk's), once a chunk came.
    pub fn started_ms(&self) -> Option<u64> {
        self.started_ms
    }

    /// A new read of a partition by `plan`.
    pub fn new(plan: Plan, reads: ChangeReads) -> Self {
        Read {
            plan,
            whole_every_ms: reads.whole_every_ms,
            started_ms: None,
            chunks: Vec::new(),
        }
    }

    /// Where the first chunk starts.
    pub fn first(&self) -> ChunkStart {
        match self.plan {
            Plan::Whole => ChunkStart {
                at: "0".into(),
                after: String::new(),
                until: String::new(),
            },
            Plan::Changed { from, .. } => ChunkStart {
                at: from.to_string(),
                after: String::new(),
                until: "+inf".into(),
            },
        }
    }

    /// Notes a chunk.
    pub fn push(&mut self, chunk: Chunk) {
        self.started_ms.get_or_insert(chunk.now_ms);
        self.chunks.push(chunk);
    }

    /// What follows the last chunk; `None` when the read is complete.
    pub fn next(&self) -> Option<ChunkStart> {
        let last = self.chunks.last()?;
        match self.plan {
            Plan::Whole if last.next.is_empty() || last.next == "0" => None,
            Plan::Whole => Some(ChunkStart {
                at: last.next.clone(),
                after: String::new(),
                until: String::new(),
            }),
            Plan::Changed { .. } if last.next.is_empty() => None,
            Plan::Changed { .. } => Some(ChunkStart {
                at: last.next.clone(),
                after: last.after.clone(),
                until: self.started_ms.unwrap_or(0).to_string(),
            }),
        }
    }
}

impl Snapshot {
    /// Notes Redis's time `now_ms`, just read.
    pub fn clock_read(&mut self, now_ms: u64) {
        self.clock = Some((now_ms, std::time::Instant::now()));
    }

    /// Redis's time now, told by the last time read and the time passed here since
    /// (`None` before any was read): for a refresh whose node that tells the time cannot
    /// answer, while other partitions still can.
    pub fn clock_estimate(&self) -> Option<u64> {
        self.clock.map(|(ms, at)| {
            ms.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// How partition `p` (of `partitions`) is read next, at Redis's time `now_ms`.
    pub fn plan(&mut self, p: usize, partitions: usize, reads: ChangeReads, now_ms: u64) -> Plan {
        if self.partitions.len() != partitions {
            self.partitions = (0..partitions).map(|_| None).collect();
        }
        match &self.partitions[p] {
            Some(view) if !reads.whole_read_needed(view.since_ms, view.whole_due_ms, now_ms) => {
                Plan::Changed {
                    from: view.since_ms.saturating_sub(reads.slack_ms),
                }
            }
            _ => Plan::Whole,
        }
    }

    /// Applies a complete read of partition `p`.
    pub fn apply(&mut self, p: usize, read: Read) {
        let partitions = self.partitions.len().max(1);
        let Some(slot) = self.partitions.get_mut(p) else {
            return;
        };
        let started = read.started_ms.unwrap_or(0);
        let mut view = match (read.plan, slot.take()) {
            (Plan::Changed { .. }, Some(view)) => view,
            _ => {
                // staggered, so that the partitions' whole reads fall on different scrapes
                let every = u128::from(read.whole_every_ms);
                let (p, n) = (p as u128, partitions as u128);
                let after = every * (3 * n + p) / (4 * n);
                PartitionView {
                    whole_due_ms: started + after as u64,
                    ..PartitionView::default()
                }
            }
        };
        view.since_ms = started.max(view.since_ms);
        for chunk in read.chunks {
            for row in chunk.rows {
                match row {
                    Row::Account(kept) => {
                        view.accounts.insert(kept.stats.account.clone(), kept);
                    }
                    Row::Gone(account) => {
                        view.accounts.remove(&account);
                    }
                }
            }
        }
        *slot = Some(view);
    }

    /// The stats of every account at Redis's time `now_ms`, sorted by account; `unread`:
    /// the partitions that could not be read this time (those never read among them have
    /// no accounts here).
    pub fn stats(&self, now_ms: u64, unread: Vec<u16>) -> QueueStats {
        let now = now_ms;
        let mut accounts: Vec<AccountStats> = self
            .partitions
            .iter()
            .flatten()
            .flat_map(|view| view.accounts.values())
            .map(|kept| {
                let since = now.saturating_sub(kept.window_ms);
                AccountStats {
                    sent_in_window: kept.sends.iter().filter(|t| **t > since).count() as u64,
                    ..kept.stats.clone()
                }
            })
            .collect();
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        let never_read = unread
            .iter()
            .copied()
            .filter(|&p| {
                self.partitions
                    .get(usize::from(p))
                    .map_or(true, Option::is_none)
            })
            .collect();
        QueueStats {
            now_ms: now,
            accounts,
            unread_partitions: unread,
            never_read_partitions: never_read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_told_by_the_last_read_and_the_time_passed() {
        let mut snapshot = Snapshot::default();
        assert_eq!(snapshot.clock_estimate(), None);
        snapshot.clock_read(1_000_000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = snapshot.clock_estimate().unwrap();
        assert!((1_000_020..1_060_000).contains(&now), "{now}");
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn row(account: &str, depth: i64, log: &str) -> Value {
        Value::Array(vec![
            bulk(account),
            Value::Int(depth),
            Value::Int(0),
            Value::Int(0),
            bulk("0"),
            bulk("0"),
            bulk(""),
            bulk("0"),
            bulk("0"),
            bulk("60000"),
            bulk(log),
            bulk(""),
            bulk(""),
        ])
    }

    fn chunk(now: u64, next: &str, after: &str, rows: Vec<Value>) -> Chunk {
        let mut items = vec![Value::Int(now as i64), bulk(next), bulk(after)];
        items.extend(rows);
        parse_chunk(Value::Array(items)).expect("chunk")
    }

    const T0: u64 = 1_000_000_000_000;

    #[test]
    fn changes_update_and_drop_accounts_and_sends_leave_the_window() {
        let reads = ChangeReads::default();
        let mut snap = Snapshot::default();
        assert_eq!(snap.plan(0, 1, reads, T0), Plan::Whole);
        let mut read = Read::new(Plan::Whole, reads);
        assert_eq!(read.first().at, "0");
        let log = format!("{:013}", T0 + 50_000);
        let rows = vec![row("a", 1, &log), row("b", 2, ""), row("c", 1, "")];
        read.push(chunk(T0 + 60_000, "0", "", rows));
        assert_eq!(read.next(), None);
        snap.apply(0, read);
        let stats = snap.stats(T0, Vec::new());
        assert_eq!(stats.accounts.len(), 3);
        assert_eq!(stats.accounts[0].sent_in_window, 1);

        let plan = snap.plan(0, 1, reads, T0 + 130_000);
        let from = T0 + 60_000 - CLOCK_SLACK_MS;
        assert_eq!(plan, Plan::Changed { from });
        let mut read = Read::new(plan, reads);
        assert_eq!(read.first().until, "+inf");
        let rows = vec![row("b", 5, ""), Value::Array(vec![bulk("c")])];
        read.push(chunk(T0 + 130_000, "", "", rows));
        snap.apply(0, read);
        let stats = snap.stats(T0 + 130_000, Vec::new());
        assert_eq!(stats.accounts.len(), 2, "c has gone");
        // a's send left its window with time alone, unread
        assert_eq!(stats.accounts[0].account, "a");
        assert_eq!(stats.accounts[0].sent_in_window, 0);
        assert_eq!(stats.accounts[1].depth, 5);
    }

    #[test]
    fn unread_partitions_never_read_are_told_apart() {
        let reads = ChangeReads::default();
        let mut snap = Snapshot::default();
        for p in 0..3 {
            assert_eq!(snap.plan(p, 3, reads, T0), Plan::Whole);
        }
        let mut read = Read::new(Plan::Whole, reads);
        read.push(chunk(T0, "0", "", vec![row("a", 1, "")]));
        snap.apply(1, read);
        let stats = snap.stats(T0, vec![1, 2]);
        assert_eq!(stats.unread_partitions, vec![1, 2]);
        assert_eq!(stats.never_read_partitions, vec![2]);
        assert_eq!(stats.accounts.len(), 1, "partition 1's last read stays");
    }

    #[test]
    fn a_clock_gone_back_forgotten_changes_or_time_mean_a_whole_read() {
        let reads = ChangeReads::default();
        let (since, due) = (T0, T0 + WHOLE_READ_EVERY_MS);
        assert!(!reads.whole_read_needed(since, due, since + 1));
        assert!(!reads.whole_read_needed(since, due, since - CLOCK_SLACK_MS));
        assert!(reads.whole_read_needed(since, due, since - CLOCK_SLACK_MS - 1));
        let forgotten = since + CHANGES_KEPT_MS / 2 + 1;
        assert!(!reads.whole_read_needed(since, u64::MAX, forgotten - 1));
        assert!(reads.whole_read_needed(since, u64::MAX, forgotten));
        assert!(!reads.whole_read_needed(since, due, due - 1));
        assert!(reads.whole_read_needed(since, due, due));
    }

    #[test]
    fn a_malformed_rate_log_is_a_protocol_error() {
        let items = vec![
            Value::Int(T0 as i64),
            bulk("0"),
            bulk(""),
            row("a", 1, "12345"),
        ];
        assert!(matches!(
            parse_chunk(Value::Array(items)),
            Err(QueueError::Protocol(_))
        ));
    }

    #[test]
    fn a_full_chunk_goes_on_after_its_last_account_up_to_the_first_chunk_s_time() {
        let reads = ChangeReads::default();
        let mut read = Read::new(Plan::Changed { from: T0 }, reads);
        read.push(chunk(T0 + 10, &T0.to_string(), "b", vec![]));
        let next = read.next().expect("more");
        assert_eq!(next.at, T0.to_string());
        assert_eq!(next.after, "b");
        assert_eq!(next.until, (T0 + 10).to_string());
    }

    #[test]
    fn whole_reads_come_by_time_staggered_over_the_partitions() {
        let reads = ChangeReads::default();
        let mut snap = Snapshot::default();
        let mut due = Vec::new();
        for p in 0..4 {
            assert_eq!(snap.plan(p, 4, reads, T0), Plan::Whole);
            let mut read = Read::new(Plan::Whole, reads);
            read.push(chunk(T0, "0", "", vec![]));
            snap.apply(p, read);
            assert_ne!(snap.plan(p, 4, reads, T0), Plan::Whole);
            let view = snap.partitions[p].as_ref().expect("read");
            due.push(view.whole_due_ms - T0);
        }
        let every = WHOLE_READ_EVERY_MS;
        assert_eq!(due[0], every * 3 / 4);
        assert_eq!(snap.plan(0, 4, reads, T0 + due[0]), Plan::Whole);
        assert_ne!(snap.plan(1, 4, reads, T0 + due[0]), Plan::Whole);
        assert!(due.windows(2).all(|w| w[0] < w[1]), "{due:?}");
        assert!(due[3] < every);
    }
}

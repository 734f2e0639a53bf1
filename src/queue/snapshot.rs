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
//!   slot moved to another node) loses nothing.
//! - A partition is read whole again when its clock went back further than that, when the
//!   changes since the last read may have been forgotten (the claims' sweeps drop those
//!   older than [`CHANGES_KEPT_MS`]: a read more than half of it after the last), when one chunk of changes all carry one time (the
//!   read could not go on past it), and after a read failed.
//! - What moves with time alone is kept as its inputs and worked out when the stats are
//!   taken: the calls sent within the rolling window are kept as their start times.

use std::collections::HashMap;

use redis::Value;

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
    pub now_ms: u64,
    /// The cursor (mode `all`, `"0"` at the end) or the time of the last change read
    /// (mode `changed`, empty at the end).
    pub next: String,
    rows: Vec<Row>,
}

/// Parses one reply of `stats.lua`.
pub fn parse_chunk(reply: Value) -> Result<Chunk, QueueError> {
    let mut items = array(reply)?.into_iter();
    let now_ms = items.next().and_then(|v| int(&v)).unwrap_or(0).max(0) as u64;
    let next = items.next().and_then(|v| text(&v)).unwrap_or_default();
    let rows = items.map(parse_row).collect::<Result<_, _>>()?;
    Ok(Chunk { now_ms, next, rows })
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
    let sends = log
        .chunks(13)
        .filter_map(|t| std::str::from_utf8(t).ok()?.parse().ok())
        .collect();
    Ok(Row::Account(Kept {
        stats: AccountStats {
            account: text(&f[0]).unwrap_or_default(),
            depth: num(1),
            scheduled_retries: num(2),
            dead: num(3),
            delivered: num(4),
            upstream_429: num(5),
            in_flight: u64::from(!busy.is_empty()),
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

/// One partition as last read.
#[derive(Debug, Default)]
struct PartitionView {
    /// Redis's time at the start of the last read: later changes are still to be read.
    since_ms: u64,
    accounts: HashMap<String, Kept>,
}

/// How a partition is read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Every account, walking the account set.
    Whole,
    /// The accounts changed at or after this time (Unix ms).
    ChangedSince(u64),
}

/// What follows a chunk of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The read is complete.
    Done,
    /// The next chunk starts here (a cursor or a time).
    From(String),
    /// The partition must be read whole instead.
    Whole,
}

/// Every partition as this process last read it.
#[derive(Debug, Default)]
pub struct Snapshot {
    partitions: Vec<Option<PartitionView>>,
    /// Redis's latest time seen by a read.
    now_ms: u64,
}

/// The chunks of one read of a partition, to apply once the read is complete.
pub struct Read {
    plan: Plan,
    /// How long the change sets remember a change (ms): [`CHANGES_KEPT_MS`] but in tests.
    kept_ms: u64,
    started_ms: Option<u64>,
    chunks: Vec<Chunk>,
}

impl Read {
    /// A new read of a partition by `plan`, of change sets that remember a change for
    /// `kept_ms`.
    pub fn new(plan: Plan, kept_ms: u64) -> Self {
        Read {
            plan,
            kept_ms,
            started_ms: None,
            chunks: Vec::new(),
        }
    }

    /// Notes a chunk; `false` when the partition must be read whole instead (see the
    /// module docs), judged from the first chunk of a read of changes.
    pub fn push(&mut self, chunk: Chunk) -> bool {
        if self.started_ms.is_none() {
            if let Plan::ChangedSince(from) = self.plan {
                let since = from + CLOCK_SLACK_MS;
                let clock_back = chunk.now_ms + CLOCK_SLACK_MS < since;
                let forgotten = chunk.now_ms.saturating_sub(since) > self.kept_ms / 2;
                if clock_back || forgotten {
                    return false;
                }
            }
            self.started_ms = Some(chunk.now_ms);
        }
        self.chunks.push(chunk);
        true
    }

    /// What follows the last chunk, which was asked for from `from`.
    pub fn next(&self, from: &str) -> Next {
        let Some(last) = self.chunks.last() else {
            return Next::From(from.to_string());
        };
        match self.plan {
            Plan::Whole if last.next.is_empty() || last.next == "0" => Next::Done,
            Plan::Whole => Next::From(last.next.clone()),
            Plan::ChangedSince(_) if last.next.is_empty() => Next::Done,
            Plan::ChangedSince(_) => {
                let (at, was) = (last.next.parse::<f64>(), from.parse::<f64>());
                match (at, was) {
                    (Ok(at), Ok(was)) if at > was => Next::From(last.next.clone()),
                    // a full chunk of changes at one time: the read cannot get past it
                    _ => Next::Whole,
                }
            }
        }
    }
}

impl Snapshot {
    /// How partition `p` (of `partitions`) is read next.
    pub fn plan(&mut self, p: usize, partitions: usize) -> Plan {
        if self.partitions.len() != partitions {
            self.partitions = (0..partitions).map(|_| None).collect();
        }
        match &self.partitions[p] {
            Some(view) => Plan::ChangedSince(view.since_ms.saturating_sub(CLOCK_SLACK_MS)),
            None => Plan::Whole,
        }
    }

    /// Forgets partition `p`, so that it is read whole next (a read of it failed).
    pub fn forget(&mut self, p: usize) {
        if let Some(view) = self.partitions.get_mut(p) {
            *view = None;
        }
    }

    /// Applies a complete read of partition `p`.
    pub fn apply(&mut self, p: usize, read: Read) {
        let Some(slot) = self.partitions.get_mut(p) else {
            return;
        };
        let mut view = match (read.plan, slot.take()) {
            (Plan::ChangedSince(_), Some(view)) => view,
            _ => PartitionView::default(),
        };
        view.since_ms = read.started_ms.unwrap_or(view.since_ms);
        for chunk in read.chunks {
            self.now_ms = self.now_ms.max(chunk.now_ms);
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

    /// The stats of every account at Redis's latest time seen, sorted by account.
    pub fn stats(&self) -> QueueStats {
        let now = self.now_ms;
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
        QueueStats {
            now_ms: now,
            accounts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn chunk(now: u64, next: &str, rows: Vec<Value>) -> Chunk {
        let mut items = vec![Value::Int(now as i64), bulk(next)];
        items.extend(rows);
        parse_chunk(Value::Array(items)).expect("chunk")
    }

    #[test]
    fn changes_update_and_drop_accounts_and_sends_leave_the_window() {
        let mut snap = Snapshot::default();
        assert_eq!(snap.plan(0, 1), Plan::Whole);
        let mut read = Read::new(Plan::Whole, CHANGES_KEPT_MS);
        let log = "1000000060000";
        assert!(read.push(chunk(
            1_000_000_060_000,
            "0",
            vec![row("a", 1, log), row("b", 2, "")]
        )));
        assert_eq!(read.next("0"), Next::Done);
        snap.apply(0, read);
        let stats = snap.stats();
        assert_eq!(stats.accounts.len(), 2);
        assert_eq!(stats.accounts[0].sent_in_window, 1);

        let plan = snap.plan(0, 1);
        assert_eq!(plan, Plan::ChangedSince(1_000_000_060_000 - CLOCK_SLACK_MS));
        let mut read = Read::new(plan, CHANGES_KEPT_MS);
        assert!(read.push(chunk(
            1_000_000_130_000,
            "",
            vec![row("b", 5, ""), Value::Array(vec![bulk("a")])],
        )));
        snap.apply(0, read);
        let stats = snap.stats();
        assert_eq!(stats.accounts.len(), 1, "a has gone");
        assert_eq!(stats.accounts[0].depth, 5);
    }

    #[test]
    fn a_clock_gone_back_or_changes_forgotten_mean_a_whole_read() {
        let since = 10_000_000;
        let from = since - CLOCK_SLACK_MS;
        let mut read = Read::new(Plan::ChangedSince(from), CHANGES_KEPT_MS);
        assert!(!read.push(chunk(since - CLOCK_SLACK_MS - 1, "", vec![])));
        let mut read = Read::new(Plan::ChangedSince(from), CHANGES_KEPT_MS);
        assert!(!read.push(chunk(since + CHANGES_KEPT_MS / 2 + 1, "", vec![])));
        let mut read = Read::new(Plan::ChangedSince(from), CHANGES_KEPT_MS);
        assert!(read.push(chunk(since + 1, "", vec![])));
        assert_eq!(read.next(&from.to_string()), Next::Done);
        // a full chunk that could not get past its first time
        let mut read = Read::new(Plan::ChangedSince(from), CHANGES_KEPT_MS);
        assert!(read.push(chunk(since + 1, &from.to_string(), vec![])));
        assert_eq!(read.next(&from.to_string()), Next::Whole);
        let later = (from + 1).to_string();
        let mut read = Read::new(Plan::ChangedSince(from), CHANGES_KEPT_MS);
        assert!(read.push(chunk(since + 1, &later, vec![])));
        assert_eq!(read.next(&from.to_string()), Next::From(later));
    }
}

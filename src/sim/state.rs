//! The simulator's in-memory state, behind one mutex (no lock is ever held across an await).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::apps::App;
use super::faults::FaultRule;
use super::installations::Installation;
use super::jobs::Job;

/// At most this many entries are kept in the request log (oldest dropped first).
pub(crate) const MAX_REQUEST_LOG: usize = 20_000;
/// At most this many notifications (and, separately, attempts) are kept per account.
pub(crate) const MAX_NOTIFICATIONS: usize = 20_000;

/// A Notify request the simulator received.
#[derive(Debug, Clone)]
pub struct ReceivedNotification {
    /// Subdomain of the account it was sent to.
    pub account: String,
    /// The raw request body (empty for a body rejected as too large).
    pub raw_body: Bytes,
    /// Size of the request body in bytes.
    pub body_len: usize,
    /// The body parsed as JSON (`Null` when it was not JSON).
    pub json: serde_json::Value,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// Arrival time, monotonic.
    pub received_at: Instant,
    /// Arrival time, Unix milliseconds.
    pub received_at_unix_ms: u64,
    /// The status the simulator answered: 200 for an accepted notification.
    pub status: u16,
}

/// One request that reached the simulator's API (the `/__sim/` hooks are not logged).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// `Host` header (or the authority of an absolute-form target).
    pub host: Option<String>,
    /// Account the request was attributed to (credentials, else the `Host`), if any.
    pub account: Option<String>,
    /// Status answered; `None` when the connection was dropped by a fault.
    pub status: Option<u16>,
    /// True when a fault decided the outcome (status, or dropped connection).
    pub fault: bool,
    /// Arrival time, Unix milliseconds.
    pub at_unix_ms: u64,
}

/// Everything one account holds.
#[derive(Default)]
pub(crate) struct AccountState {
    pub uploads: HashMap<u64, Bytes>,
    pub apps: BTreeMap<u64, App>,
    pub jobs: HashMap<String, Job>,
    pub installations: BTreeMap<u64, Installation>,
    pub notifications: VecDeque<ReceivedNotification>,
    pub notify_attempts: VecDeque<ReceivedNotification>,
    /// Start times of the Notify requests counted in the rolling window.
    pub notify_window: VecDeque<Instant>,
}

/// Numeric ids; unique across all kinds and accounts, which makes mixing them up in a client
/// visible as a 404.
#[derive(Default)]
pub(crate) struct Ids(u64);

impl Ids {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// The whole simulator state.
pub(crate) struct State {
    pub accounts: HashMap<String, AccountState>,
    pub requests: VecDeque<RequestRecord>,
    pub faults: Vec<FaultRule>,
    pub ids: Ids,
    next_request_seq: u64,
}

impl State {
    pub(crate) fn new<'a>(subdomains: impl Iterator<Item = &'a str>) -> State {
        State {
            accounts: subdomains
                .map(|s| (s.to_string(), AccountState::default()))
                .collect(),
            requests: VecDeque::new(),
            faults: Vec::new(),
            ids: Ids::default(),
            next_request_seq: 0,
        }
    }

    pub(crate) fn log_request(&mut self, mut record: RequestRecord) {
        self.next_request_seq += 1;
        record.seq = self.next_request_seq;
        if self.requests.len() >= MAX_REQUEST_LOG {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }
}

/// Now as Unix milliseconds.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2020-06-11T06:12:48Z` for a Unix time in seconds.
pub(crate) fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The current time as `2020-06-11T06:12:48Z`.
pub(crate) fn now_iso() -> String {
    iso8601(unix_ms(SystemTime::now()) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_591_855_968), "2020-06-11T06:12:48Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}

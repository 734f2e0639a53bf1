//! The simulator's in-memory state, behind one mutex (no lock is ever held across an await),
//! together with the settings it runs with.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::faults::FaultRule;
use super::jobs::Job;
use super::records::{App, Installation};
use super::routes::Family;
use crate::config::sim::SimConfig;

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

impl AccountState {
    /// How many installations of an app the account has, through either family.
    pub(crate) fn installation_count(&self, app_id: u64) -> usize {
        self.installations
            .values()
            .filter(|i| i.app_id == app_id)
            .count()
    }

    /// The JSON of one of the account's apps, in a family's shape.
    pub(crate) fn app_json(&self, app: &App, family: Family, exclude: &[&str]) -> Value {
        app.to_json(family, self.installation_count(app.id), exclude)
    }
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

/// The simulator's settings and its state behind one mutex: what every handler works on.
pub(crate) struct Store {
    config: SimConfig,
    state: Mutex<State>,
}

impl Store {
    /// Empty state for these settings, with one empty account per configured subdomain.
    pub(crate) fn new(config: SimConfig) -> Store {
        let state = Mutex::new(Store::fresh_state(&config));
        Store { config, state }
    }

    fn fresh_state(config: &SimConfig) -> State {
        State::new(config.accounts.iter().map(|a| a.subdomain.as_str()))
    }

    /// The settings the simulator runs with.
    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The state, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps in a state worse than stale.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets everything: apps, uploads, jobs, installations, notifications, rate windows,
    /// the request log and fault rules.
    pub(crate) fn reset(&self) {
        let fresh = Store::fresh_state(&self.config);
        *self.lock() = fresh;
    }
}

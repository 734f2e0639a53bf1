//! The handles of the series a process has recorded into.
//!
//! Registering a series with the recorder hashes its name and labels and looks them up in
//! the recorder's registry, which costs many times the increment itself, and ingress and
//! delivery record on every request: each series' handle is registered once and kept here.
//! The per-account handles are forgotten when the per-account series stop being exported
//! (see [`Handles::forget_accounts`]); until then they are as many as the accounts that
//! recorded, as the recorder's own series are.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use metrics::{Counter, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::METADATA;

/// The `status` label of a counter's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// The counter has no `status` label.
    Unlabelled,
    /// No answer came (`status="error"`).
    Error,
    /// The HTTP status answered.
    Code(u16),
}

/// The labels of a series: its `account` label, if any, then its `status` label, if any.
fn labels(account: Option<&str>, status: Status) -> Vec<Label> {
    let mut labels = Vec::with_capacity(2);
    if let Some(account) = account {
        labels.push(Label::new("account", account.to_string()));
    }
    match status {
        Status::Unlabelled => {}
        Status::Error => labels.push(Label::new("status", "error")),
        Status::Code(code) => labels.push(Label::new("status", code.to_string())),
    }
    labels
}

/// A counter's name and `status` label: with its `account` label, if any, what names its
/// series.
type CounterKey = (&'static str, Status);

/// The name of the latency histogram.
const LATENCY: &str = "zenrelay_delivery_latency_seconds";

/// The handles registered so far.
#[derive(Default)]
pub(super) struct Handles(RwLock<Series>);

#[derive(Default)]
struct Series {
    /// Counters without an `account` label.
    totals: Vec<(CounterKey, Counter)>,
    /// Counters with an `account` label, by account.
    of_accounts: HashMap<String, Vec<(CounterKey, Counter)>>,
    /// The latency histogram without, and by, account.
    latency: Option<Histogram>,
    latency_of_accounts: HashMap<String, Histogram>,
}

impl Series {
    fn counters(&self, account: Option<&str>) -> Option<&Vec<(CounterKey, Counter)>> {
        match account {
            None => Some(&self.totals),
            Some(a) => self.of_accounts.get(a),
        }
    }
}

impl Handles {
    /// The counter `name` with the `status` label `status` and, when `account` is given,
    /// its `account` label; registered with `recorder` at its first use.
    pub(super) fn counter(
        &self,
        recorder: &PrometheusRecorder,
        name: &'static str,
        account: Option<&str>,
        status: Status,
    ) -> Counter {
        let key = (name, status);
        self.get_or_register(
            |series| {
                series
                    .counters(account)
                    .and_then(|list| list.iter().find(|(k, _)| *k == key))
                    .map(|(_, c)| c.clone())
            },
            |series| {
                let key_of = Key::from_parts(name, labels(account, status));
                let counter = recorder.register_counter(&key_of, &METADATA);
                let list = match account {
                    None => &mut series.totals,
                    Some(a) => series.of_accounts.entry(a.to_string()).or_default(),
                };
                list.push((key, counter.clone()));
                counter
            },
        )
    }

    /// The latency histogram, of `account` when given; registered with `recorder` at its
    /// first use.
    pub(super) fn latency(
        &self,
        recorder: &PrometheusRecorder,
        account: Option<&str>,
    ) -> Histogram {
        self.get_or_register(
            |series| match account {
                None => series.latency.clone(),
                Some(a) => series.latency_of_accounts.get(a).cloned(),
            },
            |series| {
                let key = Key::from_parts(LATENCY, labels(account, Status::Unlabelled));
                let h = recorder.register_histogram(&key, &METADATA);
                match account {
                    None => series.latency = Some(h.clone()),
                    Some(a) => {
                        series.latency_of_accounts.insert(a.to_string(), h.clone());
                    }
                }
                h
            },
        )
    }

    /// Forgets the per-account handles (the per-account series are no longer exported);
    /// those recorded into again are registered again.
    pub(super) fn forget_accounts(&self) {
        let mut series = self.0.write().unwrap_or_else(PoisonError::into_inner);
        series.of_accounts = HashMap::new();
        series.latency_of_accounts = HashMap::new();
    }

    /// What `find` finds, read under the shared lock; else, under the exclusive one, what
    /// `find` finds then (another caller may have registered it meanwhile) or `register`
    /// registers.
    fn get_or_register<T>(
        &self,
        find: impl Fn(&Series) -> Option<T>,
        register: impl FnOnce(&mut Series) -> T,
    ) -> T {
        if let Some(found) = find(&self.0.read().unwrap_or_else(PoisonError::into_inner)) {
            return found;
        }
        let mut series = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match find(&series) {
            Some(found) => found,
            None => register(&mut series),
        }
    }
}

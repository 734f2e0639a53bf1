//! Prometheus metrics of one gateway process.
//!
//! Counters and the latency histogram are recorded with the `metrics` crate into a
//! recorder owned by this process's state (no global recorder, so several gateways in one
//! test binary stay apart) and rendered by `metrics-exporter-prometheus`. Queue gauges are
//! computed at scrape time from the counters the queue scripts maintain
//! ([`crate::queue::Queue::stats`]), so every process reports the same, global values.
//!
//! Every metric has an aggregate series without an `account` label, always. While the
//! gateway knows at most `metrics.per_account_max` accounts, series with an `account`
//! label are exported as well; aggregates are then selected with `{account=""}`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `zenrelay_events_accepted_total` | counter | `account` |
//! | `zenrelay_notify_requests_total` | counter | `status` (upstream status, or `error` for transport failures), `account` |
//! | `zenrelay_delivery_latency_seconds` | histogram | `account`: accepted → delivered |
//! | `zenrelay_upstream_429_total` | counter | `account` |
//! | `zenrelay_proxy_requests_total` | counter | `status`, `account` |
//! | `zenrelay_queue_depth` | gauge | `account`: undelivered Notify calls |
//! | `zenrelay_queue_in_flight` | gauge | `account` |
//! | `zenrelay_queue_scheduled_retries` | gauge | `account` |
//! | `zenrelay_dead_letters` | gauge | `account` |
//! | `zenrelay_dead_letters_dropped_total` | counter | none: dead letters dropped after `delivery.dead_letter_retention_seconds` by this process's claims |
//! | `zenrelay_oldest_event_age_seconds` | gauge | `account` (aggregate: the maximum) |
//! | `zenrelay_sent_in_window` | gauge | `account`: Notify calls started in the current window |
//! | `zenrelay_account_paused` | gauge | `account`, `reason` (`operator` or `auth_failed`); aggregate: paused accounts |
//! | `zenrelay_accounts_auth_failed` | gauge | accounts held because upstream refused their credentials (no labels) |
//! | `zenrelay_accounts` | gauge | accounts known to the queue |
//! | `zenrelay_event_ttl_seconds` | gauge | `delivery.default_ttl_seconds`: the time-to-live budget alert rules compare ages with |
//! | `zenrelay_queue_up` | gauge | 1 when the queue storage answered the scrape, for one partition at least (queue gauges are absent otherwise) |
//! | `zenrelay_queue_partitions_unread` | gauge | queue partitions that could not be read for this scrape (their shard down, say): their accounts' gauges are from an earlier read, or absent |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{Level, Metadata};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::queue::QueueStats;
use series::{Handles, Status};

mod series;

/// Bucket bounds of `zenrelay_delivery_latency_seconds`, from 10 ms to 1 h.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The metrics of one gateway process.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    per_account_max: usize,
    per_account: AtomicBool,
    /// `delivery.default_ttl_seconds`, exported for alert rules.
    ttl_seconds: std::sync::atomic::AtomicU64,
    /// The latest queue snapshot and when it was read: scrapes within
    /// [`STATS_MAX_AGE`] share it, and concurrent scrapes wait for one read, so scraping
    /// (which needs no key) cannot keep Redis busy.
    stats: tokio::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<QueueStats>)>>,
    /// The handles of the series recorded so far.
    handles: Handles,
}

/// How long a queue snapshot serves scrapes.
pub const STATS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_account_max", &self.per_account_max)
            .finish()
    }
}

impl Metrics {
    /// Metrics with per-account series while at most `per_account_max` accounts are known;
    /// `known_accounts` is the count at startup.
    pub fn new(
        per_account_max: usize,
        known_accounts: usize,
    ) -> Result<Self, metrics_exporter_prometheus::BuildError> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("zenrelay_delivery_latency_seconds".into()),
                LATENCY_BUCKETS,
            )?
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Metrics {
            recorder,
            handle,
            per_account_max,
            per_account: AtomicBool::new(known_accounts <= per_account_max),
            ttl_seconds: std::sync::atomic::AtomicU64::new(0),
            stats: tokio::sync::Mutex::new(None),
            handles: Handles::default(),
        };
        // Present from the start, so dashboards and alerts find every name.
        for name in [
            "zenrelay_events_accepted_total",
            "zenrelay_upstream_429_total",
            "zenrelay_dead_letters_dropped_total",
        ] {
            metrics.total(name).absolute(0);
        }
        Ok(metrics)
    }

    /// Exports `seconds` as `zenrelay_event_ttl_seconds` (the default time to live).
    pub fn with_ttl(self, seconds: u64) -> Self {
        self.ttl_seconds.store(seconds, Ordering::Relaxed);
        self
    }

    /// The counter `name` without labels.
    fn total(&self, name: &'static str) -> metrics::Counter {
        self.handles
            .counter(&self.recorder, name, None, Status::Unlabelled)
    }

    /// Increments `name` (with the `status` label `status`) by `n` in the aggregate and,
    /// when enabled, the account's series.
    fn count(&self, name: &'static str, account: &str, status: Status, n: u64) {
        self.handles
            .counter(&self.recorder, name, None, status)
            .increment(n);
        if self.per_account.load(Ordering::Relaxed) {
            self.handles
                .counter(&self.recorder, name, Some(account), status)
                .increment(n);
        }
    }

    /// `n` events of `account` were stored.
    pub fn events_accepted(&self, account: &str, n: u64) {
        self.count(
            "zenrelay_events_accepted_total",
            account,
            Status::Unlabelled,
            n,
        );
    }

    /// A Notify call of `account` got `status` from upstream (`None`: no answer).
    pub fn notify_request(&self, account: &str, status: Option<u16>) {
        let status = status.map_or(Status::Error, Status::Code);
        self.count("zenrelay_notify_requests_total", account, status, 1);
    }

    /// `n` dead letters were dropped after their retention.
    pub fn dead_letters_dropped(&self, n: u64) {
        if n > 0 {
            self.total("zenrelay_dead_letters_dropped_total")
                .increment(n);
        }
    }

    /// Upstream answered 429 for `account`.
    pub fn upstream_429(&self, account: &str) {
        self.count(
            "zenrelay_upstream_429_total",
            account,
            Status::Unlabelled,
            1,
        );
    }

    /// A call of `account` was delivered `latency` after its event was accepted.
    pub fn delivered(&self, account: &str, latency: Duration) {
        let seconds = latency.as_secs_f64();
        self.handles.latency(&self.recorder, None).record(seconds);
        if self.per_account.load(Ordering::Relaxed) {
            self.handles
                .latency(&self.recorder, Some(account))
                .record(seconds);
        }
    }

    /// A proxied call of `account` was answered with `status`.
    pub fn proxy_request(&self, account: &str, status: u16) {
        self.count(
            "zenrelay_proxy_requests_total",
            account,
            Status::Code(status),
            1,
        );
    }

    /// The queue snapshot for a scrape: at most [`STATS_MAX_AGE`] old, read by one
    /// caller at a time.
    pub async fn queue_stats(
        &self,
        queue: &dyn crate::queue::Queue,
    ) -> Result<std::sync::Arc<QueueStats>, crate::queue::QueueError> {
        let mut cached = self.stats.lock().await;
        if let Some((at, stats)) = cached.as_ref() {
            if at.elapsed() < STATS_MAX_AGE {
                return Ok(stats.clone());
            }
        }
        let stats = std::sync::Arc::new(queue.stats().await?);
        *cached = Some((std::time::Instant::now(), stats.clone()));
        Ok(stats)
    }

    /// The Prometheus text: recorded metrics plus queue gauges from `stats`; without
    /// `stats` (storage unreachable) the counters alone, with `zenrelay_queue_up 0`.
    pub fn render(&self, stats: Option<&QueueStats>) -> String {
        let per_account = self.per_account_for(stats);
        let mut out = self.render_recorded(per_account);
        self.render_process_gauges(&mut out, stats.is_some());
        if let Some(stats) = stats {
            let _ = writeln!(
                out,
                "# HELP zenrelay_queue_partitions_unread Queue partitions that could not be read for this scrape; their accounts' gauges are from an earlier read.\n# TYPE zenrelay_queue_partitions_unread gauge\nzenrelay_queue_partitions_unread {}",
                stats.unread_partitions.len()
            );
            render_account_gauges(&mut out, stats, per_account);
            render_oldest_age(&mut out, stats, per_account);
            render_account_totals(&mut out, stats);
        }
        out
    }

    /// Whether this scrape exports per-account series: with `stats`, whether its accounts
    /// fit `per_account_max` (remembered for the counters recorded next); without, as
    /// last decided.
    fn per_account_for(&self, stats: Option<&QueueStats>) -> bool {
        match stats {
            Some(stats) => {
                let fits = stats.accounts.len() <= self.per_account_max;
                let was = self.per_account.swap(fits, Ordering::Relaxed);
                if was && !fits {
                    self.handles.forget_accounts();
                }
                fits
            }
            None => self.per_account.load(Ordering::Relaxed),
        }
    }

    /// The recorder's counters and histogram (the per-account series only when
    /// `per_account`), with `zenrelay_proxy_requests_total` at 0 until a call was proxied.
    fn render_recorded(&self, per_account: bool) -> String {
        let mut out = String::new();
        for line in self.handle.render().lines() {
            if per_account || !line.contains("account=\"") {
                out.push_str(line);
                out.push('\n');
            }
        }
        if !out.contains("zenrelay_proxy_requests_total") {
            out.push_str(
                "# TYPE zenrelay_proxy_requests_total counter\nzenrelay_proxy_requests_total 0\n\n",
            );
        }
        out
    }

    /// The gauges of this process: `zenrelay_event_ttl_seconds` (when set) and
    /// `zenrelay_queue_up`.
    fn render_process_gauges(&self, out: &mut String, up: bool) {
        let ttl = self.ttl_seconds.load(Ordering::Relaxed);
        if ttl > 0 {
            let _ = writeln!(
                out,
                "# HELP zenrelay_event_ttl_seconds Default time to live of an event (delivery.default_ttl_seconds).\n# TYPE zenrelay_event_ttl_seconds gauge\nzenrelay_event_ttl_seconds {ttl}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP zenrelay_queue_up Whether the queue storage answered this scrape.\n# TYPE zenrelay_queue_up gauge\nzenrelay_queue_up {}",
            u8::from(up)
        );
    }
}

/// A queue gauge summed over the accounts: its name, its help text, and its value for one
/// account.
type AccountGauge = (
    &'static str,
    &'static str,
    fn(&crate::queue::AccountStats) -> f64,
);

/// The queue gauges summed over the accounts, in the order they are rendered.
const ACCOUNT_GAUGES: [AccountGauge; 6] = [
    (
        "zenrelay_queue_depth",
        "Undelivered Notify calls (queued, in flight, awaiting retry).",
        |a| a.depth as f64,
    ),
    (
        "zenrelay_queue_in_flight",
        "Notify calls leased to a worker.",
        |a| a.in_flight as f64,
    ),
    (
        "zenrelay_queue_scheduled_retries",
        "Notify calls waiting for a scheduled retry.",
        |a| a.scheduled_retries as f64,
    ),
    (
        "zenrelay_dead_letters",
        "Dead letters kept for inspection or replay.",
        |a| a.dead as f64,
    ),
    (
        "zenrelay_sent_in_window",
        "Notify calls started in the current rolling window.",
        |a| a.sent_in_window as f64,
    ),
    (
        "zenrelay_account_paused",
        "Accounts whose delivery is held.",
        |a| f64::from(u8::from(a.paused || a.auth_failed)),
    ),
];

/// Each of [`ACCOUNT_GAUGES`]: the sum over the accounts, then (when `per_account`) each
/// account's value; `zenrelay_account_paused` also says why each account is held.
fn render_account_gauges(out: &mut String, stats: &QueueStats, per_account: bool) {
    for (name, help, value) in ACCOUNT_GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        let total: f64 = stats.accounts.iter().map(value).sum();
        let _ = writeln!(out, "{name} {total}");
        if !per_account {
            continue;
        }
        for a in &stats.accounts {
            let account = escape(&a.account);
            if name == "zenrelay_account_paused" {
                let reason = if a.auth_failed {
                    "auth_failed"
                } else {
                    "operator"
                };
                let _ = writeln!(
                    out,
                    "{name}{{account=\"{account}\",reason=\"{reason}\"}} {}",
                    value(a)
                );
            } else {
                let _ = writeln!(out, "{name}{{account=\"{account}\"}} {}", value(a));
            }
        }
    }
}

/// `zenrelay_oldest_event_age_seconds`, on the storage's clock: the oldest of all, then
/// (when `per_account`) each account's.
fn render_oldest_age(out: &mut String, stats: &QueueStats, per_account: bool) {
    let now = stats.now_ms;
    let age = |oldest: Option<u64>| oldest.map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0);
    let name = "zenrelay_oldest_event_age_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Age of the oldest undelivered event waiting or in flight.\n# TYPE {name} gauge"
    );
    let oldest = stats.accounts.iter().filter_map(|a| a.oldest_ms).min();
    let _ = writeln!(out, "{name} {}", age(oldest));
    if per_account {
        for a in &stats.accounts {
            let _ = writeln!(
                out,
                "{name}{{account=\"{}\"}} {}",
                escape(&a.account),
                age(a.oldest_ms)
            );
        }
    }
}

/// The account counts: `zenrelay_accounts_auth_failed` and `zenrelay_accounts`.
fn render_account_totals(out: &mut String, stats: &QueueStats) {
    let _ = writeln!(
        out,
        "# HELP zenrelay_accounts_auth_failed Accounts held because upstream refused their credentials.\n# TYPE zenrelay_accounts_auth_failed gauge\nzenrelay_accounts_auth_failed {}",
        stats.accounts.iter().filter(|a| a.auth_failed).count()
    );
    let _ = writeln!(
        out,
        "# HELP zenrelay_accounts Accounts known to the queue.\n# TYPE zenrelay_accounts gauge\nzenrelay_accounts {}",
        stats.accounts.len()
    );
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::AccountStats;

    fn stats(n: usize) -> QueueStats {
        QueueStats {
            now_ms: 10_000,
            accounts: (0..n)
                .map(|i| AccountStats {
                    account: format!("a{i}"),
                    depth: 2,
                    oldest_ms: Some(4_000),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn kept_handles_count_into_the_series_they_name() {
        let m = Metrics::new(2, 2).unwrap();
        for _ in 0..3 {
            m.notify_request("a0", Some(200));
            m.notify_request("a0", None);
            m.notify_request("a1", Some(200));
            m.proxy_request("a1", 404);
            m.events_accepted("a1", 2);
            m.delivered("a0", Duration::from_millis(20));
        }
        let text = m.render(Some(&stats(2)));
        for line in [
            "zenrelay_notify_requests_total{status=\"200\"} 6",
            "zenrelay_notify_requests_total{status=\"error\"} 3",
            "zenrelay_notify_requests_total{account=\"a0\",status=\"200\"} 3",
            "zenrelay_notify_requests_total{account=\"a0\",status=\"error\"} 3",
            "zenrelay_notify_requests_total{account=\"a1\",status=\"200\"} 3",
            "zenrelay_proxy_requests_total{account=\"a1\",status=\"404\"} 3",
            "zenrelay_events_accepted_total 6",
            "zenrelay_events_accepted_total{account=\"a1\"} 6",
            "zenrelay_delivery_latency_seconds_count 3",
            "zenrelay_delivery_latency_seconds_count{account=\"a0\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // once the accounts outgrow the bound, only the aggregates count on
        let _ = m.render(Some(&stats(3)));
        m.notify_request("a0", Some(200));
        m.events_accepted("a1", 1);
        let text = m.render(Some(&stats(2)));
        assert!(
            text.contains("zenrelay_notify_requests_total{status=\"200\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("zenrelay_notify_requests_total{account=\"a0\",status=\"200\"} 3"),
            "{text}"
        );
        assert!(text.contains("zenrelay_events_accepted_total 7"), "{text}");
        assert!(
            text.contains("zenrelay_events_accepted_total{account=\"a1\"} 6"),
            "{text}"
        );
        // back under the bound (the scrape above), the accounts' series count on from
        // where they were, through handles registered again
        m.notify_request("a0", Some(200));
        m.delivered("a0", Duration::from_millis(20));
        let text = m.render(Some(&stats(2)));
        assert!(
            text.contains("zenrelay_notify_requests_total{account=\"a0\",status=\"200\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("zenrelay_delivery_latency_seconds_count{account=\"a0\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn renders_aggregates_always_and_accounts_under_the_bound() {
        let m = Metrics::new(2, 2).unwrap();
        m.events_accepted("a0", 3);
        m.notify_request("a0", Some(200));
        m.delivered("a0", Duration::from_millis(300));
        let text = m.render(Some(&stats(2)));
        assert!(text.contains("zenrelay_events_accepted_total 3"), "{text}");
        assert!(
            text.contains("zenrelay_events_accepted_total{account=\"a0\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("zenrelay_notify_requests_total{status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("zenrelay_delivery_latency_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("zenrelay_delivery_latency_seconds_bucket{le=\"0.25\"} 0"),
            "{text}"
        );
        assert!(text.contains("zenrelay_queue_depth 4"), "{text}");
        assert!(
            text.contains("zenrelay_queue_depth{account=\"a1\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("zenrelay_oldest_event_age_seconds 6"),
            "{text}"
        );

        let text = m.render(Some(&stats(3)));
        assert!(!text.contains("account=\""), "{text}");
        assert!(text.contains("zenrelay_queue_depth 6"), "{text}");
        assert!(text.contains("zenrelay_events_accepted_total 3"), "{text}");
        assert!(text.contains("zenrelay_accounts_auth_failed 0"), "{text}");
        assert!(!text.contains("zenrelay_event_ttl_seconds"), "{text}");

        let text = m.render(None);
        assert!(text.contains("zenrelay_queue_up 0"), "{text}");
        assert!(text.contains("zenrelay_events_accepted_total 3"), "{text}");
        let text = Metrics::new(2, 2).unwrap().with_ttl(600).render(None);
        assert!(text.contains("zenrelay_event_ttl_seconds 600"), "{text}");
    }

    /// What `renders_every_family_exactly` renders with the queue's stats.
    const RENDERED_UP: &str = r#"# TYPE zenrelay_notify_requests_total counter
zenrelay_notify_requests_total{status="200"} 1
zenrelay_notify_requests_total{status="error"} 1
zenrelay_notify_requests_total{account="a\"1",status="error"} 1
zenrelay_notify_requests_total{account="a0",status="200"} 1

# TYPE zenrelay_events_accepted_total counter
zenrelay_events_accepted_total 3
zenrelay_events_accepted_total{account="a0"} 3

# TYPE zenrelay_upstream_429_total counter
zenrelay_upstream_429_total 1
zenrelay_upstream_429_total{account="a\"1"} 1

# TYPE zenrelay_dead_letters_dropped_total counter
zenrelay_dead_letters_dropped_total 2

# TYPE zenrelay_delivery_latency_seconds histogram
zenrelay_delivery_latency_seconds_bucket{le="0.01"} 0
zenrelay_delivery_latency_seconds_bucket{le="0.025"} 0
zenrelay_delivery_latency_seconds_bucket{le="0.05"} 0
zenrelay_delivery_latency_seconds_bucket{le="0.1"} 0
zenrelay_delivery_latency_seconds_bucket{le="0.25"} 0
zenrelay_delivery_latency_seconds_bucket{le="0.5"} 1
zenrelay_delivery_latency_seconds_bucket{le="1"} 1
zenrelay_delivery_latency_seconds_bucket{le="2.5"} 1
zenrelay_delivery_latency_seconds_bucket{le="5"} 1
zenrelay_delivery_latency_seconds_bucket{le="10"} 1
zenrelay_delivery_latency_seconds_bucket{le="30"} 1
zenrelay_delivery_latency_seconds_bucket{le="60"} 1
zenrelay_delivery_latency_seconds_bucket{le="120"} 1
zenrelay_delivery_latency_seconds_bucket{le="300"} 1
zenrelay_delivery_latency_seconds_bucket{le="600"} 1
zenrelay_delivery_latency_seconds_bucket{le="1800"} 1
zenrelay_delivery_latency_seconds_bucket{le="3600"} 1
zenrelay_delivery_latency_seconds_bucket{le="+Inf"} 1
zenrelay_delivery_latency_seconds_sum 0.3
zenrelay_delivery_latency_seconds_count 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="0.01"} 0
zenrelay_delivery_latency_seconds_bucket{account="a0",le="0.025"} 0
zenrelay_delivery_latency_seconds_bucket{account="a0",le="0.05"} 0
zenrelay_delivery_latency_seconds_bucket{account="a0",le="0.1"} 0
zenrelay_delivery_latency_seconds_bucket{account="a0",le="0.25"} 0
zenrelay_delivery_latency_seconds_bucket{account="a0",le="0.5"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="1"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="2.5"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="5"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="10"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="30"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="60"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="120"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="300"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="600"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="1800"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="3600"} 1
zenrelay_delivery_latency_seconds_bucket{account="a0",le="+Inf"} 1
zenrelay_delivery_latency_seconds_sum{account="a0"} 0.3
zenrelay_delivery_latency_seconds_count{account="a0"} 1

# TYPE zenrelay_proxy_requests_total counter
zenrelay_proxy_requests_total 0

# HELP zenrelay_event_ttl_seconds Default time to live of an event (delivery.default_ttl_seconds).
# TYPE zenrelay_event_ttl_seconds gauge
zenrelay_event_ttl_seconds 900
# HELP zenrelay_queue_up Whether the queue storage answered this scrape.
# TYPE zenrelay_queue_up gauge
zenrelay_queue_up 1
# HELP zenrelay_queue_partitions_unread Queue partitions that could not be read for this scrape; their accounts' gauges are from an earlier read.
# TYPE zenrelay_queue_partitions_unread gauge
zenrelay_queue_partitions_unread 1
# HELP zenrelay_queue_depth Undelivered Notify calls (queued, in flight, awaiting retry).
# TYPE zenrelay_queue_depth gauge
zenrelay_queue_depth 4
zenrelay_queue_depth{account="a0"} 3
zenrelay_queue_depth{account="a\"1\\\n"} 1
# HELP zenrelay_queue_in_flight Notify calls leased to a worker.
# TYPE zenrelay_queue_in_flight gauge
zenrelay_queue_in_flight 1
zenrelay_queue_in_flight{account="a0"} 1
zenrelay_queue_in_flight{account="a\"1\\\n"} 0
# HELP zenrelay_queue_scheduled_retries Notify calls waiting for a scheduled retry.
# TYPE zenrelay_queue_scheduled_retries gauge
zenrelay_queue_scheduled_retries 1
zenrelay_queue_scheduled_retries{account="a0"} 1
zenrelay_queue_scheduled_retries{account="a\"1\\\n"} 0
# HELP zenrelay_dead_letters Dead letters kept for inspection or replay.
# TYPE zenrelay_dead_letters gauge
zenrelay_dead_letters 2
zenrelay_dead_letters{account="a0"} 2
zenrelay_dead_letters{account="a\"1\\\n"} 0
# HELP zenrelay_sent_in_window Notify calls started in the current rolling window.
# TYPE zenrelay_sent_in_window gauge
zenrelay_sent_in_window 5
zenrelay_sent_in_window{account="a0"} 5
zenrelay_sent_in_window{account="a\"1\\\n"} 0
# HELP zenrelay_account_paused Accounts whose delivery is held.
# TYPE zenrelay_account_paused gauge
zenrelay_account_paused 2
zenrelay_account_paused{account="a0",reason="operator"} 1
zenrelay_account_paused{account="a\"1\\\n",reason="auth_failed"} 1
# HELP zenrelay_oldest_event_age_seconds Age of the oldest undelivered event waiting or in flight.
# TYPE zenrelay_oldest_event_age_seconds gauge
zenrelay_oldest_event_age_seconds 6
zenrelay_oldest_event_age_seconds{account="a0"} 6
zenrelay_oldest_event_age_seconds{account="a\"1\\\n"} 1.5
# HELP zenrelay_accounts_auth_failed Accounts held because upstream refused their credentials.
# TYPE zenrelay_accounts_auth_failed gauge
zenrelay_accounts_auth_failed 1
# HELP zenrelay_accounts Accounts known to the queue.
# TYPE zenrelay_accounts gauge
zenrelay_accounts 2
"#;

    /// What it renders without them.
    const RENDERED_DOWN: &str = r#"# TYPE zenrelay_upstream_429_total counter
zenrelay_upstream_429_total 0

# TYPE zenrelay_proxy_requests_total counter
zenrelay_proxy_requests_total{account="a0",status="502"} 1
zenrelay_proxy_requests_total{status="502"} 1

# TYPE zenrelay_dead_letters_dropped_total counter
zenrelay_dead_letters_dropped_total 0

# TYPE zenrelay_events_accepted_total counter
zenrelay_events_accepted_total 0

# HELP zenrelay_queue_up Whether the queue storage answered this scrape.
# TYPE zenrelay_queue_up gauge
zenrelay_queue_up 0
"#;

    /// The recorder's part of a rendering (its metric families come in no fixed order)
    /// as sorted lines, and the rest, which is written here in a fixed order.
    fn parts(text: &str) -> (Vec<&str>, &str) {
        let at = text.find("# HELP ").expect("the gauges are rendered");
        let mut recorded: Vec<&str> = text[..at].split('\n').collect();
        recorded.sort_unstable();
        (recorded, &text[at..])
    }

    #[test]
    fn renders_every_family_exactly() {
        let m = Metrics::new(3, 2).unwrap().with_ttl(900);
        m.events_accepted("a0", 3);
        m.notify_request("a0", Some(200));
        m.notify_request("a\"1", None);
        m.upstream_429("a\"1");
        m.delivered("a0", Duration::from_millis(300));
        m.dead_letters_dropped(2);
        let stats = QueueStats {
            now_ms: 10_000,
            accounts: vec![
                AccountStats {
                    account: "a0".into(),
                    depth: 3,
                    in_flight: 1,
                    scheduled_retries: 1,
                    dead: 2,
                    oldest_ms: Some(4_000),
                    sent_in_window: 5,
                    paused: true,
                    ..Default::default()
                },
                AccountStats {
                    account: "a\"1\\\n".into(),
                    depth: 1,
                    oldest_ms: Some(8_500),
                    auth_failed: true,
                    ..Default::default()
                },
            ],
            unread_partitions: vec![3],
            ..Default::default()
        };
        let text = m.render(Some(&stats));
        assert_eq!(parts(&text), parts(RENDERED_UP), "{text}");

        let m = Metrics::new(1, 0).unwrap();
        m.proxy_request("a0", 502);
        let text = m.render(None);
        assert_eq!(parts(&text), parts(RENDERED_DOWN), "{text}");
    }
}

//! Queue history kept by this process for the dashboard's charts (`GET /v1/history`).
//!
//! A sampler task ([`run_sampler`]) reads the queue snapshot every
//! `metrics.history_interval_seconds` (10 s by default) and appends one point to a ring of
//! [`CAPACITY`] points (an hour at 10 s): one ring for the total, one per account. It reads
//! the same shared snapshot as `/metrics` scrapes ([`crate::metrics::Metrics::queue_stats`]),
//! so sampling adds at most one stats read per interval and none while scrapes are frequent.
//!
//! Memory stays bounded with 10,000 accounts: an account gets a ring only once it has work
//! queued, in flight or awaiting retry, and loses it after a full ring of points without work
//! or change in deliveries or dead letters; at most
//! `metrics.history_accounts_max` accounts (1,000 by default, about 11 KB each) have a ring
//! at a time, the others are reported as not tracked until a ring frees up.
//!
//! The history lives in the process and starts empty with it. Every gateway process samples
//! the same shared counters in Redis, so each shows the same values, over the time since its
//! own start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::metrics::Metrics;
use crate::queue::{Queue, QueueStats};

/// Points kept per ring (an hour at the default 10 s interval).
pub const CAPACITY: usize = 360;

/// One sample of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sample {
    /// The storage's clock (Unix ms).
    t_ms: u64,
    depth: u64,
    dead: u64,
    /// Deliveries since the account was first seen (a counter).
    delivered: u64,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// Samples in a row without activity.
    idle: usize,
}

impl Ring {
    fn push(&mut self, sample: Sample) {
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

#[derive(Debug, Default)]
struct Rings {
    total: Ring,
    accounts: HashMap<String, Ring>,
    /// Accounts with activity in the last sample that had no ring (the cap was reached).
    untracked: usize,
}

/// The in-process history of queue depth, dead letters and deliveries.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    accounts_max: usize,
    rings: Mutex<Rings>,
}

/// One point of a chart.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// When it was sampled (Unix ms, the storage's clock).
    pub t: u64,
    /// Undelivered Notify calls.
    pub depth: u64,
    /// Dead letters.
    pub dead: u64,
    /// Deliveries per minute over the minute before this point (over the points there are,
    /// or since the previous point when points are a minute or more apart; absent on the
    /// first point).
    pub delivered_per_minute: Option<f64>,
}

/// The history of one account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountHistory {
    /// The account.
    pub account: String,
    /// Whether this process keeps a ring for it (only accounts with recent activity, at
    /// most `metrics.history_accounts_max`); `points` is empty when not.
    pub tracked: bool,
    /// Oldest first.
    pub points: Vec<HistoryPoint>,
}

/// `GET /v1/history`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryView {
    /// Seconds between points.
    pub interval_seconds: u64,
    /// Most points kept per series.
    pub capacity: usize,
    /// Accounts with a ring now.
    pub tracked_accounts: usize,
    /// Accounts with activity that have no ring because the cap was reached.
    pub untracked_active_accounts: usize,
    /// Every account together, oldest first; absent for keys limited to some accounts.
    pub total: Option<Vec<HistoryPoint>>,
    /// The account asked for with `?account=`.
    pub account: Option<AccountHistory>,
}

impl History {
    /// An empty history sampled every `interval`, with rings for at most `accounts_max`
    /// accounts.
    pub fn new(interval: Duration, accounts_max: usize) -> Self {
        History {
            interval,
            accounts_max,
            rings: Mutex::new(Rings::default()),
        }
    }

    /// Time between samples.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Points a delivery rate looks back over: a minute's worth, at least one.
    fn rate_lookback(&self) -> usize {
        let interval_ms = self.interval.as_millis().max(1);
        (60_000_u128.div_ceil(interval_ms)).max(1) as usize
    }

    /// Appends one point per series from `stats`.
    pub fn record(&self, stats: &QueueStats) {
        let t_ms = stats.now_ms;
        let mut rings = self.lock();
        let rings = &mut *rings;
        // A snapshot already recorded (it served a scrape and this sample alike).
        if rings.total.last().is_some_and(|l| l.t_ms >= t_ms) {
            return;
        }
        let mut total = Sample {
            t_ms,
            ..Sample::default()
        };
        let mut untracked = 0;
        let mut seen = std::collections::HashSet::with_capacity(rings.accounts.len());
        for a in &stats.accounts {
            total.depth += a.depth;
            total.dead += a.dead;
            total.delivered += a.delivered;
            let sample = Sample {
                t_ms,
                depth: a.depth,
                dead: a.dead,
                delivered: a.delivered,
            };
            let ring = match rings.accounts.get_mut(&a.account) {
                Some(ring) => ring,
                None => {
                    // Without a ring, activity is judged by the current state: work waiting
                    // (dead letters alone are not activity, or an account keeping some
                    // would get a ring back as soon as it lost it).
                    if a.depth == 0 {
                        continue;
                    }
                    if rings.accounts.len() >= self.accounts_max {
                        untracked += 1;
                        continue;
                    }
                    rings.accounts.entry(a.account.clone()).or_default()
                }
            };
            let active = sample.depth > 0
                || ring.last().map_or(true, |l| {
                    l.dead != sample.dead || l.delivered != sample.delivered
                });
            ring.idle = if active { 0 } else { ring.idle + 1 };
            ring.push(sample);
            seen.insert(a.account.as_str());
        }
        rings
            .accounts
            .retain(|id, ring| seen.contains(id.as_str()) && ring.idle < CAPACITY);
        rings.untracked = untracked;
        rings.total.push(total);
    }

    /// The total (when `with_total`) and the history of `account`, if asked for.
    pub fn view(&self, with_total: bool, account: Option<&str>) -> HistoryView {
        let rings = self.lock();
        HistoryView {
            interval_seconds: self.interval.as_secs(),
            capacity: CAPACITY,
            tracked_accounts: rings.accounts.len(),
            untracked_active_accounts: rings.untracked,
            total: with_total.then(|| points(&rings.total, self.rate_lookback())),
            account: account.map(|id| {
                let ring = rings.accounts.get(id);
                AccountHistory {
                    account: id.to_string(),
                    tracked: ring.is_some(),
                    points: ring
                        .map(|r| points(r, self.rate_lookback()))
                        .unwrap_or_default(),
                }
            }),
        }
    }
}

/// A ring's points, with the delivery rate over the `lookback` points before each (a counter
/// that went down, e.g. after the storage was emptied, counts as no deliveries).
fn points(ring: &Ring, lookback: usize) -> Vec<HistoryPoint> {
    ring.samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rate = i.checked_sub(1).and_then(|_| {
                let p = &ring.samples[i.saturating_sub(lookback)];
                let dt = s.t_ms.saturating_sub(p.t_ms);
                (dt > 0)
                    .then(|| s.delivered.saturating_sub(p.delivered) as f64 * 60_000.0 / dt as f64)
            });
            HistoryPoint {
                t: s.t_ms,
                depth: s.depth,
                dead: s.dead,
                delivered_per_minute: rate,
            }
        })
        .collect()
}

/// Samples the queue into `history` every interval until `token` is cancelled; a failed
/// read leaves a gap (no point) in the charts.
pub async fn run_sampler(
    history: Arc<History>,
    metrics: Arc<Metrics>,
    queue: Arc<dyn Queue>,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(history.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match metrics.queue_stats(queue.as_ref()).await {
            Ok(stats) => history.record(&stats),
            Err(e) => tracing::debug!(error = %e, "history sample skipped: queue unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::AccountStats;

    fn stats(now_ms: u64, accounts: &[(&str, u64, u64, u64)]) -> QueueStats {
        QueueStats {
            now_ms,
            accounts: accounts
                .iter()
                .map(|&(id, depth, dead, delivered)| AccountStats {
                    account: id.into(),
                    depth,
                    dead,
                    delivered,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn totals_and_rates_between_points() {
        let h = History::new(Duration::from_secs(10), 10);
        h.record(&stats(0, &[("a", 5, 0, 0), ("b", 1, 1, 10)]));
        h.record(&stats(10_000, &[("a", 3, 0, 20), ("b", 0, 1, 10)]));
        let view = h.view(true, Some("a"));
        let total = view.total.unwrap();
        assert_eq!(total.len(), 2);
        assert_eq!(total[0].depth, 6);
        assert_eq!(total[0].delivered_per_minute, None);
        assert_eq!(total[1].delivered_per_minute, Some(120.0));
        h.record(&stats(20_000, &[("a", 0, 0, 30), ("b", 0, 1, 10)]));
        let total = h.view(true, None).total.unwrap();
        // Over the minute before: both intervals.
        assert_eq!(total[2].delivered_per_minute, Some(90.0));
        let a = view.account.unwrap();
        assert!(a.tracked);
        assert_eq!(a.points[1].depth, 3);
        assert!(h.view(false, None).total.is_none());
    }

    #[test]
    fn idle_accounts_get_no_ring_and_the_cap_holds() {
        let h = History::new(Duration::from_secs(1), 2);
        let many: Vec<(String, u64)> = (0..5).map(|i| (format!("busy{i}"), 1)).collect();
        let mut accounts: Vec<(&str, u64, u64, u64)> =
            many.iter().map(|(id, d)| (id.as_str(), *d, 0, 0)).collect();
        accounts.push(("idle", 0, 0, 0));
        h.record(&stats(0, &accounts));
        let view = h.view(true, Some("idle"));
        assert_eq!(view.tracked_accounts, 2);
        assert_eq!(view.untracked_active_accounts, 3);
        assert!(!view.account.unwrap().tracked);
        assert_eq!(view.total.unwrap()[0].depth, 5);
    }

    #[test]
    fn a_ring_is_dropped_after_a_full_ring_of_idle_points() {
        let h = History::new(Duration::from_secs(1), 10);
        h.record(&stats(0, &[("a", 1, 0, 0)]));
        for i in 1..=CAPACITY as u64 {
            h.record(&stats(i * 1000, &[("a", 0, 0, 1)]));
        }
        assert!(h.view(false, Some("a")).account.unwrap().tracked);
        h.record(&stats(1_000_000, &[("a", 0, 0, 1)]));
        assert!(!h.view(false, Some("a")).account.unwrap().tracked);
        assert_eq!(h.view(true, None).total.unwrap().len(), CAPACITY);
    }
}

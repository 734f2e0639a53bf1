//! The delivery worker: claim → send → record, under each account's limit.
//!
//! Each process runs one [`Worker`]. It walks the partitions, claims as many deliveries as
//! it has free concurrency (the queue decides which accounts may send and takes their rate
//! slots), sends each in its own task, and hands the outcomes to a completer task that
//! records them in batches. A partition whose storage fails sits out a short backoff while
//! the others go on. It never sleeps in a task to wait for a rate slot:
//! a throttled account is simply not claimable until its slot frees. A partition whose
//! claim found nothing is left alone until what the claim said falls due next, until work
//! is stored in it (by this process, or announced by another, [`Wake`]), or until the idle
//! poll: the claims of an idle worker cost the same whatever the partition count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::accounts::AccountDirectory;
use crate::config::DeliveryConfig;
use crate::domain::EventId;
use crate::metrics::Metrics;
use crate::queue::{Claimed, Completion, DeadReason, Outcome, Queue, QueueError};
use crate::zendesk::{NotifyResult, ZendeskClient};

/// Most deliveries claimed from one partition in one call.
const CLAIM_MAX: usize = 256;

/// Most completions recorded in one pipelined round trip.
const COMPLETE_BATCH: usize = 512;

/// Fewest slots offered to a partition in one claim (unless fewer are free): a claim
/// call has a fixed cost in Redis, so a few free slots go to a few partitions, and the
/// next passes serve the others.
const MIN_SHARE: usize = 8;

/// Splits `free` slots over `ready` partitions, in their order: as many partitions as can
/// get `MIN_SHARE` slots each (at least one), each an equal share and the first ones the
/// remainder.
fn share_slots(free: usize, ready: &[u16]) -> Vec<(u16, usize)> {
    if ready.is_empty() {
        return Vec::new();
    }
    let served = (free / MIN_SHARE).clamp(1, ready.len());
    ready[..served]
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, free / served + usize::from(i < free % served)))
        .filter(|(_, share)| *share > 0)
        .collect()
}

/// What wakes an idle worker: work stored in some partitions (or in any), told by this
/// process (ingress, recorded completions, operator actions) or announced by others.
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    marked: std::sync::Mutex<Marked>,
}

/// The partitions told to have work since the worker last looked (a set: at most one
/// entry per partition, however often ingress tells it while no worker looks).
#[derive(Default)]
struct Marked {
    all: bool,
    partitions: std::collections::BTreeSet<u16>,
}

impl Wake {
    /// Work is waiting in `partition`.
    pub fn partition(&self, partition: u16) {
        self.partitions([partition]);
    }

    /// Work is waiting in each of `partitions`.
    pub fn partitions(&self, partitions: impl IntoIterator<Item = u16>) {
        self.lock().partitions.extend(partitions);
        self.notify.notify_one();
    }

    /// Work may be waiting in any partition.
    pub fn all(&self) {
        self.lock().all = true;
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marked> {
        self.marked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clears the quiet time of every partition told to have work.
    fn apply(&self, quiet: &mut [Option<tokio::time::Instant>]) {
        let marked = std::mem::take(&mut *self.lock());
        if marked.all {
            quiet.iter_mut().for_each(|q| *q = None);
        }
        for p in marked.partitions {
            if let Some(q) = quiet.get_mut(usize::from(p)) {
                *q = None;
            }
        }
    }
}

/// Partitions whose idle claims, while the queue announces new work, are spread over
/// one `delivery.idle_poll_ms` each: with more, a partition that found nothing is looked
/// at again less often, so an idle worker costs Redis the same whatever the count.
pub const IDLE_PARTITIONS: u16 = 16;

/// Retry policy of Notify calls: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry.
    pub base: Duration,
    /// Largest backoff.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempt`: uniform in
    /// `[0, min(cap, base × 2^(attempt-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.cap).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }
}

/// Everything the worker needs.
#[derive(Clone)]
pub struct Worker {
    queue: Arc<dyn Queue>,
    client: ZendeskClient,
    accounts: Arc<AccountDirectory>,
    metrics: Option<Arc<Metrics>>,
    policy: RetryPolicy,
    concurrency: usize,
    poll_interval: Duration,
    /// The idle poll while the queue announces new work.
    idle_poll: Duration,
    drain_timeout: Duration,
    wake: Arc<Wake>,
    /// The lease of a claim and the longest a send may take: a send starts only while at
    /// least the latter is left of the former.
    lease: Option<(Duration, Duration)>,
}

/// How a worker claims, sends, waits and retries.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Backoff of retried calls.
    pub policy: RetryPolicy,
    /// Most calls in flight.
    pub concurrency: usize,
    /// Idle poll while the queue does not announce new work.
    pub poll_interval: Duration,
    /// Idle poll while it does ([`Queue::listen_for_work`]), which wakes the worker at
    /// once for the partitions it names; work that falls due later (retries, rate
    /// windows, leases running out, held accounts' checks) wakes it when due, as the
    /// claims say. A partition whose claim found nothing is claimed again after this, times
    /// the partitions over [`IDLE_PARTITIONS`] when there are more. At least
    /// `poll_interval`.
    pub idle_poll: Duration,
    /// How long in-flight sends may take to finish at shutdown.
    pub drain_timeout: Duration,
    /// The lease of a claim, and the longest a send may take (the upstream timeout): a
    /// send starts only while at least the latter is left of the former, as measured by
    /// this process from before it asked for the claim (the queue starts the lease later,
    /// so this errs on the safe side). A process that stalled (paused, swapping,
    /// starved) past that releases the delivery instead: once its lease ends, the queue
    /// counts the call as sent and another process may send it, so a late send could
    /// put `limit + 1` calls in one upstream window. `None`: no such check.
    pub lease: Option<(Duration, Duration)>,
}

impl From<&DeliveryConfig> for WorkerSettings {
    fn from(d: &DeliveryConfig) -> Self {
        WorkerSettings {
            policy: RetryPolicy {
                max_attempts: d.max_attempts,
                base: Duration::from_millis(d.retry_base_ms),
                cap: Duration::from_millis(d.retry_max_ms),
            },
            concurrency: d.concurrency,
            poll_interval: Duration::from_millis(d.poll_interval_ms),
            idle_poll: Duration::from_millis(d.idle_poll_ms),
            drain_timeout: d.upstream_timeout() + Duration::from_secs(1),
            lease: Some((d.lease(), d.upstream_timeout())),
        }
    }
}

impl Worker {
    /// A worker over `queue`, sending with `client`; `wake` wakes it when this process
    /// stored work.
    pub fn new(
        queue: Arc<dyn Queue>,
        client: ZendeskClient,
        accounts: Arc<AccountDirectory>,
        settings: WorkerSettings,
        wake: Arc<Wake>,
    ) -> Self {
        Worker {
            queue,
            client,
            accounts,
            metrics: None,
            policy: settings.policy,
            concurrency: settings.concurrency.max(1),
            poll_interval: settings.poll_interval,
            idle_poll: settings.idle_poll.max(settings.poll_interval),
            drain_timeout: settings.drain_timeout,
            wake,
            lease: settings.lease,
        }
    }

    /// Records delivery metrics into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs until `shutdown` fires, then lets in-flight sends finish (each is bounded by
    /// the upstream timeout) and records their outcomes before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (tx, rx) = mpsc::channel::<Completion>(self.concurrency * 2);
        let completer = tokio::spawn(record_completions(
            self.queue.clone(),
            rx,
            shutdown.clone(),
            self.wake.clone(),
        ));
        let listening = Arc::new(AtomicBool::new(false));
        let listener = tokio::spawn(listen_for_work(
            self.queue.clone(),
            self.wake.clone(),
            listening.clone(),
            shutdown.clone(),
        ));
        // Claims are cheaper in batches: when every slot is taken, wait until a few are
        // free (or briefly) before claiming again.
        let low_water = (self.concurrency / 8).max(1);
        let freed = Arc::new(Notify::new());
        let tracker = TaskTracker::new();
        let partitions = self.queue.partitions().max(1);
        let mut start = 0u16;
        let mut redis_down = false;
        let mut failing: HashMap<u16, PartitionFailure> = HashMap::new();
        // Per partition, until when its last claim found nothing to send (`None`: claim
        // it): what the claim said falls due next (a retry, a rate window, a lease running
        // out, a held account's check), at most the idle poll away. Work stored meanwhile
        // clears it (see [`Wake`]).
        let mut quiet: Vec<Option<tokio::time::Instant>> = vec![None; usize::from(partitions)];
        while !shutdown.is_cancelled() {
            self.wake.apply(&mut quiet);
            let now = tokio::time::Instant::now();
            let idle_poll = if listening.load(Ordering::SeqCst) {
                self.idle_poll * u32::from(partitions.div_ceil(IDLE_PARTITIONS).max(1))
            } else {
                self.poll_interval
            };
            // The partitions to claim, in turn from `start`: the ones not quiet, and not
            // sitting out a failure (the others are claimed as usual).
            let ready: Vec<u16> = (0..partitions)
                .map(|i| (start + i) % partitions)
                .filter(|p| quiet[usize::from(*p)].map_or(true, |until| until <= now))
                .filter(|p| failing.get(p).map_or(true, |f| f.retry_at <= now))
                .collect();
            let free = permits.available_permits().min(CLAIM_MAX * ready.len());
            let requests = if free > 0 {
                share_slots(free, &ready)
            } else {
                Vec::new()
            };
            let mut failed = false;
            if !requests.is_empty() {
                let asked = now;
                let claimed = self.queue.claim_each(&requests).await;
                if let Some(metrics) = &self.metrics {
                    metrics.dead_letters_dropped(self.queue.take_dead_letters_dropped());
                }
                let answered = tokio::time::Instant::now();
                let mut failures = 0usize;
                for (&(partition, _), result) in requests.iter().zip(claimed) {
                    let batch = match result {
                        Ok(batch) => {
                            if let Some(f) = failing.remove(&partition) {
                                tracing::info!(
                                    partition,
                                    failed_for_ms = f.since.elapsed().as_millis() as u64,
                                    "queue partition reachable again; its delivery resumes"
                                );
                            }
                            batch
                        }
                        Err(e) => {
                            failures += 1;
                            let f = failing.entry(partition).or_insert_with(|| {
                                tracing::warn!(partition, error = %e, "cannot claim deliveries of a queue partition; the others go on, it is retried");
                                PartitionFailure {
                                    since: answered,
                                    retry_at: answered,
                                }
                            });
                            f.retry_at = answered + PARTITION_BACKOFF;
                            // Claimed again once its backoff ends, not at a stale time.
                            quiet[usize::from(partition)] = None;
                            continue;
                        }
                    };
                    quiet[usize::from(partition)] = if batch.items.is_empty() {
                        let wait = batch.next_due.map_or(idle_poll, |due| due.min(idle_poll));
                        Some(answered + wait)
                    } else {
                        None
                    };
                    for claimed in batch.items {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let worker = self.clone();
                        let tx = tx.clone();
                        let freed = freed.clone();
                        let span = tracing::info_span!(
                            "deliver",
                            delivery_id = %claimed.delivery_id,
                            account = %claimed.account,
                            attempt = claimed.attempts
                        );
                        tracker.spawn(
                            async move {
                                let completion = worker.deliver_leased(&claimed, asked).await;
                                // The completer only stops after every sender is gone.
                                let _ = tx.send(completion).await;
                                drop(permit);
                                freed.notify_one();
                            }
                            .instrument(span),
                        );
                    }
                }
                // Every partition failing is the storage being down: back off as a whole.
                if failures == requests.len() && failing.len() == usize::from(partitions) {
                    if !redis_down {
                        tracing::warn!(
                            "cannot claim deliveries from any queue partition; retrying"
                        );
                        redis_down = true;
                    }
                    failed = true;
                } else if redis_down {
                    tracing::info!("queue storage reachable again; delivery resumes");
                    redis_down = false;
                }
                // The next pass starts after the last partition this one served.
                if let Some(&(last, _)) = requests.last() {
                    start = (last + 1) % partitions;
                }
            }
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(PARTITION_BACKOFF) => {}
                    _ = shutdown.cancelled() => {}
                }
            } else if permits.available_permits() < low_water {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
                while permits.available_permits() < low_water && !shutdown.is_cancelled() {
                    if permits.available_permits() > 0 && tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::select! {
                        _ = freed.notified() => {}
                        _ = tokio::time::sleep_until(deadline), if permits.available_permits() > 0 => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            } else if requests.is_empty() {
                // Nothing to claim now: sleep until a partition falls due, one sitting
                // out a failure may be tried again, or work is stored.
                let next = quiet
                    .iter()
                    .flatten()
                    .chain(failing.values().map(|f| &f.retry_at))
                    .filter(|at| **at > now)
                    .min()
                    .copied()
                    .unwrap_or(now + idle_poll);
                tokio::select! {
                    _ = tokio::time::sleep_until(next.min(now + idle_poll)) => {}
                    _ = self.wake.notify.notified() => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
        tracker.close();
        if tokio::time::timeout(self.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight deliveries did not finish in time; their leases will expire and another process will send them");
        }
        drop(tx);
        let _ = completer.await;
        let _ = listener.await;
    }

    /// One pass over every partition: claims what may be sent now, sends it, records the
    /// outcomes. Returns how many deliveries it handled. For tests and tools.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let mut claimed = Vec::new();
        for partition in 0..self.queue.partitions() {
            claimed.extend(self.queue.claim(partition, self.concurrency).await?.items);
        }
        let completions = futures::future::join_all(claimed.iter().map(|c| self.deliver(c))).await;
        self.queue.complete(&completions).await?;
        Ok(completions.len())
    }

    /// As [`Worker::deliver`], for a delivery whose claim was asked for at `asked`: if too
    /// little of its lease is left for a send (see [`WorkerSettings::lease`]), it is
    /// released unsent.
    pub async fn deliver_leased(
        &self,
        claimed: &Claimed,
        asked: tokio::time::Instant,
    ) -> Completion {
        let send_by = self.lease.map(|(lease, send_timeout)| {
            (asked + lease).checked_sub(send_timeout).unwrap_or(asked)
        });
        self.deliver_by(claimed, send_by).await
    }

    /// Sends one claimed delivery and decides what becomes of it.
    pub async fn deliver(&self, claimed: &Claimed) -> Completion {
        self.deliver_by(claimed, None).await
    }

    /// `send_by`: when set, the latest moment the send may start.
    async fn deliver_by(
        &self,
        claimed: &Claimed,
        send_by: Option<tokio::time::Instant>,
    ) -> Completion {
        let account = match self.accounts.resolve(&claimed.account).await {
            Ok(account) => account,
            Err(e) => {
                // Not attempted: the account's record is unreadable right now.
                tracing::warn!(error = %e, "cannot look up the account; releasing the delivery");
                return Completion::of(claimed, Outcome::Released);
            }
        };
        let outcome = match account {
            None => self.failed(
                claimed,
                None,
                format!("account {} is not configured", claimed.account),
            ),
            Some(_) if send_by.is_some_and(|by| tokio::time::Instant::now() > by) => {
                tracing::warn!("too little of the lease is left to send; releasing the delivery");
                Outcome::Released
            }
            Some(account) => {
                let result = self.client.notify(&account, claimed.body.clone()).await;
                self.observe(claimed, &result);
                match result {
                    NotifyResult::Delivered { status } => {
                        tracing::debug!(status, "delivered");
                        Outcome::Delivered { status }
                    }
                    NotifyResult::RateLimited { retry_after } => {
                        tracing::info!(
                            retry_after_ms = retry_after.as_millis() as u64,
                            "upstream rate limit; pausing account"
                        );
                        Outcome::RateLimited { retry_after }
                    }
                    NotifyResult::Transient { status, error } => {
                        self.failed(claimed, status, error)
                    }
                    NotifyResult::AuthFailed { status, error } => {
                        tracing::error!(
                            status,
                            "upstream refused the account's credentials; pausing account"
                        );
                        Outcome::AuthFailed { status, error }
                    }
                    NotifyResult::Rejected { status, error } => {
                        tracing::warn!(status, "upstream rejected the event; dead-lettered");
                        Outcome::Dead {
                            reason: DeadReason::Rejected,
                            status: Some(status),
                            error,
                        }
                    }
                }
            }
        };
        Completion::of(claimed, outcome)
    }

    /// Records the upstream answer in the metrics.
    fn observe(&self, claimed: &Claimed, result: &NotifyResult) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let account = &claimed.account;
        let status = match result {
            NotifyResult::Delivered { status } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let latency = Duration::from_millis(now.saturating_sub(claimed.created_ms));
                metrics.delivered(account, latency);
                Some(*status)
            }
            NotifyResult::RateLimited { .. } => {
                metrics.upstream_429(account);
                Some(429)
            }
            NotifyResult::Transient { status, .. } => *status,
            NotifyResult::AuthFailed { status, .. } | NotifyResult::Rejected { status, .. } => {
                Some(*status)
            }
        };
        metrics.notify_request(account, status);
    }

    fn failed(&self, claimed: &Claimed, status: Option<u16>, error: String) -> Outcome {
        if claimed.attempts >= self.policy.max_attempts {
            tracing::warn!(?status, error = %error, "attempts exhausted; dead-lettered");
            Outcome::Dead {
                reason: DeadReason::MaxAttempts,
                status,
                error,
            }
        } else {
            let delay = self.policy.backoff(claimed.attempts);
            tracing::info!(?status, error = %error, delay_ms = delay.as_millis() as u64, "delivery failed; will retry");
            Outcome::Retry {
                delay,
                status,
                error,
            }
        }
    }
}

/// A queue partition whose claims fail: since when, and when to try it again.
struct PartitionFailure {
    since: tokio::time::Instant,
    retry_at: tokio::time::Instant,
}

/// How long a partition whose claim failed sits out before it is tried again.
const PARTITION_BACKOFF: Duration = Duration::from_millis(500);

/// Tells `wake` each time any process announces new work (in the partitions it names),
/// and says whether it is listening (the worker then polls an idle queue rarely);
/// resubscribes after a failure.
async fn listen_for_work(
    queue: Arc<dyn Queue>,
    wake: Arc<Wake>,
    listening: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut warned = false;
    loop {
        let subscribed = || {
            listening.store(true, Ordering::SeqCst);
            // Work may have been stored while nobody listened.
            wake.all();
        };
        let message = |partitions: Option<&[u16]>| match partitions {
            Some(partitions) => partitions.iter().for_each(|&p| wake.partition(p)),
            None => wake.all(),
        };
        let ended = tokio::select! {
            ended = queue.listen_for_work(&subscribed, &message) => ended,
            _ = shutdown.cancelled() => return,
        };
        if listening.swap(false, Ordering::SeqCst) {
            // It had been listening: a new failure is worth a warning again. Partitions
            // left alone for the long idle poll are claimed again, now at the short one.
            warned = false;
            wake.all();
        }
        let Some(e) = ended else {
            return;
        };
        if !warned {
            tracing::warn!(error = %e, "not notified of new work; polling for it until resubscribed");
            warned = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Records completions in batches (each partition's its own script calls, sent together),
/// retrying only the outcomes whose partition failed, then wakes the worker (the accounts
/// concerned may send again). After shutdown it keeps trying for a few seconds; what it
/// cannot record is sent again by another process when the lease ends (at-least-once).
async fn record_completions(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::Receiver<Completion>,
    shutdown: CancellationToken,
    wake: Arc<Wake>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < COMPLETE_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(50);
        let mut give_up_at = None;
        loop {
            // Outcomes of a failing partition are retried alone; the others are recorded.
            let results = queue.complete_each(&batch).await;
            // The accounts of the recorded outcomes may send again, in their partitions.
            let freed: Option<Vec<u16>> = batch
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(c, _)| {
                    let (event, _) = c.delivery_id.rsplit_once(':')?;
                    EventId::parse(event).map(|id| id.partition())
                })
                .collect();
            match freed {
                Some(partitions) if partitions.is_empty() => {}
                Some(partitions) => wake.partitions(partitions),
                None => wake.all(),
            }
            let mut error = None;
            let mut left = Vec::new();
            for (c, result) in batch.into_iter().zip(results) {
                if let Err(e) = result {
                    error.get_or_insert(e);
                    left.push(c);
                }
            }
            batch = left;
            match error {
                None => break,
                Some(e) => {
                    tracing::warn!(error = %e, count = batch.len(), "cannot record delivery outcomes; retrying them");
                }
            }
            if shutdown.is_cancelled() {
                let deadline = *give_up_at
                    .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(3));
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        count = batch.len(),
                        "giving up recording outcomes at shutdown; leases will expire"
                    );
                    break;
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
    // This worker is done: the accounts its last completions freed are for the other
    // processes' workers, which would otherwise find them at their fallback poll.
    queue.announce_work().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_across_partitions() {
        assert_eq!(share_slots(3, &[2, 3, 0, 1]), [(2, 3)]);
        assert_eq!(share_slots(17, &[3, 0, 1, 2]), [(3, 9), (0, 8)]);
        assert_eq!(
            share_slots(40, &[0, 1, 2, 3]),
            [(0, 10), (1, 10), (2, 10), (3, 10)]
        );
        assert_eq!(
            share_slots(43, &[1, 2, 3, 0]),
            [(1, 11), (2, 11), (3, 11), (0, 10)]
        );
        assert_eq!(share_slots(0, &[0, 1, 2, 3]), []);
        assert_eq!(share_slots(5, &[0]), [(0, 5)]);
        assert_eq!(share_slots(16, &[]), []);
        // Only the partitions that may have work are offered slots.
        assert_eq!(share_slots(16, &[5, 9]), [(5, 8), (9, 8)]);
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        for attempt in 1..40 {
            let ceiling = (100u64 << (attempt - 1).min(20)).min(1000);
            for _ in 0..20 {
                assert!(policy.backoff(attempt).as_millis() as u64 <= ceiling);
            }
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| policy.backoff(5).as_millis()).collect();
        assert!(spread.len() > 5, "backoff is not jittered: {spread:?}");
    }
}

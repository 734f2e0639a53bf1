//! The delivery worker: claim → send → record, under each account's limit.
//!
//! Each process runs one [`Worker`]. It walks the partitions, claims as many deliveries as
//! it has free concurrency (the queue decides which accounts may send and takes their rate
//! slots), sends each in its own task, and hands the outcomes to a completer task that
//! records them in batches. A partition whose storage fails sits out a short backoff while
//! the others go on. It never sleeps in a task to wait for a rate slot:
//! a throttled account is simply not claimable until its slot frees. A partition whose
//! claim found nothing, or took all that was due, is left alone until what the claim said
//! falls due next, until work is stored in it (by this process, or announced by another,
//! [`Wake`]), until an outcome recorded here frees one of its accounts (or, when that
//! account's window is full, until it may send), or until the idle poll: the claims of an
//! idle worker cost the same whatever the partition count, and a busy one does not claim
//! a partition only to find its accounts in flight or their windows full.
//!
//! # Layout
//!
//! - this module: the [`Worker`], its settings and its loop (a claim pass, the sends it
//!   starts, the wait before the next), and the listener of announced work;
//! - `send.rs`: one lease group sent and each call's outcome decided;
//! - `passes.rs`: which partitions a pass claims, and how slots are shared;
//! - `slots.rs`: the slots of the sends in flight;
//! - `completer.rs`: outcomes recorded in batches, and the wake-ups they bring;
//! - `retry.rs`: the backoff of retried calls (the proxy's too).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, AcquireError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::accounts::AccountDirectory;
use crate::config::DeliveryConfig;
use crate::metrics::Metrics;
use crate::queue::{Claimed, Completion, Queue, QueueError};
use crate::wake::Wake;
use crate::zendesk::ZendeskClient;

mod completer;
mod passes;
mod retry;
mod send;
mod slots;

use completer::record_completions;
use passes::{share_slots, Pass, Passes, PARTITION_BACKOFF};
pub use retry::RetryPolicy;
use slots::Sending;

/// Most deliveries claimed from one partition in one call.
const CLAIM_MAX: usize = 256;

/// Longest a lease group's sender holds a member's completion to record it with the
/// next ones (see [`Worker::deliver_group`]): a process that dies meanwhile leaves the
/// calls it sent in that time to be sent again.
///
/// It also bounds how long an answered member waits to be recorded behind a slow send,
/// well within its lease: an answer recorded after the lease ended may come too late to
/// keep another process from sending the call again.
pub const GROUP_RECORD_WAIT: Duration = Duration::from_secs(1);

/// Partitions whose idle claims, while the queue announces new work, are spread over
/// one `delivery.idle_poll_ms` each: with more, a partition that found nothing is looked
/// at again less often, so an idle worker costs Redis the same whatever the count.
pub const IDLE_PARTITIONS: u16 = 16;

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
    /// The longest a send may take: a send starts only while at least this is left of
    /// its lease.
    send_timeout: Option<Duration>,
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
    /// The longest a send may take (the upstream timeout): a send starts only while at
    /// least this is left of its lease (as the claim gave it: a lease group's members
    /// share a longer one), as measured by this process from before it asked for the
    /// claim (the queue starts the lease later, so this errs on the safe side). A process
    /// that stalled (paused, swapping, starved) past that releases the delivery instead:
    /// once its lease ends, the queue counts the call as sent and another process may
    /// send it, so a late send could put `limit + 1` calls in one upstream window.
    /// `None`: no such check.
    pub send_timeout: Option<Duration>,
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
            send_timeout: Some(d.upstream_timeout()),
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
            send_timeout: settings.send_timeout,
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
        let (tx, rx) = mpsc::channel::<Vec<Completion>>(self.concurrency * 2);
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
        let sending = Sending::new(self.concurrency, tx, shutdown.clone());
        let mut passes = Passes::new(self.queue.partitions());
        while !shutdown.is_cancelled() {
            if self
                .step(&mut passes, &sending, &listening, &shutdown)
                .await
                .is_break()
            {
                return;
            }
        }
        self.drain(sending, completer, listener).await;
    }

    /// One step of the loop: takes the partitions told to have work, claims and sends
    /// what may be sent now, then waits as that pass calls for (`listening`: whether the
    /// queue announces new work). `Break`: stop at once.
    async fn step(
        &self,
        passes: &mut Passes,
        sending: &Sending,
        listening: &AtomicBool,
        shutdown: &CancellationToken,
    ) -> ControlFlow<()> {
        let stored = self.wake.apply(&mut passes.quiet);
        passes.stored(stored);
        let now = tokio::time::Instant::now();
        let idle_poll = self.idle_poll_of(passes.partitions, listening.load(Ordering::SeqCst));
        let pass = self.claim_pass(passes, sending, now, idle_poll).await;
        match pass {
            Pass::Stopped => return ControlFlow::Break(()),
            Pass::StorageDown => {
                tokio::select! {
                    _ = tokio::time::sleep(PARTITION_BACKOFF) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            _ if sending.permits.available_permits() < sending.low_water => {
                sending.wait_for_slots(shutdown).await;
            }
            Pass::Idle => self.wait_for_work(passes, now, idle_poll, shutdown).await,
            Pass::Claimed => {}
        }
        ControlFlow::Continue(())
    }

    /// How long a partition whose claim found nothing is left alone at most: the idle
    /// poll (spread over [`IDLE_PARTITIONS`]) while the queue announces new work
    /// (`listening`), else the poll interval.
    fn idle_poll_of(&self, partitions: u16, listening: bool) -> Duration {
        if listening {
            self.idle_poll * u32::from(partitions.div_ceil(IDLE_PARTITIONS).max(1))
        } else {
            self.poll_interval
        }
    }

    /// One claim pass, asked for at `now`: offers the free slots to the partitions ready
    /// to claim, in turn from where the last pass ended, claims them in one round, notes
    /// each partition's answer in `passes` and sends what was claimed.
    async fn claim_pass(
        &self,
        passes: &mut Passes,
        sending: &Sending,
        now: tokio::time::Instant,
        idle_poll: Duration,
    ) -> Pass {
        let ready = passes.ready(now);
        let free = sending
            .permits
            .available_permits()
            .min(CLAIM_MAX * ready.len());
        let requests = if free > 0 {
            share_slots(free, &ready)
        } else {
            Vec::new()
        };
        if requests.is_empty() {
            return Pass::Idle;
        }
        let claimed = self.queue.claim_each(&requests).await;
        if let Some(metrics) = &self.metrics {
            metrics.dead_letters_dropped(self.queue.take_dead_letters_dropped());
        }
        let answered = tokio::time::Instant::now();
        let mut failures = 0usize;
        for (&(partition, _), result) in requests.iter().zip(claimed) {
            match result {
                Ok(batch) => {
                    passes.claimed(partition, &batch, answered, idle_poll);
                    if self.send_each(batch.items, now, sending).await.is_err() {
                        return Pass::Stopped;
                    }
                }
                Err(e) => {
                    failures += 1;
                    passes.claim_failed(partition, &e, answered);
                }
            }
        }
        if passes.passed(&requests, failures) {
            Pass::StorageDown
        } else {
            Pass::Claimed
        }
    }

    /// Sends each lease group of `claimed` (asked for at `asked`; see [`Queue::claim`]) in
    /// its own task holding one slot, its members one after another, waiting for a slot
    /// when none is free; the outcomes go to the completer. Fails only when the slots are
    /// closed.
    async fn send_each(
        &self,
        claimed: Vec<Claimed>,
        asked: tokio::time::Instant,
        sending: &Sending,
    ) -> Result<(), AcquireError> {
        for group in lease_groups(claimed) {
            let permit = sending.permits.clone().acquire_owned().await?;
            let worker = self.clone();
            let tx = sending.completions.clone();
            let freed = sending.freed.clone();
            let stop = sending.stop.clone();
            let Some(first) = group.first() else {
                continue;
            };
            let span = tracing::info_span!(
                "deliver",
                account = %first.account,
                deliveries = group.len()
            );
            sending.tracker.spawn(
                async move {
                    // The completer only stops after every sender is gone.
                    worker.deliver_group(&group, asked, &stop, &tx).await;
                    drop(permit);
                    freed.notify_one();
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    /// Nothing to claim at `now`: sleeps until a partition falls due, one sitting out a
    /// failure may be tried again, work is stored ([`Wake`]), or at most `idle_poll`.
    async fn wait_for_work(
        &self,
        passes: &Passes,
        now: tokio::time::Instant,
        idle_poll: Duration,
        shutdown: &CancellationToken,
    ) {
        let until = now + idle_poll;
        let next = passes.next_due(now).unwrap_or(until);
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(until)) => {}
            _ = self.wake.notified() => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// At shutdown: lets the sends in flight finish within the drain timeout, then lets
    /// the completer record their outcomes and the listener stop.
    async fn drain(
        &self,
        sending: Sending,
        completer: tokio::task::JoinHandle<()>,
        listener: tokio::task::JoinHandle<()>,
    ) {
        let Sending {
            tracker,
            completions,
            ..
        } = sending;
        tracker.close();
        if tokio::time::timeout(self.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight deliveries did not finish in time; their leases will expire and another process will send them");
        }
        drop(completions);
        let _ = completer.await;
        let _ = listener.await;
    }

    /// One pass over every partition: claims what may be sent now, sends it, records the
    /// outcomes. Returns how many deliveries it handled. For tests and tools.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let asked = tokio::time::Instant::now();
        let mut claimed = Vec::new();
        for partition in 0..self.queue.partitions() {
            claimed.extend(self.queue.claim(partition, self.concurrency).await?.items);
        }
        let groups = lease_groups(claimed);
        let sent = futures::future::join_all(
            groups
                .iter()
                .map(|group| self.deliver_group_now(group, asked)),
        )
        .await;
        let completions: Vec<Completion> = sent.into_iter().flatten().collect();
        self.queue.complete(&completions).await?;
        Ok(completions.len())
    }
}

/// The lease groups of a claim's items, in order: each starts at an item whose
/// `group_index` is 0 (see [`Queue::claim`]).
fn lease_groups(items: Vec<Claimed>) -> Vec<Vec<Claimed>> {
    let mut groups: Vec<Vec<Claimed>> = Vec::new();
    for item in items {
        match groups.last_mut() {
            Some(group) if item.group_index > 0 => group.push(item),
            _ => groups.push(vec![item]),
        }
    }
    groups
}

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
            Some(partitions) => partitions.iter().for_each(|&p| wake.stored(p)),
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

#[cfg(test)]
mod tests {
    use super::completer::{next_batch, wake_freed, COMPLETE_BATCH};
    use super::passes::MIN_SHARE;
    use super::*;
    use crate::config::Config;
    use crate::domain::{partition_of, EventId, NotifyPayload, Priority};
    use crate::queue::memory::MemoryQueue;
    use crate::queue::script_queue::QueueSettings;
    use crate::queue::{EnqueueBatch, Freed, NewEvent, Outcome, RateLimit, Retention};
    use tokio::time::Instant;

    /// The idle poll of the test workers.
    const IDLE: Duration = Duration::from_secs(30);

    /// The lease of the test queues' claims.
    const LEASE: Duration = Duration::from_secs(15);

    /// The test workers' slots: enough for [`MIN_SHARE`] in each partition of a pass.
    const SLOTS: usize = 4 * MIN_SHARE;

    /// A worker over an embedded queue of `partitions`, with no account configured: each
    /// delivery it sends fails at once, without a call upstream, and is to be retried.
    fn worker(partitions: u16) -> Worker {
        let limit = RateLimit {
            limit: 100,
            window_ms: 60_000,
        };
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(QueueSettings {
            prefix: "worker".into(),
            partitions,
            lease: LEASE,
            group_max: 8,
            default_limit: limit,
            margin_ms: 250,
            retention: Retention::default(),
        }));
        let config = Config::from_toml_with_env("", "test.toml", &[]).expect("defaults are valid");
        let accounts = AccountDirectory::new(&config, queue.clone()).expect("no accounts");
        let settings = WorkerSettings {
            policy: RetryPolicy {
                max_attempts: 5,
                base: Duration::from_secs(1),
                cap: Duration::from_secs(1),
            },
            concurrency: SLOTS,
            poll_interval: Duration::from_secs(10),
            idle_poll: IDLE,
            drain_timeout: Duration::from_secs(1),
            send_timeout: None,
        };
        let client = ZendeskClient::new(Duration::from_secs(1)).expect("client builds");
        let wake = Arc::new(Wake::default());
        Worker::new(queue, client, Arc::new(accounts), settings, wake)
    }

    /// An account whose events go to `partition` of `partitions`.
    fn account_in(partition: u16, partitions: u16) -> String {
        (0..)
            .map(|i| format!("acct{i}"))
            .find(|a| partition_of(a, partitions) == partition)
            .expect("some name falls in each partition")
    }

    /// Stores one event of `account` in `partition`.
    async fn store(queue: &dyn Queue, account: &str, partition: u16) -> EventId {
        let id = EventId::new(partition);
        let event = NewEvent {
            id: id.clone(),
            priority: Priority::Normal,
            ttl_ms: 0,
            payload: NotifyPayload::new(1, "e", None),
            agents: vec![None],
            idempotency: None,
        };
        queue
            .enqueue(EnqueueBatch {
                account: account.into(),
                limit: RateLimit {
                    limit: 100,
                    window_ms: 60_000,
                },
                max_depth: 100,
                idempotency_ttl_secs: 60,
                events: vec![event],
            })
            .await
            .expect("stored");
        id
    }

    /// The partition of a completion's event.
    fn partition(completion: &Completion) -> u16 {
        EventId::of_delivery(&completion.delivery_id)
            .expect("an event id")
            .partition()
    }

    /// A completion of delivery `id` that frees nothing.
    fn released(id: String) -> Completion {
        Completion {
            delivery_id: id,
            account: "a".into(),
            lease_token: 0,
            seen: String::new(),
            outcome: Outcome::Released,
        }
    }

    /// Every completion the sends of `sending` still make.
    async fn sent(sending: Sending, mut rx: mpsc::Receiver<Vec<Completion>>) -> Vec<Completion> {
        sending.tracker.close();
        sending.tracker.wait().await;
        drop(sending);
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            all.extend(c);
        }
        all
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_pass_claims_due_work_and_skips_quiet_partitions() {
        let worker = worker(3);
        for p in 0..3 {
            store(worker.queue.as_ref(), &account_in(p, 3), p).await;
        }
        let (tx, mut rx) = mpsc::channel(16);
        let sending = Sending::new(SLOTS, tx, CancellationToken::new());
        let mut passes = Passes::new(3);
        let now = Instant::now();
        let quiet_until = now + Duration::from_secs(5);
        passes.quiet[1] = Some(quiet_until);

        let pass = worker.claim_pass(&mut passes, &sending, now, IDLE).await;
        assert_eq!(pass, Pass::Claimed);
        let mut first = Vec::new();
        for _ in 0..2 {
            let group = rx.recv().await.expect("sent");
            assert_eq!(group.len(), 1, "one event per account");
            first.extend(group);
        }
        let first: [Completion; 2] = first.try_into().expect("two completions");
        let mut partitions = first.map(|c| {
            assert!(
                matches!(c.outcome, Outcome::Retry { .. }),
                "{:?}",
                c.outcome
            );
            partition(&c)
        });
        partitions.sort_unstable();
        assert_eq!(partitions, [0, 2], "the quiet partition was not claimed");
        assert_eq!(passes.quiet[1], Some(quiet_until));
        assert_eq!(passes.start, 0, "the next pass starts after partition 2");
        // 0 and 2 gave all their due work: quiet until their leases end (their outcomes
        // wake them sooner).
        let quiet_0_2 = [passes.quiet[0], passes.quiet[2]];
        for (p, until) in [0, 2].into_iter().zip(quiet_0_2) {
            let until = until.expect("quiet after a claim of all that was due");
            assert!(
                until > now && until <= now + LEASE,
                "partition {p} quiet for {:?}",
                until - now
            );
        }

        // Once partition 1 falls due it is claimed; 0 and 2 are not claimed again.
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let pass = worker.claim_pass(&mut passes, &sending, now, IDLE).await;
        assert_eq!(pass, Pass::Claimed);
        let rest = sent(sending, rx).await;
        assert_eq!(rest.iter().map(partition).collect::<Vec<_>>(), [1]);
        assert_eq!([passes.quiet[0], passes.quiet[2]], quiet_0_2);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_work_ends_at_a_mark_a_due_partition_or_the_idle_poll() {
        let worker = worker(2);
        let shutdown = CancellationToken::new();
        let mut passes = Passes::new(2);
        let now = Instant::now();
        passes.quiet = vec![Some(now + Duration::from_secs(3600)); 2];
        worker.wait_for_work(&passes, now, IDLE, &shutdown).await;
        assert_eq!(now.elapsed(), IDLE, "nothing due: the idle poll");

        let now = Instant::now();
        passes.quiet[0] = Some(now + Duration::from_secs(3));
        worker.wait_for_work(&passes, now, IDLE, &shutdown).await;
        assert_eq!(
            now.elapsed(),
            Duration::from_secs(3),
            "partition 0 fell due"
        );

        let now = Instant::now();
        let long = Some(now + Duration::from_secs(3600));
        passes.quiet = vec![long; 2];
        let mark = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            worker.wake.partition(1);
        };
        tokio::join!(worker.wait_for_work(&passes, now, IDLE, &shutdown), mark);
        assert_eq!(now.elapsed(), Duration::from_secs(2), "woken by the mark");
        worker.wake.apply(&mut passes.quiet);
        assert_eq!(
            passes.quiet,
            [long, None],
            "only the marked partition is cleared"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_step_sleeps_until_work_is_marked_and_the_next_claims_it() {
        let worker = worker(2);
        let (tx, rx) = mpsc::channel(16);
        let sending = Sending::new(SLOTS, tx, CancellationToken::new());
        let mut passes = Passes::new(2);
        let listening = AtomicBool::new(true);
        let shutdown = CancellationToken::new();
        let start = Instant::now();

        // Both partitions are claimed, find nothing, and are quiet for the idle poll.
        let step = worker.step(&mut passes, &sending, &listening, &shutdown);
        assert!(step.await.is_continue());
        assert_eq!(passes.quiet, [Some(start + IDLE); 2]);
        // Nothing to claim: the next step sleeps the whole idle poll.
        let step = worker.step(&mut passes, &sending, &listening, &shutdown);
        assert!(step.await.is_continue());
        assert_eq!(start.elapsed(), IDLE);

        // Both are claimed again and quiet; then work is stored in 1 and marked.
        let step = worker.step(&mut passes, &sending, &listening, &shutdown);
        assert!(step.await.is_continue());
        let now = Instant::now();
        let account = account_in(1, 2);
        let mark = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            store(worker.queue.as_ref(), &account, 1).await;
            worker.wake.partition(1);
        };
        let step = worker.step(&mut passes, &sending, &listening, &shutdown);
        let (step, ()) = tokio::join!(step, mark);
        assert!(step.is_continue());
        assert_eq!(now.elapsed(), Duration::from_secs(4), "woken by the mark");
        let step = worker.step(&mut passes, &sending, &listening, &shutdown);
        assert!(step.await.is_continue());
        assert_eq!(now.elapsed(), Duration::from_secs(4), "claimed at once");
        assert_eq!(passes.quiet[0], Some(now + IDLE));
        let until = passes.quiet[1].expect("all its due work given: quiet until its lease ends");
        let claimed_at = Instant::now();
        assert!(until > claimed_at && until <= claimed_at + LEASE);
        let sent = sent(sending, rx).await;
        assert_eq!(sent.iter().map(partition).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn the_idle_poll_is_spread_over_many_partitions_while_listening() {
        let worker = worker(1);
        assert_eq!(worker.idle_poll_of(1, true), IDLE);
        assert_eq!(worker.idle_poll_of(IDLE_PARTITIONS, true), IDLE);
        assert_eq!(worker.idle_poll_of(IDLE_PARTITIONS + 1, true), IDLE * 2);
        assert_eq!(worker.idle_poll_of(64, false), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_with_newly_stored_work_are_claimed_ahead_of_the_turn() {
        let mut passes = Passes::new(8);
        passes.start = 5;
        let now = Instant::now();
        passes.stored(vec![2, 6]);
        assert_eq!(passes.ready(now), [2, 6, 5, 7, 0, 1, 3, 4]);
        // served: they are no longer ahead, and the turn goes on where it was
        assert!(!passes.passed(&[(2, 8), (6, 8)], 0));
        assert_eq!(passes.start, 5);
        assert_eq!(passes.ready(now), [5, 6, 7, 0, 1, 2, 3, 4]);
        // the next pass with new work takes the turn first: new work stored all the
        // time cannot hold the turn up
        passes.stored(vec![3, 1]);
        assert_eq!(passes.ready(now), [5, 6, 7, 0, 2, 4, 3, 1]);
        assert!(!passes.passed(&[(5, 8), (6, 8)], 0));
        assert_eq!(passes.start, 7);
        // then new work first again; one not served stays ahead; the turn goes on after
        // the last partition served in it
        assert_eq!(passes.ready(now), [3, 1, 7, 0, 2, 4, 5, 6]);
        assert!(!passes.passed(&[(3, 8), (7, 8)], 0));
        assert_eq!(passes.start, 0);
        assert_eq!(passes.fresh, [1]);
    }

    /// Three events of one account stored and claimed: one lease group.
    async fn group_of_three(worker: &Worker) -> Vec<Claimed> {
        let account = account_in(0, 1);
        for _ in 0..3 {
            store(worker.queue.as_ref(), &account, 0).await;
        }
        let group = worker.queue.claim(0, 1).await.expect("claimed").items;
        assert_eq!(group.len(), 3, "one lease group");
        group
    }

    /// What `worker` hands over, in one batch and only one, for sending `group` (with
    /// shutdown under way when `stopping`).
    async fn handed_over(worker: &Worker, group: &[Claimed], stopping: bool) -> Vec<Completion> {
        let (tx, mut rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        if stopping {
            stop.cancel();
        }
        worker
            .deliver_group(group, Instant::now(), &stop, &tx)
            .await;
        drop(tx);
        let handed = rx.recv().await.expect("handed over");
        assert!(rx.recv().await.is_none(), "one batch");
        handed
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_group_s_completions_are_handed_over_together() {
        let worker = worker(1);
        let group = group_of_three(&worker).await;
        let handed = handed_over(&worker, &group, false).await;
        let ids = |c: &[Completion]| c.iter().map(|c| c.delivery_id.clone()).collect::<Vec<_>>();
        let claimed: Vec<String> = group.iter().map(|c| c.delivery_id.clone()).collect();
        assert_eq!(ids(&handed), claimed, "together, in order");
        // (no account is configured: each send fails at once, to be retried)
        assert!(handed
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Retry { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_lease_group_releases_what_it_has_not_sent_last_first() {
        let worker = worker(1);
        let group = group_of_three(&worker).await;
        let handed = handed_over(&worker, &group, true).await;
        let got: Vec<(&str, bool)> = handed
            .iter()
            .map(|c| {
                let released = matches!(c.outcome, Outcome::Released);
                (c.delivery_id.as_str(), released)
            })
            .collect();
        // the first was under way (a claim is sent once started); the rest go back
        let expected = [
            (group[0].delivery_id.as_str(), false),
            (group[2].delivery_id.as_str(), true),
            (group[1].delivery_id.as_str(), true),
        ];
        assert_eq!(got, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn completions_are_taken_in_batches_of_what_is_waiting() {
        let (tx, mut rx) = mpsc::channel(COMPLETE_BATCH * 2);
        for i in 0..COMPLETE_BATCH + 3 {
            tx.send(vec![released(format!("x:{i}"))])
                .await
                .expect("open");
        }
        let first = next_batch(&mut rx).await.expect("a batch");
        assert_eq!(first.len(), COMPLETE_BATCH);
        assert_eq!(first[0].delivery_id, "x:0");
        let second = next_batch(&mut rx).await.expect("a batch");
        let ids: Vec<_> = second.iter().map(|c| c.delivery_id.as_str()).collect();
        assert_eq!(ids, ["x:512", "x:513", "x:514"]);

        // A batch does not wait for more than is waiting.
        let later = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(vec![released("x:late".into())])
                .await
                .expect("open");
        };
        tx.send(vec![released("x:now".into())]).await.expect("open");
        let (third, ()) = tokio::join!(next_batch(&mut rx), later);
        assert_eq!(third.expect("a batch").len(), 1);
        assert_eq!(next_batch(&mut rx).await.expect("a batch").len(), 1);
        drop(tx);
        assert!(next_batch(&mut rx).await.is_none(), "every sender is gone");
    }

    #[tokio::test(start_paused = true)]
    async fn recorded_completions_wake_the_worker_for_their_partitions() {
        let worker = worker(3);
        let queue = worker.queue.clone();
        let accounts = [account_in(0, 3), account_in(2, 3)];
        let (tx, rx) = mpsc::channel(8);
        for (account, p) in accounts.iter().zip([0, 2]) {
            store(queue.as_ref(), account, p).await;
            for claimed in queue.claim(p, 8).await.expect("claimed").items {
                let completion = Completion::of(&claimed, Outcome::Delivered { status: 200 });
                tx.send(vec![completion]).await.expect("open");
            }
        }
        drop(tx);
        let shutdown = CancellationToken::new();
        record_completions(queue.clone(), rx, shutdown, worker.wake.clone()).await;

        let stats = queue.stats().await.expect("stats");
        for account in &accounts {
            let a = stats.accounts.iter().find(|a| &a.account == account);
            let a = a.expect("the account has counters");
            assert_eq!((a.delivered, a.depth, a.in_flight), (1, 0, 0), "{account}");
        }
        let quiet = Some(Instant::now() + IDLE);
        let mut after = vec![quiet; 3];
        worker.wake.apply(&mut after);
        assert_eq!(after, [None, quiet, None]);
    }

    #[test]
    fn only_recorded_outcomes_wake_and_an_unknown_id_wakes_every_partition() {
        let known = |p: u16| released(format!("{}:0", EventId::new(p).as_str()));
        let failed = || Err(QueueError::Unavailable("down".into()));
        let quiet = Some(Instant::now());
        let wake = Wake::default();
        wake_freed(&wake, &[known(0), known(2)], &[Ok(Freed::Now), failed()]);
        let mut after = vec![quiet; 3];
        wake.apply(&mut after);
        assert_eq!(after, [None, quiet, quiet]);

        wake_freed(
            &wake,
            &[known(1), released("x".into())],
            &[Ok(Freed::Now), Ok(Freed::Now)],
        );
        let mut after = vec![quiet; 3];
        wake.apply(&mut after);
        assert_eq!(after, [None; 3]);
    }

    #[test]
    fn an_account_freed_with_its_window_full_brings_its_partition_due_then() {
        let known = |p: u16| released(format!("{}:0", EventId::new(p).as_str()));
        let now = Instant::now();
        let wait = Duration::from_secs(2);
        let wake = Wake::default();
        // Partition 0: a full window only; 1: a full window and an account free now; 2: a
        // full window, claimable anyway; 3: a full window later than its quiet time.
        wake_freed(
            &wake,
            &[known(0), known(1), known(1), known(2), known(3)],
            &[
                Ok(Freed::After(wait)),
                Ok(Freed::After(wait)),
                Ok(Freed::Now),
                Ok(Freed::After(wait)),
                Ok(Freed::After(Duration::from_secs(3600))),
            ],
        );
        let long = Some(now + Duration::from_secs(60));
        let mut after = vec![long, long, None, long];
        wake.apply(&mut after);
        let due = after[0].expect("still quiet");
        assert!(
            due >= now + wait && due <= Instant::now() + wait,
            "due with its account"
        );
        assert_eq!(after[1..], [None, None, long]);
    }
}

//! The completer: records the outcomes of sends in batches, retries those whose
//! partition failed, and wakes the worker for the accounts they freed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::EventId;
use crate::queue::{Completion, Freed, Queue, QueueError};
use crate::wake::Wake;

/// Completions taken for one pipelined round trip: at least one lease group's, then
/// those waiting until this many (so at most this many plus a group's, less one).
pub(super) const COMPLETE_BATCH: usize = 512;

/// Records completions in batches (each partition's its own script calls, sent together),
/// retrying only the outcomes whose partition failed, then wakes the worker (the accounts
/// concerned may send again). After shutdown it keeps trying for a few seconds; what it
/// cannot record is sent again by another process when the lease ends (at-least-once).
pub(super) async fn record_completions(
    queue: Arc<dyn Queue>,
    mut rx: mpsc::Receiver<Vec<Completion>>,
    shutdown: CancellationToken,
    wake: Arc<Wake>,
) {
    while let Some(batch) = next_batch(&mut rx).await {
        record_batch(queue.as_ref(), batch, &shutdown, &wake).await;
    }
    // This worker is done: the accounts its last completions freed are for the other
    // processes' workers, which would otherwise find them at their fallback poll.
    queue.announce_work().await;
}

/// The next completions to record together: the first to come, then those already
/// waiting, until at least [`COMPLETE_BATCH`] (a lease group's are never split). `None`
/// once every sender is gone.
pub(super) async fn next_batch(
    rx: &mut mpsc::Receiver<Vec<Completion>>,
) -> Option<Vec<Completion>> {
    let mut batch = rx.recv().await?;
    while batch.len() < COMPLETE_BATCH {
        match rx.try_recv() {
            Ok(c) => batch.extend(c),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Records `batch`, waking the worker for what each round recorded, and retries the
/// outcomes whose partition failed with a growing delay; after shutdown, for at most a
/// few seconds.
async fn record_batch(
    queue: &dyn Queue,
    mut batch: Vec<Completion>,
    shutdown: &CancellationToken,
    wake: &Wake,
) {
    let mut delay = Duration::from_millis(50);
    let mut give_up_at = None;
    loop {
        // Outcomes of a failing partition are retried alone; the others are recorded.
        let results = queue.complete_each(&batch).await;
        wake_freed(wake, &batch, &results);
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

/// Tells `wake` the partitions of the outcomes of `batch` that were recorded (`results`):
/// their accounts may send again, now or, when their window is full, later (the partition
/// is then left quiet until that moment). Every partition when some delivery id names none.
pub(super) fn wake_freed(wake: &Wake, batch: &[Completion], results: &[Result<Freed, QueueError>]) {
    let now = tokio::time::Instant::now();
    let mut freed = Vec::new();
    for (c, result) in batch.iter().zip(results) {
        let Ok(when) = result else { continue };
        let partition = EventId::of_delivery(&c.delivery_id).map(|id| id.partition());
        match (partition, when) {
            (None, _) => {
                wake.all();
                return;
            }
            (Some(p), Freed::Now) => freed.push(p),
            (Some(p), Freed::After(wait)) => wake.due(p, now + *wait),
        }
    }
    if !freed.is_empty() {
        wake.partitions(freed);
    }
}

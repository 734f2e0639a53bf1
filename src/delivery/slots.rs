//! The slots of a running worker's sends: one per send in flight, up to its concurrency.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queue::Completion;

/// The sending side of a running worker: its slots, the sends in flight, and the channel
/// to the completer.
pub(super) struct Sending {
    /// One per send in flight, at most the concurrency.
    pub(super) permits: Arc<Semaphore>,
    /// Told each time a send frees its slot.
    pub(super) freed: Arc<Notify>,
    /// Fewest free slots worth a claim pass after one that left none: claims are
    /// cheaper in batches.
    pub(super) low_water: usize,
    pub(super) tracker: TaskTracker,
    pub(super) completions: mpsc::Sender<Vec<Completion>>,
    /// Fires at shutdown: a lease group's sender then releases the members it has not
    /// started.
    pub(super) stop: CancellationToken,
}

impl Sending {
    /// `concurrency` slots, the outcomes sent to `completions`.
    pub(super) fn new(
        concurrency: usize,
        completions: mpsc::Sender<Vec<Completion>>,
        stop: CancellationToken,
    ) -> Self {
        Sending {
            stop,
            permits: Arc::new(Semaphore::new(concurrency)),
            freed: Arc::new(Notify::new()),
            low_water: (concurrency / 8).max(1),
            tracker: TaskTracker::new(),
            completions,
        }
    }

    /// Every slot but a few is taken: waits until `low_water` are free, or briefly
    /// while at least one is, or for shutdown.
    pub(super) async fn wait_for_slots(&self, shutdown: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
        while self.permits.available_permits() < self.low_water && !shutdown.is_cancelled() {
            let some_free = self.permits.available_permits() > 0;
            if some_free && tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep_until(deadline), if some_free => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}

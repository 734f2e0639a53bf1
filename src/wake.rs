//! What wakes an idle delivery worker: the partitions that work was stored in since it
//! last looked, told by this process (ingress, recorded completions, operator actions) or
//! announced by other processes.

use tokio::sync::Notify;

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
    /// Those among them where new work was stored (not only freed by a completion).
    stored: std::collections::BTreeSet<u16>,
    /// Partitions where a completion freed an account whose window is full, each with the
    /// earliest moment such an account may send.
    due: std::collections::BTreeMap<u16, tokio::time::Instant>,
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

    /// New work was stored in `partition` (by this process, or announced by another): the
    /// worker claims it ahead of the partitions it takes in turn, so that a quiet
    /// account's event does not wait for a round of the partitions behind busy ones.
    pub fn stored(&self, partition: u16) {
        let mut marked = self.lock();
        marked.partitions.insert(partition);
        marked.stored.insert(partition);
        drop(marked);
        self.notify.notify_one();
    }

    /// A completion freed an account of `partition` that may send at `at` (its window is
    /// full until then): the partition is claimed by then at the latest, and not before
    /// for its sake.
    pub fn due(&self, partition: u16, at: tokio::time::Instant) {
        let mut marked = self.lock();
        let due = marked.due.entry(partition).or_insert(at);
        *due = (*due).min(at);
        drop(marked);
        self.notify.notify_one();
    }

    /// Work may be waiting in any partition.
    pub fn all(&self) {
        self.lock().all = true;
        self.notify.notify_one();
    }

    /// Resolves at the next mark made after it was first polled (or at once, for a mark
    /// made while no one waited).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marked> {
        self.marked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clears the quiet time of every partition told to have work, and brings that of a
    /// partition told when an account of it falls due forward to then; returns those where
    /// new work was stored (see [`Wake::stored`]).
    pub(crate) fn apply(&self, quiet: &mut [Option<tokio::time::Instant>]) -> Vec<u16> {
        let marked = std::mem::take(&mut *self.lock());
        for (p, at) in marked.due {
            if let Some(Some(q)) = quiet.get_mut(usize::from(p)) {
                *q = (*q).min(at);
            }
        }
        if marked.all {
            quiet.iter_mut().for_each(|q| *q = None);
        }
        for p in marked.partitions {
            if let Some(q) = quiet.get_mut(usize::from(p)) {
                *q = None;
            }
        }
        marked.stored.into_iter().collect()
    }
}

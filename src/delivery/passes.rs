//! The claim passes: which partitions a pass claims (those with newly stored work ahead
//! every other pass, the rest in turn; none that is quiet or sitting out a failure), and
//! how a pass shares the free slots among them.

use std::collections::HashMap;
use std::time::Duration;

use crate::queue::{ClaimBatch, QueueError};

/// Fewest slots offered to a partition in one claim (unless fewer are free): a claim
/// call has a fixed cost in Redis, so a few free slots go to a few partitions, and the
/// next passes serve the others.
pub(super) const MIN_SHARE: usize = 8;

/// Splits `free` slots over `ready` partitions, in their order: as many partitions as can
/// get `MIN_SHARE` slots each (at least one), each an equal share and the first ones the
/// remainder.
pub(super) fn share_slots(free: usize, ready: &[u16]) -> Vec<(u16, usize)> {
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

/// A queue partition whose claims fail: since when, and when to try it again.
pub(super) struct PartitionFailure {
    pub(super) since: tokio::time::Instant,
    pub(super) retry_at: tokio::time::Instant,
}

/// How long a partition whose claim failed sits out before it is tried again.
pub(super) const PARTITION_BACKOFF: Duration = Duration::from_millis(500);

/// What a claim pass did, which says how the worker waits before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// Nothing was asked for: no partition was ready, or no slot free.
    Idle,
    /// Claims were asked for, and some partition answered.
    Claimed,
    /// Every partition's claims failed: the storage is down.
    StorageDown,
    /// The slots were closed: the worker stops.
    Stopped,
}

/// What the claim passes remember of the partitions between them.
pub(super) struct Passes {
    pub(super) partitions: u16,
    /// The partition the next pass starts at.
    pub(super) start: u16,
    /// Whether the last pass found every partition failing (the storage down).
    pub(super) storage_down: bool,
    pub(super) failing: HashMap<u16, PartitionFailure>,
    /// Per partition, until when its last claim found nothing more to send (`None`:
    /// claim it): what the claim said falls due next (a retry, a rate window, a lease
    /// running out, a held account's check), at most the idle poll away. Work stored and
    /// outcomes recorded meanwhile clear it, or bring it forward (see
    /// [`crate::wake::Wake`]).
    pub(super) quiet: Vec<Option<tokio::time::Instant>>,
    /// Partitions where new work was stored since a pass last claimed them (see
    /// [`crate::wake::Wake::stored`]), in the order told.
    pub(super) fresh: Vec<u16>,
    /// Whether the next pass takes `fresh` ahead of the turn: every other pass does, so
    /// that new work waits at most a pass or two, and a turn over busy partitions is
    /// never held up by new work stored all the time elsewhere.
    pub(super) fresh_first: bool,
}

impl Passes {
    /// Every one of `partitions` (at least one) to be claimed, from the first.
    pub(super) fn new(partitions: u16) -> Self {
        let partitions = partitions.max(1);
        Passes {
            partitions,
            start: 0,
            storage_down: false,
            failing: HashMap::new(),
            quiet: vec![None; usize::from(partitions)],
            fresh: Vec::new(),
            fresh_first: true,
        }
    }

    /// New work was stored in `partitions`: they go first in the next passes until
    /// claimed.
    pub(super) fn stored(&mut self, partitions: Vec<u16>) {
        for p in partitions {
            if p < self.partitions && !self.fresh.contains(&p) {
                self.fresh.push(p);
            }
        }
    }

    /// The partitions to claim at `now`: the ones not quiet, and not sitting out a
    /// failure; those with newly stored work and the others in turn from `start`, the
    /// former first every other pass (see `fresh_first`).
    pub(super) fn ready(&self, now: tokio::time::Instant) -> Vec<u16> {
        let claimable = |p: &u16| {
            self.quiet[usize::from(*p)].map_or(true, |until| until <= now)
                && self.failing.get(p).map_or(true, |f| f.retry_at <= now)
        };
        let fresh: Vec<u16> = self.fresh.iter().copied().filter(claimable).collect();
        let in_turn: Vec<u16> = (0..self.partitions)
            .map(|i| (self.start + i) % self.partitions)
            .filter(|p| !self.fresh.contains(p))
            .filter(claimable)
            .collect();
        if self.fresh_first {
            [fresh, in_turn].concat()
        } else {
            [in_turn, fresh].concat()
        }
    }

    /// `partition` answered a claim at `answered` with `batch`: it is reachable, and
    /// quiet until what the claim said falls due (at most `idle_poll`) if it found
    /// nothing, or took all that was due (the outcomes of what it took wake it, see
    /// [`super::completer::wake_freed`]).
    pub(super) fn claimed(
        &mut self,
        partition: u16,
        batch: &ClaimBatch,
        answered: tokio::time::Instant,
        idle_poll: Duration,
    ) {
        if let Some(f) = self.failing.remove(&partition) {
            tracing::info!(
                partition,
                failed_for_ms = f.since.elapsed().as_millis() as u64,
                "queue partition reachable again; its delivery resumes"
            );
        }
        self.quiet[usize::from(partition)] = if batch.items.is_empty() || batch.next_due.is_some() {
            let wait = batch.next_due.map_or(idle_poll, |due| due.min(idle_poll));
            Some(answered + wait)
        } else {
            None
        };
    }

    /// The claim of `partition` failed at `answered`: it sits out [`PARTITION_BACKOFF`].
    pub(super) fn claim_failed(
        &mut self,
        partition: u16,
        error: &QueueError,
        answered: tokio::time::Instant,
    ) {
        let f = self.failing.entry(partition).or_insert_with(|| {
            tracing::warn!(partition, %error, "cannot claim deliveries of a queue partition; the others go on, it is retried");
            PartitionFailure {
                since: answered,
                retry_at: answered,
            }
        });
        f.retry_at = answered + PARTITION_BACKOFF;
        // Claimed again once its backoff ends, not at a stale time.
        self.quiet[usize::from(partition)] = None;
    }

    /// The pass that asked for `requests` is over, `failures` of them failed: the next
    /// starts after the last partition this one served in turn, and the partitions with
    /// newly stored work it served are no longer ahead. True when every partition is
    /// failing (the storage is down: back off as a whole).
    pub(super) fn passed(&mut self, requests: &[(u16, usize)], failures: usize) -> bool {
        let down = failures == requests.len() && self.failing.len() == usize::from(self.partitions);
        if down && !self.storage_down {
            tracing::warn!("cannot claim deliveries from any queue partition; retrying");
        } else if !down && self.storage_down {
            tracing::info!("queue storage reachable again; delivery resumes");
        }
        self.storage_down = down;
        // the turn goes on after the last partition served in turn
        let fresh = std::mem::take(&mut self.fresh);
        if !fresh.is_empty() {
            self.fresh_first = !self.fresh_first;
        }
        let served = |p: &u16| requests.iter().any(|(r, _)| r == p);
        if let Some(&(last, _)) = requests.iter().rev().find(|(p, _)| !fresh.contains(p)) {
            self.start = (last + 1) % self.partitions;
        }
        self.fresh = fresh.into_iter().filter(|p| !served(p)).collect();
        down
    }

    /// The first moment after `now` a quiet partition falls due or a failing one may be
    /// tried again.
    pub(super) fn next_due(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.quiet
            .iter()
            .flatten()
            .chain(self.failing.values().map(|f| &f.retry_at))
            .filter(|at| **at > now)
            .min()
            .copied()
    }
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
}

//! Announcements of stored work on `{prefix}:wake`: every process's worker learns which
//! partitions got work (a comma-separated list; empty for all), so an idle worker claims
//! only there.

use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use super::transport::Transport;

/// Announces new work (events stored for an account that was not ready, dead letters
/// replayed, an account resumed) on the store's pub/sub channel, so that every process's
/// worker wakes at once instead of at its next poll. An account already ready needs no
/// announcement: the workers' claims already count it as due. Announcements coalesce: at most one
/// `PUBLISH` is in flight, and work stored while it is sends one more after it, so the
/// last store is always announced after it was made.
pub(super) struct Announcer {
    /// The channel: `{prefix}:wake`.
    pub(super) channel: Arc<str>,
    busy: AtomicBool,
    again: AtomicBool,
    /// The partitions to name in the next announcement.
    pending: std::sync::Mutex<Announced>,
}

/// Partitions whose work is still to be announced.
#[derive(Default)]
pub(super) struct Announced {
    /// Any partition may have work (an announcement without partitions).
    all: bool,
    partitions: std::collections::BTreeSet<u16>,
}

impl Announced {
    /// The payload of an announcement: the partitions, comma-separated; empty for all;
    /// `None` when there is nothing to announce (another pass announced it already).
    fn take_payload(&mut self) -> Option<String> {
        let all = std::mem::take(&mut self.all);
        let partitions = std::mem::take(&mut self.partitions);
        if all {
            return Some(String::new());
        }
        let named: Vec<String> = partitions.iter().map(u16::to_string).collect();
        (!named.is_empty()).then(|| named.join(","))
    }
}

/// The partitions an announcement's payload names; `None` for all of them (an empty or
/// unreadable payload).
pub fn announced_partitions(payload: &[u8]) -> Option<Vec<u16>> {
    let text = std::str::from_utf8(payload).ok()?;
    let partitions: Vec<u16> = text
        .split(',')
        .map(|p| p.trim().parse::<u16>())
        .collect::<Result<_, _>>()
        .ok()?;
    (!partitions.is_empty()).then_some(partitions)
}

impl Announcer {
    pub(super) fn new(channel: String) -> Self {
        Announcer {
            channel: channel.into(),
            busy: AtomicBool::new(false),
            again: AtomicBool::new(false),
            pending: std::sync::Mutex::new(Announced::default()),
        }
    }

    /// Announces work in `partition` (`None`: in any), now or right after the
    /// announcement in flight.
    pub(super) fn announce<T: Transport>(
        self: &Arc<Self>,
        transport: &Arc<T>,
        partition: Option<u16>,
    ) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match partition {
                Some(p) => {
                    pending.partitions.insert(p);
                }
                None => pending.all = true,
            }
        }
        self.again.store(true, Ordering::SeqCst);
        if self.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let (this, transport) = (self.clone(), transport.clone());
        tokio::spawn(async move {
            loop {
                while this.again.swap(false, Ordering::SeqCst) {
                    let payload = this
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take_payload();
                    let Some(payload) = payload else {
                        continue;
                    };
                    if let Err(e) = transport.publish(&this.channel, &payload).await {
                        // The other workers find the work at their next poll.
                        tracing::debug!(error = %e, "new work not announced");
                    }
                }
                this.busy.store(false, Ordering::SeqCst);
                // Work stored between the last check and the release: announce it here,
                // unless another announcer took over.
                if !this.again.load(Ordering::SeqCst) || this.busy.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    }
}

/// The partition of a partition base (`{prefix}:{pN}`).
pub(super) fn partition_of_base(base: &str) -> Option<u16> {
    base.rsplit_once(":{p")?.1.strip_suffix('}')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_their_partitions() {
        let mut pending = Announced::default();
        assert_eq!(pending.take_payload(), None);
        pending.partitions.extend([7, 3, 7]);
        assert_eq!(pending.take_payload().as_deref(), Some("3,7"));
        assert_eq!(pending.take_payload(), None);
        pending.partitions.insert(1);
        pending.all = true;
        assert_eq!(pending.take_payload().as_deref(), Some(""));
        assert_eq!(announced_partitions(b"3,7"), Some(vec![3, 7]));
        // Empty or unreadable: every partition.
        assert_eq!(announced_partitions(b""), None);
        assert_eq!(announced_partitions(b"3,x"), None);
        assert_eq!(announced_partitions(&[0xff]), None);
    }

    #[test]
    fn a_base_names_its_partition() {
        assert_eq!(partition_of_base("zenrelay:{p12}"), Some(12));
        assert_eq!(partition_of_base("a:b:{p0}"), Some(0));
        assert_eq!(partition_of_base("zenrelay:meta"), None);
    }
}

//! This process's record in the store's registry of gateway processes: written on start
//! and every [`HEARTBEAT`], removed at shutdown. `GET /v1/cluster` lists the live ones, and
//! a process that must migrate the store's layout waits while one of an older layout runs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::queue::layout::LAYOUT_VERSION;
use crate::queue::{rfc3339_ms, ProcessRecord, Queue, HEARTBEAT};

/// This process's record: a new id, this release and layout, where it runs.
pub fn this_process(delivery: bool) -> ProcessRecord {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ProcessRecord {
        id: uuid::Uuid::now_v7().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        layout: LAYOUT_VERSION,
        host: host_name(),
        pid: std::process::id(),
        started_at: rfc3339_ms(now_ms),
        delivery,
        last_seen: String::new(),
    }
}

/// The machine's host name, or `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Beats until `token` is cancelled, then removes the record. A failed beat is logged and
/// tried again at the next one: the store being down stops nothing else.
pub async fn run(queue: Arc<dyn Queue>, record: ProcessRecord, token: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = queue.heartbeat(&record).await {
                    tracing::debug!(error = %e, "process heartbeat not recorded");
                }
            }
        }
    }
    if let Err(e) = queue.leave(&record.id).await {
        tracing::debug!(error = %e, "process record not removed; it goes stale by itself");
    }
}

//! One lease group sent, its members one after another, and each call's outcome decided
//! from upstream's answer (delivered, retried, dead-lettered, or its account held).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Worker, GROUP_RECORD_WAIT};
use crate::queue::{Claimed, Completion, DeadReason, Outcome};
use crate::zendesk::NotifyResult;

impl Worker {
    /// Sends the members of one lease group (see [`crate::queue::Queue::claim`]), claimed
    /// at `asked`, one after another, and hands their completions to `done` together once
    /// the group has ended (so that one call records them), or, while a send goes on, once
    /// the first waiting has waited [`GROUP_RECORD_WAIT`]. After a 429, refused
    /// credentials or a release (too little lease left), and once `stop` fires, the
    /// members not sent are released, last first, before the one it stopped at: put back
    /// at the front of the account's list in that order, the group keeps its order.
    pub async fn deliver_group(
        &self,
        group: &[Claimed],
        asked: tokio::time::Instant,
        stop: &CancellationToken,
        done: &mpsc::Sender<Vec<Completion>>,
    ) {
        let mut waiting = Vec::with_capacity(group.len());
        let mut since = tokio::time::Instant::now();
        for (i, claimed) in group.iter().enumerate() {
            let completion = if i > 0 && stop.is_cancelled() {
                Completion::of(claimed, Outcome::Released)
            } else {
                let span = tracing::info_span!(
                    "call",
                    delivery_id = %claimed.delivery_id,
                    attempt = claimed.attempts
                );
                let send = self.deliver_leased(claimed, asked).instrument(span);
                tokio::pin!(send);
                // what waits is handed over once it has waited long enough, even while
                // this send takes its time
                loop {
                    if waiting.is_empty() {
                        break send.await;
                    }
                    tokio::select! {
                        completion = &mut send => break completion,
                        _ = tokio::time::sleep_until(since + GROUP_RECORD_WAIT) => {
                            let _ = done.send(std::mem::take(&mut waiting)).await;
                        }
                    }
                }
            };
            let stops = matches!(
                completion.outcome,
                Outcome::RateLimited { .. } | Outcome::AuthFailed { .. } | Outcome::Released
            );
            if stops {
                waiting.extend(
                    group[i + 1..]
                        .iter()
                        .rev()
                        .map(|rest| Completion::of(rest, Outcome::Released)),
                );
                waiting.push(completion);
                break;
            }
            if waiting.is_empty() {
                since = tokio::time::Instant::now();
            }
            waiting.push(completion);
            if since.elapsed() >= GROUP_RECORD_WAIT {
                let _ = done.send(std::mem::take(&mut waiting)).await;
            }
        }
        if !waiting.is_empty() {
            let _ = done.send(waiting).await;
        }
    }

    /// As [`Worker::deliver_group`], returning the completions in the order decided.
    pub async fn deliver_group_now(
        &self,
        group: &[Claimed],
        asked: tokio::time::Instant,
    ) -> Vec<Completion> {
        let (tx, mut rx) = mpsc::channel(group.len().max(1));
        let collect = async {
            let mut out = Vec::with_capacity(group.len());
            while let Some(c) = rx.recv().await {
                out.extend(c);
            }
            out
        };
        let send = async move {
            self.deliver_group(group, asked, &CancellationToken::new(), &tx)
                .await;
        };
        let ((), out) = tokio::join!(send, collect);
        out
    }

    /// As [`Worker::deliver`], for a delivery whose claim was asked for at `asked`: if too
    /// little of its lease is left for a send (see
    /// [`super::WorkerSettings::send_timeout`]), it is released unsent.
    pub async fn deliver_leased(
        &self,
        claimed: &Claimed,
        asked: tokio::time::Instant,
    ) -> Completion {
        let send_by = self.send_timeout.map(|send_timeout| {
            (asked + claimed.lease)
                .checked_sub(send_timeout)
                .unwrap_or(asked)
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

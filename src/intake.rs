//! Intake: turns a validated request into stored events, whoever received it (ingress,
//! webhooks, the proxy's Notify shortcut).
//!
//! A document is checked against the Notify schema and Zendesk's 1 MB cap
//! ([`Intake::prepare`]), then stored with its idempotency key, if any
//! ([`Intake::store_one`], [`Intake::store_batch`]). What was stored wakes this process's
//! worker for the account's partition and counts in the metrics. Knows nothing of HTTP:
//! [`IntakeError`] is answered by [`crate::error::ApiError`]'s `From` conversion.

use std::sync::Arc;

use serde_json::Value;

use crate::config::Config;
use crate::domain::{
    fingerprint, partition_of, EventError, EventId, FieldError, NotifyEvent, NOTIFY_MAX_BYTES,
};
use crate::metrics::Metrics;
use crate::queue::{EnqueueBatch, EnqueueOutcome, NewEvent, Queue, QueueError};
use crate::schema::SchemaValidator;
use crate::wake::Wake;
use crate::zendesk::Account;

/// How long an `Idempotency-Key` is remembered, in seconds.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// Why an event was not stored.
#[derive(Debug)]
pub enum IntakeError {
    /// The document does not match the Notify schema.
    Invalid(Vec<FieldError>),
    /// The Notify request it makes would exceed Zendesk's cap.
    TooLarge {
        /// The request's size, in bytes.
        size: usize,
    },
    /// The account already holds `delivery.max_queue_depth` undelivered events.
    QueueFull {
        /// The account.
        account: String,
        /// When to try again, in seconds (the account's rolling window).
        retry_after_secs: u64,
    },
    /// The idempotency key was used with another body.
    KeyReused,
    /// The store failed.
    Queue(QueueError),
}

impl std::fmt::Display for IntakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntakeError::Invalid(errors) => {
                write!(f, "the event does not match the schema ({} errors)", errors.len())
            }
            IntakeError::TooLarge { size } => write!(
                f,
                "the Notify request would be {size} bytes; Zendesk accepts at most {NOTIFY_MAX_BYTES}"
            ),
            IntakeError::QueueFull { account, .. } => write!(
                f,
                "account {account:?} already holds the most undelivered events allowed"
            ),
            IntakeError::KeyReused => {
                f.write_str("this Idempotency-Key was used with a different request body")
            }
            IntakeError::Queue(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for IntakeError {}

impl From<QueueError> for IntakeError {
    fn from(e: QueueError) -> Self {
        IntakeError::Queue(e)
    }
}

/// An event stored, now or by an earlier request with the same idempotency key and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The event id.
    pub id: String,
    /// Its Notify calls.
    pub deliveries: u64,
    /// Whether this request stored it (`false`: an earlier one did).
    pub new: bool,
}

/// The intake service: what storing an event needs, and nothing more.
pub struct Intake {
    queue: Arc<dyn Queue>,
    schema: SchemaValidator,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
    partitions: u16,
    default_ttl_seconds: u64,
    max_depth: u64,
    window_seconds: u64,
}

impl Intake {
    /// Intake into `queue`, with the settings of `config`.
    pub fn new(
        config: &Config,
        queue: Arc<dyn Queue>,
        schema: SchemaValidator,
        wake: Arc<Wake>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Intake {
            queue,
            schema,
            wake,
            metrics,
            partitions: config.redis.partitions,
            default_ttl_seconds: config.delivery.default_ttl_seconds,
            max_depth: config.delivery.max_queue_depth,
            window_seconds: config.delivery.notify_window_seconds,
        }
    }

    /// Validates one event document of `account` and turns it into what the queue stores.
    pub fn prepare(
        &self,
        account: &str,
        value: &Value,
        idempotency: Option<String>,
    ) -> Result<NewEvent, IntakeError> {
        let errors = self.schema.check(value);
        if !errors.is_empty() {
            return Err(IntakeError::Invalid(errors));
        }
        let event = match NotifyEvent::from_json(value) {
            Ok(event) => event,
            Err(EventError::Invalid(errors)) => return Err(IntakeError::Invalid(errors)),
            Err(EventError::TooLarge { size }) => return Err(IntakeError::TooLarge { size }),
        };
        let ttl_seconds = event.ttl_seconds.unwrap_or(self.default_ttl_seconds);
        Ok(NewEvent {
            id: EventId::new(partition_of(account, self.partitions)),
            priority: event.priority,
            ttl_ms: ttl_seconds.saturating_mul(1000),
            payload: event.payload,
            agents: event.agents,
            idempotency: idempotency.map(|key| (key, fingerprint(value))),
        })
    }

    /// Stores one event, its idempotency key (if any) remembered for
    /// `idempotency_ttl_secs`.
    pub async fn store_one(
        &self,
        account: &Account,
        event: NewEvent,
        idempotency_ttl_secs: u64,
    ) -> Result<Stored, IntakeError> {
        let outcomes = self
            .store(account, vec![event], idempotency_ttl_secs)
            .await?;
        let stored = match outcomes.into_iter().next() {
            Some(outcome) => outcome?,
            None => return Err(QueueError::Protocol("enqueue answered nothing".into()).into()),
        };
        if stored.new {
            tracing::debug!(event_id = %stored.id, account = %account.id, deliveries = stored.deliveries, "event stored");
        }
        Ok(stored)
    }

    /// Stores events of one account independently: one outcome per event, in order.
    pub async fn store_batch(
        &self,
        account: &Account,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Result<Stored, IntakeError>>, IntakeError> {
        self.store(account, events, IDEMPOTENCY_TTL_SECS).await
    }

    async fn store(
        &self,
        account: &Account,
        events: Vec<NewEvent>,
        idempotency_ttl_secs: u64,
    ) -> Result<Vec<Result<Stored, IntakeError>>, IntakeError> {
        let batch = EnqueueBatch {
            account: account.id.clone(),
            limit: account.limit,
            max_depth: self.max_depth,
            idempotency_ttl_secs,
            events,
        };
        let count = batch.events.len();
        let outcomes = self.queue.enqueue(batch).await?;
        if outcomes.len() != count {
            return Err(QueueError::Protocol(format!(
                "enqueue answered {} outcomes for {count} events",
                outcomes.len()
            ))
            .into());
        }
        let results: Vec<_> = outcomes
            .into_iter()
            .map(|outcome| self.outcome(&account.id, outcome))
            .collect();
        let stored = results
            .iter()
            .filter(|r| matches!(r, Ok(Stored { new: true, .. })))
            .count() as u64;
        if stored > 0 {
            self.wake.stored(partition_of(&account.id, self.partitions));
            self.metrics.events_accepted(&account.id, stored);
            tracing::debug!(account = %account.id, stored, "events stored");
        }
        Ok(results)
    }

    fn outcome(&self, account: &str, outcome: EnqueueOutcome) -> Result<Stored, IntakeError> {
        match outcome {
            EnqueueOutcome::Stored { id, deliveries } => Ok(Stored {
                id,
                deliveries,
                new: true,
            }),
            EnqueueOutcome::Duplicate { id, deliveries } => Ok(Stored {
                id,
                deliveries,
                new: false,
            }),
            EnqueueOutcome::IdempotencyMismatch => Err(IntakeError::KeyReused),
            EnqueueOutcome::QueueFull => Err(IntakeError::QueueFull {
                account: account.to_string(),
                retry_after_secs: self.window_seconds,
            }),
        }
    }
}

//! The one error type of the HTTP edge, with the stable body
//! `{"error": {"code", "message", "details"}}`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::domain::{FieldError, NOTIFY_MAX_BYTES};
use crate::intake::IntakeError;
use crate::queue::QueueError;
use crate::throttle::Throttled;

/// Every error code the gateway answers with (the `code` of an error body), in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A webhook whose signatures all fail.
    BadSignature,
    /// A webhook whose timestamp is outside the tolerance.
    StaleTimestamp,
    /// A webhook without its signature headers.
    MissingSignature,
    /// An account id in the path that is not a valid id.
    BadAccountId,
    /// An `Idempotency-Key` header that is empty, too long or not visible ASCII.
    BadIdempotencyKey,
    /// A path the proxy refuses (traversal, encoded separators, an unknown shape).
    BadPath,
    /// A query parameter with a wrong value.
    BadQuery,
    /// A dead-letter selection (ids, filters) that names nothing valid.
    BadSelection,
    /// A request body that did not arrive in time.
    BodyTimeout,
    /// A request body over the configured size.
    BodyTooLarge,
    /// An account of the configuration, which the runtime API may not change.
    ConfiguredAccount,
    /// A key that does not reach the account or the operation.
    Forbidden,
    /// A request header the proxy does not forward.
    HeaderNotAllowed,
    /// An `Idempotency-Key` used before with another body.
    IdempotencyKeyReused,
    /// A failure of the gateway itself (a handler panicked).
    Internal,
    /// A runtime account record that is not valid.
    InvalidAccount,
    /// An event that does not match the Notify schema.
    InvalidEvent,
    /// A body that is not JSON.
    MalformedJson,
    /// A method the path does not take.
    MethodNotAllowed,
    /// No such resource.
    NotFound,
    /// Stored on the primary, not confirmed by `redis.wait_replicas` replicas in time.
    NotReplicated,
    /// A Notify payload over Zendesk's 1 MB cap.
    NotifyTooLarge,
    /// No pacing turn for a proxied request within `proxy.max_wait_ms`.
    ProxyBusy,
    /// An account holding `delivery.max_queue_depth` undelivered calls.
    QueueFull,
    /// A client over its ingress throttle.
    RateLimited,
    /// A webhook delivery id accepted before.
    ReplayedWebhook,
    /// A path outside the proxy's allowlist.
    RouteNotAllowed,
    /// The runtime accounts API, switched off.
    RuntimeAccountsDisabled,
    /// Redis does not answer: nothing was stored.
    StorageUnavailable,
    /// A missing or unknown key.
    Unauthorized,
    /// An account the gateway does not know.
    UnknownAccount,
    /// An event id the queue does not hold.
    UnknownEvent,
    /// A webhook name that is not configured.
    UnknownWebhook,
    /// A webhook payload its mapping cannot turn into an event.
    UnmappablePayload,
    /// A body that could not be read.
    UnreadableBody,
    /// A body that is not `application/json`.
    UnsupportedMediaType,
    /// Zendesk answered with a failure the proxy passes on.
    UpstreamError,
    /// Zendesk did not answer in time.
    UpstreamTimeout,
    /// Zendesk could not be reached.
    UpstreamUnreachable,
    /// An upstream URL the proxy cannot build.
    UpstreamUrl,
}

impl ErrorCode {
    /// The code as it appears in an error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::StaleTimestamp => "stale_timestamp",
            ErrorCode::MissingSignature => "missing_signature",
            ErrorCode::BadAccountId => "bad_account_id",
            ErrorCode::BadIdempotencyKey => "bad_idempotency_key",
            ErrorCode::BadPath => "bad_path",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::BadSelection => "bad_selection",
            ErrorCode::BodyTimeout => "body_timeout",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::ConfiguredAccount => "configured_account",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::HeaderNotAllowed => "header_not_allowed",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidAccount => "invalid_account",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotReplicated => "not_replicated",
            ErrorCode::NotifyTooLarge => "notify_too_large",
            ErrorCode::ProxyBusy => "proxy_busy",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ReplayedWebhook => "replayed_webhook",
            ErrorCode::RouteNotAllowed => "route_not_allowed",
            ErrorCode::RuntimeAccountsDisabled => "runtime_accounts_disabled",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::UnknownWebhook => "unknown_webhook",
            ErrorCode::UnmappablePayload => "unmappable_payload",
            ErrorCode::UnreadableBody => "unreadable_body",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::UpstreamUrl => "upstream_url",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to a caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details (field errors, sizes).
    pub details: Vec<Value>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 422 listing the bad fields.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let details = errors
            .into_iter()
            .map(|e| json!({"pointer": e.pointer, "message": e.message}))
            .collect();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidEvent,
            "the event does not match the schema",
        )
        .with_details(details)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or invalid client key (Authorization: Bearer <key>)",
        )
    }

    /// 404 for an unknown route.
    pub fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such resource",
        )
    }

    /// The body of the error, as sent.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code.as_str(), "message": self.message, "details": self.details}})
    }
}

/// The error body, as documented in the OpenAPI description.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details: field errors (`pointer`, `message`), sizes.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Value>,
}

impl From<Throttled> for ApiError {
    fn from(e: Throttled) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            e.to_string(),
        )
        .with_retry_after(e.retry_after_secs)
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(errors) => ApiError::invalid(errors),
            IntakeError::TooLarge { size } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::NotifyTooLarge,
                e.to_string(),
            )
            .with_details(vec![json!({"size": size, "limit": NOTIFY_MAX_BYTES})]),
            IntakeError::QueueFull {
                retry_after_secs, ..
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QueueFull,
                e.to_string(),
            )
            .with_retry_after(retry_after_secs),
            IntakeError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                e.to_string(),
            ),
            IntakeError::Queue(e) => e.into(),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "queue storage failed a request");
        if let QueueError::NotReplicated { wanted, .. } = e {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NotReplicated,
                format!(
                    "the primary stored the request, but fewer than {wanted} replicas (redis.wait_replicas) confirmed it in time, so a failover could lose it; a retry with the same Idempotency-Key is answered with the stored event"
                ),
            )
            .with_retry_after(1);
        }
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            "the queue storage is unavailable; nothing was stored, retry later",
        )
        .with_retry_after(1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

//! The one error type of the HTTP edge, with the stable body
//! `{"error": {"code", "message", "details"}}`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::domain::FieldError;
use crate::queue::QueueError;

/// An error answered to a caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details (field errors, sizes).
    pub details: Vec<Value>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
            "invalid_event",
            "the event does not match the schema",
        )
        .with_details(details)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid client key (Authorization: Bearer <key>)",
        )
    }

    /// 404 for an unknown route.
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// The body of the error, as sent.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": self.details}})
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

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "queue storage failed a request");
        if let QueueError::NotReplicated { wanted, .. } = e {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_replicated",
                format!(
                    "the primary stored the request, but fewer than {wanted} replicas (redis.wait_replicas) confirmed it in time, so a failover could lose it; a retry with the same Idempotency-Key is answered with the stored event"
                ),
            )
            .with_retry_after(1);
        }
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
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

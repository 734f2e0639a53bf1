//! Zendesk's error bodies, the one error type at the simulator's HTTP edge.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The message of Zendesk's 403 body.
pub(crate) const FORBIDDEN_MESSAGE: &str = "You do not have access to this page. Please contact the account owner of this help desk for further help.";

/// An error answered the way Zendesk answers it.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 401 `{"error":"Couldn't authenticate you"}` with `WWW-Authenticate`.
    Unauthorized,
    /// 403 `{"error":{"title":"Forbidden","message":...}}`.
    Forbidden,
    /// 404 `{"error":"RecordNotFound","description":"Not found"}`.
    NotFound,
    /// 422 `{"error":"RecordInvalid","description":"Record validation errors","details":...}`.
    Invalid(Value),
    /// 400 `{"error":"InvalidValue","description":...}` for malformed requests.
    BadRequest(String),
    /// 413 `"Payload too large"`.
    PayloadTooLarge,
    /// 500 for failures of the simulator itself (never caused by input); the cause is logged.
    Internal(String),
}

impl ApiError {
    /// A 422 whose details name one field.
    pub(crate) fn invalid(field: &str, description: impl Into<String>) -> ApiError {
        ApiError::Invalid(json!({
            field: [{"description": description.into(), "error": "InvalidValue"}]
        }))
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A JSON response with an explicit status (always `application/json; charset=utf-8`).
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// 204 No Content, still with a `Content-Type` as every simulator response has one.
pub(crate) fn no_content() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Unauthorized => json!({"error": "Couldn't authenticate you"}),
            ApiError::Forbidden => json!({
                "error": {"title": "Forbidden", "message": FORBIDDEN_MESSAGE}
            }),
            ApiError::NotFound => json!({"error": "RecordNotFound", "description": "Not found"}),
            ApiError::Invalid(details) => json!({
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": details,
            }),
            ApiError::BadRequest(description) => {
                json!({"error": "InvalidValue", "description": description})
            }
            ApiError::PayloadTooLarge => json!("Payload too large"),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "sim internal error");
                json!({"error": "InternalError", "description": "Internal error"})
            }
        };
        let mut resp = json_response(status, &body);
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Web Password\""),
            );
        }
        resp
    }
}

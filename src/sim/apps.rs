//! Apps: upload, create/update builds, show/list, delete, public keys.

/// An app built from an uploaded package.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: u64,
}

use axum::response::Response;

use super::api::Ctx;
use super::errors::ApiError;

type R = Result<Response, ApiError>;

pub(crate) fn list(_ctx: &Ctx<'_>, _owned: bool) -> R {
    Ok(super::errors::json_response(
        axum::http::StatusCode::OK,
        &serde_json::json!({"apps": []}),
    ))
}
pub(crate) fn show(_ctx: &Ctx<'_>, _id: u64) -> R {
    Err(ApiError::NotFound)
}
pub(crate) async fn public_key(_ctx: &Ctx<'_>, _id: u64, _pem: bool) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn create(_ctx: &Ctx<'_>, _id: Option<u64>) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn delete(_ctx: &Ctx<'_>, _id: u64) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn job_status(_ctx: &Ctx<'_>, _id: &str) -> R {
    Err(ApiError::NotFound)
}
pub(crate) async fn upload(_ctx: &Ctx<'_>) -> R {
    Err(ApiError::NotFound)
}
pub(crate) async fn validate(_ctx: &Ctx<'_>) -> R {
    Err(ApiError::NotFound)
}

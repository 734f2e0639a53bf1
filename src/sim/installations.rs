//! Installations.

/// An installation.
#[derive(Debug, Clone)]
pub(crate) struct Installation {
    pub id: u64,
}

use axum::response::Response;

use super::api::Ctx;
use super::errors::ApiError;

type R = Result<Response, ApiError>;

pub(crate) fn list(_ctx: &Ctx<'_>) -> R {
    Ok(super::errors::json_response(
        axum::http::StatusCode::OK,
        &serde_json::json!({"installations": []}),
    ))
}
pub(crate) fn install(_ctx: &Ctx<'_>) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn show(_ctx: &Ctx<'_>, _id: u64) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn update(_ctx: &Ctx<'_>, _id: u64) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn delete(_ctx: &Ctx<'_>, _id: u64) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn requirements(_ctx: &Ctx<'_>, _id: u64) -> R {
    Err(ApiError::NotFound)
}
pub(crate) fn job_status(_ctx: &Ctx<'_>, _id: &str) -> R {
    Err(ApiError::NotFound)
}

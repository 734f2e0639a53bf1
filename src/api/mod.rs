//! The gateway's HTTP edge: routes, extractors and the answers of each endpoint, over the
//! services below (intake, queue, accounts, webhooks, proxy) that know nothing of HTTP.
//!
//! - [`extract`] — who is calling (`Caller`, `Admin`, `AdminAccount`, `CallerAccount`) and
//!   the checks of headers and bodies.
//! - [`ingress`] — `/v1` notify, batch and event status.
//! - [`webhooks`] — `POST /v1/webhooks/{name}`.
//! - [`admin`] — operator endpoints and `GET /metrics`.
//! - [`proxy`], [`proxy_notify`] — the Apps API proxy, and its queued Notify calls.
//! - [`openapi`] — the OpenAPI description's fixed parts.

pub mod admin;
pub mod extract;
pub mod ingress;
pub mod openapi;
pub mod proxy;
pub mod proxy_notify;
pub mod request_id;
pub mod webhooks;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::dashboard;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use request_id::RequestIdLayer;

/// The documented routes: every one of them carries a `#[utoipa::path]` annotation and is
/// registered from it, so the OpenAPI description and the router cannot drift apart.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(admin::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(ingress::notify))
        .routes(routes!(ingress::notify_batch))
        .routes(routes!(ingress::event_status))
        .routes(routes!(webhooks::receive))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::stylesheet))
        .routes(routes!(admin::queues))
        .routes(routes!(admin::history))
        .routes(routes!(admin::cluster))
        .routes(routes!(admin::dead_letters, admin::purge))
        .routes(routes!(admin::replay))
        .routes(routes!(admin::pause))
        .routes(routes!(admin::resume))
        .routes(routes!(
            admin::put_account,
            admin::get_account,
            admin::delete_account
        ))
        .split_for_parts()
}

/// The router of the gateway's HTTP API.
pub fn router(state: AppState) -> Router {
    api()
        .0
        .fallback(proxy::handle)
        .method_not_allowed_fallback(method_not_allowed)
        // One stack, laid over each route once: every `Router::layer` boxes each route
        // again, and a request clones and polls through every box.
        .layer(
            ServiceBuilder::new()
                .layer(RequestIdLayer)
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                        let id = request
                            .headers()
                            .get(&request_id::X_REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                    }),
                )
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(DefaultBodyLimit::disable()),
        )
        .with_state(state)
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs")))]
async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Readiness: 200 when Redis answers, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Redis answers"),
        (status = 503, description = "Redis unavailable", body = crate::error::ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.queue().ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// This OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        state.openapi().clone(),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this method is not allowed on this path",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error",
    )
    .into_response()
}

/// The complete OpenAPI document as JSON.
pub fn document() -> Value {
    openapi::complete(api().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_openapi_3_1_with_every_route() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/v1/accounts/{account}/notify",
            "/v1/webhooks/{name}",
            "/v1/queues",
            "/v1/history",
            "/",
            "/dashboard.js",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(
            doc["components"]["schemas"]["NotifyEvent"]["required"],
            serde_json::json!(["app_id", "event"])
        );
    }
}

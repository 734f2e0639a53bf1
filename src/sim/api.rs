//! The request pipeline of the Apps API: attribute the request to an account, apply fault
//! rules, authenticate and authorize, read the body, dispatch to the endpoint, and log it.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::auth::{self, Caller};
use super::clock::unix_ms;
use super::ctx::Ctx;
use super::errors::{json_response, ApiError};
use super::faults::{self, Failure};
use super::routes::{self, Family, Route};
use super::state::{RequestRecord, Store};
use super::{apps, installations, notify};
use crate::server::DropConnection;

/// Request bodies larger than this are refused with 413 before any endpoint sees them.
pub(crate) const MAX_BODY: usize = 32 * 1024 * 1024;

fn host_of(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
}

fn dropped_response() -> Response {
    // Served by our own accept loop this never reaches the wire; elsewhere the failing body
    // still breaks the exchange.
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by a fault rule"))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp.extensions_mut().insert(DropConnection);
    resp
}

fn fault_response(status: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut resp = json_response(
        status,
        &json!({"error": reason.replace(' ', ""), "description": format!("{reason} (injected by the simulator)")}),
    );
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Entry point of every non-hook request.
pub(crate) async fn handle(State(store): State<Arc<Store>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let host = host_of(&parts);
    let path = parts.uri.path().to_string();
    let resolved = routes::resolve(&parts.method, &path);
    let auth = auth::authenticate(store.config(), &parts.headers, host.as_deref());
    let account = match &auth {
        Ok(Some(c)) => Some(c.account.clone()),
        _ => auth::host_account(store.config(), host.as_deref()).map(str::to_string),
    };
    let mut record = RequestRecord {
        seq: 0,
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        host: host.clone(),
        account: account.clone(),
        status: None,
        fault: false,
        at_unix_ms: unix_ms(SystemTime::now()),
    };

    let action = {
        let mut state = store.lock();
        faults::decide(
            &mut state.faults,
            account.as_deref(),
            &path,
            resolved.as_ref().map(|(_, r)| r),
            rand::random::<f64>,
        )
    };
    if let Some(action) = action {
        if !action.latency.is_zero() {
            tokio::time::sleep(action.latency).await;
        }
        let resp = match action.failure {
            Some(Failure::Drop) => Some(dropped_response()),
            Some(Failure::Status {
                status,
                retry_after,
            }) => Some(fault_response(status, retry_after)),
            None => None,
        };
        if let Some(resp) = resp {
            record.fault = true;
            if resp.extensions().get::<DropConnection>().is_none() {
                record.status = Some(resp.status().as_u16());
            }
            store.lock().log_request(record);
            return resp;
        }
    }

    let scheme = if store.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let base_url = format!("{scheme}://{}", host.as_deref().unwrap_or("localhost"));
    let resp = dispatch(&store, &parts, body, resolved, auth, base_url).await;
    record.status = Some(resp.status().as_u16());
    store.lock().log_request(record);
    resp
}

async fn dispatch(
    store: &Store,
    parts: &Parts,
    body: Body,
    resolved: Option<(Family, Route)>,
    auth: Result<Option<Caller>, ApiError>,
    base_url: String,
) -> Response {
    let Some((family, route)) = resolved else {
        return ApiError::NotFound.into_response();
    };
    let caller = match auth {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = auth::authorize(caller.as_ref(), route.allowed(family)) {
        return e.into_response();
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::PayloadTooLarge.into_response()
        }
        Err(_) => {
            return ApiError::BadRequest("Could not read the request body".into()).into_response()
        }
    };
    let ctx = Ctx {
        store,
        family,
        caller,
        parts,
        body,
        base_url,
    };
    let result = match route {
        Route::Notify => match &ctx.caller {
            Some(c) => return notify::notify(store, c, &parts.headers, ctx.body.clone()),
            None => Err(ApiError::Unauthorized),
        },
        Route::ListApps => apps::list(&ctx, false),
        Route::ListOwned => apps::list(&ctx, true),
        Route::ShowApp(id) => apps::show(&ctx, id),
        Route::PublicKey { app_id, pem } => apps::public_key(&ctx, app_id, pem).await,
        Route::CreateApp => apps::create(&ctx, None).await,
        Route::UpdateApp(id) => apps::create(&ctx, Some(id)).await,
        Route::DeleteApp(id) => apps::delete(&ctx, id),
        Route::JobStatus(id) => apps::job_status(&ctx, &id),
        Route::Upload => apps::upload(&ctx).await,
        Route::Validate => apps::validate(&ctx).await,
        Route::ListInstallations => installations::list(&ctx),
        Route::Install => installations::install(&ctx),
        Route::ShowInstallation(id) => installations::show(&ctx, id),
        Route::UpdateInstallation(id) => installations::update(&ctx, id),
        Route::DeleteInstallation(id) => installations::delete(&ctx, id),
        Route::Requirements(id) => installations::requirements(&ctx, id),
        Route::InstallJobStatus(id) => installations::job_status(&ctx, &id),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

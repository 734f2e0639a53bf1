//! Apps: package uploads, validation, create/update builds and their job status, show/list,
//! delete, and the per-app public key.

use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::body::{json_object, numeric_id, optional_string};
use super::ctx::Ctx;
use super::errors::{json_response, no_content, ApiError};
use super::jobs::{self, Job, JobKind, Stage};
use super::packages::{self, InvalidPackage, Package};
use super::progress;
use super::routes::Family;

type R = Result<Response, ApiError>;

/// Uploads kept per account.
const MAX_UPLOADS: usize = 100;

fn exclusions(ctx: &Ctx<'_>) -> Vec<String> {
    ctx.query("exclude")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

/// `GET /apps` and `GET /apps/owned`.
pub(crate) fn list(ctx: &Ctx<'_>, owned: bool) -> R {
    if ctx.caller.is_none() {
        // Anonymous callers see public apps only, and the simulator has none.
        return Ok(json_response(StatusCode::OK, &json!({"apps": []})));
    }
    let exclude = if owned { exclusions(ctx) } else { Vec::new() };
    let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
    let family = ctx.family;
    ctx.with_account(|account, _| {
        let apps: Vec<Value> = account
            .apps
            .values()
            .map(|a| account.app_json(a, family, &exclude))
            .collect();
        Ok(json_response(StatusCode::OK, &json!({ "apps": apps })))
    })
}

/// `GET /apps/{id}`.
pub(crate) fn show(ctx: &Ctx<'_>, id: u64) -> R {
    if ctx.caller.is_none() {
        return Err(ApiError::NotFound);
    }
    let family = ctx.family;
    ctx.with_account(|account, _| {
        let app = account.apps.get(&id).ok_or(ApiError::NotFound)?;
        Ok(json_response(
            StatusCode::OK,
            &account.app_json(app, family, &[]),
        ))
    })
}

/// `DELETE /apps/{id}`: the app and its installations go.
pub(crate) fn delete(ctx: &Ctx<'_>, id: u64) -> R {
    ctx.with_account(|account, _| {
        account.apps.remove(&id).ok_or(ApiError::NotFound)?;
        account.installations.retain(|_, i| i.app_id != id);
        Ok(no_content())
    })
}

/// Why a public key could not be made.
#[derive(Debug, thiserror::Error)]
enum PublicKeyError {
    /// The RSA key pair could not be generated.
    #[error(transparent)]
    Generate(#[from] rsa::Error),
    /// The public key could not be written as PEM.
    #[error(transparent)]
    Encode(#[from] rsa::pkcs8::spki::Error),
}

/// A fresh RSA public key as PEM.
fn generate_public_key() -> Result<String, PublicKeyError> {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let mut rng = rsa::rand_core::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
    Ok(rsa::RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF)?)
}

/// `GET /apps/{id}/public_key(.pem)`: a real RSA public key per app, made on first request.
pub(crate) async fn public_key(ctx: &Ctx<'_>, id: u64, pem: bool) -> R {
    let existing = ctx.with_account(|account, _| {
        let app = account.apps.get(&id).ok_or(ApiError::NotFound)?;
        Ok(app.public_key.clone())
    })?;
    let key = match existing {
        Some(key) => key,
        None => {
            let generated = tokio::task::spawn_blocking(generate_public_key)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            ctx.with_account(|account, _| {
                let app = account.apps.get_mut(&id).ok_or(ApiError::NotFound)?;
                // Two first requests may race; the first key stored wins.
                Ok(app.public_key.get_or_insert(generated).clone())
            })?
        }
    };
    if pem {
        let mut resp = (StatusCode::OK, key).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        );
        Ok(resp)
    } else {
        Ok(json_response(StatusCode::OK, &Value::String(key)))
    }
}

/// Reads one field of a multipart/form-data body.
pub(crate) async fn multipart_field(ctx: &Ctx<'_>, field: &str) -> Result<Option<Bytes>, ApiError> {
    let expected = || {
        ApiError::BadRequest(format!(
            "Expected a multipart/form-data body with the field {field}"
        ))
    };
    let content_type = ctx
        .parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(expected)?;
    let boundary = multer::parse_boundary(content_type).map_err(|_| expected())?;
    let body = ctx.body.clone();
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let bad = |e: multer::Error| ApiError::BadRequest(format!("Malformed multipart body: {e}"));
    while let Some(part) = multipart.next_field().await.map_err(bad)? {
        if part.name() == Some(field) {
            return Ok(Some(part.bytes().await.map_err(bad)?));
        }
    }
    Ok(None)
}

/// `POST /apps/uploads`: stores the package (validated later, by the build job); 201 `{"id"}`.
pub(crate) async fn upload(ctx: &Ctx<'_>) -> R {
    let data = multipart_field(ctx, "uploaded_data")
        .await?
        .ok_or_else(|| ApiError::BadRequest("uploaded_data is required".into()))?;
    ctx.with_account(|account, ids| {
        let id = ids.next();
        // Keep memory bounded: the oldest uploads are forgotten first.
        while account.uploads.len() >= MAX_UPLOADS {
            match account.uploads.keys().min().copied() {
                Some(oldest) => account.uploads.remove(&oldest),
                None => break,
            };
        }
        account.uploads.insert(id, data);
        Ok(json_response(StatusCode::CREATED, &json!({ "id": id })))
    })
}

/// Validates a package off the async workers.
async fn validate_in_background(bytes: Bytes) -> Result<Package, InvalidPackage> {
    tokio::task::spawn_blocking(move || packages::validate(&bytes))
        .await
        .map_err(|_| InvalidPackage::cannot_unzip())?
}

/// `POST /api/v2/apps/validate` (multipart field `file`): 200 when valid, else 400 with the
/// problems in `description` (what Zendesk's CLI prints).
pub(crate) async fn validate(ctx: &Ctx<'_>) -> R {
    let data = multipart_field(ctx, "file")
        .await?
        .ok_or_else(|| ApiError::BadRequest("file is required".into()))?;
    match validate_in_background(data).await {
        Ok(_) => Ok(json_response(StatusCode::OK, &json!({"valid": true}))),
        Err(invalid) => Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "InvalidPackage", "description": invalid.to_string()}),
        )),
    }
}

/// `POST /apps` (Support 200, Sell 202) and `PUT /apps/{id}` (200): queue a build of an upload.
pub(crate) async fn create(ctx: &Ctx<'_>, target: Option<u64>) -> R {
    let body = json_object(&ctx.body)?;
    let upload_id = numeric_id(body.get("upload_id"))
        .ok_or_else(|| ApiError::invalid("upload_id", "Upload is invalid"))?
        .ok_or_else(|| ApiError::invalid("upload_id", "Upload can't be blank"))?;
    let name = optional_string(&body, "name")?;
    let short_description = optional_string(&body, "short_description")?;
    let bytes = ctx.with_account(|account, _| {
        if let Some(id) = target {
            if !account.apps.contains_key(&id) {
                return Err(ApiError::NotFound);
            }
        }
        account
            .uploads
            .get(&upload_id)
            .cloned()
            .ok_or_else(|| ApiError::invalid("upload_id", "Upload not found"))
    })?;
    let outcome = validate_in_background(bytes).await;
    let job = Job::new(JobKind::Build {
        target,
        outcome: outcome.map(Box::new),
        name,
        short_description,
        app_id: None,
    });
    let job_id = job.id.clone();
    ctx.with_account(|account, _| {
        account.jobs.insert(job_id.clone(), job);
        Ok(())
    })?;
    let status = match (ctx.family, target) {
        (Family::Sell, None) => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok(json_response(status, &json!({ "job_id": job_id })))
}

/// `GET /apps/job_statuses/{id}`: the build job; a failed job answers 404 with its body, as
/// Zendesk documents.
pub(crate) fn job_status(ctx: &Ctx<'_>, job_id: &str) -> R {
    let base = format!("{}{}", ctx.base_url, ctx.family.base_path());
    ctx.with_account(|account, ids| {
        let job = account.jobs.get(job_id).ok_or(ApiError::NotFound)?;
        if !matches!(job.kind, JobKind::Build { .. }) {
            return Err(ApiError::NotFound);
        }
        let stage = job.stage(Instant::now());
        if stage == Stage::Finished {
            progress::finish(account, ids, job_id);
        }
        let job = account.jobs.get_mut(job_id).ok_or(ApiError::NotFound)?;
        job.polls = job.polls.saturating_add(1);
        let url = format!("{base}/job_statuses/{job_id}.json");
        let app_id = match &job.kind {
            JobKind::Build { app_id, .. } => *app_id,
            JobKind::Install { .. } => None,
        };
        let (status, body) = match (&job.result, stage) {
            (Some(Ok(completed)), _) => (
                StatusCode::OK,
                json!({
                    "app_id": app_id,
                    "app_url": app_id.map(|id| format!("{base}/{id}.json")),
                    "id": job_id,
                    "message": completed.to_string(),
                    "progress": 100,
                    "retry_in": jobs::RETRY_IN,
                    "status": "completed",
                    "total": 100,
                    "url": url,
                }),
            ),
            (Some(Err(failure)), _) => (
                StatusCode::NOT_FOUND,
                json!({
                    "id": job_id,
                    "message": failure.to_string(),
                    "progress": null,
                    "retry_in": jobs::RETRY_IN,
                    "status": "failed",
                    "total": null,
                    "url": url,
                }),
            ),
            (None, stage) => (
                StatusCode::OK,
                json!({
                    "app_id": null,
                    "id": job_id,
                    "message": null,
                    "progress": if stage == Stage::Working { 50 } else { 0 },
                    "retry_in": jobs::RETRY_IN,
                    "status": if stage == Stage::Working { "working" } else { "queued" },
                    "total": 100,
                    "url": url,
                }),
            ),
        };
        Ok(json_response(status, &body))
    })
}

//! Apps: package uploads, validation, create/update builds and their job status, show/list,
//! delete, and the per-app public key.

use std::time::Instant;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::Ctx;
use super::errors::{json_response, no_content, ApiError};
use super::jobs::{self, Job, JobKind, Stage};
use super::packages::{self, Package};
use super::routes::Family;
use super::state::{now_iso, AccountState, Ids};

type R = Result<Response, ApiError>;

/// Uploads kept per account.
const MAX_UPLOADS: usize = 100;

/// A parameter of an app, with the ids Zendesk gives them.
#[derive(Debug, Clone)]
pub(crate) struct Parameter {
    pub id: u64,
    pub spec: packages::ParamSpec,
    pub position: usize,
    pub created_at: String,
}

/// An app built from an uploaded package.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: u64,
    pub name: String,
    pub short_description: Option<String>,
    pub package: Package,
    pub parameters: Vec<Parameter>,
    pub created_at: String,
    pub updated_at: String,
    /// PEM, generated on first request.
    pub public_key: Option<String>,
}

impl App {
    /// The app's JSON in a family's shape. `exclude` drops side-loads (`parameters`,
    /// `categories`).
    pub(crate) fn to_json(
        &self,
        family: Family,
        installation_count: usize,
        exclude: &[&str],
    ) -> Value {
        let base = family.base_path();
        let p = &self.package;
        let parameters: Vec<Value> = self
            .parameters
            .iter()
            .map(|param| {
                json!({
                    "app_id": self.id,
                    "created_at": param.created_at,
                    "default_value": param.spec.default_value,
                    "id": param.id,
                    "kind": param.spec.kind,
                    "name": param.spec.name,
                    "position": param.position,
                    "required": param.spec.required,
                    "secure": param.spec.secure,
                    "updated_at": param.created_at,
                })
            })
            .collect();
        let rating = json!({"average": 0, "count": {}, "total_count": 0});
        let mut v = match family {
            Family::Support => json!({
                "app_organization": null,
                "author_email": p.author_email,
                "author_name": p.author_name,
                "author_url": p.author_url,
                "categories": [],
                "closed_preview": false,
                "collections": [],
                "created_at": self.created_at,
                "date_published": null,
                "default_locale": p.default_locale,
                "deprecated": false,
                "feature_color": null,
                "featured": false,
                "framework_version": p.framework_version,
                "google_analytics_code": null,
                "id": self.id,
                "installable": true,
                "installation_count": installation_count,
                "installation_instructions": p.installation_instructions.clone().unwrap_or_default(),
                "large_icon": format!("{base}/{}/assets/logo.png", self.id),
                "locations": [],
                "long_description": p.long_description.clone().unwrap_or_default(),
            }),
            Family::Sell => json!({}),
        };
        let rest = match family {
            Family::Support => json!({
                "marketing_only": p.marketing_only,
                "name": self.name,
                "obsolete": false,
                "owner_id": 1,
                "paid": false,
                "parameters": parameters,
                "plans": [],
                "products": p.products,
                "promoted": false,
                "rating": rating,
                "raw_installation_instructions": p.installation_instructions,
                "raw_long_description": p.long_description,
                "remote_installation_url": null,
                "screenshots": [],
                "short_description": self.short_description,
                "single_install": p.single_install,
                "small_icon": format!("{base}/{}/assets/logo-small.png", self.id),
                "state": "published",
                "stripe_publishable_key": null,
                "terms_conditions_url": null,
                "third_party_pricing": {"has_third_party_pricing": false, "third_party_pricing_url": null},
                "updated_at": self.updated_at,
                "version": p.version,
                "visibility": "private",
            }),
            Family::Sell => json!({
                "author_email": p.author_email,
                "author_name": p.author_name,
                "categories": [],
                "created_at": self.created_at,
                "default_locale": p.default_locale,
                "featured": false,
                "framework_version": p.framework_version,
                "id": self.id,
                "installable": true,
                "installation_instructions": p.installation_instructions.clone().unwrap_or_default(),
                "large_icon": format!("{base}/{}/assets/logo.png", self.id),
                "long_description": p.long_description.clone().unwrap_or_default(),
                "name": self.name,
                "owner_id": 1,
                "parameters": parameters,
                "promoted": false,
                "rating": rating,
                "raw_installation_instructions": p.installation_instructions,
                "raw_long_description": p.long_description,
                "screenshots": [],
                "short_description": self.short_description,
                "single_install": p.single_install,
                "small_icon": format!("{base}/{}/assets/logo-small.png", self.id),
                "updated_at": self.updated_at,
                "version": p.version,
                "visibility": "private",
            }),
        };
        if let (Value::Object(map), Value::Object(rest)) = (&mut v, rest) {
            map.extend(rest);
            for key in exclude {
                map.remove(*key);
            }
        }
        v
    }
}

fn installation_count(account: &AccountState, app_id: u64) -> usize {
    account
        .installations
        .values()
        .filter(|i| i.app_id == app_id)
        .count()
}

/// The JSON of an account's app, in a family's shape.
pub(crate) fn app_json(
    account: &AccountState,
    app: &App,
    family: Family,
    exclude: &[&str],
) -> Value {
    app.to_json(family, installation_count(account, app.id), exclude)
}

/// Creates an app from a package, or replaces the package of an existing one; returns its id.
pub(crate) fn build(
    account: &mut AccountState,
    ids: &mut Ids,
    target: Option<u64>,
    package: Package,
    name: Option<String>,
    short_description: Option<String>,
) -> Result<u64, String> {
    let now = now_iso();
    let old = match target {
        Some(id) => Some(
            account
                .apps
                .get(&id)
                .cloned()
                .ok_or_else(|| "The app to update no longer exists".to_string())?,
        ),
        None => None,
    };
    // Parameters keep their ids across versions when their name stays.
    let parameters = package
        .parameters
        .iter()
        .enumerate()
        .map(|(position, spec)| {
            let previous = old
                .as_ref()
                .and_then(|o| o.parameters.iter().find(|p| p.spec.name == spec.name));
            Parameter {
                id: previous.map_or_else(|| ids.next(), |p| p.id),
                spec: spec.clone(),
                position,
                created_at: previous.map_or_else(|| now.clone(), |p| p.created_at.clone()),
            }
        })
        .collect();
    let id = old.as_ref().map_or_else(|| ids.next(), |o| o.id);
    let app = App {
        id,
        name: name
            .or_else(|| old.as_ref().map(|o| o.name.clone()))
            .unwrap_or_else(|| package.name.clone()),
        short_description: short_description
            .or_else(|| old.as_ref().and_then(|o| o.short_description.clone()))
            .or_else(|| package.short_description.clone()),
        package,
        parameters,
        created_at: old
            .as_ref()
            .map_or_else(|| now.clone(), |o| o.created_at.clone()),
        updated_at: now,
        public_key: old.and_then(|o| o.public_key),
    };
    account.apps.insert(id, app);
    Ok(id)
}

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
            .map(|a| app_json(account, a, family, &exclude))
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
            &app_json(account, app, family, &[]),
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

fn generate_public_key() -> Result<String, String> {
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let mut rng = rsa::rand_core::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
    rsa::RsaPublicKey::from(&private)
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())
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
                .map_err(ApiError::Internal)?;
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

async fn validate_in_background(bytes: Bytes) -> Result<Package, String> {
    tokio::task::spawn_blocking(move || packages::validate(&bytes))
        .await
        .map_err(|_| packages::CANNOT_UNZIP.to_string())?
        .map_err(|errors| errors.join("\n"))
}

/// `POST /api/v2/apps/validate` (multipart field `file`): 200 when valid, else 400 with the
/// problems in `description` (what Zendesk's CLI prints).
pub(crate) async fn validate(ctx: &Ctx<'_>) -> R {
    let data = multipart_field(ctx, "file")
        .await?
        .ok_or_else(|| ApiError::BadRequest("file is required".into()))?;
    match validate_in_background(data).await {
        Ok(_) => Ok(json_response(StatusCode::OK, &json!({"valid": true}))),
        Err(description) => Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "InvalidPackage", "description": description}),
        )),
    }
}

/// Reads an id given as a number or a numeric string (`"123"`).
pub(crate) fn numeric_id(value: Option<&Value>) -> Option<Option<u64>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_u64().map(Some),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok().map(Some),
        Some(_) => None,
    }
}

/// Parses a JSON object body.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest(
            "The request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

fn optional_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(key, format!("{key} must be a string"))),
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
            jobs::finish(account, ids, job_id);
        }
        let job = account.jobs.get_mut(job_id).ok_or(ApiError::NotFound)?;
        job.polls = job.polls.saturating_add(1);
        let url = format!("{base}/job_statuses/{job_id}.json");
        let app_id = match &job.kind {
            JobKind::Build { app_id, .. } => *app_id,
            JobKind::Install { .. } => None,
        };
        let (status, body) = match (&job.result, stage) {
            (Some(Ok(message)), _) => (
                StatusCode::OK,
                json!({
                    "app_id": app_id,
                    "app_url": app_id.map(|id| format!("{base}/{id}.json")),
                    "id": job_id,
                    "message": message,
                    "progress": 100,
                    "retry_in": jobs::RETRY_IN,
                    "status": "completed",
                    "total": 100,
                    "url": url,
                }),
            ),
            (Some(Err(message)), _) => (
                StatusCode::NOT_FOUND,
                json!({
                    "id": job_id,
                    "message": message,
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

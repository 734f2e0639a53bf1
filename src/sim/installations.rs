//! Installations: install (settings checked against the manifest's parameters), list with the
//! `include=app` side-load, show (Sell's own wrapper and fields), update, remove, the
//! requirements, and the requirements install job.

use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::body::{json_object, numeric_id};
use super::clock::now_iso;
use super::ctx::Ctx;
use super::errors::{json_response, no_content, ApiError};
use super::jobs::{Job, JobKind, Stage};
use super::progress;
use super::records::Installation;
use super::routes::Family;
use super::state::AccountState;
use crate::config::sim::Role;

type R = Result<Response, ApiError>;

fn invalid_settings(description: impl Into<String>) -> ApiError {
    ApiError::Invalid(json!({
        "settings": [{"description": description.into(), "error": "InvalidValue"}]
    }))
}

/// `settings_objects` first, then `settings` over them (settings wins), as documented.
fn merge_settings(
    body: &Map<String, Value>,
    into: &mut Map<String, Value>,
    require_settings: bool,
) -> Result<(), ApiError> {
    let settings = match body.get("settings") {
        None | Some(Value::Null) => None,
        Some(Value::Object(s)) => Some(s),
        Some(_) => return Err(invalid_settings("Settings must be an object")),
    };
    if require_settings && settings.is_none_or_empty() {
        return Err(invalid_settings(
            "You must specify at least one installation setting value in settings",
        ));
    }
    match body.get("settings_objects") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for item in list {
                let name = item.get("name").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid(
                        "settings_objects",
                        "Each settings object needs a name and a value",
                    )
                })?;
                into.insert(
                    name.to_string(),
                    item.get("value").cloned().unwrap_or(Value::Null),
                );
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "settings_objects",
                "settings_objects must be an array of objects",
            ))
        }
    }
    if let Some(s) = settings {
        for (k, v) in s {
            into.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

trait EmptyMap {
    fn is_none_or_empty(&self) -> bool;
}

impl EmptyMap for Option<&Map<String, Value>> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, Map::is_empty)
    }
}

fn check_required(
    account: &AccountState,
    app_id: u64,
    settings: &Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(app) = account.apps.get(&app_id) else {
        return Ok(());
    };
    let missing: Vec<&str> = app
        .parameters
        .iter()
        .filter(|p| p.spec.required)
        .filter(|p| match settings.get(&p.spec.name) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.trim().is_empty(),
            Some(_) => false,
        })
        .map(|p| p.spec.name.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(json!({
        "settings": missing
            .iter()
            .map(|name| json!({
                "description": format!("Settings {name} is required"),
                "error": "BlankValue",
            }))
            .collect::<Vec<_>>()
    })))
}

fn restrictions(body: &Map<String, Value>, key: &str, default: Value) -> Result<Value, ApiError> {
    match body.get(key) {
        None => Ok(default),
        Some(v @ (Value::Null | Value::Array(_))) => Ok(v.clone()),
        Some(_) => Err(ApiError::invalid(key, format!("{key} must be an array"))),
    }
}

fn enabled(body: &Map<String, Value>) -> Result<Option<bool>, ApiError> {
    match body.get("enabled") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(
            "enabled",
            "enabled must be true or false",
        )),
    }
}

/// `POST /apps/installations` (Support 200, Sell 201).
pub(crate) fn install(ctx: &Ctx<'_>) -> R {
    let body = json_object(&ctx.body)?;
    let app_id = numeric_id(body.get("app_id"))
        .ok_or_else(|| ApiError::invalid("app_id", "App is invalid"))?
        .ok_or_else(|| ApiError::invalid("app_id", "App can't be blank"))?;
    let requested_enabled = enabled(&body)?.unwrap_or(true);
    let mut settings = Map::new();
    merge_settings(&body, &mut settings, true)?;
    let group_restrictions = restrictions(&body, "group_restrictions", json!([]))?;
    let role_restrictions = restrictions(&body, "role_restrictions", Value::Null)?;
    let family = ctx.family;
    ctx.with_account(|account, ids| {
        let app = account.apps.get(&app_id).ok_or(ApiError::NotFound)?;
        if app.package.single_install
            && account
                .installations
                .values()
                .any(|i| i.app_id == app_id && i.family == family)
        {
            return Err(ApiError::invalid(
                "base",
                "This app can only be installed once in this account",
            ));
        }
        let has_requirements = !app.package.requirements.is_empty();
        settings
            .entry("name")
            .or_insert_with(|| Value::String(app.name.clone()));
        check_required(account, app_id, &settings)?;
        let id = ids.next();
        let now = now_iso();
        let pending_job_id = has_requirements.then(|| {
            let job = Job::new(JobKind::Install {
                installation_id: id,
            });
            let job_id = job.id.clone();
            account.jobs.insert(job_id.clone(), job);
            job_id
        });
        let inst = Installation {
            id,
            app_id,
            family,
            enabled: requested_enabled && !has_requirements,
            requested_enabled,
            settings,
            pending: has_requirements,
            pending_job_id,
            group_restrictions,
            role_restrictions,
            requirements: Vec::new(),
            created_at: now.clone(),
            updated_at: now,
        };
        let body = inst.to_json();
        account.installations.insert(id, inst);
        let status = match family {
            Family::Support => StatusCode::OK,
            Family::Sell => StatusCode::CREATED,
        };
        Ok(json_response(status, &body))
    })
}

/// `GET /apps/installations` (`include=app` side-loads the apps as `apps`).
pub(crate) fn list(ctx: &Ctx<'_>) -> R {
    let include_app = ctx
        .query("include")
        .is_some_and(|v| v.split(',').any(|s| s.trim() == "app"));
    let family = ctx.family;
    ctx.with_account(|account, _| {
        let installs: Vec<&Installation> = account
            .installations
            .values()
            .filter(|i| i.family == family)
            .collect();
        let mut body = json!({
            "installations": installs.iter().map(|i| i.to_json()).collect::<Vec<_>>()
        });
        if include_app {
            let mut app_ids: Vec<u64> = installs.iter().map(|i| i.app_id).collect();
            app_ids.sort_unstable();
            app_ids.dedup();
            let apps: Vec<Value> = app_ids
                .iter()
                .filter_map(|id| account.apps.get(id))
                .map(|a| account.app_json(a, family, &[]))
                .collect();
            body["apps"] = Value::Array(apps);
        }
        Ok(json_response(StatusCode::OK, &body))
    })
}

fn owner_email(ctx: &Ctx<'_>, account: &str) -> Option<String> {
    ctx.store
        .config()
        .accounts
        .iter()
        .find(|a| a.subdomain == account)
        .and_then(|a| a.users.iter().find(|u| u.role == Role::Admin))
        .map(|u| u.email.clone())
}

/// `GET /apps/installations/{id}`: the installation on Support; Sell's own
/// `{"installation": {...}}` object.
pub(crate) fn show(ctx: &Ctx<'_>, id: u64) -> R {
    let family = ctx.family;
    let email = owner_email(ctx, ctx.account()?);
    ctx.with_account(|account, _| {
        let inst = account
            .installations
            .get(&id)
            .filter(|i| i.family == family)
            .ok_or(ApiError::NotFound)?;
        let body = match family {
            Family::Support => inst.to_json(),
            Family::Sell => {
                let app = account.apps.get(&inst.app_id);
                let package = app.map(|a| &a.package);
                let fv = package.map(|p| p.framework_version.clone());
                let locations: Vec<Value> = package
                    .map(|p| {
                        p.locations
                            .iter()
                            .filter(|(product, _)| product == "sell")
                            .map(|(_, name)| json!({"name": name, "visible": true}))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"installation": {
                    "agent_count": 0,
                    "app_id": inst.app_id,
                    "app_installation_count": null,
                    "author_email": package.and_then(|p| p.author_email.clone()),
                    "email": email,
                    "framework_versions": {"current": fv, "version": fv},
                    "group_restrictions": inst.group_restrictions,
                    "has_custom_object_requirements": inst.requirements.iter().any(|r| r.kind == "custom_objects"),
                    "has_incomplete_subscription": false,
                    "has_oauth_client": package.is_some_and(|p| p.has_oauth()),
                    "has_unpaid_subscription": null,
                    "id": inst.id,
                    "installed_at": inst.created_at,
                    "locale": "en-US",
                    "locations": locations,
                    "marketing_only": package.is_some_and(|p| p.marketing_only),
                    "new_installation": inst.pending,
                    "obsolete": false,
                    "paid": null,
                    "plan_id": null,
                    "require_category_terms": false,
                    "require_oauth_subdomain": false,
                    "role_restrictions": if inst.role_restrictions.is_null() { json!([]) } else { inst.role_restrictions.clone() },
                    "settings": [inst.settings],
                    "supports_group_restrictions": false,
                    "supports_role_restrictions": false,
                    "third_party_paid": false,
                    "version": package.and_then(|p| p.version.clone()),
                    "zendesk_labs_license_url": null,
                }})
            }
        };
        Ok(json_response(StatusCode::OK, &body))
    })
}

/// `PUT /apps/installations/{id}`: settings merge into the existing ones.
pub(crate) fn update(ctx: &Ctx<'_>, id: u64) -> R {
    let body = json_object(&ctx.body)?;
    let new_enabled = enabled(&body)?;
    let family = ctx.family;
    ctx.with_account(|account, _| {
        let inst = account
            .installations
            .get(&id)
            .filter(|i| i.family == family)
            .ok_or(ApiError::NotFound)?;
        let mut settings = inst.settings.clone();
        merge_settings(&body, &mut settings, false)?;
        let group = restrictions(&body, "group_restrictions", inst.group_restrictions.clone())?;
        let role = restrictions(&body, "role_restrictions", inst.role_restrictions.clone())?;
        check_required(account, inst.app_id, &settings)?;
        let inst = account
            .installations
            .get_mut(&id)
            .ok_or(ApiError::NotFound)?;
        inst.settings = settings;
        inst.group_restrictions = group;
        inst.role_restrictions = role;
        if let Some(e) = new_enabled {
            inst.requested_enabled = e;
            if !inst.pending {
                inst.enabled = e;
            }
        }
        inst.updated_at = now_iso();
        Ok(json_response(StatusCode::OK, &inst.to_json()))
    })
}

/// `DELETE /apps/installations/{id}`: 204.
pub(crate) fn delete(ctx: &Ctx<'_>, id: u64) -> R {
    let family = ctx.family;
    ctx.with_account(|account, _| {
        match account.installations.get(&id) {
            Some(i) if i.family == family => {}
            _ => return Err(ApiError::NotFound),
        }
        account.installations.remove(&id);
        Ok(no_content())
    })
}

/// `GET /apps/installations/{id}/requirements`.
pub(crate) fn requirements(ctx: &Ctx<'_>, id: u64) -> R {
    let family = ctx.family;
    let account_name = ctx.account()?.to_string();
    let account_id = ctx
        .store
        .config()
        .accounts
        .iter()
        .position(|a| a.subdomain == account_name)
        .map_or(1, |i| i + 1);
    ctx.with_account(|account, _| {
        let inst = account
            .installations
            .get(&id)
            .filter(|i| i.family == family)
            .ok_or(ApiError::NotFound)?;
        let list: Vec<Value> = inst
            .requirements
            .iter()
            .map(|r| {
                json!({
                    "account_id": account_id,
                    "created_at": r.created_at,
                    "identifier": r.identifier,
                    "requirement_id": r.id,
                    "requirement_type": r.kind,
                    "updated_at": r.created_at,
                })
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "requirements": list }),
        ))
    })
}

/// `GET /apps/installations/job_statuses/{id}`: the requirements install job.
pub(crate) fn job_status(ctx: &Ctx<'_>, job_id: &str) -> R {
    let url = format!(
        "{}{}/installations/job_statuses/{job_id}.json",
        ctx.base_url,
        ctx.family.base_path()
    );
    ctx.with_account(|account, ids| {
        let job = account.jobs.get(job_id).ok_or(ApiError::NotFound)?;
        let JobKind::Install { installation_id } = job.kind else {
            return Err(ApiError::NotFound);
        };
        let stage = job.stage(Instant::now());
        if stage == Stage::Finished {
            progress::finish(account, ids, job_id);
        }
        let job = account.jobs.get_mut(job_id).ok_or(ApiError::NotFound)?;
        job.polls = job.polls.saturating_add(1);
        let body = match &job.result {
            Some(Ok(completed)) => json!({
                "id": job_id, "installation_id": installation_id, "message": completed.to_string(),
                "progress": 100, "status": "completed", "total": 100, "url": url,
            }),
            Some(Err(failure)) => json!({
                "id": job_id, "installation_id": null, "message": failure.to_string(),
                "progress": null, "status": "failed", "total": 100, "url": url,
            }),
            None => json!({
                "id": job_id, "installation_id": null, "message": null,
                "progress": if stage == Stage::Working { 50 } else { 0 },
                "status": if stage == Stage::Working { "working" } else { "queued" },
                "total": 100, "url": url,
            }),
        };
        Ok(json_response(StatusCode::OK, &body))
    })
}

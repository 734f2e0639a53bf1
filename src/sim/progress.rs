//! What finishing a job does to an account: a build creates an app from its package or gives an
//! app a new version, an install job installs an installation's requirements. Jobs finish
//! when polled at their time, or, when nobody polls, before any request of the account is
//! served.

use std::time::Instant;

use super::clock::now_iso;
use super::jobs::{Completed, JobFailure, JobKind, Stage};
use super::packages::Package;
use super::records::{App, Parameter, Requirement};
use super::state::{AccountState, Ids};

/// Finishes a job whose time has come: the app is built or updated, the installation's
/// requirements are installed, or the failure is recorded.
pub(crate) fn finish(account: &mut AccountState, ids: &mut Ids, job_id: &str) {
    let Some(job) = account.jobs.get(job_id) else {
        return;
    };
    if job.result.is_some() {
        return;
    }
    let kind = job.kind.clone();
    let mut built = None;
    let result = match kind {
        JobKind::Build {
            target,
            outcome,
            name,
            short_description,
            ..
        } => outcome.map_err(JobFailure::from).and_then(|package| {
            let app_id = build_app(account, ids, target, *package, name, short_description)?;
            built = Some(app_id);
            Ok(Completed::now())
        }),
        JobKind::Install { installation_id } => {
            install_requirements(account, ids, installation_id).map(|()| Completed::now())
        }
    };
    if let Some(job) = account.jobs.get_mut(job_id) {
        if let JobKind::Build { app_id, .. } = &mut job.kind {
            *app_id = built;
        }
        job.result = Some(result);
    }
}

/// Finishes every job that is due by time, so apps and installations appear even when nobody
/// polls.
pub(crate) fn advance(account: &mut AccountState, ids: &mut Ids, now: Instant) {
    let mut due: Vec<(Instant, String)> = account
        .jobs
        .values()
        .filter(|j| j.result.is_none() && j.time_stage(now) == Stage::Finished)
        .map(|j| (j.created, j.id.clone()))
        .collect();
    due.sort();
    for (_, id) in due {
        finish(account, ids, &id);
    }
}

/// Creates an app from a package, or replaces the package of an existing one; returns its id.
fn build_app(
    account: &mut AccountState,
    ids: &mut Ids,
    target: Option<u64>,
    package: Package,
    name: Option<String>,
    short_description: Option<String>,
) -> Result<u64, JobFailure> {
    let now = now_iso();
    let old = match target {
        Some(id) => Some(
            account
                .apps
                .get(&id)
                .cloned()
                .ok_or(JobFailure::AppToUpdateGone)?,
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

/// Completes the requirements install of an installation.
fn install_requirements(
    account: &mut AccountState,
    ids: &mut Ids,
    installation_id: u64,
) -> Result<(), JobFailure> {
    let app_id = account
        .installations
        .get(&installation_id)
        .ok_or(JobFailure::InstallationRemoved)?
        .app_id;
    let wanted = account
        .apps
        .get(&app_id)
        .ok_or(JobFailure::AppDeleted)?
        .package
        .requirements
        .clone();
    let now = now_iso();
    let requirements = wanted
        .into_iter()
        .map(|(kind, identifier)| Requirement {
            id: ids.next(),
            kind,
            identifier,
            created_at: now.clone(),
        })
        .collect();
    if let Some(inst) = account.installations.get_mut(&installation_id) {
        inst.requirements = requirements;
        inst.pending = false;
        inst.enabled = inst.requested_enabled;
        inst.updated_at = now;
    }
    Ok(())
}

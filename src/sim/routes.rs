//! The Apps API routes of both reference documents, resolved by hand so that every path works
//! with and without its `.json` suffix (`.pem` for the public key).
//!
//! Support lives under `/api/v2/apps` and its alias `/api/support/apps`; Sell under
//! `/api/sell/apps`, plus Sell's documented `POST /api/apps` (create).

use axum::http::Method;

use super::auth::Allowed;

/// Which product family's document a route comes from; it decides shapes and status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// Zendesk Support (`/api/v2/apps`, `/api/support/apps`).
    Support,
    /// Zendesk Sell (`/api/sell/apps`, `/api/apps`).
    Sell,
}

impl Family {
    /// The path prefix the simulator uses in URLs it hands out.
    pub(crate) fn base_path(self) -> &'static str {
        match self {
            Family::Support => "/api/v2/apps",
            Family::Sell => "/api/sell/apps",
        }
    }

    /// The `product` of an installation made through this family.
    pub(crate) fn product(self) -> &'static str {
        match self {
            Family::Support => "support",
            Family::Sell => "sell",
        }
    }
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListApps,
    ListOwned,
    ShowApp(u64),
    PublicKey { app_id: u64, pem: bool },
    CreateApp,
    UpdateApp(u64),
    DeleteApp(u64),
    JobStatus(String),
    Upload,
    Validate,
    Notify,
    ListInstallations,
    Install,
    ShowInstallation(u64),
    UpdateInstallation(u64),
    DeleteInstallation(u64),
    Requirements(u64),
    InstallJobStatus(String),
}

impl Route {
    /// "Allowed for" of the endpoint in its family's document.
    pub(crate) fn allowed(&self, family: Family) -> Allowed {
        match self {
            Route::ListApps if family == Family::Support => Allowed::Everyone,
            Route::ListApps => Allowed::Admins,
            Route::ShowApp(_) => Allowed::Everyone,
            Route::PublicKey { .. }
            | Route::Notify
            | Route::ListInstallations
            | Route::ShowInstallation(_)
            | Route::Requirements(_) => Allowed::Agents,
            Route::ListOwned
            | Route::CreateApp
            | Route::UpdateApp(_)
            | Route::DeleteApp(_)
            | Route::JobStatus(_)
            | Route::Upload
            | Route::Validate
            | Route::Install
            | Route::UpdateInstallation(_)
            | Route::DeleteInstallation(_)
            | Route::InstallJobStatus(_) => Allowed::Admins,
        }
    }
}

fn id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn job_id(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| s.to_string())
}

/// Resolves a method and path to an endpoint; `None` is a 404.
pub(crate) fn resolve(method: &Method, path: &str) -> Option<(Family, Route)> {
    let mut path = path.strip_suffix('/').unwrap_or(path);
    let mut pem = false;
    if let Some(p) = path.strip_suffix(".json") {
        path = p;
    } else if let Some(p) = path.strip_suffix("/public_key.pem") {
        // Only the public key has a `.pem` form.
        path = &path[..p.len() + "/public_key".len()];
        pem = true;
    }
    if path == "/api/apps" {
        return (method == Method::POST).then_some((Family::Sell, Route::CreateApp));
    }
    let (family, rest) = if let Some(r) = path.strip_prefix("/api/v2/apps") {
        (Family::Support, r)
    } else if let Some(r) = path.strip_prefix("/api/support/apps") {
        (Family::Support, r)
    } else if let Some(r) = path.strip_prefix("/api/sell/apps") {
        (Family::Sell, r)
    } else {
        return None;
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').skip(1).collect();
    let m = method;
    let route = match segs.as_slice() {
        [] if m == Method::GET => Route::ListApps,
        [] if m == Method::POST => Route::CreateApp,
        ["owned"] if m == Method::GET => Route::ListOwned,
        ["uploads"] if m == Method::POST => Route::Upload,
        ["validate"] if m == Method::POST && family == Family::Support => Route::Validate,
        ["notify"] if m == Method::POST && family == Family::Support => Route::Notify,
        ["job_statuses", j] if m == Method::GET => Route::JobStatus(job_id(j)?),
        ["installations"] if m == Method::GET => Route::ListInstallations,
        ["installations"] if m == Method::POST => Route::Install,
        ["installations", "job_statuses", j] if m == Method::GET => {
            Route::InstallJobStatus(job_id(j)?)
        }
        ["installations", i] if m == Method::GET => Route::ShowInstallation(id(i)?),
        ["installations", i] if m == Method::PUT => Route::UpdateInstallation(id(i)?),
        ["installations", i] if m == Method::DELETE => Route::DeleteInstallation(id(i)?),
        ["installations", i, "requirements"] if m == Method::GET => Route::Requirements(id(i)?),
        [a, "public_key"] if m == Method::GET => Route::PublicKey {
            app_id: id(a)?,
            pem,
        },
        [a] if m == Method::GET => Route::ShowApp(id(a)?),
        [a] if m == Method::PUT => Route::UpdateApp(id(a)?),
        [a] if m == Method::DELETE => Route::DeleteApp(id(a)?),
        _ => return None,
    };
    if pem && !matches!(route, Route::PublicKey { .. }) {
        return None;
    }
    Some((family, route))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: Method, p: &str) -> Option<(Family, Route)> {
        resolve(&m, p)
    }

    #[test]
    fn suffixes_and_aliases() {
        for p in [
            "/api/v2/apps",
            "/api/v2/apps.json",
            "/api/support/apps.json",
            "/api/v2/apps/",
        ] {
            assert_eq!(
                r(Method::GET, p),
                Some((Family::Support, Route::ListApps)),
                "{p}"
            );
        }
        assert_eq!(
            r(Method::GET, "/api/v2/apps/12.json"),
            Some((Family::Support, Route::ShowApp(12)))
        );
        assert_eq!(
            r(Method::GET, "/api/v2/apps/12/public_key.pem"),
            Some((
                Family::Support,
                Route::PublicKey {
                    app_id: 12,
                    pem: true
                }
            ))
        );
        assert_eq!(
            r(
                Method::GET,
                "/api/sell/apps/installations/job_statuses/ab12.json"
            ),
            Some((Family::Sell, Route::InstallJobStatus("ab12".into())))
        );
        assert_eq!(
            r(Method::POST, "/api/apps.json"),
            Some((Family::Sell, Route::CreateApp))
        );
        assert_eq!(
            r(
                Method::GET,
                "/api/v2/apps/installations/5/requirements.json"
            ),
            Some((Family::Support, Route::Requirements(5)))
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(r(Method::GET, "/api/apps"), None);
        assert_eq!(r(Method::POST, "/api/sell/apps/notify"), None);
        assert_eq!(r(Method::POST, "/api/sell/apps/validate"), None);
        assert_eq!(r(Method::GET, "/api/v2/apps/abc"), None);
        assert_eq!(r(Method::GET, "/api/v2/appsx"), None);
        assert_eq!(r(Method::GET, "/api/v2/apps/1.pem"), None);
        assert_eq!(r(Method::PATCH, "/api/v2/apps/1"), None);
        assert_eq!(r(Method::GET, "/api/v2/apps/job_statuses/a-b"), None);
        assert_eq!(r(Method::GET, "/api/v2/apps/99999999999999999999"), None);
    }
}

//! The allowlist: the Apps API routes of SPEC §5, method by method, for both families.
//!
//! Support lives under `/api/v2/apps` and its alias `/api/support/apps`; Sell under
//! `/api/sell/apps` (the same set without `notify` and `validate`), plus Sell's
//! `POST /api/apps`. The last segment may carry `.json`; the public key may also be asked for
//! as `.pem`. Ids are decimal numbers, job ids are alphanumeric. Anything else — another
//! path, another method, `HEAD`, `OPTIONS`, a trailing slash — is not a route.
//!
//! The input is a path already checked by [`super::normalize`] (only `[A-Za-z0-9._-]`
//! segments, no empty or dot segments).

use http::Method;

/// Which product family's document a route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Zendesk Support (`/api/v2/apps`, `/api/support/apps`).
    Support,
    /// Zendesk Sell (`/api/sell/apps`, `POST /api/apps`).
    Sell,
}

/// One endpoint of the Apps API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /`
    ListApps,
    /// `GET /owned`
    ListOwned,
    /// `POST /` (and Sell's `POST /api/apps`)
    CreateApp,
    /// `GET /{id}`
    ShowApp,
    /// `PUT /{id}`
    UpdateApp,
    /// `DELETE /{id}`
    DeleteApp,
    /// `GET /{id}/public_key` (`.json` or `.pem`)
    PublicKey,
    /// `GET /job_statuses/{id}`
    JobStatus,
    /// `POST /uploads`
    Upload,
    /// `POST /validate` (Support)
    Validate,
    /// `POST /notify` (Support): queued by the gateway, never forwarded directly.
    Notify,
    /// `GET /installations`
    ListInstallations,
    /// `POST /installations`
    Install,
    /// `GET /installations/{id}`
    ShowInstallation,
    /// `PUT /installations/{id}`
    UpdateInstallation,
    /// `DELETE /installations/{id}`
    DeleteInstallation,
    /// `GET /installations/{id}/requirements`
    Requirements,
    /// `GET /installations/job_statuses/{id}`
    InstallJobStatus,
}

impl Endpoint {
    /// A stable name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ListApps => "list_apps",
            Endpoint::ListOwned => "list_owned_apps",
            Endpoint::CreateApp => "create_app",
            Endpoint::ShowApp => "show_app",
            Endpoint::UpdateApp => "update_app",
            Endpoint::DeleteApp => "delete_app",
            Endpoint::PublicKey => "public_key",
            Endpoint::JobStatus => "job_status",
            Endpoint::Upload => "upload",
            Endpoint::Validate => "validate",
            Endpoint::Notify => "notify",
            Endpoint::ListInstallations => "list_installations",
            Endpoint::Install => "install",
            Endpoint::ShowInstallation => "show_installation",
            Endpoint::UpdateInstallation => "update_installation",
            Endpoint::DeleteInstallation => "delete_installation",
            Endpoint::Requirements => "requirements",
            Endpoint::InstallJobStatus => "install_job_status",
        }
    }
}

/// An allowed route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Its family.
    pub family: Family,
    /// Its endpoint.
    pub endpoint: Endpoint,
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_job_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The route of `method` and `path`, if the allowlist has it.
pub fn resolve(method: &Method, path: &str) -> Option<Route> {
    let (path, suffix) = if let Some(p) = path.strip_suffix(".json") {
        (p, Some("json"))
    } else if let Some(p) = path.strip_suffix(".pem") {
        (p, Some("pem"))
    } else {
        (path, None)
    };
    let route = |family, endpoint| Some(Route { family, endpoint });
    if path == "/api/apps" {
        return match (method, suffix) {
            (&Method::POST, None | Some("json")) => route(Family::Sell, Endpoint::CreateApp),
            _ => None,
        };
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
    let segments: Vec<&str> = match rest {
        "" => Vec::new(),
        r => r.strip_prefix('/')?.split('/').collect(),
    };
    let m = method;
    let support = family == Family::Support;
    let endpoint = match segments.as_slice() {
        [] if m == Method::GET => Endpoint::ListApps,
        [] if m == Method::POST => Endpoint::CreateApp,
        ["owned"] if m == Method::GET => Endpoint::ListOwned,
        ["uploads"] if m == Method::POST => Endpoint::Upload,
        ["validate"] if m == Method::POST && support => Endpoint::Validate,
        ["notify"] if m == Method::POST && support => Endpoint::Notify,
        ["job_statuses", j] if m == Method::GET && is_job_id(j) => Endpoint::JobStatus,
        ["installations"] if m == Method::GET => Endpoint::ListInstallations,
        ["installations"] if m == Method::POST => Endpoint::Install,
        ["installations", "job_statuses", j] if m == Method::GET && is_job_id(j) => {
            Endpoint::InstallJobStatus
        }
        ["installations", i] if is_id(i) && m == Method::GET => Endpoint::ShowInstallation,
        ["installations", i] if is_id(i) && m == Method::PUT => Endpoint::UpdateInstallation,
        ["installations", i] if is_id(i) && m == Method::DELETE => Endpoint::DeleteInstallation,
        ["installations", i, "requirements"] if is_id(i) && m == Method::GET => {
            Endpoint::Requirements
        }
        [a, "public_key"] if is_id(a) && m == Method::GET => Endpoint::PublicKey,
        [a] if is_id(a) && m == Method::GET => Endpoint::ShowApp,
        [a] if is_id(a) && m == Method::PUT => Endpoint::UpdateApp,
        [a] if is_id(a) && m == Method::DELETE => Endpoint::DeleteApp,
        _ => return None,
    };
    if suffix == Some("pem") && endpoint != Endpoint::PublicKey {
        return None;
    }
    route(family, endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: Method, p: &str) -> Option<(Family, Endpoint)> {
        resolve(&m, p).map(|r| (r.family, r.endpoint))
    }

    #[test]
    fn every_documented_route_of_both_families() {
        use Endpoint::*;
        use Family::*;
        let cases: &[(Method, &str, Family, Endpoint)] = &[
            (Method::GET, "/api/v2/apps", Support, ListApps),
            (Method::GET, "/api/v2/apps.json", Support, ListApps),
            (Method::GET, "/api/support/apps.json", Support, ListApps),
            (Method::POST, "/api/v2/apps.json", Support, CreateApp),
            (Method::GET, "/api/v2/apps/owned.json", Support, ListOwned),
            (Method::GET, "/api/v2/apps/12", Support, ShowApp),
            (Method::PUT, "/api/v2/apps/12.json", Support, UpdateApp),
            (Method::DELETE, "/api/v2/apps/12.json", Support, DeleteApp),
            (
                Method::GET,
                "/api/v2/apps/12/public_key",
                Support,
                PublicKey,
            ),
            (
                Method::GET,
                "/api/v2/apps/12/public_key.pem",
                Support,
                PublicKey,
            ),
            (
                Method::GET,
                "/api/v2/apps/12/public_key.json",
                Support,
                PublicKey,
            ),
            (
                Method::GET,
                "/api/v2/apps/job_statuses/ab12.json",
                Support,
                JobStatus,
            ),
            (Method::POST, "/api/v2/apps/uploads.json", Support, Upload),
            (Method::POST, "/api/v2/apps/validate", Support, Validate),
            (Method::POST, "/api/v2/apps/notify.json", Support, Notify),
            (Method::POST, "/api/support/apps/notify", Support, Notify),
            (
                Method::GET,
                "/api/v2/apps/installations.json",
                Support,
                ListInstallations,
            ),
            (Method::POST, "/api/v2/apps/installations", Support, Install),
            (
                Method::GET,
                "/api/v2/apps/installations/7.json",
                Support,
                ShowInstallation,
            ),
            (
                Method::PUT,
                "/api/v2/apps/installations/7",
                Support,
                UpdateInstallation,
            ),
            (
                Method::DELETE,
                "/api/v2/apps/installations/7",
                Support,
                DeleteInstallation,
            ),
            (
                Method::GET,
                "/api/v2/apps/installations/7/requirements.json",
                Support,
                Requirements,
            ),
            (
                Method::GET,
                "/api/v2/apps/installations/job_statuses/f00d",
                Support,
                InstallJobStatus,
            ),
            (Method::GET, "/api/sell/apps.json", Sell, ListApps),
            (Method::POST, "/api/sell/apps", Sell, CreateApp),
            (Method::POST, "/api/apps.json", Sell, CreateApp),
            (Method::POST, "/api/apps", Sell, CreateApp),
            (Method::GET, "/api/sell/apps/owned", Sell, ListOwned),
            (Method::PUT, "/api/sell/apps/3", Sell, UpdateApp),
            (Method::POST, "/api/sell/apps/uploads.json", Sell, Upload),
            (
                Method::GET,
                "/api/sell/apps/installations/job_statuses/x1.json",
                Sell,
                InstallJobStatus,
            ),
            (
                Method::DELETE,
                "/api/sell/apps/installations/9.json",
                Sell,
                DeleteInstallation,
            ),
        ];
        for (m, p, f, e) in cases {
            assert_eq!(r(m.clone(), p), Some((*f, *e)), "{m} {p}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        let cases: &[(Method, &str)] = &[
            (Method::POST, "/api/sell/apps/notify"),
            (Method::POST, "/api/sell/apps/validate.json"),
            (Method::GET, "/api/apps"),
            (Method::PUT, "/api/apps"),
            (Method::GET, "/api/v2/apps/"),
            (Method::GET, "/api/v2/appsx"),
            (Method::GET, "/api/v2/apps/abc"),
            (Method::GET, "/api/v2/apps/1.pem"),
            (Method::GET, "/api/v2/apps.pem"),
            (Method::PATCH, "/api/v2/apps/1"),
            (Method::HEAD, "/api/v2/apps"),
            (Method::OPTIONS, "/api/v2/apps"),
            (Method::GET, "/api/v2/apps/notify"),
            (Method::DELETE, "/api/v2/apps/installations"),
            (Method::GET, "/api/v2/apps/99999999999999999999"),
            (Method::GET, "/api/v2/apps/job_statuses/a-b"),
            (Method::GET, "/api/v2/users.json"),
            (Method::GET, "/api/v2/tickets.json"),
            (Method::GET, "/api/v2/apps/1/public_key/x"),
            (Method::GET, "/api/v2/apps/installations/1/requirements/2"),
            (Method::GET, "/api/v2/apps.json.json"),
            (Method::POST, "/api/v2/apps/uploads.pem"),
        ];
        for (m, p) in cases {
            assert_eq!(r(m.clone(), p), None, "{m} {p}");
        }
    }
}

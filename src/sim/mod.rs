//! A faithful, in-memory Zendesk Apps API (Support and Sell) for local development and tests
//! (`zenrelay sim`, SPEC §8).
//!
//! Every endpoint of the two reference documents is served with its documented request fields,
//! response shapes and status codes, with and without the `.json` suffix; `/api/support/apps/...`
//! is the same as `/api/v2/apps/...`, and `POST /api/v2/apps/validate` (multipart field `file`)
//! validates a package synchronously. Apps are built for real: an uploaded zip is validated the
//! way Zendesk's validator does it, by a job that moves `queued` → `working` → `completed` or
//! `failed`. Notify enforces the 1 MB cap and the per-account rolling-window limit.
//!
//! # Accounts and credentials
//!
//! A request belongs to the account whose user's credentials it carries: Basic
//! `email/token:TOKEN`, Basic `email:password` or `Bearer OAUTH_TOKEN`. When the first label of
//! the `Host` names a configured account (`acme.localhost:9090`), the credentials must be that
//! account's, otherwise 401. "Allowed for" of each endpoint is enforced: an agent calling an
//! admin endpoint gets 403; "Everyone" endpoints also answer anonymous callers (who see no
//! private apps).
//!
//! [`SimConfig::default`] has one sample account, `acme`, with:
//!
//! | user | role | credentials |
//! |---|---|---|
//! | `admin@acme.example` | admin | api_token `sim-admin-token`, password `sim-admin-password`, oauth_token `sim-admin-oauth` |
//! | `agent@acme.example` | agent | api_token `sim-agent-token` |
//!
//! # Deliberate choices where the documents are silent or disagree
//!
//! - Uploads answer 201 on both families (clients written against real Zendesk expect it; the
//!   Support page shows 200). Create answers 200 on Support and 202 on Sell; install answers
//!   200 on Support and 201 on Sell, as documented.
//! - A failed build job answers 404 with the job body, as the Support page shows.
//! - Jobs advance one step per poll or with time (`working` after 100 ms, finished after
//!   250 ms), whichever is further, so a client polling every second sees the outcome at once.
//! - Installations are kept per family: an install through Sell has `product: "sell"` and is
//!   listed by the Sell endpoints only. Apps are shared by both families.
//! - `include=app` side-loads the apps as a top-level `apps` array, as Zendesk side-loads do.
//! - `GET .../public_key.pem` answers the PEM text itself (`application/x-pem-file`); without
//!   the suffix, or with `.json`, the PEM is a JSON string as documented.
//! - Malformed requests that the documents do not cover answer 400
//!   `{"error":"InvalidValue","description":...}`; unknown paths answer 404 `RecordNotFound`.
//!
//! # Real clients
//!
//! Zendesk's own CLI (`zcli` 1.0.1: `apps:validate`, `apps:create`, `apps:update`) works
//! unchanged against the HTTPS listener, given `NODE_EXTRA_CA_CERTS` for the certificate and
//! `ZENDESK_SUBDOMAIN=127 ZENDESK_DOMAIN=0.0.1:PORT` (zcli builds `https://{subdomain}.{domain}`).
//!
//! # Test hooks
//!
//! See [`hooks`] for the `/__sim/` endpoints (notifications, request log, faults, reset) and
//! [`faults`] for fault rules.
//!
//! # Layout
//!
//! From the top down; a module uses only modules listed below it.
//!
//! - `server`: the accept loop (plain or TLS) that can really drop a connection.
//! - `api`: the request pipeline (request log, faults, auth, dispatch).
//! - `apps`, `installations`, `notify`: the endpoints; `hooks`: the test hooks.
//! - `ctx`: what an endpoint knows about its request, and its account's state.
//! - `progress`: what finishing a build or install job does to an account.
//! - `state`: the in-memory state and the settings, shared by every request.
//! - `records`: apps and installations and their JSON; `jobs`: build and install jobs.
//! - `faults`: fault rules; `routes`: path and method → endpoint, per family; `auth`:
//!   credentials → account and role, "Allowed for".
//! - `body`: JSON request bodies; `packages`: app package validation; `errors`: Zendesk's
//!   error bodies; `clock`: times. The `[sim]` table and its validation are [`crate::config::sim`].

mod api;
mod apps;
mod auth;
mod body;
mod clock;
mod ctx;
mod errors;
pub mod faults;
pub mod hooks;
mod installations;
mod jobs;
mod notify;
mod packages;
mod progress;
mod records;
mod routes;
mod server;
mod state;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub use crate::config::sim::{
    InvalidSimSetting, Role, SimAccount, SimConfig, SimConfigError, SimUser, TlsFiles,
};
pub use notify::MAX_NOTIFY_BODY;
pub use state::{ReceivedNotification, RequestRecord};

use state::Store;

/// Every response has a `Content-Type`, including axum's own rejections (405 on a hook).
async fn ensure_content_type(mut resp: axum::response::Response) -> axum::response::Response {
    if !resp
        .headers()
        .contains_key(axum::http::header::CONTENT_TYPE)
    {
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

/// A running simulator: shared in-memory state plus its router.
#[derive(Clone)]
pub struct Simulator {
    store: Arc<Store>,
}

impl Simulator {
    /// A simulator with empty state for these settings (validate them first with
    /// [`SimConfig::validate`]).
    pub fn new(config: SimConfig) -> Self {
        Simulator {
            store: Arc::new(Store::new(config)),
        }
    }

    /// The settings the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        self.store.config()
    }

    /// The whole HTTP surface, `/__sim/` hooks included. Served by [`Simulator::serve`], a
    /// dropped-connection fault closes the connection; served by other means it ends the
    /// response body with an error instead.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/__sim/notifications", get(hooks::notifications))
            .route(
                "/__sim/requests",
                get(hooks::requests).delete(hooks::clear_requests),
            )
            .route(
                "/__sim/faults",
                get(hooks::list_faults)
                    .post(hooks::add_fault)
                    .delete(hooks::clear_faults),
            )
            .route("/__sim/reset", post(hooks::reset))
            .route("/__sim/{*rest}", axum::routing::any(hooks::not_found))
            .fallback(api::handle)
            .layer(axum::middleware::map_response(ensure_content_type))
            .with_state(Arc::clone(&self.store))
    }

    /// Serve on an already-bound listener until `shutdown` resolves (plain HTTP, or HTTPS when
    /// `config.tls` is set). In-flight requests get a few seconds to finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        server::serve(
            self.router(),
            self.config().tls.as_ref(),
            listener,
            shutdown,
        )
        .await
    }

    /// The accepted Notify requests of an account, oldest first (same data as
    /// `GET /__sim/notifications?account=SUB`). Unknown accounts give an empty list.
    pub fn notifications(&self, subdomain: &str) -> Vec<ReceivedNotification> {
        self.store
            .lock()
            .accounts
            .get(subdomain)
            .map(|a| a.notifications.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every Notify request of an account that reached the Notify handler, accepted or not,
    /// each with the status it got (429, 413, 400 or 200). Requests failed by an injected
    /// fault never reach the handler; see [`Simulator::requests`].
    pub fn notify_attempts(&self, subdomain: &str) -> Vec<ReceivedNotification> {
        self.store
            .lock()
            .accounts
            .get(subdomain)
            .map(|a| a.notify_attempts.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The request log (same data as `GET /__sim/requests`).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.store.lock().requests.iter().cloned().collect()
    }

    /// Forgets everything: apps, uploads, jobs, installations, notifications, rate windows,
    /// the request log and fault rules.
    pub fn reset(&self) {
        self.store.reset();
    }
}

//! zenrelay: a notification relay gateway for the Zendesk Apps API.
//!
//! Services send events to the gateway; it validates them, enforces Zendesk's 1 MB Notify
//! cap, stores them in Redis and delivers them to `POST /api/v2/apps/notify` under each
//! account's rolling-window limit, with retries, fairly across accounts and across every
//! gateway process sharing the Redis.
//!
//! # Layout
//!
//! From the top down; a module imports only modules listed below it (a test,
//! `tests/it/layers.rs`, holds every module to that).
//!
//! - [`cli`] — the command line (`serve`, `sim`, `demo`, `check-config`).
//! - [`demo`] — `zenrelay demo`: gateway and simulator in one process, sample traffic (feature `sim`).
//! - [`app`] — builds the gateway (queue, state, worker) from config; runs it until shutdown.
//! - [`api`] — the HTTP edge: routes, extractors, and the handlers of ingress, webhooks,
//!   admin endpoints and the proxy; the OpenAPI description.
//! - [`state`] — the state the handlers share.
//! - [`error`] — the JSON error body of the HTTP edge, and the mapping of services' errors to it.
//! - [`intake`] — validates events and stores them (for ingress, webhooks and the proxy).
//! - [`proxy`] — the Apps API proxy: allowlist, path checks, routing, credential injection,
//!   retries and pacing.
//! - [`delivery`] — the worker loop and the retry policy.
//! - [`sim`] — the local Zendesk Apps API simulator (feature `sim`, on by default).
//! - [`accounts`] — configured and runtime accounts.
//! - [`webhooks`] — signed webhooks: signatures, conditions, mapping to Notify events.
//! - [`server`] — the HTTP/1.1 accept loop (plain or TLS) of the simulator and HTTPS gateway.
//! - [`zendesk`] — upstream accounts, credentials, the Notify call and outcome classes.
//! - [`hosts`] — which account a proxied request's `Host` names.
//! - [`auth`] — client keys and their account scopes.
//! - [`throttle`] — per-client ingress throttling.
//! - [`history`] — the in-process queue history behind the dashboard's charts.
//! - [`telemetry`] — logging.
//! - [`config`] — typed, layered configuration.
//! - [`metrics`] — Prometheus metrics.
//! - [`presence`] — this process's heartbeat in the store's registry of gateway processes.
//! - [`wake`] — what wakes an idle worker: partitions with new work.
//! - [`queue`] — the queue contract and its Lua scripts (key layout), run by Redis in
//!   production (one primary, found directly or through Sentinel, or the masters of a
//!   Redis Cluster) or by an embedded Lua over an in-process store (`memory://`, not
//!   durable).
//! - [`schema`] — precompiled JSON Schema validation with JSON-pointer errors.
//! - [`domain`] — event ids, partitions, the Notify payload and its exact size.
//! - [`seal`] — runtime accounts' credentials encrypted at rest.
//! - [`tls`] — PEM files and the rustls acceptor.
//! - [`dashboard`] — the operator page at `/` and its script and stylesheet.

pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod delivery;
#[cfg(feature = "sim")]
pub mod demo;
pub mod domain;
pub mod error;
pub mod history;
pub mod hosts;
pub mod intake;
pub mod metrics;
pub mod presence;
pub mod proxy;
pub mod queue;
pub mod schema;
pub mod seal;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod wake;
pub mod webhooks;
pub mod zendesk;

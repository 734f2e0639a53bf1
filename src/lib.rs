//! zenrelay: a notification relay gateway for the Zendesk Apps API.
//!
//! Services send events to the gateway; it validates them, enforces Zendesk's 1 MB Notify
//! cap, stores them in Redis and delivers them to `POST /api/v2/apps/notify` under each
//! account's rolling-window limit, with retries, fairly across accounts and across every
//! gateway process sharing the Redis.
//!
//! # Layout
//!
//! - [`cli`] — the command line (`serve`, `sim`, `demo`, `check-config`).
//! - [`demo`] — `zenrelay demo`: gateway and simulator in one process, sample traffic (feature `sim`).
//! - [`admin`] — operator endpoints: queues, dead letters, pause/resume, runtime accounts, metrics.
//! - [`accounts`] — configured and runtime accounts.
//! - [`seal`] — runtime accounts' credentials encrypted at rest.
//! - [`webhooks`] — signed webhooks mapped to Notify events.
//! - [`dashboard`] — the operator page at `/` and its script and stylesheet.
//! - [`history`] — the in-process queue history behind the dashboard's charts.
//! - [`presence`] — this process's heartbeat in the store's registry of gateway processes.
//! - [`metrics`] — Prometheus metrics.
//! - [`throttle`] — per-client ingress throttling.
//! - [`openapi`] — the generated OpenAPI description.
//! - [`sim`] — the local Zendesk Apps API simulator (feature `sim`, on by default).
//! - [`config`] — typed, layered configuration.
//! - [`app`] — builds state, router and worker from config; runs until shutdown.
//! - [`ingress`] — `/v1` notify, batch and event status handlers.
//! - [`proxy`] — the Apps API proxy: allowlist, path checks, routing, credential injection,
//!   retries and pacing.
//! - [`server`] — the HTTP/1.1 accept loop (plain or TLS) of the simulator and HTTPS gateway.
//! - [`tls`] — PEM files and the rustls acceptor.
//! - [`auth`] — client keys and their account scopes.
//! - [`delivery`] — the worker loop, what wakes it, and the retry policy.
//! - [`queue`] — the queue contract and its Lua scripts (key layout), run by Redis in
//!   production (one primary, found directly or through Sentinel, or the masters of a
//!   Redis Cluster) or by an embedded Lua over an in-process store (`memory://`, not
//!   durable).
//! - [`zendesk`] — upstream accounts, credentials, the Notify call and outcome classes.
//! - [`domain`] — event ids, partitions, the Notify payload and its exact size.
//! - [`schema`] — precompiled JSON Schema validation with JSON-pointer errors.
//! - [`error`] — the JSON error body of the HTTP edge.
//! - [`telemetry`] — logging.

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
pub mod webhooks;
pub mod zendesk;

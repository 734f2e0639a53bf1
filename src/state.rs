//! The state every HTTP handler shares: configuration, the queue, accounts, client keys
//! and the services built once from them.

use std::sync::Arc;

use crate::accounts::AccountDirectory;
use crate::auth::ClientKeys;
use crate::config::Config;
use crate::history::History;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::queue::Queue;
use crate::throttle::Throttle;
use crate::wake::Wake;
use crate::webhooks::Webhooks;
use crate::zendesk::Accounts;

/// Shared state of the HTTP handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Parts>,
}

/// What [`AppState`] holds, built once by the gateway.
pub struct Parts {
    /// The configuration.
    pub config: Config,
    /// The queue.
    pub queue: Arc<dyn Queue>,
    /// Every account: configured and runtime.
    pub directory: Arc<AccountDirectory>,
    /// The client keys.
    pub clients: ClientKeys,
    /// Event intake.
    pub intake: Intake,
    /// What wakes this process's worker.
    pub wake: Arc<Wake>,
    /// This process's metrics.
    pub metrics: Arc<Metrics>,
    /// The queue history this process keeps for the dashboard.
    pub history: Arc<History>,
    /// Per-client throttling.
    pub throttle: Throttle,
    /// The configured webhooks.
    pub webhooks: Webhooks,
    /// The OpenAPI document, serialised.
    pub openapi: bytes::Bytes,
    /// The Apps API proxy.
    pub proxy: Proxy,
}

impl AppState {
    /// The state holding `parts`.
    pub fn new(parts: Parts) -> Self {
        AppState {
            inner: Arc::new(parts),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.inner.queue
    }

    /// The configured accounts (see [`AppState::directory`] for runtime ones too).
    pub fn accounts(&self) -> &Accounts {
        self.inner.directory.configured()
    }

    /// Every account: configured and runtime.
    pub fn directory(&self) -> &AccountDirectory {
        &self.inner.directory
    }

    /// Event intake.
    pub fn intake(&self) -> &Intake {
        &self.inner.intake
    }

    /// This process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The queue history this process keeps for the dashboard.
    pub fn history(&self) -> &Arc<History> {
        &self.inner.history
    }

    /// Per-client throttling.
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// The configured webhooks.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The OpenAPI document, serialised.
    pub fn openapi(&self) -> &bytes::Bytes {
        &self.inner.openapi
    }

    /// The client keys.
    pub fn clients(&self) -> &ClientKeys {
        &self.inner.clients
    }

    /// The Apps API proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.inner.proxy
    }

    /// Tells this process's worker that new work may be waiting in any partition.
    pub fn wake_worker(&self) {
        self.inner.wake.all();
    }
}

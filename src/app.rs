//! Builds the gateway from config: state, router, worker; runs it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountDirectory;
use crate::auth::ClientKeys;
use crate::config::Config;
use crate::delivery::{Worker, WorkerSettings};
use crate::domain::notify_schema;
use crate::history::{self, History};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::queue::cluster::ClusterQueue;
use crate::queue::memory::MemoryQueue;
use crate::queue::redis::{RedisQueue, RedisQueueConfig, Replication, SentinelSettings};
use crate::queue::script_queue::QueueSettings;
use crate::queue::{Queue, QueueError, RateLimit};
use crate::schema::SchemaValidator;
use crate::state::{AppState, Parts};
use crate::throttle::Throttle;
use crate::wake::Wake;
use crate::webhooks::Webhooks;
use crate::zendesk::ZendeskClient;

/// A gateway ready to serve.
pub struct Gateway {
    state: AppState,
    worker: Option<Worker>,
}

/// Builds the queue backend `redis.url` selects: `memory://` → [`MemoryQueue`] (not
/// durable), anything else → [`RedisQueue`]. The only place that picks a backend. No I/O:
/// a Redis pool connects lazily.
pub fn queue_for(config: &Config) -> anyhow::Result<Arc<dyn Queue>> {
    if config.redis.is_memory() {
        Ok(Arc::new(memory_queue(config)))
    } else if !config.redis.cluster_nodes.is_empty() {
        Ok(Arc::new(ClusterQueue::new(redis_queue_config(config))?))
    } else {
        Ok(Arc::new(redis_queue(config)?))
    }
}

/// The settings of the queue's scripts described by `config` (either backend).
pub fn queue_settings(config: &Config) -> QueueSettings {
    let d = &config.delivery;
    QueueSettings {
        prefix: config.redis.key_prefix.clone(),
        partitions: config.redis.partitions,
        lease: d.lease(),
        group_max: d.lease_group_max,
        default_limit: RateLimit {
            limit: d.notify_per_minute,
            window_ms: d.window_ms(),
        },
        margin_ms: d.margin_ms(),
        retention: d.retention(),
    }
}

/// Builds the in-memory queue described by `config`.
pub fn memory_queue(config: &Config) -> MemoryQueue {
    MemoryQueue::new(queue_settings(config))
}

/// Builds the Redis queue described by `config`.
pub fn redis_queue(config: &Config) -> anyhow::Result<RedisQueue> {
    Ok(RedisQueue::new(redis_queue_config(config))?)
}

/// The settings of the Redis queue described by `config`.
pub fn redis_queue_config(config: &Config) -> RedisQueueConfig {
    RedisQueueConfig {
        url: config.redis.url.clone(),
        pool_size: config.redis.pool_size,
        timeout: Duration::from_millis(config.redis.timeout_ms),
        replication: (config.redis.wait_replicas > 0).then(|| Replication {
            replicas: config.redis.wait_replicas,
            timeout: Duration::from_millis(config.redis.wait_timeout_ms),
        }),
        sentinel: config
            .redis
            .sentinel_master
            .as_ref()
            .map(|master| SentinelSettings {
                master: master.clone(),
                nodes: config.redis.sentinel_nodes.clone(),
            }),
        cluster_nodes: config.redis.cluster_nodes.clone(),
        queue: queue_settings(config),
    }
}

/// With `redis.partitions` not set: takes the partition count the stored data was written
/// with (see [`Queue::recorded_partitions`]), keeping the default for a new store. When the
/// store cannot be read in time, the default stays: a store written with another count is
/// then refused once it answers (the layout check), naming the count to set. Answers the
/// queue to use: `queue`, unless the count changed.
async fn adopt_partitions(
    config: &mut Config,
    queue: Arc<dyn Queue>,
) -> anyhow::Result<Arc<dyn Queue>> {
    // A store that is down at start may come back within the wait: asked again until then.
    let recorded = async {
        loop {
            match queue.recorded_partitions().await {
                Ok(recorded) => return recorded,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the recorded partition count yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    };
    match tokio::time::timeout(STARTUP_CHECK, recorded).await {
        Ok(Some(recorded)) if recorded != config.redis.partitions => {
            tracing::info!(
                partitions = recorded,
                "redis.partitions is not set: using the count the stored data was written with"
            );
            config.redis.partitions = recorded;
            queue_for(config)
        }
        Ok(_) => Ok(queue),
        Err(_) => {
            tracing::warn!(
                partitions = config.redis.partitions,
                "redis.partitions is not set and the count of the stored data cannot be read yet; using the default (set redis.partitions to be sure)"
            );
            Ok(queue)
        }
    }
}

/// How long a starting gateway waits for the queue's startup checks before it serves.
const STARTUP_CHECK: Duration = Duration::from_secs(10);

impl Gateway {
    /// Builds a gateway on the queue its config selects (see [`queue_for`]).
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        let mut queue = queue_for(&config)?;
        if !config.redis.partitions_set && !config.redis.is_memory() {
            queue = adopt_partitions(&mut config, queue).await?;
        }
        // A migration of the store's layout goes on in the background past this wait, so
        // that health checks are answered while it runs.
        match tokio::time::timeout(STARTUP_CHECK, queue.check_deployment()).await {
            Ok(Ok(())) => {}
            Ok(Err(e @ QueueError::Mismatch(_))) => return Err(e.into()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "queue storage is not reachable yet; ingress answers 503 until it is");
            }
            Err(_) => {
                tracing::warn!("queue storage still being checked (a layout migration runs); ingress answers 503 until it is done");
            }
        }
        Self::with_queue(config, queue)
    }

    /// Builds a gateway on the given queue.
    pub fn with_queue(config: Config, queue: Arc<dyn Queue>) -> anyhow::Result<Self> {
        let directory = Arc::new(AccountDirectory::new(&config, queue.clone())?);
        let metrics = Arc::new(
            Metrics::new(config.metrics.per_account_max, config.accounts.len())?
                .with_ttl(config.delivery.default_ttl_seconds),
        );
        let webhooks = Webhooks::from_config(&config)?;
        let openapi = serde_json::to_vec(&crate::api::document())?.into();
        let notify_schema = SchemaValidator::new(&notify_schema())?;
        let wake = Arc::new(Wake::default());
        let d = &config.delivery;
        let worker = d.enabled.then(|| {
            ZendeskClient::new(d.upstream_timeout()).map(|client| {
                Worker::new(
                    queue.clone(),
                    client,
                    directory.clone(),
                    WorkerSettings::from(d),
                    wake.clone(),
                )
                .with_metrics(metrics.clone())
            })
        });
        let worker = worker
            .transpose()
            .map_err(|e| anyhow::anyhow!("cannot build the Notify HTTP client: {e}"))?;
        let proxy = Proxy::from_config(&config)
            .map_err(|e| anyhow::anyhow!("cannot build the proxy's HTTP client: {e}"))?;
        let history = Arc::new(History::new(
            Duration::from_secs(config.metrics.history_interval_seconds),
            config.metrics.history_accounts_max,
        ));
        let intake = Intake::new(
            &config,
            queue.clone(),
            notify_schema,
            wake.clone(),
            metrics.clone(),
        );
        let state = AppState::new(Parts {
            clients: ClientKeys::from_config(&config.clients),
            throttle: Throttle::from_config(&config),
            config,
            queue,
            directory,
            intake,
            wake,
            metrics,
            history,
            webhooks,
            openapi,
            proxy,
        });
        Ok(Gateway { state, worker })
    }

    /// The handlers' state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The delivery worker, if this process runs one.
    pub fn worker(&self) -> Option<&Worker> {
        self.worker.as_ref()
    }

    /// The HTTP surface.
    pub fn router(&self) -> Router {
        crate::api::router(self.state.clone())
    }

    /// Serves on `listener` (HTTPS when `server.tls` is set) until `shutdown` resolves: then
    /// stops accepting, lets open requests and in-flight deliveries finish, and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let tls = self
            .state
            .config()
            .server
            .loaded_tls()?
            .map(crate::tls::ServerTls::acceptor);
        let token = CancellationToken::new();
        let worker = self
            .worker
            .clone()
            .map(|w| tokio::spawn(w.run(token.clone())));
        let sampler = tokio::spawn(history::run_sampler(
            self.state.history().clone(),
            self.state.metrics().clone(),
            self.state.queue().clone(),
            token.clone(),
        ));
        // The process stays in the registry until its last write: past the worker's and
        // the server's drain.
        let present = CancellationToken::new();
        let presence = tokio::spawn(crate::presence::run(
            self.state.queue().clone(),
            crate::presence::this_process(self.worker.is_some()),
            present.clone(),
        ));
        let stop = token.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: intake stopped, finishing in-flight work");
            stop.cancel();
        };
        let server = &self.state.config().server;
        let limits = crate::server::ConnectionLimits::from(server);
        // Open requests get as long as the slowest may take: its body, a pacing turn and
        // every proxied attempt.
        let p = &self.state.config().proxy;
        let grace = limits.body_timeout
            + Duration::from_millis(p.max_wait_ms)
            + p.upstream_timeout() * p.max_attempts
            + Duration::from_secs(1);
        let result =
            crate::server::serve(listener, self.router(), tls, limits, shutdown, grace).await;
        token.cancel();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        let _ = sampler.await;
        present.cancel();
        let _ = presence.await;
        result
    }
}

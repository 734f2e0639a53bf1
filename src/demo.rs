//! `zenrelay demo`: the gateway and the Zendesk simulator in one process, with sample
//! accounts and a client key, for trying zenrelay out on a fresh machine (SPEC §1).
//!
//! - The queue is Redis when `redis.url` (config or `ZENRELAY__REDIS__URL`, default
//!   `redis://127.0.0.1:6379/0`) answers a PING within [`REDIS_PROBE`], under the key prefix
//!   [`DEMO_PREFIX`] so it never touches a real deployment's keys; otherwise the in-memory
//!   queue, which is not durable. The banner says which.
//! - Two sample accounts, `acme` and `globex`, point at the in-process simulator, which
//!   enforces the same Notify limit as the gateway, so a request too many would show as a
//!   429. Without `--config` the limit is shortened to 20 per rolling 10 s so that it can be
//!   seen working within seconds; with `--config` the file's `[redis]`, `[delivery]` and
//!   `[log]` settings apply, while accounts and clients are always the sample ones.
//! - `--traffic` adds a steady sample load ([`traffic`]) that shows the limiter, a retry and a
//!   dead letter happening.
//!
//! SIGINT or SIGTERM stop intake, let in-flight deliveries finish, then stop the simulator.

pub mod traffic;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{queue_for, Gateway};
use crate::config::{AccountConfig, ClientConfig, Config, ConfigError, Scope, MEMORY_URL};
use crate::queue::Queue;
use crate::sim::{Role, SimAccount, SimConfig, SimUser, Simulator};

/// The client key the demo accepts for every account (also an admin key).
pub const DEMO_KEY: &str = "zenrelay-demo-key";

/// Key prefix of the demo's data in Redis.
pub const DEMO_PREFIX: &str = "zenrelay-demo";

/// How long Redis gets to answer the PING that decides the backend.
pub const REDIS_PROBE: Duration = Duration::from_millis(500);

/// Settings used when no `--config` is given: delivery tuned so that the limiter and the
/// retries show within seconds.
const DEMO_DEFAULTS: &str = r#"
[delivery]
notify_per_minute = 20
notify_window_seconds = 10
max_attempts = 4
retry_base_ms = 500
retry_max_ms = 4000
upstream_timeout_ms = 5000
"#;

/// Command-line options of `zenrelay demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Gateway address.
    pub listen: String,
    /// Simulator address.
    pub sim_listen: String,
    /// Optional config file.
    pub config: Option<PathBuf>,
    /// Whether to send the sample load.
    pub traffic: bool,
}

/// Loads the demo's settings: `[redis]`, `[delivery]` and `[log]` of `--config` if given,
/// else the demo defaults; then the environment overrides of those tables; then the demo's
/// listen address and key prefix.
pub fn load_config(options: &DemoOptions) -> Result<Config, ConfigError> {
    let mut config = match &options.config {
        Some(path) => Config::load_scoped(Some(path), Scope::Demo)?,
        None => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            Config::from_toml_scoped(DEMO_DEFAULTS, "<demo defaults>", &env, Scope::Demo)?
        }
    };
    config.server.listen = options.listen.clone();
    config.redis.key_prefix = DEMO_PREFIX.to_string();
    config.validate()?;
    Ok(config)
}

/// The simulated accounts: `acme` (the simulator's sample account) and `globex`.
fn sim_accounts() -> Vec<SimAccount> {
    let mut accounts = SimConfig::default().accounts;
    accounts.push(SimAccount {
        subdomain: "globex".into(),
        users: vec![SimUser {
            email: "admin@globex.example".into(),
            role: Role::Admin,
            api_token: Some("sim-globex-token".into()),
            password: None,
            oauth_token: None,
        }],
    });
    accounts
}

/// The gateway's accounts, pointing at the simulator at `sim_base`.
fn gateway_accounts(sim_base: &str) -> Vec<AccountConfig> {
    [
        ("acme", "admin@acme.example", "sim-admin-token"),
        ("globex", "admin@globex.example", "sim-globex-token"),
    ]
    .into_iter()
    .map(|(id, email, token)| AccountConfig {
        id: id.into(),
        subdomain: id.into(),
        base_url: Some(sim_base.to_string()),
        hosts: Vec::new(),
        email: Some(email.into()),
        api_token: Some(SecretString::from(token)),
        oauth_token: None,
        password: None,
        notify_per_minute: None,
    })
    .collect()
}

/// Hides the password of a Redis URL.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// Which queue the demo runs on, and why.
struct Choice {
    queue: Arc<dyn Queue>,
    /// Why Redis was not used, when it was not.
    fallback: Option<String>,
}

/// Redis if it answers a PING within [`REDIS_PROBE`], else memory (`config.redis.url` is
/// then set to `memory://`).
async fn choose_queue(config: &mut Config) -> anyhow::Result<Choice> {
    if config.redis.is_memory() {
        return Ok(Choice {
            queue: queue_for(config)?,
            fallback: None,
        });
    }
    let shown = redact(config.redis.url.expose_secret());
    let reason = match queue_for(config) {
        Ok(queue) => match tokio::time::timeout(REDIS_PROBE, queue.ping()).await {
            Ok(Ok(())) => {
                if let Err(e) = queue.check_deployment().await {
                    tracing::warn!(error = %e, "cannot read Redis settings");
                }
                return Ok(Choice {
                    queue,
                    fallback: None,
                });
            }
            Ok(Err(e)) => format!("Redis at {shown} did not answer: {e}"),
            Err(_) => format!(
                "Redis at {shown} did not answer within {} ms",
                REDIS_PROBE.as_millis()
            ),
        },
        Err(e) => format!("Redis at {shown} cannot be used: {e:#}"),
    };
    config.redis.url = SecretString::from(MEMORY_URL);
    Ok(Choice {
        queue: queue_for(config)?,
        fallback: Some(reason),
    })
}

/// Whether the gateway's router serves `path` (e.g. `/metrics`, which depends on the build).
async fn serves(gateway: &Gateway, path: &str) -> bool {
    use tower::ServiceExt;
    let Ok(request) = http::Request::get(path).body(axum::body::Body::empty()) else {
        return false;
    };
    gateway
        .router()
        .oneshot(request)
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// What the banner shows.
struct Banner<'a> {
    gateway: String,
    sim: String,
    metrics: Option<String>,
    queue: &'a Choice,
    config: &'a Config,
    traffic: bool,
}

impl Banner<'_> {
    fn render(&self) -> String {
        let d = &self.config.delivery;
        let g = &self.gateway;
        let mut out = String::new();
        out.push_str(
            "zenrelay demo: the gateway and a Zendesk simulator in one process (for trying it out only)\n\n",
        );
        out.push_str(&format!("  queue       {}\n", self.queue.queue.describe()));
        match &self.queue.fallback {
            Some(reason) => out.push_str(&format!("              because {reason}\n")),
            None if !self.config.redis.is_memory() => out.push_str(&format!(
                "              at {}\n",
                redact(self.config.redis.url.expose_secret())
            )),
            None => {}
        }
        out.push_str(&format!("  gateway     {g}\n"));
        out.push_str(&format!("  dashboard   {g}/#key={DEMO_KEY}\n"));
        out.push_str(&format!(
            "  simulator   {}   (Zendesk accounts: acme, globex)\n",
            self.sim
        ));
        if let Some(metrics) = &self.metrics {
            out.push_str(&format!("  metrics     {metrics}\n"));
        }
        out.push_str(&format!("  client key  {DEMO_KEY}\n"));
        out.push_str(&format!(
            "  limit       {} Notify calls per account per rolling {} s (the simulator enforces it too)\n",
            d.notify_per_minute, d.notify_window_seconds
        ));
        out.push_str("\nTry it:\n\n  # send an event to the acme account\n");
        out.push_str(&format!(
            "  curl -s -X POST {g}/v1/accounts/acme/notify -H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' -d '{{\"app_id\": 375, \"event\": \"hello\", \"body\": \"Hello from zenrelay\", \"agent_id\": 534}}'\n"
        ));
        out.push_str("\n  # read its status (use the id from the answer)\n");
        out.push_str(&format!(
            "  curl -s {g}/v1/events/EVENT_ID -H 'Authorization: Bearer {DEMO_KEY}'\n"
        ));
        out.push_str("\n  # see what the simulated Zendesk received\n");
        out.push_str(&format!(
            "  curl -s '{}/__sim/notifications?account=acme'\n",
            self.sim
        ));
        if let Some(metrics) = &self.metrics {
            out.push_str("\n  # watch the gateway's metrics\n");
            out.push_str(&format!("  curl -s {metrics}\n"));
        }
        if self.traffic {
            out.push_str("\nSample traffic is on: watch the log below.\n");
        } else {
            out.push_str("\nRun `zenrelay demo --traffic` to watch a sample load (limiter, a retry, a dead letter).\n");
        }
        out.push_str("Press Ctrl-C to stop.\n");
        out
    }
}

/// Runs the demo until `shutdown` resolves. `config` comes from [`load_config`].
pub async fn run(
    mut config: Config,
    options: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sim_listener = TcpListener::bind(&options.sim_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--sim-listen)", options.sim_listen))?;
    let sim_addr = sim_listener.local_addr()?;
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.server.listen))?;
    let addr = listener.local_addr()?;
    let sim_base = format!("http://{sim_addr}");
    let base = format!("http://{addr}");

    config.accounts = gateway_accounts(&sim_base);
    config.clients = vec![ClientConfig {
        name: "demo".into(),
        key: SecretString::from(DEMO_KEY),
        accounts: vec!["*".into()],
        admin: true,
        requests_per_second: None,
    }];
    config.validate()?;
    let sim_config = SimConfig {
        listen: sim_addr.to_string(),
        notify_per_minute: config.delivery.notify_per_minute,
        notify_window_seconds: config.delivery.notify_window_seconds,
        tls: None,
        accounts: sim_accounts(),
    };
    sim_config.validate().map_err(anyhow::Error::msg)?;

    let choice = choose_queue(&mut config).await?;
    let gateway = Gateway::with_queue(config.clone(), choice.queue.clone())?;
    let metrics = serves(&gateway, "/metrics")
        .await
        .then(|| format!("{base}/metrics"));
    let banner = Banner {
        gateway: base.clone(),
        sim: sim_base.clone(),
        metrics,
        queue: &choice,
        config: &config,
        traffic: options.traffic,
    };
    println!("{}", banner.render());
    tracing::info!(gateway = %addr, simulator = %sim_addr, queue = %choice.queue.describe(), "demo running");

    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.cancel();
    });
    // The simulator stops only after the gateway has finished its in-flight deliveries.
    let sim_stop = CancellationToken::new();
    let simulator = Simulator::new(sim_config);
    let sim_task = tokio::spawn(
        simulator
            .clone()
            .serve(sim_listener, sim_stop.clone().cancelled_owned()),
    );
    let traffic_task = options.traffic.then(|| {
        let plan = traffic::Plan::new(&config, &base, &sim_base, DEMO_KEY);
        tokio::spawn(traffic::run(plan, simulator.clone(), stop.clone()))
    });

    let result = gateway.run(listener, stop.clone().cancelled_owned()).await;
    stop.cancel();
    if let Some(task) = traffic_task {
        let _ = task.await;
    }
    sim_stop.cancel();
    match sim_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "simulator stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "simulator task failed"),
        Ok(Ok(())) => {}
    }
    tracing::info!("demo stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_hidden() {
        assert_eq!(
            redact("redis://:secret@db.example:6379/0"),
            "redis://***@db.example:6379/0"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn demo_defaults_are_valid_and_use_their_own_prefix() {
        let options = DemoOptions {
            listen: "127.0.0.1:0".into(),
            sim_listen: "127.0.0.1:0".into(),
            config: None,
            traffic: false,
        };
        let config = load_config(&options).unwrap();
        assert_eq!(config.redis.key_prefix, DEMO_PREFIX);
        assert_eq!(config.delivery.notify_window_seconds, 10);
        let mut config = config;
        config.accounts = gateway_accounts("http://127.0.0.1:9090");
        config.validate().unwrap();
        let sim = SimConfig {
            accounts: sim_accounts(),
            ..SimConfig::default()
        };
        sim.validate().unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_memory() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut config = Config::default();
        config.redis.url = SecretString::from(format!("redis://127.0.0.1:{port}/0"));
        let choice = choose_queue(&mut config).await.unwrap();
        assert!(config.redis.is_memory());
        assert!(choice.fallback.unwrap().contains("did not answer"));
        assert!(choice.queue.describe().contains("NOT DURABLE"));
    }
}

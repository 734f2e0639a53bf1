//! `[redis]`: where the queue is stored (one Redis, Sentinel, a Cluster, or in memory) and
//! how writes are made durable.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::ConfigError;
use super::rules::positive;

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`, `unix://`), or `memory://` for the
    /// in-memory queue (not durable; for `zenrelay demo` and trials).
    pub url: SecretString,
    /// Prefix of every key the gateway writes.
    pub key_prefix: String,
    /// Number of hash-tagged partitions accounts are spread over. Must not change while
    /// data exists under `key_prefix`; when not set, a gateway uses the count the data was
    /// written with ([`DEFAULT_PARTITIONS`] for a new store).
    pub partitions: u16,
    /// Whether `partitions` was set (in the file or the environment).
    #[serde(skip)]
    pub partitions_set: bool,
    /// Multiplexed connections of each process (concurrent commands are pipelined on them).
    pub pool_size: usize,
    /// Timeout of one Redis command, in milliseconds.
    pub timeout_ms: u64,
    /// Replicas that must hold a stored event before ingress answers 202 (`WAIT`); 0
    /// answers once the primary holds it.
    pub wait_replicas: u32,
    /// Longest wait for those replicas, in milliseconds; past it ingress answers 503.
    pub wait_timeout_ms: u64,
    /// The primary's name in Redis Sentinel's configuration: when set, the sentinels of
    /// `sentinel_nodes` say where the primary is (`url`'s address is not used, its
    /// credentials and database are), and a failover is followed.
    pub sentinel_master: Option<String>,
    /// The sentinels to ask (`redis://host:port`).
    pub sentinel_nodes: Vec<SecretString>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, with the credentials every node
    /// takes): when set, the queue runs on the cluster and `url` is not used.
    pub cluster_nodes: Vec<SecretString>,
}

/// Partitions of a new store when `redis.partitions` is not set: enough to spread evenly
/// over the masters of a Redis Cluster of 3 to 10 shards.
pub const DEFAULT_PARTITIONS: u16 = 64;

/// The `redis.url` that selects the in-memory queue (not durable).
pub const MEMORY_URL: &str = "memory://";

impl RedisConfig {
    /// Whether `url` selects the in-memory queue instead of Redis.
    pub fn is_memory(&self) -> bool {
        self.url.expose_secret().trim() == MEMORY_URL
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379/0"),
            key_prefix: "zenrelay".into(),
            partitions: DEFAULT_PARTITIONS,
            partitions_set: false,
            pool_size: 4,
            timeout_ms: 2000,
            wait_replicas: 0,
            wait_timeout_ms: 500,
            sentinel_master: None,
            sentinel_nodes: Vec::new(),
            cluster_nodes: Vec::new(),
        }
    }
}

impl RedisConfig {
    /// Checks the whole table: the store, then Sentinel, Cluster and replica waits.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        self.check_store()?;
        self.check_sentinel()?;
        self.check_cluster()?;
        self.check_wait()
    }

    /// The URL's scheme, the key prefix, the partition count and the connections.
    fn check_store(&self) -> Result<(), ConfigError> {
        let url = self.url.expose_secret();
        if !(self.is_memory()
            || ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)))
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "must start with redis://, rediss:// or unix://, or be memory:// (in-memory, not durable)",
            ));
        }
        let prefix = &self.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must be non-empty, without spaces or braces",
            ));
        }
        if !(1..=4096).contains(&self.partitions) {
            return Err(ConfigError::invalid(
                "redis.partitions",
                "must be between 1 and 4096",
            ));
        }
        positive("redis.pool_size", self.pool_size as u64)?;
        positive("redis.timeout_ms", self.timeout_ms)
    }

    /// `sentinel_master` and `sentinel_nodes` come together, off the in-memory queue; each
    /// sentinel is a `redis://` address without a database.
    fn check_sentinel(&self) -> Result<(), ConfigError> {
        let refusal = match (&self.sentinel_master, self.sentinel_nodes.is_empty()) {
            (Some(_), _) if self.is_memory() => Some((
                "redis.sentinel_master",
                "cannot be used with memory:// (the in-memory queue)",
            )),
            (Some(master), _) if master.trim().is_empty() => {
                Some(("redis.sentinel_master", "must not be empty"))
            }
            (Some(_), true) => Some((
                "redis.sentinel_nodes",
                "must name at least one sentinel when redis.sentinel_master is set",
            )),
            (None, false) => Some((
                "redis.sentinel_master",
                "must be set when redis.sentinel_nodes is (the primary's name at the sentinels)",
            )),
            _ => None,
        };
        if let Some((key, message)) = refusal {
            return Err(ConfigError::invalid(key, message));
        }
        for (i, node) in self.sentinel_nodes.iter().enumerate() {
            let key = format!("redis.sentinel_nodes[{i}]");
            let Some(rest) = node.expose_secret().strip_prefix("redis://") else {
                return Err(ConfigError::invalid(key, "must start with redis://"));
            };
            if rest
                .split_once('/')
                .is_some_and(|(_, path)| !path.is_empty())
            {
                return Err(ConfigError::invalid(
                    key,
                    "must name no database (a sentinel has none): redis://host:port",
                ));
            }
        }
        Ok(())
    }

    /// `cluster_nodes` stands alone (no in-memory queue, no Sentinel); each node is a Redis
    /// URL of database 0.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        if !self.cluster_nodes.is_empty() {
            if self.is_memory() {
                return Err(ConfigError::invalid(
                    "redis.cluster_nodes",
                    "cannot be used with redis.url = \"memory://\" (the in-memory queue)",
                ));
            }
            if self.sentinel_master.is_some() {
                return Err(ConfigError::invalid(
                    "redis.cluster_nodes",
                    "cannot be used with redis.sentinel_master (a Redis Cluster fails over by itself)",
                ));
            }
        }
        for (i, node) in self.cluster_nodes.iter().enumerate() {
            check_cluster_node(&format!("redis.cluster_nodes[{i}]"), node.expose_secret())?;
        }
        Ok(())
    }

    /// Waiting for replicas needs Redis, and a wait shorter than one command's timeout.
    fn check_wait(&self) -> Result<(), ConfigError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        if self.is_memory() {
            return Err(ConfigError::invalid(
                "redis.wait_replicas",
                "must be 0 with memory:// (the in-memory queue has no replicas)",
            ));
        }
        positive("redis.wait_timeout_ms", self.wait_timeout_ms)?;
        if self.wait_timeout_ms >= self.timeout_ms {
            return Err(ConfigError::invalid(
                "redis.wait_timeout_ms",
                "must be shorter than redis.timeout_ms (the wait is one Redis command)",
            ));
        }
        Ok(())
    }
}

/// One seed node of a Redis Cluster, at `key`.
fn check_cluster_node(key: &str, url: &str) -> Result<(), ConfigError> {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return Err(ConfigError::invalid(
            key,
            "must start with redis:// or rediss://",
        ));
    };
    if rest
        .split_once('/')
        .is_some_and(|(_, path)| !path.is_empty() && path != "0")
    {
        return Err(ConfigError::invalid(
            key,
            "must name no database but 0 (a Redis Cluster has only database 0)",
        ));
    }
    if let Err(e) = ::redis::IntoConnectionInfo::into_connection_info(url) {
        return Err(ConfigError::invalid(
            key,
            format!("is not a Redis URL: {e}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{err, vars};
    use crate::config::Config;

    #[test]
    fn memory_url_selects_the_in_memory_queue() {
        let env = vars(&[("ZENRELAY__REDIS__URL", "memory://")]);
        let config = Config::from_toml_with_env("", "test.toml", &env).unwrap();
        assert!(config.redis.is_memory());
        assert!(!Config::default().redis.is_memory());
        let env = vars(&[("ZENRELAY__REDIS__URL", "memory://x")]);
        let message = err("", &env);
        assert!(message.starts_with("redis.url:"), "{message}");
    }

    #[test]
    fn waiting_for_replicas_needs_redis_and_a_wait_shorter_than_a_command() {
        let config =
            Config::from_toml_with_env("[redis]\nwait_replicas = 1\n", "test.toml", &[]).unwrap();
        assert_eq!(config.redis.wait_replicas, 1);
        assert_eq!(config.redis.wait_timeout_ms, 500);
        let memory = vars(&[("ZENRELAY__REDIS__URL", "memory://")]);
        let message = err("[redis]\nwait_replicas = 1\n", &memory);
        assert!(message.starts_with("redis.wait_replicas:"), "{message}");
        let message = err("[redis]\nwait_replicas = 1\nwait_timeout_ms = 2000\n", &[]);
        assert!(message.starts_with("redis.wait_timeout_ms:"), "{message}");
        let message = err("[redis]\nwait_replicas = 1\nwait_timeout_ms = 0\n", &[]);
        assert!(message.starts_with("redis.wait_timeout_ms:"), "{message}");
        // Without replicas to wait for, the wait is not used.
        Config::from_toml_with_env("[redis]\nwait_timeout_ms = 0\n", "test.toml", &[]).unwrap();
    }
    #[test]
    fn sentinel_keys_come_together() {
        let ok =
            "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://10.0.0.5:26379\"]\n";
        let config = Config::from_toml_with_env(ok, "test.toml", &[]).unwrap();
        assert_eq!(config.redis.sentinel_master.as_deref(), Some("m"));
        for (text, key) in [
            (
                "[redis]\nsentinel_master = \"m\"\n",
                "redis.sentinel_nodes:",
            ),
            (
                "[redis]\nsentinel_nodes = [\"redis://10.0.0.5:26379\"]\n",
                "redis.sentinel_master:",
            ),
            (
                "[redis]\nsentinel_master = \" \"\nsentinel_nodes = [\"redis://h:1\"]\n",
                "redis.sentinel_master:",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://h:1\", \"h:2\"]\n",
                "redis.sentinel_nodes[1]:",
            ),
            (
                "[redis]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://h:1/0\"]\n",
                "redis.sentinel_nodes[0]:",
            ),
        ] {
            let message = err(text, &[]);
            assert!(message.starts_with(key), "{text}: {message}");
        }
        let memory = [("ZENRELAY__REDIS__URL".to_string(), "memory://".to_string())];
        let message = err(ok, &memory);
        assert!(message.starts_with("redis.sentinel_master:"), "{message}");
    }

    #[test]
    fn cluster_nodes_are_checked() {
        let ok = "[redis]\ncluster_nodes = [\"redis://10.0.0.1:7000\", \"redis://u:p@h:7001/0\"]\n";
        let config = Config::from_toml_with_env(ok, "test.toml", &[]).unwrap();
        assert_eq!(config.redis.cluster_nodes.len(), 2);
        for (text, key) in [
            (
                "[redis]\ncluster_nodes = [\"redis://h:1\", \"h:2\"]\n",
                "redis.cluster_nodes[1]:",
            ),
            (
                "[redis]\ncluster_nodes = [\"redis://h:1/3\"]\n",
                "redis.cluster_nodes[0]:",
            ),
            (
                "[redis]\ncluster_nodes = [\"redis://h:1\", \"redis://h:port\"]\n",
                "redis.cluster_nodes[1]:",
            ),
            // This build has no TLS to Redis: said at once, not at the first connection.
            (
                "[redis]\ncluster_nodes = [\"rediss://h:1\"]\n",
                "redis.cluster_nodes[0]: is not a Redis URL",
            ),
            (
                "[redis]\ncluster_nodes = [\"redis://h:1\"]\nsentinel_master = \"m\"\nsentinel_nodes = [\"redis://h:2\"]\n",
                "redis.cluster_nodes:",
            ),
        ] {
            let message = err(text, &[]);
            assert!(message.starts_with(key), "{text}: {message}");
        }
        let memory = [("ZENRELAY__REDIS__URL".to_string(), "memory://".to_string())];
        let message = err(ok, &memory);
        assert!(message.starts_with("redis.cluster_nodes:"), "{message}");
    }
}

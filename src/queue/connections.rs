//! The connections of a process to its Redis primary, found at a fixed address or through
//! Redis Sentinel, and followed across a failover.
//!
//! # Multiplexed connections
//!
//! A few multiplexed connections (`redis.pool_size`, each a [`ConnectionManager`] that
//! reconnects by itself) carry every command: concurrent requests are pipelined on them
//! instead of each taking a pooled connection, which would cost a health-check round
//! trip per checkout and cut single-event ingress throughput several times over. They are
//! opened on first use, so the gateway starts (and answers 503) while Redis is down.
//!
//! # Sentinel
//!
//! With `redis.sentinel_master`, the primary's address is asked of every sentinel at once
//! (`SENTINEL get-master-addr-by-name`; the address most of them name wins, so a stale or
//! dead sentinel neither misleads nor delays), and the server found must say it is a
//! primary (`ROLE`) before it is used; the credentials and database of `redis.url` are
//! kept. After a failed command the sentinels are asked again (at most every [`RECHECK`]),
//! and every [`REFRESH`] while commands succeed (a primary cut off from the sentinels may
//! still answer this process): when they name another primary, the connections are
//! dropped and the next command opens them to the new one. The `redis` crate's own
//! sentinel client opens single connections and does not follow a failover, which is what
//! is needed here; the few commands above are all of its work this needs.
//!
//! # Waiting for replicas
//!
//! With `redis.wait_replicas`, one more connection carries the writes that are followed by
//! `WAIT` ([`RedisConnections::writer`]): Redis reads nothing more from a connection while
//! it waits there, so on a shared one a slow replica would hold up claims, completions and
//! readiness checks too.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, Value};

use super::transport::Functions;
use super::QueueError;

/// How many replicas must confirm a write (`WAIT`), and how long to wait for them.
#[derive(Clone, Copy, Debug)]
pub struct Replication {
    /// Replicas that must hold the write.
    pub replicas: u32,
    /// Longest wait for them.
    pub timeout: Duration,
}

/// Where the primary is.
pub enum Target {
    /// At the address of this client's URL.
    Server(redis::Client),
    /// Wherever these sentinels say the primary of `master` is.
    Sentinel {
        /// The primary's name in the sentinels' configuration.
        master: String,
        /// The sentinels to ask.
        sentinels: Vec<redis::Client>,
        /// The primary's connection settings but its address (credentials, database).
        template: ConnectionInfo,
    },
}

impl Target {
    /// The target of `url` (and, when set, of the sentinels of `master`).
    pub fn new(url: &str, sentinel: Option<(&str, &[String])>) -> Result<Self, QueueError> {
        let invalid = |what: &str, e: RedisError| {
            QueueError::Unavailable(format!("invalid Redis URL in {what}: {e}"))
        };
        let Some((master, nodes)) = sentinel else {
            return redis::Client::open(url)
                .map(Target::Server)
                .map_err(|e| invalid("redis.url", e));
        };
        let template = url
            .into_connection_info()
            .map_err(|e| invalid("redis.url", e))?;
        let sentinels = nodes
            .iter()
            .map(|node| redis::Client::open(node.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("redis.sentinel_nodes", e))?;
        Ok(Target::Sentinel {
            master: master.to_string(),
            sentinels,
            template,
        })
    }
}

/// The multiplexed connections to one server.
struct Pool {
    client: redis::Client,
    /// `host:port` of the server, to tell a failover.
    addr: String,
    connections: Vec<ConnectionManager>,
    /// With `redis.wait_replicas`: the connection that carries the writes followed by
    /// `WAIT`, alone, since Redis reads nothing more from a connection blocked in `WAIT`.
    writer: Option<ConnectionManager>,
}

/// The connections to the Redis primary: a few multiplexed connections (see the module
/// docs), each command bounded by the command timeout.
pub struct RedisConnections {
    target: Target,
    pool: RwLock<Option<Arc<Pool>>>,
    /// Held while the pool is opened, and while the sentinels are asked again.
    opening: tokio::sync::Mutex<Attempts>,
    next: AtomicUsize,
    /// When the sentinels were last asked, in ms since `origin`.
    asked_ms: AtomicU64,
    origin: Instant,
    pool_size: usize,
    timeout: Duration,
    replication: Option<Replication>,
    /// Whether the server takes the scripts as functions.
    pub(super) functions: Functions,
}

/// When the sentinels were last asked again, and the last failure to open the pool.
#[derive(Default)]
struct Attempts {
    rechecked: Option<Instant>,
    failed_open: Option<(Instant, QueueError)>,
}

/// Longest time between two questions to the sentinels while every command succeeds.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Least time between two questions to the sentinels after failed commands, and between
/// two attempts to open the connections.
pub const RECHECK: Duration = Duration::from_millis(250);

impl RedisConnections {
    /// Connections to `target`, opened on first use.
    pub fn new(
        target: Target,
        pool_size: usize,
        timeout: Duration,
        replication: Option<Replication>,
    ) -> Self {
        RedisConnections {
            target,
            pool: RwLock::new(None),
            opening: tokio::sync::Mutex::new(Attempts::default()),
            next: AtomicUsize::new(0),
            asked_ms: AtomicU64::new(0),
            origin: Instant::now(),
            pool_size: pool_size.max(1),
            timeout,
            replication,
            functions: Functions::default(),
        }
    }

    /// The replicas stored events must reach, if any (`redis.wait_replicas`).
    pub fn replication(&self) -> Option<Replication> {
        self.replication
    }

    /// Whether the sentinels were last asked more than [`REFRESH`] ago (never with a
    /// fixed address).
    fn refresh_due(&self) -> bool {
        if !matches!(self.target, Target::Sentinel { .. }) {
            return false;
        }
        let last = self.asked_ms.load(Ordering::Relaxed);
        self.origin.elapsed().as_millis() as u64 >= last + REFRESH.as_millis() as u64
    }

    fn current(&self) -> Option<Arc<Pool>> {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn pool(&self) -> Result<Arc<Pool>, QueueError> {
        if let Some(pool) = self.current() {
            if self.refresh_due() {
                // A primary cut off from the sentinels may still answer this process: the
                // sentinels are asked now and then even while every command succeeds.
                self.failed().await;
                if let Some(pool) = self.current() {
                    return Ok(pool);
                }
            } else {
                return Ok(pool);
            }
        }
        let mut attempts = self.opening.lock().await;
        if let Some(pool) = self.current() {
            return Ok(pool);
        }
        // Requests queued behind a failed attempt fail with it rather than each trying
        // again at once.
        if let Some((at, e)) = &attempts.failed_open {
            if at.elapsed() < RECHECK {
                return Err(e.clone());
            }
        }
        match self.open().await {
            Ok(pool) => {
                attempts.failed_open = None;
                let pool = Arc::new(pool);
                *self.pool.write().unwrap_or_else(|p| p.into_inner()) = Some(pool.clone());
                Ok(pool)
            }
            Err(e) => {
                attempts.failed_open = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn open(&self) -> Result<Pool, QueueError> {
        let (client, addr) = match &self.target {
            Target::Server(client) => (client.clone(), String::new()),
            Target::Sentinel {
                master,
                sentinels,
                template,
            } => {
                self.asked_ms
                    .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
                let (host, port) = self.ask_sentinels(master, sentinels).await?;
                let info = at_address(template, host.clone(), port);
                let client = redis::Client::open(info).map_err(unavailable)?;
                (client, format!("{host}:{port}"))
            }
        };
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let mut connections = Vec::with_capacity(self.pool_size + 1);
        for _ in 0..self.pool_size + usize::from(self.replication.is_some()) {
            let manager = self
                .timed(client.get_connection_manager_with_config(settings.clone()))
                .await
                .map_err(unavailable)?;
            connections.push(manager);
        }
        if matches!(self.target, Target::Sentinel { .. }) {
            // A sentinel's answer can be stale for a moment after a failover.
            let mut conn = connections[0].clone();
            let role: Value = self
                .timed(redis::cmd("ROLE").query_async(&mut conn))
                .await
                .map_err(unavailable)?;
            let is_primary = matches!(&role, Value::Array(fields)
                if matches!(fields.first(), Some(Value::BulkString(r)) if r == b"master"));
            if !is_primary {
                return Err(QueueError::Unavailable(format!(
                    "the sentinels name {addr} the primary, but it is not (yet)"
                )));
            }
        }
        let writer = if self.replication.is_some() {
            connections.pop()
        } else {
            None
        };
        Ok(Pool {
            client,
            addr,
            connections,
            writer,
        })
    }

    /// The primary's `(host, port)` as most of the sentinels that answer name it (all are
    /// asked at once, so a dead one costs no more than the slowest answer, and a stale one
    /// is outvoted).
    async fn ask_sentinels(
        &self,
        master: &str,
        sentinels: &[redis::Client],
    ) -> Result<(String, u16), QueueError> {
        let asks = sentinels.iter().map(|sentinel| {
            self.timed(async move {
                let mut conn = sentinel.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            })
        });
        let mut votes: Vec<((String, u16), usize)> = Vec::new();
        let mut last = String::from("no sentinel configured");
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(Some(addr)) => match votes.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((addr, 1)),
                },
                Ok(None) => last = format!("a sentinel does not know master {master:?}"),
                Err(e) => last = format!("a sentinel did not answer: {e}"),
            }
        }
        // The most named; on a tie, the first named (the sentinels are listed in order).
        let mut best: Option<((String, u16), usize)> = None;
        for (addr, n) in votes {
            if best.as_ref().map_or(true, |(_, m)| n > *m) {
                best = Some((addr, n));
            }
        }
        best.map(|(addr, _)| addr).ok_or_else(|| {
            QueueError::Unavailable(format!(
                "no sentinel named the primary of {master:?} ({last})"
            ))
        })
    }

    /// After a failed command: with sentinels, asks them again (at most every
    /// [`RECHECK`], one question at a time) and drops the connections when they name
    /// another primary, so the next command reaches the new one.
    pub async fn failed(&self) {
        let Target::Sentinel {
            master, sentinels, ..
        } = &self.target
        else {
            return;
        };
        let Ok(mut attempts) = self.opening.try_lock() else {
            return;
        };
        if attempts.rechecked.is_some_and(|at| at.elapsed() < RECHECK) {
            return;
        }
        attempts.rechecked = Some(Instant::now());
        self.asked_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        let Some(pool) = self.current() else {
            return;
        };
        match self.ask_sentinels(master, sentinels).await {
            Ok((host, port)) if format!("{host}:{port}") != pool.addr => {
                tracing::warn!(
                    from = %pool.addr,
                    to = %format!("{host}:{port}"),
                    "the sentinels name another Redis primary; reconnecting"
                );
                *self.pool.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot ask the sentinels for the Redis primary"),
        }
    }

    /// One of the multiplexed connections, opening them on first use.
    pub async fn conn(&self) -> Result<ConnectionManager, QueueError> {
        let pool = self.pool().await?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % pool.connections.len();
        Ok(pool.connections[i].clone())
    }

    /// The connection for writes followed by `WAIT` (see the module docs); one of the others
    /// without `redis.wait_replicas`.
    pub async fn writer(&self) -> Result<ConnectionManager, QueueError> {
        let pool = self.pool().await?;
        match &pool.writer {
            Some(writer) => Ok(writer.clone()),
            None => self.conn().await,
        }
    }

    /// Every multiplexed connection (but the writer), opening them on first use.
    pub async fn all(&self) -> Result<Vec<ConnectionManager>, QueueError> {
        Ok(self.pool().await?.connections.clone())
    }

    /// A client for the primary, for a connection of its own (a subscription).
    pub async fn client(&self) -> Result<redis::Client, QueueError> {
        Ok(self.pool().await?.client.clone())
    }

    /// `fut`, failed as an I/O error if it takes longer than the command timeout.
    pub async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        timed(self.timeout, fut).await
    }

    /// The command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Where the primary is found, for people (no secrets).
    pub fn describe(&self, prefix: &str, partitions: u16) -> String {
        match &self.target {
            Target::Server(_) => format!("Redis (key prefix {prefix:?}, {partitions} partitions)"),
            Target::Sentinel {
                master, sentinels, ..
            } => format!(
                "Redis primary {master:?} through {} sentinel(s) (key prefix {prefix:?}, {partitions} partitions)",
                sentinels.len()
            ),
        }
    }

    /// Reads the deployment's safety settings and warns about those that can lose data.
    pub async fn check_server(&self) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        let policy: Vec<String> = self
            .timed(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut conn),
            )
            .await
            .unwrap_or_default();
        if let Some(policy) = policy.get(1) {
            if policy != "noeviction" {
                tracing::warn!(
                    policy = %policy,
                    "Redis maxmemory-policy can evict keys and lose queued events; set it to noeviction"
                );
            }
        }
        let aof: Vec<String> = self
            .timed(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendonly")
                    .query_async(&mut conn),
            )
            .await
            .unwrap_or_default();
        if aof.get(1).map(String::as_str) == Some("no") {
            tracing::warn!(
                "Redis appendonly is off: accepted events can be lost if Redis itself crashes"
            );
        }
        if let Some(replication) = self.replication {
            let info: String = self
                .timed(redis::cmd("INFO").arg("replication").query_async(&mut conn))
                .await
                .unwrap_or_default();
            let connected = info
                .lines()
                .find_map(|l| l.strip_prefix("connected_slaves:"))
                .and_then(|n| n.trim().parse::<u32>().ok());
            if let Some(connected) = connected.filter(|n| *n < replication.replicas) {
                tracing::warn!(
                    wait_replicas = replication.replicas,
                    connected,
                    "fewer replicas are connected to the Redis primary than redis.wait_replicas: ingress answers 503 not_replicated until enough are"
                );
            }
        }
        Ok(())
    }
}

/// `template` (credentials, database, TLS settings) for the server at `host:port`.
pub fn at_address(template: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let mut info = template.clone();
    info.addr = match &info.addr {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    info
}

/// `fut`, failed as an I/O error if it takes longer than `timeout`.
pub async fn timed<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from((
            redis::ErrorKind::IoError,
            "Redis command timed out",
        ))),
    }
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

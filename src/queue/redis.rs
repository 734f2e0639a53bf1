//! The Redis backend: [`RedisQueue`], the scripts of [`ScriptQueue`] run by one Redis
//! server (found directly or through Sentinel) over [`RedisConnections`].
//!
//! # Connections
//!
//! [`RedisConnections`] (see [`super::connections`]): a few multiplexed connections to the
//! primary, found at `redis.url` or through Redis Sentinel and followed across a failover.
//! [`super::cluster::ClusterConnections`]: connections to each master of a Redis
//! Cluster, each call routed to its partition's slot and redirects followed.

use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisError, Value};
use secrecy::{ExposeSecret, SecretString};

use super::connections::{timed, Target};
pub use super::connections::{RedisConnections, Replication};
use super::script_queue::{QueueSettings, ScriptQueue};
use super::transport::{function_load, pong, refuses_functions, script_load, Calling, Functions};
pub use super::transport::{Script, ScriptCall, Transport, HELPERS};
use super::QueueError;

/// Settings of the Redis backend: the connection's, and the queue's own.
#[derive(Debug, Clone)]
pub struct RedisQueueConfig {
    /// Connection URL.
    pub url: SecretString,
    /// Number of multiplexed connections.
    pub pool_size: usize,
    /// Per-command timeout.
    pub timeout: Duration,
    /// Replicas that must confirm a stored event before it is reported stored
    /// (`redis.wait_replicas`), if any.
    pub replication: Option<Replication>,
    /// The sentinels that name the primary (`redis.sentinel_*`), if any: `url`'s address
    /// is then not used.
    pub sentinel: Option<SentinelSettings>,
    /// The seed nodes of a Redis Cluster (`redis.cluster_nodes`); when not empty, `url`
    /// is not used and the queue is a [`super::cluster::ClusterQueue`].
    pub cluster_nodes: Vec<SecretString>,
    /// What the scripts are called with (prefix, partitions, lease, limits, retention).
    pub queue: QueueSettings,
}

/// `redis.sentinel_master` and `redis.sentinel_nodes`.
#[derive(Clone, Debug)]
pub struct SentinelSettings {
    /// The primary's name in the sentinels' configuration.
    pub master: String,
    /// The sentinels' URLs.
    pub nodes: Vec<SecretString>,
}

/// The production queue: the scripts run by a Redis server.
pub type RedisQueue = ScriptQueue<RedisConnections>;

pub(super) fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// Whether `e` is a store's answer to an `FCALL` that it holds no function of that name
/// (it lost its libraries, or never had them), or that it takes no `FCALL` (a Redis before
/// 7.0, or an ACL that refuses it): the call did nothing.
fn is_missing_function(e: &RedisError) -> bool {
    (e.kind() == redis::ErrorKind::ResponseError
        && e.detail()
            .is_some_and(|d| d.starts_with("Function not found")))
        || refuses_functions(e)
}

/// Whether a call sent as `calling` was refused with `e` because the store does not hold
/// the script (it did nothing): it goes again once the script is loaded, or with its
/// source (see [`reload`]).
pub(super) fn is_lost(calling: Calling, e: &RedisError) -> bool {
    match calling {
        Calling::Function => is_missing_function(e),
        Calling::Sha => e.kind() == redis::ErrorKind::NoScriptError,
        Calling::Source => false,
    }
}

/// After calls sent as `calling` were lost (see [`is_lost`]), the first with `e`: how to
/// send them again (see [`Functions::reload`]), a library loaded on `conn`.
pub(super) async fn reload<C: redis::aio::ConnectionLike + Clone + Send>(
    functions: &Functions,
    conn: &C,
    timeout: Duration,
    script: &Script,
    calling: Calling,
    e: &RedisError,
) -> Result<Calling, RedisError> {
    functions
        .reload(script, calling, e, || async {
            let mut conn = conn.clone();
            let load = function_load(script);
            functions.after_load(timed(timeout, load.query_async::<Value>(&mut conn)).await)
        })
        .await
}

impl RedisQueue {
    /// Checks the URL; connections are opened on first use, so this succeeds while Redis
    /// is down.
    pub fn new(config: RedisQueueConfig) -> Result<Self, QueueError> {
        Self::new_with_helpers(config, HELPERS)
    }

    /// As [`RedisQueue::new`], with other helpers in front of every script: for tests that
    /// run the scripts with a variant of them (e.g. one that fails after some write).
    #[doc(hidden)]
    pub fn new_with_helpers(config: RedisQueueConfig, helpers: &str) -> Result<Self, QueueError> {
        let nodes: Vec<String> = config
            .sentinel
            .as_ref()
            .map(|s| {
                s.nodes
                    .iter()
                    .map(|n| n.expose_secret().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let sentinel = config
            .sentinel
            .as_ref()
            .map(|s| (s.master.as_str(), nodes.as_slice()));
        let target = Target::new(config.url.expose_secret(), sentinel)?;
        let transport =
            RedisConnections::new(target, config.pool_size, config.timeout, config.replication);
        Ok(ScriptQueue::with_helpers(config.queue, transport, helpers))
    }
}

/// Why a call of [`RedisConnections::replicated`] has no reply.
pub(super) enum Sent {
    /// The call's own error reply (`Function not found`: it did nothing; in a cluster, a
    /// redirect).
    Refused(RedisError),
    /// The call failed, or its writes were not confirmed by the replicas.
    Failed(QueueError),
}

/// Sends `calls`, then a write of its own and `WAIT`, as one pipeline on `conn`: the
/// connection either carries them all or fails them all, so `WAIT` waits for these calls'
/// writes, never for another connection's. The write before it makes the offset `WAIT`
/// waits for the whole replication stream's at that point, so it also covers what an
/// earlier request stored through another connection (an `Idempotency-Key` retried after
/// a 503 is answered with the event stored then). The calls may be of several partitions
/// (on a Redis Cluster, several slots of one master): that write is made once per
/// partition, so a slot that has just moved away refuses only its own calls and mark.
pub(super) async fn send_replicated<C: redis::aio::ConnectionLike + Clone>(
    conn: &C,
    timeout: Duration,
    script: &Script,
    calls: &[&ScriptCall],
    calling: Calling,
    replication: Replication,
) -> Vec<Result<Value, Sent>> {
    if calls.is_empty() {
        return Vec::new();
    }
    let mut pipe = redis::pipe();
    for call in calls {
        pipe.add_command(script_cmd(script, call, calling));
    }
    // One mark per partition of the calls: on a Redis Cluster one of them may have just
    // moved to another node, which refuses its mark (and its calls) while the others
    // are still written here.
    let mut bases: Vec<&str> = calls.iter().map(|(base, _)| base.as_str()).collect();
    bases.sort_unstable();
    bases.dedup();
    for base in &bases {
        pipe.cmd("SET")
            .arg(format!("{base}:replicated"))
            .arg(1)
            .arg("PX")
            .arg(REPLICATED_MARK_MS);
    }
    pipe.cmd("WAIT")
        .arg(replication.replicas)
        .arg(replication.timeout.as_millis() as u64);
    let mut conn = conn.clone();
    let sent = timed(
        timeout,
        redis::aio::ConnectionLike::req_packed_commands(&mut conn, &pipe, 0, pipe.len()),
    )
    .await;
    let commands = calls.len() + bases.len() + 1;
    let replies = match sent {
        Ok(replies) if replies.len() == commands => replies,
        Ok(replies) => {
            let e = QueueError::Protocol(format!(
                "a pipeline of {commands} commands answered {}",
                replies.len()
            ));
            return calls.iter().map(|_| Err(Sent::Failed(e.clone()))).collect();
        }
        Err(e) => {
            let e = unavailable(e);
            return calls.iter().map(|_| Err(Sent::Failed(e.clone()))).collect();
        }
    };
    answer_replicated(replies, calls.len(), replication)
}

/// The answers of `calls` calls sent by [`send_replicated`], from the pipeline's replies:
/// the calls', then the marks', then `WAIT`'s.
fn answer_replicated(
    mut replies: Vec<Value>,
    calls: usize,
    replication: Replication,
) -> Vec<Result<Value, Sent>> {
    let confirmed = match replies.pop() {
        Some(Value::Int(n)) => Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
        Some(other) => Err(unavailable(format!("WAIT answered {other:?}"))),
        None => Err(unavailable("WAIT answered nothing")),
    };
    // The writes that move the offset WAIT waits for past every call (and past the
    // writes of other connections that a duplicate's answer relies on): WAIT counts up to
    // this connection's last write, so one mark written is enough. All refused (OOM, a
    // failed save, too few replicas, every slot moved), WAIT would confirm only an
    // earlier write.
    let marks = replies.split_off(calls);
    let marked = if marks.iter().any(|m| matches!(m, Value::Okay)) {
        Ok(())
    } else {
        Err(unavailable(format!(
            "the write before WAIT was refused: {:?}",
            marks.first().unwrap_or(&Value::Nil)
        )))
    };
    let confirmed = marked.and(confirmed);
    replies
        .into_iter()
        .map(|reply| match reply.extract_error() {
            Err(e) => Err(Sent::Refused(e)),
            Ok(value) => match &confirmed {
                Ok(n) if *n >= replication.replicas => Ok(value),
                Ok(n) => Err(Sent::Failed(QueueError::NotReplicated {
                    wanted: replication.replicas,
                    confirmed: *n,
                })),
                Err(e) => Err(Sent::Failed(e.clone())),
            },
        })
        .collect()
}

/// How long the key written before each `WAIT` lives (ms): it only moves the replication
/// offset on.
const REPLICATED_MARK_MS: u64 = 60_000;

impl RedisConnections {
    /// Every call as its own command on one multiplexed connection: sent in order and
    /// carried in one round trip, each answered (or failed) alone. Calls Redis answered
    /// `Function not found` or `NOSCRIPT` (it lost the script) did nothing: they are sent
    /// again once the script is loaded, or with its source.
    async fn run_script_once(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let conn = match self.conn().await {
            Ok(conn) => conn,
            Err(e) => return calls.iter().map(|_| Err(e.clone())).collect(),
        };
        let run = |calling: Calling, call: &ScriptCall| {
            let mut conn = conn.clone();
            let cmd = script_cmd(script, call, calling);
            async move { self.timed(cmd.query_async::<Value>(&mut conn)).await }
        };
        let calling = self.functions.calling();
        let replies = futures::future::join_all(calls.iter().map(|call| run(calling, call))).await;
        let lost: Vec<usize> = (0..calls.len())
            .filter(|&i| matches!(&replies[i], Err(e) if is_lost(calling, e)))
            .collect();
        let reloaded = match lost.first().map(|&i| &replies[i]) {
            Some(Err(first)) => Some(
                reload(
                    &self.functions,
                    &conn,
                    self.timeout(),
                    script,
                    calling,
                    first,
                )
                .await,
            ),
            _ => None,
        };
        let mut replies: Vec<_> = replies
            .into_iter()
            .map(|reply| reply.map_err(unavailable))
            .collect();
        match reloaded {
            Some(Ok(calling)) => {
                let again =
                    futures::future::join_all(lost.iter().map(|&i| run(calling, &calls[i]))).await;
                for (&i, reply) in lost.iter().zip(again) {
                    replies[i] = reply.map_err(unavailable);
                }
            }
            Some(Err(e)) => {
                let e = unavailable(e);
                for &i in &lost {
                    replies[i] = Err(e.clone());
                }
            }
            None => {}
        }
        replies
    }

    /// The calls, a write of its own and `WAIT` in one pipeline on one connection (see
    /// [`send_replicated`]); calls Redis answered `Function not found` or `NOSCRIPT` are
    /// sent again once the script is loaded (or with its source), in a pipeline of their
    /// own with its own `WAIT`.
    async fn run_script_replicated_once(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let Some(replication) = self.replication() else {
            return self.run_script_once(script, calls).await;
        };
        let conn = match self.writer().await {
            Ok(conn) => conn,
            Err(e) => return calls.iter().map(|_| Err(e.clone())).collect(),
        };
        let all: Vec<&ScriptCall> = calls.iter().collect();
        let timeout = self.timeout();
        let calling = self.functions.calling();
        let mut replies = send_replicated(&conn, timeout, script, &all, calling, replication).await;
        let lost: Vec<usize> = (0..calls.len())
            .filter(|&i| matches!(&replies[i], Err(Sent::Refused(e)) if is_lost(calling, e)))
            .collect();
        if let Some(Err(Sent::Refused(first))) = lost.first().map(|&i| &replies[i]) {
            let again: Vec<&ScriptCall> = lost.iter().map(|&i| &calls[i]).collect();
            let again = match reload(&self.functions, &conn, timeout, script, calling, first).await
            {
                Ok(calling) => {
                    send_replicated(&conn, timeout, script, &again, calling, replication).await
                }
                Err(e) => {
                    let e = unavailable(e);
                    again.iter().map(|_| Err(Sent::Failed(e.clone()))).collect()
                }
            };
            for (i, reply) in lost.into_iter().zip(again) {
                replies[i] = reply;
            }
        }
        replies
            .into_iter()
            .map(|reply| {
                reply.map_err(|e| match e {
                    Sent::Refused(e) => unavailable(e),
                    Sent::Failed(e) => e,
                })
            })
            .collect()
    }

    async fn command_once(&self, cmd: &redis::Cmd) -> Result<Value, QueueError> {
        let mut conn = self.conn().await?;
        self.timed(cmd.query_async(&mut conn))
            .await
            .map_err(unavailable)
    }

    async fn ping_once(&self) -> Result<(), QueueError> {
        let connections = self.all().await?;
        let pings = connections.iter().map(|conn| async move {
            let mut conn = conn.clone();
            let reply: Value = self
                .timed(redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(unavailable)?;
            pong(reply)
        });
        futures::future::try_join_all(pings).await.map(|_| ())
    }

    /// On a connection of its own (a subscribed connection carries nothing else).
    async fn listen_once(
        &self,
        channel: &str,
        subscribed: &(dyn Fn() + Send + Sync),
        message: &(dyn for<'p> Fn(&'p [u8]) + Send + Sync),
    ) -> Option<QueueError> {
        match self.client().await {
            Ok(client) => listen_on(&client, self.timeout(), channel, subscribed, message).await,
            Err(e) => Some(e),
        }
    }
}

/// How often a subscription is pinged to find out a connection that went half-open.
const SUBSCRIPTION_CHECK: Duration = Duration::from_secs(15);

/// Subscribes to `channel` on a connection of its own to `client`'s server: `subscribed`
/// is called once the subscription holds, then `message` for each announcement; returns
/// when the subscription breaks.
pub(super) async fn listen_on(
    client: &redis::Client,
    timeout: Duration,
    channel: &str,
    subscribed: &(dyn Fn() + Send + Sync),
    message: &(dyn for<'p> Fn(&'p [u8]) + Send + Sync),
) -> Option<QueueError> {
    use futures::StreamExt;
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return Some(unavailable(e)),
        Err(_) => return Some(unavailable("subscribing timed out")),
    };
    subscribed();
    let (mut sink, mut messages) = pubsub.split();
    // A connection that went half-open (a NAT or a failover that sent no reset) ends
    // no stream: a ping now and then finds it out, and the caller subscribes again.
    let mut check = tokio::time::interval(SUBSCRIPTION_CHECK);
    check.tick().await;
    loop {
        tokio::select! {
            received = messages.next() => match received {
                Some(msg) => message(msg.get_payload_bytes()),
                None => return Some(unavailable("the subscription ended")),
            },
            _ = check.tick() => {
                match tokio::time::timeout(timeout, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(unavailable(e)),
                    Err(_) => return Some(unavailable("the subscription stopped answering")),
                }
            }
        }
    }
}

/// Each method runs as its `_once` namesake above; after a failure the primary is looked
/// for again ([`RedisConnections::failed`]: with Sentinel, a failover is followed).
#[async_trait]
impl Transport for RedisConnections {
    async fn run_script(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let replies = self.run_script_once(script, calls).await;
        if replies.iter().any(Result::is_err) {
            self.failed().await;
        }
        replies
    }

    async fn run_script_replicated(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let replies = self.run_script_replicated_once(script, calls).await;
        if replies.iter().any(Result::is_err) {
            self.failed().await;
        }
        replies
    }

    async fn command(&self, cmd: &redis::Cmd) -> Result<Value, QueueError> {
        let reply = self.command_once(cmd).await;
        if reply.is_err() {
            self.failed().await;
        }
        reply
    }

    /// As the trait's, in one pipeline on one connection (one request through the
    /// multiplexed connection, where a command each costs the gateway a request each).
    async fn read_each(&self, reads: &[redis::Cmd]) -> Vec<Result<Value, QueueError>> {
        if reads.is_empty() {
            return Vec::new();
        }
        let mut pipe = redis::pipe();
        for cmd in reads {
            pipe.add_command(cmd.clone());
        }
        let reply = match self.conn().await {
            Ok(mut conn) => self
                .timed(redis::aio::ConnectionLike::req_packed_commands(
                    &mut conn,
                    &pipe,
                    0,
                    reads.len(),
                ))
                .await
                .map_err(unavailable),
            Err(e) => Err(e),
        };
        match reply {
            // (each command's error reply comes in its place, as a value)
            Ok(values) if values.len() == reads.len() => values
                .into_iter()
                .map(|value| match value {
                    Value::ServerError(e) if e.code() == "WRONGTYPE" => Ok(Value::Nil),
                    Value::ServerError(e) => Err(QueueError::Unavailable(format!(
                        "{} {}",
                        e.code(),
                        e.details().unwrap_or_default()
                    ))),
                    value => Ok(value),
                })
                .collect(),
            Ok(values) => {
                let e = QueueError::Protocol(format!(
                    "{} reads answered {} values",
                    reads.len(),
                    values.len()
                ));
                reads.iter().map(|_| Err(e.clone())).collect()
            }
            Err(e) => {
                self.failed().await;
                reads.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    fn describe(&self, prefix: &str, partitions: u16) -> String {
        RedisConnections::describe(self, prefix, partitions)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let reply = self.ping_once().await;
        if reply.is_err() {
            self.failed().await;
        }
        reply
    }

    async fn listen(
        &self,
        channel: &str,
        subscribed: &(dyn Fn() + Send + Sync),
        message: &(dyn for<'p> Fn(&'p [u8]) + Send + Sync),
    ) -> Option<QueueError> {
        let ended = self.listen_once(channel, subscribed, message).await;
        if ended.is_some() {
            self.failed().await;
        }
        ended
    }

    async fn check_deployment(&self) -> Result<(), QueueError> {
        self.check_server().await
    }

    async fn load_scripts(&self, scripts: &[&Script]) -> Result<(), QueueError> {
        let mut conn = self.conn().await?;
        for script in scripts {
            if self.functions.calling() == Calling::Function {
                let loaded = self
                    .timed(function_load(script).query_async::<Value>(&mut conn))
                    .await;
                if self.functions.after_load(loaded).map_err(unavailable)? == Calling::Function {
                    continue;
                }
            }
            self.timed(script_load(script).query_async::<Value>(&mut conn))
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// One server holds every partition.
    fn scripts_span_partitions(&self) -> bool {
        true
    }
}

/// One call of `script`, as `calling` says (`FCALL`, `EVALSHA` or `EVAL`); `KEYS[1]` is
/// the partition's ready set, which routes the call.
pub(super) fn script_cmd(
    script: &Script,
    (base, args): &ScriptCall,
    calling: Calling,
) -> redis::Cmd {
    let (command, script) = match calling {
        Calling::Function => ("FCALL", script.name()),
        Calling::Sha => ("EVALSHA", script.sha()),
        Calling::Source => ("EVAL", script.plain()),
    };
    let mut cmd = redis::cmd(command);
    cmd.arg(script).arg(1).arg(format!("{base}:ready"));
    for a in args {
        cmd.arg(a.as_slice());
    }
    cmd
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use redis::Value;

    use super::{answer_replicated, Sent};
    use crate::queue::connections::Replication;
    use crate::queue::QueueError;

    fn moved() -> Value {
        let moved = redis::parse_redis_value(b"-MOVED 3999 127.0.0.1:7001\r\n").unwrap();
        assert!(matches!(moved, Value::ServerError(_)), "{moved:?}");
        moved
    }

    const ONE_REPLICA: Replication = Replication {
        replicas: 1,
        timeout: Duration::from_millis(100),
    };

    #[test]
    fn a_slot_that_moved_refuses_only_its_own_calls() {
        // calls of two slots, the first moved away: its mark is refused, the other's holds
        let replies = vec![moved(), Value::Int(1), moved(), Value::Okay, Value::Int(1)];
        let answers = answer_replicated(replies, 2, ONE_REPLICA);
        assert!(matches!(answers[0], Err(Sent::Refused(_))));
        assert!(matches!(answers[1], Ok(Value::Int(1))));
    }

    #[test]
    fn no_mark_written_or_too_few_replicas_confirms_nothing() {
        let replies = vec![Value::Int(1), moved(), Value::Int(1)];
        let answers = answer_replicated(replies, 1, ONE_REPLICA);
        assert!(matches!(
            answers[0],
            Err(Sent::Failed(QueueError::Unavailable(_)))
        ));
        let replies = vec![Value::Int(1), Value::Okay, Value::Int(0)];
        let answers = answer_replicated(replies, 1, ONE_REPLICA);
        assert!(matches!(
            answers[0],
            Err(Sent::Failed(QueueError::NotReplicated {
                wanted: 1,
                confirmed: 0
            }))
        ));
    }
}

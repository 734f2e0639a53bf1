//! The connections of a process to a Redis Cluster (`redis.cluster_nodes`), and the
//! routing of every script call and command to the master of its key's slot.
//!
//! # Routing
//!
//! The slot map comes from `CLUSTER SLOTS`, asked of every known node at once (the seeds
//! and the masters already known); the map most of them give wins, so a node that has not
//! heard of a failover yet is outvoted. Each master gets multiplexed connections of its
//! own (`redis.pool_size` spread over the masters, at least one each; opened on first use,
//! so a dead master fails only the calls of its own slots) and, with `redis.wait_replicas`,
//! one more for the writes followed by `WAIT`. A partition's keys share one hash tag, so each script call goes to one master,
//! as a command of its own; the calls of one pass over the partitions go out concurrently.
//!
//! Redirects are followed within the command timeout:
//!
//! - `MOVED`: the slot has a new owner; the map is patched at once and asked again.
//! - `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`: the call did nothing; sent again
//!   after a short backoff.
//! - `ASK` (the slot is being moved and the call's first key is already on the importing
//!   master): a plain single-key command follows it (`ASKING`, then the command). A script
//!   does **not**: on the importing master, with `ASKING`, it would read the keys of its
//!   partition that are still on the old master as missing, and act on that (a claim would
//!   drop a delivery whose event record has not arrived yet). It backs off instead until
//!   the move is finished and the new owner answers it. On the old master, a script that
//!   reaches a key already moved fails with an error before it writes anything that
//!   depends on it (every script reads and checks before it writes; see
//!   [`super::script_queue`], "Partial failures"), and is sent again later.
//! - An I/O error or a timeout is not retried here, since the call may have run; the caller
//!   retries as it does on a single server (ingress answers 503, the worker backs off the
//!   partition). The map is asked for again (at most every [`RECHECK`]), and every
//!   [`REFRESH`] while all goes well.
//!
//! # Why not the `redis` crate's cluster client
//!
//! It follows `ASK` for scripts, which breaks the queue's scripts during a live resharding
//! (above), and it sends a request again after a reconnection, running a script twice
//! whose first run may have completed. Nor is it faster (`cargo bench --bench relay --
//! cluster-client`: 64 tasks sending `INCR` over 64 hash tags to a 3-master cluster on
//! this 2-core machine, each client in turn, three rounds): its async cluster connection
//! made 185,000–189,000 commands/s at 6.2–6.3 µs of client CPU each; this module
//! 312,000–327,000/s at 3.5–3.7 µs with one connection per master, and 198,000–214,000/s
//! with four (the commands of many tasks pipelined on one connection cost Redis less).
//! So `redis.pool_size` connections are spread over the masters, at least one each. A
//! pooled client (`deadpool-redis`) would add a checkout per command, which is what the
//! multiplexed connections of [`super::connections`] were chosen over.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, Value};

use secrecy::ExposeSecret;

use super::connections::{at_address, timed, Replication};
use super::redis::{is_lost, script_cmd, send_replicated, unavailable, RedisQueueConfig, Sent};
use super::script_queue::ScriptQueue;
use super::store::key_slot;
use super::transport::{
    function_load, pong, script_load, Calling, Functions, Script, ScriptCall, Transport, HELPERS,
};
use super::QueueError;

/// The production queue on a Redis Cluster: each partition's scripts run by the master of
/// its slot.
pub type ClusterQueue = ScriptQueue<ClusterConnections>;

impl ClusterQueue {
    /// Checks the seed URLs (`config.cluster_nodes`); connections are opened on first use,
    /// so this succeeds while the cluster is down.
    pub fn new(config: RedisQueueConfig) -> Result<Self, QueueError> {
        let seeds: Vec<String> = config
            .cluster_nodes
            .iter()
            .map(|n| n.expose_secret().to_string())
            .collect();
        let transport =
            ClusterConnections::new(&seeds, config.pool_size, config.timeout, config.replication)?;
        Ok(ScriptQueue::with_helpers(config.queue, transport, HELPERS))
    }
}

/// Slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// Longest time between two readings of the slot map while every command succeeds.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Least time between two readings of the slot map after failures, and between two
/// attempts to connect to one master.
pub const RECHECK: Duration = Duration::from_millis(250);

/// First wait before a call that was redirected or refused for now is sent again; it
/// doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Longest wait between two attempts of a call.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// One master and its connections, opened on first use.
struct Master {
    /// `host:port`, as the cluster names it.
    addr: String,
    client: redis::Client,
    /// The open connections, read without waiting by every call.
    open: RwLock<Option<Arc<MasterConnections>>>,
    /// Held while they are opened: the last failure to open them.
    opening: tokio::sync::Mutex<Option<(Instant, QueueError)>>,
}

impl Master {
    /// Its connections, if they are open.
    fn opened(&self) -> Option<Arc<MasterConnections>> {
        self.open.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct MasterConnections {
    connections: Vec<MultiplexedConnection>,
    /// With `redis.wait_replicas`: the connection for the writes followed by `WAIT`
    /// (Redis reads nothing more from a connection blocked in `WAIT`).
    writer: Option<MultiplexedConnection>,
}

/// Which master serves each slot.
struct SlotMap {
    masters: Vec<Arc<Master>>,
    /// Index into `masters` of each slot's owner; `u16::MAX` for a slot nobody serves.
    owners: Vec<u16>,
    /// When it was read from the cluster, for [`REFRESH`].
    read_at: Instant,
}

const NO_OWNER: u16 = u16::MAX;

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<&Arc<Master>> {
        match self.owners.get(usize::from(slot)) {
            Some(&i) if i != NO_OWNER => self.masters.get(usize::from(i)),
            _ => None,
        }
    }
}

/// The connections to a Redis Cluster's masters (see the module docs).
pub struct ClusterConnections {
    /// The configured nodes: where the slot map is first asked for.
    seeds: Vec<ConnectionInfo>,
    map: RwLock<Option<Arc<SlotMap>>>,
    /// Held while the slot map is read; when it was last asked for.
    reading: tokio::sync::Mutex<Option<Instant>>,
    next: std::sync::atomic::AtomicUsize,
    /// `redis.pool_size`: the connections of the process, spread over the masters.
    pool_size: usize,
    /// Connections of each master: `pool_size` over the masters' count, at least one.
    per_master: std::sync::atomic::AtomicUsize,
    timeout: Duration,
    replication: Option<Replication>,
    /// Whether the masters take the scripts as functions.
    functions: Functions,
}

impl ClusterConnections {
    /// Connections to the cluster that `seeds` (`redis://host:port` URLs, with the
    /// credentials every node takes) belong to, opened on first use.
    pub fn new(
        seeds: &[String],
        pool_size: usize,
        timeout: Duration,
        replication: Option<Replication>,
    ) -> Result<Self, QueueError> {
        let seeds = seeds
            .iter()
            .map(|url| {
                url.as_str().into_connection_info().map_err(|e| {
                    QueueError::Unavailable(format!(
                        "invalid Redis URL in redis.cluster_nodes: {e}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(QueueError::Unavailable(
                "redis.cluster_nodes names no node".into(),
            ));
        }
        Ok(ClusterConnections {
            seeds,
            map: RwLock::new(None),
            reading: tokio::sync::Mutex::new(None),
            next: std::sync::atomic::AtomicUsize::new(0),
            pool_size: pool_size.max(1),
            per_master: std::sync::atomic::AtomicUsize::new(1),
            timeout,
            replication,
            functions: Functions::default(),
        })
    }

    fn current(&self) -> Option<Arc<SlotMap>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The slot map, read on first use and again every [`REFRESH`].
    async fn slot_map(&self) -> Result<Arc<SlotMap>, QueueError> {
        if let Some(map) = self.current() {
            if map.read_at.elapsed() >= REFRESH {
                self.reread(false).await;
            }
            return Ok(self.current().unwrap_or(map));
        }
        self.reread(true).await;
        self.current().ok_or_else(|| {
            QueueError::Unavailable("no node of the Redis Cluster answered CLUSTER SLOTS".into())
        })
    }

    /// Reads the slot map again, unless another task is reading it or it was read less
    /// than [`RECHECK`] ago (`wait`: wait for the reading under way instead of skipping).
    async fn reread(&self, wait: bool) {
        let mut last = if wait {
            self.reading.lock().await
        } else {
            match self.reading.try_lock() {
                Ok(last) => last,
                Err(_) => return,
            }
        };
        if last.is_some_and(|at| at.elapsed() < RECHECK) {
            return;
        }
        *last = Some(Instant::now());
        match self.read_map().await {
            Ok(map) => {
                *self.map.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(map));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the Redis Cluster's slot map"),
        }
    }

    /// Asks every known node for `CLUSTER SLOTS` at once and builds the map most of them
    /// give, keeping the connections of the masters it still names.
    async fn read_map(&self) -> Result<SlotMap, QueueError> {
        let known = self.current();
        let mut asked: Vec<ConnectionInfo> = self.seeds.clone();
        if let Some(map) = &known {
            for master in &map.masters {
                let info = master.client.get_connection_info().clone();
                if !asked.iter().any(|a| a.addr == info.addr) {
                    asked.push(info);
                }
            }
        }
        let asks = asked.iter().map(|info| async move {
            let client = redis::Client::open(info.clone())?;
            let mut conn = timed(self.timeout, client.get_multiplexed_async_connection()).await?;
            let reply: Value = timed(
                self.timeout,
                redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn),
            )
            .await?;
            Ok::<_, RedisError>((info.clone(), reply))
        });
        let mut views: Vec<(Ranges, ConnectionInfo, usize)> = Vec::new();
        let mut last = String::new();
        // Answers are taken as they come: once most of the nodes asked agree, a node that
        // does not answer (dead, or cut off) holds nothing up.
        let majority = asked.len() / 2 + 1;
        let mut answers: futures::stream::FuturesUnordered<_> = asks.collect();
        while let Some(answer) = futures::StreamExt::next(&mut answers).await {
            match answer
                .map_err(unavailable)
                .and_then(|(info, reply)| parse_slots(reply, &info).map(|ranges| (info, ranges)))
            {
                Ok((info, ranges)) => match views.iter_mut().find(|(r, _, _)| *r == ranges) {
                    Some((_, _, n)) => *n += 1,
                    None => views.push((ranges, info, 1)),
                },
                Err(e) => last = e.to_string(),
            }
            if views.iter().any(|(_, _, n)| *n >= majority) {
                break;
            }
        }
        let mut best: Option<(Ranges, ConnectionInfo, usize)> = None;
        for view in views {
            if best.as_ref().map_or(true, |(_, _, n)| view.2 > *n) {
                best = Some(view);
            }
        }
        let Some((ranges, template, _)) = best else {
            return Err(QueueError::Unavailable(format!(
                "no node of the Redis Cluster answered CLUSTER SLOTS ({last})"
            )));
        };
        let mut masters: Vec<Arc<Master>> = Vec::new();
        let mut owners = vec![NO_OWNER; SLOTS];
        for (start, end, addr) in ranges {
            let index = match masters.iter().position(|m| m.addr == addr) {
                Some(i) => i,
                None => {
                    let kept = known
                        .as_ref()
                        .and_then(|map| map.masters.iter().find(|m| m.addr == addr).cloned());
                    let master = match kept {
                        Some(master) => master,
                        None => Arc::new(self.master(&template, &addr)?),
                    };
                    masters.push(master);
                    masters.len() - 1
                }
            };
            for slot in start..=end.min(SLOTS as u16 - 1) {
                owners[usize::from(slot)] = index as u16;
            }
        }
        self.per_master.store(
            (self.pool_size / masters.len().max(1)).max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(SlotMap {
            masters,
            owners,
            read_at: Instant::now(),
        })
    }

    /// A master at `addr` (`host:port`), reached with `template`'s credentials and TLS.
    fn master(&self, template: &ConnectionInfo, addr: &str) -> Result<Master, QueueError> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| QueueError::Protocol(format!("a node address {addr:?} without port")))?;
        let info = at_address(template, host, port);
        Ok(Master {
            addr: addr.to_string(),
            client: redis::Client::open(info).map_err(unavailable)?,
            open: RwLock::new(None),
            opening: tokio::sync::Mutex::new(None),
        })
    }

    /// `master`'s connections, opened on first use (at most one attempt every
    /// [`RECHECK`]: requests queued behind a failed attempt fail with it).
    async fn connections(&self, master: &Master) -> Result<Arc<MasterConnections>, QueueError> {
        if let Some(connections) = master.opened() {
            return Ok(connections);
        }
        let mut failed = master.opening.lock().await;
        // Opened by the task this one waited for.
        if let Some(connections) = master.opened() {
            return Ok(connections);
        }
        if let Some((at, e)) = &*failed {
            if at.elapsed() < RECHECK {
                return Err(e.clone());
            }
        }
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let count = self.per_master.load(std::sync::atomic::Ordering::Relaxed);
        // All at once: a master that does not answer costs one timeout, not one each.
        let opens = (0..count + usize::from(self.replication.is_some())).map(|_| {
            timed(
                self.timeout,
                master
                    .client
                    .get_multiplexed_async_connection_with_config(&settings),
            )
        });
        let mut connections = match futures::future::try_join_all(opens).await {
            Ok(connections) => connections,
            Err(e) => {
                let e = QueueError::Unavailable(format!(
                    "cannot connect to Redis Cluster master {}: {e}",
                    master.addr
                ));
                *failed = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        let writer = if self.replication.is_some() {
            connections.pop()
        } else {
            None
        };
        let connections = Arc::new(MasterConnections {
            connections,
            writer,
        });
        *failed = None;
        *master.open.write().unwrap_or_else(|p| p.into_inner()) = Some(connections.clone());
        Ok(connections)
    }

    /// The master of `slot` and its connections.
    async fn master_for(&self, slot: u16) -> Result<Picked, QueueError> {
        let map = self.slot_map().await?;
        let Some(master) = map.owner(slot).cloned() else {
            self.reread(false).await;
            return Err(QueueError::Unavailable(format!(
                "no master of the Redis Cluster serves slot {slot}"
            )));
        };
        let connections = match self.connections(&master).await {
            Ok(connections) => connections,
            Err(e) => {
                // A master that cannot be reached may have been replaced.
                self.reread(false).await;
                return Err(e);
            }
        };
        Ok(Picked {
            master,
            connections,
        })
    }

    /// After an I/O error or a timeout on `picked`'s connections: they are dropped (the
    /// next call opens new ones, which fails at once while the master is down) and the
    /// slot map is read again (a replica may have taken over).
    async fn broken(&self, picked: &Picked) {
        {
            let mut open = picked
                .master
                .open
                .write()
                .unwrap_or_else(|p| p.into_inner());
            // Unless they were opened again meanwhile.
            if open
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &picked.connections))
            {
                *open = None;
            }
        }
        self.reread(false).await;
    }

    /// Patches the map after `MOVED`: `slot` is now served by `addr`.
    async fn moved(&self, slot: u16, addr: &str) {
        let Some(map) = self.current() else {
            return;
        };
        let index = match map.masters.iter().position(|m| m.addr == addr) {
            Some(i) => i,
            None => {
                // A master not known yet: the whole map is read again.
                self.reread(true).await;
                return;
            }
        };
        let mut owners = map.owners.clone();
        owners[usize::from(slot)] = index as u16;
        let patched = SlotMap {
            masters: map.masters.clone(),
            owners,
            read_at: map.read_at,
        };
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(patched));
    }

    /// Sends `cmd` (built afresh for each attempt by `build`, for the way `script`, if it
    /// is a call of one, is called: see [`Sending`]) to the master of `slot`, following
    /// redirects until the command timeout (see the module docs).
    async fn send(
        &self,
        slot: u16,
        follow_ask: bool,
        script: Option<&Script>,
        build: impl Fn(Calling) -> redis::Cmd,
    ) -> Result<Value, QueueError> {
        let deadline = Instant::now() + self.timeout;
        let mut sending = Sending::new(&self.functions, script);
        let mut backoff = FIRST_BACKOFF;
        let mut ask: Option<String> = None;
        let mut redirects = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut picked = None;
            let reply = match ask.take() {
                Some(addr) => self.asking(&addr, &build(sending.calling), remaining).await,
                None => {
                    let found = self.master_for(slot).await?;
                    let mut conn = found.conn(&self.next);
                    picked = Some(found);
                    timed(
                        remaining,
                        build(sending.calling).query_async::<Value>(&mut conn),
                    )
                    .await
                    .map_err(Refusal::from)
                }
            };
            let e = match reply {
                Ok(value) => return Ok(value),
                Err(Refusal::Failed(e)) => return Err(e),
                Err(Refusal::Redis(e)) => e,
            };
            match self.next_step(&e, follow_ask, &mut sending).await {
                Step::Now => {
                    // A second redirect in a row: the cluster is changing its mind (a
                    // failover or a move under way); wait a little before the next.
                    redirects += 1;
                    if redirects > 1 && !back_off(&mut backoff, deadline).await {
                        return Err(unavailable(e));
                    }
                }
                Step::Ask(addr) => ask = Some(addr),
                Step::Later => {
                    if !back_off(&mut backoff, deadline).await {
                        return Err(unavailable(e));
                    }
                }
                Step::Fail => {
                    if is_broken(&e) {
                        match &picked {
                            Some(picked) => self.broken(picked).await,
                            None => self.reread(false).await,
                        }
                    }
                    return Err(unavailable(e));
                }
            }
        }
    }

    /// What to do after `e`, the error reply of a call sent as `sending` says.
    async fn next_step(&self, e: &RedisError, follow_ask: bool, sending: &mut Sending<'_>) -> Step {
        if let Some(script) = sending.script.filter(|_| !sending.reloaded) {
            if is_lost(sending.calling, e) {
                sending.reloaded = true;
                return match self.reload(script, sending.calling, e).await {
                    Ok(calling) => {
                        sending.calling = calling;
                        Step::Now
                    }
                    Err(_) => Step::Later,
                };
            }
        }
        match e.kind() {
            ErrorKind::Moved => {
                if let Some((addr, moved)) = e.redirect_node() {
                    self.moved(moved, addr).await;
                } else {
                    self.reread(true).await;
                }
                Step::Now
            }
            ErrorKind::Ask if follow_ask => match e.redirect_node() {
                Some((addr, _)) => Step::Ask(addr.to_string()),
                None => Step::Later,
            },
            ErrorKind::Ask
            | ErrorKind::TryAgain
            | ErrorKind::ClusterDown
            | ErrorKind::MasterDown
            | ErrorKind::BusyLoadingError => Step::Later,
            _ => Step::Fail,
        }
    }

    /// `ASKING` then `cmd`, on one connection to `addr` (the master importing the slot).
    async fn asking(
        &self,
        addr: &str,
        cmd: &redis::Cmd,
        remaining: Duration,
    ) -> Result<Value, Refusal> {
        let master = self.master_at(addr).await?;
        let connections = self.connections(&master).await?;
        let mut conn = connections.connections[0].clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").add_command(cmd.clone());
        let mut replies = timed(
            remaining,
            redis::aio::ConnectionLike::req_packed_commands(&mut conn, &pipe, 0, 2),
        )
        .await
        .map_err(Refusal::Redis)?;
        match replies.pop() {
            Some(reply) => reply.extract_error().map_err(Refusal::Redis),
            None => Err(Refusal::Failed(unavailable("ASKING answered nothing"))),
        }
    }

    /// The master at `addr`, from the map (read again when it does not name it).
    async fn master_at(&self, addr: &str) -> Result<Arc<Master>, QueueError> {
        for attempt in 0..2 {
            if let Some(map) = self.current() {
                if let Some(master) = map.masters.iter().find(|m| m.addr == addr) {
                    return Ok(master.clone());
                }
            }
            if attempt == 0 {
                self.reread(true).await;
            }
        }
        Err(QueueError::Unavailable(format!(
            "the Redis Cluster redirected to {addr}, which its slot map does not name"
        )))
    }

    /// Script calls whose writes the replicas must confirm: the calls of each master in
    /// one pipeline with one `WAIT` (see [`send_replicated`]) on its writer connection
    /// (Redis reads nothing more from a connection blocked in `WAIT`, so one pipeline per
    /// call would wait once per call); the masters' pipelines go out concurrently. Calls
    /// redirected or refused for now are sent again (as [`ClusterConnections::send`]
    /// does) until the command timeout.
    async fn send_replicated_calls(
        &self,
        script: &Script,
        calls: &[ScriptCall],
        replication: Replication,
    ) -> Vec<Result<Value, QueueError>> {
        let deadline = Instant::now() + self.timeout;
        let mut results: Vec<Option<Result<Value, QueueError>>> = vec![None; calls.len()];
        let mut sending = vec![Sending::new(&self.functions, Some(script)); calls.len()];
        let mut pending: Vec<usize> = (0..calls.len()).collect();
        let mut backoff = FIRST_BACKOFF;
        let mut rounds = 0u32;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > 1 && !back_off(&mut backoff, deadline).await {
                break;
            }
            let map = match self.slot_map().await {
                Ok(map) => map,
                Err(e) => {
                    for i in pending.drain(..) {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            };
            let groups = by_master(&map, calls, pending.drain(..), &sending, &mut results);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let replies = self
                .send_to_masters(&groups, calls, script, remaining, replication)
                .await;
            for ((master, _, members), (used, replies)) in groups.iter().zip(replies) {
                let mut failed_to_reach = false;
                for (&i, reply) in members.iter().zip(replies) {
                    let e = match reply {
                        Ok(value) => {
                            results[i] = Some(Ok(value));
                            continue;
                        }
                        Err(Sent::Failed(e)) => {
                            failed_to_reach |= matches!(e, QueueError::Unavailable(_));
                            results[i] = Some(Err(e));
                            continue;
                        }
                        Err(Sent::Refused(e)) => e,
                    };
                    match self.next_step(&e, false, &mut sending[i]).await {
                        Step::Fail => results[i] = Some(Err(unavailable(e))),
                        _ if Instant::now() >= deadline => results[i] = Some(Err(unavailable(e))),
                        _ => pending.push(i),
                    }
                }
                // A master that did not answer: its connections are dropped (they do not
                // reconnect by themselves) and the map read again (it may have been
                // replaced).
                match (failed_to_reach, used) {
                    (false, _) => {}
                    (true, Some(connections)) => {
                        let picked = Picked {
                            master: master.clone(),
                            connections,
                        };
                        self.broken(&picked).await;
                    }
                    (true, None) => self.reread(false).await,
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(unavailable(
                        "the Redis Cluster redirected the call until the command timeout",
                    ))
                })
            })
            .collect()
    }

    /// Sends each master its group of calls in one pipeline with one `WAIT`, on its writer
    /// connection, the masters concurrently: group by group, the connections used (none
    /// when they could not be opened) and each call's reply.
    async fn send_to_masters(
        &self,
        groups: &[MasterGroup],
        calls: &[ScriptCall],
        script: &Script,
        remaining: Duration,
        replication: Replication,
    ) -> Vec<(Option<Arc<MasterConnections>>, Vec<Result<Value, Sent>>)> {
        let sends = groups.iter().map(|(master, calling, members)| async move {
            let connections = match self.connections(master).await {
                Ok(connections) => connections,
                Err(e) => {
                    let failed = members.iter().map(|_| Err(Sent::Failed(e.clone())));
                    return (None, failed.collect());
                }
            };
            let writer = connections
                .writer
                .clone()
                .unwrap_or_else(|| connections.connections[0].clone());
            let batch: Vec<&ScriptCall> = members.iter().map(|&i| &calls[i]).collect();
            let replies =
                send_replicated(&writer, remaining, script, &batch, *calling, replication).await;
            (Some(connections), replies)
        });
        futures::future::join_all(sends).await
    }

    /// After a call of `script` sent as `calling` was lost with `e` (a master lacks the
    /// script): how to send it again (see [`Functions::reload`]), a library loaded into
    /// every master (see [`ClusterConnections::load_everywhere`]).
    async fn reload(
        &self,
        script: &Script,
        calling: Calling,
        e: &RedisError,
    ) -> Result<Calling, RedisError> {
        self.functions
            .reload(script, calling, e, || self.load_everywhere(script))
            .await
    }

    /// Loads `script`'s library into every master (a master new to the cluster lacks them
    /// all): how the script is called then (see [`Functions::after_loads`]: one that
    /// cannot be reached, or fails, is left to a later call while another loaded it).
    async fn load_everywhere(&self, script: &Script) -> Result<Calling, RedisError> {
        let map = self
            .slot_map()
            .await
            .map_err(|e| RedisError::from((ErrorKind::IoError, "no slot map", e.to_string())))?;
        let loads = map.masters.iter().map(|master| async move {
            let connections = self.connections(master).await.map_err(|e| {
                RedisError::from((ErrorKind::IoError, "unreachable master", e.to_string()))
            })?;
            let mut conn = connections.connections[0].clone();
            let load = function_load(script);
            timed(self.timeout, load.query_async::<Value>(&mut conn)).await
        });
        self.functions
            .after_loads(futures::future::join_all(loads).await)
    }

    /// Every master's connections, opened (fails if a master cannot be reached).
    async fn every_master(&self) -> Result<Vec<(Arc<Master>, Arc<MasterConnections>)>, QueueError> {
        let map = self.slot_map().await?;
        if map.owners.contains(&NO_OWNER) {
            let missing = map.owners.iter().filter(|&&o| o == NO_OWNER).count();
            return Err(QueueError::Unavailable(format!(
                "{missing} slots of the Redis Cluster have no master"
            )));
        }
        let opened = map.masters.iter().map(|master| async move {
            let connections = self.connections(master).await?;
            Ok::<_, QueueError>((master.clone(), connections))
        });
        futures::future::try_join_all(opened).await
    }

    /// The answers of every master to `cmd`, by address.
    async fn ask_every_master(&self, cmd: &redis::Cmd) -> Result<Vec<(String, Value)>, QueueError> {
        let masters = self.every_master().await?;
        let asks = masters.iter().map(|(master, connections)| async move {
            let mut conn = connections.connections[0].clone();
            let reply: Value = timed(self.timeout, cmd.query_async(&mut conn))
                .await
                .map_err(|e| unavailable(format!("{}: {e}", master.addr)))?;
            Ok::<_, QueueError>((master.addr.clone(), reply))
        });
        futures::future::try_join_all(asks).await
    }
}

/// How a call of a script is sent: as a function until a master says it lacks it, when the
/// library is loaded into every master it can reach and the call sent again (once); as a
/// plain script where functions are refused, with its source after `NOSCRIPT`.
#[derive(Clone, Copy)]
struct Sending<'a> {
    /// The script, when the call is one.
    script: Option<&'a Script>,
    calling: Calling,
    /// Whether the script was loaded (or its source taken) for this call already.
    reloaded: bool,
}

impl<'a> Sending<'a> {
    fn new(functions: &Functions, script: Option<&'a Script>) -> Self {
        Sending {
            script,
            calling: functions.calling(),
            reloaded: false,
        }
    }
}

/// Waits `backoff` and doubles it (up to [`MAX_BACKOFF`]), unless the wait would end past
/// `deadline`: then answers `false` at once.
async fn back_off(backoff: &mut Duration, deadline: Instant) -> bool {
    if Instant::now() + *backoff >= deadline {
        return false;
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}

/// A master and its connections, for one call.
struct Picked {
    master: Arc<Master>,
    connections: Arc<MasterConnections>,
}

impl Picked {
    /// One of the connections, in turn.
    fn conn(&self, next: &std::sync::atomic::AtomicUsize) -> MultiplexedConnection {
        let all = &self.connections.connections;
        all[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % all.len()].clone()
    }
}

/// Whether `e` says the connection (or the master) is gone, rather than refusing a call.
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// How a call went, when it did not answer a value.
enum Refusal {
    /// Redis's own error reply, or a failure to reach it.
    Redis(RedisError),
    /// Not sent.
    Failed(QueueError),
}

impl From<RedisError> for Refusal {
    fn from(e: RedisError) -> Self {
        Refusal::Redis(e)
    }
}

impl From<QueueError> for Refusal {
    fn from(e: QueueError) -> Self {
        Refusal::Failed(e)
    }
}

/// What a call does after an error reply.
enum Step {
    /// Sent again at once (the script's source added, or the new owner of a moved slot).
    Now,
    /// Sent to this master after `ASKING`.
    Ask(String),
    /// Sent again after a backoff (the call did nothing).
    Later,
    /// Failed (the caller retries, if it may).
    Fail,
}

/// The slot of a script call's partition (its `KEYS[1]`).
fn partition_slot((base, _): &ScriptCall) -> u16 {
    key_slot(base.as_bytes())
}

/// The slot a plain command is routed by: its first key; `None` for a command without
/// keys (any master answers it).
fn command_slot(cmd: &redis::Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => bytes,
        redis::Arg::Cursor => &[][..],
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"PING" | b"SCAN" | b"PUBLISH" | b"INFO" | b"CONFIG" | b"CLUSTER" | b"TIME" => None,
        _ => args.next().map(key_slot),
    }
}

/// Slot ranges and their masters: `(start, end, "host:port")`, sorted.
type Ranges = Vec<(u16, u16, String)>;

/// The `(start, end, "host:port")` slot ranges of a `CLUSTER SLOTS` reply, sorted; a node
/// that gives no host is the one asked (`asked`).
fn parse_slots(reply: Value, asked: &ConnectionInfo) -> Result<Ranges, QueueError> {
    let Value::Array(ranges) = reply else {
        return Err(QueueError::Protocol(format!(
            "CLUSTER SLOTS answered {reply:?}"
        )));
    };
    let asked_host = match &asked.addr {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
        _ => String::new(),
    };
    let mut parsed = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(QueueError::Protocol(
                "CLUSTER SLOTS answered a range that is not an array".into(),
            ));
        };
        let number = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (Some(start), Some(end)) = (number(fields.first()), number(fields.get(1))) else {
            return Err(QueueError::Protocol(
                "CLUSTER SLOTS answered a range without bounds".into(),
            ));
        };
        let Some(Value::Array(master)) = fields.get(2) else {
            return Err(QueueError::Protocol(
                "CLUSTER SLOTS answered a range without master".into(),
            ));
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.clone()
        } else {
            host
        };
        let Some(port) = number(master.get(1)) else {
            return Err(QueueError::Protocol(
                "CLUSTER SLOTS answered a master without port".into(),
            ));
        };
        parsed.push((start, end, format!("{host}:{port}")));
    }
    parsed.sort();
    Ok(parsed)
}

/// Each script call goes to its partition's master as a command of its own (see the module
/// docs); the calls go out concurrently.
#[async_trait::async_trait]
impl Transport for ClusterConnections {
    async fn run_script(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let sends = calls.iter().map(|call| {
            self.send(partition_slot(call), false, Some(script), move |calling| {
                script_cmd(script, call, calling)
            })
        });
        futures::future::join_all(sends).await
    }

    async fn run_script_replicated(
        &self,
        script: &Script,
        calls: &[ScriptCall],
    ) -> Vec<Result<Value, QueueError>> {
        let Some(replication) = self.replication else {
            return self.run_script(script, calls).await;
        };
        self.send_replicated_calls(script, calls, replication).await
    }

    async fn command(&self, cmd: &redis::Cmd) -> Result<Value, QueueError> {
        // A command without keys goes to any master: slot 0's is as good as another.
        let slot = command_slot(cmd).unwrap_or_default();
        self.send(slot, true, None, |_| cmd.clone()).await
    }

    fn describe(&self, prefix: &str, partitions: u16) -> String {
        let masters = self.current().map_or(0, |map| map.masters.len());
        format!(
            "Redis Cluster of {} seed node(s), {masters} master(s) known (key prefix {prefix:?}, {partitions} partitions)",
            self.seeds.len()
        )
    }

    /// Every master answers on every connection, and the cluster says it serves every
    /// slot (`cluster_state:ok`).
    async fn ping(&self) -> Result<(), QueueError> {
        let masters = match self.every_master().await {
            Ok(masters) => masters,
            Err(e) => {
                self.reread(false).await;
                return Err(e);
            }
        };
        let pings = masters.iter().map(|(master, connections)| async move {
            for conn in connections.connections.iter().chain(&connections.writer) {
                let mut conn = conn.clone();
                let reply = timed(
                    self.timeout,
                    redis::cmd("PING").query_async::<Value>(&mut conn),
                )
                .await
                .map_err(|e| unavailable(format!("{}: {e}", master.addr)))
                .and_then(pong);
                if let Err(e) = reply {
                    let picked = Picked {
                        master: master.clone(),
                        connections: connections.clone(),
                    };
                    self.broken(&picked).await;
                    return Err(e);
                }
            }
            Ok(())
        });
        futures::future::try_join_all(pings).await?;
        let (master, connections) = &masters[0];
        let mut conn = connections.connections[0].clone();
        let info: String = timed(
            self.timeout,
            redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn),
        )
        .await
        .map_err(|e| unavailable(format!("{}: {e}", master.addr)))?;
        if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
            return Err(QueueError::Unavailable(format!(
                "Redis Cluster master {} says the cluster is not ok",
                master.addr
            )));
        }
        Ok(())
    }

    async fn load_scripts(&self, scripts: &[&Script]) -> Result<(), QueueError> {
        for script in scripts {
            if self.functions.calling() == Calling::Function {
                self.load_everywhere(script).await.map_err(unavailable)?;
            }
            if self.functions.calling() == Calling::Sha {
                self.ask_every_master(&script_load(script)).await?;
            }
        }
        Ok(())
    }

    async fn check_deployment(&self) -> Result<(), QueueError> {
        let settings = self
            .ask_every_master(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .arg("appendonly"),
            )
            .await?;
        for (addr, reply) in settings {
            let fields: HashMap<String, String> = match redis::from_redis_value(&reply) {
                Ok(fields) => fields,
                Err(_) => continue,
            };
            if let Some(policy) = fields
                .get("maxmemory-policy")
                .filter(|p| *p != "noeviction")
            {
                tracing::warn!(
                    master = %addr,
                    policy = %policy,
                    "Redis maxmemory-policy can evict keys and lose queued events; set it to noeviction"
                );
            }
            if fields.get("appendonly").map(String::as_str) == Some("no") {
                tracing::warn!(
                    master = %addr,
                    "Redis appendonly is off: accepted events can be lost if Redis itself crashes"
                );
            }
        }
        if let Some(replication) = self.replication {
            let infos = self
                .ask_every_master(redis::cmd("INFO").arg("replication"))
                .await?;
            for (addr, reply) in infos {
                let info: String = redis::from_redis_value(&reply).unwrap_or_default();
                let connected = info
                    .lines()
                    .find_map(|l| l.strip_prefix("connected_slaves:"))
                    .and_then(|n| n.trim().parse::<u32>().ok());
                if let Some(connected) = connected.filter(|n| *n < replication.replicas) {
                    tracing::warn!(
                        master = %addr,
                        wait_replicas = replication.replicas,
                        connected,
                        "fewer replicas are connected to a Redis Cluster master than redis.wait_replicas: ingress answers 503 not_replicated for its partitions until enough are"
                    );
                }
            }
        }
        Ok(())
    }

    /// The release of layout 1 could not run on a Redis Cluster.
    fn holds_no_earlier_layout(&self) -> bool {
        true
    }

    async fn listen(
        &self,
        channel: &str,
        subscribed: &(dyn Fn() + Send + Sync),
        message: &(dyn for<'p> Fn(&'p [u8]) + Send + Sync),
    ) -> Option<QueueError> {
        // A PUBLISH on any node reaches the subscribers of every node: subscribe at a
        // master, a different one after each broken subscription.
        let master = match self.slot_map().await {
            Ok(map) if !map.masters.is_empty() => {
                let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                map.masters[i % map.masters.len()].clone()
            }
            Ok(_) => {
                return Some(QueueError::Unavailable(
                    "the Redis Cluster has no master".into(),
                ))
            }
            Err(e) => return Some(e),
        };
        super::redis::listen_on(&master.client, self.timeout, channel, subscribed, message).await
    }
}

/// The calls one master receives in one pipeline: the master, how the script is called,
/// and the positions of the calls.
type MasterGroup = (Arc<Master>, Calling, Vec<usize>);

/// The `pending` calls grouped by the master of their slot in `map` (and by the way the
/// script is sent); a call whose slot no master serves gets its error in `results`.
fn by_master(
    map: &SlotMap,
    calls: &[ScriptCall],
    pending: impl Iterator<Item = usize>,
    sending: &[Sending<'_>],
    results: &mut [Option<Result<Value, QueueError>>],
) -> Vec<MasterGroup> {
    let mut groups: Vec<MasterGroup> = Vec::new();
    for i in pending {
        let slot = partition_slot(&calls[i]);
        let Some(master) = map.owner(slot) else {
            results[i] = Some(Err(QueueError::Unavailable(format!(
                "no master of the Redis Cluster serves slot {slot}"
            ))));
            continue;
        };
        match groups
            .iter_mut()
            .find(|(m, c, _)| Arc::ptr_eq(m, master) && *c == sending[i].calling)
        {
            Some((_, _, members)) => members.push(i),
            None => groups.push((master.clone(), sending[i].calling, vec![i])),
        }
    }
    groups
}

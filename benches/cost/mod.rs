//! Cost phases: the instructions Redis executes per unit of gateway work, counted by
//! callgrind. They run only when named (`cargo bench --bench relay -- cost-ops`), usually
//! through `scripts/redis-cost.sh`. One, `cost-gateway` (module `gateway`, run by
//! `scripts/gateway-cost.sh`), counts the gateway's own instructions instead.
//!
//! With `ZENRELAY_BENCH_CALLGRIND=<dir>` set, each phase starts its own `redis-server`
//! under callgrind with instrumentation off (`--instr-atstart=no`), so start-up and the
//! loading of backlogs run at the speed of an uninstrumented valgrind; around each
//! measured interval it zeroes the counters and turns instrumentation on
//! (`callgrind_control -z`, `-i on`), then dumps them (`-d <label>`, kept in `<dir>` for
//! `callgrind_annotate`) and turns it off. Without the variable the phases run the same
//! loads against a plain `redis-server` and print no counts.
//!
//! Under callgrind Redis runs about 50 times slower, so the loads are sized to finish in a
//! few minutes together; every figure is per unit of work with start-up left out, which
//! the load's size does not change.

use std::ops::RangeInclusive;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;
use zenrelay::metrics::STATS_MAX_AGE;

mod gateway;

use super::support::{free_port, wait_for_port, Proc};
use super::{
    accounts_toml, embedded, post_batches, start_gateway, start_gateway_on, start_redis,
    wait_arrivals, Arrivals, KEY,
};

/// The phases, by the name that selects them; none runs unless named.
pub const PHASES: [&str; 9] = [
    "cost-ingress",
    "cost-batch",
    "cost-delivery-slow",
    "cost-delivery",
    "cost-delivery-limited",
    "cost-cluster",
    "cost-idle",
    "cost-ops",
    "cost-gateway",
];

/// Accounts of the ingress, batch, slow delivery and idle loads.
const ACCOUNTS: usize = 200;
/// Clients posting single events at once, and the events each posts while counted.
const INGRESS_CLIENTS: usize = 16;
const INGRESS_PER_CLIENT: usize = 125;
/// Batches of `BATCH_SIZE` events posted while counted, one after the other, each to
/// another account.
const BATCHES: usize = 10;
const BATCH_SIZE: usize = 1000;
/// Backlog of the slow delivery load: events per account, and the receiver's delay range.
const SLOW_PER_ACCOUNT: usize = 10;
const SLOW_DELAY_MS: RangeInclusive<u64> = 5..=20;
/// Backlog of the instant delivery load (the delivery phase's).
const DELIVERY_ACCOUNTS: usize = 10_000;
const DELIVERY_PER_ACCOUNT: usize = 3;
/// Backlog of the rate-limited delivery load: accounts, events per account, and their
/// limit (1 call per 2 s window), which binds at every send.
const LIMITED_ACCOUNTS: usize = 100;
const LIMITED_PER_ACCOUNT: usize = 10;
const LIMITED: &str = "notify_per_minute = 1\nnotify_window_seconds = 2";
/// Seconds an idle gateway's pace is measured, then Redis counted alone, then with it.
const IDLE_SECONDS: u64 = 10;
/// Accounts, one queued event each, behind one `/metrics` scrape and one `/v1/queues`.
const OPS_ACCOUNTS: usize = 10_000;

/// Delivery settings of the delivery loads: the limit must not bind.
const DELIVERY: &str = "notify_per_minute = 100000";
/// Appended to the delivery settings of every gateway but the idle one: its history
/// sampler reads the whole queue every 10 s, a cost per second that callgrind's slowness
/// would spread over far fewer units of work than a plain run does. The idle figure
/// keeps it.
const NO_HISTORY: &str = "\n[metrics]\nhistory_interval_seconds = 86400";
/// Delivery settings of the gateways that only store.
const DELIVERY_OFF: &str = "enabled = false\n[metrics]\nhistory_interval_seconds = 86400";
/// An admin client, for `GET /v1/queues`.
const ADMIN_KEY: &str = "bench-admin-key-0123456789";

/// Runs the cost phases named in `named`, in the order of [`PHASES`].
pub async fn run(named: &[String]) {
    for phase in PHASES {
        if !named.iter().any(|n| n == phase) {
            continue;
        }
        assert!(
            !embedded(),
            "the cost phases count work on a redis-server: unset ZENRELAY_BENCH_REDIS"
        );
        match phase {
            "cost-ingress" => ingress().await,
            "cost-batch" => batch().await,
            "cost-delivery-slow" => delivery_slow().await,
            "cost-delivery" => delivery().await,
            "cost-delivery-limited" => delivery_limited().await,
            "cost-cluster" => cluster().await,
            "cost-idle" => idle().await,
            "cost-ops" => ops().await,
            _ => gateway::run().await,
        }
    }
}

/// This phase's `redis-server`, under callgrind when `ZENRELAY_BENCH_CALLGRIND` names a
/// directory for its dumps.
struct Redis {
    _proc: Proc,
    port: u16,
    callgrind: Option<Callgrind>,
}

/// Control of a `redis-server` running under callgrind.
struct Callgrind {
    pid: u32,
    dir: PathBuf,
    /// Dumps requested so far: callgrind numbers them from 1.
    dumps: u32,
}

impl Redis {
    fn start() -> Redis {
        Self::start_with(free_port(), &[])
    }

    /// A node of a Redis Cluster, on a port whose bus port (+10000) is free.
    fn start_cluster_node() -> Redis {
        let port = loop {
            let port = free_port();
            if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
                break port;
            }
        };
        let conf = format!("nodes-{port}.conf");
        Self::start_with(
            port,
            &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
        )
    }

    fn start_with(port: u16, args: &[&str]) -> Redis {
        let dir = std::env::var_os("ZENRELAY_BENCH_CALLGRIND")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let data = std::env::temp_dir().join(format!("zenrelay-bench-{port}"));
        let _ = std::fs::create_dir_all(&data);
        let mut cmd = match &dir {
            Some(dir) => {
                let mut cmd = callgrind_command(dir);
                cmd.arg("redis-server");
                cmd
            }
            None => Command::new("redis-server"),
        };
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (and valgrind, with ZENRELAY_BENCH_CALLGRIND)");
        let pid = child.id();
        let proc = Proc(child);
        // (valgrind takes a few seconds to start it)
        wait_for_port(port, Duration::from_secs(60), "redis-server");
        Redis {
            _proc: proc,
            port,
            callgrind: dir.map(|dir| Callgrind::of(pid, dir)),
        }
    }

    /// Starts counting: zeroes the counters and turns instrumentation on.
    fn zero(&self) {
        if let Some(c) = &self.callgrind {
            c.zero();
        }
    }

    /// Stops counting: dumps the counters as `label` and turns instrumentation off.
    /// Answers the instructions counted since [`Redis::zero`], if under callgrind.
    fn dump(&mut self, label: &str) -> Option<u64> {
        Some(self.callgrind.as_mut()?.dump(label))
    }
}

/// `valgrind` running a program (the arguments that follow) under callgrind with
/// instrumentation off, its dumps and log kept in `dir`.
fn callgrind_command(dir: &FsPath) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!(
            "--callgrind-out-file={}/callgrind.out.%p",
            dir.display()
        ))
        .arg(format!("--log-file={}/valgrind.%p.log", dir.display()));
    cmd
}

impl Redis {
    /// Calls of the functions `names` in the last dump, if under callgrind.
    fn last_dump_calls(&self, names: &[&str]) -> Option<u64> {
        let c = self.callgrind.as_ref()?;
        let file = c.dir.join(format!("callgrind.out.{}.{}", c.pid, c.dumps));
        Some(dump_calls(&file, names))
    }
}

impl Callgrind {
    /// Control of the process `pid`, started by [`callgrind_command`] with `dir`.
    fn of(pid: u32, dir: PathBuf) -> Callgrind {
        Callgrind { pid, dir, dumps: 0 }
    }

    /// Starts counting: zeroes the counters and turns instrumentation on.
    fn zero(&self) {
        self.control(&["-z"]);
        self.control(&["-i", "on"]);
    }

    /// Stops counting: dumps the counters as `label` and turns instrumentation off.
    /// Answers the instructions counted since [`Callgrind::zero`].
    fn dump(&mut self, label: &str) -> u64 {
        self.control(&["-d", label]);
        self.control(&["-i", "off"]);
        self.dumps += 1;
        let file = self
            .dir
            .join(format!("callgrind.out.{}.{}", self.pid, self.dumps));
        dump_total(&file, label)
    }

    /// Runs `callgrind_control <args> <pid>`, which returns once the process has acted on
    /// it.
    fn control(&self, args: &[&str]) {
        let status = Command::new("callgrind_control")
            .args(args)
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {args:?} failed");
    }
}

/// The instruction total of the callgrind dump `file`, which must be the one named `label`.
fn dump_total(file: &FsPath, label: &str) -> u64 {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("callgrind dump {}: {e}", file.display()));
    let header = || text.lines().take_while(|l| !l.starts_with("fn="));
    assert!(
        header().any(|l| l.starts_with("desc: Trigger:") && l.ends_with(label)),
        "{} is not the dump {label:?}",
        file.display()
    );
    header()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary in {}", file.display()))
}

/// Calls of the functions `names` in the callgrind dump `file`: the `calls=` lines under
/// each `cfn=` naming one of them (a name is given once, then only its number).
fn dump_calls(file: &FsPath, names: &[&str]) -> u64 {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("callgrind dump {}: {e}", file.display()));
    let mut known = std::collections::HashMap::new();
    let mut counted = false;
    let mut calls = 0;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("cfn=")
            .or_else(|| line.strip_prefix("fn="))
        {
            let (id, name) = rest.split_once(' ').unwrap_or((rest, ""));
            if !name.is_empty() {
                known.insert(id.to_string(), names.contains(&name));
            }
            counted = line.starts_with("cfn=") && known.get(id).copied().unwrap_or(false);
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if counted {
                calls += rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            counted = false;
        }
    }
    calls
}

/// `n` with thousands separated by commas.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Prints one figure: `instructions` spread over `units`, against `goal`.
fn report(what: &str, instructions: Option<u64>, units: u64, goal: u64) {
    match instructions {
        Some(n) => println!(
            "cost     {what}: {} instructions (goal ≤ {})",
            grouped(n / units.max(1)),
            grouped(goal)
        ),
        None => println!("cost     {what}: not counted (set ZENRELAY_BENCH_CALLGRIND, or run scripts/redis-cost.sh)"),
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// One event per call; answers how many were accepted.
async fn post_singles(base: &str, accounts: &[String], clients: usize, per_client: usize) -> u64 {
    let http = reqwest::Client::new();
    let tasks = (0..clients).map(|c| {
        let http = http.clone();
        // Client `c` posts to every `clients`-th account, starting at its own.
        let urls: Vec<String> = (0..per_client)
            .map(|i| {
                let account = &accounts[(c + i * clients) % accounts.len()];
                format!("{base}/v1/accounts/{account}/notify")
            })
            .collect();
        tokio::spawn(async move {
            let mut accepted = 0u64;
            for url in urls {
                let resp = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({"app_id": 1, "event": "cost", "body": "hello"}))
                    .send()
                    .await
                    .expect("notify");
                assert_eq!(resp.status(), 202, "notify refused");
                accepted += 1;
            }
            accepted
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("client task"))
        .sum()
}

async fn ingress() {
    let mut redis = Redis::start();
    let accounts = names("s", ACCOUNTS);
    let gw = start_gateway(
        redis.port,
        "c1",
        DELIVERY_OFF,
        &accounts_toml(&accounts, free_port()),
    )
    .await;
    // One event per client first: connections and scripts are loaded before counting.
    post_singles(&gw.base, &accounts, INGRESS_CLIENTS, 1).await;
    // (read outside the counted interval)
    let scripts_before = scripts_run(redis.port);
    redis.zero();
    let stored = post_singles(&gw.base, &accounts, INGRESS_CLIENTS, INGRESS_PER_CLIENT).await;
    let n = redis.dump("cost-ingress");
    let calls = scripts_run(redis.port) - scripts_before;
    report(
        &format!("stored event, single ({INGRESS_CLIENTS} clients, {ACCOUNTS} accounts, {stored} events in {calls} script calls)"),
        n,
        stored,
        50_000,
    );
}

/// Posts `bodies` one after the other to `urls`; answers the events stored.
async fn post_bodies(http: &reqwest::Client, requests: &[(String, bytes::Bytes)]) -> u64 {
    let mut stored = 0u64;
    for (url, body) in requests {
        let resp: serde_json::Value = http
            .post(url)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("batch")
            .json()
            .await
            .expect("batch answer");
        stored += resp["results"].as_array().map_or(0, |results| {
            results.iter().filter(|r| r["id"].is_string()).count() as u64
        });
    }
    stored
}

async fn batch() {
    let mut redis = Redis::start();
    let accounts = names("b", ACCOUNTS);
    let gw = start_gateway(
        redis.port,
        "c2",
        DELIVERY_OFF,
        &accounts_toml(&accounts, free_port()),
    )
    .await;
    // Bodies are built up front; the first batch (not counted) loads connections and
    // scripts.
    let requests: Vec<(String, bytes::Bytes)> = (0..=BATCHES)
        .map(|b| {
            let events: Vec<_> = (0..BATCH_SIZE)
                .map(|i| json!({"app_id": 1, "event": "cost", "body": format!("{b}-{i}")}))
                .collect();
            (
                format!("{}/v1/accounts/{}/notify/batch", gw.base, accounts[b]),
                bytes::Bytes::from(json!({ "events": events }).to_string()),
            )
        })
        .collect();
    let http = reqwest::Client::new();
    post_bodies(&http, &requests[..1]).await;
    redis.zero();
    let stored = post_bodies(&http, &requests[1..]).await;
    let n = redis.dump("cost-batch");
    assert_eq!(
        stored,
        (BATCHES * BATCH_SIZE) as u64,
        "batches not fully stored"
    );
    report(
        &format!("stored event, batches of {BATCH_SIZE} ({BATCHES} batches)"),
        n,
        stored,
        25_000,
    );
}

/// The Notify receiver of the delivery loads: it holds every call until opened, then
/// answers each after a random delay in its range.
struct Receiver {
    port: u16,
    arrivals: Arrivals,
    /// Calls received so far, answered or held.
    calls: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
}

#[derive(Clone)]
struct ReceiverState {
    arrivals: Arrivals,
    calls: Arc<AtomicUsize>,
    open: watch::Receiver<bool>,
    delay_ms: RangeInclusive<u64>,
}

async fn receive(State(s): State<ReceiverState>, Path(account): Path<String>) -> &'static str {
    s.calls.fetch_add(1, Ordering::Relaxed);
    let _ = s.open.clone().wait_for(|open| *open).await;
    let ms = rand::rng().random_range(s.delay_ms);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Ok(mut a) = s.arrivals.lock() {
        a.push((account, Instant::now()));
    }
    "null"
}

impl Receiver {
    async fn start(delay_ms: RangeInclusive<u64>) -> Receiver {
        let (open, gate) = watch::channel(false);
        let state = ReceiverState {
            arrivals: Arrivals::default(),
            calls: Arc::default(),
            open: gate,
            delay_ms,
        };
        let (arrivals, calls) = (state.arrivals.clone(), state.calls.clone());
        let app = Router::new()
            .route("/acct/{id}/api/v2/apps/notify", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            port,
            arrivals,
            calls,
            open,
        }
    }

    /// Waits until the first Notify call arrived (and is held), for at most 10 minutes (a
    /// gateway under callgrind starts slowly).
    async fn first_call(&self) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.calls.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no Notify call");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Stores `per_account` events for each of `accounts` (of the gateway configuration
/// `config`) through a gateway with the delivery settings `delivery` and delivery off, on
/// the `[redis]` settings `redis`; answers the events stored, all of them.
async fn store_backlog(
    redis: &str,
    label: &str,
    delivery: &str,
    config: &str,
    accounts: &[String],
    per_account: usize,
) -> usize {
    // (with the same limits: the store keeps each account's limit as its events are stored)
    let ingress =
        start_gateway_on(redis, label, &format!("{delivery}\n{DELIVERY_OFF}"), config).await;
    let stored = post_batches(&ingress.base, accounts, per_account).await;
    let total = accounts.len() * per_account;
    assert_eq!(stored, total, "backlog not fully stored");
    total
}

/// Stores `per_account` events for each of `accounts` with delivery off, then lets another
/// gateway (with the delivery settings `delivery`) deliver them and counts Redis (every
/// node of `nodes`, reached through the `[redis]` settings `redis`) from the first Notify
/// call to the last answer. Answers the instructions counted on each node and the calls
/// delivered.
async fn deliver_backlog(
    nodes: &mut [Redis],
    redis: &str,
    label: &str,
    accounts: &[String],
    per_account: usize,
    delay_ms: RangeInclusive<u64>,
    delivery: &str,
) -> (Option<Vec<u64>>, u64) {
    let receiver = Receiver::start(delay_ms).await;
    let config = accounts_toml(accounts, receiver.port);
    let total = store_backlog(redis, label, delivery, &config, accounts, per_account).await;
    let _worker = start_gateway_on(redis, label, &format!("{delivery}{NO_HISTORY}"), &config).await;
    // The receiver holds the first calls until the count starts, so none is answered
    // before it; the worker's start-up and its first claims (at most its concurrency)
    // come before the count, the record of the last outcomes after it.
    receiver.first_call().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    // With its slots held, the worker calls Redis no more, but its history sampler's first
    // read of the whole queue (taken at start) may still be running: wait until Redis has
    // run no script for half a second.
    let run = |nodes: &[Redis]| nodes.iter().map(|n| scripts_run(n.port)).sum::<u64>();
    let mut last = run(nodes);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = run(nodes);
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "Redis never went quiet");
        last = now;
    }
    for node in nodes.iter() {
        node.zero();
    }
    receiver.open.send_replace(true);
    wait_arrivals(&receiver.arrivals, total, Duration::from_secs(3600)).await;
    let counts: Option<Vec<u64>> = nodes.iter_mut().map(|n| n.dump(label)).collect();
    (counts, total as u64)
}

/// `[redis]` settings of a gateway on the single server `redis`.
fn on_server(redis: &Redis) -> String {
    format!("url = \"redis://127.0.0.1:{}/0\"", redis.port)
}

/// Stores `per_account` events for each of `accounts` accounts named `prefix…` on a
/// redis-server of its own, delivers them with the delivery settings `delivery` to a
/// receiver answering after `delay_ms`, and reports Redis's work per delivered call as
/// `what` (phase `label`).
async fn delivery_on_one_server(
    label: &str,
    prefix: &str,
    (accounts, per_account): (usize, usize),
    delay_ms: RangeInclusive<u64>,
    delivery: &str,
    what: &str,
) {
    let mut redis = [Redis::start()];
    let accounts = names(prefix, accounts);
    let on = on_server(&redis[0]);
    let (n, calls) = deliver_backlog(
        &mut redis,
        &on,
        label,
        &accounts,
        per_account,
        delay_ms,
        delivery,
    )
    .await;
    report(what, n.map(|n| n.iter().sum()), calls, 100_000);
}

async fn delivery_slow() {
    let what = format!(
        "delivered Notify call, {ACCOUNTS} accounts x {SLOW_PER_ACCOUNT}, receiver answering in {}-{} ms",
        SLOW_DELAY_MS.start(),
        SLOW_DELAY_MS.end()
    );
    let backlog = (ACCOUNTS, SLOW_PER_ACCOUNT);
    delivery_on_one_server(
        "cost-delivery-slow",
        "d",
        backlog,
        SLOW_DELAY_MS,
        DELIVERY,
        &what,
    )
    .await;
}

async fn delivery() {
    let what = format!(
        "delivered Notify call, {DELIVERY_ACCOUNTS} accounts x {DELIVERY_PER_ACCOUNT}, instant receiver"
    );
    let backlog = (DELIVERY_ACCOUNTS, DELIVERY_PER_ACCOUNT);
    delivery_on_one_server("cost-delivery", "a", backlog, 0..=0, DELIVERY, &what).await;
}

/// Deliveries that the account's limit paces: each account may send once per window, so
/// every send waits for its window to have room.
async fn delivery_limited() {
    let what = format!(
        "delivered Notify call, {LIMITED_ACCOUNTS} accounts x {LIMITED_PER_ACCOUNT}, 1 call per 2 s window each"
    );
    let backlog = (LIMITED_ACCOUNTS, LIMITED_PER_ACCOUNT);
    delivery_on_one_server("cost-delivery-limited", "l", backlog, 0..=0, LIMITED, &what).await;
}

/// Partitions of both stores of the cluster phase.
const CLUSTER_PARTITIONS: u16 = super::cluster::PARTITIONS;

/// One delivered Notify call on one server and on a Redis Cluster of three masters (the
/// delivery phase's load, with [`CLUSTER_PARTITIONS`] partitions on both), and each
/// master's share of the cluster's work.
async fn cluster() {
    let accounts = names("a", DELIVERY_ACCOUNTS);
    let partitions = format!("\npartitions = {CLUSTER_PARTITIONS}");
    let mut single = [Redis::start()];
    let on = format!("{}{partitions}", on_server(&single[0]));
    let (one, calls) = deliver_backlog(
        &mut single,
        &on,
        "cost-cluster-single",
        &accounts,
        DELIVERY_PER_ACCOUNT,
        0..=0,
        DELIVERY,
    )
    .await;
    drop(single);
    let mut masters = [
        Redis::start_cluster_node(),
        Redis::start_cluster_node(),
        Redis::start_cluster_node(),
    ];
    let ports: Vec<u16> = masters.iter().map(|m| m.port).collect();
    super::cluster::join_cluster(&ports);
    let on = format!("{}{partitions}", super::cluster::cluster_redis(&ports));
    let (each, _) = deliver_backlog(
        &mut masters,
        &on,
        "cost-cluster",
        &accounts,
        DELIVERY_PER_ACCOUNT,
        0..=0,
        DELIVERY,
    )
    .await;
    let what = format!(
        "delivered Notify call, {DELIVERY_ACCOUNTS} accounts x {DELIVERY_PER_ACCOUNT}, {CLUSTER_PARTITIONS} partitions"
    );
    match (one.map(|n| n.iter().sum::<u64>()), each) {
        (Some(one), Some(each)) => {
            let total: u64 = each.iter().sum();
            let shares: Vec<String> = each
                .iter()
                .map(|n| format!("{:.1}%", *n as f64 * 100.0 / total.max(1) as f64))
                .collect();
            println!(
                "cost     {what}, one server: {} instructions",
                grouped(one / calls.max(1))
            );
            println!(
                "cost     {what}, 3-master cluster: {} instructions ({:+.1}% against one server; goal ≤ +10%), masters' shares {} (goal 25-42% each)",
                grouped(total / calls.max(1)),
                (total as f64 / one.max(1) as f64 - 1.0) * 100.0,
                shares.join(" / ")
            );
        }
        _ => report(
            &format!("{what}, one server and a 3-master cluster"),
            None,
            1,
            0,
        ),
    }
}

/// Scripts (`FCALL`) Redis at `port` has run so far, from `INFO commandstats`
/// (which counts the commands scripts call too, so these alone say how often the gateway
/// called; its idle traffic is nothing else).
fn scripts_run(port: u16) -> u64 {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("redis");
    conn.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .expect("INFO");
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    reader.read_line(&mut head).expect("INFO answer");
    let len: usize = head
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("INFO answered {head:?}"));
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("INFO answer");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("cmdstat_fcall:"))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Redis instructions per second an idle gateway adds. Counted under callgrind, the
/// gateway's polls wait on a Redis 50 times slower than usual, so it sends fewer of them:
/// the figure is the instructions per script call it made there (less what Redis spends
/// idle on its own) times the script calls per second it makes to a plain `redis-server`.
async fn idle() {
    let seconds = Duration::from_secs(IDLE_SECONDS);
    let accounts = names("i", ACCOUNTS);
    let config = accounts_toml(&accounts, free_port());
    // Its pace against a plain Redis.
    let (plain, port) = start_redis();
    let gw = start_gateway(port, "c5", "", &config).await;
    // Start-up is over once it answers; a moment more lets its first passes settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = scripts_run(port);
    tokio::time::sleep(seconds).await;
    let pace = (scripts_run(port) - before) as f64 / seconds.as_secs_f64();
    drop((gw, plain));
    // Redis alone, then with the gateway, under callgrind.
    let mut redis = Redis::start();
    redis.zero();
    tokio::time::sleep(seconds).await;
    let alone = redis.dump("cost-idle-redis");
    let _gw = start_gateway(redis.port, "c5", "", &config).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.zero();
    tokio::time::sleep(seconds).await;
    let with = redis.dump("cost-idle-gateway");
    let calls = redis.last_dump_calls(&["fcallCommand"]);
    let per_call = alone
        .zip(with)
        .zip(calls)
        .map(|((alone, with), calls)| with.saturating_sub(alone) / calls.max(1));
    report(
        &format!(
            "idle gateway, per second ({ACCOUNTS} accounts, delivery on: {pace:.0} script calls/s, {} instructions each)",
            per_call.map_or("uncounted".into(), grouped)
        ),
        per_call.map(|c| (c as f64 * pace) as u64),
        1,
        1_000_000,
    );
}

async fn ops() {
    let mut redis = Redis::start();
    let accounts = names("o", OPS_ACCOUNTS);
    let config = format!(
        "[[clients]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\naccounts = [\"*\"]\nadmin = true\n{}",
        accounts_toml(&accounts, free_port())
    );
    let gw = start_gateway(redis.port, "c6", DELIVERY_OFF, &config).await;
    let stored = post_batches(&gw.base, &accounts, 1).await;
    assert_eq!(stored, OPS_ACCOUNTS, "events not fully stored");
    let http = reqwest::Client::new();
    let scrape = || async {
        let resp = http
            .get(format!("{}/metrics", gw.base))
            .send()
            .await
            .expect("metrics");
        assert!(resp.status().is_success(), "metrics: {}", resp.status());
        resp.bytes().await.expect("metrics text")
    };
    // A process keeps the stats between reads and reads again only the accounts changed
    // since its last read (from a little before it: the clock slack). Its history sampler
    // read the empty queue at start, so this first scrape reads every account, each
    // changed since; the next ones come once the events' changes are older than the
    // slack.
    tokio::time::sleep(Duration::from_millis(
        zenrelay::queue::CLOCK_SLACK_MS + 1_000,
    ))
    .await;
    redis.zero();
    scrape().await;
    if let Some(n) = redis.dump("cost-metrics-changed") {
        println!(
            "cost     /metrics scrape after every account changed (reads every account), \
             {OPS_ACCOUNTS} accounts: {} instructions",
            grouped(n)
        );
    }
    // The counted one comes once the snapshot the first took has expired, so it reads the
    // queue again.
    tokio::time::sleep(STATS_MAX_AGE + Duration::from_millis(100)).await;
    redis.zero();
    scrape().await;
    let n = redis.dump("cost-metrics");
    report(
        &format!("/metrics scrape, {OPS_ACCOUNTS} accounts"),
        n,
        1,
        5_000_000,
    );
    redis.zero();
    let page = http
        .get(format!("{}/v1/queues", gw.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("queues");
    assert!(page.status().is_success(), "queues: {}", page.status());
    let page: serde_json::Value = page.json().await.expect("queues answer");
    let n = redis.dump("cost-queues");
    assert_eq!(
        page["accounts"].as_array().map_or(0, Vec::len),
        OPS_ACCOUNTS,
        "queues page"
    );
    report(
        &format!("GET /v1/queues, {OPS_ACCOUNTS} accounts"),
        n,
        1,
        5_000_000,
    );
}

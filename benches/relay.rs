//! Relay benchmarks, each printed as a figure and as a ratio against a baseline measured in
//! the same run (machines are noisy; ratios are what to compare).
//!
//! Run with `scripts/bench.sh` (installs `wrk`, then `cargo bench --bench relay`). Every
//! gateway runs as a release `zenrelay serve` child process against its own `redis-server`
//! on a free port; the Notify receiver is a minimal HTTP server in this process.
//! `ZENRELAY_BENCH_REDIS=memory` runs the gateways on the embedded backend (`memory://`)
//! instead; the delivery figure then comes from one gateway that stores the backlog and
//! delivers it at the same time (its queue lives in its process), counted from its first
//! call to its last.
//!
//! 1. Single-event ingress, `wrk` with 64 connections: gateway vs a bare axum handler
//!    answering 202.
//! 2. Batch ingress: events stored per second with batches of 1000.
//! 3. Delivery: 10,000 accounts with a backlog each (limit raised so it does not bind):
//!    Notify calls/s of the gateway vs a plain `reqwest` loop of the same concurrency
//!    against the same receiver; the gateway's peak RSS.
//! 4. Limiter: one account's backlog under a 50-per-second rolling window: windows over
//!    the limit and the share of the budget used.
//! 5. Latency of a fresh account's event while 1,000 other accounts are backlogged.
//!
//! The `cost-*` phases (module `cost`) run only when named: `scripts/redis-cost.sh` runs
//! them to count the instructions Redis executes per unit of work under callgrind, and
//! `scripts/gateway-cost.sh` runs `cost-gateway`, which counts the gateway's own per
//! stored event against a bare axum handler's. So does
//! `script-time` (module `script_time`): the longest script calls at 10,000 accounts and
//! 100,000 queued events, from Redis's `SLOWLOG`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use serde_json::json;

// Each benchmark uses a part of the shared helpers.
#[allow(dead_code)]
mod support;

mod cluster;
mod cost;
mod script_time;
use support::{free_port, parse_wrk, wait_for_port, CpuMeter, Proc};

const KEY: &str = "bench-client-key-0123456789";
const CONCURRENCY: usize = 64;
/// Clients posting batches at once in the batch ingress figure.
const BATCH_CLIENTS: usize = 8;

/// Whether the gateways run on the embedded backend (`ZENRELAY_BENCH_REDIS=memory`).
fn embedded() -> bool {
    std::env::var("ZENRELAY_BENCH_REDIS").is_ok_and(|v| v == "memory")
}

fn start_redis() -> (Proc, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("zenrelay-bench-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    wait_for_port(port, Duration::from_secs(10), "redis-server");
    (Proc(child), port)
}

/// Arrivals at the receiver: (account, when).
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

async fn receive(State(arrivals): State<Arrivals>, Path(account): Path<String>) -> &'static str {
    if let Ok(mut a) = arrivals.lock() {
        a.push((account, Instant::now()));
    }
    "null"
}

async fn start_receiver() -> (u16, Arrivals) {
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let app = Router::new()
        .route("/acct/{id}/api/v2/apps/notify", post(receive))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, arrivals)
}

fn accounts_toml(names: &[String], receiver: u16) -> String {
    let mut out = String::with_capacity(names.len() * 160);
    for name in names {
        out.push_str(&format!(
            "[[accounts]]\nid = \"{name}\"\nsubdomain = \"{name}\"\nbase_url = \"http://127.0.0.1:{receiver}/acct/{name}\"\nemail = \"ops@{name}.example\"\napi_token = \"t\"\n"
        ));
    }
    out
}

struct Gateway {
    proc: Proc,
    base: String,
}

async fn start_gateway(redis: u16, prefix: &str, delivery: &str, accounts: &str) -> Gateway {
    let url = if embedded() {
        "memory://".to_string()
    } else {
        format!("redis://127.0.0.1:{redis}/0")
    };
    start_gateway_on(&format!("url = \"{url}\""), prefix, delivery, accounts).await
}

/// A gateway whose `[redis]` section holds `redis` (where the store is) and the bench's
/// own settings.
async fn start_gateway_on(redis: &str, prefix: &str, delivery: &str, accounts: &str) -> Gateway {
    start_gateway_via(&[], redis, prefix, delivery, accounts).await
}

/// As [`start_gateway_on`], with the gateway run by `launcher` (a program and its
/// arguments, such as valgrind's) when it is not empty.
async fn start_gateway_via(
    launcher: &[String],
    redis: &str,
    prefix: &str,
    delivery: &str,
    accounts: &str,
) -> Gateway {
    let port = free_port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[redis]\n{redis}\nkey_prefix = \"{prefix}\"\npool_size = 4\n\
         [delivery]\nmax_queue_depth = 100000000\nconcurrency = {CONCURRENCY}\n{delivery}\n[log]\nlevel = \"error\"\n\
         [[clients]]\nname = \"bench\"\nkey = \"{KEY}\"\naccounts = [\"*\"]\n{accounts}"
    );
    let path = std::env::temp_dir().join(format!("zenrelay-bench-{port}.toml"));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write config");
    let exe = env!("CARGO_BIN_EXE_zenrelay");
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let child = command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .expect("zenrelay serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // (under valgrind a start takes several seconds)
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Gateway {
        proc: Proc(child),
        base,
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `wrk` and answers (requests/s, requests done).
fn wrk(url: &str, auth: bool, seconds: u64) -> (f64, f64) {
    let script = std::env::temp_dir().join(format!("zenrelay-wrk-{}.lua", free_port()));
    let mut lua = String::from(
        "wrk.method = \"POST\"\nwrk.body = '{\"app_id\":375,\"event\":\"bench\",\"body\":\"hello\",\"agent_id\":1}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    );
    if auth {
        lua.push_str(&format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {KEY}\"\n"
        ));
    }
    std::fs::write(&script, lua).expect("wrk script");
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONCURRENCY}"),
            &format!("-d{seconds}s"),
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk must be installed (scripts/bench.sh installs it)");
    let run = parse_wrk(url, &String::from_utf8_lossy(&out.stdout));
    (run.rps, run.done)
}

/// A bare axum handler answering 202 on its own runtime of `threads` workers (it runs until
/// the benchmark exits).
fn bare_axum(threads: usize) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        serve_bare(0, threads, |port| {
            let _ = tx.send(port);
        })
    });
    rx.recv().expect("bare axum port")
}

/// Serves the bare axum handler on `port` (0: any free one, told to `bound`) with `threads`
/// worker threads, until the process exits.
fn serve_bare(port: u16, threads: usize, bound: impl FnOnce(u16)) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let app = Router::new().route(
            "/v1/accounts/{account}/notify",
            post(|| async {
                (
                    http::StatusCode::ACCEPTED,
                    axum::Json(json!({"id": "x", "account": "acme", "deliveries": 1})),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bare axum listener");
        bound(listener.local_addr().expect("bound").port());
        let _ = axum::serve(listener, app).await;
    });
}

async fn post_batches(base: &str, accounts: &[String], per_account: usize) -> usize {
    let http = reqwest::Client::new();
    let mut stored = 0;
    let chunks: Vec<_> = accounts
        .chunks(accounts.len().div_ceil(CONCURRENCY))
        .collect();
    let tasks = chunks.into_iter().map(|chunk| {
        let http = http.clone();
        let base = base.to_string();
        let chunk = chunk.to_vec();
        tokio::spawn(async move {
            let mut n = 0;
            for account in chunk {
                let events: Vec<_> = (0..per_account)
                    .map(|i| json!({"app_id": 1, "event": "bench", "body": format!("{i}")}))
                    .collect();
                let resp: serde_json::Value = http
                    .post(format!("{base}/v1/accounts/{account}/notify/batch"))
                    .bearer_auth(KEY)
                    .json(&json!({"events": events}))
                    .send()
                    .await
                    .expect("batch")
                    .json()
                    .await
                    .expect("batch answer");
                n += resp["results"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|x| x["id"].is_string()).count());
            }
            n
        })
    });
    for t in futures::future::join_all(tasks).await {
        stored += t.unwrap_or(0);
    }
    stored
}

async fn wait_arrivals(arrivals: &Arrivals, n: usize, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let last = arrivals
            .lock()
            .ok()
            .and_then(|a| (a.len() >= n).then(|| a[n - 1].1));
        if let Some(last) = last {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            arrivals.lock().map(|a| a.len()).unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Set to a port, the benchmark binary serves only the bare axum handler there (see
/// `cost-gateway`, which runs it under callgrind).
const BARE_PORT_VAR: &str = "ZENRELAY_BENCH_BARE_PORT";

fn main() {
    if let Some(port) = std::env::var(BARE_PORT_VAR)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    {
        // (as many worker threads as the gateway's runtime has: one per core)
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        serve_bare(port, threads, |_| {});
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// What every phase needs: the shared Redis and the Notify receiver.
struct Bench {
    redis: u16,
    redis_pid: Option<u32>,
    receiver: u16,
    arrivals: Arrivals,
}

/// The phases, by the name that selects them on the command line
/// (`cargo bench --bench relay -- delivery limiter`; none named runs all).
const PHASES: [&str; 5] = ["ingress", "delivery", "cluster", "limiter", "latency"];

async fn run() {
    let (redis_proc, redis) = start_redis();
    let (receiver, arrivals) = start_receiver().await;
    let bench = Bench {
        redis,
        redis_pid: Some(redis_proc.0.id()),
        receiver,
        arrivals,
    };
    println!(
        "zenrelay relay benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // `cargo bench` passes `--bench`; anything else names phases.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for phase in PHASES {
        if !named.is_empty() && !named.iter().any(|n| n == phase) {
            continue;
        }
        match phase {
            "ingress" => ingress(&bench).await,
            "delivery" => delivery(&bench).await,
            "cluster" => cluster::run(&bench).await,
            "limiter" => limiter(&bench).await,
            _ => latency(&bench).await,
        }
    }
    cost::run(&named).await;
    if named.iter().any(|n| n == "cluster-client") {
        cluster::compare_clients().await;
    }
    if named.iter().any(|n| n == "script-time") {
        script_time::run().await;
    }
}

async fn ingress(b: &Bench) {
    let (redis, redis_pid, receiver) = (b.redis, b.redis_pid, b.receiver);
    // 1. Single-event ingress. The baseline is the better of a bare handler on one and on
    // two worker threads (wrk and, for the gateway, Redis share the same two cores).
    let mut bare_rps = 0f64;
    let mut bare_cpu = 0f64;
    let mut bare_threads = 0;
    for threads in [1, 2] {
        let bare = bare_axum(threads);
        let meter = CpuMeter::start(&[None]);
        let (rps, n) = wrk(
            &format!("http://127.0.0.1:{bare}/v1/accounts/acme/notify"),
            false,
            5,
        );
        if rps > bare_rps {
            (bare_rps, bare_cpu, bare_threads) = (rps, meter.per(n)[0], threads);
        }
    }
    let one = accounts_toml(&["acme".to_string()], receiver);
    let gw = start_gateway(redis, "b1", "enabled = false", &one).await;
    let meter = CpuMeter::start(&[Some(gw.proc.0.id()), redis_pid]);
    let (gw_rps, gw_n) = wrk(&format!("{}/v1/accounts/acme/notify", gw.base), true, 5);
    let gw_cpu = meter.per(gw_n);
    println!("ingress  single event, {CONCURRENCY} connections: gateway {gw_rps:.0} req/s, bare axum 202 ({bare_threads} worker threads) {bare_rps:.0} req/s, ratio {:.2} (goal >= 0.5)", gw_rps / bare_rps);
    println!(
        "         CPU per request: gateway {:.1} us + Redis {:.1} us, bare axum {bare_cpu:.1} us (wrk shares the same 2 cores)",
        gw_cpu[0], gw_cpu[1]
    );

    // 2. Batch ingress: each client posts its next batch as soon as the last is answered
    // (bodies are built up front, so the load generator spends little CPU of its own).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/accounts/acme/notify/batch", gw.base);
    let clients = (0..BATCH_CLIENTS).map(|t| {
        let (http, url) = (http.clone(), url.clone());
        let events: Vec<_> = (0..1000)
            .map(|i| json!({"app_id": 1, "event": "bench", "body": format!("{t}-{i}")}))
            .collect();
        let body = bytes::Bytes::from(json!({ "events": events }).to_string());
        tokio::spawn(async move {
            let mut stored = 0usize;
            while Instant::now() < deadline {
                let Ok(resp) = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(resp) = resp.json::<serde_json::Value>().await else {
                    continue;
                };
                stored += resp["results"].as_array().map_or(0, |results| {
                    results.iter().filter(|r| r["id"].is_string()).count()
                });
            }
            stored
        })
    });
    let stored: usize = futures::future::join_all(clients)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .sum();
    let batch_rate = stored as f64 / started.elapsed().as_secs_f64();
    println!("ingress  batches of 1000: {batch_rate:.0} events/s stored (goal >= 50000), ratio to goal {:.2}", batch_rate / 50_000.0);
    drop(gw);
}

async fn delivery(b: &Bench) {
    let (redis, redis_pid, receiver, arrivals) = (b.redis, b.redis_pid, b.receiver, &b.arrivals);
    // 3. Delivery across 10,000 backlogged accounts.
    let names: Vec<String> = (0..10_000).map(|i| format!("a{i:05}")).collect();
    let accounts = accounts_toml(&names, receiver);
    let per_account = 3;
    let total = names.len() * per_account;
    arrivals.lock().unwrap().clear();
    // With the embedded backend: when the last event was stored, and how many calls had
    // arrived by then.
    let mut storing_done: Option<(Instant, usize)> = None;
    let (started, worker) = if embedded() {
        // One process stores and delivers: its queue lives in it.
        let started = Instant::now();
        let worker = start_gateway(redis, "b3", "notify_per_minute = 100000", &accounts).await;
        let stored = post_batches(&worker.base, &names, per_account).await;
        assert_eq!(stored, total, "backlog not fully stored");
        storing_done = Some((Instant::now(), arrivals.lock().map_or(0, |a| a.len())));
        (started, worker)
    } else {
        let ingress = start_gateway(redis, "b3", "enabled = false", &accounts).await;
        let stored = post_batches(&ingress.base, &names, per_account).await;
        assert_eq!(stored, total, "backlog not fully stored");
        drop(ingress);
        arrivals.lock().unwrap().clear();
        let started = Instant::now();
        let worker = start_gateway(redis, "b3", "notify_per_minute = 100000", &accounts).await;
        (started, worker)
    };
    let pid = worker.proc.0.id();
    let meter = CpuMeter::start(&[Some(pid), redis_pid, None]);
    let mut peak_rss = 0f64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while arrivals.lock().unwrap().len() < total {
        peak_rss = peak_rss.max(rss_mb(pid));
        assert!(Instant::now() < deadline, "delivery too slow");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = wait_arrivals(arrivals, total, Duration::from_secs(1)).await;
    // Throughput counts from the first call, not from the process start (config load,
    // connections), as the loop below counts from its first call too.
    let first = arrivals.lock().map_or(started, |a| a[0].1);
    let startup = first.duration_since(started);
    let gw_time = last.duration_since(first);
    peak_rss = peak_rss.max(rss_mb(pid));
    // The meter started once the backlog was stored: with the embedded backend, per call
    // sent from then on.
    let metered = storing_done.map_or(total, |(_, arrived)| total - arrived);
    let delivery_cpu = meter.per(metered.max(1) as f64);
    let gw_rate = total as f64 / gw_time.as_secs_f64();
    drop(worker);

    arrivals.lock().unwrap().clear();
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        names
            .iter()
            .flat_map(|n| {
                (0..per_account).map(move |i| {
                    (
                        format!("http://127.0.0.1:{receiver}/acct/{n}/api/v2/apps/notify"),
                        format!(r#"{{"app_id":1,"event":"bench","body":"{i}"}}"#).into_bytes(),
                    )
                })
            })
            .collect(),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let started = Instant::now();
    let meter = CpuMeter::start(&[None]);
    let tasks = (0..CONCURRENCY).map(|_| {
        let (bodies, next, client) = (bodies.clone(), next.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((url, body)) = bodies.get(i) else {
                    break;
                };
                let _ = client
                    .post(url)
                    .header("authorization", "Basic dDp0")
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.status());
            }
        })
    });
    futures::future::join_all(tasks).await;
    let base_last = wait_arrivals(arrivals, total, Duration::from_secs(1)).await;
    let base_first = arrivals.lock().map_or(started, |a| a[0].1);
    let base_rate = total as f64 / base_last.duration_since(base_first).as_secs_f64();
    let base_cpu = meter.per(total as f64)[0];
    println!("delivery 10000 accounts x {per_account}: gateway {gw_rate:.0} calls/s, plain reqwest loop {base_rate:.0} calls/s, ratio {:.2} (goal >= 0.7)", gw_rate / base_rate);
    println!(
        "         (rates from first to last call; the gateway's first call came {} ms after its process started)",
        startup.as_millis()
    );
    println!(
        "         CPU per call: gateway {:.1} us + Redis {:.1} us + receiver {:.1} us, reqwest loop and receiver {base_cpu:.1} us",
        delivery_cpu[0], delivery_cpu[1], delivery_cpu[2]
    );
    if let Some((at, arrived)) = storing_done {
        let after = last.saturating_duration_since(at).as_secs_f64();
        println!(
            "         embedded: the gateway stored the backlog ({} requests) while delivering it; {arrived} of {total} calls arrived before the last event was stored, the other {} in {:.0} ms after ({:.0} calls/s; its CPU above is per call of these)",
            names.len(),
            total - arrived,
            after * 1000.0,
            (total - arrived) as f64 / after.max(1e-9)
        );
    }
    println!("memory   gateway peak RSS with 10000 active accounts: {peak_rss:.1} MB (goal < 100)");
}

async fn limiter(b: &Bench) {
    let (redis, receiver, arrivals) = (b.redis, b.receiver, &b.arrivals);
    // 4. Limiter: one account, 50 per 1 s rolling window.
    arrivals.lock().unwrap().clear();
    let limit = 50;
    let n = 301;
    let one = accounts_toml(&["limited".to_string()], receiver);
    let gw = start_gateway(
        redis,
        "b4",
        "notify_per_minute = 50\nnotify_window_seconds = 1",
        &one,
    )
    .await;
    let events: Vec<_> = (0..n)
        .map(|i| json!({"app_id": 1, "event": "rate", "body": format!("{i}")}))
        .collect();
    reqwest::Client::new()
        .post(format!("{}/v1/accounts/limited/notify/batch", gw.base))
        .bearer_auth(KEY)
        .json(&json!({"events": events}))
        .send()
        .await
        .expect("batch");
    wait_arrivals(arrivals, n, Duration::from_secs(30)).await;
    let times: Vec<Instant> = arrivals.lock().unwrap().iter().map(|a| a.1).collect();
    let window = Duration::from_secs(1);
    let over = (0..n)
        .filter(|&i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < window)
                .count()
                > limit
        })
        .count();
    let span = times[n - 1].duration_since(times[0]);
    let ideal = window * ((n as u32 - 1) / limit as u32);
    println!("limiter  {n} events at {limit}/1 s: {over} windows over the limit (goal 0), budget used {:.2}% (goal >= 98%)", ideal.as_secs_f64() / span.as_secs_f64() * 100.0);
    drop(gw);
}

async fn latency(b: &Bench) {
    let (redis, receiver, arrivals) = (b.redis, b.receiver, &b.arrivals);
    // 5. A fresh account's latency while 1,000 accounts are backlogged.
    arrivals.lock().unwrap().clear();
    let busy: Vec<String> = (0..1000).map(|i| format!("busy{i:04}")).collect();
    let fresh: Vec<String> = (0..200).map(|i| format!("fresh{i:03}")).collect();
    let all: Vec<String> = busy.iter().chain(fresh.iter()).cloned().collect();
    let accounts = accounts_toml(&all, receiver);
    let gw = start_gateway(redis, "b5", "", &accounts).await;
    post_batches(&gw.base, &busy, 150).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    for name in &fresh {
        let at = Instant::now();
        let resp = client
            .post(format!("{}/v1/accounts/{name}/notify", gw.base))
            .bearer_auth(KEY)
            .json(&json!({"app_id": 1, "event": "fresh"}))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 202);
        sent.insert(name.clone(), at);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut latencies: Vec<Duration> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(account, at)| sent.get(account).map(|s| at.duration_since(*s)))
        .collect();
    latencies.sort();
    let backlog_calls = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a.starts_with("busy"))
        .count();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "latency  fresh account while 1000 accounts backlogged ({backlog_calls} backlog calls meanwhile): {} of {} delivered, p50 {:.1} ms, p99 {:.1} ms (goal p99 < 100 ms)",
        latencies.len(),
        fresh.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
}

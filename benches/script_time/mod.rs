//! The `script-time` phase: how long Redis is held by one queue script call, and how much
//! one call does, at 10,000 accounts and 100,000 queued events. It runs only when named
//! (`cargo bench --bench relay -- script-time`).
//!
//! Redis runs a script to its end before it serves anything else, so the longest call is
//! the longest stall every client of that Redis sees. The phase stores the backlog in
//! batches (and one batch of 1,000, the API's largest), then delivers it with two gateways
//! while `/metrics` and `GET /v1/queues` are read every second; one gateway is killed
//! (`SIGKILL`) a few seconds in, so the other reaps its leases once they run out. Redis
//! records every call longer than [`THRESHOLD_US`] in its `SLOWLOG`; during three windows
//! (the 1,000-event batch, the first [`WINDOW`] of delivery, and [`WINDOW`] from when the
//! killed gateway's leases run out) it records every command, so the commands each call
//! runs can be counted: a figure that does not move with the machine's load. The phase
//! names each call by its script's digest and prints, per script, how many ran over the
//! threshold and over 1 ms, the longest, and the most commands one call ran, next to the
//! mean of all script calls (`INFO commandstats`).
//!
//! The machine is shared (two cores for Redis, the gateways, the receiver and this
//! process), so a call could be stretched by the scheduler taking Redis off its core: Redis
//! runs under the real-time policy (`chrt -f`) where the system allows it, and the phase
//! says which. Interrupts and the hypervisor can still stretch a call; the time the
//! hypervisor took from all CPUs over the run is printed, and so are the pauses the kernel
//! imposes even on a real-time Redis ([`off_cpu`]), next to each call they stretched.

mod off_cpu;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;
use zenrelay::config::Config;
use zenrelay::queue::redis::RedisQueue;

use super::support::{free_port, wait_for_port, Proc};
use super::{accounts_toml, post_batches, start_gateway, start_receiver};

/// Accounts, and events queued for each.
const ACCOUNTS: usize = 10_000;
const PER_ACCOUNT: usize = 10;
/// Calls at least this long (µs) are recorded by Redis.
const THRESHOLD_US: u64 = 200;
/// The largest batch the API takes, posted once with every command logged.
const MAX_BATCH: usize = 1000;
/// How long each window with every command logged lasts (the start of delivery, and the
/// reaping of the killed gateway's leases): enough calls for the most commands one call
/// runs, without a log of millions of entries.
const WINDOW: Duration = Duration::from_millis(500);
/// Lease of the delivering gateways (ms): the killed one's leases run out this long after
/// its claims.
const LEASE_MS: u64 = 12_000;
/// An admin client, for `GET /v1/queues`.
const ADMIN_KEY: &str = "bench-admin-key-0123456789";

/// Runs the phase.
pub async fn run() {
    let (redis_proc, redis, realtime) = start_redis();
    let off_cpu = off_cpu::OffCpu::start(redis_proc.0.id());
    let (receiver, arrivals) = start_receiver().await;
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("t{i:05}")).collect();
    let accounts = format!(
        "[[clients]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\naccounts = [\"*\"]\nadmin = true\n{}",
        accounts_toml(&names, receiver)
    );
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis}/")).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let set = |name: &str, value: String| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg(name).arg(value);
        cmd
    };
    for cmd in [
        set("slowlog-log-slower-than", THRESHOLD_US.to_string()),
        set("slowlog-max-len", "1000000".into()),
    ] {
        let _: () = cmd.query_async(&mut conn).await.expect("CONFIG SET");
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .expect("SLOWLOG RESET");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");

    let steal_before = steal_ticks();
    // The backlog, stored in batches of PER_ACCOUNT by a gateway that does not deliver.
    // A limit that does not bind (the account's limit is stored with its events): the
    // 1,000-event account would otherwise take ten minutes (its rate list, up to the limit
    // long, is then bisected by the stats).
    let ingress = start_gateway(
        redis,
        "st",
        "enabled = false\nnotify_per_minute = 100000",
        &accounts,
    )
    .await;
    let stored = post_batches(&ingress.base, &names, PER_ACCOUNT).await;
    // and the largest request the API takes, with every command logged
    let mut windows = Vec::new();
    let from = log_every_call(&mut conn, true).await;
    let big = post_batches(&ingress.base, &names[..1], MAX_BATCH).await;
    windows.push(from..=log_every_call(&mut conn, false).await);
    let total = ACCOUNTS * PER_ACCOUNT + MAX_BATCH;
    assert_eq!(stored + big, total, "backlog not fully stored");
    drop(ingress);
    arrivals.lock().map(|mut a| a.clear()).ok();

    let delivery = format!("lease_ms = {LEASE_MS}\nnotify_per_minute = 100000");
    let first = start_gateway(redis, "st", &delivery, &accounts).await;
    let second = start_gateway(redis, "st", &delivery, &accounts).await;
    let ops = tokio::spawn(read_ops(second.base.clone()));
    let ops_alive = || !ops.is_finished();
    let started = Instant::now();
    let from = log_every_call(&mut conn, true).await;
    tokio::time::sleep(WINDOW).await;
    windows.push(from..=log_every_call(&mut conn, false).await);
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(WINDOW)).await;
    let killed_at = Instant::now();
    drop(first);
    let unix = |at: Instant| {
        let ago = Instant::now().saturating_duration_since(at);
        std::time::SystemTime::now()
            .checked_sub(ago)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    };
    let (started_unix, killed_unix) = (unix(started), unix(killed_at));
    let deadline = Instant::now() + Duration::from_secs(300);
    // Done when the queue holds nothing more (the arrivals would count the calls the killed
    // gateway had sent and the other sends again).
    let http = reqwest::Client::new();
    // The reaping window: from when the killed gateway's leases run out.
    let mut reaping: Option<(Instant, i64)> = None;
    let mut reaping_done = false;
    loop {
        if reaping.is_none() && killed_at.elapsed() >= Duration::from_millis(LEASE_MS) {
            let from = log_every_call(&mut conn, true).await;
            reaping = Some((Instant::now(), from));
        }
        if let (false, Some((at, from))) = (reaping_done, reaping) {
            if at.elapsed() >= WINDOW {
                windows.push(from..=log_every_call(&mut conn, false).await);
                reaping_done = true;
            }
        }
        let totals = queue_totals(&http, &second.base).await;
        let left = totals.map_or(u64::MAX, |(depth, in_flight)| depth + in_flight);
        assert!(
            ops_alive(),
            "the ops reads stopped: {:?}",
            ops.is_finished()
        );
        if left == 0 && reaping_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} events still queued or in flight (u64::MAX: totals unreadable)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ops.abort();
    let stolen = steal_ticks().saturating_sub(steal_before);
    let pauses = off_cpu.map(off_cpu::OffCpu::finish);
    let elapsed = started.elapsed();
    drop(second);

    let names: HashMap<String, &'static str> = {
        let mut config = Config::default();
        config.redis.key_prefix = "st".into();
        let queue = RedisQueue::new(zenrelay::app::redis_queue_config(&config))
            .expect("a queue over the default settings");
        queue
            .scripts()
            .iter()
            .map(|(name, script)| (script.name().to_string(), *name))
            .collect()
    };
    let entries: Vec<Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg("-1")
        .query_async(&mut conn)
        .await
        .expect("SLOWLOG GET");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO commandstats");
    let (calls, usec) = fcall_stats(&info);

    // name -> (over the threshold, over 1 ms, longest µs, most commands in one call)
    let mut by_script: HashMap<String, (u64, u64, u64, u64)> = HashMap::new();
    let mut times: Vec<u64> = Vec::new();
    let mut slowest: Vec<(u64, i64, String, String)> = Vec::new();
    // Commands a script runs are logged (when every call is) just before the script's own
    // entry: counted toward the next script entry, oldest first.
    let mut inner = 0u64;
    for entry in entries.iter().rev() {
        let Value::Array(fields) = entry else {
            continue;
        };
        let (id, micros) = match (fields.first(), fields.get(2)) {
            (Some(Value::Int(id)), Some(Value::Int(n))) => (*id, *n as u64),
            _ => continue,
        };
        let name = match fields.get(3) {
            Some(Value::Array(args)) => match (args.first(), args.get(1)) {
                (Some(Value::BulkString(cmd)), Some(Value::BulkString(function)))
                    if cmd.eq_ignore_ascii_case(b"fcall") =>
                {
                    let function = String::from_utf8_lossy(function).to_string();
                    names
                        .get(&function)
                        .map_or_else(|| format!("function {function}"), |n| n.to_string())
                }
                // a command a script ran: its time is inside the script's
                _ => {
                    inner += 1;
                    continue;
                }
            },
            _ => continue,
        };
        let commands = std::mem::take(&mut inner);
        let e = by_script.entry(name.clone()).or_default();
        e.3 = e.3.max(commands);
        if micros <= THRESHOLD_US || windows.iter().any(|w| w.contains(&id)) {
            // Logged because every command was, in a counting window: counted for its
            // commands only (logging every command slows Redis down).
            continue;
        }
        times.push(micros);
        if micros > 5_000 {
            let args: Vec<String> = match fields.get(3) {
                Some(Value::Array(args)) => args
                    .iter()
                    .skip(2)
                    .take(6)
                    .map(|a| match a {
                        Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let at = match fields.get(1) {
                Some(Value::Int(t)) => *t,
                _ => 0,
            };
            slowest.push((micros, at, name.clone(), args.join(" ")));
        }
        let e = by_script.entry(name).or_default();
        e.0 += 1;
        e.1 += u64::from(micros > 1000);
        e.2 = e.2.max(micros);
    }
    println!(
        "script time: {ACCOUNTS} accounts, {total} events stored in batches of {PER_ACCOUNT} and delivered by two gateways (one killed) in {:.1} s",
        elapsed.as_secs_f64()
    );
    println!("  delivery started at {started_unix} (unix s), a gateway killed at {killed_unix}");
    println!(
        "  Redis {}",
        if realtime {
            "under SCHED_FIFO (chrt -f): no other process takes its core while it runs a script"
        } else {
            "at normal priority (chrt -f refused): times include the scheduler's preemptions"
        }
    );
    println!(
        "  {calls} script calls, {:.0} µs each on average; calls over {THRESHOLD_US} µs, by script:",
        usec as f64 / calls.max(1) as f64
    );
    // The time above which only a share of all calls ran, when the log reaches it.
    times.sort_unstable_by(|a, b| b.cmp(a));
    let above = |share: f64| -> String {
        let n = (calls as f64 * share).floor() as usize;
        match times.get(n) {
            Some(t) if *t > THRESHOLD_US => format!("{t} µs"),
            _ => format!("under {THRESHOLD_US} µs"),
        }
    };
    println!(
        "  all scripts: 99.9th percentile {}, 99.99th {}; CPU time the hypervisor took, all CPUs, whole run: {} ms",
        above(0.001),
        above(0.0001),
        stolen * 1000 / clock_ticks()
    );
    match &pauses {
        Some(pauses) => {
            let over = |ms: f64| {
                let over: Vec<f64> = pauses
                    .iter()
                    .map(|p| p.waited_ms)
                    .filter(|w| *w > ms)
                    .collect();
                (over.len(), over.iter().sum::<f64>())
            };
            let longest = pauses.iter().map(|p| p.waited_ms).fold(0.0, f64::max);
            let ((n1, ms1), (n5, ms5)) = (over(1.0), over(5.0));
            println!(
                "  Redis's main thread kept off its CPU (its run_delay): {n1} times for over 1 ms ({ms1:.0} ms in all), {n5} of them over 5 ms ({ms5:.0} ms), longest {longest:.1} ms; the kernel's real-time share: {}",
                off_cpu::rt_share()
            );
        }
        None => println!("  (no scheduler statistics: pauses of Redis not measured)"),
    }
    let mut rows: Vec<_> = by_script.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .2));
    for (name, (over, over_ms, longest, commands)) in &rows {
        println!(
            "  {name:<10} over {THRESHOLD_US} µs: {over:>6}   over 1 ms: {over_ms:>5}   longest: {longest:>6} µs   most commands in one call: {commands}"
        );
    }
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (micros, at, name, args) in slowest.iter().take(8) {
        let paused = pauses.as_deref().map_or_else(
            || "not measured".to_string(),
            |p| {
                let ms = off_cpu::within_call(p, *at, *micros);
                let net = (*micros as f64 - ms * 1000.0).max(0.0);
                format!("{ms:.1} ms, the call less that {net:.0} µs")
            },
        );
        println!(
            "  over 5 ms: {micros} µs at {at}: {name} {args}; Redis off its CPU in that second: {paused}"
        );
    }
    if rows.is_empty() {
        println!("  (none)");
    }
}

/// Queued and in-flight deliveries of the whole queue (`GET /v1/queues` totals).
async fn queue_totals(http: &reqwest::Client, base: &str) -> Option<(u64, u64)> {
    let page: serde_json::Value = http
        .get(format!("{base}/v1/queues?limit=1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let totals = &page["totals"];
    Some((totals["depth"].as_u64()?, totals["in_flight"].as_u64()?))
}

/// Reads `/metrics` and the first page of `GET /v1/queues` once a second; panics if a
/// read is refused (the load would be missing from the figures).
async fn read_ops(base: String) {
    let http = reqwest::Client::new();
    loop {
        for request in [
            http.get(format!("{base}/metrics")),
            http.get(format!("{base}/v1/queues?limit=50"))
                .bearer_auth(ADMIN_KEY),
        ] {
            // A slow or failed read is only less load; a refusal is a broken setup.
            if let Ok(resp) = request.send().await {
                assert!(
                    resp.status().is_success(),
                    "ops read refused: {}",
                    resp.status()
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `calls` and `usec` of `cmdstat_fcall` in `INFO commandstats`: the calls the slow log
/// entries are named from.
fn fcall_stats(info: &str) -> (u64, u64) {
    let mut calls = 0;
    let mut usec = 0;
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_fcall:") else {
            continue;
        };
        for field in rest.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => calls += v.parse::<u64>().unwrap_or(0),
                Some(("usec", v)) => usec += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (calls, usec)
}

/// This phase's `redis-server`, under the real-time scheduling policy when the system
/// allows it (`chrt -f 10`), so the times Redis records are its own work, not the
/// preemptions of a shared machine; answers whether it is.
fn start_redis() -> (Proc, u16, bool) {
    let realtime = Command::new("chrt")
        .args(["-f", "10", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("zenrelay-bench-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    let mut cmd = if realtime {
        let mut cmd = Command::new("chrt");
        cmd.args(["-f", "10", "redis-server"]);
        cmd
    } else {
        Command::new("redis-server")
    };
    let child = cmd
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let proc = Proc(child);
    wait_for_port(port, Duration::from_secs(20), "redis-server");
    (proc, port, realtime)
}

/// CPU time the hypervisor gave to others (`steal` of `/proc/stat`), in clock ticks.
fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            line.split_whitespace().nth(8)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Clock ticks per second (`/proc/stat` counts in them).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Has Redis log every command (`on`: the calls' commands can be counted) or only the
/// calls over [`THRESHOLD_US`]; answers the id the next log entry gets (on) or the last
/// one's (off), so a window's entries are known by their ids.
async fn log_every_call(conn: &mut redis::aio::MultiplexedConnection, on: bool) -> i64 {
    let threshold = if on { 0 } else { THRESHOLD_US };
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(threshold)
        .query_async(conn)
        .await
        .expect("CONFIG SET slowlog-log-slower-than");
    // The newest entry so far: a window holds the entries after it (on) up to it (off).
    let newest: Vec<Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1)
        .query_async(conn)
        .await
        .expect("SLOWLOG GET 1");
    let id = match newest.first() {
        Some(Value::Array(fields)) => match fields.first() {
            Some(Value::Int(id)) => *id,
            _ => -1,
        },
        _ => -1,
    };
    if on {
        id + 1
    } else {
        id
    }
}

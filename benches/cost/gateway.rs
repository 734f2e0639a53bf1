//! The gateway's own work per stored single event, counted by callgrind against a bare
//! axum handler's per request: the CPU goal of single-event ingress (at most 1.6 times
//! the bare handler) measured in instructions, which do not move with the machine's load
//! as CPU time does (`cargo bench --bench relay -- ingress` measures that). And its work
//! per delivered Notify call, with the delivery phase's load.
//!
//! The gateway (on a plain `redis-server`, delivery off) and then the bare handler (this
//! benchmark's binary, started again to serve only it, with a worker thread per core as
//! the gateway has) each run under callgrind with instrumentation off; each takes `wrk`'s
//! single-event load of the ingress phase (64 connections, one account) for a few seconds
//! to warm up, then for [`SECONDS`] counted. Callgrind counts instructions in user space
//! only: the system calls of each request (reading and writing its socket, the gateway's
//! round trips to Redis) are left out of both. The requests in flight when the count
//! stops (at most 64, of tens of thousands) are counted in part but not answered in it.
//!
//! Then a gateway under callgrind delivers a backlog of [`DELIVERY_ACCOUNTS`] accounts ×
//! [`DELIVERY_PER_ACCOUNT`] events (stored beforehand by a plain gateway) to an instant
//! receiver, counted from its first Notify call to the last answer, as the Redis cost
//! phases count deliveries.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::{callgrind_command, names, store_backlog, Callgrind, Receiver, DELIVERY, NO_HISTORY};
use crate::support::{free_port, wait_for_port, Proc};
use crate::{accounts_toml, start_gateway_via, start_redis, wait_arrivals, wrk, BARE_PORT_VAR};

/// Seconds of load counted on each server (under callgrind each answers a few thousand
/// requests a second).
const SECONDS: u64 = 10;

/// Seconds of load before the count: connections opened, buffers and caches warm.
const WARM_UP_SECONDS: u64 = 3;

/// The backlog the delivery count drains: accounts, and events of each (every call of an
/// account in one lease group, as in the `delivery` Redis cost phase).
const DELIVERY_ACCOUNTS: usize = 2_000;
const DELIVERY_PER_ACCOUNT: usize = 3;

/// Instructions per request of the gateway storing single events, of the bare handler,
/// and their ratio.
pub async fn run() {
    let Some(dir) = std::env::var_os("ZENRELAY_BENCH_CALLGRIND")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
    else {
        println!("cost     gateway: counts only under callgrind (scripts/gateway-cost.sh)");
        return;
    };
    let (_redis, redis_port) = start_redis();
    let launcher = launcher(&dir);
    let one = accounts_toml(&["acme".to_string()], free_port());
    let gateway = start_gateway_via(
        &launcher,
        &format!("url = \"redis://127.0.0.1:{redis_port}/0\""),
        "gc",
        "enabled = false",
        &one,
    )
    .await;
    let mut callgrind = Callgrind::of(gateway.proc.0.id(), dir.clone());
    let url = format!("{}/v1/accounts/acme/notify", gateway.base);
    let gateway_cost = count(&mut callgrind, "cost-gateway", &url, true);
    drop(gateway);

    let port = free_port();
    let mut bare = callgrind_command(&dir);
    let bare = bare
        .arg(std::env::current_exe().expect("this benchmark's binary"))
        .env(BARE_PORT_VAR, port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("the bare handler under valgrind");
    let bare = Proc(bare);
    wait_for_port(port, Duration::from_secs(120), "the bare handler");
    let mut callgrind = Callgrind::of(bare.0.id(), dir.clone());
    let url = format!("http://127.0.0.1:{port}/v1/accounts/acme/notify");
    let bare_cost = count(&mut callgrind, "cost-bare", &url, false);
    drop(bare);
    println!(
        "cost     gateway, one stored single event: {} instructions; bare axum 202: {}; ratio {:.2} (goal <= 1.6)",
        super::grouped(gateway_cost),
        super::grouped(bare_cost),
        gateway_cost as f64 / bare_cost.max(1) as f64
    );

    let delivered = deliver(&launcher, &dir, redis_port).await;
    println!(
        "cost     gateway, one delivered Notify call ({DELIVERY_ACCOUNTS} accounts x {DELIVERY_PER_ACCOUNT}, instant receiver): {} instructions",
        super::grouped(delivered)
    );
}

/// Instructions per delivered call of a gateway run by `launcher` (valgrind's, its dumps
/// in `dir`), delivering a backlog stored on the Redis at `redis_port`.
async fn deliver(launcher: &[String], dir: &std::path::Path, redis_port: u16) -> u64 {
    let receiver = Receiver::start(0..=0).await;
    let accounts = names("g", DELIVERY_ACCOUNTS);
    let config = accounts_toml(&accounts, receiver.port);
    let redis = format!("url = \"redis://127.0.0.1:{redis_port}/0\"");
    let total = store_backlog(
        &redis,
        "gd",
        DELIVERY,
        &config,
        &accounts,
        DELIVERY_PER_ACCOUNT,
    )
    .await;
    let worker = start_gateway_via(
        launcher,
        &redis,
        "gd",
        &format!("{DELIVERY}{NO_HISTORY}"),
        &config,
    )
    .await;
    let mut callgrind = Callgrind::of(worker.proc.0.id(), dir.to_path_buf());
    // The receiver holds the first calls until the count starts, so none is answered
    // before it (the worker's first claims come before it, the record of the last
    // outcomes after it).
    receiver.first_call().await;
    callgrind.zero();
    receiver.open.send_replace(true);
    wait_arrivals(&receiver.arrivals, total, Duration::from_secs(1800)).await;
    let instructions = callgrind.dump("cost-gateway-delivery");
    drop(worker);
    instructions / total as u64
}

/// valgrind's command line, ahead of the program it runs.
fn launcher(dir: &std::path::Path) -> Vec<String> {
    let command = callgrind_command(dir);
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Instructions per request of the server behind `url` (under `callgrind`) while `wrk`
/// posts single events to it, counted as the dump `label`.
fn count(callgrind: &mut Callgrind, label: &str, url: &str, auth: bool) -> u64 {
    wrk(url, auth, WARM_UP_SECONDS);
    // the warm-up's last requests, left in flight by wrk, are answered before the count
    std::thread::sleep(Duration::from_secs(1));
    callgrind.zero();
    let (_, done) = wrk(url, auth, SECONDS);
    let total = callgrind.dump(label);
    assert!(done > 0.0, "no request answered at {url}");
    (total as f64 / done) as u64
}

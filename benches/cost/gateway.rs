//! The gateway's own work per stored single event, counted by callgrind against a bare
//! axum handler's per request: the CPU goal of single-event ingress (at most 1.6 times
//! the bare handler) measured in instructions, which do not move with the machine's load
//! as CPU time does (`cargo bench --bench relay -- ingress` measures that).
//!
//! The gateway (on a plain `redis-server`, delivery off) and then the bare handler (this
//! benchmark's binary, started again to serve only it, with a worker thread per core as
//! the gateway has) each run under callgrind with instrumentation off; each takes `wrk`'s
//! single-event load of the ingress phase (64 connections, one account) for a few seconds
//! to warm up, then for [`SECONDS`] counted. Callgrind counts instructions in user space
//! only: the system calls of each request (reading and writing its socket, the gateway's
//! round trips to Redis) are left out of both. The requests in flight when the count
//! stops (at most 64, of tens of thousands) are counted in part but not answered in it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{callgrind_command, Callgrind};
use crate::support::{free_port, Proc};
use crate::{accounts_toml, start_gateway_via, start_redis, wrk, BARE_PORT_VAR};

/// Seconds of load counted on each server (under callgrind each answers a few thousand
/// requests a second).
const SECONDS: u64 = 10;

/// Seconds of load before the count: connections opened, buffers and caches warm.
const WARM_UP_SECONDS: u64 = 3;

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
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the bare handler did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut callgrind = Callgrind::of(bare.0.id(), dir);
    let url = format!("http://127.0.0.1:{port}/v1/accounts/acme/notify");
    let bare_cost = count(&mut callgrind, "cost-bare", &url, false);
    drop(bare);
    println!(
        "cost     gateway, one stored single event: {} instructions; bare axum 202: {}; ratio {:.2} (goal <= 1.6)",
        super::grouped(gateway_cost),
        super::grouped(bare_cost),
        gateway_cost as f64 / bare_cost.max(1) as f64
    );
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

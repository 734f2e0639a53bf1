//! Proxy benchmark: `GET /api/v2/apps/installations.json` through the gateway's Apps API
//! proxy vs directly to the simulator, with the same load tool (`wrk`), connections and
//! duration, in one run. Prints requests/s of both and their ratio (goal >= 0.8), and the
//! median latency of both and the difference (goal < 1 ms added).
//!
//! Two scenarios, both printed:
//! 1. Loopback: the simulator answers at once. The worst case for a proxy: on one small
//!    machine the load tool, the gateway and the simulator share the cores, and the proxied
//!    path carries every request over loopback TCP twice, so the throughput ratio measures
//!    CPU sharing more than the gateway.
//! 2. Upstream latency: the simulator answers after 20 ms (a fault rule with `latency_ms`,
//!    applied to both paths alike) — still faster than Zendesk answers over the internet —
//!    so the figures show what the proxy costs a caller in practice.
//!
//! Each scenario also runs a bare axum handler on two worker threads, answering the same
//! path with the same delay under the same load, and prints the gateway's CPU per proxied
//! request against the handler's (goal <= 4x): at 20 ms a request costs any server more
//! CPU than at full load, where wake-ups and system calls are shared by many requests.
//!
//! Run with `cargo bench --bench proxy` (needs `wrk`: `scripts/install-deps.sh --bench`).
//! The simulator (`zenrelay sim`) and the gateway (`zenrelay serve`, delivery off, pacing
//! raised so that it does not bind) run as release child processes on free ports. The
//! simulator holds one app and one installation, so the answer is a real listing. The runs
//! alternate direct / proxied, and each figure is the median of its rounds.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

// Each benchmark uses a part of the shared helpers.
#[allow(dead_code)]
mod support;
use support::{free_port, parse_wrk, CpuMeter, Proc};

const KEY: &str = "bench-client-key-0123456789";
const PATH: &str = "/api/v2/apps/installations.json";
const CONNECTIONS: usize = 16;
const SECONDS: u64 = 5;
const ROUNDS: usize = 3;
const UPSTREAM_LATENCY_MS: u64 = 20;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("zenrelay-bench-{name}-{}.toml", free_port()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write config");
    path
}

fn spawn(args: &[&str], config: &std::path::Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_zenrelay"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .spawn()
        .expect("start zenrelay");
    Proc(child)
}

async fn wait_up(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

fn zip(manifest: &Value) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let files = [
        ("manifest.json", manifest.to_string()),
        (
            "translations/en.json",
            r#"{"app":{"name":"Bench","short_description":"b","long_description":"b"}}"#.into(),
        ),
        (
            "assets/iframe.html",
            "<!doctype html><title>b</title>".into(),
        ),
    ];
    for (name, body) in files {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        w.write_all(body.as_bytes()).expect("zip write");
    }
    w.finish().expect("zip").into_inner()
}

/// One app and one installation in the simulator.
async fn seed(sim: &str, auth: &str) {
    let http = reqwest::Client::new();
    let manifest = json!({
        "name": "Bench", "author": {"name": "Bench", "email": "b@bench.example"},
        "defaultLocale": "en", "private": true, "version": "1.0.0", "frameworkVersion": "2.0",
        "location": {"support": {"ticket_sidebar": {"url": "assets/iframe.html"}}},
        "parameters": [{"name": "token", "type": "text"}]
    });
    let part = reqwest::multipart::Part::bytes(zip(&manifest)).file_name("app.zip");
    let form = reqwest::multipart::Form::new().part("uploaded_data", part);
    let upload: Value = http
        .post(format!("{sim}/api/v2/apps/uploads.json"))
        .header("authorization", auth)
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("upload id");
    let job: Value = http
        .post(format!("{sim}/api/v2/apps.json"))
        .header("authorization", auth)
        .json(&json!({"name": "Bench", "short_description": "b", "upload_id": upload["id"]}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("job");
    let job_path = format!(
        "{sim}/api/v2/apps/job_statuses/{}.json",
        job["job_id"].as_str().unwrap_or("")
    );
    let mut app_id = Value::Null;
    for _ in 0..100 {
        let status: Value = http
            .get(&job_path)
            .header("authorization", auth)
            .send()
            .await
            .expect("job status")
            .json()
            .await
            .expect("job json");
        if status["status"] == "completed" {
            app_id = status["app_id"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app_id.is_u64(), "the bench app was not built");
    let resp = http
        .post(format!("{sim}/api/v2/apps/installations.json"))
        .header("authorization", auth)
        .json(&json!({"app_id": app_id, "settings": {"name": "Bench", "token": "t"}}))
        .send()
        .await
        .expect("install");
    assert!(resp.status().is_success(), "install: {}", resp.status());
}

/// Requests/s, median latency in milliseconds and requests done of one `wrk` run.
fn wrk(url: &str, auth: &str) -> (f64, f64, f64) {
    wrk_with(url, auth, CONNECTIONS)
}

/// [`wrk`] with another number of connections.
fn wrk_with(url: &str, auth: &str, connections: usize) -> (f64, f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{SECONDS}s"),
            "--latency",
            "-H",
            &format!("Authorization: {auth}"),
        ])
        .arg(url)
        .output()
        .expect("wrk must be installed (scripts/install-deps.sh --bench)");
    let run = parse_wrk(url, &String::from_utf8_lossy(&out.stdout));
    (run.rps, run.p50_ms, run.done)
}

/// A bare axum handler on two worker threads, answering `GET {PATH}` with a small JSON
/// body after `delay` (as the upstream does): the CPU a plain axum server spends per
/// request at the same load, the baseline of the gateway's.
fn bare_axum(delay: Duration) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                PATH,
                axum::routing::get(move || async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    axum::Json(json!({"installations": []}))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(listener.local_addr().expect("address").port());
            axum::serve(listener, app).await
        })
    });
    rx.recv().expect("bare axum port")
}

/// The CPU per request of a bare axum handler answering after `delay`, with the same
/// load tool and connections: this process's CPU (where the handler runs) per request.
fn bare_cpu(delay: Duration) -> f64 {
    let url = format!("http://127.0.0.1:{}{PATH}", bare_axum(delay));
    let _ = wrk(&url, "Bearer x");
    let meter = CpuMeter::start(&[None]);
    let (_, _, done) = wrk(&url, "Bearer x");
    meter.per(done)[0]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let sim_port = free_port();
    let sim_config = write_config(
        "sim",
        "[log]\nlevel = \"error\"\n[sim]\n[[sim.accounts]]\nsubdomain = \"acme\"\n[[sim.accounts.users]]\nemail = \"admin@acme.example\"\nrole = \"admin\"\napi_token = \"bench-token\"\n",
    );
    let sim_proc = spawn(
        &["sim", "--listen", &format!("127.0.0.1:{sim_port}")],
        &sim_config,
    );
    let sim = format!("http://127.0.0.1:{sim_port}");
    wait_up(&format!("{sim}/__sim/faults")).await;
    let account_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin@acme.example/token:bench-token")
    );
    seed(&sim, &account_auth).await;

    let gw_port = free_port();
    let gw_config = write_config(
        "gateway",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{gw_port}\"\n[redis]\nurl = \"redis://127.0.0.1:1/0\"\n\
             [delivery]\nenabled = false\n[proxy]\nper_minute = 100000000\nburst = 100000\n\
             [log]\nlevel = \"error\"\n\
             [[accounts]]\nid = \"acme\"\nsubdomain = \"acme\"\nbase_url = \"{sim}\"\nemail = \"admin@acme.example\"\napi_token = \"bench-token\"\n\
             [[clients]]\nname = \"bench\"\nkey = \"{KEY}\"\naccounts = [\"*\"]\n"
        ),
    );
    let gw_proc = spawn(&["serve"], &gw_config);
    let pids = Pids {
        sim: sim_proc.0.id(),
        gateway: gw_proc.0.id(),
    };
    let gw = format!("http://127.0.0.1:{gw_port}");
    wait_up(&format!("{gw}/healthz")).await;

    let direct_url = format!("{sim}{PATH}");
    let proxy_url = format!("{gw}/zendesk/acme{PATH}");
    let bearer = format!("Bearer {KEY}");
    let check = reqwest::Client::new()
        .get(&proxy_url)
        .header("authorization", &bearer)
        .send()
        .await
        .expect("proxied call");
    assert!(check.status().is_success(), "proxy: {}", check.status());
    let body: Value = check.json().await.expect("listing");
    assert_eq!(body["installations"].as_array().map(Vec::len), Some(1));

    println!(
        "zenrelay proxy benchmark ({} cores): GET {PATH}, wrk -t1 -c{CONNECTIONS} -d{SECONDS}s, alternating rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm both paths (connection pools, page cache) before measuring.
    let _ = wrk(&direct_url, &account_auth);
    let _ = wrk(&proxy_url, &bearer);
    let bare = bare_cpu(Duration::ZERO);
    compare(
        "loopback",
        bare,
        ROUNDS,
        &pids,
        &direct_url,
        &account_auth,
        &proxy_url,
        &bearer,
    );
    // The latency the proxy adds when nothing queues: one connection.
    let (_, d_p50, _) = wrk_with(&direct_url, &account_auth, 1);
    let (_, p_p50, _) = wrk_with(&proxy_url, &bearer, 1);
    println!(
        "proxy    loopback, 1 connection: median latency proxied {p_p50:.3} ms, direct {d_p50:.3} ms, added {:.3} ms",
        p_p50 - d_p50
    );

    let resp = reqwest::Client::new()
        .post(format!("{sim}/__sim/faults"))
        .json(&json!({"route": "/api/v2/apps/installations", "latency_ms": UPSTREAM_LATENCY_MS}))
        .send()
        .await
        .expect("latency rule");
    assert!(resp.status().is_success(), "latency rule refused");
    let bare = bare_cpu(Duration::from_millis(UPSTREAM_LATENCY_MS));
    compare(
        &format!("upstream {UPSTREAM_LATENCY_MS} ms"),
        bare,
        2,
        &pids,
        &direct_url,
        &account_auth,
        &proxy_url,
        &bearer,
    );
}

/// The processes whose CPU is accounted.
struct Pids {
    sim: u32,
    gateway: u32,
}

/// Alternating rounds of both paths; prints the medians, their ratio and difference, and
/// the CPU each process spent per request.
#[allow(clippy::too_many_arguments)]
fn compare(
    label: &str,
    bare: f64,
    rounds: usize,
    pids: &Pids,
    direct: &str,
    direct_auth: &str,
    proxied: &str,
    auth: &str,
) {
    let (mut d_rps, mut d_p50, mut p_rps, mut p_p50) = (vec![], vec![], vec![], vec![]);
    let (mut d_cpu, mut p_cpu) = (vec![], vec![]);
    for round in 1..=rounds {
        let meter = CpuMeter::start(&[Some(pids.sim)]);
        let (rps, p50, done) = wrk(direct, direct_auth);
        d_cpu.push(meter.per(done)[0]);
        println!("  {label}, round {round}, direct : {rps:>9.0} req/s, median {p50:.3} ms");
        d_rps.push(rps);
        d_p50.push(p50);
        let meter = CpuMeter::start(&[Some(pids.gateway), Some(pids.sim)]);
        let (rps, p50, done) = wrk(proxied, auth);
        p_cpu.push(meter.per(done));
        println!("  {label}, round {round}, proxied: {rps:>9.0} req/s, median {p50:.3} ms");
        p_rps.push(rps);
        p_p50.push(p50);
    }
    let gw_cpu = median(p_cpu.iter().map(|c| c[0]).collect());
    let sim_cpu = median(p_cpu.iter().map(|c| c[1]).collect());
    println!(
        "proxy    {label}: CPU per request: proxied gateway {gw_cpu:.1} us + simulator {sim_cpu:.1} us, direct simulator {:.1} us",
        median(d_cpu)
    );
    println!(
        "proxy    {label}: gateway CPU per proxied request against a bare axum handler at the same load ({bare:.1} us): {:.2}x (goal <= 4x)",
        gw_cpu / bare
    );
    let (d_rps, d_p50, p_rps, p_p50) = (median(d_rps), median(d_p50), median(p_rps), median(p_p50));
    println!(
        "proxy    {label}: throughput proxied {p_rps:.0} req/s, direct {d_rps:.0} req/s, ratio {:.2} (goal >= 0.8)",
        p_rps / d_rps
    );
    println!(
        "proxy    {label}: median latency proxied {p_p50:.3} ms, direct {d_p50:.3} ms, added {:.3} ms (goal < 1 ms)",
        p_p50 - d_p50
    );
}

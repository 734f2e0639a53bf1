//! Delivery on one Redis server against a Redis Cluster of three masters: the delivery
//! phase's load (10,000 backlogged accounts × 3 events, an instant receiver), with
//! [`PARTITIONS`] partitions on both, each store's Notify calls per second and Redis CPU
//! per call (every master's, summed), measured in the same run
//! (`cargo bench --bench relay -- cluster`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{free_port, wait_for_port, CpuMeter, Proc};
use super::{
    accounts_toml, embedded, post_batches, start_gateway_on, wait_arrivals, Bench, CONCURRENCY,
};

/// Partitions of both stores: enough to spread over three masters.
pub const PARTITIONS: u16 = 64;

/// Accounts of the backlog, and events each.
const ACCOUNTS: usize = 10_000;
const PER_ACCOUNT: usize = 3;

/// Starts `n` Redis Cluster nodes (plain `redis-server`s, nothing kept on disk) on ports
/// whose bus ports (+10000) are free, and joins them as masters without replicas.
pub fn start_cluster(n: usize) -> (Vec<Proc>, Vec<u16>) {
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        let port = loop {
            let port = free_port();
            if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
                break port;
            }
        };
        let dir = std::env::temp_dir().join(format!("zenrelay-bench-cluster-{port}"));
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        procs.push(Proc(child));
        ports.push(port);
    }
    for &port in &ports {
        wait_for_port(port, Duration::from_secs(60), "redis-server");
    }
    join_cluster(&ports);
    (procs, ports)
}

/// Joins the nodes on `ports` into one cluster of masters and waits until each says it
/// is ok.
pub fn join_cluster(ports: &[u16]) {
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli");
    assert!(created.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(120);
    let ok = |port: &u16| {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "info"])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok"))
    };
    while !ports.iter().all(ok) {
        assert!(Instant::now() < deadline, "the cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `[redis]` settings of a gateway on the cluster of `ports`.
pub fn cluster_redis(ports: &[u16]) -> String {
    let seeds: Vec<String> = ports
        .iter()
        .map(|p| format!("\"redis://127.0.0.1:{p}\""))
        .collect();
    format!("cluster_nodes = [{}]", seeds.join(", "))
}

/// Stores the backlog with delivery off, then delivers it with one gateway: Notify calls
/// per second (first to last arrival) and Redis CPU (µs) per call, all `redis_pids`
/// summed.
async fn deliver(b: &Bench, redis: &str, prefix: &str, redis_pids: &[u32]) -> (f64, f64) {
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("a{i:05}")).collect();
    let accounts = accounts_toml(&names, b.receiver);
    let total = ACCOUNTS * PER_ACCOUNT;
    let redis = format!("{redis}\npartitions = {PARTITIONS}");
    let ingress = start_gateway_on(&redis, prefix, "enabled = false", &accounts).await;
    let stored = post_batches(&ingress.base, &names, PER_ACCOUNT).await;
    assert_eq!(stored, total, "backlog not fully stored");
    drop(ingress);
    b.arrivals.lock().unwrap().clear();
    let pids: Vec<Option<u32>> = redis_pids.iter().map(|&p| Some(p)).collect();
    let meter = CpuMeter::start(&pids);
    let worker = start_gateway_on(&redis, prefix, "notify_per_minute = 100000", &accounts).await;
    let last = wait_arrivals(&b.arrivals, total, Duration::from_secs(300)).await;
    let first = b.arrivals.lock().map_or(last, |a| a[0].1);
    let rate = total as f64 / last.duration_since(first).as_secs_f64();
    let cpu: f64 = meter.per(total as f64).iter().sum();
    drop(worker);
    (rate, cpu)
}

/// The phase: one server, then the cluster.
pub async fn run(b: &Bench) {
    if embedded() {
        println!("cluster  skipped: the embedded backend has no cluster");
        return;
    }
    let single = deliver(
        b,
        &format!("url = \"redis://127.0.0.1:{}/0\"", b.redis),
        "cl1",
        &b.redis_pid.into_iter().collect::<Vec<_>>(),
    )
    .await;
    let (procs, ports) = start_cluster(3);
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    let cluster = deliver(b, &cluster_redis(&ports), "cl3", &pids).await;
    println!(
        "cluster  delivery, {ACCOUNTS} accounts x {PER_ACCOUNT}, {PARTITIONS} partitions, concurrency {CONCURRENCY}: one server {:.0} calls/s, Redis CPU {:.1} µs/call; 3-master cluster {:.0} calls/s ({:.2} of one server), Redis CPU {:.1} µs/call (all masters)",
        single.0, single.1, cluster.0, cluster.0 / single.0, cluster.1
    );
    drop(procs);
}

/// Seconds each client of the comparison runs, and its rounds.
const CLIENT_SECONDS: u64 = 5;
const CLIENT_ROUNDS: usize = 3;
/// Tasks sending commands at once, over as many hash tags.
const CLIENT_TASKS: u64 = 64;

/// Commands per second and client CPU (µs) per command of `send`, called by
/// [`CLIENT_TASKS`] tasks at once for [`CLIENT_SECONDS`], each an `INCR` of `{pN}:k` over
/// 64 hash tags.
async fn client_load<F, Fut>(send: F) -> (f64, f64)
where
    F: Fn(redis::Cmd) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let meter = CpuMeter::start(&[None]);
    let started = Instant::now();
    let until = started + Duration::from_secs(CLIENT_SECONDS);
    let tasks: Vec<_> = (0..CLIENT_TASKS)
        .map(|t| {
            let (send, done) = (send.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = t;
                while Instant::now() < until {
                    let mut cmd = redis::cmd("INCR");
                    cmd.arg(format!("{{p{}}}:k", i % 64));
                    send(cmd).await;
                    i += 1;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client task");
    }
    let n = done.load(std::sync::atomic::Ordering::Relaxed) as f64;
    (n / started.elapsed().as_secs_f64(), meter.per(n)[0])
}

/// The phase `cluster-client`: the gateway's cluster connections (one and four per master)
/// against the `redis` crate's async cluster client, on one 3-master cluster, in turn.
pub async fn compare_clients() {
    use zenrelay::queue::cluster::ClusterConnections;
    use zenrelay::queue::transport::Transport;

    let (procs, ports) = start_cluster(3);
    let seeds: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    for round in 1..=CLIENT_ROUNDS {
        let client = redis::cluster::ClusterClient::new(seeds.clone()).expect("seeds");
        let conn = client.get_async_connection().await.expect("the cluster");
        let (crate_rate, crate_cpu) = client_load(move |cmd| {
            let mut conn = conn.clone();
            async move {
                let _: i64 = cmd.query_async(&mut conn).await.expect("INCR");
            }
        })
        .await;
        let mut ours = Vec::new();
        for per_master in [1, 4] {
            let conns = std::sync::Arc::new(
                ClusterConnections::new(&seeds, 3 * per_master, Duration::from_secs(2), None)
                    .expect("seeds"),
            );
            ours.push(
                client_load(move |cmd| {
                    let conns = conns.clone();
                    async move {
                        conns.command(&cmd).await.expect("INCR");
                    }
                })
                .await,
            );
        }
        println!(
            "cluster  client, round {round}: redis crate {:.0} commands/s at {:.2} µs CPU each; zenrelay one connection per master {:.0}/s at {:.2} µs, four per master {:.0}/s at {:.2} µs",
            crate_rate, crate_cpu, ours[0].0, ours[0].1, ours[1].0, ours[1].1
        );
    }
    drop(procs);
}

//! Real parts for the gateway's tests: a `redis-server` on a free port, the simulator, and
//! gateways in-process or as `zenrelay serve` child processes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use zenrelay::app::Gateway;
use zenrelay::config::Config;
use zenrelay::sim::{Role, SimAccount, SimConfig, SimUser, Simulator};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends one command to the server on 127.0.0.1:`port` and returns the raw RESP reply
/// (enough for simple checks).
pub fn resp_command(port: u16, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    stream.write_all(req.as_bytes()).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The bulk strings of a RESP array reply (keys without line breaks).
fn resp_strings(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|pair| pair.len() == 2 && pair[0].starts_with('$'))
        .map(|pair| pair[1].to_string())
        .collect()
}

/// The ports of the masters among the nodes at `urls` (`redis://127.0.0.1:PORT`).
pub fn masters_of(urls: &[String]) -> Vec<u16> {
    urls.iter()
        .filter_map(|url| url.rsplit(':').next()?.parse::<u16>().ok())
        .filter(|&port| resp_command(port, &["ROLE"]).is_some_and(|role| role.contains("master")))
        .collect()
}

/// Keys under `prefix` on the Redis on `port`.
pub fn keys_under(port: u16, prefix: &str) -> usize {
    let reply = resp_command(port, &["KEYS", &format!("{prefix}:*")]).unwrap_or_default();
    reply
        .strip_prefix('*')
        .and_then(|r| r.split("\r\n").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Most arrivals in any `window` of `times`.
pub fn most_in_window(times: &[Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// A `redis-server` owned by one test, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    /// The primary's port, for a replica.
    replica_of: Option<u16>,
    /// A node of a Redis Cluster.
    cluster: bool,
    /// Killed by the kernel when the thread that started it ends (the shared cluster).
    dies_with_thread: bool,
}

impl RedisServer {
    /// A Redis that keeps nothing on disk.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// A Redis with `appendonly yes` and `appendfsync always`, so a restart keeps the data.
    pub fn start_persistent() -> Self {
        Self::launch(true)
    }

    /// A replica of `primary` (keeping nothing on disk), once it is in sync.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            persistent: false,
            replica_of: Some(primary.port),
            cluster: false,
            dies_with_thread: false,
        };
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server
            .command(&["INFO", "replication"])
            .is_some_and(|info| info.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn launch(persistent: bool) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            persistent,
            replica_of: None,
            cluster: false,
            dies_with_thread: false,
        };
        server.restart();
        server
    }

    /// Stops the process where it is (SIGSTOP): it holds its connections but answers
    /// nothing until [`RedisServer::thaw`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("a running server")
            .id()
            .to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port and directory.
    pub fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--maxmemory-policy")
            .arg("noeviction");
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(primary) = self.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if self.dies_with_thread {
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
            ]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ping(&self) -> bool {
        self.command(&["PING"])
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one command and returns the raw RESP reply (enough for simple checks).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        resp_command(self.port, args)
    }

    /// The field `field` of `INFO section` (e.g. `used_memory` of `memory`), as text.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self.command(&["INFO", section])?;
        let prefix = format!("{field}:");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim().to_string())
    }

    /// How many times Redis has run `command` (lower case, e.g. `fcall`), from
    /// `INFO commandstats` (which counts the commands scripts call too), those that failed
    /// included.
    pub fn command_calls(&self, command: &str) -> u64 {
        self.command_stat(command, "calls")
    }

    /// As [`RedisServer::command_calls`], without those that failed (e.g. an `FCALL` of a
    /// function not loaded yet).
    pub fn command_successes(&self, command: &str) -> u64 {
        self.command_calls(command) - self.command_stat(command, "failed_calls")
    }

    /// The figure `name` of `command` in `INFO commandstats` (0 when missing).
    fn command_stat(&self, command: &str, name: &str) -> u64 {
        self.info_field("commandstats", &format!("cmdstat_{command}"))
            .and_then(|v| {
                v.split(',')
                    .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Number of keys in the database.
    pub fn dbsize(&self) -> i64 {
        self.command(&["DBSIZE"])
            .and_then(|r| r.trim().trim_start_matches(':').parse().ok())
            .unwrap_or(-1)
    }
}

/// A Redis Sentinel watching one primary, killed on drop.
pub struct Sentinel {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// `count` sentinels watching `primary` under the name `master`, with a majority of
    /// them as quorum; returns once each knows `replicas` replicas of it (a failover needs
    /// one to promote) and the other sentinels.
    pub fn start_group(
        master: &str,
        primary: &RedisServer,
        replicas: usize,
        count: usize,
    ) -> Vec<Self> {
        let quorum = count / 2 + 1;
        let group: Vec<Sentinel> = (0..count)
            .map(|_| Self::launch(master, primary, quorum))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let known = |sentinel: &Sentinel, what: &str| {
            sentinel
                .command(&["SENTINEL", what, master])
                .and_then(|r| r.strip_prefix('*')?.split("\r\n").next()?.parse().ok())
                .unwrap_or(0usize)
        };
        while !group
            .iter()
            .all(|s| known(s, "replicas") >= replicas && known(s, "sentinels") + 1 >= count)
        {
            assert!(
                Instant::now() < deadline,
                "the sentinels never saw the replicas and each other"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        group
    }

    fn launch(master: &str, primary: &RedisServer, quorum: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {master} 127.0.0.1 {} {quorum}\n\
                 sentinel down-after-milliseconds {master} 500\n\
                 sentinel failover-timeout {master} 5000\n",
                dir.path().display(),
                primary.port
            ),
        )
        .expect("sentinel.conf written");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see .ci/run)");
        Sentinel {
            child,
            port,
            _dir: dir,
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command and returns the raw RESP reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        resp_command(self.port, args)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port below 55000 whose cluster bus port (the port + 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// A Redis Cluster of three masters with one replica each, owned by one test.
pub struct RedisCluster {
    /// The six nodes; the first three were created masters.
    pub nodes: Vec<RedisServer>,
}

/// A node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// The slot ranges it serves (masters).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, joins them (`redis-cli --cluster create`, one replica per master),
    /// and waits until every node says the cluster is ok and every replica is in sync.
    pub fn start() -> Self {
        Self::launch(false)
    }

    fn launch(dies_with_thread: bool) -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let mut node = RedisServer {
                    child: None,
                    port: cluster_port(),
                    dir: tempfile::tempdir().expect("temp dir"),
                    persistent: false,
                    replica_of: None,
                    cluster: true,
                    dies_with_thread,
                };
                node.restart();
                node
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (see scripts/install-deps.sh)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node says `cluster_state:ok`, sees three live masters and
    /// every replica's link to its master is up.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let info = n.command(&["CLUSTER", "INFO"]).unwrap_or_default();
                let repl = n.command(&["INFO", "replication"]).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            }) && self
                .topology()
                .iter()
                .filter(|n| n.master && !n.failed)
                .count()
                == 3;
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The nodes as a running node sees them.
    pub fn topology(&self) -> Vec<ClusterNode> {
        let reply = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| n.command(&["CLUSTER", "NODES"]))
            .unwrap_or_default();
        reply
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let flags = fields.get(2)?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|n| (n, n)),
                    })
                    .collect();
                Some(ClusterNode {
                    id: fields.first()?.to_string(),
                    port,
                    master: flags.contains("master"),
                    failed: flags.contains("fail"),
                    slots,
                })
            })
            .collect()
    }

    /// The node serving `slot`.
    pub fn owner(&self, slot: u16) -> ClusterNode {
        self.topology()
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Moves `slot` to the master on port `to` as an operator would: `SETSLOT IMPORTING`
    /// and `MIGRATING`, then `MIGRATE` of `batch` keys at a time with `pause` between
    /// batches (so the slot stays half-moved a while), then `SETSLOT NODE` on every node.
    pub fn move_slot(&self, slot: u16, to: u16, batch: usize, pause: Duration) -> usize {
        let from = self.owner(slot);
        let topology = self.topology();
        let target = topology
            .iter()
            .find(|n| n.port == to)
            .expect("the target is a node of this cluster");
        let slot_arg = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let reply = resp_command(port, args).unwrap_or_default();
            assert!(reply.starts_with('+'), "{args:?} on {port}: {reply:?}");
        };
        ok(
            to,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from.id],
        );
        ok(
            from.port,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target.id],
        );
        let mut moved = 0;
        loop {
            let reply = resp_command(
                from.port,
                &["CLUSTER", "GETKEYSINSLOT", &slot_arg, &batch.to_string()],
            )
            .unwrap_or_default();
            let keys = resp_strings(&reply);
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            ok(from.port, &args);
            moved += keys.len();
            std::thread::sleep(pause);
        }
        ok(to, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id]);
        ok(
            from.port,
            &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id],
        );
        for node in topology
            .iter()
            .filter(|n| n.port != to && n.port != from.port)
        {
            if !node.failed {
                let _ = resp_command(
                    node.port,
                    &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target.id],
                );
            }
        }
        moved
    }

    /// Number of keys on the node on `port`.
    pub fn dbsize(&self, port: u16) -> i64 {
        resp_command(port, &["DBSIZE"])
            .and_then(|r| r.trim().trim_start_matches(':').parse().ok())
            .unwrap_or(-1)
    }

    /// The node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }
}

/// The seed URLs of one Redis Cluster shared by the tests that only use keys under a
/// prefix of their own (and neither kill nor move anything): started once, by a thread
/// that lives as long as the test process, and killed by the kernel when it ends.
pub fn shared_cluster() -> Vec<String> {
    static URLS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    URLS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cluster = RedisCluster::launch(true);
            let _ = tx.send(cluster.urls());
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the shared cluster started")
    })
    .clone()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A simulator served on a free port by the test's runtime.
pub struct TestSim {
    pub sim: Simulator,
    pub base: String,
    _stop: oneshot::Sender<()>,
}

/// Credentials of simulated account `name`: admin `admin@{name}.example`, token `tok-{name}`.
pub fn sim_account(name: &str) -> SimAccount {
    SimAccount {
        subdomain: name.into(),
        users: vec![SimUser {
            email: format!("admin@{name}.example"),
            role: Role::Admin,
            api_token: Some(format!("tok-{name}")),
            password: Some(format!("pw-{name}")),
            oauth_token: Some(format!("oauth-{name}")),
        }],
    }
}

/// A simulator with the given accounts, Notify limit and window.
pub async fn spawn_sim(accounts: &[&str], notify_per_minute: u32, window_seconds: u64) -> TestSim {
    let config = SimConfig {
        listen: "127.0.0.1:0".into(),
        notify_per_minute,
        notify_window_seconds: window_seconds,
        tls: None,
        accounts: accounts.iter().map(|a| sim_account(a)).collect(),
    };
    config.validate().expect("valid sim config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = Simulator::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sim.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    TestSim {
        sim,
        base: format!("http://{addr}"),
        _stop: stop,
    }
}

impl TestSim {
    /// Adds a fault rule through the hook.
    pub async fn fault(&self, rule: serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/__sim/faults", self.base))
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "fault rule refused: {}",
            resp.text().await.unwrap()
        );
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) {
        reqwest::Client::new()
            .delete(format!("{}/__sim/faults", self.base))
            .send()
            .await
            .unwrap();
    }

    /// Bodies of the accepted notifications of `account`, parsed.
    pub fn received(&self, account: &str) -> Vec<serde_json::Value> {
        self.sim
            .notifications(account)
            .into_iter()
            .map(|n| n.json)
            .collect()
    }
}

/// The client key every test gateway accepts for every account.
pub const KEY: &str = "test-client-key-0123456789";
/// A key limited to account `acme`.
pub const ACME_ONLY_KEY: &str = "acme-only-key-0123456789";

/// Gateway config TOML: one account per simulated account (id = subdomain, API token
/// credentials), a `*` key and an `acme`-only key; `extra` is appended (sections).
pub fn gateway_toml(
    redis: &str,
    prefix: &str,
    sim: &TestSim,
    accounts: &[&str],
    delivery: &str,
) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
max_body_bytes = 4194304

[redis]
url = "{redis}"
key_prefix = "{prefix}"
partitions = 4

[delivery]
retry_base_ms = 50
retry_max_ms = 400
poll_interval_ms = 10
{delivery}

[log]
level = "warn"

[[clients]]
name = "all"
key = "{KEY}"
accounts = ["*"]
"#,
        port = free_port()
    );
    if accounts.contains(&"acme") {
        text.push_str(&format!(
            "\n[[clients]]\nname = \"acme-only\"\nkey = \"{ACME_ONLY_KEY}\"\naccounts = [\"acme\"]\n"
        ));
    }
    for a in accounts {
        text.push_str(&format!(
            "\n[[accounts]]\nid = \"{a}\"\nsubdomain = \"{a}\"\nbase_url = \"{}\"\nemail = \"admin@{a}.example\"\napi_token = \"tok-{a}\"\n",
            sim.base
        ));
    }
    text
}

/// Parses a config text.
pub fn config(text: &str) -> Config {
    Config::from_toml_with_env(text, "test.toml", &[]).expect("valid test config")
}

/// A gateway running in the test's runtime.
pub struct TestGateway {
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts a gateway in-process on a free port.
pub async fn spawn_gateway(config: Config) -> TestGateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway = Gateway::build(config).await.expect("gateway builds");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.run(listener, async move {
        let _ = stopped.await;
    }));
    TestGateway {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestGateway {
    /// Stops the gateway gracefully and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// An admin key reaching every account.
pub const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

/// `text` (a gateway's config, as [`gateway_toml`] makes it) with an admin client whose key
/// is [`ADMIN_KEY`].
pub fn with_admin(text: String) -> String {
    format!("{text}\n[[clients]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\naccounts = [\"*\"]\nadmin = true\n")
}

/// Sends a request with an optional bearer key; returns status and JSON (or text as a
/// JSON string).
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = http.request(method, url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// An account's row in a `GET /v1/queues` answer.
pub fn queue_row<'a>(
    queues: &'a serde_json::Value,
    account: &str,
) -> Option<&'a serde_json::Value> {
    queues["accounts"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["account"] == account))
}

/// Asserts that a setup command sent with [`RedisServer::command`] was done (a `+` or `:`
/// reply).
pub fn expect_ok(reply: Option<String>) {
    let reply = reply.expect("Redis answers");
    assert!(
        reply.starts_with('+') || reply.starts_with(':'),
        "setup command refused: {reply}"
    );
}

/// `GET {path}` of the gateway `api` with the admin key: status and JSON (or text as a
/// JSON string).
pub async fn admin_get(api: &Api, path: &str) -> (u16, serde_json::Value) {
    call(
        &api.http,
        reqwest::Method::GET,
        &format!("{}{path}", api.base),
        Some(ADMIN_KEY),
        None,
    )
    .await
}

/// Client for a gateway at `base`.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Api {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// POST /v1/accounts/{account}/notify with the `*` key.
    pub async fn notify(&self, account: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/accounts/{account}/notify", self.base))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends an event that must be accepted and waits until it is delivered; returns its
    /// id.
    pub async fn deliver(&self, account: &str, body: &serde_json::Value) -> String {
        let id = self.accept(account, body).await;
        self.wait_status(&id, "delivered", Duration::from_secs(10))
            .await;
        id
    }

    /// Sends an event that must be accepted; returns its id.
    pub async fn accept(&self, account: &str, body: &serde_json::Value) -> String {
        let resp = self.notify(account, body).await;
        let status = resp.status();
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{json}");
        json["id"].as_str().unwrap().to_string()
    }

    /// GET /v1/events/{id}
    pub async fn event(&self, id: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/v1/events/{id}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the event reaches `status`; returns its record.
    pub async fn wait_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.event(id).await;
            if event["status"] == status {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "event never became {status}: {event}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl From<&TestGateway> for Api {
    fn from(g: &TestGateway) -> Self {
        Api {
            base: g.base.clone(),
            http: g.http.clone(),
        }
    }
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `zenrelay serve` child process, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    _config: tempfile::NamedTempFile,
}

impl ServeProcess {
    /// Starts `zenrelay serve --config` with `text` and waits for `/healthz`.
    pub async fn start(text: &str) -> Self {
        Self::start_binary(&binary(), text).await
    }

    /// As [`ServeProcess::start`], with another build of `zenrelay` (e.g. an earlier
    /// release's).
    pub async fn start_binary(binary: &std::path::Path, text: &str) -> Self {
        let listen = config(text).server.listen;
        // A port another process holds would answer the health check for this one.
        drop(
            std::net::TcpListener::bind(&listen)
                .unwrap_or_else(|e| panic!("{listen} is taken ({e}): give each process a port")),
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start zenrelay serve");
        let base = format!("http://{listen}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = http.get(format!("{base}/healthz")).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "zenrelay serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ServeProcess {
            child,
            base,
            _config: file,
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; returns its status and how long it took.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        // Waits without blocking the runtime: the simulator in this process must go on
        // answering the calls the gateway finishes while it shuts down.
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for zenrelay serve") {
                return (status, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `zenrelay` binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zenrelay"))
}

/// A batch of `account` holding the one [`plain_event`] `name`, stored in its partition of
/// `partitions`, under a limit of 100 calls per minute and a depth of 100.
pub fn one_plain_batch(
    account: &str,
    partitions: u16,
    name: &str,
) -> zenrelay::queue::EnqueueBatch {
    let id = zenrelay::domain::EventId::new(zenrelay::domain::partition_of(account, partitions));
    zenrelay::queue::EnqueueBatch {
        account: account.into(),
        limit: zenrelay::queue::RateLimit {
            limit: 100,
            window_ms: 60_000,
        },
        max_depth: 100,
        idempotency_ttl_secs: 60,
        events: vec![plain_event(id, name)],
    }
}

/// The id of a stored event's outcome (a panic for any other outcome).
pub fn stored(outcome: &zenrelay::queue::EnqueueOutcome) -> zenrelay::domain::EventId {
    match outcome {
        zenrelay::queue::EnqueueOutcome::Stored { id, .. } => {
            zenrelay::domain::EventId::parse(id).expect("a valid id")
        }
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// A new event `id` named `name` in app 1: normal priority, no time to live, one Notify
/// call to every agent, no idempotency key.
pub fn plain_event(id: zenrelay::domain::EventId, name: &str) -> zenrelay::queue::NewEvent {
    zenrelay::queue::NewEvent {
        id,
        priority: zenrelay::domain::Priority::Normal,
        ttl_ms: 0,
        payload: zenrelay::domain::NotifyPayload::new(1, name, None),
        agents: vec![None],
        idempotency: None,
    }
}

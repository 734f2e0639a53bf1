//! Every command in README.md runs as written and does what the text around it says.
//!
//! The README's fenced blocks are parsed and each one is recognised by its first line
//! ([`Kind`]); a block this file does not know fails [`readme_blocks_and_commands_are_all_known`],
//! so a new command cannot go unchecked. The same holds for commands quoted inline
//! (`` `curl ...` ``, `` `cargo ...` ``, `` `docker ...` ``, `` `scripts/...` ``), each of which
//! is listed in [`inline_disposition`] as run here, run elsewhere, or not run and why.
//!
//! [`readme_shell_blocks_run_in_order`] runs the `sh` blocks with bash, in README order,
//! from the repository root, against freshly started processes. Only addresses are
//! rewritten: ports 8080, 9090 and 6379 become free ports, `cargo run --release --` becomes
//! the binary cargo built for these tests, the demo gets `--listen`/`--sim-listen`, and
//! `ZENRELAY__REDIS__URL` / `ZENRELAY__SERVER__LISTEN` point the processes at this test's own
//! `redis-server` and port. Nothing here uses the network or the Redis on 6379.
//!
//! Beside the blocks: [`every_config_file_passes_check_config`] (each file under `config/`,
//! and each command reading only its own tables), [`commands_table_matches_the_binary`],
//! [`docker_compose_config_is_valid`] (skipped with a message where `docker compose` does
//! not work) and [`output_to_a_pipe_has_no_colour_codes`].
//!
//! Blocks not run, and why (the test checks what it can of them instead):
//! - `scripts/test.sh` runs this very suite (and installs tools); it is checked to exist, be
//!   executable and parse, as are the scripts it calls.
//! - The `toml` webhook example is not a command; it is checked to be a valid `[[webhooks]]`
//!   entry of the sample config (with its schema path pointed at a schema file that exists).

use std::fs::File;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{binary, free_port, RedisServer};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// One fenced block of the README.
#[derive(Debug, Clone)]
struct Block {
    /// The info string after the fence (`sh`, `toml`, ...).
    lang: String,
    /// The body, with the fence's indentation removed.
    text: String,
    /// 1-based line of the opening fence.
    line: usize,
}

/// The fenced blocks of `markdown`, in order; fences may be indented (inside list items).
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(lang) = trimmed.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut text = String::new();
        let mut closed = false;
        for (_, body) in lines.by_ref() {
            if body.trim() == "```" {
                closed = true;
                break;
            }
            let cut = body.len() - body.trim_start().len();
            text.push_str(&body[cut.min(indent)..]);
            text.push('\n');
        }
        assert!(closed, "README.md:{}: unclosed code block", n + 1);
        out.push(Block {
            lang: lang.trim().to_string(),
            text,
            line: n + 1,
        });
    }
    out
}

/// The README's blocks this test knows, recognised by their first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Quick start: `cargo run --release -- demo`.
    Demo,
    /// Quick start: `scripts/test.sh` (not run: it runs this suite).
    TestScript,
    /// What to try next: send an event to the demo and follow it.
    TryEvent,
    /// What to try next: the simulator in the background, the gateway in the foreground.
    Standalone,
    /// Apps API proxy: `installations.json` through the gateway.
    ProxyInstallations,
    /// Webhooks: a `[[webhooks]]` entry (not a command).
    WebhookToml,
}

const KINDS: [Kind; 6] = [
    Kind::Demo,
    Kind::TestScript,
    Kind::TryEvent,
    Kind::Standalone,
    Kind::ProxyInstallations,
    Kind::WebhookToml,
];

fn kind(block: &Block) -> Option<Kind> {
    let first = block.text.lines().next().unwrap_or_default().trim();
    match (block.lang.as_str(), first) {
        ("sh", "cargo run --release -- demo") if block.text.trim() == first => Some(Kind::Demo),
        ("sh", "scripts/test.sh") if block.text.trim() == first => Some(Kind::TestScript),
        ("sh", f)
            if f.starts_with("answer=$(curl -s -X POST localhost:8080/v1/accounts/acme/notify") =>
        {
            Some(Kind::TryEvent)
        }
        ("sh", "cargo run --release -- sim --listen 127.0.0.1:9090 &") => Some(Kind::Standalone),
        ("sh", f)
            if f.starts_with(
                "curl -s localhost:8080/zendesk/acme/api/v2/apps/installations.json",
            ) =>
        {
            Some(Kind::ProxyInstallations)
        }
        ("toml", "[[webhooks]]") => Some(Kind::WebhookToml),
        _ => None,
    }
}

/// The README's blocks with their kinds; panics on a block this test does not know, or on a
/// known block that is missing or repeated.
fn known_blocks() -> Vec<(Kind, Block)> {
    let mut out = Vec::new();
    for block in blocks(&readme()) {
        match kind(&block) {
            Some(k) => out.push((k, block)),
            None => panic!(
                "README.md:{}: a ```{} block this test does not know how to run; teach \
                 tests/it/readme.rs to run it and check what the text says it does:\n{}",
                block.line, block.lang, block.text
            ),
        }
    }
    for k in KINDS {
        let count = out.iter().filter(|(kind, _)| *kind == k).count();
        assert_eq!(count, 1, "README.md should have exactly one {k:?} block");
    }
    out
}

/// What happens to a command quoted inline in the README.
#[derive(Debug, PartialEq, Eq)]
enum Inline {
    /// Run by [`readme_shell_blocks_run_in_order`].
    RunHere,
    /// Checked by [`docker_compose_config_is_valid`] (`docker compose config`).
    ComposeConfig,
    /// Not run here, for the reason given (checked otherwise where possible).
    NotRun(&'static str),
    /// A command synopsis from the Commands table, checked against `--help`.
    Synopsis,
}

fn inline_disposition(span: &str) -> Option<Inline> {
    let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(match span.as_str() {
        "cargo run --release -- demo --traffic" => Inline::NotRun(
            "run by demo::demo_traffic_stays_under_the_limit_and_stops_on_sigterm",
        ),
        s if s.starts_with("curl -s -X POST localhost:9090/__sim/faults -d '{\"account\": \"acme\", \"route\": \"notify\", \"status\": 429") => {
            Inline::RunHere
        }
        "docker compose up --build" | "docker compose --profile cluster up --build" => {
            Inline::ComposeConfig
        }
        "scripts/bench.sh"
        | "scripts/bench.sh relay"
        | "cargo bench --bench relay -- delivery"
        | "cargo bench --bench relay -- ingress delivery"
        | "cargo bench --bench relay -- ingress"
        | "cargo bench --bench relay -- latency"
        | "cargo bench --bench relay -- cluster"
        | "cargo bench --bench relay -- script-time"
        | "cargo bench --bench proxy"
        | "scripts/redis-cost.sh"
        | "scripts/gateway-cost.sh" => {
            Inline::NotRun("benchmarks: minutes of release builds and load; scripts checked to parse")
        }
        // The same script with the workloads it runs named (or its synopsis).
        s if s.starts_with("scripts/redis-cost.sh ") => {
            Inline::NotRun("benchmarks: minutes of release builds and load; scripts checked to parse")
        }
        "scripts/bullmq-cost.sh" => Inline::NotRun(
            "installs BullMQ from the npm registry and counts under callgrind (minutes); checked to parse",
        ),
        s if s == "scripts/lua-cost.sh" || s.starts_with("scripts/lua-cost.sh ") => Inline::NotRun(
            "counts one Lua script's cost under callgrind (a minute); checked to parse",
        ),
        "scripts/claim-design-cost.sh" => Inline::NotRun(
            "counts scripts' costs under callgrind (minutes); checked to parse",
        ),
        "scripts/claim-design/" => Inline::NotRun("the models claim-design-cost.sh counts"),
        "cargo doc --open" => Inline::NotRun("opens a browser"),
        "cargo test --test it -- --nocapture a_failing_partition_holds_back redis_returns_to_its_baseline" => {
            Inline::NotRun("two tests of this very suite, which runs them")
        }
        "cargo test --test it -- --nocapture a_master_killed" => {
            Inline::NotRun("a test of this very suite, which runs it")
        }
        "cargo build --release --no-default-features" => Inline::NotRun(
            "scripts/test.sh checks this build (cargo check) and that it lacks the simulator's crates",
        ),
        "scripts/screenshot.sh" => Inline::NotRun(
            "refreshes docs/dashboard.png: a minute of traffic, then headless Chromium; checked to parse",
        ),
        "scripts/test.sh" => Inline::NotRun("runs this very suite; checked to parse"),
        "scripts/previous-release.sh" => Inline::NotRun(
            "builds the previous release (minutes), which tests/it/upgrade.rs runs; checked to parse",
        ),
        s if s.starts_with("zenrelay ") => Inline::Synopsis,
        _ => return None,
    })
}

/// Inline code spans (possibly wrapped over lines) that quote a command.
fn inline_commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    let mut prose = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    for (i, span) in prose.split('`').enumerate() {
        if i % 2 == 1
            && ["curl ", "cargo ", "docker ", "scripts/", "zenrelay "]
                .iter()
                .any(|p| span.starts_with(p))
        {
            out.push(span.to_string());
        }
    }
    out
}

#[test]
fn readme_blocks_and_commands_are_all_known() {
    known_blocks();
    let text = readme();
    let mut unknown = Vec::new();
    let mut run_here = 0;
    for span in inline_commands(&text) {
        if span.starts_with("scripts/") && span.ends_with(".sh") && !span.contains(' ') {
            script_parses(&span);
        }
        match inline_disposition(&span) {
            Some(Inline::RunHere) => run_here += 1,
            Some(_) => {}
            None => unknown.push(span),
        }
    }
    assert!(
        unknown.is_empty(),
        "README.md quotes commands tests/it/readme.rs does not know: {unknown:#?}"
    );
    assert_eq!(run_here, 1, "the faults example is quoted once");
}

/// A `bash -c` child in its own process group, with stdout and stderr in files; the whole
/// group is killed on drop.
struct Shell {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Whether `stop` signalled the group and saw the shell exit.
    stopped: bool,
}

impl Shell {
    fn spawn(script: &str, env: &[(String, String)], dir: &Path, name: &str) -> Shell {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let mut cmd = shell(script, env);
        let child = cmd
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .expect("run bash");
        Shell {
            child,
            stdout,
            stderr,
            stopped: false,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }

    /// Waits until `ready` holds, failing with the output if the process exits first.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Shell) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready(self) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited ({status}) before {what}:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "no {what}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the process group and waits at most 20 s for the shell to exit.
    fn stop(&mut self, signal: &str) -> ExitStatus {
        signal_group(self.child.id(), signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.stopped = true;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "did not stop on {signal}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Unless `stop` signalled the whole group, kill what is left of it (a background
        // process may outlive the shell). Process ids are handed out in sequence, so the
        // group id is not reused while this test runs.
        if !self.stopped {
            signal_group(self.child.id(), "-KILL");
            let _ = self.child.wait();
        }
    }
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status();
}

/// `bash -c script` from the repository root with a clean zenrelay environment plus `env`.
fn shell(script: &str, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script).current_dir(root());
    for (name, _) in std::env::vars() {
        if name.starts_with("ZENRELAY") || name == "RUST_LOG" || name == "NO_COLOR" {
            cmd.env_remove(name);
        }
    }
    for name in [
        "ACME_API_TOKEN",
        "GLOBEX_API_TOKEN",
        "BILLING_RELAY_KEY",
        "ZENRELAY_CLIENT_KEY",
        "STATUSPAGE_SECRET",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs a short script to its end (at most 30 s) and returns its stdout; fails on a
/// non-zero exit.
fn run(script: &str, env: &[(String, String)]) -> String {
    let child = shell(script, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(30)).is_err() {
            signal_group(pid, "-KILL");
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "script failed ({}):\n{script}\n--- stdout\n{stdout}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    no_colour(&stdout, script);
    stdout
}

/// The JSON documents of `text`, which may follow each other on one line.
fn json_values(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not a sequence of JSON documents ({e}):\n{text}"))
}

fn no_colour(text: &str, what: &str) {
    assert!(
        !text.contains("\x1b["),
        "terminal escape codes in output written to a pipe or file ({what}):\n{text:?}"
    );
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Addresses a phase of the README runs on.
struct Ports {
    gateway: u16,
    sim: u16,
    redis: u16,
}

impl Ports {
    fn new(redis: u16) -> Ports {
        Ports {
            gateway: free_port(),
            sim: free_port(),
            redis,
        }
    }

    /// The block with its addresses (and `cargo run --release --`) rewritten.
    fn rewrite(&self, text: &str) -> String {
        let bin = binary().display().to_string();
        assert!(!bin.contains('\''), "binary path {bin} needs no quoting");
        text.replace("cargo run --release --", &format!("'{bin}'"))
            .replace("localhost:8080", &format!("localhost:{}", self.gateway))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.gateway))
            .replace("localhost:9090", &format!("localhost:{}", self.sim))
            .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", self.sim))
            .replace("127.0.0.1:6379", &format!("127.0.0.1:{}", self.redis))
    }

    /// `ZENRELAY__REDIS__URL` and `ZENRELAY__SERVER__LISTEN` for this phase.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "ZENRELAY__REDIS__URL".into(),
                format!("redis://127.0.0.1:{}/0", self.redis),
            ),
            (
                "ZENRELAY__SERVER__LISTEN".into(),
                format!("127.0.0.1:{}", self.gateway),
            ),
        ]
    }
}

/// Polls `check` for up to 30 s.
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The demo's stdout holds the banner; the running demo and its addresses.
struct DemoRun {
    shell: Shell,
    ports: Ports,
    /// The `curl` lines the banner prints, in order.
    curls: Vec<String>,
}

fn start_demo(block: &Block, redis: &RedisServer, dir: &Path) -> DemoRun {
    let ports = Ports::new(redis.port);
    let script = format!(
        "{} --listen 127.0.0.1:{} --sim-listen 127.0.0.1:{}",
        ports.rewrite(block.text.trim()),
        ports.gateway,
        ports.sim
    );
    let mut shell = Shell::spawn(&script, &ports.env(), dir, "demo");
    shell.wait_until("the demo's banner", |s| s.stdout().contains("Press Ctrl-C"));
    let banner = shell.stdout();
    no_colour(&banner, "demo banner");
    for promised in [
        format!("gateway     http://127.0.0.1:{}", ports.gateway),
        format!("simulator   http://127.0.0.1:{}", ports.sim),
        "client key  zenrelay-demo-key".to_string(),
        // Redis answered, so the banner says so.
        format!("at redis://127.0.0.1:{}/0", redis.port),
    ] {
        assert!(banner.contains(&promised), "{promised:?} not in:\n{banner}");
    }
    assert!(listening(ports.gateway) && listening(ports.sim));
    let curls = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(curls.len() >= 3, "the banner prints curl lines:\n{banner}");
    DemoRun {
        shell,
        ports,
        curls,
    }
}

/// Runs the banner's own `curl` lines: send, follow, see what the simulator received.
fn banner_curls_work(demo: &DemoRun) {
    let answer = run(&demo.curls[0], &[]);
    let answer = &json_values(&answer)[0];
    assert_eq!(answer["account"], "acme", "{answer}");
    assert_eq!(answer["deliveries"], 1, "{answer}");
    let id = answer["id"].as_str().expect("an event id").to_string();
    let follow = demo
        .curls
        .iter()
        .find(|c| c.contains("EVENT_ID"))
        .expect("the banner shows how to read an event's status")
        .replace("EVENT_ID", &id);
    eventually("the banner's event is delivered", || {
        let record = json_values(&run(&follow, &[]))[0].clone();
        (record["status"] == "delivered")
            .then_some(())
            .ok_or(record.to_string())
    });
    let notifications = demo
        .curls
        .iter()
        .find(|c| c.contains("/__sim/notifications"))
        .expect("the banner shows what the simulator received");
    let received = json_values(&run(notifications, &[]))[0].clone();
    assert!(
        received["notifications"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["json"]["event"] == "hello")),
        "{received}"
    );
    if let Some(metrics) = demo.curls.iter().find(|c| c.contains("/metrics")) {
        let text = run(metrics, &[]);
        assert!(text.contains("zenrelay_events_accepted_total"), "{text}");
    }
}

/// What to try next: the block sends an event, prints its answer, its status and what the
/// simulator received; followed until delivered.
fn try_event_block_works(block: &Block, demo: &DemoRun) {
    let script = demo.ports.rewrite(&block.text);
    let out = run(&script, &[]);
    let values = json_values(&out);
    assert_eq!(values.len(), 3, "answer, status, notifications:\n{out}");
    let (answer, record) = (&values[0], &values[1]);
    assert_eq!(answer["account"], "acme", "{out}");
    assert_eq!(answer["deliveries"], 1, "{out}");
    assert_eq!(record["id"], answer["id"], "{out}");
    assert!(
        ["queued", "delivered"].contains(&record["status"].as_str().unwrap_or_default()),
        "{out}"
    );
    assert!(values[2]["notifications"].is_array(), "{out}");
    // Following it: the same status and notifications lines, run again.
    let follow = script
        .lines()
        .skip_while(|l| !l.starts_with("id="))
        .collect::<Vec<_>>()
        .join("\n");
    let follow = format!("answer='{}'\n{follow}", values[0]);
    eventually("the README's event is delivered and received", || {
        let values = json_values(&run(&follow, &[]));
        let received = values[1]["notifications"].as_array().is_some_and(|n| {
            n.iter().any(|n| {
                n["json"]["event"] == "updateUsersPhoneNumber"
                    && n["json"]["body"] == "+61455534512"
                    && n["json"]["agent_id"] == 534
            })
        });
        (values[0]["status"] == "delivered" && received)
            .then_some(())
            .ok_or(format!("{values:?}"))
    });
}

/// The inline faults example: a 429 injected, then an event, and the account pauses.
fn faults_example_works(demo: &DemoRun) {
    let span = inline_commands(&readme())
        .into_iter()
        .find(|s| inline_disposition(s) == Some(Inline::RunHere))
        .expect("the faults example");
    let script = demo.ports.rewrite(&span.replace('\n', " "));
    let out = run(&script, &[]);
    assert!(!out.contains("\"error\""), "{out}");
    let answer = json_values(&run(&demo.curls[0], &[]))[0].clone();
    let id = answer["id"].as_str().expect("an event id").to_string();
    let queues = format!(
        "curl -s localhost:{}/v1/queues -H 'Authorization: Bearer zenrelay-demo-key'",
        demo.ports.gateway
    );
    eventually("the injected 429 reaches the gateway", || {
        let stats = json_values(&run(&queues, &[]))[0].clone();
        stats["accounts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["account"] == "acme"))
            .is_some_and(|acme| acme["upstream_429"].as_u64() >= Some(1))
            .then_some(())
            .ok_or(stats.to_string())
    });
    // The account paused for the 5 s of Retry-After, then delivered the event: measured on
    // the gateway's own timestamps, so a slow machine cannot make this pass or fail.
    let follow = format!(
        "curl -s localhost:{}/v1/events/{id} -H 'Authorization: Bearer zenrelay-demo-key'",
        demo.ports.gateway
    );
    let mut record = Value::Null;
    eventually("the event is delivered once the pause ends", || {
        record = json_values(&run(&follow, &[]))[0].clone();
        (record["status"] == "delivered")
            .then_some(())
            .ok_or(record.to_string())
    });
    let created = unix_ms(record["created_at"].as_str().unwrap_or_default());
    let delivered = unix_ms(
        record["deliveries"][0]["delivered_at"]
            .as_str()
            .unwrap_or_default(),
    );
    assert!(
        delivered >= created + 4_900,
        "delivered before the 5 s pause ended: {record}"
    );
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time (`2026-12-04T03:37:05.092Z`).
fn unix_ms(time: &str) -> i64 {
    let bad = || panic!("not an RFC 3339 UTC time: {time:?}");
    let Some((date, clock)) = time.strip_suffix('Z').and_then(|t| t.split_once('T')) else {
        bad()
    };
    let numbers = |text: &str, sep: char| -> Vec<i64> {
        text.split(sep)
            .map(|n| n.parse().unwrap_or_else(|_| bad()))
            .collect()
    };
    let [y, m, d] = numbers(date, '-')[..] else {
        bad()
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let [hh, mm, ss] = numbers(hms, ':')[..] else {
        bad()
    };
    let ms: i64 = format!("{fraction:0<3}")[..3]
        .parse()
        .unwrap_or_else(|_| bad());
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms
}

#[test]
fn unix_ms_reads_rfc3339() {
    assert_eq!(unix_ms("1970-01-01T00:00:00Z"), 0);
    assert_eq!(unix_ms("2000-03-01T00:00:01.5Z"), 951_868_801_500);
    assert_eq!(unix_ms("2026-12-04T03:37:05.092Z"), 1_796_355_425_092);
}

/// The standalone recipe: the simulator in the background, the gateway in the foreground,
/// from the repository root with the sample config.
fn start_standalone(block: &Block, redis: &RedisServer, dir: &Path) -> (Shell, Ports) {
    let ports = Ports::new(redis.port);
    let script = ports.rewrite(&block.text);
    let mut shell = Shell::spawn(&script, &ports.env(), dir, "standalone");
    shell.wait_until("the gateway and the simulator listening", |_| {
        listening(ports.gateway) && listening(ports.sim)
    });
    (shell, ports)
}

fn proxy_block_works(block: &Block, ports: &Ports) {
    let out = run(&ports.rewrite(&block.text), &[]);
    let through_gateway = json_values(&out)[0].clone();
    assert!(through_gateway["installations"].is_array(), "{out}");
    let direct = run(
        &format!(
            "curl -s localhost:{}/api/v2/apps/installations.json \
             -u 'admin@acme.example/token:sim-admin-token'",
            ports.sim
        ),
        &[],
    );
    assert_eq!(
        through_gateway,
        json_values(&direct)[0],
        "the simulator's own list"
    );
}

#[test]
fn readme_shell_blocks_run_in_order() {
    let blocks = known_blocks();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut demo: Option<DemoRun> = None;
    let mut standalone: Option<(Shell, Ports)> = None;
    let mut ran = Vec::new();
    for (kind, block) in &blocks {
        match kind {
            Kind::Demo => {
                let run = start_demo(block, &redis, dir.path());
                banner_curls_work(&run);
                demo = Some(run);
            }
            Kind::TestScript => test_script_is_runnable(),
            Kind::TryEvent => {
                let run = demo
                    .as_ref()
                    .expect("the demo runs before What to try next");
                try_event_block_works(block, run);
                faults_example_works(run);
            }
            Kind::Standalone => {
                // "Ctrl-C stops it": the demo is stopped before the next recipe starts.
                if let Some(mut run) = demo.take() {
                    let status = run.shell.stop("-INT");
                    assert!(
                        status.success(),
                        "demo exit {status}:\n{}",
                        run.shell.output()
                    );
                    no_colour(&run.shell.output(), "demo logs");
                }
                standalone = Some(start_standalone(block, &redis, dir.path()));
            }
            Kind::ProxyInstallations => {
                let (_, ports) = standalone
                    .as_ref()
                    .expect("the gateway runs on its own before the proxy example");
                proxy_block_works(block, ports);
            }
            Kind::WebhookToml => webhook_example_is_valid(block, dir.path()),
        }
        ran.push(*kind);
    }
    if let Some((mut shell, _)) = standalone.take() {
        shell.stop("-TERM");
        let output = shell.output();
        no_colour(&output, "simulator and gateway logs");
        assert!(!output.contains("config error"), "{output}");
    }
    assert_eq!(ran, KINDS, "README order");
}

/// `scripts/test.sh` runs this suite itself, so it is not run here: it and the scripts it
/// calls must exist, be executable and parse.
fn test_script_is_runnable() {
    let text = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    let mut scripts = vec!["scripts/test.sh".to_string()];
    for word in text.split_whitespace() {
        if word.starts_with("scripts/") && word.ends_with(".sh") {
            scripts.push(word.to_string());
        }
    }
    assert!(
        text.contains("cargo test"),
        "scripts/test.sh runs cargo test"
    );
    for script in scripts {
        script_parses(&script);
    }
}

fn script_parses(script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = root().join(script);
    let mode = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{script}: {e}"))
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "{script} is not executable");
    let status = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(status.success(), "{script} does not parse");
}

/// The webhook example is a valid entry of the sample config (its schema path pointed at
/// a schema file that exists, its secret in the environment).
fn webhook_example_is_valid(block: &Block, dir: &Path) {
    let schema = dir.join("statuspage.json");
    std::fs::write(&schema, r#"{"type": "object"}"#).unwrap();
    let sample = std::fs::read_to_string(root().join("config/zenrelay.toml")).unwrap();
    let entry = block.text.replace(
        "config/schemas/statuspage.json",
        &schema.display().to_string(),
    );
    let path = dir.join("with-webhook.toml");
    let mut file = File::create(&path).unwrap();
    write!(file, "{sample}\n{entry}").unwrap();
    let out = run(
        &format!(
            "'{}' check-config --config '{}'",
            binary().display(),
            path.display()
        ),
        &[
            ("ACME_API_TOKEN".into(), "t".into()),
            ("BILLING_RELAY_KEY".into(), "billing-key-0123456789".into()),
            (
                "STATUSPAGE_SECRET".into(),
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            ),
        ],
    );
    assert!(out.starts_with("config OK"), "{out}");
}

/// Defaults docker-compose.yml gives its `${VAR:-default}` variables.
fn compose_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut out = Vec::new();
    for piece in text.split("${").skip(1) {
        if let Some((name, rest)) = piece.split_once(":-") {
            if let Some((default, _)) = rest.split_once('}') {
                out.push((name.to_string(), default.to_string()));
            }
        }
    }
    assert!(
        !out.is_empty(),
        "docker-compose.yml gives its secrets defaults"
    );
    out
}

/// Every file under config/ passes check-config with the variables it documents (the
/// README's for the sample config, docker-compose.yml's for the stack), and a missing one
/// is named with its key and exit status 2.
#[test]
fn every_config_file_passes_check_config() {
    let bin = binary().display().to_string();
    let mut env = compose_env();
    env.push(("BILLING_RELAY_KEY".into(), "billing-key-0123456789".into()));
    let mut files = std::fs::read_dir(root().join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect::<Vec<_>>();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let out = run(
            &format!("'{bin}' check-config --config '{}'", file.display()),
            &env,
        );
        assert!(out.starts_with("config OK"), "{}: {out}", file.display());
    }
    // The default file, from the repository root, with nothing set.
    let out = shell(&format!("'{bin}' check-config"), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "config error: accounts[0].api_token: environment variable ACME_API_TOKEN is not set"
    );
    // `demo --config` reads only [redis], [delivery] and [log]: the sample config's
    // variables are not needed, and its delivery settings replace the demo's.
    let (gateway, sim_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Shell::spawn(
        &format!(
            "'{bin}' demo --config config/zenrelay.toml --listen 127.0.0.1:{gateway} \
             --sim-listen 127.0.0.1:{sim_port}"
        ),
        &[("ZENRELAY__REDIS__URL".into(), "memory://".into())],
        dir.path(),
        "demo-config",
    );
    demo.wait_until("the demo's banner", |s| s.stdout().contains("Press Ctrl-C"));
    let banner = demo.stdout();
    assert!(
        banner.contains("limit       100 Notify calls per account per rolling 60 s"),
        "{banner}"
    );
    assert!(demo.stop("-INT").success());
    // The compose file's simulator needs only its own variables...
    let sim_port = free_port();
    let only_sim: Vec<_> = env
        .iter()
        .filter(|(k, _)| k != "ZENRELAY_CLIENT_KEY")
        .cloned()
        .collect();
    let sim = format!("'{bin}' sim --config config/compose.toml --listen 127.0.0.1:{sim_port}");
    let mut running = Shell::spawn(&sim, &only_sim, dir.path(), "compose-sim");
    running.wait_until("the compose simulator listening", |_| listening(sim_port));
    running.stop("-TERM");
    // ... and reports a missing one with the key that needs it.
    let out = shell(&sim, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "config error: sim.accounts[0].users[0].api_token: environment variable ACME_API_TOKEN is not set"
    );
}

/// The Commands table's synopses match the binary's options.
#[test]
fn commands_table_matches_the_binary() {
    let bin = binary().display().to_string();
    let spans: Vec<String> = inline_commands(&readme())
        .into_iter()
        .filter(|s| inline_disposition(s) == Some(Inline::Synopsis) && s.contains(" [--"))
        .collect();
    assert_eq!(spans.len(), 4, "serve, sim, demo, check-config: {spans:?}");
    for span in spans {
        let command = span.split_whitespace().nth(1).unwrap().to_string();
        let help = run(&format!("'{bin}' {command} --help"), &[]);
        for word in span.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
            if word.starts_with("--") {
                assert!(
                    help.contains(word),
                    "{command} --help has no {word}:\n{help}"
                );
            }
        }
    }
}

/// `docker compose up --build`: where Docker with compose works, the compose file must be
/// valid; elsewhere the check is skipped with a message.
#[test]
fn docker_compose_config_is_valid() {
    let works = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // The README names the stack's client key: the default docker-compose.yml gives it.
    let (_, key) = compose_env()
        .into_iter()
        .find(|(name, _)| name == "ZENRELAY_CLIENT_KEY")
        .expect("docker-compose.yml gives ZENRELAY_CLIENT_KEY a default");
    let named = readme()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .contains(&format!(
            "client key `{key}` unless `ZENRELAY_CLIENT_KEY` is set"
        ));
    assert!(named, "README.md names the compose client key {key}");
    if !works {
        eprintln!("skipped: `docker compose version` does not work here, so `docker compose config` cannot be checked");
        return;
    }
    let out = run("docker compose config --quiet", &[]);
    assert!(out.trim().is_empty(), "{out}");
    let out = run("docker compose --profile cluster config --quiet", &[]);
    assert!(out.trim().is_empty(), "{out}");
}

/// Logs and the banner written to a pipe carry no terminal colour codes.
#[test]
fn output_to_a_pipe_has_no_colour_codes() {
    let port = free_port();
    let bin = binary().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Shell::spawn(
        &format!("'{bin}' sim --listen 127.0.0.1:{port} 2>&1 | cat"),
        &[],
        dir.path(),
        "piped-sim",
    );
    sim.wait_until("a log line", |s| s.stdout().contains("simulator listening"));
    sim.stop("-TERM");
    no_colour(&sim.output(), "sim logs through a pipe");
}

//! The operator dashboard in a real browser (headless Chromium driven over the Chrome
//! DevTools Protocol), its headers, the paged `GET /v1/queues`, `GET /v1/history`, and the
//! deploy/ files (every metric the Grafana dashboard and the alert rules name is one a
//! gateway exports).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

// ---- a small Chrome DevTools Protocol client ----

/// Where Chromium is: `$ZENRELAY_CHROMIUM`, else `chromium` on the `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ZENRELAY_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium with a fresh profile, killed on drop.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium. Without it the test fails, unless `ZENRELAY_SKIP_BROWSER=1` asks
    /// to skip it (then `None`).
    fn start() -> Option<Self> {
        let Some(binary) = chromium() else {
            assert!(
                std::env::var("ZENRELAY_SKIP_BROWSER").as_deref() == Ok("1"),
                "chromium is not installed: scripts/install-test-tools.sh installs it \
                 (ZENRELAY_SKIP_BROWSER=1 skips the browser tests)"
            );
            eprintln!("skipped: chromium not found and ZENRELAY_SKIP_BROWSER=1");
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1440,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose into the profile.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium did not open DevTools");
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Browser {
            child,
            port,
            _profile: profile,
        })
    }

    /// A new tab, driven over its own DevTools WebSocket.
    async fn tab(&self) -> Tab {
        let targets: Value = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await
            .expect("DevTools answers")
            .json()
            .await
            .unwrap();
        let url = targets["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("tab WebSocket");
        Tab { ws, next_id: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page, driven by DevTools commands.
struct Tab {
    ws: Socket,
    next_id: u64,
}

impl Tab {
    /// Sends a command and waits for its answer (events in between are dropped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(text)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let msg = self.ws.next().await.expect("DevTools open").unwrap();
                if let Message::Text(text) = msg {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("timed out waiting for {what}; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---- the gateway with traffic ----

/// The admin key of these tests' gateways.
const ADMIN: &str = ADMIN_KEY;

struct Setup {
    redis: RedisServer,
    sim: TestSim,
    gateway: TestGateway,
    api: Api,
}

/// A gateway with a backlogged account (`acme`: 5 calls per minute, 12 events), a dead
/// letter (`globex`: upstream rejects a call) and a paused account with work (`initech`).
async fn setup() -> Setup {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme", "globex", "initech"], 1000, 60).await;
    let mut text = gateway_toml(
        &redis.url(),
        "dash",
        &sim,
        &["acme", "globex", "initech"],
        "notify_per_minute = 5\nnotify_window_seconds = 60\nmax_attempts = 2",
    );
    text.push_str(&format!(
        "\n[[clients]]\nname = \"ops\"\nkey = \"{ADMIN}\"\naccounts = [\"*\"]\nadmin = true\n\
         \n[metrics]\nhistory_interval_seconds = 1\n"
    ));
    let gateway = spawn_gateway(config(&text)).await;
    let api = Api::from(&gateway);
    let admin = |path: &str| {
        api.http
            .post(format!("{}{path}", api.base))
            .bearer_auth(ADMIN)
    };
    let event = json!({"app_id": 1, "event": "dashboard", "body": {"n": 1}});
    assert_eq!(
        admin("/v1/accounts/initech/pause")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..3 {
        api.accept("initech", &event).await;
    }
    sim.fault(json!({"account": "globex", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let dead = api.accept("globex", &event).await;
    api.wait_status(&dead, "dead", Duration::from_secs(10))
        .await;
    for _ in 0..12 {
        api.accept("acme", &event).await;
    }
    Setup {
        redis,
        sim,
        gateway,
        api,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser_shows_the_queues_and_replays_a_dead_letter() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let mut s = setup().await;
    let base = s.gateway.base.clone();
    // The ring has a few points before the page loads.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Without a key: the prompt and nothing else, and no admin call is made.
    let mut tab = browser.tab().await;
    tab.call("Network.enable", json!({})).await;
    tab.navigate(&format!("{base}/")).await;
    tab.wait(
        "the key prompt",
        "!!document.getElementById('login') && !document.getElementById('login').hidden",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tab.eval("document.getElementById('app').hidden").await,
        true
    );
    assert_eq!(
        tab.eval("document.querySelectorAll('#rows tr').length")
            .await,
        0
    );
    let text = tab.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("acme") && !text.contains("globex") && text.contains("Admin key"),
        "{text}"
    );
    let admin_calls = tab
        .eval(
            "performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/')).length",
        )
        .await;
    assert_eq!(admin_calls, 0);

    // With the key in the fragment: the data, and the key leaves the address bar.
    tab.navigate(&format!("{base}/#key={ADMIN}")).await;
    tab.wait(
        "three account rows",
        "document.querySelectorAll('#rows tr[data-account]').length === 3",
    )
    .await;
    assert_eq!(tab.eval("location.hash").await, "");
    assert_eq!(
        tab.eval("sessionStorage.getItem('zenrelay.adminKey')")
            .await,
        ADMIN
    );
    // Needs attention first: the paused account with work, then the dead letter, then
    // the backlog.
    let order = tab
        .eval(
            "[...document.querySelectorAll('#rows tr[data-account]')].map(r => r.dataset.account)",
        )
        .await;
    assert_eq!(order, json!(["initech", "globex", "acme"]));
    let cell = |account: &str, class: &str| {
        format!(
            "document.querySelector('#rows tr[data-account=\"{account}\"] td.{class}').textContent"
        )
    };
    let depth: u64 = tab
        .eval(&cell("acme", "depth"))
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((7..=12).contains(&depth), "acme depth {depth}");
    assert_eq!(tab.eval(&cell("initech", "depth")).await, "3");
    assert_eq!(tab.eval(&cell("globex", "dead")).await, "1");
    assert_eq!(
        tab.eval("document.querySelector('#rows tr[data-account=\"initech\"] .badge').textContent")
            .await,
        "paused"
    );
    assert_eq!(
        tab.eval(
            "document.querySelector('#rows tr[data-account=\"acme\"] .bar-label').textContent"
        )
        .await,
        "5 / 5"
    );
    assert_eq!(
        tab.eval("document.querySelector('#t-dead .value').textContent")
            .await,
        "1"
    );
    // The charts are drawn: a line (or a single dot) in each of the totals' charts.
    tab.wait(
        "the charts",
        "['c-depth', 'c-rate'].every(id => document.querySelector('#' + id + ' path.line, #' + id + ' circle.dot'))",
    )
    .await;

    // The dead letter of globex, replayed from the page after the in-page confirmation.
    tab.eval("document.querySelector('#rows tr[data-account=\"globex\"]').click()")
        .await;
    tab.wait(
        "globex's dead letter",
        "document.getElementById('detail-name').textContent === 'globex' && document.querySelectorAll('#letters tr[data-delivery-id]').length === 1",
    )
    .await;
    let reason = tab
        .eval("document.querySelector('#letters tr[data-delivery-id] td.reason').textContent")
        .await;
    assert!(reason.as_str().unwrap().starts_with("rejected"), "{reason}");
    let body = tab
        .eval("document.querySelector('#letters pre.body').textContent")
        .await;
    assert!(body.as_str().unwrap().contains("dashboard"), "{body}");
    tab.eval("document.querySelector('#letters button[data-action=\"replay-one\"]').click()")
        .await;
    tab.wait(
        "the confirmation",
        "!document.getElementById('confirm').hidden",
    )
    .await;
    // Nothing happens before it is confirmed.
    let (_, letters) = admin_get(&s.api, "/v1/accounts/globex/dead-letters").await;
    assert_eq!(letters["total"], 1);
    tab.eval("document.getElementById('confirm-ok').click()")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, letters) = admin_get(&s.api, "/v1/accounts/globex/dead-letters").await;
        if letters["total"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not replayed: {letters}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back in the queue, it is delivered this time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.sim.received("globex").is_empty() {
        assert!(Instant::now() < deadline, "the replayed call never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tab.wait(
        "the page to show no dead letter",
        "document.querySelectorAll('#letters tr[data-delivery-id]').length === 0",
    )
    .await;

    // One partition unreadable: a banner names it, and the rest of the page stays.
    let broken = zenrelay::domain::partition_of("acme", 4);
    let changes = format!("dash:{{p{broken}}}:changed");
    expect_ok(s.redis.command(&["SET", &changes, "broken"]));
    tab.wait(
        "the partition banner",
        &format!("!document.getElementById('banner').hidden && document.getElementById('banner').textContent.includes('Queue partition {broken} cannot be read')"),
    )
    .await;
    assert_eq!(
        tab.eval("document.getElementById('health').textContent")
            .await,
        "Redis partly down"
    );
    assert_eq!(tab.eval(&cell("initech", "depth")).await, "3");
    expect_ok(s.redis.command(&["DEL", &changes]));
    tab.wait(
        "the banner to go",
        "document.getElementById('banner').hidden",
    )
    .await;

    // Redis down: a banner says so.
    s.redis.stop();
    tab.wait(
        "the Redis banner",
        "!document.getElementById('banner').hidden && document.getElementById('banner').textContent.includes('Redis does not answer')",
    )
    .await;
    assert_eq!(
        tab.eval("document.getElementById('health').textContent")
            .await,
        "Redis down"
    );

    // Forgetting the key brings the prompt back and clears the data.
    tab.eval("document.getElementById('forget').click()").await;
    assert_eq!(
        tab.eval("document.getElementById('app').hidden").await,
        true
    );
    assert_eq!(
        tab.eval("sessionStorage.getItem('zenrelay.adminKey')")
            .await,
        Value::Null
    );
    s.gateway.shutdown().await;
}

#[tokio::test]
async fn dashboard_assets_carry_a_strict_policy_and_routing_is_unchanged() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = gateway_toml(&redis.url(), "dash-assets", &sim, &["acme"], "");
    let gateway = spawn_gateway(config(&text)).await;
    let http = &gateway.http;
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let resp = http
            .get(format!("{}{path}", gateway.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = resp.text().await.unwrap();
        assert!(!body.contains(KEY), "{path} holds no data");
    }
    // Other paths outside the API still reach the proxy, which knows none of them.
    for path in ["/index.html", "/dashboard", "/nope"] {
        let resp = http
            .get(format!("{}{path}", gateway.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    // The page is public; the API behind it is not.
    let resp = http
        .get(format!("{}/v1/history", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    gateway.shutdown().await;
}

#[tokio::test]
async fn queues_are_filtered_sorted_and_paged_on_the_server() {
    let s = setup().await;
    let api = &s.api;
    // Without parameters: every account by id, with the new fields.
    let (status, all) = admin_get(api, "/v1/queues").await;
    assert_eq!(status, 200, "{all}");
    let ids: Vec<&str> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex", "initech"]);
    assert_eq!(all["total"], 3);
    assert_eq!(all["next_offset"], Value::Null);
    assert_eq!(all["totals"]["accounts"], 3);
    assert_eq!(all["totals"]["dead"], 1);
    assert_eq!(all["totals"]["paused"], 1);
    assert_eq!(all["accounts"][0]["limit"], 5);
    assert_eq!(all["accounts"][0]["window_seconds"], 60.0);
    assert_eq!(all["accounts"][2]["state"], "paused");

    let (_, page) = admin_get(api, "/v1/queues?sort=attention&limit=2").await;
    let ids: Vec<&str> = page["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["initech", "globex"]);
    assert_eq!(page["next_offset"], 2);
    assert_eq!(page["totals"]["accounts"], 3);
    let (_, next) = admin_get(api, "/v1/queues?sort=attention&limit=2&offset=2").await;
    assert_eq!(next["accounts"][0]["account"], "acme");
    assert_eq!(next["next_offset"], Value::Null);

    let (_, found) = admin_get(api, "/v1/queues?q=GLO").await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["accounts"][0]["account"], "globex");
    assert_eq!(found["totals"]["accounts"], 3);

    let (_, deep) = admin_get(api, "/v1/queues?sort=depth&limit=1").await;
    assert_eq!(deep["accounts"][0]["account"], "acme");

    for bad in ["limit=0", "limit=1001", "sort=size", "offset=-1"] {
        let (status, body) = admin_get(api, &format!("/v1/queues?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{bad}");
    }

    // The history: points for the total and for an account with work.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, history) = admin_get(api, "/v1/history?account=acme").await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(history["interval_seconds"], 1);
        let total = history["total"].as_array().unwrap().len();
        if total >= 2 && history["account"]["tracked"] == true {
            let last = history["account"]["points"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert!(last["depth"].as_u64().unwrap() >= 1, "{history}");
            break;
        }
        assert!(Instant::now() < deadline, "no history: {history}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = admin_get(api, "/v1/history?account=nobody").await;
    assert_eq!(status, 404);
    s.gateway.shutdown().await;
}

// ---- deploy/ ----

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `zenrelay_*` names in a PromQL expression (or any text).
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("zenrelay_") {
        let start = i + at;
        let word_start = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if word_start {
            into.insert(text[start..end].to_string());
        }
        i = end;
    }
}

fn exprs(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => metric_names(s, into),
                    _ => exprs(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, into)),
        _ => {}
    }
}

#[tokio::test]
async fn grafana_and_alert_rules_name_only_exported_metrics() {
    let mut named = BTreeSet::new();
    let grafana: Value = serde_json::from_str(&repo_file("deploy/grafana/zenrelay-dashboard.json"))
        .expect("the Grafana dashboard is JSON");
    exprs(&grafana["panels"], &mut named);
    exprs(&grafana["templating"], &mut named);
    assert!(
        named.len() >= 10,
        "the Grafana dashboard names too few metrics to be read: {named:?}"
    );
    let mut from_rules = BTreeSet::new();
    let rules = repo_file("deploy/prometheus/zenrelay-rules.yml");
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        metric_names(line, &mut from_rules);
    }
    assert!(
        from_rules.len() >= 5,
        "the alert rules name too few metrics to be read: {from_rules:?}"
    );
    named.extend(from_rules);

    // A gateway after some traffic: a delivery, a dead letter, a 429 and a proxied call.
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = gateway_toml(
        &redis.url(),
        "dash-metrics",
        &sim,
        &["acme"],
        "max_attempts = 2",
    );
    let gateway = spawn_gateway(config(&text)).await;
    let api = Api::from(&gateway);
    let event = json!({"app_id": 1, "event": "metrics"});
    sim.fault(json!({"account": "acme", "route": "notify", "status": 429, "retry_after": 1, "fail_next": 1}))
        .await;
    let id = api.accept("acme", &event).await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    sim.fault(json!({"account": "acme", "route": "notify", "status": 400, "fail_next": 1}))
        .await;
    let id = api.accept("acme", &event).await;
    api.wait_status(&id, "dead", Duration::from_secs(10)).await;
    let _ = gateway
        .http
        .get(format!(
            "{}/zendesk/acme/api/v2/apps/installations.json",
            gateway.base
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let scrape = gateway
        .http
        .get(format!("{}/metrics", gateway.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect();
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\n{scrape}"
    );
    gateway.shutdown().await;
}

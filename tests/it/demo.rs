//! `zenrelay demo` as a child process, and the docker-compose config.
//!
//! The demo is forced onto the in-memory queue by pointing `ZENRELAY__REDIS__URL` at a
//! closed port, so these tests never touch a Redis on 127.0.0.1:6379.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{binary, free_port};

/// A running `zenrelay demo`, killed on drop.
struct Demo {
    child: Child,
    gateway: String,
    sim: String,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    async fn start(extra: &[&str]) -> Demo {
        let (gw_port, sim_port) = (free_port(), free_port());
        let closed = free_port();
        let mut child = Command::new(binary())
            .arg("demo")
            .arg("--listen")
            .arg(format!("127.0.0.1:{gw_port}"))
            .arg("--sim-listen")
            .arg(format!("127.0.0.1:{sim_port}"))
            .args(extra)
            .env(
                "ZENRELAY__REDIS__URL",
                format!("redis://127.0.0.1:{closed}/0"),
            )
            .env_remove("ZENRELAY_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start zenrelay demo");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let demo = Demo {
            child,
            gateway: format!("http://127.0.0.1:{gw_port}"),
            sim: format!("http://127.0.0.1:{sim_port}"),
            stdout,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = http.get(format!("{}/healthz", demo.gateway)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) && demo.printed("Press Ctrl-C") {
                break;
            }
            assert!(Instant::now() < deadline, "zenrelay demo did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        demo
    }

    fn printed(&self, text: &str) -> bool {
        self.stdout.lock().unwrap().iter().any(|l| l.contains(text))
    }

    fn banner(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// The client key the banner shows.
    fn key(&self) -> String {
        let lines = self.stdout.lock().unwrap();
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with("client key"))
            .expect("the banner shows a client key");
        line.split_whitespace().last().unwrap().to_string()
    }

    async fn sim_notifications(&self, account: &str) -> Vec<Value> {
        let answer: Value = reqwest::get(format!(
            "{}/__sim/notifications?account={account}",
            self.sim
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        answer["notifications"].as_array().unwrap().clone()
    }

    /// Sends `signal` and waits (at most 15 s) for the exit.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").arg(signal).arg(&pid).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "zenrelay demo did not stop on {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn demo_relays_an_event_to_its_simulator_and_stops_on_sigint() {
    let mut demo = Demo::start(&[]).await;
    let banner = demo.banner();
    assert!(banner.contains("in memory"), "{banner}");
    assert!(banner.contains("NOT DURABLE"), "{banner}");
    assert!(banner.contains(&demo.gateway), "{banner}");
    assert!(
        banner.contains(&format!("{}/__sim/notifications?account=acme", demo.sim)),
        "{banner}"
    );
    assert!(banner.contains("curl -s -X POST"), "{banner}");

    let key = demo.key();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/accounts/acme/notify", demo.gateway))
        .bearer_auth(&key)
        .json(&json!({"app_id": 375, "event": "hello", "body": "Hello from zenrelay", "agent_id": 534}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record: Value = http
            .get(format!("{}/v1/events/{id}", demo.gateway))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if record["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = demo.sim_notifications("acme").await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0]["json"],
        json!({"app_id": 375, "event": "hello", "body": "Hello from zenrelay", "agent_id": 534})
    );
    // A wrong key is refused.
    let resp = http
        .post(format!("{}/v1/accounts/acme/notify", demo.gateway))
        .bearer_auth("not-the-demo-key")
        .json(&json!({"app_id": 1, "event": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let status = demo.stop("-INT");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn demo_traffic_stays_under_the_limit_and_stops_on_sigterm() {
    let mut demo = Demo::start(&["--traffic"]).await;
    // The first burst is the limit (20 per 10 s) plus five: 20 go, 5 wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while demo.sim_notifications("acme").await.len() < 20 {
        assert!(Instant::now() < deadline, "the burst was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        demo.sim_notifications("acme").await.len(),
        20,
        "the limiter holds the rest of the burst"
    );
    assert!(!demo.sim_notifications("globex").await.is_empty());
    let status = demo.stop("-TERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn compose_config_passes_check_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(binary())
        .arg("check-config")
        .arg("--config")
        .arg(format!("{root}/config/compose.toml"))
        .env("ACME_API_TOKEN", "compose-test-token")
        .env("GLOBEX_API_TOKEN", "compose-test-token")
        .env("ZENRELAY_CLIENT_KEY", "compose-test-client-key")
        .env_remove("ZENRELAY_CONFIG")
        .output()
        .expect("run zenrelay check-config");
    assert!(
        output.status.success(),
        "check-config failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

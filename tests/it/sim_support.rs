//! Helpers for the simulator tests: a simulator on 127.0.0.1 port 0 and authenticated clients.

use std::net::SocketAddr;

use base64::Engine;
use tokio::sync::oneshot;
use zenrelay::sim::{Role, SimAccount, SimConfig, SimUser, Simulator};

pub const ADMIN: (&str, &str) = ("admin@acme.example", "sim-admin-token");
pub const AGENT: (&str, &str) = ("agent@acme.example", "sim-agent-token");
pub const BETA_ADMIN: (&str, &str) = ("admin@beta.example", "beta-admin-token");

/// The default config plus a second account `beta`.
pub fn two_accounts() -> SimConfig {
    let mut config = SimConfig::default();
    config.accounts.push(SimAccount {
        subdomain: "beta".into(),
        users: vec![SimUser {
            email: BETA_ADMIN.0.into(),
            role: Role::Admin,
            api_token: Some(BETA_ADMIN.1.into()),
            password: None,
            oauth_token: Some("beta-oauth".into()),
        }],
    });
    config
}

pub struct TestSim {
    pub sim: Simulator,
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn(config: SimConfig) -> TestSim {
    spawn_with(config, reqwest::Client::new(), "http").await
}

pub async fn spawn_with(config: SimConfig, http: reqwest::Client, scheme: &str) -> TestSim {
    config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = Simulator::new(config);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(sim.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    TestSim {
        sim,
        addr,
        base: format!("{scheme}://127.0.0.1:{}", addr.port()),
        http,
        stop: Some(stop),
        task,
    }
}

pub fn token_auth((email, token): (&str, &str)) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{email}/token:{token}"));
    format!("Basic {v}")
}

pub fn password_auth(email: &str, password: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{password}"));
    format!("Basic {v}")
}

#[allow(dead_code)] // not every test file uses every helper
impl TestSim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str, who: (&str, &str)) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .header("authorization", token_auth(who))
    }

    pub fn post(&self, path: &str, who: (&str, &str)) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("authorization", token_auth(who))
    }

    pub fn put(&self, path: &str, who: (&str, &str)) -> reqwest::RequestBuilder {
        self.http
            .put(self.url(path))
            .header("authorization", token_auth(who))
    }

    pub fn delete(&self, path: &str, who: (&str, &str)) -> reqwest::RequestBuilder {
        self.http
            .delete(self.url(path))
            .header("authorization", token_auth(who))
    }

    pub async fn notify(&self, who: (&str, &str), body: &serde_json::Value) -> reqwest::Response {
        self.post("/api/v2/apps/notify.json", who)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn hook(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn add_fault(&self, rule: serde_json::Value) -> serde_json::Value {
        self.hook(reqwest::Method::POST, "/__sim/faults", Some(rule))
            .await
    }
}

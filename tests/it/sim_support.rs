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

// ---------------------------------------------------------------------------------------------
// App packages

/// A manifest that Zendesk accepts: one required secure parameter, one optional, a Support
/// and a Sell location served from the package's assets.
pub fn fixture_manifest() -> serde_json::Value {
    serde_json::json!({
        "name": "Fixture App",
        "author": {"name": "Zenrelay Tests", "email": "tests@zenrelay.example", "url": "https://zenrelay.example"},
        "defaultLocale": "en",
        "private": true,
        "version": "1.0.0",
        "frameworkVersion": "2.0",
        "location": {
            "support": {"ticket_sidebar": {"url": "assets/iframe.html", "flexible": true}},
            "sell": {"deal_card": "https://apps.zenrelay.example/deal"}
        },
        "parameters": [
            {"name": "api_token", "type": "text", "required": true, "secure": true},
            {"name": "items_per_page", "type": "number", "default": "6"}
        ]
    })
}

/// A zip holding `manifest`, an English translation, an asset and the given extra files.
pub fn fixture_zip(manifest: &serde_json::Value, extra: &[(&str, &str)]) -> Vec<u8> {
    let manifest = serde_json::to_string_pretty(manifest).unwrap();
    let mut files: Vec<(&str, &str)> = vec![
        ("manifest.json", manifest.as_str()),
        (
            "translations/en.json",
            r#"{"app":{"name":"Fixture App","short_description":"A fixture","long_description":"Used by tests"}}"#,
        ),
        (
            "assets/iframe.html",
            "<!doctype html><title>fixture</title>",
        ),
    ];
    files.extend_from_slice(extra);
    zip_files(&files)
}

/// A zip of exactly these files.
pub fn zip_files(files: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub const REQUIREMENTS: &str = r#"{
  "targets": {"an_email_target": {"title": "Email", "type": "email_target", "email": "x@zenrelay.example", "subject": "Hi"}},
  "ticket_fields": {"sample_ticket_field": {"type": "text", "title": "Sample"}}
}"#;

#[allow(dead_code)]
impl TestSim {
    /// Uploads a package through `{base}/uploads.json`; asserts 201 and returns the id.
    pub async fn upload(&self, base: &str, zip: Vec<u8>) -> u64 {
        let part = reqwest::multipart::Part::bytes(zip)
            .file_name("app.zip")
            .mime_str("application/zip")
            .unwrap();
        let form = reqwest::multipart::Form::new().part("uploaded_data", part);
        let resp = self
            .post(&format!("{base}/uploads.json"), ADMIN)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
        let v: serde_json::Value = resp.json().await.unwrap();
        v["id"].as_u64().expect("numeric upload id")
    }

    /// Polls a job status URL path until it is finished, the way clients do; returns the
    /// statuses seen and the final body and HTTP status.
    pub async fn poll_job(
        &self,
        path: &str,
    ) -> (Vec<String>, serde_json::Value, reqwest::StatusCode) {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let resp = self.get(path, ADMIN).send().await.unwrap();
            let code = resp.status();
            let v: serde_json::Value = resp.json().await.unwrap();
            let status = v["status"]
                .as_str()
                .expect("status at the top level")
                .to_string();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "completed" || status == "failed" {
                return (seen, v, code);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("job {path} never finished: {seen:?}");
    }

    /// Validates a package through `POST /api/v2/apps/validate`.
    pub async fn validate(&self, zip: Vec<u8>) -> (reqwest::StatusCode, serde_json::Value) {
        let part = reqwest::multipart::Part::bytes(zip).file_name("app.zip");
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = self
            .post("/api/v2/apps/validate", ADMIN)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let code = resp.status();
        (code, resp.json().await.unwrap())
    }
}

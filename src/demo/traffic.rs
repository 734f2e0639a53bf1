//! The sample load of `zenrelay demo --traffic`, sent through the gateway's own HTTP API.
//!
//! It runs in cycles of two rate windows (at least 10 s), one step per second:
//! - every second one event for `globex`, which acme's backlog never holds back;
//! - at the start of a cycle a batch of `limit + 5` events for `acme`: `limit` of them go at
//!   once, the other five wait for the rolling window to free a slot;
//! - a quarter into the cycle, the simulator is told (`POST /__sim/faults`) to answer acme's
//!   next Notify call with 503: the gateway retries it with backoff;
//! - 60% into the cycle, it is told to reject globex's next call with 400: the gateway
//!   dead-letters it at once.
//!
//! A watcher follows each event through `GET /v1/events/{id}` and logs what becomes of it;
//! every 5 s a line tells how many Notify calls the simulator accepted per account in the
//! last window, against the limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sim::Simulator;

/// Events followed at most (older ones are forgotten).
const MAX_TRACKED: usize = 500;

/// What the load needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    gateway: String,
    sim: String,
    key: String,
    limit: u32,
    window_secs: u64,
}

impl Plan {
    /// A load against the gateway at `gateway` (its client `key`) and the simulator at `sim`.
    pub fn new(config: &Config, gateway: &str, sim: &str, key: &str) -> Self {
        Plan {
            gateway: gateway.to_string(),
            sim: sim.to_string(),
            key: key.to_string(),
            limit: config.delivery.notify_per_minute,
            window_secs: config.delivery.notify_window_seconds,
        }
    }

    /// Seconds per cycle.
    fn cycle(&self) -> u64 {
        (2 * self.window_secs).max(10)
    }
}

/// One event sent by the load, and what the watcher last saw of it.
struct Tracked {
    id: String,
    account: &'static str,
    status: String,
}

struct Load {
    plan: Plan,
    http: reqwest::Client,
    tracked: Vec<Tracked>,
    sent: u64,
}

/// Sends the load until `stop` fires.
pub async fn run(plan: Plan, sim: Simulator, stop: CancellationToken) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "traffic: cannot build an HTTP client; no sample load");
            return;
        }
    };
    let cycle = plan.cycle();
    let mut load = Load {
        plan,
        http,
        tracked: Vec::new(),
        sent: 0,
    };
    tracing::info!(
        cycle_secs = cycle,
        "traffic: sample load on (1 event/s for globex, a burst for acme every cycle, one 503 and one 400 injected per cycle)"
    );
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let t = step % cycle;
        if t == 0 {
            load.burst().await;
        }
        if t == cycle / 4 {
            load.fault("acme", 503).await;
            tracing::info!(
                account = "acme",
                "traffic: the simulator will answer acme's next Notify call with 503; the gateway retries it with backoff"
            );
        }
        if t == cycle * 3 / 5 {
            load.fault("globex", 400).await;
            tracing::info!(
                account = "globex",
                "traffic: the simulator will reject globex's next Notify call with 400; the gateway dead-letters it, no retry"
            );
        }
        load.send("globex", "order_shipped").await;
        load.watch().await;
        if step % 5 == 4 {
            load.summary(&sim);
        }
        step += 1;
    }
}

impl Load {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.plan.gateway)
    }

    fn event(&mut self, name: &str) -> Value {
        self.sent += 1;
        json!({
            "app_id": 375,
            "event": name,
            "body": {"n": self.sent, "text": format!("sample event #{}", self.sent)},
            "agent_id": 534,
        })
    }

    fn track(&mut self, account: &'static str, id: &str) {
        self.tracked.push(Tracked {
            id: id.to_string(),
            account,
            status: "queued".into(),
        });
        if self.tracked.len() > MAX_TRACKED {
            self.tracked.remove(0);
        }
    }

    async fn send(&mut self, account: &'static str, name: &str) {
        let body = self.event(name);
        let result = self
            .http
            .post(self.url(&format!("/v1/accounts/{account}/notify")))
            .bearer_auth(&self.plan.key)
            .json(&body)
            .send()
            .await;
        match result {
            Ok(resp) if resp.status() == reqwest::StatusCode::ACCEPTED => {
                if let Ok(answer) = resp.json::<Value>().await {
                    if let Some(id) = answer["id"].as_str() {
                        self.track(account, id);
                    }
                }
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                tracing::warn!(account, status, answer = %text, "traffic: the gateway refused an event");
            }
            Err(e) => tracing::warn!(account, error = %e, "traffic: cannot reach the gateway"),
        }
    }

    /// A batch of `limit + 5` events for acme.
    async fn burst(&mut self) {
        let n = self.plan.limit as usize + 5;
        let events: Vec<Value> = (0..n).map(|_| self.event("call_ringing")).collect();
        let result = self
            .http
            .post(self.url("/v1/accounts/acme/notify/batch"))
            .bearer_auth(&self.plan.key)
            .json(&json!({ "events": events }))
            .send()
            .await;
        let answer = match result {
            Ok(resp) if resp.status().is_success() => resp.json::<Value>().await.ok(),
            Ok(resp) => {
                tracing::warn!(
                    status = resp.status().as_u16(),
                    "traffic: the gateway refused the batch"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "traffic: cannot reach the gateway");
                None
            }
        };
        let ids: Vec<String> = answer
            .as_ref()
            .and_then(|a| a["results"].as_array())
            .map(|results| {
                results
                    .iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            self.track("acme", id);
        }
        tracing::info!(
            account = "acme",
            "traffic: a burst of {} events for acme; at most {} go per rolling {} s, the rest wait for a free slot",
            ids.len(),
            self.plan.limit,
            self.plan.window_secs
        );
    }

    /// Makes the simulator fail the account's next Notify call with `status`.
    async fn fault(&self, account: &str, status: u16) {
        let rule = json!({"account": account, "route": "notify", "status": status, "fail_next": 1});
        let result = self
            .http
            .post(format!("{}/__sim/faults", self.plan.sim))
            .json(&rule)
            .send()
            .await;
        if let Err(e) = result.and_then(|r| r.error_for_status()) {
            tracing::warn!(account, error = %e, "traffic: cannot inject a fault into the simulator");
        }
    }

    /// Reads the status of every event not yet finished and logs what changed.
    async fn watch(&mut self) {
        for i in 0..self.tracked.len() {
            if !matches!(
                self.tracked[i].status.as_str(),
                "queued" | "delivering" | "retrying"
            ) {
                continue;
            }
            let id = self.tracked[i].id.clone();
            let Ok(resp) = self
                .http
                .get(self.url(&format!("/v1/events/{id}")))
                .bearer_auth(&self.plan.key)
                .send()
                .await
            else {
                return;
            };
            let Ok(record) = resp.json::<Value>().await else {
                continue;
            };
            let status = record["status"].as_str().unwrap_or("").to_string();
            let tracked = &mut self.tracked[i];
            if status.is_empty() || status == tracked.status {
                continue;
            }
            let delivery = &record["deliveries"][0];
            let attempts = delivery["attempts"].as_u64().unwrap_or(0);
            let last_status = delivery["last_status"].as_u64();
            let last_error = delivery["last_error"].as_str().unwrap_or("");
            let account = tracked.account;
            match status.as_str() {
                "retrying" => tracing::info!(
                    account,
                    event_id = %id,
                    attempts,
                    upstream_status = ?last_status,
                    "traffic: a Notify call failed; the gateway will retry it"
                ),
                "delivered" if attempts > 1 => tracing::info!(
                    account,
                    event_id = %id,
                    attempts,
                    "traffic: delivered after a retry"
                ),
                "dead" | "expired" => {
                    tracing::info!(
                        account,
                        event_id = %id,
                        upstream_status = ?last_status,
                        error = %last_error,
                        "traffic: dead letter; see it with: curl -s {}/v1/events/{id} -H 'Authorization: Bearer {}'",
                        self.plan.gateway,
                        self.plan.key
                    );
                }
                _ => {}
            }
            tracked.status = status;
        }
        // Keep only the last finished events around; pending ones stay followed.
        if self.tracked.len() > MAX_TRACKED / 2 {
            let cut = self.tracked.len() - MAX_TRACKED / 2;
            let mut seen = 0;
            self.tracked.retain(|t| {
                let pending = matches!(t.status.as_str(), "queued" | "delivering" | "retrying");
                seen += 1;
                pending || seen > cut
            });
        }
    }

    /// Logs how many calls the simulator accepted per account in the last window.
    fn summary(&self, sim: &Simulator) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let since = now.saturating_sub(self.plan.window_secs * 1000);
        for account in ["acme", "globex"] {
            let received = sim
                .notifications(account)
                .iter()
                .filter(|n| n.received_at_unix_ms >= since)
                .count();
            let waiting = self
                .tracked
                .iter()
                .filter(|t| {
                    t.account == account && matches!(t.status.as_str(), "queued" | "retrying")
                })
                .count();
            tracing::info!(
                account,
                "traffic: {account}: {received} Notify calls accepted by the simulator in the last {} s (limit {}), {waiting} waiting",
                self.plan.window_secs,
                self.plan.limit
            );
        }
    }
}

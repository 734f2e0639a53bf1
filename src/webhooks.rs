//! Signed webhooks: `POST /v1/webhooks/{name}` turns a third party's payload into a Notify
//! event of the webhook's account.
//!
//! Order of checks: webhook name (404) → throttle (429) → raw size (413) → signature on the
//! raw bytes (401: missing, bad, or a timestamp outside the tolerance) → media type (415)
//! → JSON (400) → the webhook's JSON Schema (422) → condition (200 `{"skipped": true}` when
//! the payload does not match: acknowledged, nothing stored) → mapping (422 naming the
//! missing payload pointer) → the normal intake ([`crate::intake::Intake::prepare`], 413/422)
//! → replay check (409 for a delivery id already accepted) → stored (202 `{"id"}`).
//!
//! Signatures:
//! - Standard Webhooks: HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the
//!   base64-decoded `whsec_` secret; `webhook-signature` holds space-separated `v1,<base64>`
//!   values, any of which may match (so senders can rotate); the timestamp must be within
//!   `tolerance_seconds` of now. The replay key is `webhook-id`.
//! - GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body with the raw secret; the
//!   replay key is the signature (GitHub does not sign `X-GitHub-Delivery`).
//!
//! Every configured secret (`secret` and `previous_secrets`) is tried; comparisons are
//! constant-time (`hmac`'s `verify_slice`). The replay key is the stored event's
//! idempotency key, kept for the webhook's replay window: checking it and storing the
//! event are one atomic step, so a sender's retry after a failure is never refused as a
//! replay, and a replay is 409.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::config::{ConditionConfig, Config, ConfigError, SignatureKind, WebhookConfig};
use crate::domain::FieldError;
use crate::schema::SchemaValidator;

type HmacSha256 = Hmac<Sha256>;

/// Longest delivery id accepted.
const MAX_ID_LEN: usize = 255;

/// Where a target field's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Literal(Value),
    Pointer(String),
}

/// One configured webhook, ready to verify and map requests.
pub struct Webhook {
    /// Its name.
    pub name: String,
    /// The account it notifies.
    pub account: String,
    /// How long a delivery id is remembered (a repeat within it is a replay).
    pub replay_window: Duration,
    /// The JSON Schema payloads must match, if any.
    pub schema: Option<Arc<SchemaValidator>>,
    kind: SignatureKind,
    secrets: Vec<SecretSlice<u8>>,
    tolerance: Duration,
    mapping: Vec<(&'static str, Source)>,
    condition: Option<ConditionConfig>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("account", &self.account)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// A required header is absent or malformed.
    Missing(&'static str),
    /// The timestamp is outside the tolerance.
    Stale,
    /// No signature matches.
    Mismatch,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

impl Webhook {
    /// The webhook of a validated entry: its secrets and schema are the ones validation
    /// decoded and compiled.
    fn from_config(config: &WebhookConfig) -> Result<Self, ConfigError> {
        let parts = config.parts()?;
        let mapping = config
            .mapping()
            .into_iter()
            .filter_map(|(field, literal, pointer)| {
                let source = match (literal, pointer) {
                    (Some(v), _) => Source::Literal(v.clone()),
                    (None, Some(p)) => Source::Pointer(p.to_string()),
                    (None, None) if field == "body" => Source::Pointer(String::new()),
                    (None, None) => return None,
                };
                Some((field, source))
            })
            .collect();
        Ok(Webhook {
            name: config.name.clone(),
            account: config.account.clone(),
            kind: config.signature,
            secrets: parts.secrets.clone(),
            tolerance: Duration::from_secs(config.tolerance_seconds),
            replay_window: Duration::from_secs(config.replay_window_seconds),
            schema: parts.schema.clone(),
            mapping,
            condition: config.condition.clone(),
        })
    }

    fn mac(&self, secret: &SecretSlice<u8>) -> Option<HmacSha256> {
        HmacSha256::new_from_slice(secret.expose_secret()).ok()
    }

    /// Verifies the request's signature; returns its delivery id (the replay key), if the
    /// scheme has one.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<String>, SignatureError> {
        match self.kind {
            SignatureKind::None => Ok(header(headers, "webhook-id")
                .or_else(|| header(headers, "x-github-delivery"))
                .filter(|id| valid_id(id))
                .map(String::from)),
            SignatureKind::StandardWebhooks => self.verify_standard(headers, body, now).map(Some),
            SignatureKind::Github => self.verify_github(headers, body).map(Some),
        }
    }

    fn verify_standard(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, SignatureError> {
        let id = header(headers, "webhook-id")
            .filter(|id| valid_id(id))
            .ok_or(SignatureError::Missing("webhook-id"))?;
        let ts_text = header(headers, "webhook-timestamp")
            .ok_or(SignatureError::Missing("webhook-timestamp"))?;
        let ts: i64 = ts_text
            .parse()
            .map_err(|_| SignatureError::Missing("webhook-timestamp"))?;
        let signatures = header(headers, "webhook-signature")
            .ok_or(SignatureError::Missing("webhook-signature"))?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now.abs_diff(ts) > self.tolerance.as_secs() {
            return Err(SignatureError::Stale);
        }
        let candidates: Vec<Vec<u8>> = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .collect();
        if candidates.is_empty() {
            return Err(SignatureError::Missing("webhook-signature"));
        }
        let mut matched = false;
        for secret in &self.secrets {
            let Some(mut mac) = self.mac(secret) else {
                continue;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts_text.as_bytes());
            mac.update(b".");
            mac.update(body);
            for candidate in &candidates {
                // Every pair is checked, so timing does not tell which one matched.
                matched |= mac.clone().verify_slice(candidate).is_ok();
            }
        }
        if matched {
            Ok(id.to_string())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    fn verify_github(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, SignatureError> {
        let signature = header(headers, "x-hub-signature-256")
            .and_then(|s| s.strip_prefix("sha256="))
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .ok_or(SignatureError::Missing("X-Hub-Signature-256"))?;
        // GitHub signs only the body, not `X-GitHub-Delivery`: the replay key is the
        // signature itself, so a captured request cannot be replayed under a new id.
        let id = format!("sha256-{}", hex::encode(&signature));
        let mut matched = false;
        for secret in &self.secrets {
            let Some(mut mac) = self.mac(secret) else {
                continue;
            };
            mac.update(body);
            matched |= mac.verify_slice(&signature).is_ok();
        }
        if matched {
            Ok(id.to_string())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// Whether the payload passes the webhook's condition (true without one).
    pub fn matches(&self, payload: &Value) -> bool {
        let Some(c) = &self.condition else {
            return true;
        };
        let value = payload.pointer(&c.pointer);
        if let Some(expected) = &c.equals {
            value == Some(expected)
        } else if let Some(allowed) = &c.one_of {
            value.is_some_and(|v| allowed.contains(v))
        } else if let Some(exists) = c.exists {
            value.is_some() == exists
        } else {
            true
        }
    }

    /// The Notify event document the payload maps to, or each payload pointer the
    /// mapping needs but the payload lacks.
    pub fn map(&self, payload: &Value) -> Result<Value, Vec<FieldError>> {
        let mut out = Map::new();
        let mut missing = Vec::new();
        for (field, source) in &self.mapping {
            match source {
                Source::Literal(v) => {
                    out.insert((*field).to_string(), v.clone());
                }
                Source::Pointer(p) => match payload.pointer(p) {
                    Some(v) => {
                        out.insert((*field).to_string(), v.clone());
                    }
                    None => missing.push(FieldError::new(
                        p.clone(),
                        format!("is required by the webhook's mapping of `{field}`"),
                    )),
                },
            }
        }
        if missing.is_empty() {
            Ok(Value::Object(out))
        } else {
            Err(missing)
        }
    }
}

/// Every configured webhook, by name.
#[derive(Debug, Default)]
pub struct Webhooks {
    by_name: HashMap<String, Webhook>,
}

impl Webhooks {
    /// The webhooks of a validated `config`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let by_name = config
            .webhooks
            .iter()
            .map(|w| Webhook::from_config(w).map(|hook| (w.name.clone(), hook)))
            .collect::<Result<_, _>>()?;
        Ok(Webhooks { by_name })
    }

    /// The webhook called `name`.
    pub fn get(&self, name: &str) -> Option<&Webhook> {
        self.by_name.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    /// A runtime-accounts key, so that the webhook's account needs no `[[accounts]]` entry.
    const SEAL_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn hook(kind: &str, secret: &str, extra: &str) -> Webhook {
        let text = format!(
            "[runtime_accounts]\nencryption_key = \"{SEAL_KEY}\"\n\
             [[webhooks]]\nname = \"h\"\naccount = \"acme\"\nsignature = \"{kind}\"\nsecret = \"{secret}\"\napp_id = 1\nevent = \"e\"\n{extra}"
        );
        let config = Config::from_toml_with_env(&text, "test.toml", &[]).unwrap();
        Webhook::from_config(&config.webhooks[0]).unwrap()
    }

    fn sign(key: &[u8], content: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(content);
        mac.finalize().into_bytes().to_vec()
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn standard_webhooks_signatures() {
        let key = b"0123456789abcdef0123456789abcdef";
        let h = hook("standard-webhooks", &format!("whsec_{}", b64(key)), "");
        let now = SystemTime::now();
        let ts = now
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let body = br#"{"a":1}"#;
        let good = b64(&sign(
            key,
            format!("msg_1.{ts}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        ));
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert("webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&format!("v1,{}  v1,{good}", b64(b"nope"))).unwrap(),
        );
        assert_eq!(h.verify(&headers, body, now), Ok(Some("msg_1".into())));
        assert_eq!(
            h.verify(&headers, b"{\"a\":2}", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            h.verify(&headers, body, now + Duration::from_secs(301)),
            Err(SignatureError::Stale)
        );
        headers.remove("webhook-id");
        assert_eq!(
            h.verify(&headers, body, now),
            Err(SignatureError::Missing("webhook-id"))
        );
    }

    #[test]
    fn github_signature_and_previous_secret() {
        let h = hook(
            "github",
            "new-secret",
            "previous_secrets = [\"old-secret\"]",
        );
        let body = b"{}";
        let mut headers = HeaderMap::new();
        headers.insert("x-github-delivery", HeaderValue::from_static("d-1"));
        for (key, ok) in [
            (&b"old-secret"[..], true),
            (b"new-secret", true),
            (b"other", false),
        ] {
            let sig = format!("sha256={}", hex::encode(sign(key, body)));
            headers.insert("x-hub-signature-256", HeaderValue::from_str(&sig).unwrap());
            assert_eq!(h.verify(&headers, body, SystemTime::now()).is_ok(), ok);
        }
    }

    #[test]
    fn maps_literals_and_pointers_and_checks_conditions() {
        let h = hook(
            "none",
            "x",
            "agent_id_from = \"/assignee/id\"\nbody_from = \"/incident\"\ncondition = { pointer = \"/kind\", one_of = [\"a\", \"b\"] }",
        );
        let payload = json!({"kind": "a", "assignee": {"id": 5}, "incident": {"x": 1}});
        assert!(h.matches(&payload));
        assert!(!h.matches(&json!({"kind": "c"})));
        assert_eq!(
            h.map(&payload).unwrap(),
            json!({"app_id": 1, "event": "e", "agent_id": 5, "body": {"x": 1}})
        );
        let e = h.map(&json!({"incident": {}})).unwrap_err();
        assert_eq!(e[0].pointer, "/assignee/id");
    }
}

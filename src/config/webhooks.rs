//! `[[webhooks]]`: signed sources whose payloads become Notify events, their secrets and
//! schemas.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;

use super::error::ConfigError;
use super::rules::{positive, valid_name};
use crate::schema::{load_schema, SchemaValidator};

/// How a webhook source signs its requests.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureKind {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Delivery`.
    Github,
    /// No signature (only for trusted networks).
    None,
}

/// Which payloads of a webhook notify: the value at `pointer` must equal `equals`, be one
/// of `one_of`, or (with `exists`) be present or absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// JSON pointer into the payload.
    pub pointer: String,
    /// The value required.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The values allowed.
    #[serde(default)]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Whether the value must be present (true) or absent (false).
    #[serde(default)]
    pub exists: Option<bool>,
}

/// One `[[webhooks]]` entry: `POST /v1/webhooks/{name}` and how its payload becomes a
/// Notify event. Each target field is a literal (`app_id = 375`) or a JSON pointer into
/// the payload (`app_id_from = "/app"`); `body` defaults to the whole payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The name in the URL.
    pub name: String,
    /// The account notified.
    pub account: String,
    /// How requests are signed.
    pub signature: SignatureKind,
    /// The signing secret (`whsec_<base64>` for Standard Webhooks, the raw secret for
    /// GitHub).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// Secrets still accepted while a rotation is under way.
    #[serde(default)]
    pub previous_secrets: Vec<SecretString>,
    /// How far `webhook-timestamp` may be from now, in seconds (default 300).
    #[serde(default = "default_tolerance")]
    pub tolerance_seconds: u64,
    /// How long a delivery id is remembered to refuse replays, in seconds (default 86400).
    #[serde(default = "default_replay_window")]
    pub replay_window_seconds: u64,
    /// Path of a JSON Schema the payload must match.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Only payloads matching it notify; others are acknowledged and dropped.
    #[serde(default)]
    pub condition: Option<ConditionConfig>,
    /// Literal `app_id`.
    #[serde(default)]
    pub app_id: Option<serde_json::Value>,
    /// Pointer to `app_id`.
    #[serde(default)]
    pub app_id_from: Option<String>,
    /// Literal `event`.
    #[serde(default)]
    pub event: Option<serde_json::Value>,
    /// Pointer to `event`.
    #[serde(default)]
    pub event_from: Option<String>,
    /// Literal `body`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Pointer to `body` (default: the whole payload).
    #[serde(default)]
    pub body_from: Option<String>,
    /// Literal `agent_id`.
    #[serde(default)]
    pub agent_id: Option<serde_json::Value>,
    /// Pointer to `agent_id`.
    #[serde(default)]
    pub agent_id_from: Option<String>,
    /// Literal `agent_ids`.
    #[serde(default)]
    pub agent_ids: Option<serde_json::Value>,
    /// Pointer to `agent_ids`.
    #[serde(default)]
    pub agent_ids_from: Option<String>,
    /// Literal `ttl_seconds`.
    #[serde(default)]
    pub ttl_seconds: Option<serde_json::Value>,
    /// Pointer to `ttl_seconds`.
    #[serde(default)]
    pub ttl_seconds_from: Option<String>,
    /// Literal `priority`.
    #[serde(default)]
    pub priority: Option<serde_json::Value>,
    /// Pointer to `priority`.
    #[serde(default)]
    pub priority_from: Option<String>,
    /// The decoded secrets and compiled schema, built by validation.
    #[serde(skip)]
    parts: Option<WebhookParts>,
}

/// What validation builds from a webhook entry: its secrets decoded into key bytes and its
/// schema file read and compiled.
#[derive(Debug, Clone)]
pub struct WebhookParts {
    /// The key bytes of `secret` then `previous_secrets` (none with `signature = "none"`).
    pub secrets: Vec<SecretSlice<u8>>,
    /// The compiled `schema`, if one is set.
    pub schema: Option<Arc<SchemaValidator>>,
}

fn default_tolerance() -> u64 {
    300
}

fn default_replay_window() -> u64 {
    86_400
}

impl WebhookConfig {
    /// The mapping as (target field, literal, pointer) triples.
    pub fn mapping(&self) -> [(&'static str, Option<&serde_json::Value>, Option<&str>); 7] {
        [
            ("app_id", self.app_id.as_ref(), self.app_id_from.as_deref()),
            ("event", self.event.as_ref(), self.event_from.as_deref()),
            ("body", self.body.as_ref(), self.body_from.as_deref()),
            (
                "agent_id",
                self.agent_id.as_ref(),
                self.agent_id_from.as_deref(),
            ),
            (
                "agent_ids",
                self.agent_ids.as_ref(),
                self.agent_ids_from.as_deref(),
            ),
            (
                "ttl_seconds",
                self.ttl_seconds.as_ref(),
                self.ttl_seconds_from.as_deref(),
            ),
            (
                "priority",
                self.priority.as_ref(),
                self.priority_from.as_deref(),
            ),
        ]
    }
}

impl WebhookConfig {
    /// The decoded secrets and compiled schema that validation built.
    pub fn parts(&self) -> Result<&WebhookParts, ConfigError> {
        self.parts
            .as_ref()
            .ok_or_else(|| ConfigError::not_built(format!("webhooks[{}]", self.name)))
    }

    /// Checks entry `i` and builds its parts. `accounts` are the configured account ids;
    /// with `runtime_accounts`, any valid id may be named.
    fn build(
        &mut self,
        i: usize,
        accounts: &HashSet<&str>,
        runtime_accounts: bool,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        if !valid_name(&self.account) {
            return Err(ConfigError::invalid(
                key("account"),
                "is not a valid account id",
            ));
        }
        if !accounts.contains(self.account.as_str()) && !runtime_accounts {
            return Err(ConfigError::invalid(
                key("account"),
                format!("unknown account {:?}", self.account),
            ));
        }
        let secrets = self.decode_secrets(i)?;
        positive(&key("tolerance_seconds"), self.tolerance_seconds)?;
        positive(&key("replay_window_seconds"), self.replay_window_seconds)?;
        self.check_mapping(i)?;
        self.check_condition(i)?;
        let schema = match &self.schema {
            Some(path) => {
                Some(Arc::new(load_schema(path).map_err(|e| {
                    ConfigError::invalid(key("schema"), e.to_string())
                })?))
            }
            None => None,
        };
        self.parts = Some(WebhookParts { secrets, schema });
        Ok(())
    }

    /// The key bytes of `secret` and `previous_secrets` (entry `i`); none are needed with
    /// `signature = "none"`.
    fn decode_secrets(&self, i: usize) -> Result<Vec<SecretSlice<u8>>, ConfigError> {
        if self.signature == SignatureKind::None {
            return Ok(Vec::new());
        }
        let Some(secret) = &self.secret else {
            return Err(ConfigError::invalid(
                format!("webhooks[{i}].secret"),
                "is required unless signature = \"none\"",
            ));
        };
        let keys = std::iter::once((format!("webhooks[{i}].secret"), secret)).chain(
            self.previous_secrets
                .iter()
                .enumerate()
                .map(|(j, s)| (format!("webhooks[{i}].previous_secrets[{j}]"), s)),
        );
        keys.map(|(key, s)| {
            secret_bytes(self.signature, s.expose_secret())
                .map(SecretSlice::from)
                .map_err(|e| ConfigError::invalid(key, e.to_string()))
        })
        .collect()
    }

    /// Each target field is a literal or a JSON pointer, not both; `app_id` and `event`
    /// are required (entry `i`).
    fn check_mapping(&self, i: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        for (field, literal, pointer) in self.mapping() {
            if literal.is_some() && pointer.is_some() {
                return Err(ConfigError::invalid(
                    key(field),
                    format!("set either {field} or {field}_from, not both"),
                ));
            }
            if pointer.is_some_and(|p| !is_pointer(p)) {
                return Err(ConfigError::invalid(
                    key(&format!("{field}_from")),
                    "must be a JSON pointer (\"\" or starting with '/')",
                ));
            }
        }
        if self.app_id.is_none() && self.app_id_from.is_none() {
            return Err(ConfigError::invalid(
                key("app_id"),
                "set app_id or app_id_from",
            ));
        }
        if self.event.is_none() && self.event_from.is_none() {
            return Err(ConfigError::invalid(
                key("event"),
                "set event or event_from",
            ));
        }
        Ok(())
    }

    /// The condition has a JSON pointer and exactly one test (entry `i`).
    fn check_condition(&self, i: usize) -> Result<(), ConfigError> {
        let Some(c) = &self.condition else {
            return Ok(());
        };
        let tests = [c.equals.is_some(), c.one_of.is_some(), c.exists.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if tests != 1 || !is_pointer(&c.pointer) {
            return Err(ConfigError::invalid(
                format!("webhooks[{i}].condition"),
                "needs a JSON `pointer` and exactly one of equals, one_of or exists",
            ));
        }
        Ok(())
    }
}

/// Whether `p` is a JSON pointer: empty (the whole document) or starting with `/`.
fn is_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

/// Checks every webhook and builds its parts: names are valid and unique, the account is
/// configured (any valid id with `runtime_accounts`), secrets decode, the mapping and
/// condition are well formed, and the schema file compiles.
pub(super) fn build_webhooks(
    webhooks: &mut [WebhookConfig],
    accounts: &HashSet<&str>,
    runtime_accounts: bool,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, hook) in webhooks.iter_mut().enumerate() {
        if !valid_name(&hook.name) || !names.insert(hook.name.clone()) {
            return Err(ConfigError::invalid(
                format!("webhooks[{i}].name"),
                "must be unique, 1-64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        hook.build(i, accounts, runtime_accounts)?;
    }
    Ok(())
}

/// Why a configured secret is no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A Standard Webhooks secret that is not base64 after `whsec_`.
    #[error("must be whsec_ followed by base64")]
    NotBase64,
    /// An empty secret.
    #[error("must not be empty")]
    Empty,
}

/// The key bytes of a configured secret: base64 after `whsec_` for Standard Webhooks,
/// the raw text for GitHub.
pub fn secret_bytes(kind: SignatureKind, secret: &str) -> Result<Vec<u8>, SecretError> {
    let bytes = match kind {
        SignatureKind::StandardWebhooks => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .map_err(|_| SecretError::NotBase64)?
        }
        SignatureKind::Github | SignatureKind::None => secret.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{env, err, BASE};
    use crate::config::Config;

    const HOOK: &str = "\n[[webhooks]]\nname = \"h\"\naccount = \"acme\"\nsignature = \"standard-webhooks\"\nsecret = \"whsec_c2VjcmV0\"\nprevious_secrets = [\"whsec_b2xk\"]\napp_id = 1\nevent = \"e\"\n";

    #[test]
    fn validation_decodes_secrets_and_compiles_the_schema() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let schema = dir.path().join("s.json");
        std::fs::write(&schema, r#"{"type": "object", "required": ["a"]}"#).expect("written");
        let text = format!("{BASE}{HOOK}schema = \"{}\"\n", schema.display());
        let config = Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        let parts = config.webhooks[0].parts().unwrap();
        let keys: Vec<&[u8]> = parts.secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(keys, [&b"secret"[..], b"old"]);
        let compiled = parts.schema.as_ref().expect("a compiled schema");
        assert_eq!(compiled.check(&serde_json::json!({}))[0].pointer, "/a");
        assert!(!format!("{config:?}").contains("c2VjcmV0"));

        let msg = err(
            &format!("{BASE}{HOOK}schema = \"/nonexistent.json\"\n"),
            &env(),
        );
        assert!(msg.starts_with("webhooks[0].schema: cannot read"), "{msg}");
        let bad = HOOK.replace("whsec_b2xk", "whsec_!!");
        let msg = err(&format!("{BASE}{bad}"), &env());
        assert_eq!(
            msg,
            "webhooks[0].previous_secrets[0]: must be whsec_ followed by base64"
        );
    }

    #[test]
    fn unsigned_webhooks_have_no_secrets() {
        let hook = "\n[[webhooks]]\nname = \"h\"\naccount = \"acme\"\nsignature = \"none\"\nsecret = \"\"\napp_id = 1\nevent = \"e\"\n";
        let config =
            Config::from_toml_with_env(&format!("{BASE}{hook}"), "test.toml", &env()).unwrap();
        assert!(config.webhooks[0].parts().unwrap().secrets.is_empty());
        let unsigned: WebhookConfig =
            toml::from_str("name = \"h\"\naccount = \"acme\"\nsignature = \"none\"\n").unwrap();
        assert_eq!(
            unsigned.parts().unwrap_err().to_string(),
            "webhooks[h]: not built (the config was not validated)"
        );
    }

    #[test]
    fn the_account_must_be_known_unless_runtime_accounts_are_on() {
        let hook = HOOK.replace("account = \"acme\"", "account = \"elsewhere\"");
        let msg = err(&format!("{BASE}{hook}"), &env());
        assert!(msg.starts_with("webhooks[0].account"), "{msg}");
        let text = format!(
            "{BASE}\n[runtime_accounts]\nencryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n{hook}"
        );
        let config = Config::from_toml_with_env(&text, "test.toml", &env()).unwrap();
        assert_eq!(
            config.webhooks[0].account, "elsewhere",
            "runtime accounts may be named"
        );
    }

    #[test]
    fn mapping_and_names_are_checked() {
        let both = format!("{BASE}{HOOK}app_id_from = \"/app\"\n");
        assert!(err(&both, &env()).starts_with("webhooks[0].app_id: set either"));
        let twice = format!("{BASE}{HOOK}{HOOK}");
        assert!(err(&twice, &env()).starts_with("webhooks[1].name"));
        let condition = format!("{BASE}{HOOK}condition = {{ pointer = \"x\", exists = true }}\n");
        assert!(err(&condition, &env()).starts_with("webhooks[0].condition"));
    }
}

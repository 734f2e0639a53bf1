//! A base config and helpers shared by the config's unit tests.

use super::Config;

/// One account and one client, their secrets taken from the environment of [`env`].
pub const BASE: &str = r#"
[redis]
url = "redis://127.0.0.1:6390/0"

[[accounts]]
id = "acme"
subdomain = "acme"
email = "ops@acme.example"
api_token = "${ACME_TOKEN}"

[[clients]]
name = "billing"
key = "${BILLING_KEY}"
accounts = ["acme"]
"#;

/// The variables [`BASE`] needs.
pub fn env() -> Vec<(String, String)> {
    vec![
        ("ACME_TOKEN".into(), "tok-123".into()),
        ("BILLING_KEY".into(), "billing-key-0123456789".into()),
    ]
}

/// The message of the error that refuses `text`.
pub fn err(text: &str, env: &[(String, String)]) -> String {
    Config::from_toml_with_env(text, "test.toml", env)
        .expect_err("config should be rejected")
        .to_string()
}

/// `[(key, value)]` as an environment.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

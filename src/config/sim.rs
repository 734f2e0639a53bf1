//! The `[sim]` table of the config file (SPEC §8): listen address, Notify limits, optional TLS
//! files and the simulated accounts with their users and credentials.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;

/// Simulator settings: the `[sim]` table of the config file (SPEC §8).
///
/// Missing keys take their defaults (see [`SimConfig::default`]); a `[sim]` table without
/// `accounts` gets the sample account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Address to listen on, e.g. `127.0.0.1:9090`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Notify requests allowed per account in any rolling window (Zendesk: 100).
    #[serde(default = "default_notify_per_minute")]
    pub notify_per_minute: u32,
    /// Length of the rolling Notify window in seconds (Zendesk: 60).
    #[serde(default = "default_notify_window_seconds")]
    pub notify_window_seconds: u64,
    /// When set, the listener speaks HTTPS with this certificate chain and key.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The simulated Zendesk accounts.
    #[serde(default = "sample_accounts")]
    pub accounts: Vec<SimAccount>,
}

pub use crate::tls::TlsFiles;

/// One simulated Zendesk account, addressed as `{subdomain}.zendesk.com`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAccount {
    /// The account's subdomain (the first label of its host name).
    pub subdomain: String,
    /// Users of the account; each needs at least one credential.
    #[serde(default)]
    pub users: Vec<SimUser>,
}

/// A user of a simulated account with its role and credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimUser {
    /// Sign-in email, the user name of Basic auth.
    pub email: String,
    /// Admin or agent; decides which endpoints the user may call.
    pub role: Role,
    /// API token, used as Basic `email/token:TOKEN`.
    #[serde(default)]
    pub api_token: Option<String>,
    /// Password, used as Basic `email:password`.
    #[serde(default)]
    pub password: Option<String>,
    /// OAuth access token, used as `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub oauth_token: Option<String>,
}

impl fmt::Debug for SimUser {
    // Credentials are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("SimUser")
            .field("email", &self.email)
            .field("role", &self.role)
            .field("api_token", &redact(&self.api_token))
            .field("password", &redact(&self.password))
            .field("oauth_token", &redact(&self.oauth_token))
            .finish()
    }
}

/// A Zendesk user role, as far as the Apps API cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May call every endpoint ("Allowed for: Admins").
    Admin,
    /// May call "Agents" and "Everyone" endpoints only.
    Agent,
}

fn default_listen() -> String {
    "127.0.0.1:9090".to_string()
}

fn default_notify_per_minute() -> u32 {
    100
}

fn default_notify_window_seconds() -> u64 {
    60
}

fn sample_accounts() -> Vec<SimAccount> {
    vec![SimAccount {
        subdomain: "acme".to_string(),
        users: vec![
            SimUser {
                email: "admin@acme.example".to_string(),
                role: Role::Admin,
                api_token: Some("sim-admin-token".to_string()),
                password: Some("sim-admin-password".to_string()),
                oauth_token: Some("sim-admin-oauth".to_string()),
            },
            SimUser {
                email: "agent@acme.example".to_string(),
                role: Role::Agent,
                api_token: Some("sim-agent-token".to_string()),
                password: None,
                oauth_token: None,
            },
        ],
    }]
}

impl Default for SimConfig {
    /// `127.0.0.1:9090`, 100 Notify requests per rolling 60 s, no TLS, and the sample account
    /// `acme` (see the module documentation of [`crate::sim`]).
    fn default() -> Self {
        SimConfig {
            listen: default_listen(),
            notify_per_minute: default_notify_per_minute(),
            notify_window_seconds: default_notify_window_seconds(),
            tls: None,
            accounts: sample_accounts(),
        }
    }
}

/// A `[sim]` setting with an invalid value; shown as `KEY: MESSAGE`, e.g.
/// `sim.accounts[1].users[0].email: "bad" is not an email address`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSimSetting {
    /// The dotted key of the setting, e.g. `sim.accounts[1].users[0].email`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidSimSetting {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSimSetting {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why the `[sim]` table of a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    /// The file is not TOML; shown as `config: ...`.
    #[error("config: {0}")]
    Toml(toml::de::Error),
    /// The `[sim]` table has an unknown key or a value of the wrong type; shown as `sim: ...`.
    #[error("sim: {0}")]
    Table(toml::de::Error),
    /// A setting has an invalid value.
    #[error(transparent)]
    Invalid(#[from] InvalidSimSetting),
}

impl SimConfig {
    /// Reads the `[sim]` table of a TOML config file; other tables are ignored, and a file
    /// without `[sim]` gives the defaults. The result is validated.
    pub fn from_toml(text: &str) -> Result<SimConfig, SimConfigError> {
        let value: toml::Table = toml::from_str(text).map_err(SimConfigError::Toml)?;
        let config = match value.get("sim") {
            Some(sim) => sim
                .clone()
                .try_into::<SimConfig>()
                .map_err(SimConfigError::Table)?,
            None => SimConfig::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings; the error names the offending key, e.g.
    /// `sim.accounts[1].users[0].email: ...`.
    pub fn validate(&self) -> Result<(), InvalidSimSetting> {
        validate_listen(&self.listen)?;
        if self.notify_per_minute == 0 {
            return Err(InvalidSimSetting::new(
                "sim.notify_per_minute",
                "must be at least 1",
            ));
        }
        if self.notify_window_seconds == 0 {
            return Err(InvalidSimSetting::new(
                "sim.notify_window_seconds",
                "must be at least 1",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate("sim.tls")
                .map_err(|e| InvalidSimSetting::new(e.key, "must name a PEM file"))?;
        }
        if self.accounts.is_empty() {
            return Err(InvalidSimSetting::new(
                "sim.accounts",
                "at least one account is required",
            ));
        }
        let mut subdomains = HashSet::new();
        let mut credentials = CredentialsSeen::default();
        for (a, account) in self.accounts.iter().enumerate() {
            let key = format!("sim.accounts[{a}]");
            validate_subdomain(&key, &account.subdomain, &mut subdomains)?;
            if account.users.is_empty() {
                return Err(InvalidSimSetting::new(
                    format!("{key}.users"),
                    "at least one user is required",
                ));
            }
            let mut emails = HashSet::new();
            for (u, user) in account.users.iter().enumerate() {
                let key = format!("{key}.users[{u}]");
                validate_user(&key, user, &mut emails)?;
                credentials.add(&key, user)?;
            }
        }
        Ok(())
    }
}

/// Checks an account's subdomain (`key` is the account's, e.g. `sim.accounts[0]`): lowercase
/// letters, digits and inner `-`, not used by an earlier account.
fn validate_subdomain<'a>(
    key: &str,
    sub: &'a str,
    seen: &mut HashSet<&'a str>,
) -> Result<(), InvalidSimSetting> {
    if sub.is_empty()
        || sub.starts_with('-')
        || sub.ends_with('-')
        || !sub
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(InvalidSimSetting::new(
            format!("{key}.subdomain"),
            format!("{sub:?} is not a valid subdomain (lowercase letters, digits, '-')"),
        ));
    }
    if !seen.insert(sub) {
        return Err(InvalidSimSetting::new(
            format!("{key}.subdomain"),
            format!("duplicate subdomain {sub:?}"),
        ));
    }
    Ok(())
}

/// Checks one user (`key` is the user's, e.g. `sim.accounts[0].users[1]`): an email address
/// not used by an earlier user of the account (`emails`, lowercased), and at least one
/// credential, none empty.
fn validate_user(
    key: &str,
    user: &SimUser,
    emails: &mut HashSet<String>,
) -> Result<(), InvalidSimSetting> {
    let email = user.email.trim();
    if email.is_empty() || !email.contains('@') || email.contains(':') {
        return Err(InvalidSimSetting::new(
            format!("{key}.email"),
            format!("{email:?} is not an email address"),
        ));
    }
    if !emails.insert(email.to_ascii_lowercase()) {
        return Err(InvalidSimSetting::new(
            format!("{key}.email"),
            format!("duplicate user {email:?}"),
        ));
    }
    let creds = [
        ("api_token", &user.api_token),
        ("password", &user.password),
        ("oauth_token", &user.oauth_token),
    ];
    if creds.iter().all(|(_, v)| v.is_none()) {
        return Err(InvalidSimSetting::new(
            key,
            "needs at least one of api_token, password, oauth_token",
        ));
    }
    for (name, value) in creds {
        if value.as_deref() == Some("") {
            return Err(InvalidSimSetting::new(
                format!("{key}.{name}"),
                "must not be empty",
            ));
        }
    }
    Ok(())
}

/// The credentials of the users checked so far, across accounts: each must pick out one user.
#[derive(Default)]
struct CredentialsSeen<'a> {
    oauth_tokens: HashSet<&'a str>,
    /// (lowercased email, credential name, secret)
    basic_pairs: HashSet<(String, &'static str, &'a str)>,
}

impl<'a> CredentialsSeen<'a> {
    /// Adds a user's credentials (`key` is the user's): an OAuth token used by no other user,
    /// and no email with the same api_token or password in another account.
    fn add(&mut self, key: &str, user: &'a SimUser) -> Result<(), InvalidSimSetting> {
        if let Some(t) = &user.oauth_token {
            if !self.oauth_tokens.insert(t.as_str()) {
                return Err(InvalidSimSetting::new(
                    format!("{key}.oauth_token"),
                    "already used by another user; OAuth tokens must be unique",
                ));
            }
        }
        let email = user.email.trim().to_ascii_lowercase();
        for (name, secret) in [("api_token", &user.api_token), ("password", &user.password)] {
            if let Some(s) = secret {
                if !self.basic_pairs.insert((email.clone(), name, s.as_str())) {
                    return Err(InvalidSimSetting::new(
                        format!("{key}.{name}"),
                        format!("the same email and {name} are used by another account"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks that `sim.listen` is `HOST:PORT`.
fn validate_listen(listen: &str) -> Result<(), InvalidSimSetting> {
    let invalid =
        |problem: &str| InvalidSimSetting::new("sim.listen", format!("{listen:?} {problem}"));
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| invalid("is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| invalid("has no valid port"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_has_sample_account() {
        let c = SimConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.listen, "127.0.0.1:9090");
        assert_eq!(c.notify_per_minute, 100);
        assert_eq!(c.notify_window_seconds, 60);
        assert_eq!(c.accounts[0].subdomain, "acme");
        assert_eq!(c.accounts[0].users[0].role, Role::Admin);
        assert_eq!(c.accounts[0].users[1].role, Role::Agent);
    }

    #[test]
    fn parses_the_spec_example() {
        let c = SimConfig::from_toml(
            r#"
[server]
listen = "127.0.0.1:8080"
[sim]
listen = "127.0.0.1:9191"
notify_per_minute = 5
notify_window_seconds = 2
[[sim.accounts]]
subdomain = "beta"
[[sim.accounts.users]]
email = "a@beta.example"
role = "agent"
password = "pw"
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9191");
        assert_eq!(c.notify_per_minute, 5);
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].users[0].password.as_deref(), Some("pw"));
    }

    #[test]
    fn unknown_keys_and_bad_roles_are_errors() {
        let e = SimConfig::from_toml("[sim]\nlisten_on = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sim: "), "{e}");
        assert!(e.contains("listen_on"), "{e}");
        let e = SimConfig::from_toml(
            "[[sim.accounts]]\nsubdomain = \"a\"\n[[sim.accounts.users]]\nemail = \"x@y\"\nrole = \"owner\"\napi_token = \"t\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("owner"), "{e}");
    }

    #[test]
    fn validate_names_the_bad_key() {
        let key = |c: &SimConfig| c.validate().map_err(|e| e.key);

        let mut c = SimConfig::default();
        c.accounts.push(c.accounts[0].clone());
        c.accounts[1].subdomain = "acme".into();
        assert_eq!(key(&c), Err("sim.accounts[1].subdomain".to_string()));

        let mut c = SimConfig::default();
        c.accounts[0].users[1].api_token = None;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "sim.accounts[0].users[1]: needs at least one of api_token, password, oauth_token"
        );

        let c = SimConfig {
            notify_per_minute: 0,
            ..SimConfig::default()
        };
        assert_eq!(key(&c), Err("sim.notify_per_minute".to_string()));
        let c = SimConfig {
            notify_window_seconds: 0,
            ..SimConfig::default()
        };
        assert_eq!(key(&c), Err("sim.notify_window_seconds".to_string()));
        let c = SimConfig {
            listen: "nope".into(),
            ..SimConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "sim.listen: \"nope\" is not HOST:PORT"
        );
        let mut c = SimConfig::default();
        c.accounts[0].users[0].email = "bad".into();
        assert_eq!(key(&c), Err("sim.accounts[0].users[0].email".to_string()));
        let mut c = SimConfig::default();
        c.accounts[0].users[1].oauth_token = Some("sim-admin-oauth".into());
        assert_eq!(
            key(&c),
            Err("sim.accounts[0].users[1].oauth_token".to_string())
        );
        let c = SimConfig {
            tls: Some(TlsFiles {
                cert: " ".into(),
                key: "k.pem".into(),
            }),
            ..SimConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "sim.tls.cert: must name a PEM file"
        );
    }

    #[test]
    fn debug_hides_credentials() {
        let c = SimConfig::default();
        let s = format!("{c:?}");
        assert!(!s.contains("sim-admin-token"));
        assert!(s.contains("<redacted>"));
    }
}

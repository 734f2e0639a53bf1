//! Client keys: who is calling and which accounts they reach.
//!
//! Ingress takes the key as `Authorization: Bearer <key>`; the Apps API proxy also takes it
//! as the password of Basic auth with any user name (`someone/token:<key>` included), so that
//! existing Zendesk clients work by changing only their base URL and credentials.
//!
//! Keys are kept as SHA-256 digests and compared in constant time against every
//! configured key, so neither the comparison nor the position of a match leaks timing.

use std::sync::Arc;

use base64::Engine;
use http::{header, HeaderMap};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ClientConfig;

/// An authenticated internal caller.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's name.
    pub name: String,
    /// Accounts it reaches; `None` means all.
    accounts: Option<Vec<String>>,
    /// Whether it may use admin endpoints.
    pub admin: bool,
    digest: [u8; 32],
}

impl Client {
    /// Whether this client may act on every account.
    pub fn reaches_all(&self) -> bool {
        self.accounts.is_none()
    }

    /// Whether this client may act on `account`.
    pub fn reaches(&self, account: &str) -> bool {
        match &self.accounts {
            None => true,
            Some(list) => list.iter().any(|a| a == account),
        }
    }
}

/// Every configured client key.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    clients: Vec<Arc<Client>>,
}

impl ClientKeys {
    /// Builds the key table from config.
    pub fn from_config(clients: &[ClientConfig]) -> Self {
        let clients = clients
            .iter()
            .map(|c| {
                Arc::new(Client {
                    name: c.name.clone(),
                    accounts: if c.accounts.iter().any(|a| a == "*") {
                        None
                    } else {
                        Some(c.accounts.clone())
                    },
                    admin: c.admin,
                    digest: Sha256::digest(c.key.expose_secret().as_bytes()).into(),
                })
            })
            .collect();
        ClientKeys { clients }
    }

    /// The client whose key is `presented`, compared in constant time.
    pub fn find(&self, presented: &[u8]) -> Option<&Arc<Client>> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for client in &self.clients {
            if bool::from(client.digest.ct_eq(&digest)) {
                found = Some(client);
            }
        }
        found
    }

    /// The client named by `Authorization: Bearer <key>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<&Arc<Client>> {
        let value = headers.get(header::AUTHORIZATION)?.as_bytes();
        let (scheme, key) = split_scheme(value)?;
        if !scheme.eq_ignore_ascii_case(b"bearer") || key.is_empty() {
            return None;
        }
        self.find(key)
    }

    /// The client named by `Authorization: Bearer <key>`, or by Basic auth whose password
    /// (everything after the first `:` of the decoded pair) is the key.
    pub fn authenticate_bearer_or_basic(&self, headers: &HeaderMap) -> Option<&Arc<Client>> {
        let value = headers.get(header::AUTHORIZATION)?.as_bytes();
        let (scheme, rest) = split_scheme(value)?;
        if scheme.eq_ignore_ascii_case(b"basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            let password = &decoded[colon + 1..];
            if password.is_empty() {
                return None;
            }
            self.find(password)
        } else {
            self.authenticate(headers)
        }
    }
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    Some((scheme, rest.trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> ClientKeys {
        let clients: Vec<ClientConfig> = toml::from_str::<toml::Table>(
            r#"
[[c]]
name = "billing"
key = "billing-key-0123456789"
accounts = ["acme"]
[[c]]
name = "ops"
key = "ops-key-0123456789abc"
accounts = ["*"]
admin = true
"#,
        )
        .unwrap()["c"]
            .clone()
            .try_into()
            .unwrap();
        ClientKeys::from_config(&clients)
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn finds_keys_and_scopes() {
        let keys = keys();
        let billing = keys
            .authenticate(&bearer("Bearer billing-key-0123456789"))
            .unwrap();
        assert_eq!(billing.name, "billing");
        assert!(billing.reaches("acme"));
        assert!(!billing.reaches("other"));
        assert!(!billing.admin);
        let ops = keys
            .authenticate(&bearer("bearer ops-key-0123456789abc"))
            .unwrap();
        assert!(ops.reaches("anything") && ops.admin);
        assert!(keys
            .authenticate(&bearer("Bearer billing-key-012345678"))
            .is_none());
        assert!(keys
            .authenticate(&bearer("Basic billing-key-0123456789"))
            .is_none());
        assert!(keys.authenticate(&HeaderMap::new()).is_none());
    }

    fn basic(user_password: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        bearer(&format!("Basic {encoded}"))
    }

    #[test]
    fn basic_password_is_the_key() {
        let keys = keys();
        for pair in [
            "anyone:billing-key-0123456789",
            "bot@example.com/token:billing-key-0123456789",
            ":billing-key-0123456789",
        ] {
            let client = keys.authenticate_bearer_or_basic(&basic(pair));
            assert_eq!(client.map(|c| c.name.as_str()), Some("billing"), "{pair}");
        }
        let bearer_key = bearer("Bearer ops-key-0123456789abc");
        assert!(keys.authenticate_bearer_or_basic(&bearer_key).is_some());
        for bad in [
            "billing-key-0123456789",
            "billing-key-0123456789:",
            "someone:billing-key-012345678",
            "someone:billing-key-0123456789x",
        ] {
            assert!(
                keys.authenticate_bearer_or_basic(&basic(bad)).is_none(),
                "{bad}"
            );
        }
        assert!(keys
            .authenticate_bearer_or_basic(&bearer("Basic !!!notbase64"))
            .is_none());
        assert!(
            keys.authenticate(&basic("a:billing-key-0123456789"))
                .is_none(),
            "ingress takes Bearer only"
        );
    }
}

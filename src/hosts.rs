//! Which account a proxied request's `Host` names: its first label is an account's
//! `subdomain`, or the whole host or its first label is one of the account's `hosts`. A
//! name claimed by two accounts routes to neither of them, and not to a default account.

use std::collections::HashMap;

use crate::config::Config;

/// `Host` → account id.
#[derive(Debug, Default)]
pub struct HostMap {
    /// Whole host names (from `hosts`).
    full: HashMap<String, Option<String>>,
    /// First labels (`subdomain`, and `hosts` entries without a dot).
    label: HashMap<String, Option<String>>,
}

impl HostMap {
    /// The map of accounts given as (id, subdomain, hosts).
    pub fn build<'a>(accounts: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>) -> Self {
        fn claim(map: &mut HashMap<String, Option<String>>, key: String, id: &str) {
            map.entry(key)
                .and_modify(|owner| {
                    if owner.as_deref() != Some(id) {
                        *owner = None;
                    }
                })
                .or_insert_with(|| Some(id.to_string()));
        }
        let mut map = HostMap::default();
        for (id, subdomain, hosts) in accounts {
            claim(&mut map.label, subdomain.to_ascii_lowercase(), id);
            for host in hosts {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                if host.contains('.') {
                    claim(&mut map.full, host, id);
                } else {
                    claim(&mut map.label, host, id);
                }
            }
        }
        map
    }

    /// The map of the configured accounts; warns of names that route to none.
    pub fn from_config(config: &Config) -> Self {
        let map = HostMap::build(
            config
                .accounts
                .iter()
                .map(|a| (a.id.as_str(), a.subdomain.as_str(), a.hosts.as_slice())),
        );
        for (name, owner) in map.full.iter().chain(map.label.iter()) {
            if owner.is_none() {
                tracing::warn!(host = %name, "several accounts claim this host; it routes to none");
            }
        }
        map
    }

    /// What a `Host` value names.
    pub fn lookup(&self, host: &str) -> Route {
        let Some(host) = host_name(host) else {
            return Route::Nothing;
        };
        let owner = match self.full.get(&host) {
            Some(owner) => Some(owner),
            None => host
                .split('.')
                .next()
                .and_then(|first| self.label.get(first)),
        };
        match owner {
            None => Route::Nothing,
            Some(None) => Route::Ambiguous,
            Some(Some(id)) => Route::Account(id.clone()),
        }
    }
}

/// What a `Host` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Exactly this account.
    Account(String),
    /// A name several accounts claim: it routes to none of them (nor to a default).
    Ambiguous,
    /// No account's name.
    Nothing,
}

/// The host name of a `Host` value: port and trailing dot removed, lowercased; `None` for
/// IP literals and empty values.
fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    if value.starts_with('[') {
        return None;
    }
    let name = value.split(':').next()?.trim_end_matches('.');
    if name.is_empty() || name.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_route_by_first_label_or_whole_name() {
        let text = r#"
[[accounts]]
id = "acme"
subdomain = "acme"
hosts = ["zendesk.acme.internal", "acme-eu"]
email = "a@acme.example"
api_token = "t"
[[accounts]]
id = "beta"
subdomain = "beta"
hosts = ["shared"]
email = "a@beta.example"
api_token = "t"
[[accounts]]
id = "gamma"
subdomain = "gamma"
hosts = ["shared"]
email = "a@gamma.example"
api_token = "t"
"#;
        let config = Config::from_toml_with_env(text, "t.toml", &[]).unwrap();
        let map = HostMap::from_config(&config);
        let named = |host| match map.lookup(host) {
            Route::Account(id) => Some(id),
            Route::Ambiguous => Some("ambiguous".to_string()),
            Route::Nothing => None,
        };
        assert_eq!(named("acme.gateway.example:8443").as_deref(), Some("acme"));
        assert_eq!(named("ACME.gateway.example.").as_deref(), Some("acme"));
        assert_eq!(named("zendesk.acme.internal").as_deref(), Some("acme"));
        assert_eq!(named("acme-eu.relay.example").as_deref(), Some("acme"));
        assert_eq!(named("beta").as_deref(), Some("beta"));
        assert_eq!(named("shared.relay.example").as_deref(), Some("ambiguous"));
        assert_eq!(named("127.0.0.1:8080"), None);
        assert_eq!(named("[::1]:8080"), None);
        assert_eq!(named("other.example"), None);
    }
}

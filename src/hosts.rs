//! Which account a proxied request's `Host` names: its first label is an account's
//! `subdomain`, or the whole host or its first label is one of the account's `hosts`. A
//! name claimed by two accounts routes to neither.

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

    /// The account a `Host` value names, if exactly one does.
    pub fn lookup(&self, host: &str) -> Option<&str> {
        let host = host_name(host)?;
        if let Some(owner) = self.full.get(&host) {
            return owner.as_deref();
        }
        let first = host.split('.').next()?;
        self.label.get(first).and_then(|o| o.as_deref())
    }
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
        assert_eq!(map.lookup("acme.gateway.example:8443"), Some("acme"));
        assert_eq!(map.lookup("ACME.gateway.example."), Some("acme"));
        assert_eq!(map.lookup("zendesk.acme.internal"), Some("acme"));
        assert_eq!(map.lookup("acme-eu.relay.example"), Some("acme"));
        assert_eq!(map.lookup("beta"), Some("beta"));
        assert_eq!(map.lookup("shared.relay.example"), None, "ambiguous");
        assert_eq!(map.lookup("127.0.0.1:8080"), None);
        assert_eq!(map.lookup("[::1]:8080"), None);
        assert_eq!(map.lookup("other.example"), None);
    }
}

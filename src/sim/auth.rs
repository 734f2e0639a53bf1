//! Who is calling: the account and user whose credentials a request carries.
//!
//! Basic `email/token:TOKEN`, Basic `email:password` and `Bearer TOKEN` are accepted. When the
//! first label of the `Host` names a configured account, the credentials must belong to that
//! account; otherwise any account's credentials are accepted and decide the account.

use axum::http::{header, HeaderMap};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::errors::ApiError;
use crate::config::sim::{Role, SimConfig};

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Subdomain of the account the credentials belong to.
    pub account: String,
    /// The user's role.
    pub role: Role,
}

/// Which roles an endpoint allows ("Allowed for" in the reference documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// Anyone, even without credentials.
    Everyone,
    /// Agents and admins.
    Agents,
    /// Admins only.
    Admins,
}

/// The account named by the first label of the `Host`, if it is a configured subdomain.
pub(crate) fn host_account<'a>(config: &'a SimConfig, host: Option<&str>) -> Option<&'a str> {
    let host = host?;
    let label = host.split(['.', ':']).next()?.to_ascii_lowercase();
    config
        .accounts
        .iter()
        .find(|a| a.subdomain == label)
        .map(|a| a.subdomain.as_str())
}

fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Authenticates a request. `Ok(None)` means no credentials were sent; wrong or unknown
/// credentials, or credentials of another account than the `Host` names, are 401.
pub(crate) fn authenticate(
    config: &SimConfig,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Result<Option<Caller>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::Unauthorized)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    let rest = rest.trim();
    let required = host_account(config, host);
    let accounts = config
        .accounts
        .iter()
        .filter(|a| required.map_or(true, |r| r == a.subdomain));
    let found = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| ApiError::Unauthorized)?;
        let decoded = String::from_utf8(decoded).map_err(|_| ApiError::Unauthorized)?;
        let (user, secret) = decoded.split_once(':').ok_or(ApiError::Unauthorized)?;
        let (email, is_token) = match user.strip_suffix("/token") {
            Some(email) => (email, true),
            None => (user, false),
        };
        let mut found = None;
        for account in accounts {
            for u in &account.users {
                if !u.email.eq_ignore_ascii_case(email) {
                    continue;
                }
                let expected = if is_token { &u.api_token } else { &u.password };
                if expected.as_deref().is_some_and(|e| eq(e, secret)) && found.is_none() {
                    found = Some((account.subdomain.clone(), u.role));
                }
            }
        }
        found
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let mut found = None;
        for account in accounts {
            for u in &account.users {
                if u.oauth_token.as_deref().is_some_and(|t| eq(t, rest)) && found.is_none() {
                    found = Some((account.subdomain.clone(), u.role));
                }
            }
        }
        found
    } else {
        None
    };
    match found {
        Some((account, role)) => Ok(Some(Caller { account, role })),
        None => Err(ApiError::Unauthorized),
    }
}

/// Applies an endpoint's "Allowed for": 401 without credentials (unless `Everyone`), 403 for an
/// agent on an admin endpoint.
pub(crate) fn authorize(caller: Option<&Caller>, allowed: Allowed) -> Result<(), ApiError> {
    match (allowed, caller) {
        (Allowed::Everyone, _) => Ok(()),
        (_, None) => Err(ApiError::Unauthorized),
        (Allowed::Agents, Some(_)) => Ok(()),
        (Allowed::Admins, Some(c)) if c.role == Role::Admin => Ok(()),
        (Allowed::Admins, Some(_)) => Err(ApiError::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(user: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[test]
    fn all_three_credential_kinds() {
        let c = SimConfig::default();
        let who = authenticate(
            &c,
            &basic("admin@acme.example/token", "sim-admin-token"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!((who.account.as_str(), who.role), ("acme", Role::Admin));
        let who = authenticate(&c, &basic("admin@acme.example", "sim-admin-password"), None)
            .unwrap()
            .unwrap();
        assert_eq!(who.role, Role::Admin);
        let who = authenticate(
            &c,
            &basic("agent@acme.example/token", "sim-agent-token"),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(who.role, Role::Agent);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sim-admin-oauth"),
        );
        assert!(authenticate(&c, &h, None).unwrap().is_some());
    }

    #[test]
    fn wrong_secrets_and_kinds_are_rejected() {
        let c = SimConfig::default();
        // A token is not a password and vice versa.
        assert!(authenticate(&c, &basic("admin@acme.example", "sim-admin-token"), None).is_err());
        assert!(authenticate(
            &c,
            &basic("admin@acme.example/token", "sim-admin-password"),
            None
        )
        .is_err());
        assert!(authenticate(&c, &basic("nobody@acme.example/token", "x"), None).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(authenticate(&c, &h, None).is_err());
        assert!(authenticate(&c, &HeaderMap::new(), None).unwrap().is_none());
    }

    #[test]
    fn host_must_match_the_credentials_account() {
        let c = SimConfig::default();
        let h = basic("admin@acme.example/token", "sim-admin-token");
        assert!(authenticate(&c, &h, Some("acme.zendesk.com")).is_ok());
        assert!(authenticate(&c, &h, Some("127.0.0.1:9090")).is_ok());
        let mut c2 = c.clone();
        c2.accounts.push(crate::config::sim::SimAccount {
            subdomain: "beta".into(),
            users: c.accounts[0].users[1..].to_vec(),
        });
        c2.accounts[1].users[0].api_token = Some("beta-token".into());
        assert!(authenticate(&c2, &h, Some("beta.localhost:9090")).is_err());
    }

    #[test]
    fn roles() {
        let agent = Caller {
            account: "acme".into(),
            role: Role::Agent,
        };
        assert!(authorize(Some(&agent), Allowed::Agents).is_ok());
        assert!(matches!(
            authorize(Some(&agent), Allowed::Admins),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            authorize(None, Allowed::Agents),
            Err(ApiError::Unauthorized)
        ));
        assert!(authorize(None, Allowed::Everyone).is_ok());
    }
}

//! Fault injection: rules set through `POST /__sim/faults` that delay, fail or drop requests of
//! one account (or all) on one route (or all).
//!
//! A rule applies to a request when its `account` matches (`"*"` or absent: any) and its
//! `route` matches: `"notify"` (the Notify endpoint), `"*"` (every API request), or a path
//! prefix starting with `/` (e.g. `/api/v2/apps/installations`). The first matching rule in
//! insertion order is used. It first waits `latency_ms`, then decides whether the request fails:
//! - `fail_next: N` → the next N matching requests fail, then the rule is spent and removed;
//! - else `error_rate: p` → each matching request fails with probability p;
//! - else a rule with `status` or `drop_connection` fails every matching request, and a rule
//!   with only `latency_ms` never fails.
//!
//! A failure closes the TCP connection without any response when `drop_connection` is true;
//! otherwise it answers `status` (default 503) with a JSON body, plus `Retry-After` when
//! `retry_after` is set.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::routes::Route;

/// One fault rule, as posted to `/__sim/faults`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRule {
    /// Assigned by the simulator.
    #[serde(default)]
    pub id: u64,
    /// Account subdomain, or `"*"` (the default) for any.
    #[serde(default = "star")]
    pub account: String,
    /// `"notify"`, `"*"` or a path prefix.
    #[serde(default = "star")]
    pub route: String,
    /// Status of an injected failure (default 503).
    #[serde(default)]
    pub status: Option<u16>,
    /// Delay before the request is handled or failed.
    #[serde(default)]
    pub latency_ms: u64,
    /// Probability in [0, 1] that a matching request fails.
    #[serde(default)]
    pub error_rate: Option<f64>,
    /// Fail the next N matching requests, then remove the rule.
    #[serde(default)]
    pub fail_next: Option<u32>,
    /// Close the connection without an HTTP response instead of answering.
    #[serde(default)]
    pub drop_connection: bool,
    /// `Retry-After` seconds on injected failures.
    #[serde(default)]
    pub retry_after: Option<u64>,
}

fn star() -> String {
    "*".to_string()
}

/// The longest delay a rule may add, in milliseconds.
const MAX_LATENCY_MS: u64 = 600_000;

/// A posted rule that cannot be used; shown as `FIELD: PROBLEM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidFaultRule {
    /// `account` names no configured account.
    #[error("account: unknown account {0:?}")]
    UnknownAccount(String),
    /// `route` is neither `notify`, `*` nor a path prefix.
    #[error("route: must be \"notify\", \"*\" or a path prefix starting with /")]
    Route,
    /// `status` is not a final HTTP status.
    #[error("status: must be an HTTP status from 200 to 599")]
    Status,
    /// `error_rate` is not a probability.
    #[error("error_rate: must be between 0 and 1")]
    ErrorRate,
    /// `latency_ms` is above [`MAX_LATENCY_MS`].
    #[error("latency_ms: at most {MAX_LATENCY_MS}")]
    Latency,
}

/// How an injected failure ends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Close the connection without answering.
    Drop,
    /// Answer this status, with `Retry-After` when set.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
}

/// What a matching rule does to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FaultAction {
    pub latency: Duration,
    pub failure: Option<Failure>,
}

impl FaultRule {
    /// Checks a posted rule; the error says which field is wrong.
    pub(crate) fn check(&self, accounts: &[&str]) -> Result<(), InvalidFaultRule> {
        if self.account != "*" && !accounts.contains(&self.account.as_str()) {
            return Err(InvalidFaultRule::UnknownAccount(self.account.clone()));
        }
        if self.route != "*" && self.route != "notify" && !self.route.starts_with('/') {
            return Err(InvalidFaultRule::Route);
        }
        if let Some(s) = self.status {
            // 1xx are not final responses; a fault must answer something a client can read.
            if !(200..=599).contains(&s) {
                return Err(InvalidFaultRule::Status);
            }
        }
        if let Some(p) = self.error_rate {
            if !(0.0..=1.0).contains(&p) {
                return Err(InvalidFaultRule::ErrorRate);
            }
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(InvalidFaultRule::Latency);
        }
        Ok(())
    }

    fn matches(&self, account: Option<&str>, path: &str, route: Option<&Route>) -> bool {
        let account_ok = self.account == "*" || account == Some(self.account.as_str());
        let route_ok = match self.route.as_str() {
            "*" => true,
            "notify" => matches!(route, Some(Route::Notify)),
            prefix => path.starts_with(prefix),
        };
        account_ok && route_ok
    }
}

/// Finds the first matching rule and decides its effect; spends `fail_next` counts.
/// `roll` gives a uniform number in [0, 1) for `error_rate`.
pub(crate) fn decide(
    rules: &mut Vec<FaultRule>,
    account: Option<&str>,
    path: &str,
    route: Option<&Route>,
    roll: impl FnOnce() -> f64,
) -> Option<FaultAction> {
    let idx = rules.iter().position(|r| r.matches(account, path, route))?;
    let rule = &mut rules[idx];
    let latency = Duration::from_millis(rule.latency_ms);
    let fails = if let Some(n) = rule.fail_next {
        let fails = n > 0;
        let left = n.saturating_sub(1);
        rule.fail_next = Some(left);
        fails
    } else if let Some(p) = rule.error_rate {
        roll() < p
    } else {
        rule.status.is_some() || rule.drop_connection
    };
    let failure = fails.then(|| {
        if rule.drop_connection {
            Failure::Drop
        } else {
            Failure::Status {
                status: rule.status.unwrap_or(503),
                retry_after: rule.retry_after,
            }
        }
    });
    if rule.fail_next == Some(0) {
        rules.remove(idx);
    }
    Some(FaultAction { latency, failure })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn fail_next_counts_down_then_disappears() {
        let mut rules = vec![rule(r#"{"route":"notify","status":500,"fail_next":2}"#)];
        for _ in 0..2 {
            let a = decide(&mut rules, Some("acme"), "/x", Some(&Route::Notify), || 0.9).unwrap();
            assert_eq!(
                a.failure,
                Some(Failure::Status {
                    status: 500,
                    retry_after: None
                })
            );
        }
        assert!(rules.is_empty());
        assert!(decide(&mut rules, Some("acme"), "/x", Some(&Route::Notify), || 0.0).is_none());
    }

    #[test]
    fn matching_by_account_and_route() {
        let mut rules = vec![rule(
            r#"{"account":"acme","route":"/api/v2/apps/installations"}"#,
        )];
        assert!(decide(
            &mut rules,
            Some("beta"),
            "/api/v2/apps/installations",
            None,
            || 0.0
        )
        .is_none());
        assert!(decide(&mut rules, Some("acme"), "/api/v2/apps", None, || 0.0).is_none());
        let a = decide(
            &mut rules,
            Some("acme"),
            "/api/v2/apps/installations/1",
            None,
            || 0.0,
        )
        .unwrap();
        assert_eq!(a.failure, None, "a rule without status only delays");
    }

    #[test]
    fn error_rate_uses_the_roll() {
        let mut rules = vec![rule(r#"{"error_rate":0.5,"drop_connection":true}"#)];
        let a = decide(&mut rules, None, "/", None, || 0.4).unwrap();
        assert_eq!(a.failure, Some(Failure::Drop));
        let a = decide(&mut rules, None, "/", None, || 0.6).unwrap();
        assert_eq!(a.failure, None);
    }

    #[test]
    fn check_rejects_bad_rules() {
        let check = |json: &str| rule(json).check(&["acme"]);
        assert_eq!(check(r#"{"status":700}"#), Err(InvalidFaultRule::Status));
        assert_eq!(check(r#"{"status":101}"#), Err(InvalidFaultRule::Status));
        assert_eq!(
            check(r#"{"error_rate":2}"#),
            Err(InvalidFaultRule::ErrorRate)
        );
        assert_eq!(
            check(r#"{"account":"zzz"}"#).map_err(|e| e.to_string()),
            Err("account: unknown account \"zzz\"".to_string())
        );
        assert_eq!(check(r#"{"route":"api"}"#), Err(InvalidFaultRule::Route));
        assert_eq!(
            check(r#"{"latency_ms":600001}"#).map_err(|e| e.to_string()),
            Err("latency_ms: at most 600000".to_string())
        );
        assert!(rule(r#"{"route":"notify","status":429,"retry_after":3}"#)
            .check(&["acme"])
            .is_ok());
    }
}

//! SPEC §5's retry rules as data plus one classification function.
//!
//! - `GET`, `PUT` and `DELETE` are retried on connect errors, timeouts, broken connections,
//!   429, 502, 503 and 504.
//! - `POST` is retried only when upstream surely did not process it: no connection was
//!   made, 429, or 503 with `Retry-After`. A timeout, a broken connection or a 502/504 after
//!   a `POST` is ambiguous, so it goes back to the caller instead of risking a duplicate.
//! - A `Retry-After` (seconds or HTTP date) up to the cap is waited out; a longer one ends
//!   the retries and upstream's answer, `Retry-After` included, goes back to the caller.
//! - Otherwise the wait is exponential backoff with full jitter ([`RetryPolicy::backoff`]).

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};

use super::forward::{Failure, Upstream};
use crate::delivery::RetryPolicy;
use crate::zendesk::retry_after;

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer the caller with this attempt's outcome.
    Answer,
    /// Try again after upstream's `Retry-After`.
    RetryAfter(Duration),
    /// Try again after a backoff.
    Backoff,
}

/// The proxy's retry policy.
#[derive(Debug, Clone, Copy)]
pub struct ProxyRetry {
    /// Attempts, the first included, plus the backoff curve.
    pub policy: RetryPolicy,
    /// Longest `Retry-After` waited out by the proxy.
    pub retry_after_cap: Duration,
}

impl ProxyRetry {
    /// Classifies an attempt's outcome for `method`.
    pub fn decide(&self, method: &Method, outcome: &Result<Upstream, Failure>) -> Decision {
        let idempotent = matches!(*method, Method::GET | Method::PUT | Method::DELETE);
        match outcome {
            Err(Failure::Connect(_)) => Decision::Backoff,
            Err(Failure::Timeout(_) | Failure::Broken(_)) if idempotent => Decision::Backoff,
            Err(_) => Decision::Answer,
            Ok(up) => {
                let wait = retry_after(&up.headers, SystemTime::now());
                match up.status {
                    StatusCode::TOO_MANY_REQUESTS => self.honour(wait),
                    StatusCode::SERVICE_UNAVAILABLE if wait.is_some() => self.honour(wait),
                    StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::GATEWAY_TIMEOUT
                        if idempotent =>
                    {
                        Decision::Backoff
                    }
                    _ => Decision::Answer,
                }
            }
        }
    }

    fn honour(&self, wait: Option<Duration>) -> Decision {
        match wait {
            Some(w) if w > self.retry_after_cap => Decision::Answer,
            Some(w) => Decision::RetryAfter(w),
            None => Decision::Backoff,
        }
    }

    /// How long to wait before the attempt after `attempt` (1-based), or `None` when
    /// `attempt` was the last one allowed or the outcome is to be answered.
    pub fn wait(&self, decision: Decision, attempt: u32) -> Option<Duration> {
        if attempt >= self.policy.max_attempts {
            return None;
        }
        match decision {
            Decision::Answer => None,
            Decision::RetryAfter(w) => Some(w),
            Decision::Backoff => Some(self.policy.backoff(attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};

    fn retry() -> ProxyRetry {
        ProxyRetry {
            policy: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
            },
            retry_after_cap: Duration::from_secs(5),
        }
    }

    fn answer(status: u16, retry_after: Option<&'static str>) -> Result<Upstream, Failure> {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert("retry-after", HeaderValue::from_static(v));
        }
        Ok(Upstream {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::new(),
        })
    }

    #[test]
    fn idempotent_methods() {
        let r = retry();
        for m in [Method::GET, Method::PUT, Method::DELETE] {
            for s in [502, 503, 504, 429] {
                assert_eq!(r.decide(&m, &answer(s, None)), Decision::Backoff, "{m} {s}");
            }
            for f in [
                Failure::Connect("c".into()),
                Failure::Timeout("t".into()),
                Failure::Broken("b".into()),
            ] {
                assert_eq!(r.decide(&m, &Err(f)), Decision::Backoff, "{m}");
            }
            for s in [200, 201, 204, 400, 401, 403, 404, 422, 500, 501] {
                assert_eq!(r.decide(&m, &answer(s, None)), Decision::Answer, "{m} {s}");
            }
        }
    }

    #[test]
    fn post_only_when_surely_not_processed() {
        let r = retry();
        let post = Method::POST;
        assert_eq!(
            r.decide(&post, &Err(Failure::Connect("refused".into()))),
            Decision::Backoff
        );
        assert_eq!(r.decide(&post, &answer(429, None)), Decision::Backoff);
        assert_eq!(
            r.decide(&post, &answer(429, Some("2"))),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            r.decide(&post, &answer(503, Some("1"))),
            Decision::RetryAfter(Duration::from_secs(1))
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(r.decide(&post, &answer(s, None)), Decision::Answer, "{s}");
        }
        for f in [Failure::Timeout("t".into()), Failure::Broken("b".into())] {
            assert_eq!(r.decide(&post, &Err(f)), Decision::Answer);
        }
    }

    #[test]
    fn retry_after_over_the_cap_is_answered() {
        let r = retry();
        assert_eq!(
            r.decide(&Method::GET, &answer(429, Some("6"))),
            Decision::Answer
        );
        assert_eq!(
            r.decide(&Method::GET, &answer(429, Some("5"))),
            Decision::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            r.decide(&Method::POST, &answer(503, Some("60"))),
            Decision::Answer
        );
    }

    #[test]
    fn waits_stop_at_the_last_attempt() {
        let r = retry();
        assert!(r.wait(Decision::Backoff, 1).unwrap() <= Duration::from_millis(100));
        assert!(r.wait(Decision::Backoff, 2).unwrap() <= Duration::from_millis(200));
        assert_eq!(r.wait(Decision::Backoff, 3), None);
        assert_eq!(
            r.wait(Decision::RetryAfter(Duration::from_secs(2)), 1),
            Some(Duration::from_secs(2))
        );
        assert_eq!(r.wait(Decision::Answer, 1), None);
    }
}

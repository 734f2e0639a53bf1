//! One upstream attempt: the request as it goes to Zendesk, and the answer as it comes back.
//!
//! Request headers: the caller's `Authorization`, cookies, `Host`, hop-by-hop headers (and
//! those named by `Connection`), `Content-Length` (recomputed), `Expect` and the
//! forwarding headers are dropped; the account's credentials are injected. Everything else —
//! `Content-Type` with its multipart boundary, `Accept`, `User-Agent`, `Idempotency-Key` —
//! passes unchanged, like the query string and the body bytes.
//!
//! Response: status, body and headers pass unchanged (rate-limit headers, `Retry-After`,
//! `Content-Type`), except hop-by-hop headers, `Set-Cookie` (a session of the account's
//! user must never reach a caller) and `Alt-Svc` (it describes Zendesk's host, not ours).
//! Redirects are not followed: a 3xx goes back to the caller as it is.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, StatusCode};

use crate::zendesk::{describe, Account};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the gateway consumes or recomputes.
const REQUEST_DROPPED: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "content-length",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "via",
];

/// Response headers that must not reach the caller.
const RESPONSE_DROPPED: &[&str] = &["set-cookie", "set-cookie2", "alt-svc", "content-length"];

/// What one attempt came to when upstream answered.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Upstream's status.
    pub status: StatusCode,
    /// Upstream's headers, filtered for the caller.
    pub headers: HeaderMap,
    /// Upstream's body.
    pub body: Bytes,
}

/// What one attempt came to when upstream did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection was made (refused, unreachable, TLS handshake): the request was
    /// surely not processed.
    Connect(String),
    /// The attempt timed out: upstream may have processed it.
    Timeout(String),
    /// The connection broke after the request was sent: upstream may have processed it.
    Broken(String),
}

impl Failure {
    fn from_reqwest(e: &reqwest::Error) -> Self {
        let text = describe(e);
        if e.is_connect() {
            Failure::Connect(text)
        } else if e.is_timeout() {
            Failure::Timeout(text)
        } else {
            Failure::Broken(text)
        }
    }

    /// The description, without URLs or credentials.
    pub fn text(&self) -> &str {
        match self {
            Failure::Connect(t) | Failure::Timeout(t) | Failure::Broken(t) => t,
        }
    }
}

/// Names listed in the `Connection` header: hop-by-hop for this message.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn filtered(headers: &HeaderMap, dropped: &[&str]) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || dropped.contains(&n)
            || super::normalize::REWRITE_HEADERS.contains(&n)
            || n.starts_with("x-zenrelay-")
            || listed.contains(name)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The headers sent upstream: the caller's, filtered, plus the account's `Authorization`.
pub fn request_headers(incoming: &HeaderMap, account: &Account) -> HeaderMap {
    let mut headers = filtered(incoming, REQUEST_DROPPED);
    headers.insert(header::AUTHORIZATION, account.authorization.clone());
    headers
}

/// The headers of upstream's answer as the caller gets them.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    filtered(upstream, RESPONSE_DROPPED)
}

/// `{base_url}{path}[?query]`: the checked path and query, unchanged.
pub fn upstream_url(account: &Account, path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{}{path}?{q}", account.base_url),
        None => format!("{}{path}", account.base_url),
    }
}

/// The HTTP client of the proxy: pooled, no redirects followed, one timeout per attempt.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

/// Sends one attempt and reads the whole answer.
pub async fn send(
    client: &reqwest::Client,
    method: &Method,
    url: &reqwest::Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Upstream, Failure> {
    let mut request = client
        .request(method.clone(), url.clone())
        .headers(headers.clone());
    if !body.is_empty() || matches!(*method, Method::POST | Method::PUT) {
        request = request.body(body.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::from_reqwest(&e))?;
    let status = response.status();
    let headers = response_headers(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| Failure::from_reqwest(&e))?;
    Ok(Upstream {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn account() -> Account {
        let config: crate::config::AccountConfig = toml::from_str(
            "id = \"acme\"\nsubdomain = \"acme\"\nbase_url = \"http://127.0.0.1:9\"\nemail = \"ops@acme.example\"\napi_token = \"t\"",
        )
        .unwrap();
        Account::from_config(
            &config,
            crate::queue::RateLimit {
                limit: 100,
                window_ms: 60_000,
            },
        )
        .unwrap()
    }

    #[test]
    fn request_headers_drop_the_callers_secrets_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer caller-key"),
            ("cookie", "session=1"),
            ("host", "acme.gateway.example"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-zenrelay-attempts", "3"),
            ("content-length", "10"),
            ("content-type", "multipart/form-data; boundary=xyz"),
            ("accept", "application/json"),
            ("user-agent", "node-zendesk/6"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = request_headers(&h, &account());
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names.len(),
            4,
            "only content-type, accept, user-agent and authorization: {names:?}"
        );
        assert_eq!(out["content-type"], "multipart/form-data; boundary=xyz");
        assert_eq!(out["user-agent"], "node-zendesk/6");
        assert_eq!(out["authorization"], account().authorization);
        assert!(out["authorization"].is_sensitive());
    }

    #[test]
    fn response_headers_keep_rate_limits_and_drop_cookies() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-rate-limit", "700"),
            ("x-rate-limit-remaining", "699"),
            ("retry-after", "5"),
            ("content-type", "application/json; charset=utf-8"),
            ("set-cookie", "_zendesk_session=abc"),
            ("connection", "close"),
            ("alt-svc", "h3=\":443\""),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let out = response_headers(&h);
        assert_eq!(out["x-rate-limit-remaining"], "699");
        assert_eq!(out["retry-after"], "5");
        assert_eq!(out["content-type"], "application/json; charset=utf-8");
        assert!(!out.contains_key("set-cookie"));
        assert!(!out.contains_key("connection"));
        assert!(!out.contains_key("alt-svc"));
    }

    #[test]
    fn url_is_base_path_and_query() {
        let a = account();
        assert_eq!(
            upstream_url(&a, "/api/v2/apps.json", Some("include=app")),
            "http://127.0.0.1:9/api/v2/apps.json?include=app"
        );
    }
}

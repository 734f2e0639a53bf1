//! The request target and headers a proxied call may have, checked before any routing.
//!
//! The Apps API's paths need nothing but ASCII letters, digits, `_`, `-` and `.` between
//! single slashes, so the proxy accepts exactly that and refuses everything a path trick is
//! made of, rather than decoding it and hoping every later layer decodes it the same way:
//! - absolute-form (`GET http://host/...`), authority-form (`CONNECT host:443`) and
//!   asterisk-form (`OPTIONS *`) targets;
//! - any `%` (encoded slashes, dots, backslashes and everything else), backslashes, `;`
//!   path parameters and any other character outside the set above;
//! - empty segments (`//`, a trailing `/`) and dot segments (`.`, `..`);
//! - a query with a `_method` parameter (Rails' method override);
//! - headers that some servers and proxies use to rewrite the target, host or method
//!   (`X-Original-URL`, `X-Rewrite-URL`, `X-Forwarded-Host`, `X-HTTP-Method-Override`, ...)
//!   and a repeated `Host`.
//!
//! What passes is forwarded byte for byte: the upstream URL is the account's base URL
//! followed by exactly the checked path and query.

use http::{header, HeaderMap, Uri};

/// Headers that rewrite a request's target, host or method somewhere along the way. A
/// request carrying one is refused: the gateway never honours them and never forwards them.
pub const REWRITE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "x-host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Why a request target or its headers were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an origin-form target (absolute-, authority- or asterisk-form).
    TargetForm,
    /// A path the Apps API cannot have: the reason says what is wrong.
    Path(&'static str),
    /// A query parameter that overrides the method.
    Query,
    /// A header that rewrites the target, host or method (or a repeated `Host`).
    Header(&'static str),
}

impl Refusal {
    /// A short explanation for the caller.
    pub fn message(&self) -> String {
        match self {
            Refusal::TargetForm => {
                "only origin-form request targets (/path?query) are proxied".into()
            }
            Refusal::Path(why) => format!("the path is not an Apps API route: {why}"),
            Refusal::Query => "the _method query parameter is not allowed".into(),
            Refusal::Header(name) => format!("the {name} header is not allowed"),
        }
    }
}

/// A checked proxy target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The account named by a `/zendesk/{account}` prefix, if any.
    pub account: Option<&'a str>,
    /// The Zendesk path, starting with `/api/`.
    pub path: &'a str,
    /// The query string, unchanged.
    pub query: Option<&'a str>,
}

fn allowed_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.')
}

/// Checks a path: only allowed bytes, starting with `/`, no empty or dot segments.
pub fn check_path(path: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::Path("it must start with /"));
    }
    if let Some(b) = path.bytes().find(|b| !allowed_byte(*b)) {
        return Err(Refusal::Path(match b {
            b'%' => "percent-encoding is not allowed",
            b'\\' => "backslashes are not allowed",
            b';' => "path parameters are not allowed",
            _ => "it holds a character outside letters, digits, '_', '-', '.' and '/'",
        }));
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => {
                return Err(Refusal::Path(
                    "empty segments (// or a trailing /) are not allowed",
                ))
            }
            "." | ".." => return Err(Refusal::Path("dot segments are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes (for inspecting query keys only; invalid escapes stay as they are).
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    out
}

/// Checks a query string: no `_method` parameter, however encoded.
pub fn check_query(query: &str) -> Result<(), Refusal> {
    for pair in query.split('&') {
        let key = pair.split('=').next().unwrap_or("");
        let key = percent_decode(key);
        if key.trim_ascii().eq_ignore_ascii_case(b"_method") {
            return Err(Refusal::Query);
        }
    }
    Ok(())
}

/// Checks the request target. `Ok(None)`: a clean path that is not a proxy path (neither
/// `/zendesk/...` nor `/api/...`), for the router's plain 404.
pub fn target(uri: &Uri) -> Result<Option<Target<'_>>, Refusal> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(Refusal::TargetForm);
    }
    let path = uri.path();
    if path == "*" {
        return Err(Refusal::TargetForm);
    }
    check_path(path)?;
    if let Some(query) = uri.query() {
        check_query(query)?;
    }
    let query = uri.query();
    if let Some(rest) = path.strip_prefix("/zendesk/") {
        let (account, zendesk_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(Refusal::Path("no Zendesk path after /zendesk/{account}")),
        };
        if !zendesk_path.starts_with("/api/") {
            return Err(Refusal::Path("the Zendesk path must start with /api/"));
        }
        return Ok(Some(Target {
            account: Some(account),
            path: zendesk_path,
            query,
        }));
    }
    if path.starts_with("/api/") {
        return Ok(Some(Target {
            account: None,
            path,
            query,
        }));
    }
    Ok(None)
}

/// Checks the headers: none of [`REWRITE_HEADERS`], at most one `Host`.
pub fn check_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    for name in REWRITE_HEADERS {
        if headers.contains_key(*name) {
            return Err(Refusal::Header(name));
        }
    }
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Err(Refusal::Header("repeated Host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(raw: &str) -> Result<Option<Target<'static>>, Refusal> {
        let uri: &'static Uri = Box::leak(Box::new(raw.parse::<Uri>().unwrap()));
        target(uri)
    }

    #[test]
    fn clean_targets() {
        assert_eq!(
            t("/zendesk/acme/api/v2/apps.json?include=app").unwrap(),
            Some(Target {
                account: Some("acme"),
                path: "/api/v2/apps.json",
                query: Some("include=app")
            })
        );
        assert_eq!(
            t("/api/v2/apps/installations.json").unwrap(),
            Some(Target {
                account: None,
                path: "/api/v2/apps/installations.json",
                query: None
            })
        );
        assert_eq!(t("/v1/nothing").unwrap(), None);
        assert_eq!(
            t("/").unwrap_err(),
            Refusal::Path("empty segments (// or a trailing /) are not allowed")
        );
    }

    #[test]
    fn tricks_are_refused() {
        for raw in [
            "http://evil.example/api/v2/apps",
            "https://acme.zendesk.com/api/v2/apps",
            "/api/v2/apps/../../v2/users",
            "/api/v2/apps/./owned",
            "/zendesk/acme/../beta/api/v2/apps",
            "/zendesk/../api/v2/apps",
            "/api/v2/apps%2f..%2fusers",
            "/api/v2/apps/%2e%2e/users",
            "/api/v2/%61pps",
            "//api/v2/apps",
            "/api//v2/apps",
            "/api/v2/apps/",
            "/api/v2/apps;jsessionid=1",
            "/zendesk/acme",
            "/zendesk/acme/v1/queues",
            "/zendesk//api/v2/apps",
            "/api/v2/apps?_method=DELETE",
            "/api/v2/apps?%5Fmethod=DELETE",
            "/api/v2/apps?a=1&_METHOD=put",
        ] {
            assert!(t(raw).is_err(), "{raw}");
        }
        let star = Uri::from_static("*");
        assert_eq!(target(&star), Err(Refusal::TargetForm));
        let authority: Uri = "evil.example:443".parse().unwrap();
        assert_eq!(target(&authority), Err(Refusal::TargetForm));
    }

    #[test]
    fn rewrite_headers_are_refused() {
        let mut h = HeaderMap::new();
        assert!(check_headers(&h).is_ok());
        h.insert("x-original-url", "/api/v2/users".parse().unwrap());
        assert_eq!(check_headers(&h), Err(Refusal::Header("x-original-url")));
        let mut h = HeaderMap::new();
        h.append(header::HOST, "acme.example".parse().unwrap());
        h.append(header::HOST, "beta.example".parse().unwrap());
        assert!(check_headers(&h).is_err());
    }

    #[test]
    fn query_decoding() {
        assert!(check_query("include=app&per_page=2").is_ok());
        assert!(check_query("method=x").is_ok());
        assert!(check_query("_method").is_err());
        assert!(check_query("%5f%6Dethod=get").is_err());
        assert!(check_query("+_method=get").is_err());
    }
}

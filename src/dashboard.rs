//! The operator dashboard: `GET /` and its script and stylesheet, compiled into the binary.
//!
//! The page is public and holds no data: its script asks for an admin key (or takes it from
//! the URL fragment, `/#key=...`, which browsers never send), keeps it in `sessionStorage`
//! and reads the admin API with it (`/v1/queues`, `/v1/history`, dead letters, pause,
//! resume, replay, purge). Every asset comes from the gateway, so the page works offline,
//! and a strict `Content-Security-Policy` allows nothing else: no inline script or style,
//! no other origin, no framing.

use axum::response::{IntoResponse, Response};
use http::header;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLESHEET: &str = include_str!("dashboard/dashboard.css");

/// The policy of every dashboard response: same-origin assets and API calls only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Assets change with the binary: browsers revalidate rather than keep an old one.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard page (public; it holds no data).
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "The dashboard page", body = String, content_type = "text/html")))]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard.js", tag = "operations",
    responses((status = 200, description = "The dashboard's script", body = String, content_type = "text/javascript")))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The dashboard's stylesheet.
#[utoipa::path(get, path = "/dashboard.css", tag = "operations",
    responses((status = 200, description = "The dashboard's stylesheet", body = String, content_type = "text/css")))]
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_needs_nothing_inline_or_from_elsewhere() {
        assert!(PAGE.contains(r#"<script src="/dashboard.js""#));
        assert!(PAGE.contains(r#"<link rel="stylesheet" href="/dashboard.css">"#));
        for text in [PAGE, SCRIPT, STYLESHEET] {
            // The SVG namespace is a name, not a place the page loads from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("@import") && !text.contains("url("));
        }
        assert!(!PAGE.contains(" style="), "inline style attribute");
        assert!(!PAGE.contains("<style"), "inline stylesheet");
        assert_eq!(PAGE.matches("<script").count(), 1, "inline script");
        let handler = PAGE.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert!(!SCRIPT.contains("innerHTML"), "markup built from strings");
    }
}

//! The gateway's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! annotations (see [`crate::api::api`], which registers the routes from the same
//! annotations). The Notify event schema is the very JSON Schema ingress validates with.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's fixed parts; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "zenrelay",
        description = "Notification relay gateway for the Zendesk Apps API: ingress, webhooks and operator endpoints.",
        license(name = "MIT", identifier = "MIT"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "ingress", description = "Events from internal callers"),
        (name = "webhooks", description = "Signed webhooks from third parties"),
        (name = "admin", description = "Operator endpoints (admin keys)"),
        (name = "operations", description = "Health, metrics and this description"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A client key from `[[clients]]`"))
                    .build(),
            ),
        );
    }
}

/// The complete document as JSON: the router's description of `api`, with the Notify
/// event schema.
pub fn complete(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).unwrap_or(Value::Null);
    let mut schema = crate::domain::notify_schema();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("NotifyEvent".into(), schema);
    }
    doc
}

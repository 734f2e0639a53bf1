//! What an account holds: apps built from packages (with their parameters) and installations
//! (with their requirements), and the JSON objects both documents answer for them.

use serde_json::{json, Map, Value};

use super::packages::{self, Package};
use super::routes::Family;

/// A parameter of an app, with the ids Zendesk gives them.
#[derive(Debug, Clone)]
pub(crate) struct Parameter {
    pub id: u64,
    pub spec: packages::ParamSpec,
    pub position: usize,
    pub created_at: String,
}

/// An app built from an uploaded package.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: u64,
    pub name: String,
    pub short_description: Option<String>,
    pub package: Package,
    pub parameters: Vec<Parameter>,
    pub created_at: String,
    pub updated_at: String,
    /// PEM, generated on first request.
    pub public_key: Option<String>,
}

impl App {
    /// The app's JSON in a family's shape. `exclude` drops side-loads (`parameters`,
    /// `categories`).
    pub(crate) fn to_json(
        &self,
        family: Family,
        installation_count: usize,
        exclude: &[&str],
    ) -> Value {
        let mut v = match family {
            Family::Support => self.support_json(installation_count),
            Family::Sell => self.sell_json(),
        };
        if let Value::Object(map) = &mut v {
            for key in exclude {
                map.remove(*key);
            }
        }
        v
    }

    /// The app's parameters, as both documents show them.
    fn parameters_json(&self) -> Vec<Value> {
        self.parameters
            .iter()
            .map(|param| {
                json!({
                    "app_id": self.id,
                    "created_at": param.created_at,
                    "default_value": param.spec.default_value,
                    "id": param.id,
                    "kind": param.spec.kind,
                    "name": param.spec.name,
                    "position": param.position,
                    "required": param.spec.required,
                    "secure": param.spec.secure,
                    "updated_at": param.created_at,
                })
            })
            .collect()
    }

    /// The app object of the Support document.
    fn support_json(&self, installation_count: usize) -> Value {
        let base = Family::Support.base_path();
        let p = &self.package;
        // Built from two literals: one would exceed the `json!` macro's recursion limit.
        let mut v = json!({
            "app_organization": null,
            "author_email": p.author_email,
            "author_name": p.author_name,
            "author_url": p.author_url,
            "categories": [],
            "closed_preview": false,
            "collections": [],
            "created_at": self.created_at,
            "date_published": null,
            "default_locale": p.default_locale,
            "deprecated": false,
            "feature_color": null,
            "featured": false,
            "framework_version": p.framework_version,
            "google_analytics_code": null,
            "id": self.id,
            "installable": true,
            "installation_count": installation_count,
            "installation_instructions": p.installation_instructions.clone().unwrap_or_default(),
            "large_icon": format!("{base}/{}/assets/logo.png", self.id),
            "locations": [],
            "long_description": p.long_description.clone().unwrap_or_default(),
        });
        let rest = json!({
            "marketing_only": p.marketing_only,
            "name": self.name,
            "obsolete": false,
            "owner_id": 1,
            "paid": false,
            "parameters": self.parameters_json(),
            "plans": [],
            "products": p.products,
            "promoted": false,
            "rating": {"average": 0, "count": {}, "total_count": 0},
            "raw_installation_instructions": p.installation_instructions,
            "raw_long_description": p.long_description,
            "remote_installation_url": null,
            "screenshots": [],
            "short_description": self.short_description,
            "single_install": p.single_install,
            "small_icon": format!("{base}/{}/assets/logo-small.png", self.id),
            "state": "published",
            "stripe_publishable_key": null,
            "terms_conditions_url": null,
            "third_party_pricing": {"has_third_party_pricing": false, "third_party_pricing_url": null},
            "updated_at": self.updated_at,
            "version": p.version,
            "visibility": "private",
        });
        if let (Value::Object(map), Value::Object(rest)) = (&mut v, rest) {
            map.extend(rest);
        }
        v
    }

    /// The app object of the Sell document.
    fn sell_json(&self) -> Value {
        let base = Family::Sell.base_path();
        let p = &self.package;
        json!({
            "author_email": p.author_email,
            "author_name": p.author_name,
            "categories": [],
            "created_at": self.created_at,
            "default_locale": p.default_locale,
            "featured": false,
            "framework_version": p.framework_version,
            "id": self.id,
            "installable": true,
            "installation_instructions": p.installation_instructions.clone().unwrap_or_default(),
            "large_icon": format!("{base}/{}/assets/logo.png", self.id),
            "long_description": p.long_description.clone().unwrap_or_default(),
            "name": self.name,
            "owner_id": 1,
            "parameters": self.parameters_json(),
            "promoted": false,
            "rating": {"average": 0, "count": {}, "total_count": 0},
            "raw_installation_instructions": p.installation_instructions,
            "raw_long_description": p.long_description,
            "screenshots": [],
            "short_description": self.short_description,
            "single_install": p.single_install,
            "small_icon": format!("{base}/{}/assets/logo-small.png", self.id),
            "updated_at": self.updated_at,
            "version": p.version,
            "visibility": "private",
        })
    }
}

/// A requirement installed for an installation (from the app's `requirements.json`).
#[derive(Debug, Clone)]
pub(crate) struct Requirement {
    pub id: u64,
    pub kind: String,
    pub identifier: String,
    pub created_at: String,
}

/// An app installed in an account, through one family.
#[derive(Debug, Clone)]
pub(crate) struct Installation {
    pub id: u64,
    pub app_id: u64,
    pub family: Family,
    pub enabled: bool,
    /// `enabled` as asked for; applied when a pending installation completes.
    pub requested_enabled: bool,
    pub settings: Map<String, Value>,
    pub pending: bool,
    pub pending_job_id: Option<String>,
    pub group_restrictions: Value,
    pub role_restrictions: Value,
    pub requirements: Vec<Requirement>,
    pub created_at: String,
    pub updated_at: String,
}

impl Installation {
    /// The installation object of both documents' install/list/update answers.
    pub(crate) fn to_json(&self) -> Value {
        let product = self.family.product();
        let settings_objects: Vec<Value> = self
            .settings
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        json!({
            "app_id": self.app_id,
            "collapsible": true,
            "created_at": self.created_at,
            "enabled": self.enabled,
            "group_restrictions": self.group_restrictions,
            "has_incomplete_subscription": false,
            "has_unpaid_subscription": null,
            "id": self.id,
            "paid": null,
            "pending_installation": self.pending,
            "pending_job_id": self.pending_job_id,
            "plan_information": {"name": null},
            "product": product,
            "recurring_payment": false,
            "redirect_path": format!("/{product}/apps/manage"),
            "role_restrictions": self.role_restrictions,
            "servable": true,
            "settings": self.settings,
            "settings_objects": settings_objects,
            "stripe_account": null,
            "stripe_publishable_key": null,
            "stripe_subscription_id": null,
            "updated": self.updated_at.chars().filter(char::is_ascii_digit).collect::<String>(),
            "updated_at": self.updated_at,
        })
    }
}

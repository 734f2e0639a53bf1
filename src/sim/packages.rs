//! App package validation, the way Zendesk's validator (zendesk_apps_support) checks a zip,
//! with its messages.
//!
//! Checked: the zip opens (`Cannot unzip the package`), no symlinks, `manifest.json` at the
//! root (a nested one is named), a valid JSON object without duplicate keys; `author` (with name and email) and
//! `defaultLocale` present, the locale valid and `translations/<locale>.json` a JSON object;
//! `frameworkVersion` is "2.0"; `location` maps products (support, chat, standalone_chat, sell)
//! to locations whose URL is https, localhost, or an existing file under `assets/`; boolean
//! fields are booleans; `parameters` is an array of typed, uniquely named parameters, none
//! named `name`, none hidden and required, at most one `oauth` and that one not secure (with
//! the manifest's `oauth` fields); `requirements.json` is a JSON object of allowed types with
//! at most 5000 requirements. All problems found are reported together.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Cursor, Read};

use serde_json::{Map, Value};

/// The message of a package that is not a zip.
const CANNOT_UNZIP: &str = "Cannot unzip the package";
/// The most requirements one app may declare.
pub(crate) const MAX_REQUIREMENTS: usize = 5000;
/// The framework versions apps may target.
const FRAMEWORK_VERSIONS: &[&str] = &["2.0"];
const PRODUCTS: &[&str] = &["support", "chat", "standalone_chat", "sell"];
const PARAMETER_TYPES: &[&str] = &[
    "text",
    "checkbox",
    "url",
    "number",
    "multiline",
    "hidden",
    "oauth",
];
const REQUIREMENT_TYPES: &[&str] = &[
    "automations",
    "channel_integrations",
    "custom_objects",
    "macros",
    "targets",
    "views",
    "ticket_fields",
    "triggers",
    "user_fields",
    "organization_fields",
    "webhooks",
];
const BOOLEAN_FIELDS: &[&str] = &[
    "requirementsOnly",
    "marketingOnly",
    "singleInstall",
    "signedUrls",
    "private",
];
const OAUTH_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "authorize_uri",
    "access_token_uri",
];
/// Entries and bytes read per file are bounded so a hostile zip cannot exhaust memory.
const MAX_ENTRIES: usize = 10_000;
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// A parameter declared in the manifest.
#[derive(Debug, Clone)]
pub(crate) struct ParamSpec {
    pub name: String,
    pub kind: String,
    pub required: bool,
    pub secure: bool,
    pub default_value: Value,
}

/// Why a package is refused: every problem found, in Zendesk's words, shown one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub(crate) struct InvalidPackage {
    /// The problems, in the order they were found.
    pub problems: Vec<String>,
}

impl InvalidPackage {
    /// A package refused for one problem.
    pub(crate) fn one(problem: impl Into<String>) -> InvalidPackage {
        InvalidPackage {
            problems: vec![problem.into()],
        }
    }

    /// A package that is not a readable zip (or whose check could not finish).
    pub(crate) fn cannot_unzip() -> InvalidPackage {
        InvalidPackage::one(CANNOT_UNZIP)
    }
}

/// What the simulator keeps of a valid package.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub name: String,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub author_url: Option<String>,
    pub default_locale: String,
    pub framework_version: String,
    pub version: Option<String>,
    pub products: Vec<String>,
    /// (product, location name)
    pub locations: Vec<(String, String)>,
    pub parameters: Vec<ParamSpec>,
    /// (requirement type, identifier)
    pub requirements: Vec<(String, String)>,
    pub single_install: bool,
    pub marketing_only: bool,
    pub short_description: Option<String>,
    pub long_description: Option<String>,
    pub installation_instructions: Option<String>,
}

impl Package {
    /// True when the app declares an `oauth` parameter.
    pub(crate) fn has_oauth(&self) -> bool {
        self.parameters.iter().any(|p| p.kind == "oauth")
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn listing(items: &[String]) -> String {
    items.join(", ")
}

/// Validates a package; the error lists every problem found, in Zendesk's words.
///
/// A zip that cannot be read, or a manifest that cannot be parsed, stops the check at once;
/// otherwise every check runs and all problems are reported together, in this order.
pub(crate) fn validate(zip_bytes: &[u8]) -> Result<Package, InvalidPackage> {
    let mut archive = Archive::open(zip_bytes)?;
    let manifest = read_manifest(&mut archive)?;
    let mut errors = Vec::new();
    check_boolean_fields(&manifest, &mut errors);
    let marketing_only = flag(&manifest, "marketingOnly");
    let author = check_required_fields(&manifest, &mut errors);
    let framework_version = check_framework_version(&manifest, &mut errors);
    let (default_locale, translation) = check_default_locale(&manifest, &mut archive, &mut errors)?;
    let (products, locations) = check_locations(&manifest, &archive.files, &mut errors);
    let parameters = check_parameters(&manifest, &mut errors);
    let requirements = check_requirements(&mut archive, marketing_only, &products, &mut errors)?;
    if !errors.is_empty() {
        return Err(InvalidPackage { problems: errors });
    }
    let app_strings = translation.get("app").and_then(Value::as_object);
    let text = |key: &str| {
        app_strings
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let name = manifest
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| text("name"))
        .unwrap_or_else(|| "Untitled app".to_string());
    Ok(Package {
        name,
        author_name: author.name,
        author_email: author.email,
        author_url: author.url,
        default_locale,
        framework_version,
        version: manifest
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_string),
        products,
        locations,
        parameters,
        requirements,
        single_install: flag(&manifest, "singleInstall"),
        marketing_only,
        short_description: text("short_description"),
        long_description: text("long_description"),
        installation_instructions: text("installation_instructions"),
    })
}

/// The files of an uploaded zip, read on demand.
struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// The files, by their name without a leading `./`.
    files: BTreeSet<String>,
    /// Name without a leading `./` → name in the archive.
    names: HashMap<String, String>,
}

impl<'a> Archive<'a> {
    /// Opens a zip and lists its files: at most [`MAX_ENTRIES`] entries, no symlinks.
    fn open(zip_bytes: &'a [u8]) -> Result<Archive<'a>, InvalidPackage> {
        let mut zip = zip::ZipArchive::new(Cursor::new(zip_bytes))
            .map_err(|_| InvalidPackage::cannot_unzip())?;
        if zip.len() > MAX_ENTRIES {
            return Err(InvalidPackage::cannot_unzip());
        }
        let mut files = BTreeSet::new();
        let mut names = HashMap::new();
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|_| InvalidPackage::cannot_unzip())?;
            if entry.is_symlink() {
                return Err(InvalidPackage::one(
                    "Symlinks are not allowed in the zip file",
                ));
            }
            if entry.is_file() {
                let normalised = entry.name().trim_start_matches("./").to_string();
                names.insert(normalised.clone(), entry.name().to_string());
                files.insert(normalised);
            }
        }
        Ok(Archive { zip, files, names })
    }

    /// Whether the zip holds this file (named without a leading `./`).
    fn contains(&self, name: &str) -> bool {
        self.files.contains(name)
    }

    /// The first [`MAX_FILE_BYTES`] of a file.
    fn read(&mut self, name: &str) -> Result<Vec<u8>, InvalidPackage> {
        let stored = self.names.get(name).map_or(name, String::as_str);
        let entry = self
            .zip
            .by_name(stored)
            .map_err(|_| InvalidPackage::cannot_unzip())?;
        let mut buf = Vec::new();
        entry
            .take(MAX_FILE_BYTES)
            .read_to_end(&mut buf)
            .map_err(|_| InvalidPackage::cannot_unzip())?;
        Ok(buf)
    }
}

/// The manifest: `manifest.json` at the root (a nested one is named), a JSON object without
/// duplicate keys.
fn read_manifest(archive: &mut Archive<'_>) -> Result<Map<String, Value>, InvalidPackage> {
    if !archive.contains("manifest.json") {
        let nested = archive.files.iter().find(|f| f.ends_with("/manifest.json"));
        return Err(InvalidPackage::one(match nested {
            Some(found) => format!(
                "Could not find manifest.json in the root of the zip file, but {found} was found. Try re-creating the archive from this directory."
            ),
            None => "Could not find manifest.json".to_string(),
        }));
    }
    let (manifest, duplicates) = parse_reporting_duplicates(&archive.read("manifest.json")?)
        .map_err(|e| InvalidPackage::one(format!("manifest is not proper JSON. {e}")))?;
    if !duplicates.is_empty() {
        return Err(InvalidPackage::one(format!(
            "Duplicate keys are specified in the manifest.json file. {}",
            listing(&duplicates)
        )));
    }
    match manifest {
        Value::Object(manifest) => Ok(manifest),
        _ => Err(InvalidPackage::one(
            "manifest is not proper JSON. The manifest must be a JSON object",
        )),
    }
}

/// A boolean field of the manifest; absent or not a boolean counts as false.
fn flag(manifest: &Map<String, Value>, key: &str) -> bool {
    manifest.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The fields of [`BOOLEAN_FIELDS`] are booleans when present.
fn check_boolean_fields(manifest: &Map<String, Value>, errors: &mut Vec<String>) {
    for field in BOOLEAN_FIELDS {
        if let Some(v) = manifest.get(*field) {
            if !v.is_boolean() {
                errors.push(format!(
                    "{field} must be a boolean value, got \"{}\".",
                    shown(v)
                ));
            }
        }
    }
}

/// The manifest's `author`, as far as it is given.
#[derive(Default)]
struct Author {
    name: Option<String>,
    email: Option<String>,
    url: Option<String>,
}

/// Required fields: `author` (with name and email) and `defaultLocale`, plus
/// `frameworkVersion` and `location` unless the app is requirements-only or marketing-only.
/// Answers the author.
fn check_required_fields(manifest: &Map<String, Value>, errors: &mut Vec<String>) -> Author {
    let mut missing = Vec::new();
    let mut required = vec!["author", "defaultLocale"];
    if !flag(manifest, "requirementsOnly") && !flag(manifest, "marketingOnly") {
        required.extend(["frameworkVersion", "location"]);
    }
    for key in required {
        if manifest.get(key).is_none_or_null() {
            missing.push(key.to_string());
        }
    }
    let mut author = Author::default();
    match manifest.get("author") {
        Some(Value::Object(a)) => {
            for key in ["name", "email"] {
                if a.get(key).and_then(Value::as_str).is_none_or_empty() {
                    missing.push(format!("author {key}"));
                }
            }
            let text = |key: &str| a.get(key).and_then(Value::as_str).map(str::to_string);
            author = Author {
                name: text("name"),
                email: text("email"),
                url: text("url"),
            };
        }
        Some(Value::Null) | None => {}
        Some(other) => errors.push(format!(
            "The manifest field author needs to be key-value pairs with string keys, but it was {}",
            shown(other)
        )),
    }
    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "field"
        } else {
            "fields"
        };
        errors.push(format!(
            "Missing required {noun} in manifest: {}",
            listing(&missing)
        ));
    }
    author
}

/// `frameworkVersion`, when given, is one of [`FRAMEWORK_VERSIONS`]; answers it (empty when
/// absent or invalid).
fn check_framework_version(manifest: &Map<String, Value>, errors: &mut Vec<String>) -> String {
    match manifest.get("frameworkVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if FRAMEWORK_VERSIONS.contains(&v.as_str()) => return v.clone(),
        Some(Value::String(v)) => errors.push(format!(
            "{v} is not a valid framework version. Available versions are: {}.",
            FRAMEWORK_VERSIONS.join(", ")
        )),
        Some(other) => errors.push(format!(
            "frameworkVersion must be a string, got \"{}\".",
            shown(other)
        )),
    }
    String::new()
}

/// `defaultLocale`, when given, is a valid locale with a `translations/<locale>.json` that
/// is a JSON object; answers the locale and that translation (empty when absent or invalid).
fn check_default_locale(
    manifest: &Map<String, Value>,
    archive: &mut Archive<'_>,
    errors: &mut Vec<String>,
) -> Result<(String, Map<String, Value>), InvalidPackage> {
    let mut translation = Map::new();
    let loc = match manifest.get("defaultLocale") {
        None | Some(Value::Null) => return Ok((String::new(), translation)),
        Some(Value::String(loc)) if valid_locale(loc) => loc,
        Some(other) => {
            errors.push(format!("{} is not a valid default locale.", shown(other)));
            return Ok((String::new(), translation));
        }
    };
    let file = format!("translations/{loc}.json");
    if archive.contains(&file) {
        match serde_json::from_slice::<Value>(&archive.read(&file)?) {
            Ok(Value::Object(t)) => translation = t,
            Ok(_) => errors.push(format!("{file} is not a JSON object.")),
            Err(e) => errors.push(format!("{file} is not valid JSON. {e}")),
        }
    } else {
        errors.push(format!(
            "Missing translation file for locale '{loc}'. Learn more: https://developer.zendesk.com/apps/docs/developer-guide/deploying#app-internationalization"
        ));
    }
    Ok((loc.clone(), translation))
}

/// `location` maps products of [`PRODUCTS`] to their locations, each with a URI that is
/// https, localhost or a file under `assets/`; answers the products and the
/// (product, location name) pairs.
fn check_locations(
    manifest: &Map<String, Value>,
    files: &BTreeSet<String>,
    errors: &mut Vec<String>,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut products = Vec::new();
    let mut locations = Vec::new();
    let hosts = match manifest.get("location") {
        None | Some(Value::Null) => return (products, locations),
        Some(Value::Object(hosts)) => hosts,
        Some(other) => {
            errors.push(format!(
                "The manifest field location needs to be key-value pairs with string keys, but it was {}",
                shown(other)
            ));
            return (products, locations);
        }
    };
    for (host, locs) in hosts {
        if !PRODUCTS.contains(&host.as_str()) {
            errors.push(format!("{host} is an invalid host for apps."));
            continue;
        }
        products.push(host.clone());
        let Value::Object(locs) = locs else {
            errors.push(format!(
                "The manifest field location.{host} needs to be key-value pairs with string keys, but it was {}",
                shown(locs)
            ));
            continue;
        };
        for (name, spec) in locs {
            locations.push((host.clone(), name.clone()));
            check_location(name, spec, files, errors);
        }
    }
    (products, locations)
}

/// One location: a URI string, or an object with `url` and boolean `autoLoad`, `autoHide`
/// and `signed`.
fn check_location(name: &str, spec: &Value, files: &BTreeSet<String>, errors: &mut Vec<String>) {
    let uri = match spec {
        Value::String(u) => Some(u.as_str()),
        Value::Object(o) => {
            for key in ["autoLoad", "autoHide", "signed"] {
                if let Some(v) = o.get(key) {
                    if !v.is_boolean() {
                        errors.push(format!(
                            "{key} must be a boolean value, got \"{}\".",
                            shown(v)
                        ));
                    }
                }
            }
            o.get("url").and_then(Value::as_str)
        }
        _ => None,
    };
    match uri {
        None | Some("") => errors.push(format!("{name} location does not specify a URI.")),
        Some(u) if !valid_location_uri(u, files) => errors.push(format!(
            "{u} is either an invalid location URI, refers to a missing asset, or does not use HTTPS."
        )),
        Some(_) => {}
    }
}

/// `requirements.json`, when present: allowed only for apps that are neither marketing-only
/// nor Chat-only, a JSON object of [`REQUIREMENT_TYPES`] with at most [`MAX_REQUIREMENTS`]
/// requirements; answers the (requirement type, identifier) pairs.
fn check_requirements(
    archive: &mut Archive<'_>,
    marketing_only: bool,
    products: &[String],
    errors: &mut Vec<String>,
) -> Result<Vec<(String, String)>, InvalidPackage> {
    let mut requirements = Vec::new();
    if !archive.contains("requirements.json") {
        return Ok(requirements);
    }
    let chat_only = !products.is_empty() && products.iter().all(|p| p == "chat");
    if marketing_only || chat_only {
        errors.push(
            "App requirements are not supported for marketing-only or Chat-only apps".to_string(),
        );
    }
    let reqs = match serde_json::from_slice::<Value>(&archive.read("requirements.json")?) {
        Err(e) => {
            errors.push(format!("requirements.json is not proper JSON. {e}"));
            return Ok(requirements);
        }
        Ok(Value::Object(reqs)) => reqs,
        Ok(_) => {
            errors.push(
                "requirements.json is not proper JSON. The requirements must be a JSON object"
                    .to_string(),
            );
            return Ok(requirements);
        }
    };
    let invalid: Vec<String> = reqs
        .keys()
        .filter(|k| !REQUIREMENT_TYPES.contains(&k.as_str()))
        .cloned()
        .collect();
    match invalid.len() {
        0 => {}
        1 => errors.push(format!(
            "requirements.json contains an invalid type: {}",
            invalid[0]
        )),
        _ => errors.push(format!(
            "requirements.json contains invalid types: {}",
            listing(&invalid)
        )),
    }
    for (kind, items) in &reqs {
        if let Value::Object(items) = items {
            for identifier in items.keys() {
                requirements.push((kind.clone(), identifier.clone()));
            }
        } else if REQUIREMENT_TYPES.contains(&kind.as_str()) {
            errors.push(format!(
                "The manifest field {kind} needs to be key-value pairs with string keys, but it was {}",
                shown(items)
            ));
        }
    }
    if requirements.len() > MAX_REQUIREMENTS {
        errors.push(format!(
            "The requirements.json file contains too many requirements. The current limit is {MAX_REQUIREMENTS} requirements. This app has {} requirements.",
            requirements.len()
        ));
    }
    Ok(requirements)
}

trait Blank {
    fn is_none_or_null(&self) -> bool;
}

impl Blank for Option<&Value> {
    fn is_none_or_null(&self) -> bool {
        matches!(self, None | Some(Value::Null))
    }
}

trait BlankStr {
    fn is_none_or_empty(&self) -> bool;
}

impl BlankStr for Option<&str> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, |s| s.trim().is_empty())
    }
}

fn valid_locale(loc: &str) -> bool {
    let mut parts = loc.split('-');
    let lang = parts.next().unwrap_or("");
    (2..=3).contains(&lang.len())
        && lang.chars().all(|c| c.is_ascii_lowercase())
        && parts
            .all(|p| !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn valid_location_uri(uri: &str, files: &BTreeSet<String>) -> bool {
    let lower = uri.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        return !rest.is_empty() && !rest.starts_with('/');
    }
    if let Some(rest) = lower.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        return host == "localhost" || host == "127.0.0.1";
    }
    if lower.contains("://") || uri.starts_with('/') || uri.contains("..") {
        return false;
    }
    let path = uri.split(['?', '#']).next().unwrap_or("");
    files.contains(path) && path.starts_with("assets/") || files.contains(&format!("assets/{path}"))
}

/// `parameters`, when given, is an array of named parameters; answers the specs of those
/// that have a name.
fn check_parameters(manifest: &Map<String, Value>, errors: &mut Vec<String>) -> Vec<ParamSpec> {
    let list = match manifest.get("parameters") {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            errors.push("App parameters must be an array.".to_string());
            return Vec::new();
        }
    };
    let mut specs = Vec::new();
    let mut missing_names = false;
    for p in list {
        let Some(obj) = p.as_object() else {
            errors.push(format!(
                "The manifest field parameters needs to be key-value pairs with string keys, but it was {}",
                shown(p)
            ));
            continue;
        };
        let Some(name) = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            missing_names = true;
            continue;
        };
        specs.push(parameter_spec(name, obj, errors));
    }
    if missing_names {
        errors.push("Missing required field in manifest: parameters name".to_string());
    }
    check_parameter_set(&specs, errors);
    check_oauth(manifest, &specs, errors);
    specs
}

/// One named parameter: `type` defaults to `text`, `required` and `secure` are booleans,
/// and the name is not `name`.
fn parameter_spec(name: &str, obj: &Map<String, Value>, errors: &mut Vec<String>) -> ParamSpec {
    let kind = match obj.get("type") {
        None | Some(Value::Null) => "text".to_string(),
        Some(Value::String(t)) => t.clone(),
        Some(other) => shown(other),
    };
    let mut boolean = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(format!(
                "{key} must be a boolean value, got \"{}\".",
                shown(other)
            ));
            false
        }
    };
    let required = boolean("required");
    let secure = boolean("secure");
    if name == "name" {
        errors.push("Can't call a parameter 'name'".to_string());
    }
    ParamSpec {
        name: name.to_string(),
        kind,
        required,
        secure,
        default_value: obj.get("default").cloned().unwrap_or(Value::Null),
    }
}

/// Across the parameters: every type is one of [`PARAMETER_TYPES`], no name is used twice,
/// and no hidden parameter is required.
fn check_parameter_set(specs: &[ParamSpec], errors: &mut Vec<String>) {
    let invalid_types: Vec<String> = specs
        .iter()
        .filter(|p| !PARAMETER_TYPES.contains(&p.kind.as_str()))
        .map(|p| p.kind.clone())
        .collect();
    match invalid_types.len() {
        0 => {}
        1 => errors.push(format!(
            "{} is an invalid parameter type.",
            invalid_types[0]
        )),
        _ => errors.push(format!(
            "{} are invalid parameter types.",
            listing(&invalid_types)
        )),
    }
    let mut seen = HashSet::new();
    let duplicates: BTreeSet<&str> = specs
        .iter()
        .map(|p| p.name.as_str())
        .filter(|name| !seen.insert(*name))
        .collect();
    if !duplicates.is_empty() {
        let d: Vec<String> = duplicates.into_iter().map(str::to_string).collect();
        errors.push(format!("Duplicate app parameters defined: {}", listing(&d)));
    }
    let hidden_required: Vec<String> = specs
        .iter()
        .filter(|p| p.kind == "hidden" && p.required)
        .map(|p| p.name.clone())
        .collect();
    match hidden_required.len() {
        0 => {}
        1 => errors.push(format!(
            "{} is set to hidden and cannot be required.",
            hidden_required[0]
        )),
        _ => errors.push(format!(
            "{} are set to hidden and cannot be required.",
            listing(&hidden_required)
        )),
    }
}

/// At most one `oauth` parameter, not secure, and then the manifest's `oauth` has every field
/// of [`OAUTH_KEYS`].
fn check_oauth(manifest: &Map<String, Value>, specs: &[ParamSpec], errors: &mut Vec<String>) {
    let oauth: Vec<&ParamSpec> = specs.iter().filter(|p| p.kind == "oauth").collect();
    if oauth.len() > 1 {
        errors.push("Too many parameters with type 'oauth': one permitted".to_string());
    }
    if oauth.iter().any(|p| p.secure) {
        errors.push("oauth parameter cannot be set to be secure.".to_string());
    }
    if oauth.is_empty() {
        return;
    }
    let config = manifest.get("oauth").and_then(Value::as_object);
    let missing: Vec<String> = OAUTH_KEYS
        .iter()
        .filter(|k| {
            config
                .and_then(|c| c.get(**k))
                .and_then(Value::as_str)
                .is_none_or_empty()
        })
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "field"
        } else {
            "fields"
        };
        errors.push(format!(
            "Missing required oauth {noun} in manifest: {}",
            listing(&missing)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const MANIFEST: &str = r#"{"name":"Fixture","author":{"name":"A","email":"a@x.example"},"defaultLocale":"en","frameworkVersion":"2.0","version":"1.0.0","location":{"support":{"ticket_sidebar":{"url":"assets/iframe.html"}}},"parameters":[{"name":"token","type":"text","required":true,"secure":true}]}"#;

    fn ok_files(manifest: &str) -> Vec<u8> {
        zip(&[
            ("manifest.json", manifest),
            (
                "translations/en.json",
                r#"{"app":{"short_description":"Short"}}"#,
            ),
            ("assets/iframe.html", "<html></html>"),
        ])
    }

    #[test]
    fn a_valid_package() {
        let p = validate(&ok_files(MANIFEST)).unwrap();
        assert_eq!(p.name, "Fixture");
        assert_eq!(p.products, vec!["support"]);
        assert_eq!(p.parameters[0].name, "token");
        assert!(p.parameters[0].required);
        assert_eq!(p.short_description.as_deref(), Some("Short"));
    }

    #[test]
    fn errors_carry_zendesk_messages() {
        assert_eq!(
            validate(b"not a zip").unwrap_err().problems,
            vec![CANNOT_UNZIP]
        );
        let nested = zip(&[("app/manifest.json", MANIFEST)]);
        assert!(
            validate(&nested).unwrap_err().problems[0].contains("but app/manifest.json was found")
        );
        let e = validate(&ok_files(
            r#"{"author":{"name":"A"},"defaultLocale":"en","frameworkVersion":"1.0","location":{"zendesk":{}},"singleInstall":"yes","parameters":[{"name":"name"},{"name":"a","type":"hidden","required":true},{"name":"a","type":"password"}]}"#,
        ))
        .unwrap_err();
        let all = e.to_string();
        for needle in [
            "Missing required field in manifest: author email",
            "1.0 is not a valid framework version. Available versions are: 2.0.",
            "zendesk is an invalid host for apps.",
            "singleInstall must be a boolean value, got \"yes\".",
            "Can't call a parameter 'name'",
            "a is set to hidden and cannot be required.",
            "Duplicate app parameters defined: a",
            "password is an invalid parameter type.",
        ] {
            assert!(all.contains(needle), "{needle} not in {all}");
        }
    }

    #[test]
    fn problems_come_in_a_fixed_order() {
        let e = validate(&zip(&[
            (
                "manifest.json",
                r#"{"author":"me","defaultLocale":"EN","frameworkVersion":2,"private":1,"location":{"support":{"nav_bar":{"url":"http://example.com","autoLoad":"x"},"top_bar":""},"chat":[]},"parameters":[{"name":"a","type":"oauth","secure":true},{"type":"text"},{"name":"a","type":"oauth","required":"y"}]}"#,
            ),
            ("requirements.json", r#"{"bogus":{},"targets":[]}"#),
        ]))
        .unwrap_err();
        assert_eq!(
            e.problems,
            vec![
                "private must be a boolean value, got \"1\".",
                "The manifest field author needs to be key-value pairs with string keys, but it was me",
                "frameworkVersion must be a string, got \"2\".",
                "EN is not a valid default locale.",
                "The manifest field location.chat needs to be key-value pairs with string keys, but it was []",
                "autoLoad must be a boolean value, got \"x\".",
                "http://example.com is either an invalid location URI, refers to a missing asset, or does not use HTTPS.",
                "top_bar location does not specify a URI.",
                "required must be a boolean value, got \"y\".",
                "Missing required field in manifest: parameters name",
                "Duplicate app parameters defined: a",
                "Too many parameters with type 'oauth': one permitted",
                "oauth parameter cannot be set to be secure.",
                "Missing required oauth fields in manifest: client_id, client_secret, authorize_uri, access_token_uri",
                "requirements.json contains an invalid type: bogus",
                "The manifest field targets needs to be key-value pairs with string keys, but it was []",
            ]
        );
    }

    #[test]
    fn duplicate_manifest_keys() {
        let e = validate(&ok_files(
            r#"{"name":"a","name":"b","author":{"name":"x","name":"y"}}"#,
        ))
        .unwrap_err();
        assert_eq!(
            e.problems,
            vec!["Duplicate keys are specified in the manifest.json file. name, author.name"]
        );
        let (v, d) = parse_reporting_duplicates(br#"{"a":[1,{"b":true}],"c":null}"#).unwrap();
        assert!(d.is_empty());
        assert_eq!(v["a"][1]["b"], true);
        assert!(parse_reporting_duplicates(b"{} x").is_err());
    }

    #[test]
    fn location_uris() {
        let files: BTreeSet<String> = ["assets/a.html".to_string()].into();
        assert!(valid_location_uri("https://example.com/x", &files));
        assert!(valid_location_uri("http://localhost:4567/", &files));
        assert!(valid_location_uri("assets/a.html", &files));
        assert!(valid_location_uri("a.html", &files));
        assert!(!valid_location_uri("http://example.com", &files));
        assert!(!valid_location_uri("assets/missing.html", &files));
        assert!(!valid_location_uri("../a.html", &files));
    }

    #[test]
    fn locales() {
        assert!(valid_locale("en"));
        assert!(valid_locale("en-US"));
        assert!(valid_locale("pt-br"));
        assert!(!valid_locale("EN"));
        assert!(!valid_locale("english"));
        assert!(!valid_locale(""));
    }
}

/// Parses JSON like `serde_json::from_slice`, also reporting keys that appear twice in one
/// object (by their dotted path), which serde_json would silently overwrite.
fn parse_reporting_duplicates(bytes: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    use serde::de::DeserializeSeed;
    let dups = std::cell::RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = dup::Seed {
        dups: &dups,
        path: String::new(),
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, dups.into_inner()))
}

mod dup {
    use std::cell::RefCell;
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    pub(super) struct Seed<'a> {
        pub dups: &'a RefCell<Vec<String>>,
        pub path: String,
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Seed {
                dups: self.dups,
                path: format!("{}[{}]", self.path, out.len()),
            })? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                let value = map.next_value_seed(Seed {
                    dups: self.dups,
                    path: path.clone(),
                })?;
                if out.insert(key, value).is_some() {
                    self.dups.borrow_mut().push(path);
                }
            }
            Ok(Value::Object(out))
        }
    }
}

//! The layers over the file: `ZENRELAY__SECTION__KEY=value` environment overrides, then
//! `${VAR}` interpolation in string values.

use super::error::ConfigError;

/// Prefix of environment overrides: `ZENRELAY__DELIVERY__MAX_ATTEMPTS=5`.
pub const ENV_PREFIX: &str = "ZENRELAY__";

/// Applies `SECTION__KEY[__KEY...]=raw` to the parsed file. Path segments are lowercased;
/// numeric segments index arrays (`ACCOUNTS__0__API_TOKEN`). The value is read as a TOML
/// literal when it is one (numbers, booleans, arrays), else as a string.
pub(super) fn apply_override(
    root: &mut toml::Value,
    path: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let segments: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let dotted = segments.join(".");
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(
            format!("{ENV_PREFIX}{path}"),
            "malformed environment override name",
        ));
    }
    let parsed = override_value(raw);
    let mut node = root;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        node = match node {
            toml::Value::Table(table) => {
                if last {
                    table.insert(segment.clone(), parsed);
                    return Ok(());
                }
                table
                    .entry(segment.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| {
                    ConfigError::invalid(&dotted, "expected an array index in the override")
                })?;
                let len = items.len();
                let item = items.get_mut(index).ok_or_else(|| {
                    ConfigError::invalid(
                        &dotted,
                        format!("index {index} is out of range (the array has {len} items)"),
                    )
                })?;
                if last {
                    *item = parsed;
                    return Ok(());
                }
                item
            }
            _ => {
                return Err(ConfigError::invalid(
                    &dotted,
                    "cannot override inside a non-table value",
                ))
            }
        };
    }
    Ok(())
}

/// `raw` as a TOML literal when it is one (numbers, booleans, arrays), else as a string.
fn override_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Replaces `${VAR}` in every string value; an unset variable is an error naming the key.
pub(super) fn interpolate(
    value: &mut toml::Value,
    key: &str,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = substitute(s, env).map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                interpolate(item, &child, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a `${VAR}` reference cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SubstituteError {
    #[error("unterminated ${{...}} reference")]
    Unterminated,
    #[error("invalid variable name {0:?} in ${{...}}")]
    InvalidName(String),
    #[error("environment variable {0} is not set")]
    NotSet(String),
}

/// `input` with every `${VAR}` replaced by its value in `env`.
fn substitute(input: &str, env: &[(String, String)]) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(SubstituteError::Unterminated)?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(SubstituteError::InvalidName(name.to_string()));
        }
        let value = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| SubstituteError::NotSet(name.to_string()))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{env, err, BASE};
    use crate::config::{Config, LogFormat};

    #[test]
    fn env_overrides_scalars_and_array_items() {
        let mut env = env();
        env.push(("ZENRELAY__DELIVERY__MAX_ATTEMPTS".into(), "3".into()));
        env.push((
            "ZENRELAY__ACCOUNTS__0__BASE_URL".into(),
            "http://127.0.0.1:9".into(),
        ));
        env.push(("ZENRELAY__LOG__FORMAT".into(), "json".into()));
        let config = Config::from_toml_with_env(BASE, "test.toml", &env).unwrap();
        assert_eq!(config.delivery.max_attempts, 3);
        assert_eq!(config.accounts[0].base_url(), "http://127.0.0.1:9");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn bad_overrides_are_named() {
        let with = |name: &str| {
            let mut env = env();
            env.push((name.into(), "x".into()));
            err(BASE, &env)
        };
        let msg = with("ZENRELAY__DELIVERY____MAX");
        assert!(
            msg.starts_with("ZENRELAY__DELIVERY____MAX: malformed"),
            "{msg}"
        );
        let msg = with("ZENRELAY__ACCOUNTS__5__EMAIL");
        assert!(
            msg.starts_with("accounts.5.email: index 5 is out of range"),
            "{msg}"
        );
        let msg = with("ZENRELAY__ACCOUNTS__FIRST__EMAIL");
        assert!(
            msg.starts_with("accounts.first.email: expected an array index"),
            "{msg}"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let msg = err(BASE, &env()[..1]);
        assert!(msg.starts_with("clients[0].key"), "{msg}");
        assert!(msg.contains("BILLING_KEY"), "{msg}");
    }

    #[test]
    fn references_are_substituted_or_refused() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(substitute("x${A}y${A}", &env), Ok("x1y1".to_string()));
        assert_eq!(substitute("${A", &env), Err(SubstituteError::Unterminated));
        assert_eq!(
            substitute("${A-B}", &env),
            Err(SubstituteError::InvalidName("A-B".into()))
        );
        assert_eq!(
            substitute("${B}", &env),
            Err(SubstituteError::NotSet("B".into()))
        );
    }
}

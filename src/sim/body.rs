//! Reading the JSON bodies of requests: an object (an empty body is an empty object), ids given
//! as numbers or numeric strings, and optional strings; malformed input answers Zendesk's 400
//! or 422.

use serde_json::{Map, Value};

use super::errors::ApiError;

/// Reads an id given as a number or a numeric string (`"123"`).
pub(crate) fn numeric_id(value: Option<&Value>) -> Option<Option<u64>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::Number(n)) => n.as_u64().map(Some),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok().map(Some),
        Some(_) => None,
    }
}

/// Parses a JSON object body.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest(
            "The request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// An optional string field; anything but a string or `null` is a 422 naming the field.
pub(crate) fn optional_string(
    body: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(key, format!("{key} must be a string"))),
    }
}

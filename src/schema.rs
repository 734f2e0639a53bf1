//! Precompiled JSON Schema validation whose errors name the JSON pointer of each bad field.

use jsonschema::error::ValidationErrorKind;
use std::path::Path as FsPath;

use serde_json::Value;

use crate::domain::{escape_pointer, FieldError};

/// A compiled schema.
pub struct SchemaValidator {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaValidator")
    }
}

/// A JSON Schema that does not compile, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchema(String);

/// Most errors reported for one document; the rest are dropped.
const MAX_ERRORS: usize = 50;

impl SchemaValidator {
    /// Compiles `schema`; the error says why it is not a valid schema.
    pub fn new(schema: &Value) -> Result<Self, InvalidSchema> {
        jsonschema::validator_for(schema)
            .map(|validator| SchemaValidator { validator })
            .map_err(|e| InvalidSchema(e.to_string()))
    }

    /// Every violation of the schema by `instance` (empty when valid), each naming the
    /// pointer of the field concerned: a missing or unexpected property is named by its
    /// own pointer rather than its parent's.
    pub fn check(&self, instance: &Value) -> Vec<FieldError> {
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for error in self.validator.iter_errors(instance).take(MAX_ERRORS) {
            let parent = error.instance_path.as_str().to_string();
            match &error.kind {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    out.push(FieldError::new(
                        format!("{parent}/{}", escape_pointer(name)),
                        "is required",
                    ));
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        out.push(FieldError::new(
                            format!("{parent}/{}", escape_pointer(name)),
                            "is not a known field",
                        ));
                    }
                }
                _ => out.push(FieldError::new(parent, error.to_string())),
            }
        }
        out
    }
}

/// Why a schema file (a webhook's `schema`) gives no schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path} is not JSON: {source}")]
    NotJson {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The JSON is not a valid schema.
    #[error("{path} is not a valid schema: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        source: InvalidSchema,
    },
}

/// Reads and compiles a JSON Schema file.
pub fn load_schema(path: &FsPath) -> Result<SchemaValidator, SchemaFileError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SchemaFileError::Read {
        path: shown(),
        source,
    })?;
    let schema: Value = serde_json::from_str(&text).map_err(|source| SchemaFileError::NotJson {
        path: shown(),
        source,
    })?;
    SchemaValidator::new(&schema).map_err(|source| SchemaFileError::Invalid {
        path: shown(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notify_schema;
    use serde_json::json;

    #[test]
    fn names_pointers_of_missing_extra_and_bad_fields() {
        let v = SchemaValidator::new(&notify_schema()).unwrap();
        assert!(v.check(&json!({"app_id": 1, "event": "e"})).is_empty());
        let errors = v.check(&json!({"app_id": "x", "agent_ids": [1, -2], "colour": 1}));
        let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for expected in ["/app_id", "/event", "/agent_ids/1", "/colour"] {
            assert!(
                pointers.contains(&expected),
                "{expected} missing in {pointers:?}"
            );
        }
    }
}

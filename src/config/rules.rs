//! Rules shared by several tables: positive numbers, and names safe in URLs and Redis keys.

use super::error::ConfigError;

/// An error naming `key` when `value` is 0.
pub(super) fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Whether `name` is acceptable as an account id (it appears in URLs and Redis keys).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_and_key_safe() {
        for name in ["acme", "a-b_c.d", &"x".repeat(64)] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", ".", "..", "a/b", "a b", "a{b}", &"x".repeat(65)] {
            assert!(!valid_name(name), "{name}");
        }
    }
}

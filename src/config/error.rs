//! The error of loading and validating a config: every problem names its key.

use std::path::PathBuf;

/// A configuration problem, naming the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a wrong type, an invalid value, or is unknown.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `accounts[0].email`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value that [`crate::config::Config::validate`] builds (a webhook's keys and schema,
    /// the sealer, the TLS material) was asked of a config that was never validated.
    #[error("{key}: not built (the config was not validated)")]
    NotBuilt {
        /// Dotted path of the key whose value is missing.
        key: String,
    },
}

impl ConfigError {
    /// An invalid value at `key` (a dotted path, e.g. `accounts[0].base_url`).
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A value of `key` that only validation builds is missing.
    pub fn not_built(key: impl Into<String>) -> Self {
        ConfigError::NotBuilt { key: key.into() }
    }
}
